"""Glue shared by the Gymnasium and PettingZoo views over one simulated world.

- :func:`make_spaces`: observation and action spaces for a config.
- :func:`check_action`: validation of one controlled car's action (clear errors).
- :class:`WorldView`: owns an ``N = 1`` :class:`IntersectionSim`, the renderer, the ego
  paths and the episode cost sums, and builds each controlled car's observation and
  ``info`` dict (:data:`INFO_KEYS`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium import spaces

from bystander.envs.contract import EGO_STEP_KEY, EgoStep
from bystander.envs.intersection.config import IntersectionConfig
from bystander.envs.intersection.ego_kernels import observer_report
from bystander.envs.intersection.sim import (
    FACTORED_ACTIONS,
    KEEP,
    META_ACTIONS,
    META_TO_FACTORED,
    N_EGO_FEATURES,
    N_OTHER_FEATURES,
    OBSERVER_TYPES,
    REWARD_NAMES,
    IntersectionSim,
    StepResult,
)

COST_CHANNEL = "collision"
INFO_KEYS = (
    EGO_STEP_KEY, "rewards", "costs", "cost", "crashed", "arrived", "offroad", "left_map",
    "speed", "route_distance", "progress", "destination",
)  # fmt: skip
"""Keys of every step's ``info`` (plus ``episode_cost`` / ``episode_costs`` and
``episode_progress``, metres of route distance gained over the episode, at episode end).

- ``ego_step``: :class:`~bystander.envs.contract.EgoStep` (``states (1, 2)`` ego position
  [m], observers = every other road user, ``frame="rigid2d"``).
- ``rewards``: dict ``progress, arrival, collision, offroad, time`` (the reward is their sum).
- ``costs``: ``{"collision": c}``; ``cost``: their sum. ``c`` is ``collision_cost`` on a
  crash step, else ``near_miss_cost * (1 - gap / near_miss_distance)`` for the smallest box
  gap below ``near_miss_distance``, else 0.
- ``crashed`` / ``arrived`` / ``offroad`` / ``left_map``: bool events of this step.
- ``speed`` [m/s], ``route_distance`` to the goal [m], ``destination`` exit index.
- ``progress``: metres of route gained by this step (route distance before minus after;
  negative when the ego moves away from its goal), the unit of ``per_metre`` budgets.
