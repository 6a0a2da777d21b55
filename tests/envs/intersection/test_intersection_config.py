"""IntersectionConfig bounds: sizes and magnitudes that would exhaust memory or overflow
are refused with the field's name; numpy scalars are accepted as values."""

from __future__ import annotations

import numpy as np
import pytest

from bystander.envs.intersection.config import IntersectionConfig
from bystander.envs.intersection.gym_env import IntersectionEnv
from bystander.envs.intersection.vec_env import IntersectionVecEnv


@pytest.mark.parametrize(
    "overrides, field",
    [({"max_agents": 100_000}, "max_agents"), ({"grid": (60, 60)}, "grid"),
     ({"n_pedestrians": 10**9}, "n_pedestrians"), ({"arrive_radius": 1e300}, "arrive_radius"),
     ({"dt": 1e300}, "dt"), ({"reward_progress": 1e300}, "reward_progress"),
     ({"n_nearest": 10**6}, "n_nearest"), ({"reward_time": -1e300}, "reward_time"),
     ({"speed_limit": float("inf")}, "speed_limit"), ({"n_cars": 1.5}, "n_cars")],
)  # fmt: skip
def test_out_of_bounds_values_name_the_field_and_the_bound(overrides, field):
    with pytest.raises(ValueError, match=rf"^config\.{field}: expected .*(<=|\[1, 12\])"):
        IntersectionConfig.from_dict(overrides)


def test_a_bool_field_wants_a_bool():
    with pytest.raises(ValueError, match=r"^config\.occlusion_by_vehicles: expected a bool"):
        IntersectionConfig.from_dict({"occlusion_by_vehicles": 1})


def test_numpy_scalars_are_accepted_and_stored_as_python_numbers():
    cfg = IntersectionConfig.from_dict(
        {"n_cars": np.int64(3), "dt": np.float32(0.05), "grid": (np.int64(1), np.int64(2)),
         "occlusion_by_vehicles": np.bool_(True)}
    )  # fmt: skip
    assert cfg.n_cars == 3 and type(cfg.n_cars) is int
    assert cfg.dt == pytest.approx(0.05) and type(cfg.dt) is float
    assert cfg.grid == (1, 2) and cfg.occlusion_by_vehicles is True
    assert cfg == IntersectionConfig.from_dict(cfg.to_dict())


def test_unknown_keys_of_mixed_types_are_reported_not_crashed_on():
    with pytest.raises(ValueError, match="unknown key"):
        IntersectionConfig.from_dict({1: 2, "zzz": 3})
    with pytest.raises(ValueError, match="unknown key"):
        IntersectionConfig().replace({1: 2, "zzz": 3})


def test_the_largest_allowed_rewards_stay_finite_in_both_apis():
    cfg = {"reward_progress": 1e6, "reward_arrival": 1e6}
    env = IntersectionEnv(config=cfg)
    env.reset(seed=0)
    venv = IntersectionVecEnv(2, cfg, seed=0)
    venv.reset()
    for _ in range(30):
        _, r, *_ = env.step(3)
        _, rv, *_ = venv.step(np.array([3, 3]))
        assert np.isfinite(r) and np.isfinite(rv).all()


def test_the_gym_env_refuses_to_step_past_truncation():
    env = IntersectionEnv(config={"max_cycles": 3})
    env.reset(seed=0)
    ended = [env.step(1)[2:4] for _ in range(3)]
    assert ended[-1] == (False, True)
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step(1)
    env.reset(seed=1)
    env.step(1)  # a new episode steps again


@pytest.mark.parametrize(
    "action", [[True, False], [1 + 2j, 0.0], ["0.5", "0.1"], [object(), 0.0]], ids=repr
)
def test_continuous_actions_must_be_real_numbers(action):
    env = IntersectionEnv(config={"action_type": "continuous"})
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"^action: expected 2 floats"):
        env.step(action)


@pytest.mark.parametrize(
    "actions",
    [np.array([[True, False]] * 2), np.array([[1 + 1j, 0.0]] * 2), np.array([["0.5", "0.1"]] * 2)],
    ids=["bool", "complex", "str"],
)
def test_vec_env_continuous_actions_must_be_real_numbers(actions):
    venv = IntersectionVecEnv(2, {"action_type": "continuous"}, seed=0)
    venv.reset()
    with pytest.raises(ValueError, match=r"^actions: expected .*real numbers"):
        venv.step(actions)
