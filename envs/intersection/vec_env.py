"""Batched intersection env: ``N`` worlds stepped in ONE simulator call, as an SB3 ``VecEnv``.

:class:`IntersectionVecEnv` is the batched twin of the Gymnasium view
``bystander/Intersection-v0`` (:class:`~bystander.envs.intersection.gym_env.IntersectionEnv`):
one :class:`~bystander.envs.intersection.sim.IntersectionSim` with ``n_worlds = N``, one
controlled car per world. Per world, observations, rewards and ``info`` dicts carry the
same keys and values as the single env (:data:`~bystander.envs.intersection.views.INFO_KEYS`,
``ego_step`` included, so :class:`~bystander.envs.vector.PredictabilityVecWrapper`
runs on it with one predictor call per step for all worlds and observers).

SB3 ``VecEnv`` contract:

- auto-reset: a world whose episode ended (terminated or truncated) restarts at once
  inside :meth:`step_wait`; its last observation is in ``infos[i]["terminal_observation"]``
  and the first observation of the new episode is returned; the new episode's reset
  info is in ``reset_infos[i]``.
- ``infos[i]["TimeLimit.truncated"]`` is ``True`` when the episode ended on the
  ``max_cycles`` time limit and not by a termination (arrival / crash / off-road /
  leaving the map), ``False`` on terminations; absent while the episode goes on.
- seeding: world ``i`` behaves exactly as a single env reset with ``seed + i`` (and
  later unseeded resets continue the same seed chain): see :meth:`seed`.
- ``get_attr`` / ``set_attr`` / ``env_method``: see their docstrings for which names
  are per world and which are shared by all worlds (one simulator, one config).
- ``render()``: the world ``render_world`` (an attribute, default 0) as one frame.

Batched outputs (for wrappers that work on arrays rather than per-world dicts):

- :attr:`IntersectionVecEnv.ego_batch`: an :class:`~bystander.envs.contract.EgoBatch` of
  every world after the last step (before auto-reset), and
  :attr:`IntersectionVecEnv.reset_ego_batch` one of the worlds reset since (their first
  state). :class:`~bystander.envs.vector.PredictabilityVecWrapper` scores all
  worlds from these in a few array operations.
- :attr:`IntersectionVecEnv.step_arrays`: the per-step info values as arrays over worlds
  (``"cost"`` ``(N,)``, ``"costs"`` channel -> ``(N,)``, ``"rewards"`` name -> ``(N,)``,
  ``"speed"``, ``"route_distance"``, ``"crashed"``, ``"arrived"``, ...).
- ``info_mode="lean"``: ``infos[i]`` of a step is a shared read-only empty mapping
  unless world ``i``'s episode ended then (it is then a dict with every key of the
  ``"full"`` info); per-step values are in :attr:`step_arrays`. (SB3's wrappers only
  write to the infos of finished episodes; copy an info before adding keys to it.) At ``N = 1024`` building ``N`` info dicts per step costs
  more than the simulator; the training stack uses ``"lean"``. Default ``"full"``:
  every world's info as the Gymnasium view's.

The training stacks over it are built by :mod:`bystander.agents.stack` (e.g.
:func:`~bystander.agents.stack.make_intersection_vec_env`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
from gymnasium.utils import seeding
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices

from bystander.envs.contract import EGO_STEP_KEY, EgoBatch, EgoStep
from bystander.envs.intersection.config import IntersectionConfig
from bystander.envs.intersection.sim import (
    OBSERVER_TYPES,
    REWARD_NAMES,
    IntersectionSim,
    StepResult,
)
from bystander.envs.intersection.views import (
    COST_CHANNEL,
    check_actions,
    episode_progress,
    make_spaces,
    seed_from,
    step_progress,
)

__all__ = ["INFO_MODES", "IntersectionVecEnv"]

_NO_UID = np.iinfo(np.int64).max
_TYPE_NAMES = tuple(str(t) for t in OBSERVER_TYPES)
_NO_INFO: Mapping[str, Any] = MappingProxyType({})
"""The info of a world whose episode goes on, in lean mode: one shared, read-only,
empty mapping (N fresh dicts per step cost more in garbage collection than the step)."""

INFO_MODES = ("full", "lean")
"""``info_mode`` values of :class:`IntersectionVecEnv`."""


class IntersectionVecEnv(VecEnv):
    """SB3 ``VecEnv`` of ``n_worlds`` intersection worlds stepped by one simulator call.

    Args:
        n_worlds: Number of worlds ``N`` (``num_envs``).
        config: Overrides of :class:`IntersectionConfig` fields (dict) or a config;
            ``n_controlled`` must be 1 (one ego per world, as the Gymnasium view).
        seed: If given, the first :meth:`reset` seeds world ``i`` with ``seed + i``
            (as ``seed(seed)``). Default: fresh entropy per world.
        render_mode: ``None``, ``"rgb_array"`` or ``"human"``; :meth:`render` draws
            world ``render_world``.
        info_mode: ``"full"`` (every world's info dict every step, as the Gymnasium
            view's) or ``"lean"`` (info dicts only for worlds whose episode ended; the
            per-step values in :attr:`step_arrays`).

    Observations: ``(N, F)`` float32 (``vector``), ``(N, 4, G, G)`` (``occupancy``) or a
    dict of both, as the single env's space per world. Actions: ``(N,)`` ints in
    ``[0, 6)`` (discrete meta-actions) or ``(N, 2)`` floats in ``[-1, 1]``
    (continuous; clipped). Rewards ``(N,)`` float32 = sum of ``info["rewards"]``.
    """

    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": 10}

    def __init__(
        self,
        n_worlds: int,
        config: Mapping[str, Any] | IntersectionConfig | None = None,
        seed: int | None = None,
        render_mode: str | None = None,
        info_mode: str = "full",
    ) -> None:
        if info_mode not in INFO_MODES:
            raise ValueError(f"info_mode: expected one of {INFO_MODES}, got {info_mode!r}")
        self.info_mode = info_mode
        self.ego_batch: EgoBatch | None = None
        self.reset_ego_batch: EgoBatch | None = None
        self.step_arrays: dict[str, Any] = {}
        if isinstance(n_worlds, bool) or not isinstance(n_worlds, (int, np.integer)):
            raise TypeError(f"n_worlds: expected an int >= 1, got {n_worlds!r}")
        if n_worlds < 1:
            raise ValueError(f"n_worlds: expected an int >= 1, got {n_worlds}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode: expected None or one of {self.metadata['render_modes']}, "
                f"got {render_mode!r}"
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"seed: expected an int or None, got {seed!r}")
        self.render_mode = render_mode
        self.render_world = 0
        self.overlays: list[Callable] = []
        self._renderer: Any = None
        self._np_randoms: list[np.random.Generator | None] = [None] * int(n_worlds)
        self._n = int(n_worlds)
        self.num_envs = self._n  # VecEnv.__init__ reads render_mode through get_attr
        self._build(IntersectionConfig.from_dict(config))
        super().__init__(self._n, self.observation_space, self.action_space)
        self.metadata = {
            "render_modes": ["human", "rgb_array"],
            "render_fps": self.config.render_fps,
        }
        if seed is not None:
            self.seed(int(seed))

    # ------------------------------------------------------------------ building
    def _build(self, config: IntersectionConfig) -> None:
        if config.n_controlled != 1:
            raise ValueError(
                f"config.n_controlled: expected 1 (one ego per world, as the Gymnasium view), "
                f"got {config.n_controlled}"
            )
        self.config = config
        self.dt = config.dt
        self._context = MappingProxyType({"dt": config.dt})  # every EgoStep's context
        self.sim = IntersectionSim(config, n_worlds=self._n, seed=0)
        self.observation_space, self.action_space = make_spaces(config)
        self.continuous = config.action_type == "continuous"
        self._actions: np.ndarray | None = None
        self._episode_cost = np.zeros(self._n)
        self._start_route = np.zeros(self._n)  # route distance at each episode's start [m]
        self._route_prev = np.zeros(self._n)  # route distance before the current step [m]
        self._progress = np.zeros(self._n)  # metres of route gained by the last step
        self.episode_seeds = np.zeros(self._n, dtype=np.int64)
        self._started = False
        self._path: list[tuple[float, float]] = []
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # ------------------------------------------------------------------ per-world pieces
    def _observe(self, out: StepResult) -> np.ndarray | dict[str, np.ndarray]:
        mode = self.config.observation
        if mode == "vector":
            return out.obs[:, 0].copy()
        occ = self.sim.occupancy()[:, 0]
        if mode == "occupancy":
            return occ
        return {"vector": out.obs[:, 0].copy(), "occupancy": occ}

    def _ego_steps(self, out: StepResult, worlds: np.ndarray, start: bool) -> list[EgoStep]:
        """``EgoStep`` of ``worlds``, identical to the single env's (observers sorted by id)."""
        sim = self.sim
        alive = sim.alive[worlds].copy()
        alive[:, 0] = False  # the ego is not its own observer
        key = np.where(alive, sim.uid[worlds], _NO_UID)
        order = np.argsort(key, axis=1, kind="stable")
        counts = alive.sum(axis=1).tolist()
        wsel = worlds[:, None]
        ids = sim.uid[wsel, order]
        types = OBSERVER_TYPES[sim.kind[wsel, order]]
        visible = out.visible[wsel, 0, order][..., None]
        poses = np.stack([sim.x[wsel, order], sim.y[wsel, order], sim.h[wsel, order]], axis=-1)
        ego = np.stack([sim.x[worlds, 0], sim.y[worlds, 0]], axis=-1)[:, None, :]
        ctx = self._context  # read-only, shared by the worlds and steps
        # The arrays are valid by construction (same shapes as the single env's, which
        # EgoStep validates): build the frozen dataclass without re-validating each world
        # (3x cheaper; the tests compare every field with the single env's EgoStep).
        new, cls = object.__new__, EgoStep
        steps = []
        for k, m in enumerate(counts):
            e = new(cls)
            e.__dict__.update(
                states=ego[k],
                observer_ids=ids[k, :m],
                observer_types=types[k, :m],
                visible=visible[k, :m],
                observer_frames=poses[k, :m],
                frame="rigid2d",
                episode_start=start,
                context=ctx,
            )
            steps.append(e)
        return steps

    def _ego_batch(self, out: StepResult, worlds: np.ndarray, start: bool) -> EgoBatch:
        """:class:`EgoBatch` of ``worlds`` (arrays copied: an auto-reset rewrites the sim's)."""
        sim = self.sim
        all_worlds = len(worlds) == self._n
        sel: Any = slice(None) if all_worlds else worlds
        present = sim.alive[sel].copy()
        present[:, 0] = False  # the ego is not its own observer
        poses = np.stack([sim.x[sel], sim.y[sel], sim.h[sel]], axis=-1)
        return EgoBatch(
            worlds=worlds,
            states=np.stack([sim.x[sel, 0], sim.y[sel, 0]], axis=-1),
            observer_ids=sim.uid[sel].copy(),
            present=present,
            observer_types=sim.kind[sel].copy(),
            type_names=_TYPE_NAMES,
            visible=out.visible[sel, 0] & present,
            observer_frames=poses,
            frame="rigid2d",
            episode_start=start,
            context=self._context,
        )

    def _reset_infos(self, out: StepResult, worlds: np.ndarray) -> list[dict[str, Any]]:
        sim = self.sim
        self.reset_ego_batch = self._ego_batch(out, worlds, True)
        if self.info_mode == "lean":
            return [{} for _ in range(len(worlds))]  # SB3 stores these: fresh dicts
        egos = self._ego_steps(out, worlds, True)
        speed = sim.v[worlds, 0].tolist()
        dist = sim.route_dist[worlds, 0].tolist()
        dest = sim.dest[worlds, 0].tolist()
        return [
            {EGO_STEP_KEY: e, "speed": s, "route_distance": d, "destination": g}
            for e, s, d, g in zip(egos, speed, dist, dest, strict=True)
        ]

    def _full_infos(self, out: StepResult, worlds: np.ndarray) -> list[dict[str, Any]]:
        """Step infos of ``worlds`` with every key of the Gymnasium view's info."""
        sim = self.sim
        egos = self._ego_steps(out, worlds, False)
        names = REWARD_NAMES
        cost = out.cost[worlds, 0]
        return [
            {
                EGO_STEP_KEY: e,
                "speed": sp,
                "route_distance": rd,
                "progress": pr,
                "destination": de,
                "rewards": dict(zip(names, rw, strict=True)),
                "costs": {COST_CHANNEL: c},
                "cost": c,
                "crashed": cr,
                "arrived": ar,
                "offroad": off,
                "left_map": lm,
            }
            for e, sp, rd, pr, de, rw, c, cr, ar, off, lm in zip(
                egos,
                sim.v[worlds, 0].tolist(),
                sim.route_dist[worlds, 0].tolist(),
                self._progress[worlds].tolist(),
                sim.dest[worlds, 0].tolist(),
                out.rewards[worlds, 0].tolist(),
                cost.tolist(),
                out.crashed[worlds, 0].tolist(),
                out.arrived[worlds, 0].tolist(),
                out.offroad[worlds, 0].tolist(),
                out.left_map[worlds, 0].tolist(),
                strict=True,
            )
        ]

    def _reset_worlds(self, worlds: np.ndarray, apply_seeds: bool = True) -> StepResult:
        """New episodes in ``worlds``: each draws its simulator seed from its seed chain.

        Seeds given to :meth:`seed` apply at the next :meth:`reset` only
        (``apply_seeds``), never at an auto-reset, as in SB3's ``DummyVecEnv``: SB3 calls
        ``seed`` on a running env (e.g. when loading a model) without resetting it.
        """
        for w in worlds.tolist():
            if (apply_seeds and self._seeds[w] is not None) or self._np_randoms[w] is None:
                self._np_randoms[w], _ = seeding.np_random(self._seeds[w])
                self._seeds[w] = None
            self.episode_seeds[w] = seed_from(self._np_randoms[w])
        # per-world streams: world w draws exactly what a single env's N = 1 simulator draws
        self.sim.seed_worlds(self.episode_seeds[worlds].tolist(), worlds)
        out = self.sim.reset(worlds=worlds)
        self._episode_cost[worlds] = 0.0
        self._start_route[worlds] = self.sim.route_dist[worlds, 0]
        self._route_prev[worlds] = self.sim.route_dist[worlds, 0]
        if self.render_world in worlds.tolist():
            self._path = [self._ego_xy(self.render_world)]
        return out

    def _ego_xy(self, w: int) -> tuple[float, float]:
        return float(self.sim.x[w, 0]), float(self.sim.y[w, 0])

    # ------------------------------------------------------------------ VecEnv API
    def reset(self) -> np.ndarray | dict[str, np.ndarray]:
        """Reset every world (seeds from :meth:`seed` / options from ``set_options`` apply).

        Options: ``{"config": {...}}`` rebuilds the simulator with the overrides; it must
        be the same for every world (one simulator, one config).
        """
        opts = self._options
        if any(opts):
            unknown = sorted({k for o in opts for k in o} - {"config"})
            if unknown:
                raise ValueError(f"options: unknown key(s) {unknown}; expected 'config'")
            cfgs = [o.get("config") for o in opts]
            if any(c != cfgs[0] for c in cfgs):
                raise ValueError(
                    "options['config']: expected the same overrides for every world "
                    "(all worlds share one simulator)"
                )
            if cfgs[0]:
                seeds = list(self._seeds)
                self._build(self.config.replace(cfgs[0]))
                self._seeds = seeds
        worlds = np.arange(self.num_envs)
        out = self._reset_worlds(worlds)
        self._reset_seeds()
        self._reset_options()
        self._started = True
        self.reset_infos = self._reset_infos(out, worlds)
        if self.render_mode == "human":
            self.render()
        return self._observe(out)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = check_actions(actions, self.num_envs, self.continuous)

    def step_wait(self):
        """Step all worlds in one simulator call; auto-reset the ones that finished.

        Returns ``(obs, rewards (N,) float32, dones (N,) bool, infos)``.
        """
        if not self._started:
            raise RuntimeError("step() called before reset()")
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async(actions)")
        actions, self._actions = self._actions, None
        sim = self.sim
        out = sim.step(actions)
        obs = self._observe(out)
        comps = out.rewards[:, 0]
        rewards = comps.sum(axis=1).astype(np.float32)
        terminated = out.terminated[:, 0]
        dones = terminated | out.truncated
        cost = out.cost[:, 0]
        self._episode_cost += cost
        self._progress = step_progress(self._route_prev, sim.route_dist[:, 0])
        self._route_prev = sim.route_dist[:, 0].copy()
        all_worlds = np.arange(self.num_envs)
        self.ego_batch = self._ego_batch(out, all_worlds, False)
        self.reset_ego_batch = None
        names = REWARD_NAMES
        self.step_arrays = {
            "rewards": {name: comps[:, k] for k, name in enumerate(names)},
            "costs": {COST_CHANNEL: cost},
            "cost": cost,
            "speed": sim.v[:, 0].copy(),
            "route_distance": sim.route_dist[:, 0].copy(),
            "progress": self._progress,
            "destination": sim.dest[:, 0].copy(),
            "crashed": out.crashed[:, 0],
            "arrived": out.arrived[:, 0],
            "offroad": out.offroad[:, 0],
            "left_map": out.left_map[:, 0],
        }
        done_idx = np.flatnonzero(dones)
        if self.info_mode == "full":
            infos = self._full_infos(out, all_worlds)
        else:
            infos = [_NO_INFO] * self._n
            if len(done_idx):
                for w, info in zip(done_idx.tolist(), self._full_infos(out, done_idx), strict=True):
                    infos[w] = info
        if self.render_mode is not None and out.active[self.render_world, 0]:
            self._path.append(self._ego_xy(self.render_world))
        if len(done_idx):
            ep_cost = self._episode_cost[done_idx].tolist()
            for k, w in enumerate(done_idx.tolist()):
                info = infos[w]
                info["episode_cost"] = ep_cost[k]
                info["episode_costs"] = {COST_CHANNEL: ep_cost[k]}
                info["episode_progress"] = episode_progress(
                    self._start_route[w], sim.route_dist[w, 0]
                )
                info["TimeLimit.truncated"] = bool(out.truncated[w] and not terminated[w])
                if isinstance(obs, dict):
                    info["terminal_observation"] = {key: v[w].copy() for key, v in obs.items()}
                else:
                    info["terminal_observation"] = obs[w].copy()
            rout = self._reset_worlds(done_idx, apply_seeds=False)
            fresh = self._observe(rout)
            if isinstance(obs, dict):
                for key in obs:
                    obs[key][done_idx] = fresh[key][done_idx]
            else:
                obs[done_idx] = fresh[done_idx]
            for w, info in zip(done_idx.tolist(), self._reset_infos(rout, done_idx), strict=True):
                self.reset_infos[w] = info
        if self.render_mode == "human":
            self.render()
        return obs, rewards, dones, infos

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """Seed world ``i`` with ``seed + i`` at the next :meth:`reset` (SB3 semantics).

        World ``i`` then follows exactly the episodes of a Gymnasium
        ``bystander/Intersection-v0`` env reset with ``seed=seed + i`` and later reset
        without a seed (same simulator seed chain), given the same actions. ``None``:
        a random base seed. Returns the per-world seeds.
        """
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"seed: expected an int or None, got {seed!r}")
        return super().seed(None if seed is None else int(seed))

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # ------------------------------------------------------------------ attributes
    PER_WORLD_ATTRS = ("episode_seed", "episode_cost", "np_random", "t", "sim_world")
    """Names :meth:`get_attr` answers per world: ``episode_seed`` (the simulator seed of the
    current episode), ``episode_cost`` (cost so far this episode), ``np_random`` (the
    world's seed-chain generator), ``t`` (steps this episode), ``sim_world`` (the world
    index into :attr:`sim`'s arrays)."""

    def _per_world(self, name: str, w: int) -> Any:
        if name == "episode_seed":
            return int(self.episode_seeds[w])
        if name == "episode_cost":
            return float(self._episode_cost[w])
        if name == "np_random":
            return self._np_randoms[w]
        if name == "t":
            return int(self.sim.t[w])
        return w

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Per-world values for :attr:`PER_WORLD_ATTRS`; otherwise the vec env's
        attribute (shared by all worlds: ``config``, ``dt``, ``render_mode``,
        ``observation_space``...) repeated once per index. Unknown: ``AttributeError``."""
        idx = list(self._get_indices(indices))
        if attr_name in self.PER_WORLD_ATTRS:
            return [self._per_world(attr_name, i) for i in idx]
        value = getattr(self, attr_name)
        return [value] * len(idx)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set a shared attribute; ``indices`` must cover every world (one simulator).

        ``config`` (a dict of overrides applied to the current config, or an
        :class:`IntersectionConfig`) rebuilds the simulator: call :meth:`reset` next.
        ``render_world`` picks the world :meth:`render` draws. Per-world attributes are
        read-only.
        """
        idx = sorted(set(self._get_indices(indices)))
        if attr_name in self.PER_WORLD_ATTRS:
            raise ValueError(f"set_attr: {attr_name!r} is read-only")
        if idx != list(range(self.num_envs)):
            raise ValueError(
                f"set_attr({attr_name!r}): indices must cover all {self.num_envs} worlds "
                "(attributes are shared by the worlds of one simulator)"
            )
        if attr_name == "config":
            cfg = value if isinstance(value, IntersectionConfig) else self.config.replace(value)
            self._build(cfg)
            return
        if attr_name == "render_world":
            self.set_render_world(value)
            return
        setattr(self, attr_name, value)

    def set_render_world(self, world: int) -> None:
        """Draw world ``world`` from now on (its past path is drawn from this point)."""
        if isinstance(world, bool) or not isinstance(world, (int, np.integer)):
            raise TypeError(f"render_world: expected an int in [0, {self.num_envs}), got {world!r}")
        if not 0 <= world < self.num_envs:
            raise ValueError(f"render_world: expected an int in [0, {self.num_envs}), got {world}")
        self.render_world = int(world)
        self._path = [self._ego_xy(self.render_world)] if self._started else []

    PER_WORLD_METHODS = ("observer_view", "render_frame")
    """Methods :meth:`env_method` calls once per index with ``world=i``."""

    def env_method(
        self,
        method_name: str,
        *method_args: Any,
        indices: VecEnvIndices = None,
        **method_kwargs: Any,
    ) -> list[Any]:
        """Call a method: per world (``world=i``) for :attr:`PER_WORLD_METHODS`, else once
        on the vec env (shared: ``add_overlay``, ``clear_overlays``, ``set_render_world``),
        its result repeated per index. Unknown methods raise ``AttributeError``."""
        idx = list(self._get_indices(indices))
        method = getattr(self, method_name, None)
        if method is None or not callable(method) or method_name.startswith("_"):
            raise AttributeError(f"IntersectionVecEnv has no method {method_name!r}")
        if method_name in self.PER_WORLD_METHODS:
            return [method(*method_args, world=i, **method_kwargs) for i in idx]
        result = method(*method_args, **method_kwargs)
        return [result] * len(idx)

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False] * len(list(self._get_indices(indices)))

    # ------------------------------------------------------------------ extras
    def observer_view(self, world: int = 0) -> dict:
        """Observers of world ``world``'s ego this step, as the single env's ``observer_view``."""
        if not self._started:
            raise RuntimeError("observer_view() called before reset()")
        return self.sim.observer_view(int(world), 0, self.sim.last.visible)

    def add_overlay(self, fn: Callable) -> None:
        """Draw ``fn(surface, world_to_px)`` on every rendered frame (after the scene)."""
        if not callable(fn):
            raise TypeError(
                f"add_overlay: expected a callable fn(surface, world_to_px), got {fn!r}"
            )
        self.overlays.append(fn)

    def clear_overlays(self) -> None:
        self.overlays.clear()

    def render_frame(self, world: int | None = None) -> np.ndarray:
        """uint8 ``(H, W, 3)`` frame of world ``world`` (default ``render_world``).

        Works in any render mode (headless); the ego's past path is drawn only for
        ``render_world``.
        """
        if not self._started:
            raise RuntimeError("render called before reset()")
        w = self.render_world if world is None else int(world)
        if not 0 <= w < self.num_envs:
            raise ValueError(f"world: expected an int in [0, {self.num_envs}), got {w}")
        if self._renderer is None:
            from bystander.envs.intersection.render import Renderer

            self._renderer = Renderer(self.sim.road, self.config, human=self.render_mode == "human")
        paths = [self._path] if w == self.render_world else []
        return self._renderer.draw(self.sim, w=w, c=0, paths=paths, overlays=self.overlays)

    def render(self, mode: str | None = None) -> np.ndarray | None:
        """Frame of world ``render_world``: returned (``rgb_array``) or shown (``human``)."""
        mode = mode or self.render_mode
        if mode is None:
            return None
        if mode not in self.metadata["render_modes"]:
            raise ValueError(f"mode: expected one of {self.metadata['render_modes']}, got {mode!r}")
        frame = self.render_frame()
        if mode == "human":
            if self.render_mode != "human":
                raise ValueError("render('human'): construct the env with render_mode='human'")
            self._renderer.show()
            return None
        return frame

    def get_images(self) -> Sequence[np.ndarray | None]:
        """One frame per world (costly for large ``N``: prefer :meth:`render`)."""
        return [self.render_frame(w) for w in range(self.num_envs)]
