"""Physics predictors (constant velocity, constant turn rate) and the metrics, on hand-made views."""

from __future__ import annotations

import numpy as np
import pytest

from bystander.agents import metrics
from bystander.agents.predictors import (
    ConstantTurnRatePredictor,
    ConstantVelocityPredictor,
    seen_indices,
)
from bystander.envs.contract import FRAMES, Predictor, Views


def make_views(states, mask=None, dt=0.1, types=None) -> Views:
    states = np.asarray(states, dtype=np.float64)
    if states.ndim == 2:
        states = states[None]
    b, length = states.shape[:2]
    mask = np.ones((b, length), bool) if mask is None else np.asarray(mask, bool).reshape(b, length)
    types = np.array(["car"] * b if types is None else types, dtype=object)
    return Views(states=states, mask=mask, observer_types=types, observer_ids=np.arange(b), dt=dt)


def circle(n, radius=10.0, omega=0.5, dt=0.1, theta0=0.3, t0=0.0):
    """Positions on a circle at constant angular speed ``omega`` rad/s (CCW), ``(n, 2)``."""
    t = t0 + np.arange(n) * dt
    return np.stack([radius * np.sin(theta0 + omega * t), -radius * np.cos(theta0 + omega * t)], -1)


def test_protocol_and_validation():
    for cls in (ConstantVelocityPredictor, ConstantTurnRatePredictor):
        p = cls(horizon=5, history=4)
        assert isinstance(p, Predictor)
        assert (p.horizon, p.history, p.unit) == (5, 4, "m")
        with pytest.raises(ValueError, match="horizon"):
            cls(horizon=0)
        with pytest.raises(TypeError, match="history"):
            cls(history=True)
    with pytest.raises(ValueError, match="max_turn_rate"):
        ConstantTurnRatePredictor(max_turn_rate=0.0)
    p = ConstantVelocityPredictor()
    bad = make_views(np.zeros((2, 4, 2)))
    bad.mask = np.ones((2, 3), bool)
    with pytest.raises(ValueError, match="views.mask"):
        p.predict(bad)
    with pytest.raises(ValueError, match="views.dt"):
        p.predict(make_views(np.zeros((4, 2)), dt=0.0))
    with pytest.raises(ValueError, match="views.states"):
        p.predict(make_views(np.zeros((1, 4, 1))))
    with pytest.raises(TypeError, match="views"):
        p.predict(np.zeros((1, 4, 2)))


def test_seen_indices():
    mask = np.array([[1, 0, 1, 1], [0, 0, 0, 0], [0, 1, 0, 0]], bool)
    np.testing.assert_array_equal(seen_indices(mask, 3), [[3, -1, 1], [2, -1, -1], [0, -1, -1]])


def test_constant_velocity_exact_on_straight_line():
    dt, h = 0.1, 6
    line = np.stack([np.arange(8 + h) * 1.2, 3.0 - np.arange(8 + h) * 0.5], -1) * dt * 10
    views = make_views(line[:8], dt=dt)
    pred = ConstantVelocityPredictor(horizon=h, history=8).predict(views)
    assert pred.shape == (1, h, 2)
    np.testing.assert_allclose(pred[0], line[8:], atol=1e-12)
    assert ConstantVelocityPredictor(horizon=h).score(views, line[None, 8:])[0] < 1e-12


def test_constant_velocity_uses_real_time_gap_and_last_seen():
    dt = 0.1
    # Ego moves +1 m per step along x. Seen at entries 1 and 4, unseen now (entry 6).
    xs = np.stack([np.arange(7.0), np.zeros(7)], -1)
    mask = [0, 1, 0, 0, 1, 0, 0]
    pred = ConstantVelocityPredictor(horizon=3).predict(make_views(xs, mask, dt=dt))
    # v = (4 - 1) / (3 * 0.1) = 10 m/s; from x=4 at entry 4 to entries 7, 8, 9.
    np.testing.assert_allclose(pred[0], [[7, 0], [8, 0], [9, 0]], atol=1e-12)


def test_constant_velocity_fallbacks():
    xs = np.stack([np.arange(4.0), np.ones(4)], -1)
    one_seen = ConstantVelocityPredictor(horizon=2).predict(make_views(xs, [0, 0, 1, 0]))
    np.testing.assert_allclose(one_seen[0], [[2, 1], [2, 1]])
    none_seen = ConstantVelocityPredictor(horizon=2).predict(make_views(xs, [0, 0, 0, 0]))
    np.testing.assert_allclose(none_seen[0], 0.0)


def test_constant_turn_rate_exact_on_circle_even_with_gaps():
    dt, h = 0.1, 10
    path = circle(8 + h, dt=dt)
    p = ConstantTurnRatePredictor(horizon=h, history=8)
    pred = p.predict(make_views(path[:8], dt=dt))
    np.testing.assert_allclose(pred[0], path[8:], atol=1e-9)
    # With gaps the real time between seen entries is used.
    pred_gap = p.predict(make_views(path[:8], [1, 0, 1, 0, 0, 1, 1, 0], dt=dt))
    np.testing.assert_allclose(pred_gap[0], path[8:], atol=1e-9)
    # Constant velocity misses the curve by a clear margin.
    cv = ConstantVelocityPredictor(horizon=h).score(make_views(path[:8], dt=dt), path[None, 8:])
    assert cv[0] > 0.1 > p.score(make_views(path[:8], dt=dt), path[None, 8:])[0]


