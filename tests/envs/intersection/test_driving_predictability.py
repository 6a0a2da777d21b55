"""On the intersection, an erratic ego is clearly less predictable than a smooth one.

Through the shared :class:`PredictabilityReward` on ``bystander/Intersection-v0``, with
both the constant-velocity predictor and a learned predictor pretrained on scripted
traffic: stop-and-go (discrete meta-actions) vs lane following, and weaving (continuous
steering) vs driving straight.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import bystander.envs  # noqa: F401 - registers the env ids
from bystander.agents.learned import LearnedPredictor
from bystander.agents.predictors import ConstantVelocityPredictor
from bystander.agents.rollouts import (
    TrajectoryDataset,
    collect_intersection,
    evaluate,
    lane_following,
    stop_and_go,
    weaving,
)
from bystander.envs.predictability import PredictabilityReward
from bystander.envs.scoring import ScoredReplay

MAX_CYCLES = 120


@pytest.fixture(scope="module")
def learned() -> LearnedPredictor:
    data = collect_intersection(3, seed=100, config={"max_cycles": MAX_CYCLES})
    assert data.dt == pytest.approx(0.1)
    p = LearnedPredictor(hidden=32, lr=3e-3, seed=0)
    p.fit(data.views(), data.truth, epochs=15, batch_size=128)
    fit_ade = evaluate(p, data)["ade"]
    assert fit_ade < evaluate(ConstantVelocityPredictor(), data)["ade"]
    return p.freeze()


def episode_error(policy, predictor, seed: int, config: dict, on_scored=None) -> tuple[float, int]:
    """(mean prediction error in metres, predictions scored) of one episode."""
    env = PredictabilityReward(
        gym.make("bystander/Intersection-v0", config={"max_cycles": MAX_CYCLES, **config}),
        predictor,
        dt=0.1,
        on_scored=on_scored,
    )
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    while True:
        obs, _, terminated, truncated, info = env.step(policy(env, obs, rng))
        assert info["cost"] == pytest.approx(sum(info["costs"].values()))
        if info["observers_scored"]:
            assert (
                info["predictability"]
                == pytest.approx(-np.mean(list(info["prediction_error_by_type"].values())))
                or len(info["prediction_error_by_type"]) > 1
            )
        if terminated or truncated:
            break
    env.close()
    assert set(info["episode_prediction_error_by_type"]) <= {"car", "pedestrian", "cyclist"}
    return info["episode_prediction_error"], info["episode_observers_scored"]


def pooled(policy, predictor, seeds, config) -> float:
    runs = [episode_error(policy, predictor, s, config) for s in seeds]
    n = sum(k for _, k in runs)
    assert n > 50, runs  # the ego was really observed
    return sum(e * k for e, k in runs) / n


@pytest.mark.parametrize("which", ["const_vel", "learned"])
def test_stop_and_go_is_less_predictable_than_lane_following(which, learned):
    predictor = ConstantVelocityPredictor() if which == "const_vel" else learned
    # The ego's own car following (braking for queues and crossing pedestrians) is switched
    # off so that the two egos differ only by their policy: that is the claim under test.
    cfg = {"ego_car_following": False}
    smooth = pooled(lane_following, predictor, (0, 3), cfg)
    erratic = pooled(stop_and_go, predictor, (0, 3), cfg)
    assert erratic > 1.5 * smooth, (smooth, erratic)


@pytest.mark.parametrize("which", ["const_vel", "learned"])
def test_weaving_is_less_predictable_than_driving_straight(which, learned):
    predictor = ConstantVelocityPredictor() if which == "const_vel" else learned
    cfg = {"action_type": "continuous"}
    smooth = pooled(lane_following, predictor, (0, 2), cfg)
    erratic = pooled(weaving, predictor, (0, 2), cfg)
    assert erratic > 1.5 * smooth, (smooth, erratic)


def test_online_co_training_adapts_to_the_ego():
    """GAN-like co-training: the tracker hands out what it scored, the predictor updates."""
    p = LearnedPredictor(hidden=32, lr=3e-3, seed=1)

    def held_out(predictor) -> float:  # mean error over held-out episodes that scored
        runs = [episode_error(stop_and_go, predictor, s, {}) for s in (50, 51, 52, 53)]
        assert sum(n for _, n in runs) > 0
        return float(np.mean([e for e, n in runs if n]))

    before = held_out(p)  # untrained = constant velocity
    replay = ScoredReplay()
    for seed in range(3):
        episode_error(stop_and_go, p, seed, {}, on_scored=replay)
        batches = replay.drain()
        assert batches and all(pred is p for pred, _, _ in batches)
        fresh = TrajectoryDataset.from_batches(batches)
        log = p.fit(fresh.views(), fresh.truth, epochs=4, batch_size=64)
        assert np.isfinite(log[-1]["loss"])
    after = held_out(p.freeze())
    assert after < 0.9 * before, (before, after)
