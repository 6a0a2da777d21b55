"""The per-step kernels of the controlled cars equal the numpy code they replaced, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from bystander.envs.intersection.config import IntersectionConfig
from bystander.envs.intersection.ego_kernels import (
    ego_commands,
    merge_idm,
    observation,
    observer_report,
)
from bystander.envs.intersection.kernels import observer_slots
from bystander.envs.intersection.sim import (
    CONTROLLED,
    MAX_BRAKE,
    N_EGO_FEATURES,
    OBSERVER_TYPES,
    IntersectionSim,
)


def running_sim(action_type: str, n_controlled: int = 2, steps: int = 30) -> IntersectionSim:
    """Eight worlds after ``steps`` random steps (traffic, finished cars, planned turns)."""
    cfg = IntersectionConfig.from_dict({"action_type": action_type, "n_controlled": n_controlled})
    sim = IntersectionSim(cfg, n_worlds=8, seed=4)
    sim.reset()
    rng = np.random.default_rng(0)
    for _ in range(steps):
        sim.step(random_actions(sim, rng))
    return sim


def random_actions(sim: IntersectionSim, rng: np.random.Generator) -> np.ndarray:
    if sim.continuous:
        return rng.uniform(-1.0, 1.0, (sim.N, sim.C, 2))
    return rng.integers(0, len(sim._speed_delta), (sim.N, sim.C))


def numpy_accel(sim: IntersectionSim, actions: np.ndarray, idm: np.ndarray) -> np.ndarray:
    """The command block and IDM merge of ``IntersectionSim.step`` as numpy had them
    (state updated in place on ``sim``)."""
    cfg, N, A, C = sim.config, sim.N, sim.A, sim.C
    active = ~sim.done
    accel = np.zeros((N, A))
    if sim.continuous:
        a = actions
        accel[:, :C] = a[..., 0] * np.where(a[..., 0] > 0, cfg.max_accel, cfg.max_decel)
        sim.steer[:, :C] = a[..., 1] * cfg.max_steer
    else:
        tv = sim.target_v + sim._speed_delta[actions]
        sim.target_v = np.minimum(np.maximum(tv, 0.0), cfg.ego_max_speed)
        new_turn = sim._turn_table[actions]
        turn_act = (new_turn >= 0) & active
        sim.turn[:, :C] = np.where(turn_act, new_turn, sim.turn[:, :C])
        sim.turn_chosen[:, :C] |= turn_act
        acc = 2.0 * (sim.target_v - sim.v[:, :C])
        accel[:, :C] = np.minimum(np.maximum(acc, -cfg.max_decel), cfg.max_accel)
    accel = np.where((sim.kind != CONTROLLED) & (sim.seg >= 0), idm, accel)
    if sim._follow_controlled:
        accel[:, :C] = np.maximum(np.minimum(accel[:, :C], idm[:, :C]), -MAX_BRAKE)
    return accel


def snapshot(sim: IntersectionSim) -> list[np.ndarray]:
    return [sim.target_v.copy(), sim.turn.copy(), sim.turn_chosen.copy(), sim.steer.copy()]


@pytest.mark.parametrize("action_type", ["discrete", "factored", "continuous"])
def test_commands_and_idm_merge_equal_numpy(action_type: str) -> None:
    sim = running_sim(action_type)
    rng = np.random.default_rng(1)
    for _ in range(5):
        actions = random_actions(sim, rng)
        idm = sim._idm()
        idm[rng.random(idm.shape) < 0.1] = np.inf  # no leader (adaptive cruise term)
        before = snapshot(sim)
        want = numpy_accel(sim, actions, idm)
        want_state = snapshot(sim)
        sim.target_v[:], sim.turn[:], sim.turn_chosen[:], sim.steer[:] = before
        cfg, got = sim.config, np.full((sim.N, sim.A), np.nan)
        cont = actions if sim.continuous else np.zeros((1, 1, 2))
        meta = np.zeros((1, 1), np.int64) if sim.continuous else actions
        ego_commands(
            cont, meta, sim.continuous, ~sim.done, sim.v, sim.target_v, sim.turn,
            sim.turn_chosen, sim.steer, sim._speed_delta, sim._turn_table, cfg.max_accel,
            cfg.max_decel, cfg.max_steer, cfg.ego_max_speed, got,
        )  # fmt: skip
        merge_idm(sim.kind, sim.seg, idm, sim.C, sim._follow_controlled, MAX_BRAKE, got)
        assert got.tobytes() == want.tobytes()
        for a, b in zip(snapshot(sim), want_state, strict=True):
            assert a.tobytes() == b.tobytes()
        sim.step(actions)


def test_observation_clips_and_rounds_as_numpy() -> None:
    sim = running_sim("discrete")
    rng = np.random.default_rng(2)
    others = rng.normal(0.0, 2.0, sim._others.shape)  # beyond [-1, 1] too
    others.flat[:4] = [np.nan, -0.0, np.inf, -np.inf]
    cfg, r = sim.config, sim.road
    obs = np.empty((sim.N, sim.C, N_EGO_FEATURES + others.shape[2] * others.shape[3]), np.float32)
    observation(
        sim.x, sim.y, sim.cos, sim.sin, sim.v, sim.dest, r.goal, sim.route_dist, sim.ref_seg,
        sim.ref_s, sim.target_v, sim.turn, False, r.length, sim._link_to_node, r.succ,
        r.best_turn, r.nodes, r.stop_offset, cfg.ego_max_speed, cfg.ego_max_speed, others,
        np.arange(sim.N), obs,
    )  # fmt: skip
    want = np.clip(others.reshape(sim.N, sim.C, -1), -1.0, 1.0).astype(np.float32)
    assert obs[..., N_EGO_FEATURES:].view(np.uint32).tobytes() == want.view(np.uint32).tobytes()
    C = sim.C
    ego = {  # feature index: its float64 formula
        0: sim.v[:, :C] / cfg.ego_max_speed,
        1: sim.cos[:, :C],
        2: sim.sin[:, :C],
        5: sim.route_dist / 200.0,
        6: sim.target_v / cfg.ego_max_speed,
    }
    for k, value in ego.items():
        assert obs[..., k].tobytes() == np.clip(value, -1.0, 1.0).astype(np.float32).tobytes()


def test_observer_report_equals_sorted_fancy_indexing() -> None:
    sim = running_sim("discrete", steps=40)
    vis = sim.visibility()
    A = sim.A
    for w in range(sim.N):
        for c in range(sim.C):
            slots = observer_slots(sim.alive[w], sim.uid[w], c)
            ids, kinds = np.empty(A, np.int64), np.empty(A, np.int64)
            seen, frames = np.empty((A, 1), bool), np.empty((A, 3))
            m = observer_report(
                sim.alive, sim.uid, sim.kind, sim.x, sim.y, sim.h, vis, w, c, ids, kinds, seen,
                frames,
            )  # fmt: skip
            assert m == len(slots) > 0
            assert np.array_equal(ids[:m], sim.uid[w, slots])
            assert list(OBSERVER_TYPES[kinds[:m]]) == list(OBSERVER_TYPES[sim.kind[w, slots]])
            assert np.array_equal(seen[:m], vis[w, c, slots][:, None])
            want = np.stack([sim.x[w, slots], sim.y[w, slots], sim.h[w, slots]], axis=1)
            assert frames[:m].tobytes() == want.tobytes()


@pytest.mark.parametrize("action_type", ["discrete", "continuous"])
def test_partial_reset_observation_equals_a_full_observation(action_type: str) -> None:
    # reset(worlds=...) computes the reset worlds' rows only and copies the others from
    # the last result: bit for bit what observe() computes for every world
    sim = running_sim(action_type)
    rng = np.random.default_rng(5)
    for worlds in ([0], [2, 5, 7], []):
        out = sim.reset(worlds=np.array(worlds, dtype=np.int64))
        assert out.obs.tobytes() == sim.observe().tobytes()
        sim.step(random_actions(sim, rng))