"""


def observation_size(config: IntersectionConfig) -> int:
    return N_EGO_FEATURES + N_OTHER_FEATURES * config.n_nearest


def action_names(config: IntersectionConfig) -> tuple[str, ...]:
    """Names of a discrete config's actions (:data:`META_ACTIONS` or, for
    ``action_type="factored"``, :data:`FACTORED_ACTIONS`); empty for continuous."""
    if config.action_type == "continuous":
        return ()
    if config.action_type == "target_speed":
        return tuple(f"TARGET_{v:g}" for v in config.speed_levels)
    return FACTORED_ACTIONS if config.action_type == "factored" else META_ACTIONS


def meta_action(config: IntersectionConfig, meta: int) -> int:
    """The action of ``config``'s discrete space that does what meta-action ``meta``
    (:data:`META_ACTIONS` index) does: itself, or its factored twin (a turn keeps speed).

    Raises:
        ValueError: ``target_speed`` actions are absolute levels, so no action of that
            space does what a meta-action does in every state.
    """
    if config.action_type == "target_speed":
        raise ValueError(
            "config.action_type='target_speed': actions set absolute speed levels, so no "
            "action does what a meta-action does in every state; expected 'discrete' or "
            "'factored' here"
        )
    return int(META_TO_FACTORED[meta]) if config.action_type == "factored" else int(meta)


def keep_action(config: IntersectionConfig) -> int:
    """The action that keeps the target speed and plans nothing (KEEP, or KEEP+NONE)."""
    return meta_action(config, KEEP)


def nearest_level(levels: Any, speeds: Any) -> np.ndarray:
    """Index of the level in ``levels`` [m/s] nearest each of ``speeds`` [m/s] (the
    ``target_speed`` action asking for it; the lower level on a tie). int64, the shape
    of ``speeds``."""
    speeds = np.asarray(speeds, np.float64)
    return np.abs(speeds[..., None] - np.asarray(levels)).argmin(axis=-1).astype(np.int64)


def keep_actions(config: IntersectionConfig, target_v: np.ndarray) -> np.ndarray:
    """Per controlled car ``target_v (..., C)`` [m/s], the action that keeps its target
    speed: :func:`keep_action`, or in ``target_speed`` mode the level nearest the car's
    current target. int64, the shape of ``target_v``."""
    if config.action_type != "target_speed":
        return np.full(np.shape(target_v), keep_action(config), np.int64)
    return nearest_level(config.speed_levels, target_v)


def make_spaces(config: IntersectionConfig) -> tuple[spaces.Space, spaces.Space]:
    """(observation space, action space) of one controlled car."""
    vec = spaces.Box(-1.0, 1.0, (observation_size(config),), dtype=np.float32)
    G = config.occupancy_size
    occ = spaces.Box(-1.0, 1.0, (4, G, G), dtype=np.float32)
    obs: spaces.Space
    if config.observation == "vector":
        obs = vec
    elif config.observation == "occupancy":
        obs = occ
    else:
        obs = spaces.Dict({"vector": vec, "occupancy": occ})
    act: spaces.Space
    if config.action_type != "continuous":
        act = spaces.Discrete(len(action_names(config)))
    else:
        act = spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)
    return obs, act


def real_array(values: Any, name: str, expected: str) -> np.ndarray:
    """``values`` as a float64 array, refusing what is not real numbers (bools, complex
    numbers, strings, objects) instead of casting it."""
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError) as err:  # ragged nesting
        raise ValueError(f"{name}: expected {expected}, got {values!r}") from err
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{name}: expected {expected} (real numbers), got dtype {arr.dtype}")
    return arr.astype(np.float64)


def check_actions(
    actions: Any, n: int, continuous: bool, names: tuple[str, ...] = META_ACTIONS
) -> np.ndarray:
    """Validate one batch of actions of ``n`` worlds (one controlled car each): ``(n, 1, 2)``
    float64 clipped to [-1, 1] (continuous; ``(n, 2)`` accepted) or ``(n, 1)`` int64
    discrete actions named ``names`` (ints or integral floats)."""
    if continuous:
        arr = real_array(actions, "actions", f"({n}, 2) floats (acceleration, steering)")
        if arr.shape not in ((n, 2), (n, 1, 2)):
            raise ValueError(
                f"actions: expected shape ({n}, 2) (acceleration, steering) per world, "
                f"got {arr.shape}"
            )
        arr = arr.reshape(n, 1, 2).astype(np.float64)
        if not np.isfinite(arr).all():
            raise ValueError("actions: expected finite values")
        return np.clip(arr, -1.0, 1.0)
    arr = np.asarray(actions)
    if arr.shape not in ((n,), (n, 1)):
        raise ValueError(f"actions: expected shape ({n},) meta-actions, got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(arr == np.round(arr)):
            raise ValueError(
                f"actions: expected ints in [0, {len(names)}) "
                f"({', '.join(names)}), got dtype {arr.dtype}"
            )
    arr = arr.reshape(n, 1).astype(np.int64)
    if arr.min() < 0 or arr.max() >= len(names):
        raise ValueError(
            f"actions: expected ints in [0, {len(names)}), got values in [{arr.min()}, {arr.max()}]"
        )
    return arr


MAX_STEP_PROGRESS_M = 5.0
"""A step's progress is clipped to +-5 m, as the simulator clips its progress reward: the
route distance can jump when the reference lane re-snaps (continuous actions)."""


def step_progress(route_prev: np.ndarray, route_now: np.ndarray) -> np.ndarray:
    """Metres of route gained by one step, ``(C,)`` or ``(N,)``: the route distance
    before minus after, clipped to +-:data:`MAX_STEP_PROGRESS_M`."""
    # np.clip's arithmetic (NaN kept) at a third of its call overhead on small arrays
    gain = np.maximum(route_prev - route_now, -MAX_STEP_PROGRESS_M)
    return np.minimum(gain, MAX_STEP_PROGRESS_M)


def episode_progress(start_route_dist: float, route_dist: float) -> float:
    """Metres of route gained over an episode (route distance to the goal at its start
    minus at its end, never negative): the unit of ``per_metre`` cost budgets."""
    return max(0.0, float(start_route_dist) - float(route_dist))


def check_action(action: Any, config: IntersectionConfig, name: str = "action") -> Any:
    """Validate one action; returns it as ``int`` (discrete) or ``(2,)`` float64 array."""
    if config.action_type != "continuous":
        names = action_names(config)
        # fast path: a Python int (not a bool) or a numpy integer scalar in range
        if type(action) is int or isinstance(action, np.integer):
            a = int(action)
            if 0 <= a < len(names):
                return a
        arr = np.asarray(action)
        if arr.shape != () or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(
                f"{name}: expected an int {config.action_type.replace('discrete', 'meta')}"
                f"-action in [0, {len(names)}) "
                f"({', '.join(names)}), got {action!r}"
            )
        a = int(arr)
        if not 0 <= a < len(names):
            raise ValueError(f"{name}: expected an int in [0, {len(names)}), got {a}")
        return a
    arr = real_array(action, name, "2 floats (acceleration, steering)")
    if arr.shape != (2,):
        raise ValueError(
            f"{name}: expected shape (2,) (acceleration, steering), got shape {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: expected finite values, got {arr.tolist()}")
    if np.any(np.abs(arr) > 1.0 + 1e-6):
        raise ValueError(f"{name}: expected values in [-1, 1], got {arr.tolist()}")
    return np.clip(arr, -1.0, 1.0)


Overlay = Callable[[Any, Callable[[np.ndarray], np.ndarray]], None]


class WorldView:
    """One world (``N = 1``) of the simulator with the bookkeeping both views need.

    Attributes:
        sim: The :class:`IntersectionSim`.
        paths: Per controlled car, the list of past positions ``(x, y)`` this episode.
        episode_costs: Per controlled car, ``{"collision": sum}`` over the episode.
        overlays: Callables ``fn(surface, world_to_px)`` drawn on each rendered frame.
    """

    def __init__(self, config: IntersectionConfig, render_mode: str | None) -> None:
        self.config = config
        self.sim = IntersectionSim(config, n_worlds=1)
        self.render_mode = render_mode
        self.paths: list[list[tuple[float, float]]] = [[] for _ in range(config.n_controlled)]
        self.episode_costs = np.zeros(config.n_controlled)
        self.overlays: list[Overlay] = []
        self.renderer = None

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int) -> StepResult:
        out = self.sim.reset(seed=seed)
        self.episode_costs[:] = 0.0
        self.start_route_dist = self.sim.route_dist[0, : self.config.n_controlled].astype(float)
        self.route_prev = self.start_route_dist.copy()
        self.progress = np.zeros(self.config.n_controlled)
        self.paths = [
            [(float(self.sim.x[0, c]), float(self.sim.y[0, c]))]
            for c in range(self.config.n_controlled)
        ]
        return out

    def step(self, actions: np.ndarray) -> StepResult:
        out = self.sim.step(actions[None])
        self.episode_costs += out.cost[0]
        now = self.sim.route_dist[0, : self.config.n_controlled].astype(float)
        self.progress, self.route_prev = step_progress(self.route_prev, now), now
        for c in range(self.config.n_controlled):
            if out.active[0, c]:
                self.paths[c].append((float(self.sim.x[0, c]), float(self.sim.y[0, c])))
        return out

    # ------------------------------------------------------------------ per agent
    def observation(self, out: StepResult, c: int) -> Any:
        mode = self.config.observation
        if mode == "vector":
            return out.obs[0, c]
        occ = self.sim.occupancy()[0, c]
        return occ if mode == "occupancy" else {"vector": out.obs[0, c], "occupancy": occ}

    def ego_step(self, out: StepResult, c: int, episode_start: bool) -> EgoStep:
        """The contract's report for controlled car ``c``: observers sorted by id."""
        sim, A = self.sim, self.sim.A
        ids, kinds = np.empty(A, np.int64), np.empty(A, np.int64)
        seen, frames = np.empty((A, 1), bool), np.empty((A, 3))
        m = observer_report(
            sim.alive, sim.uid, sim.kind, sim.x, sim.y, sim.h, out.visible, 0, c,
            ids, kinds, seen, frames,
        )  # fmt: skip
        return EgoStep.trusted(  # valid by construction: the shapes EgoStep checks
            states=np.array([[sim.x[0, c], sim.y[0, c]]]),
            observer_ids=ids[:m],
            observer_types=OBSERVER_TYPES[kinds[:m]],
            visible=seen[:m],
            observer_frames=frames[:m],
            frame="rigid2d",
            episode_start=episode_start,
            context={"dt": self.config.dt},
        )

    def info(self, out: StepResult, c: int, reset: bool = False) -> dict[str, Any]:
        sim = self.sim
        info: dict[str, Any] = {
            EGO_STEP_KEY: self.ego_step(out, c, episode_start=reset),
            "speed": float(sim.v[0, c]),
            "route_distance": float(sim.route_dist[0, c]),
            "destination": int(sim.dest[0, c]),
        }
        if reset:
            return info
        cost = float(out.cost[0, c])
        info.update(
            progress=float(self.progress[c]),
            rewards=dict(zip(REWARD_NAMES, out.rewards[0, c].tolist(), strict=True)),
            costs={COST_CHANNEL: cost},
            cost=cost,
            crashed=bool(out.crashed[0, c]),
            arrived=bool(out.arrived[0, c]),
            offroad=bool(out.offroad[0, c]),
            left_map=bool(out.left_map[0, c]),
        )
        if out.terminated[0, c] or out.truncated[0]:
            info["episode_cost"] = float(self.episode_costs[c])
            info["episode_costs"] = {COST_CHANNEL: float(self.episode_costs[c])}
            info["episode_progress"] = episode_progress(
                self.start_route_dist[c], float(sim.route_dist[0, c])
            )
        return info

    # ------------------------------------------------------------------ rendering
    def render(self, c: int = 0) -> np.ndarray | None:
        if self.render_mode is None:
            return None
        if self.renderer is None:
            from bystander.envs.intersection.render import Renderer

            self.renderer = Renderer(self.sim.road, self.config, human=self.render_mode == "human")
        frame = self.renderer.draw(self.sim, w=0, c=c, paths=self.paths, overlays=self.overlays)
        if self.render_mode == "human":
            self.renderer.show()
            return None
        return frame

    def close(self) -> None:
        if self.renderer is not None:
            self.renderer.close()
            self.renderer = None


def zero_observation(obs: Any) -> Any:
    """Zeros shaped as ``obs`` (an array or a dict of arrays): what an inactive
    controlled car (finished, its world still running) observes."""
    if isinstance(obs, dict):
        return {k: np.zeros_like(v) for k, v in obs.items()}
    return np.zeros_like(obs)


def seed_from(np_random: np.random.Generator) -> int:
    """A simulator seed drawn from a Gymnasium ``np_random`` (reproducible chain)."""
    return int(np_random.integers(0, 2**62))


__all__ = [
    "COST_CHANNEL",
    "action_names",
    "keep_action",
    "keep_actions",
    "nearest_level",
    "meta_action",
    "INFO_KEYS",
    "WorldView",
    "check_action",
    "check_actions",
    "episode_progress",
    "step_progress",
    "make_spaces",
    "observation_size",
    "real_array",
    "seed_from",
    "zero_observation",
]
