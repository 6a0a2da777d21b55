"""The vectorised intersection simulator: observers, traffic, events, routes, determinism."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import gymnasium as gym
import numpy as np
import pytest

import bystander.envs  # noqa: F401
from bystander.envs.contract import EGO_STEP_KEY
from bystander.envs.intersection.config import IntersectionConfig
from bystander.envs.intersection.road import CONNECTOR, RoadNetwork
from bystander.envs.intersection.sim import (
    CAR,
    CONTROLLED,
    CYCLIST,
    FASTER,
    KEEP,
    PEDESTRIAN,
    TURN_LEFT,
    TURN_RIGHT,
    IntersectionSim,
)

EMPTY = dict(
    n_cars=0, n_pedestrians=0, n_cyclists=0, car_rate=0.0, cyclist_rate=0.0, pedestrian_rate=0.0
)


def empty_sim(**overrides) -> IntersectionSim:
    sim = IntersectionSim(IntersectionConfig.from_dict({**EMPTY, **overrides}), n_worlds=1)
    sim.reset(seed=0)
    return sim


# ---------------------------------------------------------------- observers
def test_visibility_fov_range_and_buildings():
    sim = empty_sim()
    sim.place(0, 0, CONTROLLED, -25.0, -1.75, 0.0)
    # a car in the east arm facing west along the road: in range, in view, clear line
    sim.place(0, 1, CAR, 20.0, -1.75, math.pi)
    assert sim.visibility()[0, 0, 1]
    view = sim.observer_view(0, 0, sim.visibility())
    np.testing.assert_allclose(view["ego_in_frame"][0], [45.0, 0.0], atol=1e-9)
    # facing away
    sim.place(0, 1, CAR, 20.0, -1.75, 0.0)
    assert not sim.visibility()[0, 0, 1]
    # out of range (range_car = 50 m)
    sim.place(0, 1, CAR, 30.0, -1.75, math.pi)
    assert not sim.visibility()[0, 0, 1]
    # behind the south-west corner building, although facing the ego and in range
    heading = math.atan2(-1.75 - -30.0, -25.0 - 1.75)
    sim.place(0, 1, CAR, 1.75, -30.0, heading)
    assert not sim.visibility()[0, 0, 1]
    # same observer, ego moved into the intersection: the line of sight is clear
    sim.place(0, 0, CONTROLLED, 0.0, -1.75, 0.0)
    sim.place(0, 1, CAR, 1.75, -30.0, math.pi / 2)
    assert sim.visibility()[0, 0, 1]
    # a pedestrian (180 deg view) at the corner looking north sees the ego to its north-west
    sim.place(0, 0, CONTROLLED, -25.0, -1.75, 0.0)
    sim.place(0, 2, PEDESTRIAN, -10.0, -5.0, math.pi / 2)
    assert sim.visibility()[0, 0, 2]
    sim.place(0, 2, PEDESTRIAN, -10.0, -5.0, -math.pi / 2)
    assert not sim.visibility()[0, 0, 2]


def test_visibility_occlusion_by_vehicles_is_optional():
    for occlude, expected in ((False, True), (True, False)):
        sim = empty_sim(occlusion_by_vehicles=occlude)
        sim.place(0, 0, CONTROLLED, -25.0, -1.75, 0.0)
        sim.place(0, 1, CAR, 20.0, -1.75, math.pi)
        sim.place(0, 2, CYCLIST, 0.0, -1.75, math.pi)  # in between, facing the ego
        assert sim.visibility()[0, 0, 1] == expected
        assert sim.visibility()[0, 0, 2]  # the blocker itself sees the ego


def test_observer_ids_are_stable_and_never_reused():
    env = gym.make("bystander/Intersection-v0", config={"max_cycles": 400, "car_rate": 0.3})
    _, info = env.reset(seed=11)
    types: dict[int, str] = {}
    gone: set[int] = set()
    prev: set[int] = set()
    for _ in range(300):
        _, _, term, trunc, info = env.step(KEEP)
        step = info[EGO_STEP_KEY]
        ids = step.observer_ids.tolist()
        assert len(set(ids)) == len(ids)
        for i, t in zip(ids, step.observer_types.tolist(), strict=True):
            assert types.setdefault(i, t) == t
        gone |= prev - set(ids)
        assert not (gone & set(ids)), "an id came back after its road user left"
        prev = set(ids)
        if term or trunc:
            break
    assert len(types) > 12  # spawning brought new road users


# ---------------------------------------------------------------- traffic
def test_scripted_traffic_flows_without_car_collisions():
    sim = IntersectionSim(IntersectionConfig(car_rate=0.08), n_worlds=2)
    sim.reset(seed=4)
    for w in range(2):
        sim.remove(w, 0)  # traffic only
    overlaps, speeds, counts = 0, [], []
    for _ in range(700):
        sim.step(np.full((2, 1), KEEP))
        vehicles = sim.alive & ((sim.kind == CAR) | (sim.kind == CYCLIST))
        sep = sim.pairwise_separation()
        overlaps += int(((sep < 0) & vehicles[:, :, None] & vehicles[:, None, :]).sum())
        cars = sim.alive & (sim.kind == CAR)
        speeds.append(sim.v[cars].mean())
        counts.append(cars.sum(1).min())
    assert overlaps == 0
    assert np.mean(speeds) > 3.0  # m/s: cars keep moving through the intersection
    assert min(counts[100:]) >= 1
    assert (sim.next_uid >= 20).all()  # new road users keep arriving


def test_yield_conflict_table_is_symmetric_and_local():
    road = RoadNetwork(IntersectionConfig(grid=(1, 2)))
    assert (road.conflict == road.conflict.T).all()
    i, j = np.nonzero(road.conflict)
    assert (road.kind[i] == CONNECTOR).all() and (road.node[i] == road.node[j]).all()
    # crossing straight paths from perpendicular arms conflict, opposite straights do not
    straight = {
        (road.node[s], road.connector_in_arm[s]): s for s in np.where(road.connector_turn == 1)[0]
    }
    assert road.conflict[straight[(0, 0)], straight[(0, 1)]]
    assert not road.conflict[straight[(0, 0)], straight[(0, 2)]]


# ---------------------------------------------------------------- ego events
def test_ego_arrives_in_an_empty_world():
    env = gym.make("bystander/Intersection-v0", config=EMPTY)
    env.reset(seed=2)
    for t in range(250):
        _, reward, term, trunc, info = env.step(FASTER if t < 3 else KEEP)
        if term or trunc:
            break
    assert term and info["arrived"] and not info["crashed"]
    assert info["rewards"]["arrival"] == pytest.approx(2.0)
    assert info["episode_cost"] == 0.0


def _car_ahead(**overrides) -> IntersectionSim:
    sim = empty_sim(**overrides)
    seg, s = int(sim.seg[0, 0]), float(sim.s[0, 0])
    x, y, h, _, _ = sim.road.pose_at(np.array([seg]), np.array([s + 15.0]))
    sim.place(0, 1, CAR, float(x[0]), float(y[0]), float(h[0]))
    return sim


def test_crash_into_a_stopped_car_and_near_miss_cost():
    sim = _car_ahead(ego_car_following=False)
    for _ in range(100):
        out = sim.step(np.array([[FASTER]]))
        if out.terminated[0, 0]:
            break
    assert out.crashed[0, 0] and out.cost[0, 0] == pytest.approx(1.0)
    assert out.rewards[0, 0, 2] == pytest.approx(sim.config.reward_collision)
    # near miss: a car alongside with a 0.5 m gap costs near_miss_cost * (1 - 0.5 / 1)
    sim = empty_sim()
    sim.place(0, 0, CONTROLLED, -30.0, -1.75, 0.0)
    sim.place(0, 1, CAR, -30.0, -1.75 + 1.8 + 0.5, 0.0)
    out = sim.step(np.array([[KEEP]]))
    assert not out.crashed[0, 0]
    assert out.cost[0, 0] == pytest.approx(0.25, abs=1e-6)


def test_discrete_ego_keeps_its_distance_with_car_following():
    sim = _car_ahead()  # ego_car_following=True by default
    for _ in range(100):
        out = sim.step(np.array([[FASTER]]))
        assert not out.terminated[0, 0]
    assert sim.v[0, 0] < 0.5  # stopped behind the standing car
    gap = sim.pairwise_separation()[0, 0, 1]
    assert 0.5 < gap < 5.0


def test_continuous_ego_leaving_the_road_terminates():
    env = gym.make("bystander/Intersection-v0", config={**EMPTY, "action_type": "continuous"})
    env.reset(seed=0)
    for _ in range(200):
        _, _, term, trunc, info = env.step(np.array([1.0, 1.0], dtype=np.float32))
        if term or trunc:
            break
    assert term and info["offroad"]
    assert info["rewards"]["offroad"] == pytest.approx(-1.0)


def test_grid_offers_several_routes_and_turn_actions_choose_them():
    road = RoadNetwork(IntersectionConfig(grid=(2, 2)))
    several = 0
    for e in road.entries:
        for d in range(len(road.exits)):
            nxt = road.succ[e]  # connectors for right / straight / left
            finite = np.isfinite(road.dist_to_goal[d, nxt] + road.length[e]).sum()
            several += finite >= 2
    assert several > 0
    taken = {}
    for action in (TURN_RIGHT, TURN_LEFT):
        sim = empty_sim(grid=(2, 2))
        turns = set()
        for _ in range(80):
            out = sim.step(np.array([[action]]))
            if sim.road.kind[sim.seg[0, 0]] == CONNECTOR:
                turns.add(int(sim.road.connector_turn[sim.seg[0, 0]]))
            if out.terminated[0, 0]:
                break
        taken[action] = turns
    assert 0 in taken[TURN_RIGHT] and 2 in taken[TURN_LEFT]


# ---------------------------------------------------------------- vectorisation
def test_worlds_step_together_and_reset_independently():
    sim = IntersectionSim(IntersectionConfig(), n_worlds=3, seed=0)
    out = sim.reset(seed=0)
    assert out.obs.shape == (3, 1, 103) and out.visible.shape == (3, 1, 24)
    rng = np.random.default_rng(0)
    for _ in range(30):
        out = sim.step(rng.integers(0, 6, size=(3, 1)))
    assert out.rewards.shape == (3, 1, 5) and out.cost.shape == (3, 1)
    before = sim.x.copy()
    sim.reset(worlds=[1])
    np.testing.assert_array_equal(sim.x[[0, 2]], before[[0, 2]])
    assert sim.t[1] == 0 and sim.t[0] == 30


# ---------------------------------------------------------------- determinism
_DIGEST = textwrap.dedent(
    """
    import hashlib, sys
    import numpy as np, gymnasium as gym
    import bystander.envs
    env = gym.make("bystander/Intersection-v0", config={"max_cycles": 300, "grid": (1, 2)})
    obs, info = env.reset(seed=int(sys.argv[1]))
    rng = np.random.default_rng(0)
    h = hashlib.sha256()
    for t in range(1000):
        obs, r, term, trunc, info = env.step(int(rng.integers(6)))
        s = info["ego_step"]
        for a in (obs, np.float64(r), s.observer_ids, s.visible, s.observer_frames, s.states):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(",".join(s.observer_types.tolist()).encode())
        if term or trunc:
            obs, info = env.reset()
    print(h.hexdigest())
    """
)


def test_same_seed_same_episodes_across_processes():
    def run(seed: int, hashseed: str) -> subprocess.Popen:
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        return subprocess.Popen(
            [sys.executable, "-c", _DIGEST, str(seed)], env=env, stdout=subprocess.PIPE, text=True
        )

    procs = [run(7, "0"), run(7, "4242")]
    digests = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert digests[0] == digests[1] and len(digests[0]) == 64


def test_different_seeds_give_different_episodes():
    firsts = []
    for seed in (7, 8):
        env = gym.make("bystander/Intersection-v0")
        obs, _ = env.reset(seed=seed)
        firsts.append(obs)
    assert not np.array_equal(firsts[0], firsts[1])


def test_scalar_world_reset_equals_array_reset():
    """One-world resets take a scalar path: same draws, same episodes as the array code."""
    import hashlib

    for overrides in ({}, {"grid": (2, 2), "n_pedestrians": 8}, {"action_type": "continuous"}):
        cfg = IntersectionConfig.from_dict({"max_cycles": 40, **overrides})
        digests = []
        for scalar in (True, False):
            sim = IntersectionSim(cfg, n_worlds=4)
            sim._scalar_resets = scalar
            sim.seed_worlds([1, 2, 3, 4])
            sim.reset()
            rng = np.random.default_rng(0)
            h = hashlib.sha256()
            for k in range(120):
                if cfg.action_type == "continuous":
                    out = sim.step(rng.uniform(-1, 1, (4, 1, 2)))
                else:
                    out = sim.step(rng.integers(0, 6, (4, 1)))
                done = np.flatnonzero(out.terminated[:, 0] | out.truncated)
                if k % 5 == 0:
                    done = np.union1d(done, [k % 4])
                if len(done):
                    sim.reset(worlds=done)
                for arr in (sim.x, sim.y, sim.uid, sim.kind, sim.turn, sim.v0, sim.alive):
                    h.update(np.ascontiguousarray(arr).tobytes())
            digests.append(h.hexdigest())
        assert digests[0] == digests[1], overrides


@pytest.mark.parametrize("action_type", ["discrete", "continuous"])
def test_pickled_and_copied_sims_step_on_exactly(action_type: str) -> None:
    """A pickled (checkpointed) or deep-copied simulator continues bit for bit: no state
    lives in views that a copy would detach from their base."""
    import copy
    import pickle

    cfg = IntersectionConfig.from_dict({"action_type": action_type})
    sim = IntersectionSim(cfg, n_worlds=3, seed=2)
    sim.reset()
    rng = np.random.default_rng(0)

    def actions() -> np.ndarray:
        if action_type == "continuous":
            return rng.uniform(-1, 1, (3, 1, 2))
        return rng.integers(0, 6, (3, 1))

    for _ in range(20):
        sim.step(actions())
    twins = [pickle.loads(pickle.dumps(sim)), copy.deepcopy(sim)]
    for _ in range(60):
        a = actions()
        want = sim.step(a)
        for twin in twins:
            got = twin.step(a)
            assert got.obs.tobytes() == want.obs.tobytes()
            assert got.rewards.tobytes() == want.rewards.tobytes()
        done = np.flatnonzero(want.terminated[:, 0] | want.truncated)
        if len(done):
            for s in (sim, *twins):
                s.reset(worlds=done)
