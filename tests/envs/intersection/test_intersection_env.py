"""The intersection env's public APIs: PettingZoo and Gymnasium tests, errors, rendering."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from pettingzoo.test import api_test, max_cycles_test, parallel_api_test, render_test
from pettingzoo.utils import parallel_to_aec

import bystander.envs  # noqa: F401  (registers the ids)
from bystander.envs import intersection_v0
from bystander.envs.contract import EGO_STEP_KEY, EgoStep
from bystander.envs.intersection.config import IntersectionConfig
from bystander.envs.intersection.render import save_video

ENV_ID = "bystander/Intersection-v0"


# ---------------------------------------------------------------- PettingZoo
def test_parallel_api():
    parallel_api_test(intersection_v0.parallel_env(n_controlled=2), num_cycles=60)


@pytest.mark.parametrize("action_type", ["discrete", "continuous"])
def test_aec_api(action_type):
    api_test(intersection_v0.env(n_controlled=2, action_type=action_type), num_cycles=40)


def test_render_via_parallel_to_aec():
    def env_fn(render_mode=None):
        return parallel_to_aec(
            intersection_v0.parallel_env(render_mode=render_mode, render_fps=1000)
        )

    render_test(env_fn)


def test_max_cycles():
    max_cycles_test(intersection_v0)


def test_pettingzoo_metadata_and_cached_spaces():
    env = intersection_v0.parallel_env(n_controlled=3)
    md = env.metadata
    assert md["name"] == "intersection_v0" and md["is_parallelizable"] is True
    assert md["render_modes"] == ["human", "rgb_array"] and md["render_fps"] > 0
    assert env.possible_agents == ["car_0", "car_1", "car_2"]
    assert env.observation_space("car_1") is env.observation_space("car_1")
    assert env.action_space("car_0") is env.action_space("car_0")
    obs, infos = env.reset(seed=0)
    # each agent sees the other agents as "car" observers
    ids = set(infos["car_0"][EGO_STEP_KEY].observer_ids.tolist())
    assert {int(env.sim.uid[0, 1]), int(env.sim.uid[0, 2])} <= ids


def test_pettingzoo_bad_actions():
    env = intersection_v0.parallel_env(n_controlled=2)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="unknown agent 'car_9'"):
        env.step({"car_9": 1})
    with pytest.raises(ValueError, match=r"actions\['car_0'\]"):
        env.step({"car_0": 17})
    with pytest.raises(ValueError, match="agent"):
        env.observation_space("nobody")


# ---------------------------------------------------------------- Gymnasium
@pytest.mark.parametrize(
    "config",
    [{}, {"action_type": "continuous"}, {"grid": (2, 2)}, {"observation": "dict"},
     {"observation": "occupancy", "occlusion_by_vehicles": True}],
)  # fmt: skip
def test_check_env(config):
    env = gym.make(ENV_ID, config=config)
    check_env(env.unwrapped)
    env.close()


def test_check_env_on_every_registered_id_of_ours():
    ours = [k for k in gym.registry if k.startswith("bystander/Intersection")]
    assert ours == [ENV_ID]


def test_make_with_config_and_reset_options():
    env = gym.make(ENV_ID, config={"action_type": "continuous", "max_cycles": 50})
    assert env.action_space.shape == (2,)
    obs, info = env.reset(seed=1, options={"config": {"action_type": "discrete", "grid": (1, 2)}})
    assert env.unwrapped.config.grid == (1, 2)
    assert env.action_space.n == 6
    assert env.observation_space.contains(obs)
    assert isinstance(info[EGO_STEP_KEY], EgoStep) and info[EGO_STEP_KEY].episode_start


def test_step_info_contract():
    env = gym.make(ENV_ID, config={"max_cycles": 40})
    obs, info = env.reset(seed=3)
    total_cost = 0.0
    for _ in range(40):
        obs, reward, term, trunc, info = env.step(env.action_space.sample())
        assert set(info["rewards"]) == {"progress", "arrival", "collision", "offroad", "time"}
        assert reward == pytest.approx(sum(info["rewards"].values()))
        assert info["cost"] == pytest.approx(sum(info["costs"].values()))
        assert set(info["costs"]) == {"collision"}
        total_cost += info["cost"]
        step = info[EGO_STEP_KEY]
        m = len(step.observer_ids)
        assert step.states.shape == (1, 2) and step.frame == "rigid2d" and not step.episode_start
        assert step.visible.shape == (m, 1) and step.observer_frames.shape == (m, 3)
        assert len(set(step.observer_ids.tolist())) == m
        assert set(step.observer_types.tolist()) <= {"car", "pedestrian", "cyclist"}
        if term or trunc:
            break
    assert "episode_cost" in info and info["episode_cost"] == pytest.approx(total_cost)
    assert info["episode_costs"] == {"collision": pytest.approx(total_cost)}


def test_observer_view_matches_ego_step():
    env = gym.make(ENV_ID)
    _, info = env.reset(seed=5)
    for _ in range(20):
        _, _, _, _, info = env.step(1)
    view = env.unwrapped.observer_view()
    step = info[EGO_STEP_KEY]
    np.testing.assert_array_equal(view["ids"], step.observer_ids)
    np.testing.assert_array_equal(view["visible"], step.visible[:, 0])
    # the ego in each observer's frame agrees with the contract's rigid transform
    from bystander.envs.contract import FRAMES

    in_frame = FRAMES["rigid2d"].to_frame(
        np.repeat(step.states[None], len(view["ids"]), 0), view["poses"]
    )
    np.testing.assert_allclose(in_frame[:, 0], view["ego_in_frame"], atol=1e-9)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "config, field",
    [({"dt": -0.1}, "dt"), ({"grid": (0, 1)}, "grid"), ({"action_type": "fly"}, "action_type"),
     ({"max_cycles": 0}, "max_cycles"), ({"nonsense": 1}, "nonsense"), ({"fov_car": 7.0}, "fov_car"),
     ({"observation": "pixels"}, "observation"), ({"n_controlled": 2}, "n_controlled"),
     ({"reward_collision": 1.0}, "reward_collision"), ({"range_car": float("nan")}, "range_car")],
)  # fmt: skip
def test_bad_config_names_the_field(config, field):
    with pytest.raises(ValueError, match=field):
        gym.make(ENV_ID, config=config)


def test_bad_reset_config_names_the_field():
    env = gym.make(ENV_ID)
    with pytest.raises(ValueError, match="speed_limit"):
        env.reset(options={"config": {"speed_limit": 0}})
    with pytest.raises(ValueError, match="options"):
        env.reset(options={"what": 1})


@pytest.mark.parametrize(
    "config, action, match",
    [({}, 6, r"\[0, 6\)"), ({}, 1.5, "int meta-action"), ({}, [1, 2], "int meta-action"),
     ({"action_type": "continuous"}, [0.1], r"shape \(2,\)"),
     ({"action_type": "continuous"}, [np.nan, 0.0], "finite"),
     ({"action_type": "continuous"}, [2.0, 0.0], r"\[-1, 1\]"),
     ({"action_type": "continuous"}, "go", "action")],
)  # fmt: skip
def test_bad_actions(config, action, match):
    env = gym.make(ENV_ID, config=config)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.unwrapped.step(action)


def test_config_dataclass_roundtrip():
    cfg = IntersectionConfig.from_dict({"grid": [2, 3], "dt": 0.05})
    assert cfg.grid == (2, 3) and cfg.dt == 0.05
    assert IntersectionConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(TypeError, match="config"):
        IntersectionConfig.from_dict([("dt", 0.1)])


# ---------------------------------------------------------------- rendering
def test_rgb_array_headless_frames_are_real(tmp_path):
    env = gym.make(ENV_ID, render_mode="rgb_array", config={"screen_size": 300})
    env.reset(seed=0)
    calls = []

    def overlay(surface, world_to_px):
        calls.append(world_to_px(np.zeros((3, 2))).shape)

    env.unwrapped.add_overlay(overlay)
    frames = [env.render()]
    for _ in range(5):
        env.step(2)
        frames.append(env.render())
    f = frames[-1]
    assert f.dtype == np.uint8 and f.ndim == 3 and f.shape[2] == 3 and f.shape[1] == 300
    assert f.mean() > 40  # not black
    colours = np.unique(f.reshape(-1, 3), axis=0)
    assert len(colours) > 20
    # the ego is drawn in red somewhere
    red = (f[..., 0] > 200) & (f[..., 1] < 80) & (f[..., 2] < 80)
    assert red.sum() > 3
    assert calls and calls[0] == (3, 2)
    gif = save_video(frames, tmp_path / "episode.gif", fps=10)
    import imageio.v2 as imageio

    assert len(imageio.mimread(gif)) == len(frames)
    with pytest.raises(ValueError, match="gif"):
        save_video(frames, tmp_path / "episode.avi")


def test_human_mode_headless_returns_none():
    env = gym.make(ENV_ID, render_mode="human", config={"render_fps": 1000, "screen_size": 128})
    env.reset(seed=0)
    env.step(1)
    assert env.render() is None
    env.close()


@pytest.mark.parametrize(("n", "kept"), [(1, [0]), (2, [0, 1]), (4, [0, 2, 3]), (5, [0, 2, 4])])
def test_route_thinning_keeps_a_drawable_polyline(n, kept):
    # a 2-point route used to thin to 1 point, which pygame cannot draw as lines
    from bystander.envs.intersection.render import _thin

    pts = np.arange(2 * n, dtype=float).reshape(n, 2)
    np.testing.assert_array_equal(_thin(pts), pts[kept])
