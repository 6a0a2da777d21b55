"""Property-based checks over configs and actions, through all three env APIs and the
wrappers: every input either works (finite observations, rewards and costs) or is
refused with a ``ValueError`` / ``TypeError`` / ``RuntimeError`` whose message names
what was wrong. Nothing crashes deep in the library, nothing is silently wrong.

Bounded to a few seconds by default; deeper with ``--hypothesis-profile=deep``
(see ``tests/conftest.py``). The long campaign (kills, corrupted checkpoints, soaks) is
``experiments/reliability/campaign.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bystander.agents.predictors import ConstantVelocityPredictor
from bystander.envs.constraints import LagrangeMultiplier, LagrangianReward, ShapedReward
from bystander.envs.intersection.config import IntersectionConfig
from bystander.envs.intersection.gym_env import IntersectionEnv
from bystander.envs.intersection.vec_env import IntersectionVecEnv
from bystander.envs.intersection_v0 import parallel_env
from bystander.envs.predictability import PredictabilityReward

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments" / "reliability"))
from campaign import TINY, is_clear_error, valid_action  # noqa: E402

FIELDS = IntersectionConfig.field_names()
SMALL = TINY  # small worlds: an accepted config steps in milliseconds

odd_numbers = st.one_of(
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 2, -1, 0.5, 1e-300, 1e300, True, np.int64(3), np.float32(0.2)]),
)
odd_values = st.one_of(
    odd_numbers,
    st.none(),
    st.text(max_size=4),
    st.lists(st.integers(-2, 70), max_size=3).map(tuple),
)
configs = st.dictionaries(st.sampled_from(FIELDS), odd_values, max_size=3)
discrete_actions = st.one_of(
    st.integers(-3, 9),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([None, "go", [1], True, np.int64(2), 2.0]),
)
continuous_actions = st.one_of(
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=0, max_size=3),
    st.sampled_from([None, "go", [True, False], [1 + 1j, 0.0], [[0.1, 0.2]], np.zeros(2)]),
)


def _refused_clearly(err: BaseException, *names: str) -> None:
    """A refusal is clear when it is of a plain type and its message names the input."""
    assert is_clear_error(err, *names), f"obscure {type(err).__name__}: {err}"


def _config_or_refusal(overrides: dict) -> IntersectionConfig | None:
    try:
        return IntersectionConfig.from_dict({**SMALL, **overrides})
    except BaseException as err:  # noqa: BLE001 - classified below
        _refused_clearly(err, "config", *map(str, overrides))
        return None


def _finite(*values: object) -> None:
    for v in values:
        arr = np.asarray(v, dtype=float)
        assert np.isfinite(arr).all(), f"non-finite output {arr}"


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(overrides=configs, seed=st.integers(0, 2**31 - 1))
def test_gymnasium_env_over_fuzzed_configs(overrides, seed):
    cfg = _config_or_refusal(overrides)
    if cfg is None:
        return
    try:
        env = IntersectionEnv(config=cfg)
    except ValueError as err:  # several controlled cars: the single-agent view refuses
        _refused_clearly(err, "n_controlled")
        return
    obs, _ = env.reset(seed=seed)
    _finite(obs)
    for _ in range(cfg.max_cycles):
        action = env.action_space.sample()
        obs, reward, term, trunc, info = env.step(action)
        _finite(obs, reward, info["cost"])
        if term or trunc:
            break


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(overrides=configs, n=st.integers(1, 3))
def test_vec_env_over_fuzzed_configs(overrides, n):
    cfg = _config_or_refusal(overrides)
    if cfg is None:
        return
    venv = IntersectionVecEnv(n, cfg.to_dict(), seed=0)
    _finite(venv.reset())
    for _ in range(cfg.max_cycles + 2):  # through an auto-reset
        actions = np.stack([venv.action_space.sample() for _ in range(venv.num_envs)])
        obs, rewards, _, infos = venv.step(actions)
        _finite(obs, rewards, [i.get("cost", 0.0) for i in infos])


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(overrides=configs, seed=st.integers(0, 1000))
def test_pettingzoo_env_over_fuzzed_configs(overrides, seed):
    cfg = _config_or_refusal(overrides)
    if cfg is None:
        return
    env = parallel_env(**cfg.to_dict())
    obs, _ = env.reset(seed=seed)
    _finite(*obs.values())
    while env.agents:
        actions = {a: env.action_space(a).sample() for a in env.agents}
        obs, rewards, _, _, _ = env.step(actions)
        _finite(*obs.values(), *rewards.values())


@pytest.mark.parametrize("action_type", ["discrete", "continuous"])
@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.data())
def test_wrapped_env_over_fuzzed_actions(action_type, data):
    env = IntersectionEnv(config={**SMALL, "action_type": action_type, "max_cycles": 40})
    env = PredictabilityReward(env, ConstantVelocityPredictor(horizon=5, history=4))
    if data.draw(st.booleans()):
        env = ShapedReward(env, weight=0.1)
    else:
        env = LagrangianReward(env, LagrangeMultiplier(budget=0.2))
    env.reset(seed=data.draw(st.integers(0, 1000)))
    actions = discrete_actions if action_type == "discrete" else continuous_actions
    for _ in range(8):
        action = data.draw(actions)
        valid = valid_action(action, action_type)
        try:
            _, reward, term, trunc, info = env.step(action)
        except BaseException as err:  # noqa: BLE001 - classified below
            assert not valid, f"a valid action {action!r} was refused: {err!r}"
            _refused_clearly(err, "action")
            continue
        assert valid, f"an invalid action {action!r} was accepted"
        _finite(reward, info["cost"], info["predictability"])
        if term or trunc:
            env.reset(seed=0)
