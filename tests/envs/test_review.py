"""ReviewGate: veto, escalate ("human review"), counting, composition, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from toy_env import LinearPredictor, ToyPointEnv

from bystander.envs.constraints import LagrangeMultiplier, LagrangianReward
from bystander.envs.predictability import PredictabilityReward
from bystander.envs.review import ReviewGate

STOP = np.zeros(2, np.float32)


def lateral_reviewer(env, action) -> float:
    """Estimated cost: how hard the action swerves (and it checks that no gradient flows)."""
    assert not torch.is_grad_enabled()
    return float(abs(np.asarray(action)[1]))


class ObjectReviewer:
    def __init__(self) -> None:
        self.calls = 0

    def estimate(self, env, action) -> float:
        self.calls += 1
        return lateral_reviewer(env, action)


def test_veto_replaces_flagged_actions_and_counts():
    gate = ReviewGate(ToyPointEnv(), lateral_reviewer, threshold=0.5, fallback=STOP)
    gate.reset(seed=0)
    obs, _, _, _, info = gate.step(np.array([1.0, 0.2], np.float32))
    assert not info["escalated"] and info["review_cost"] == pytest.approx(0.2)
    np.testing.assert_allclose(obs[2:], [1.0, 0.2], atol=1e-6)  # executed as proposed
    obs, _, _, _, info = gate.step(np.array([1.0, 0.9], np.float32))
    assert info["escalated"] and not info["awaiting_review"]
    assert info["review_cost"] == pytest.approx(0.9)
    np.testing.assert_allclose(obs[2:], [0.0, 0.0])  # the fallback ran
    gate.step(np.array([0.0, -1.0], np.float32))
    assert gate.escalations == 2
    # threshold is strict: exactly at it passes
    assert not gate.step(np.array([1.0, 0.5], np.float32))[4]["escalated"]


def test_callable_fallback_and_object_reviewer():
    reviewer = ObjectReviewer()
    gate = ReviewGate(
        ToyPointEnv(),
        reviewer,
        threshold=0.5,
        fallback=lambda env, a: np.array([a[0], 0.0], np.float32),  # keep speed, stop swerving
    )
    gate.reset(seed=0)
    obs = gate.step(np.array([0.7, 1.0], np.float32))[0]
    np.testing.assert_allclose(obs[2:], [0.7, 0.0], atol=1e-6)
    assert reviewer.calls == 1 and gate.escalations == 1


def test_escalate_pauses_until_approved_or_new_proposal():
    env = ToyPointEnv(max_steps=5)
    gate = ReviewGate(env, lateral_reviewer, threshold=0.5, mode="escalate")
    obs0, _ = gate.reset(seed=0)
    gate.step(np.array([1.0, 0.0], np.float32))
    pos = env._pos.copy()
    obs, reward, term, trunc, info = gate.step(np.array([1.0, 1.0], np.float32))
    assert info["escalated"] and info["awaiting_review"] and gate.awaiting_review
    assert reward == 0.0 and not term and not trunc
    assert info["costs"] == {"boundary": 0.0} and info["cost"] == 0.0
    assert info["rewards"] == {"progress": 0.0}
    np.testing.assert_array_equal(env._pos, pos)  # nothing was executed
    assert env._k == 1
    # a new acceptable proposal runs and clears the pending one
    obs, _, _, _, info = gate.step(np.array([0.5, 0.0], np.float32))
    assert not info["escalated"] and not gate.awaiting_review and env._k == 2
    # escalate again, then the human approves the pending action
    gate.step(np.array([1.0, -1.0], np.float32))
    obs, _, _, _, info = gate.approve()
    np.testing.assert_allclose(obs[2:], [1.0, -1.0])
    assert not info["escalated"] and info["review_cost"] == pytest.approx(1.0)
    assert env._k == 3 and gate.escalations == 2
    with pytest.raises(ValueError, match="awaiting review"):
        gate.approve()


def test_escalation_composes_with_predictability_and_lagrangian():
    inner = PredictabilityReward(ToyPointEnv(max_steps=8), LinearPredictor(2, 3))
    gate = ReviewGate(inner, lateral_reviewer, threshold=0.5, mode="escalate")
    outer = LagrangianReward(
        PredictabilityReward(gate, LinearPredictor(2, 3), channel="outer"),
        LagrangeMultiplier(1.0, init=1.0),
        channel="outer",
    )
    outer.reset(seed=0)
    for k in range(8):
        swerve = 1.0 if k % 3 == 2 else 0.0
        _, reward, _, _, info = outer.step(np.array([1.0, swerve], np.float32))
        if info["escalated"]:
            # a paused step reports zero new states: nothing scored, all channels zero
            assert info["observers_scored"] == 0 and reward == 0.0
            assert info["costs"] == {"boundary": 0.0, "predictability": 0.0, "outer": 0.0}
    assert gate.escalations == 2


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_check_env():
    check_env(
        ReviewGate(ToyPointEnv(), lateral_reviewer, 0.5, fallback=STOP), skip_render_check=True
    )
    check_env(
        ReviewGate(ToyPointEnv(), lateral_reviewer, 0.5, mode="escalate"), skip_render_check=True
    )


def test_bad_inputs():
    with pytest.raises(ValueError, match="mode"):
        ReviewGate(ToyPointEnv(), lateral_reviewer, 0.5, fallback=STOP, mode="pause")
    with pytest.raises(ValueError, match="fallback"):
        ReviewGate(ToyPointEnv(), lateral_reviewer, 0.5)
    with pytest.raises(ValueError, match="fallback"):
        ReviewGate(ToyPointEnv(), lateral_reviewer, 0.5, fallback=np.array([5.0, 0.0]))
    with pytest.raises(TypeError, match="reviewer"):
        ReviewGate(ToyPointEnv(), 3.0, 0.5, fallback=STOP)
    with pytest.raises(TypeError, match="threshold"):
        ReviewGate(ToyPointEnv(), lateral_reviewer, "high", fallback=STOP)
    gate = ReviewGate(ToyPointEnv(), lambda env, a: float("nan"), 0.5, fallback=STOP)
    gate.reset()
    with pytest.raises(ValueError, match="nan"):
        gate.step(STOP)


@pytest.mark.parametrize(
    "action", [[np.inf, 0.0], [5.0, 5.0], [np.nan, 0.0], [0.0], "left"], ids=repr
)
def test_an_invalid_action_is_refused_before_the_reviewer_judges_it(action):
    reviewer = ObjectReviewer()
    gate = ReviewGate(ToyPointEnv(), reviewer, threshold=0.5, fallback=STOP)
    gate.reset(seed=0)
    with pytest.raises(ValueError, match=r"^action: expected an action in Box"):
        gate.step(action)
    assert reviewer.calls == 0 and gate.escalations == 0  # not judged, not replaced


def test_approve_refuses_an_invalid_replacement():
    gate = ReviewGate(ToyPointEnv(), lateral_reviewer, threshold=0.5, mode="escalate")
    gate.reset(seed=0)
    gate.step(np.array([1.0, 0.9], np.float32))
    with pytest.raises(ValueError, match="approve: action: expected an action in"):
        gate.approve(np.array([9.0, 0.0], np.float32))
    assert gate.awaiting_review  # the pending proposal is kept


@pytest.mark.parametrize("action", [-1, 99, 2.5e9], ids=repr)
def test_an_invalid_discrete_driving_action_is_refused_by_the_gate(action):
    import gymnasium as gym

    import bystander.envs  # noqa: F401 - registers the ids

    env = gym.make("bystander/Intersection-v0", config={"action_type": "discrete"})
    calls = []
    gate = ReviewGate(env, lambda e, a: calls.append(a) or 10.0, threshold=0.5, fallback=0)
    gate.reset(seed=0)
    with pytest.raises(ValueError, match=r"^action: expected an action in Discrete"):
        gate.step(action)
    assert calls == []
