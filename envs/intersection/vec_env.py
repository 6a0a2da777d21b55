"""Batched intersection env: ``N`` worlds stepped in ONE simulator call, as an SB3 ``VecEnv``.

:class:`IntersectionVecEnv` is the batched twin of the Gymnasium view
``bystander/Intersection-v0`` (:class:`~bystander.envs.intersection.gym_env.IntersectionEnv`):
one :class:`~bystander.envs.intersection.sim.IntersectionSim` with ``n_worlds = N``. Per
world, observations, rewards and ``info`` dicts carry the same keys and values as the
single env (:data:`~bystander.envs.intersection.views.INFO_KEYS`, ``ego_step`` included,
so :class:`~bystander.envs.vector.PredictabilityVecWrapper` runs on it with one
predictor call per step for all worlds and observers).

Several controlled cars per world (``config.n_controlled = C > 1``, multi-agent
training with a shared policy): ``num_envs = N * C`` slots, slot ``k = w * C + c`` being
car ``c`` of world ``w`` (:mod:`~bystander.envs.intersection.vec_slots`). Each car is an
ego observed by every other road user, the other controlled cars included. A car that
finishes while others drive on stays in its slot, inactive, until its world's episode
ends (as the PettingZoo env's ``finished_agents="inactive"``): zero observation and
reward, ``step_arrays["active"]`` false, nothing scored. A world ends when all its cars
have finished or at ``max_cycles``: all its slots are done, cars that finished earlier as
terminations, the others with ``TimeLimit.truncated``; final infos carry each car's
episode figures and ``episode_outcome`` (:data:`~bystander.envs.intersection.vec_slots.OUTCOMES`),
full infos ``active``. With ``C = 1`` everything is as the single env.

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
- ``render()``: the slot ``render_world`` (an attribute, default 0) as one frame.

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
  unless slot ``i``'s episode ended then (a dict with every key of the ``"full"`` info;
  SB3's wrappers only write to those: copy an info before adding keys to it). At
  ``N = 1024``, ``N`` info dicts per step cost more than the simulator; the training
  stack uses ``"lean"``. Default ``"full"``: every slot's info as the Gymnasium view's.

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

from bystander.dataconfig import is_int
from bystander.envs.contract import EGO_STEP_KEY, EgoBatch
from bystander.envs.intersection.config import IntersectionConfig
from bystander.envs.intersection.sim import REWARD_NAMES, IntersectionSim, StepResult
from bystander.envs.intersection.vec_render import VecRendering
from bystander.envs.intersection.vec_slots import (
    OUTCOMES,
    ActiveEvents,
    ego_batch,
    ego_steps,
    outcome_codes,
    slots_of,
)
from bystander.envs.intersection.views import (
    COST_CHANNEL,
    action_names,
    check_actions,
    episode_progress,
    make_spaces,
    seed_from,
    step_progress,
)

__all__ = ["INFO_MODES", "IntersectionVecEnv"]
_NO_INFO: Mapping[str, Any] = MappingProxyType({})
"""The info of a world whose episode goes on, in lean mode: one shared, read-only,
empty mapping (N fresh dicts per step cost more in garbage collection than the step)."""

_ALL = slice(None)
INFO_MODES = ("full", "lean")
"""``info_mode`` values of :class:`IntersectionVecEnv`."""


class IntersectionVecEnv(VecRendering, VecEnv):
    """SB3 ``VecEnv`` of ``n_worlds`` intersection worlds stepped by one simulator call.

    Args:
        n_worlds: Number of worlds ``N`` (``num_envs = N * n_controlled``).
        config: Overrides of :class:`IntersectionConfig` fields (dict) or a config;
            ``n_controlled`` cars per world (one slot each, module doc).
        seed: If given, the first :meth:`reset` seeds world ``i`` with ``seed + i``
            (as ``seed(seed)``). Default: fresh entropy per world.
        render_mode: ``None``, ``"rgb_array"`` or ``"human"``; :meth:`render` draws
            slot ``render_world``.
        info_mode: ``"full"`` (every world's info dict every step, as the Gymnasium
            view's) or ``"lean"`` (info dicts only for worlds whose episode ended; the
            per-step values in :attr:`step_arrays`).

    Observations: ``(S, F)`` float32 (``vector``), ``(S, 4, G, G)`` (``occupancy``) or a
    dict of both, as the single env's space per slot (``S = N * C`` slots). Actions:
    ``(S,)`` ints in ``[0, 6)`` (discrete meta-actions) or ``(S, 2)`` floats in
    ``[-1, 1]`` (continuous; clipped). Rewards ``(S,)`` float32 = sum of
    ``info["rewards"]``.
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
        if seed is not None and not is_int(seed):
            raise TypeError(f"seed: expected an int or None, got {seed!r}")
        self.render_mode = render_mode
        self.render_world = 0
        self.overlays: list[Callable] = []
        self._renderer: Any = None
        self._np_randoms: list[np.random.Generator | None] = [None] * int(n_worlds)
        self._n = int(n_worlds)
        self._build(IntersectionConfig.from_dict(config))
        super().__init__(self.num_envs, self.observation_space, self.action_space)
        self.metadata = {
            "render_modes": ["human", "rgb_array"],
            "render_fps": self.config.render_fps,
        }
        if seed is not None:
            self.seed(int(seed))

    # ------------------------------------------------------------------ building
    def _build(self, config: IntersectionConfig) -> None:
        if getattr(self, "_C", config.n_controlled) != config.n_controlled:
            raise ValueError(
                f"config.n_controlled: expected {self._C} (the slots of a built VecEnv are "
                f"fixed), got {config.n_controlled}"
            )
        self._C = C = config.n_controlled
        self.num_envs = self._n * C  # VecEnv.__init__ reads render_mode through get_attr
        self.config = config
        self.dt = config.dt
        self._context = MappingProxyType({"dt": config.dt})  # every EgoStep's context
        self.sim = IntersectionSim(config, n_worlds=self._n, seed=0)
        self.observation_space, self.action_space = make_spaces(config)
        self.continuous = config.action_type == "continuous"
        self._names = action_names(config)
        self._actions: np.ndarray | None = None
        self._episode_cost = np.zeros((self._n, C))
        self._start_route = np.zeros((self._n, C))  # route distance at episode start [m]
        self._route_prev = np.zeros((self._n, C))  # route distance before this step [m]
        self._progress = np.zeros((self._n, C))  # metres of route gained by the last step
        self._outcome = np.zeros((self._n, C), dtype=np.int8)  # index into OUTCOMES
        self.episode_seeds = np.zeros(self._n, dtype=np.int64)
        self._started = False
        self._path: list[tuple[float, float]] = []
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # ------------------------------------------------------------------ per-slot pieces
    def _observe(self, out: StepResult, slots: Any = _ALL) -> np.ndarray | dict[str, np.ndarray]:
        """Observations ``(S, ...)`` of every slot or of ``slots`` (zeros for inactive cars)."""
        mode, N, C = self.config.observation, self._n, self._C
        idle = None if C == 1 else ~out.active.reshape(N * C)[slots]
        vec = occ = None
        if mode != "occupancy":
            vec = out.obs.reshape(N * C, -1)[slots].copy()
            if idle is not None:
                vec[idle] = 0.0
        if mode != "vector":
            occ = self.sim.occupancy()
            occ = occ.reshape(N * C, *occ.shape[2:])[slots]
            if idle is not None:
                occ[idle] = 0.0
        if mode == "dict":
            return {"vector": vec, "occupancy": occ}
        return vec if mode == "vector" else occ

    def _reset_infos(self, out: StepResult, worlds: np.ndarray) -> list[dict[str, Any]]:
        sim, C = self.sim, self._C
        self.reset_ego_batch = ego_batch(sim, out, worlds, True, self._context)
        if self.info_mode == "lean":
            return [{} for _ in range(len(worlds) * C)]  # SB3 stores these: fresh dicts
        egos = ego_steps(sim, out, worlds, True, self._context)
        speed = sim.v[worlds, :C].ravel().tolist()
        dist = sim.route_dist[worlds, :C].ravel().tolist()
        dest = sim.dest[worlds, :C].ravel().tolist()
        return [
            {EGO_STEP_KEY: e, "speed": s, "route_distance": d, "destination": g}
            for e, s, d, g in zip(egos, speed, dist, dest, strict=True)
        ]

    def _full_infos(self, out: StepResult, worlds: np.ndarray) -> list[dict[str, Any]]:
        """Step infos of every slot of ``worlds`` with every key of the Gymnasium
        view's info (and ``active`` with several cars per world)."""
        arrays, C = self.step_arrays, self._C
        slots = slots_of(worlds, C)
        active = None if C == 1 else out.active[worlds]  # cars in play during the step
        egos = ego_steps(self.sim, out, worlds, False, self._context, active)
        names = REWARD_NAMES
        comps = np.stack([arrays["rewards"][n][slots] for n in names], axis=1)
        cost = arrays["cost"][slots]
        infos = [
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
                *(arrays[k][slots].tolist() for k in ("speed", "route_distance", "progress")),
                arrays["destination"][slots].tolist(),
                comps.tolist(),
                cost.tolist(),
                *(arrays[k][slots].tolist() for k in ("crashed", "arrived", "offroad", "left_map")),
                strict=True,
            )
        ]
        if C > 1:
            for info, act in zip(infos, arrays["active"][slots].tolist(), strict=True):
                info["active"] = act
        return infos

    def _reset_worlds(self, worlds: np.ndarray, apply_seeds: bool = True) -> StepResult:
        """New episodes in ``worlds``: each draws its simulator seed from its seed chain.

        Seeds given to :meth:`seed` apply at the next :meth:`reset` only
        (``apply_seeds``), never at an auto-reset, as in SB3's ``DummyVecEnv``: SB3 calls
        ``seed`` on a running env (e.g. when loading a model) without resetting it. World
        ``w`` takes the seed given to slot ``w`` (``seed + w``).
        """
        for w in worlds.tolist():
            if (apply_seeds and self._seeds[w] is not None) or self._np_randoms[w] is None:
                self._np_randoms[w], _ = seeding.np_random(self._seeds[w])
                self._seeds[w] = None
            self.episode_seeds[w] = seed_from(self._np_randoms[w])
        # per-world streams: world w draws exactly what a single env's N = 1 simulator draws
        self.sim.seed_worlds(self.episode_seeds[worlds].tolist(), worlds)
        out = self.sim.reset(worlds=worlds)
        C = self._C
        self._episode_cost[worlds] = 0.0
        self._outcome[worlds] = 0
        self._start_route[worlds] = self.sim.route_dist[worlds, :C]
        self._route_prev[worlds] = self.sim.route_dist[worlds, :C]
        if self.render_world // C in worlds.tolist():
            self._path = [self._ego_xy(self.render_world)]
        return out

    def _ego_xy(self, k: int) -> tuple[float, float]:
        w, c = divmod(k, self._C)
        return float(self.sim.x[w, c]), float(self.sim.y[w, c])

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
        worlds = np.arange(self._n)
        out = self._reset_worlds(worlds)
        self._reset_seeds()
        self._reset_options()
        self._started = True
        self.reset_infos = self._reset_infos(out, worlds)
        if self.render_mode == "human":
            self.render()
        return self._observe(out)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = check_actions(actions, self.num_envs, self.continuous, self._names)

    def step_wait(self):
        """Step all worlds in one simulator call; auto-reset the ones that finished.

        Returns ``(obs, rewards (S,) float32, dones (S,) bool, infos)``.
        """
        if not self._started:
            raise RuntimeError("step() called before reset()")
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async(actions)")
        actions, self._actions = self._actions, None
        sim, N, C = self.sim, self._n, self._C
        out = sim.step(actions.reshape((N, C) + actions.shape[2:]))
        obs = self._observe(out)
        S = N * C
        comps = out.rewards.reshape(S, -1)
        rewards = comps.sum(axis=1).astype(np.float32)
        cost = out.cost.reshape(S)
        self._episode_cost += out.cost
        route_now = sim.route_dist[:, :C]
        if C == 1:
            active = None
            events = out
            world_done = out.terminated[:, 0] | out.truncated
        else:  # events of cars in play only; finished cars keep their last route distance
            active = out.active
            events = ActiveEvents(out, active)
            route_now = np.where(active, route_now, self._route_prev)
            self._outcome = np.where(
                active & events.terminated, outcome_codes(events), self._outcome
            )
            world_done = sim.done.all(axis=1) | out.truncated
        self._progress = step_progress(self._route_prev, route_now)
        self._route_prev = route_now.copy()
        all_worlds = np.arange(N)
        self.ego_batch = ego_batch(sim, out, all_worlds, False, self._context, active)
        self.reset_ego_batch = None
        speed = sim.v[:, :C] if C == 1 else np.where(active, sim.v[:, :C], 0.0)
        self.step_arrays = {
            "rewards": {name: comps[:, k] for k, name in enumerate(REWARD_NAMES)},
            "costs": {COST_CHANNEL: cost},
            "cost": cost,
            "speed": speed.reshape(S).copy(),
            "route_distance": route_now.reshape(S).copy(),
            "progress": self._progress.reshape(S),
            "destination": sim.dest[:, :C].reshape(S).copy(),
            "crashed": events.crashed.reshape(S),
            "arrived": events.arrived.reshape(S),
            "offroad": events.offroad.reshape(S),
            "left_map": events.left_map.reshape(S),
        }
        if C > 1:
            self.step_arrays["active"] = out.active.reshape(S)
        dones = np.repeat(world_done, C) if C > 1 else world_done
        done_worlds = np.flatnonzero(world_done)
        done_idx = slots_of(done_worlds, C)
        if self.info_mode == "full":
            infos = self._full_infos(out, all_worlds)
        else:
            infos = [_NO_INFO] * S
            if len(done_idx):
                for k, info in zip(
                    done_idx.tolist(), self._full_infos(out, done_worlds), strict=True
                ):
                    infos[k] = info
        w0, c0 = divmod(self.render_world, C)
        if self.render_mode is not None and out.active[w0, c0]:
            self._path.append(self._ego_xy(self.render_world))
        if len(done_idx):
            self._end_episodes(out, obs, infos, done_worlds, done_idx)
        if self.render_mode == "human":
            self.render()
        return obs, rewards, dones, infos

    def _end_episodes(
        self, out: StepResult, obs: Any, infos: list, done_worlds: np.ndarray, done_idx: np.ndarray
    ) -> None:
        """Episode figures into the infos of slots ``done_idx`` (worlds ``done_worlds``),
        then auto-reset: the new episodes' first observations replace theirs in ``obs``."""
        sim, C = self.sim, self._C
        ep_cost = self._episode_cost[done_worlds].ravel().tolist()
        finished = sim.done[done_worlds].ravel().tolist()
        truncated = np.repeat(out.truncated[done_worlds], C).tolist()
        start = self._start_route[done_worlds].ravel().tolist()
        end = self._route_prev[done_worlds].ravel().tolist()
        outcome = self._outcome[done_worlds].ravel().tolist()
        for j, k in enumerate(done_idx.tolist()):
            info = infos[k]
            info["episode_cost"] = ep_cost[j]
            info["episode_costs"] = {COST_CHANNEL: ep_cost[j]}
            info["episode_progress"] = episode_progress(start[j], end[j])
            info["TimeLimit.truncated"] = bool(truncated[j] and not finished[j])
            if C > 1:
                info["episode_outcome"] = OUTCOMES[outcome[j]]
            if isinstance(obs, dict):
                info["terminal_observation"] = {key: v[k].copy() for key, v in obs.items()}
            else:
                info["terminal_observation"] = obs[k].copy()
        rout = self._reset_worlds(done_worlds, apply_seeds=False)
        fresh = self._observe(rout, done_idx)
        if isinstance(obs, dict):
            for key in obs:
                obs[key][done_idx] = fresh[key]
        else:
            obs[done_idx] = fresh
        for k, info in zip(done_idx.tolist(), self._reset_infos(rout, done_worlds), strict=True):
            self.reset_infos[k] = info

    def seed(self, seed: int | Sequence[int] | None = None) -> Sequence[int | None]:
        """Seed world ``i`` with ``seed + i`` at the next :meth:`reset` (SB3 semantics);
        given one seed per world, world ``w`` with ``seed[w]`` (repeats allowed: common
        seeds). World ``i`` then follows exactly the episodes of a Gymnasium
        ``bystander/Intersection-v0`` env reset with its seed and later reset without a
        seed (same simulator seed chain), given the same actions. ``None``: a random base
        seed. Returns the seeds: per slot for an int (as SB3), per world for a list."""
        if isinstance(seed, Sequence | np.ndarray):
            if len(seed) != self._n or not all(is_int(x) and x >= 0 for x in seed):
                raise ValueError(
                    f"seed: expected {self._n} ints >= 0 (one per world), got {seed!r}"
                )
            self._seeds = [*map(int, seed), *[None] * (self.num_envs - self._n)]  # per slot
            return self._seeds[: self._n]
        if seed is not None and not is_int(seed):
            raise TypeError(f"seed: expected an int or None, got {seed!r}")
        return super().seed(None if seed is None else int(seed))

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # ------------------------------------------------------------------ attributes
    PER_WORLD_ATTRS = ("episode_seed", "episode_cost", "np_random", "t", "sim_world", "car")
    """Names :meth:`get_attr` answers per slot: ``episode_seed`` (the simulator seed of
    the slot's world's episode), ``episode_cost`` (the car's cost so far this episode),
    ``np_random`` (the world's seed-chain generator), ``t`` (steps this episode),
    ``sim_world`` (the world index into :attr:`sim`'s arrays), ``car`` (the controlled
    car's index in its world)."""

    def _per_world(self, name: str, k: int) -> Any:
        w, c = divmod(k, self._C)
        if name == "episode_seed":
            return int(self.episode_seeds[w])
        if name == "episode_cost":
            return float(self._episode_cost[w, c])
        if name == "np_random":
            return self._np_randoms[w]
        if name == "t":
            return int(self.sim.t[w])
        return c if name == "car" else w

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
        """Draw slot ``world`` from now on (its past path is drawn from this point)."""
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
