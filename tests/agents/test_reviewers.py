"""The driving reviewer: side-effect-free rollouts, surprise ordering, collision risk, gate."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import bystander.envs  # noqa: F401 - registers the env ids
from bystander.agents.predictors import ConstantVelocityPredictor
from bystander.agents.reviewers import DrivingReviewer, build_driving_reviewer, find_sim
from bystander.agents.rollouts import stop_and_go
from bystander.envs.intersection.sim import CAR, FASTER, KEEP, SLOWER
from bystander.envs.predictability import PredictabilityReward
from bystander.envs.review import ReviewGate

CONFIG = {"max_cycles": 120}


def make_env(**overrides) -> gym.Env:
    return gym.make("bystander/Intersection-v0", config={**CONFIG, **overrides})


def sim_state(env) -> tuple:
    sim = find_sim(env)
    arrays = tuple(np.copy(getattr(sim, k)) for k in ("x", "y", "v", "h", "alive", "t", "target_v"))
    return arrays, sim.rng.bit_generator.state


def test_validation():
    with pytest.raises(ValueError, match="horizon"):
        DrivingReviewer({"car": type("P", (), {"horizon": None, "history": 8})()})
    with pytest.raises(ValueError, match="predictors"):
        DrivingReviewer({})
    with pytest.raises(ValueError, match="collision_weight"):
        DrivingReviewer(ConstantVelocityPredictor(), collision_weight=-1.0)
    with pytest.raises(TypeError, match="IntersectionSim"):
        DrivingReviewer(ConstantVelocityPredictor()).estimate(gym.make("CartPole-v1"), 0)


def test_review_leaves_the_env_untouched_and_the_episode_unchanged():
    reviewed, plain = make_env(), make_env()
    reviewer = DrivingReviewer(ConstantVelocityPredictor())
    reviewed.reset(seed=4)
    plain.reset(seed=4)
    for k in range(25):
        before = sim_state(reviewed)
        for a in (SLOWER, KEEP, FASTER):
            reviewer.estimate(reviewed, a)
        after = sim_state(reviewed)
        for x, y in zip(before[0], after[0], strict=True):
            np.testing.assert_array_equal(x, y)
        assert before[1] == after[1]  # random generator state too
        a = FASTER if k % 10 == 0 else KEEP
        o1, r1, *_ = reviewed.step(a)
        o2, r2, *_ = plain.step(a)
        np.testing.assert_array_equal(o1, o2)
        assert r1 == r2


def cruise_until_observed(env, reviewer, seed: int) -> None:
    env.reset(seed=seed)
    for _ in range(60):
        reviewer.estimate(env, KEEP)
        if reviewer.last["observers"] > 0 and find_sim(env).t[0] >= 10:
            return
        env.step(KEEP)
    pytest.skip("no observer saw the ego in this episode")  # pragma: no cover


@pytest.mark.parametrize("seed", [0, 4])
def test_keep_is_least_surprising_while_cruising(seed):
    env = make_env()
    reviewer = DrivingReviewer(ConstantVelocityPredictor(), collision_weight=0.0)
    cruise_until_observed(env, reviewer, seed)
    costs = {a: reviewer.estimate(env, a) for a in (SLOWER, KEEP, FASTER)}
    assert costs[KEEP] < 0.5 * min(costs[SLOWER], costs[FASTER]), costs
    assert reviewer.last["surprise"] == pytest.approx(costs[FASTER])


def test_collision_risk_of_driving_into_a_stopped_car():
    env = make_env(
        n_cars=0,
        n_pedestrians=0,
        n_cyclists=0,
        car_rate=0.0,
        cyclist_rate=0.0,
        pedestrian_rate=0.0,
        ego_car_following=False,  # the ego would brake by itself: test the reviewer
    )
    env.reset(seed=1)
    sim = find_sim(env)
    # A stopped car 9 m ahead of the ego, on its heading (scenario helper: place a road user).
    x, y, h = float(sim.x[0, 0]), float(sim.y[0, 0]), float(sim.h[0, 0])
    sim.place(0, sim.C, CAR, x + 9.0 * np.cos(h), y + 9.0 * np.sin(h), h, v=0.0)
    reviewer = DrivingReviewer(ConstantVelocityPredictor(), predictability_weight=0.0)
    risky = reviewer.estimate(env, FASTER)
    assert reviewer.last["collision"] > 0
    safe = reviewer.estimate(env, SLOWER)
    assert risky > safe, (risky, safe)
    # The parked car is not moving: it did not react to the reviews.
    assert find_sim(env).x[0, sim.C] == sim.x[0, sim.C]


def test_unobserved_ego_costs_nothing_and_history_masks_unasked_steps():
    env = make_env(
        n_cars=0, n_pedestrians=0, n_cyclists=0, car_rate=0.0, cyclist_rate=0.0, pedestrian_rate=0.0
    )
    env.reset(seed=0)
    reviewer = DrivingReviewer(ConstantVelocityPredictor(history=4))
    assert reviewer.estimate(env, FASTER) == 0.0 and reviewer.last["observers"] == 0
    env.step(KEEP)
    env.step(KEEP)  # not reviewed: a gap in the reviewer's record
    reviewer.estimate(env, KEEP)
    reviewer.estimate(env, KEEP)  # asked twice at the same state: recorded once
    states, mask = reviewer._history(int(find_sim(env).t[0]), 4)
    np.testing.assert_array_equal(mask, [False, True, False, True])
    env.reset(seed=1)  # a new episode clears the record
    reviewer.estimate(env, KEEP)
    assert reviewer._t == [0]


def test_review_gate_vetoes_stop_and_go_and_restores_predictability():
    predictor = ConstantVelocityPredictor()

    def run(gated: bool) -> tuple[float, int]:
        env = make_env()
        if gated:
            env = ReviewGate(env, DrivingReviewer(predictor), threshold=0.4, fallback=KEEP)
        env = PredictabilityReward(env, predictor, dt=0.1)
        rng = np.random.default_rng(0)
        obs, info = env.reset(seed=0)
        escalated = 0
        while True:
            obs, _, terminated, truncated, info = env.step(stop_and_go(env, obs, rng))
            escalated += int(info.get("escalated", False))
            if terminated or truncated:
                break
        if gated:
            assert env.env.escalations == escalated
        return info["episode_prediction_error"], escalated

    erratic, _ = run(False)
    gated, escalations = run(True)
    assert escalations > 10
    assert gated < 0.8 * erratic, (gated, erratic)


def test_escalate_mode_pauses_and_reviewer_records_once():
    env = ReviewGate(
        make_env(), DrivingReviewer(ConstantVelocityPredictor()), threshold=-1.0, mode="escalate"
    )
    env.reset(seed=0)
    t0 = int(find_sim(env).t[0])
    _, reward, terminated, truncated, info = env.step(FASTER)
    assert info["escalated"] and info["awaiting_review"] and reward == 0.0
    assert int(find_sim(env).t[0]) == t0  # the step did not run
    env.step(FASTER)  # reviewed again at the same state
    assert env.reviewer._t == [t0]
    _, _, _, _, info = env.approve()
    assert not info["awaiting_review"] and int(find_sim(env).t[0]) == t0 + 1


@pytest.mark.parametrize("action_type", ["discrete", "continuous"])
def test_build_driving_reviewer_and_least_cost_fallback(action_type):
    env = make_env(action_type=action_type)
    reviewer, fallback = build_driving_reviewer(env)
    gate = ReviewGate(env, reviewer, threshold=0.0, fallback=fallback)
    gate.reset(seed=0)
    gate.action_space.seed(0)
    for _ in range(5):
        _, _, terminated, truncated, info = gate.step(gate.action_space.sample())
        assert isinstance(info["review_cost"], float)
    picked = fallback(env, None)
    costs = [reviewer.estimate(env, a) for a in fallback._candidates(env)]
    assert reviewer.estimate(env, picked) == pytest.approx(min(costs))
    with pytest.raises(TypeError, match="IntersectionSim"):
        build_driving_reviewer(gym.make("CartPole-v1"))
