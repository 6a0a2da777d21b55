"""The target_speed action space: each action asks for one absolute speed level."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import bystander.envs  # noqa: F401 - registers the ids
from bystander.agents.heldout import evaluate_batched
from bystander.agents.reviewers import build_driving_reviewer
from bystander.agents.scripted import scripted_driver
from bystander.config import load_config
from bystander.envs.intersection.config import IntersectionConfig
from bystander.envs.intersection.sim import IntersectionSim
from bystander.envs.intersection.vec_env import IntersectionVecEnv
from bystander.envs.intersection.views import action_names

LEVELS = [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]
QUIET = {"n_cars": 0, "n_pedestrians": 0, "n_cyclists": 0, "car_rate": 0.0,
         "cyclist_rate": 0.0, "pedestrian_rate": 0.0}  # fmt: skip


def test_space_names_and_defaults() -> None:
    env = gym.make("bystander/Intersection-v0", config={"action_type": "target_speed"})
    assert env.action_space == gym.spaces.Discrete(7)  # 0, 2, ..., 12 m/s
    names = action_names(IntersectionConfig(action_type="target_speed"))
    assert names == ("TARGET_0", "TARGET_2", "TARGET_4", "TARGET_6", "TARGET_8", "TARGET_10",
                     "TARGET_12")  # fmt: skip
    env = gym.make(
        "bystander/Intersection-v0", config={"action_type": "target_speed", "speed_levels": LEVELS}
    )
    assert env.action_space == gym.spaces.Discrete(len(LEVELS))


@pytest.mark.parametrize(
    "levels", [[], [4.0, 2.0], [2.0, 2.0], [13.0], [-1.0], [float("nan")], "4", [0.0] * 65]
)
def test_bad_levels_name_the_field(levels) -> None:
    with pytest.raises(ValueError, match=r"config\.speed_levels: expected 1-64 increasing"):
        IntersectionConfig(action_type="target_speed", speed_levels=levels)


def test_an_action_sets_its_level_and_the_car_follows() -> None:
    cfg = IntersectionConfig(action_type="target_speed", speed_levels=LEVELS, **QUIET)
    sim = IntersectionSim(cfg, n_worlds=2)
    sim.reset(seed=3)
    speeds = []
    for _ in range(40):  # 4 s: world 0 asks for 2 m/s, world 1 for 10 m/s
        sim.step(np.array([[0], [4]]))
        speeds.append(sim.v[:, 0].copy())
    np.testing.assert_array_equal(sim.target_v[:, 0], [2.0, 10.0])
    assert speeds[-1] == pytest.approx([2.0, 10.0], abs=0.05)
    assert not sim.turn_chosen[:, 0].any()  # no turn is ever planned: the navigation's


def test_turns_follow_the_navigation_whatever_the_level() -> None:
    """Every level drives the shortest route: no episode ends off route."""
    rng = np.random.default_rng(0)
    venv = IntersectionVecEnv(16, {"action_type": "target_speed", "speed_levels": LEVELS}, seed=0)
    venv.reset()
    ends = 0
    for _ in range(300):
        _, _, dones, infos = venv.step(rng.integers(1, len(LEVELS), size=16))
        for i in np.flatnonzero(dones):
            ends += 1
            assert not (infos[i]["offroad"] or infos[i]["left_map"]) or infos[i]["arrived"]
    assert ends >= 16


def test_scripted_speed_drivers_ask_for_the_nearest_level() -> None:
    env_config = {"action_type": "target_speed", "speed_levels": LEVELS}
    obs = np.zeros((3, 40))
    assert (scripted_driver("speed:4", env_config).predict(obs)[0] == 1).all()
    assert (scripted_driver("speed:9.5", env_config).predict(obs)[0] == 4).all()
    assert scripted_driver("stop", env_config).predict(obs[0])[0] == 0  # 2 m/s: the lowest
    with pytest.raises(ValueError, match="chooses turns"):
        scripted_driver("habit:right", env_config)
    cfg = load_config(overrides=[f"env.config.{k}={v}" for k, v in env_config.items()])
    driver = scripted_driver("speed:4", cfg.env.config)
    res = evaluate_batched(driver, cfg, episodes=20, seed=100)
    assert res.metric("success") > 0.8 and res.metric("off_route") == 0.0
    assert 17.0 < res.metric("time_to_destination_s") < 21.0  # a 4 m/s drive (18.6 s)


def test_an_agent_left_out_keeps_its_target_and_the_review_gate_refuses() -> None:
    from bystander.envs.intersection_v0 import parallel_env

    env = parallel_env(action_type="target_speed", n_controlled=2, **QUIET)
    env.reset(seed=0)
    first, second = env.possible_agents
    env.step({first: 5, second: 1})  # 10 m/s and 2 m/s
    env.step({first: 0})  # the second keeps 2 m/s
    np.testing.assert_array_equal(env.unwrapped.sim.target_v[0], [0.0, 2.0])
    single = gym.make("bystander/Intersection-v0", config={"action_type": "target_speed"})
    with pytest.raises(ValueError, match="review gate"):
        build_driving_reviewer(single)
