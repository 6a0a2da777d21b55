"""The factored action space: speed and turn intent chosen apart, every step."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import bystander.envs  # noqa: F401 - registers the ids
from bystander.agents.heldout import evaluate_batched
from bystander.agents.scripted import scripted_driver
from bystander.config import load_config
from bystander.envs.intersection.config import IntersectionConfig
from bystander.envs.intersection.sim import (
    FACTORED_ACTIONS,
    META_ACTIONS,
    META_TO_FACTORED,
    IntersectionSim,
)
from bystander.envs.intersection.vec_env import IntersectionVecEnv


def test_space_and_names() -> None:
    env = gym.make("bystander/Intersection-v0", config={"action_type": "factored"})
    assert env.action_space == gym.spaces.Discrete(12) and len(FACTORED_ACTIONS) == 12
    assert FACTORED_ACTIONS[4 * 2 + 3] == "FASTER+TURN_RIGHT"
    for meta, fac in enumerate(META_TO_FACTORED):  # the twin keeps speed on a turn
        name = META_ACTIONS[meta]
        want = f"{name}+NONE" if not name.startswith(("TURN", "GO")) else f"KEEP+{name}"
        assert FACTORED_ACTIONS[fac] == want


def test_meta_actions_and_their_twins_drive_the_same() -> None:
    rng = np.random.default_rng(0)
    metas = rng.integers(0, 6, size=(120, 3, 1))
    runs = []
    for kind, acts in (("discrete", metas), ("factored", META_TO_FACTORED[metas])):
        sim = IntersectionSim(IntersectionConfig(action_type=kind, max_cycles=120), n_worlds=3)
        sim.reset(seed=4)
        xs = [sim.step(a).obs.copy() for a in acts]
        runs.append(np.stack(xs))
    np.testing.assert_array_equal(*runs)


def test_speed_and_turn_in_one_step() -> None:
    cfg = IntersectionConfig(action_type="factored")
    sim = IntersectionSim(cfg, n_worlds=1)
    sim.reset(seed=1)
    v0 = float(sim.target_v[0, 0])
    sim.step(np.array([[FACTORED_ACTIONS.index("FASTER+TURN_LEFT")]]))
    assert sim.target_v[0, 0] == pytest.approx(min(v0 + cfg.speed_step, cfg.ego_max_speed))
    assert sim.turn[0, 0] == 2 and sim.turn_chosen[0, 0]  # left, chosen with the speed change


def test_bad_factored_actions_are_clear_errors() -> None:
    env = gym.make("bystander/Intersection-v0", config={"action_type": "factored"}).unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"expected an int in \[0, 12\)"):
        env.step(12)
    venv = IntersectionVecEnv(2, {"action_type": "factored"}, seed=0)
    venv.reset()
    with pytest.raises(ValueError, match=r"KEEP\+NONE"):
        venv.step(np.array([0.5, 1.0]))


def test_scripted_drivers_drive_the_same_in_both_spaces() -> None:
    rows = {}
    for kind in ("discrete", "factored"):
        cfg = load_config(overrides=[f"env.config.action_type={kind}", "env.config.max_cycles=150"])
        driver = scripted_driver("speed:9", cfg.env.config)
        rows[kind] = evaluate_batched(driver, cfg, episodes=6, seed=40).episodes
    for a, b in zip(rows["discrete"], rows["factored"], strict=True):
        assert (a["success"], a["steps"], a["progress_m"]) == (
            b["success"],
            b["steps"],
            b["progress_m"],
        )
    with pytest.raises(ValueError, match="action_type"):
        scripted_driver("speed:9", {"action_type": "continuous"})
