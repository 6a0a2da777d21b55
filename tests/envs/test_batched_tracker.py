"""The array path of PredictabilityVecWrapper (BatchedTracker) against the per-world path."""

from __future__ import annotations

import numpy as np
import pytest

from bystander.agents.learned import LearnedPredictor
from bystander.agents.predictors import ConstantTurnRatePredictor, ConstantVelocityPredictor
from bystander.envs.batched_tracker import BatchedTracker
from bystander.envs.contract import step_arrays
from bystander.envs.intersection.vec_env import IntersectionVecEnv
from bystander.envs.scoring import ScoredReplay
from bystander.envs.vector import PredictabilityVecWrapper

N = 6
STEP_KEYS = ("cost", "predictability", "observers_scored")
EPISODE_KEYS = ("episode_cost", "episode_prediction_error", "episode_observers_scored")


def _stack(predictors, batched, info_mode="full", combine="mean", on_scored=None, seed=3):
    venv = IntersectionVecEnv(N, {"max_cycles": 60}, seed=seed, info_mode=info_mode)
    return PredictabilityVecWrapper(
        venv, predictors, batched=batched, combine=combine, on_scored=on_scored
    )


def _compare(predictors, combine="mean", steps=150):
    """Run the per-world path, the array path (full infos) and the array path (lean
    infos) side by side with the same actions; every figure must agree."""
    ref = _stack(predictors, False, combine=combine)
    fast = _stack(predictors, True, combine=combine)
    lean = _stack(predictors, None, info_mode="lean", combine=combine)
    assert not ref.batched and fast.batched and lean.batched
    for venv in (ref, fast, lean):
        venv.reset()
    rng = np.random.default_rng(0)
    ended = scored = 0
    for _ in range(steps):
        actions = rng.integers(0, 6, N)
        _, rr, dr, ir = ref.step(actions)
        _, rf, df, inf = fast.step(actions)
        _, rl, dl, il = lean.step(actions)
        np.testing.assert_array_equal(dr, df)
        np.testing.assert_array_equal(dr, dl)
        np.testing.assert_array_equal(rr, rf)
        arrays = step_arrays(lean)
        for i in range(N):
            a, b = ir[i], inf[i]
            for key in STEP_KEYS:
                assert a[key] == pytest.approx(b[key], abs=1e-9), key
                assert a[key] == pytest.approx(float(arrays[key][i]), abs=1e-9), key
            assert a["costs"] == pytest.approx(b["costs"], abs=1e-9)
            assert a["prediction_error_by_type"] == pytest.approx(
                b["prediction_error_by_type"], abs=1e-9
            )
            scored += a["observers_scored"]
            if dr[i]:
                ended += 1
                for key in EPISODE_KEYS:
                    assert a[key] == pytest.approx(b[key], abs=1e-9), key
                    assert a[key] == pytest.approx(il[i][key], abs=1e-9), key
                assert a["episode_costs"] == pytest.approx(il[i]["episode_costs"], abs=1e-9)
                assert a["episode_prediction_error_by_type"] == pytest.approx(
                    il[i]["episode_prediction_error_by_type"], abs=1e-9
                )
            else:
                assert il[i] == {}
    assert ended >= N and scored > 100  # the comparison covered episode ends and scoring
    return ended


def test_array_path_equals_per_world_trackers_constant_velocity():
    _compare(ConstantVelocityPredictor(horizon=5, history=4))


def test_array_path_equals_per_world_trackers_per_type_predictors_and_worst():
    cv = ConstantVelocityPredictor(horizon=5, history=4)
    ctr = ConstantTurnRatePredictor(horizon=3, history=6)
    _compare({"car": cv, "cyclist": ctr, "pedestrian": None}, combine="worst")


def test_array_path_equals_per_world_trackers_learned_predictor():
    _compare(LearnedPredictor(horizon=4, history=5, seed=0), steps=80)


def test_array_path_co_training_hook_sees_the_same_batches():
    cv = ConstantVelocityPredictor(horizon=4, history=3)
    seen = {}
    for batched in (False, True):
        replay = ScoredReplay(capacity=10_000)
        venv = _stack(cv, batched, on_scored=replay)
        venv.reset()
        rng = np.random.default_rng(1)
        for _ in range(40):
            venv.step(rng.integers(0, 6, N))
        seen[batched] = [(v, t) for _, v, t in replay.drain()]

    # same scored (observer id, history, mask, truth) items, whatever the batching and order
    def pairs(batches):
        out = set()
        for v, truth in batches:
            assert truth.shape == (len(v), 4, 2)
            for k in range(len(v)):
                out.add(
                    (
                        int(v.observer_ids[k]),
                        v.states[k].round(9).tobytes(),
                        v.mask[k].tobytes(),
                        truth[k].round(9).tobytes(),
                    )
                )
        return out

    assert pairs(seen[True]) == pairs(seen[False]) and len(pairs(seen[True])) > 20


def test_array_path_choice_and_errors():
    class WholeEpisode:
        horizon = None
        history = None

        def score(self, views, truth):
            return np.zeros(len(views))

    venv = IntersectionVecEnv(2, seed=0, info_mode="lean")
    with pytest.raises(ValueError, match="lean"):
        PredictabilityVecWrapper(venv, WholeEpisode())
    with pytest.raises(ValueError, match="batched: True"):
        PredictabilityVecWrapper(IntersectionVecEnv(2, seed=0), WholeEpisode(), batched=True)
    with pytest.raises(ValueError, match="integer horizon"):
        BatchedTracker({"*": WholeEpisode()}, 2)
    with pytest.raises(ValueError, match="info_mode"):
        IntersectionVecEnv(2, info_mode="sparse")


def test_array_path_rejects_bad_predictions():
    class Broken(ConstantVelocityPredictor):
        def predict(self, views):
            out = super().predict(views)
            out[:] = np.nan
            return out

    venv = _stack(Broken(horizon=3, history=3), True)
    with pytest.raises(ValueError, match="non-finite"):
        venv.reset()
        for _ in range(5):
            venv.step(np.zeros(N, dtype=np.int64))


def test_batched_tracker_refuses_misrouted_batches():
    env = IntersectionVecEnv(3, {"max_cycles": 20}, seed=0, info_mode="lean")
    env.reset()
    tracker = BatchedTracker({"*": ConstantVelocityPredictor(horizon=3, history=3)}, 3)
    with pytest.raises(ValueError, match="start"):
        tracker.step(env.reset_ego_batch, np.zeros(3, bool))
    tracker.start(env.reset_ego_batch)
    env.step(np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="episode_start"):
        tracker.start(env.ego_batch)
    figs = tracker.step(env.ego_batch, np.zeros(3, bool))
    assert figs.error.shape == (3,) and np.isfinite(figs.error).all()