def test_constant_turn_rate_reduces_to_cv_on_lines_and_when_slow():
    rng = np.random.default_rng(0)
    line = np.cumsum(np.tile([[0.7, -0.2]], (8, 1)), axis=0)
    v = make_views(line)
    ctr, cv = ConstantTurnRatePredictor(horizon=5), ConstantVelocityPredictor(horizon=5)
    np.testing.assert_allclose(ctr.predict(v), cv.predict(v), atol=1e-9)
    jitter = rng.normal(scale=0.001, size=(8, 2))  # 1 cm/s: below min_speed
    vj = make_views(jitter)
    np.testing.assert_allclose(ctr.predict(vj), cv.predict(vj), atol=1e-12)


@pytest.mark.parametrize("cls", [ConstantVelocityPredictor, ConstantTurnRatePredictor])
def test_batched_matches_single_and_is_frame_equivariant(cls):
    rng = np.random.default_rng(1)
    b, length = 16, 8
    paths = np.cumsum(rng.normal(size=(b, length, 2)), axis=1)
    mask = rng.random((b, length)) < 0.7
    mask[:, -1] = True
    p = cls(horizon=4, history=length)
    batched = p.predict(make_views(paths, mask))
    for i in range(b):
        np.testing.assert_allclose(batched[i], p.predict(make_views(paths[i], mask[i]))[0])
    # Predicting in an observer's rigid frame and mapping back gives the world prediction.
    poses = np.column_stack([rng.normal(size=(b, 2)) * 20, rng.uniform(-np.pi, np.pi, b)])
    rf = FRAMES["rigid2d"]
    in_frame = p.predict(make_views(rf.to_frame(paths, poses), mask))
    np.testing.assert_allclose(rf.from_frame(in_frame, poses), batched, atol=1e-9)


def test_metrics_hand_computed():
    truth = np.zeros((2, 2, 2))
    pred = np.array([[[3.0, 4.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 3.0]]])  # dists [5,1], [0,3]
    np.testing.assert_allclose(metrics.ade(pred, truth), [3.0, 1.5])
    np.testing.assert_allclose(metrics.fde(pred, truth), [1.0, 3.0])
    np.testing.assert_array_equal(metrics.miss(pred, truth), [False, True])
    assert metrics.miss_rate(pred, truth) == 0.5
    assert metrics.miss_rate(pred, truth, threshold=5.0) == 0.0
    # Two modes: mode 0 is `pred`, mode 1 is at distance 2 everywhere.
    modes = np.stack([pred, np.full_like(pred, 0.0) + [2.0, 0.0]], axis=1)
    np.testing.assert_allclose(metrics.min_ade_k(modes, truth), [2.0, 1.5])
    np.testing.assert_allclose(metrics.min_fde_k(modes, truth), [1.0, 2.0])
    s = metrics.summarize(modes, truth, types=np.array(["car", "pedestrian"], dtype=object))
    assert s["ade"] == pytest.approx(1.75) and s["n"] == 2 and s["min_ade_k"] == s["ade"]
    assert s["by_type"]["pedestrian"]["fde"] == pytest.approx(2.0)
    assert metrics.by_type(np.array([1.0, 3.0, 5.0]), np.array(["a", "b", "a"])) == {
        "a": 3.0,
        "b": 3.0,
    }
    assert metrics.improvement({"ade": 2.0, "fde": 4.0}, {"ade": 1.0, "fde": 3.0}) == {
        "ade": 0.5,
        "fde": 0.25,
    }
    p = ConstantVelocityPredictor(horizon=2)
    np.testing.assert_allclose(p.error(pred, truth, None), [3.0, 1.5])
    with pytest.raises(ValueError, match="pred"):
        metrics.ade(np.zeros((2, 3, 2)), truth)
    with pytest.raises(ValueError, match="threshold"):
        metrics.miss(pred, truth, threshold=0)


def test_displacement_has_the_bits_of_the_einsum_formula():
    """displacement's x^2 + y^2 equals the sum of products einsum computed before it,
    bit for bit (errors, costs and rewards must not move by an ulp)."""
    rng = np.random.default_rng(0)
    for scale in (1e-3, 1.0, 50.0, 1e5):
        pred = rng.normal(0.0, scale, (500, 3, 10, 3))  # K modes, an extra column
        truth = rng.normal(0.0, scale, (500, 10, 3))
        diff = pred[..., :2] - truth[:, None, :, :2]
        want = np.sqrt(np.einsum("bkhd,bkhd->bkh", diff, diff))
        assert metrics.displacement(pred, truth).tobytes() == want.tobytes()
