"""Vectorised intersection simulator: N worlds stepped in one call.

State arrays have shape ``(N, A)``: ``N`` worlds, ``A = config.max_agents`` slots per
world with an ``alive`` mask. Slots ``0 .. C-1`` (``C = config.n_controlled``) hold the
controlled cars; the rest hold scripted road users, spawned into free slots. Units:
metres, seconds, radians, world frame (x east, y north).

Road-user kinds (``kind`` array): ``0`` controlled car, ``1`` scripted car, ``2``
pedestrian, ``3`` cyclist. Observer type names: :data:`OBSERVER_TYPES`.

Motion: scripted road users follow segments of the :class:`RoadNetwork` (arc length
``s`` on segment ``seg``) with IDM-style car following (a road user ahead in a corridor
along the heading is the leader) and yield before intersections (a car waits at the
stop line while a car on a conflicting path is inside the intersection or closer to
it, or a pedestrian crosses its path). Controlled cars either follow lanes too
(discrete meta-actions set the target speed and the turn at the next intersection;
with ``ego_car_following`` they brake for the road user ahead but never yield) or move
freely on a kinematic bicycle model (continuous actions, ``seg = -1``).

Every pass over pairs of road users (car following, integration, visibility,
collisions, nearest neighbours) and the whole reset of the finished worlds is a numba
kernel in :mod:`bystander.envs.intersection.kernels` looping over worlds and slots; the
controlled cars' commands and observations are small kernels of
:mod:`bystander.envs.intersection.ego_kernels` (a numpy call costs a microsecond at any
size); numpy does the rest, with no Python loop over worlds. One step
of one world costs tens of microseconds, and the same code steps ``N = 1024`` worlds
for a batched VecEnv (reset finished worlds with ``reset(worlds=...)``; :attr:`last`
holds the outputs). From :data:`~bystander.envs.intersection.kernels.PARALLEL_MIN_WORLDS`
worlds the heavy kernels run one world per thread (bit-identical for any count).

The per-step outputs for controlled cars (observations, reward components, costs,
flags, visibility of the ego to every other road user) are computed for all worlds at
once; :mod:`bystander.envs.intersection.gym_env` and
:mod:`bystander.envs.intersection_v0` are thin views over ``N = 1``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bystander.envs.intersection.config import IntersectionConfig
from bystander.envs.intersection.ego_kernels import (
    ego_commands,
    merge_idm,
    observation,
    observation_serial,
    outcomes,
    outcomes_serial,
    route_features,
    route_features_serial,
)
from bystander.envs.intersection.kernels import (
    advance,
    advance_serial,
    idm_accel,
    idm_accel_serial,
    lane_poses,
    observer_slots,
    pairwise_gaps,
    reset_worlds,
    reset_worlds_serial,
    spawn,
    spawn_serial,
    splitmix_uniforms,
    surroundings,
    surroundings_serial,
    threaded,
)
from bystander.envs.intersection.pcg import GEN_WORDS, pcg64_seed_many
from bystander.envs.intersection.road import CONNECTOR, CROSSWALK, DS, LINK, RoadNetwork

__all__ = [
    "IDM_ACCEL",
    "IDM_DECEL",
    "IDM_INV_2SQRT_AB",
    "IDM_S0",
    "IDM_T",
    "IntersectionSim",
    "KIND_NAMES",
    "LATERAL_OFFSET",
    "LENGTH",
    "LOOKAHEAD",
    "MAX_BRAKE",
    "FACTORED_ACTIONS",
    "HELD_FRACTION",
    "FACTORED_SPEEDS",
    "FACTORED_TURNS",
    "META_ACTIONS",
    "META_TO_FACTORED",
    "N_EGO_FEATURES",
    "N_OTHER_FEATURES",
    "OBSERVER_TYPES",
    "PED_CLEARANCE",
    "PED_CONTINUE",
    "PED_STOP_RADIUS",
    "REWARD_NAMES",
    "StepResult",
    "TURN_BRAKE_ZONE",
    "WIDTH",
    "YIELD_ZONE",
]

CONTROLLED, CAR, PEDESTRIAN, CYCLIST = 0, 1, 2, 3
KIND_NAMES = ("controlled", "car", "pedestrian", "cyclist")
OBSERVER_TYPES = np.array(["car", "car", "pedestrian", "cyclist"], dtype=object)
"""Observer type name per kind: controlled cars are observed as ordinary cars."""

# Per-kind constants, indexed by kind.
LENGTH = np.array([4.5, 4.5, 0.6, 1.8])
WIDTH = np.array([1.8, 1.8, 0.6, 0.6])
IDM_ACCEL = np.array([3.0, 2.0, 1.0, 1.5])
IDM_DECEL = np.array([3.0, 3.0, 2.0, 2.0])
IDM_S0 = np.array([2.0, 2.0, 0.5, 1.5])
IDM_T = np.array([1.2, 1.2, 0.5, 1.0])
LOOKAHEAD = np.array([40.0, 40.0, 3.0, 25.0])
LATERAL_OFFSET = np.array([0.0, 0.0, 0.0, 0.9])
IDM_INV_2SQRT_AB = 1.0 / (2.0 * np.sqrt(IDM_ACCEL * IDM_DECEL))
MAX_BRAKE = 8.0
HELD_FRACTION = 0.75
"""A controlled car is held (:meth:`IntersectionSim.held`) when the scripted driver in
its place would accelerate at less than this fraction of its maximum: at a standstill,
IDM's ``a_max (1 - (s0 / gap)^2)`` is below ``0.75 a_max`` when a standing road user or a
stop line is within ``2 s0`` (4 m for cars)."""
YIELD_ZONE = 20.0
TURN_BRAKE_ZONE = 15.0  # scripted road users slow to the turn's speed limit this far ahead [m]
PED_APPROACH, PED_LEAVE = 7.0, 2.5  # cars yield to walkers this far before / past their lane [m]
PED_CONTINUE = 0.3  # probability that a walker goes on to the next crosswalk at a corner
PED_STOP_RADIUS = 6.0  # a crossing walker stops while a moving vehicle is this close ahead [m]
PED_CLEARANCE = 25.0  # pedestrians start crossing only when no vehicle moves this close [m]

# Discrete meta-actions.
SLOWER, KEEP, FASTER, TURN_LEFT, GO_STRAIGHT, TURN_RIGHT = range(6)
META_ACTIONS = ("SLOWER", "KEEP", "FASTER", "TURN_LEFT", "GO_STRAIGHT", "TURN_RIGHT")
# Factored actions (action_type="factored"): speed x turn intent, ``4 * speed + turn``.
FACTORED_SPEEDS = ("SLOWER", "KEEP", "FASTER")
FACTORED_TURNS = ("NONE", "TURN_LEFT", "GO_STRAIGHT", "TURN_RIGHT")
FACTORED_ACTIONS = tuple(f"{s}+{t}" for s in FACTORED_SPEEDS for t in FACTORED_TURNS)
META_TO_FACTORED = np.array([0, 4, 8, 5, 6, 7])
"""The factored action doing what each meta-action does (a turn keeps the speed)."""

N_EGO_FEATURES = 15
N_OTHER_FEATURES = 11
REWARD_NAMES = ("progress", "arrival", "collision", "offroad", "time")
_ONE_HOT3 = np.vstack([np.eye(3), np.zeros((1, 3))])  # index -1 -> zeros
_ACTION_TURN_TABLE = np.array([-1, -1, -1, 2, 1, 0])  # meta-action -> turn (-1: none)
# per action type: (target-speed change in speed steps, turn (-1: none)) of each action
_ACTION_TABLES = {
    "discrete": (np.array([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0]), _ACTION_TURN_TABLE),
    "factored": (np.repeat([-1.0, 0.0, 1.0], 4), np.tile([-1, 2, 1, 0], 3)),
    # target_speed: the step sets target_v itself; the kernel then sees one no-op action
    "target_speed": (np.zeros(1), np.array([-1])),
}
_KIND_ONE_HOT = np.eye(4)[[3, 0, 1, 2]]  # kind -> (car, pedestrian, cyclist, controlled)


@dataclass
class StepResult:
    """Per-step outputs for the controlled cars of every world (``C`` controlled slots).

    Attributes:
        obs: ``(N, C, F)`` float32 vector observation in [-1, 1] (see :meth:`IntersectionSim.observe`).
        rewards: ``(N, C, 5)`` reward components in :data:`REWARD_NAMES` order.
        cost: ``(N, C)`` collision / near-miss cost of the step.
        crashed, arrived, offroad, left_map, terminated: ``(N, C)`` bool.
        truncated: ``(N,)`` bool (``max_cycles`` reached).
        visible: ``(N, C, A)`` bool, slot ``j`` saw controlled car ``c`` this step.
        active: ``(N, C)`` bool, controlled car was in play during this step.
    """

    obs: np.ndarray
    rewards: np.ndarray
    cost: np.ndarray
    crashed: np.ndarray
    arrived: np.ndarray
    offroad: np.ndarray
    left_map: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    visible: np.ndarray
    active: np.ndarray


class IntersectionSim:
    """``n_worlds`` independent intersection worlds stepped together.

    Args:
        config: The world configuration (shared by all worlds).
        n_worlds: ``N``.
        seed: World ``w``'s generator is seeded ``seed + w`` (as by ``reset(seed=seed)``);
            ``None``: fresh entropy.

    Randomness: every world draws from generators of its own, never from a shared one,
    so a world's episodes depend neither on the batch nor on the number of threads. A
    world's reset generator is NumPy's ``default_rng(seed)``, compiled
    (:mod:`bystander.envs.intersection.pcg`: same numbers, drawn inside the parallel
    reset kernel :func:`~bystander.envs.intersection.kernels.reset_worlds`), seeded by
    :meth:`seed_worlds` or by ``reset(seed=s)`` (world ``w``: ``s + w``); unseeded
    resets continue it. Each reset also draws the world's 64-bit key for the episode's
    per-step noise, a SplitMix64 stream per world
    (:func:`~bystander.envs.intersection.kernels.splitmix_uniforms`). World ``w`` seeded
    ``s`` thus draws exactly what an ``N = 1`` simulator reset with ``seed=s`` draws (the
    batched VecEnv equals single envs world by world this way), and exactly what the
    earlier NumPy implementation drew (same episodes for the same seeds).

    Threads: the kernels run one world per thread (numba ``prange``; set the count with
    ``numba.set_num_threads``); results are bit-identical for any thread count.
    """

    _start_v = np.array([6.0])  # start target speeds of simulators pickled before the option
    _levels: np.ndarray | None = None  # target_speed mode only (and pickled before it)

    def __init__(
        self, config: IntersectionConfig, n_worlds: int = 1, seed: int | None = None
    ) -> None:
        if (
            isinstance(n_worlds, bool)
            or not isinstance(n_worlds, (int, np.integer))
            or n_worlds < 1
        ):
            raise ValueError(f"n_worlds: expected an int >= 1, got {n_worlds!r}")
        self.config = config
        self.road = RoadNetwork(config)
        self.N, self.A, self.C = int(n_worlds), config.max_agents, config.n_controlled
        self.continuous = config.action_type == "continuous"
        self._step_state = np.zeros(self.N, dtype=np.uint64)  # SplitMix64 state per world
        self._gens = np.zeros((self.N, GEN_WORDS), dtype=np.uint64)  # reset generator per world
        self._u = np.empty((self.N, self.A, 2))  # the step's uniforms (_step_random)
        self._us = np.empty((self.N, 5))
        self._no_cont = np.zeros((1, 1, 2))  # the unused action array of ego_commands
        self._no_meta = np.zeros((1, 1), np.int64)
        r = self.road
        self._fov_cos = np.array(
            [math.cos(config.fov_car / 2), math.cos(config.fov_car / 2),
             math.cos(config.fov_pedestrian / 2), math.cos(config.fov_cyclist / 2)]
        )  # fmt: skip
        self._fov_full = (
            np.array([config.fov_car, config.fov_car, config.fov_pedestrian, config.fov_cyclist])
            >= 2 * math.pi - 1e-9
        )
        self._range = np.array(
            [config.range_car, config.range_car, config.range_pedestrian, config.range_cyclist]
        )
        self._max_speed = np.array(
            [config.ego_max_speed, config.speed_limit * 1.1, config.pedestrian_speed * 1.2,
             config.cyclist_speed * 1.2]
        )  # fmt: skip
        self._link_to_node = (r.kind == LINK) & (r.node >= 0)
        self._is_connector = r.kind == CONNECTOR
        self._is_crosswalk = r.kind == CROSSWALK
        self._spawn_rates = np.array(
            [config.car_rate * len(r.entries), config.cyclist_rate * len(r.entries),
             config.pedestrian_rate * len(r.crosswalks)]
        )  # fmt: skip
        total = self._spawn_rates.sum()  # spawn probability per step, kind shares
        self._spawn_p = 1.0 - math.exp(-total * config.dt) if total > 0 else -1.0  # -1: never
        self._spawn_cum = np.cumsum(self._spawn_rates) / total if total > 0 else np.ones(3)
        self._spawn_kinds = np.array([CAR, CYCLIST, PEDESTRIAN], dtype=np.int64)
        self._reward_weights = np.array(
            [config.reward_progress, config.reward_arrival, config.reward_collision,
             config.reward_offroad, config.reward_time]
        )  # fmt: skip
        self._bounds = np.array(r.bounds, dtype=np.float64)
        self._slot = np.arange(self.A)
        self._follow_controlled = not self.continuous and config.ego_car_following
        self._base_speed = np.array(
            [
                config.ego_max_speed,
                config.speed_limit,
                config.pedestrian_speed,
                config.cyclist_speed,
            ]
        )
        # exits a car from each entry may be sent to: reachable, and not a U-turn
        self._valid_dest = np.array(
            [[np.isfinite(r.dist_to_goal[k, e]) and r.meta[ex][1:] != r.meta[e][1:]
              for k, ex in enumerate(r.exits)] for e in r.entries]
        )  # fmt: skip
        delta, self._turn_table = _ACTION_TABLES.get(config.action_type, _ACTION_TABLES["discrete"])
        if config.action_type == "target_speed":
            self._levels = np.asarray(config.speed_levels, np.float64)
            self._keep_meta = np.zeros((self.N, self.C), np.int64)  # sets nothing
        self._speed_delta = delta * config.speed_step
        self._start_v = np.asarray(config.start_target_speeds, np.float64)
        plan = [CAR] * config.n_cars + [CYCLIST] * config.n_cyclists
        plan += [PEDESTRIAN] * config.n_pedestrians  # kinds placed at reset, slots C, C + 1...
        self._plan = np.array(plan[: self.A - self.C], dtype=np.int64)
        self._links = np.flatnonzero(r.kind == LINK).astype(np.int64)
        self._all_worlds = np.arange(self.N)
        self._allocate()
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> np.uint64(2))
        self._seed_all(seed)

    # ------------------------------------------------------------------ state
    def _allocate(self) -> None:
        N, A, C = self.N, self.A, self.C
        f = np.zeros
        self.alive = f((N, A), bool)
        self.kind = f((N, A), np.int64)
        self.uid = -np.ones((N, A), np.int64)
        self.x, self.y, self.h, self.v = f((N, A)), f((N, A)), f((N, A)), f((N, A))
        self.cos, self.sin = np.ones((N, A)), f((N, A))
        self.length, self.width = np.ones((N, A)), np.ones((N, A))
        self._iw = np.arange(N)[:, None]
        self._iwc = np.arange(N)[:, None, None]
        self._ctrl = np.arange(C)
        self._not_self = ~np.eye(A, dtype=bool)
        self._no_box = -np.ones((N, A), np.int64)
        self._not_ctrl_self = self._slot[None, None, :] != self._ctrl[None, :, None]
        self.seg = -np.ones((N, A), np.int64)
        self.s = f((N, A))
        self.turn = np.ones((N, A), np.int64)
        self.turn_chosen = f((N, A), bool)
        self.v0 = f((N, A))
        self.stuck = f((N, A))
        self.accel = f((N, A))
        self.steer = f((N, A))
        self.next_uid = f(N, np.int64)
        self.t = f(N, np.int64)
        self.target_v = f((N, C))
        self.dest = f((N, C), np.int64)
        self.done = np.ones((N, C), bool)
        self.prev_dist = f((N, C))
        self.route_dist = f((N, C))
        self.last: StepResult | None = None
        self._visible = np.zeros((N, C, A), bool)
        self._separation = np.full((N, C), np.inf)
        self._others = np.zeros((N, C, self.config.n_nearest, N_OTHER_FEATURES))

    def generator_state(self, w: int = 0) -> dict:
        """World ``w``'s reset generator as NumPy's ``PCG64`` state dict (a copy).

        ``np.random.Generator(np.random.PCG64())`` given this state draws exactly what
        world ``w``'s next reset draws.
        """
        g = [int(v) for v in self._gens[w]]
        return {
            "bit_generator": "PCG64",
            "state": {"state": g[0] << 64 | g[1], "inc": g[2] << 64 | g[3]},
            "has_uint32": g[4],
            "uinteger": g[5],
        }

    @property
    def rng(self) -> np.random.Generator:
        """A NumPy ``Generator`` in the state of world 0's reset generator: a snapshot for
        inspection (drawing from it does not advance the simulator's)."""
        gen = np.random.Generator(np.random.PCG64())
        gen.bit_generator.state = self.generator_state(0)
        return gen

    def _seed_all(self, seed: int) -> None:
        """Seed world ``w``'s reset stream with ``seed + w`` (all worlds)."""
        self.seed_worlds(int(seed) + np.arange(self.N, dtype=np.uint64))

    def seed_worlds(self, seeds: Sequence[int], worlds: np.ndarray | None = None) -> None:
        """Seed the reset streams of ``worlds`` (default: all) with ``seeds`` (one each).

        Non-negative integers below ``2**64``. World ``w`` seeded ``s`` then starts, at its
        next :meth:`reset`, exactly the episode an ``N = 1`` simulator reset with
        ``seed=s`` starts, whatever the other worlds do.
        """
        idx = self._all_worlds if worlds is None else np.asarray(worlds, dtype=np.int64).reshape(-1)
        try:
            keys = np.asarray(seeds, dtype=np.uint64).reshape(-1)
        except (OverflowError, TypeError, ValueError) as err:
            raise ValueError(f"seeds: expected non-negative ints below 2**64 ({err})") from None
        if len(keys) != len(idx):
            raise ValueError(f"seeds: expected {len(idx)} seeds (one per world), got {len(keys)}")
        pcg64_seed_many(self._gens, idx, keys)

    def _step_random(self) -> tuple[np.ndarray, np.ndarray]:
        """The step's uniform draws: ``u (N, A, 2)`` and ``us (N, 5)``, world ``w``'s
        ``2 A + 5`` next numbers of its SplitMix64 stream (keyed at its reset), in this
        order. Buffers reused every step (read by the step's kernels only)."""
        # (a view made here, never kept: a pickled or copied simulator keeps no views)
        splitmix_uniforms(self._step_state, self._u.reshape(self.N, 2 * self.A))
        splitmix_uniforms(self._step_state, self._us)
        return self._u, self._us

    def reset(self, seed: int | None = None, worlds: np.ndarray | None = None) -> StepResult:
        """Start new episodes in ``worlds`` (default: all), one compiled call for all.

        ``seed`` re-seeds every world's reset stream first (world ``w``: ``seed + w``).
        Only the reset worlds' state, surroundings and observation rows are recomputed:
        the other worlds' rows of the result are those of the last result (their state
        has not changed since, unless edited by hand: then reset them too).
        """
        if seed is not None:
            self._seed_all(seed)
        idx = self._all_worlds if worlds is None else np.asarray(worlds, dtype=np.int64).reshape(-1)
        if len(idx):
            self._reset_worlds(idx)
        self._route_features()
        self.prev_dist[idx] = self.route_dist[idx]
        active = np.zeros((self.N, self.C), bool)
        active[idx] = True
        obs = None
        if self.last is not None and len(idx) < self.N:
            # the other worlds' observations are those of the last result (their state
            # is unchanged since): only the reset worlds' rows are computed
            obs = self.last.obs.copy()
            self._observe_into(obs, idx)
        out = self._quiet_result(active, obs)
        self.last = out
        return out

    def _reset_worlds(self, idx: np.ndarray) -> None:
        """New episodes in worlds ``idx``: controlled cars at entries, traffic placed clear.

        Each controlled car gets a distinct random entry road, a start 5-20 m into it and
        a random reachable exit (no U-turn); then the initial road users (cars, cyclists
        on links; pedestrians on crosswalks) are placed one after the other at random
        spots at least 12 m (1.5 m for pedestrians) from everyone placed before, up to 20
        tries each. One compiled call for all worlds (one world per thread), each world
        drawing from its own reset stream: see
        :func:`~bystander.envs.intersection.kernels.reset_worlds`.
        """
        cfg, r = self.config, self.road
        (reset_worlds if threaded(len(idx)) else reset_worlds_serial)(
            idx, self._gens, self._step_state, self.alive, self.kind, self.uid,
            self.seg, self.s, self.v, self.v0, self.x, self.y, self.h, self.cos, self.sin,
            self.length, self.width, self.turn, self.turn_chosen, self.stuck, self.accel,
            self.steer, self.next_uid, self.t, self.target_v, self.dest, self.done,
            r.entries, self._valid_dest, r.best_turn, self._links, r.crosswalks, self._plan,
            r.length, r.points, r.heading, DS, LENGTH, WIDTH, LATERAL_OFFSET, self._base_speed,
            cfg.ego_max_speed, self.continuous, self._start_v,
        )  # fmt: skip
        self._surroundings(idx)

    def _desired_speed(self, kind: int | np.ndarray, u: np.ndarray) -> np.ndarray:
        """Desired speeds [m/s]: 80-110 % of the kind's base speed (``u`` uniform in [0, 1))."""
        return self._base_speed[kind] * (0.8 + 0.3 * u)

    def place(
        self, w: int, slot: int, kind: int, x: float, y: float, heading: float, v: float = 0.0
    ) -> int:
        """Put a road user at an arbitrary pose (scenario construction: tests, demos).

        The road user is *free* (not lane-bound): a scripted one keeps its speed ``v``
        [m/s] and heading (give ``v = 0`` to keep it still); a controlled one (slot
        ``< n_controlled``) then drives on the bicycle model in continuous mode and
        stands still in discrete mode. Returns its new id. Visibility, observations and
        collisions reflect the new pose at once (:meth:`refresh`).
        """
        if not 0 <= slot < self.A:
            raise ValueError(f"slot: expected an int in [0, {self.A}), got {slot}")
        if kind not in (CONTROLLED, CAR, PEDESTRIAN, CYCLIST):
            raise ValueError(
                f"kind: expected one of 0 (controlled), 1 (car), 2 (pedestrian), 3 (cyclist), got {kind}"
            )
        if (kind == CONTROLLED) != (slot < self.C):
            raise ValueError(
                f"kind: slot {slot} holds {'controlled' if slot < self.C else 'scripted'} road users"
            )
        self.alive[w, slot] = True
        self.kind[w, slot] = kind
        self.uid[w, slot] = self.next_uid[w]
        self.next_uid[w] += 1
        self.seg[w, slot] = -1
        self.s[w, slot] = 0.0
        self.x[w, slot], self.y[w, slot], self.h[w, slot] = x, y, heading
        self.cos[w, slot], self.sin[w, slot] = math.cos(heading), math.sin(heading)
        self.v[w, slot] = self.v0[w, slot] = v
        self.length[w, slot], self.width[w, slot] = LENGTH[kind], WIDTH[kind]
        self.stuck[w, slot] = 0.0
        self.steer[w, slot] = 0.0
        if kind == CONTROLLED:
            self.done[w, slot] = False
            self.target_v[w, slot] = 0.0
        self.refresh()
        return int(self.uid[w, slot])

    def remove(self, w: int, slot: int) -> None:
        """Take a road user out of world ``w`` (scenario construction)."""
        self.alive[w, slot] = False
        self.refresh()

    def refresh(self) -> None:
        """Recompute poses, the pairwise cache and ``last`` outputs after manual edits."""
        self._update_poses()
        self._route_features()
        self.last = self._quiet_result(~self.done)

    # ------------------------------------------------------------------ step
    def step(self, actions: np.ndarray) -> StepResult:
        """Advance every world by ``dt``.

        Args:
            actions: Discrete: ``(N, C)`` ints in ``[0, 6)`` (:data:`META_ACTIONS`);
                factored: in ``[0, 12)`` (:data:`FACTORED_ACTIONS`); target_speed: in
                ``[0, len(speed_levels))``.
                Continuous: ``(N, C, 2)`` floats in ``[-1, 1]``: (acceleration, steering),
                scaled by ``max_accel`` / ``max_decel`` and ``max_steer``.
                Entries of finished controlled cars are ignored. Validation is the
                views' job; this method trusts its input.
        """
        cfg, r, N, A, C = self.config, self.road, self.N, self.A, self.C
        dt = cfg.dt
        active = ~self.done
        u, us = self._step_random()

        # --- controlled cars' commands (compiled)
        if self.continuous:
            cont, meta = np.asarray(actions, dtype=np.float64).reshape(N, C, 2), self._no_meta
        else:
            cont, meta = self._no_cont, np.asarray(actions, dtype=np.int64).reshape(N, C)
            if self._levels is not None:  # absolute levels; turns follow the navigation
                np.copyto(self.target_v, self._levels[meta], where=active)
                meta = self._keep_meta
        accel = np.empty((N, A))
        ego_commands(
            cont, meta, self.continuous, active, self.v, self.target_v, self.turn,
            self.turn_chosen, self.steer, self._speed_delta, self._turn_table, cfg.max_accel,
            cfg.max_decel, cfg.max_steer, cfg.ego_max_speed, accel,
        )  # fmt: skip

        # --- scripted road users: IDM car following + yielding (placed ones coast); with
        # _follow_controlled, adaptive cruise keeps a safe gap to the leader (compiled)
        merge_idm(self.kind, self.seg, self._idm(), C, self._follow_controlled, MAX_BRAKE, accel)
        self.accel = accel

        # --- integrate (in place, compiled)
        left_map = (advance if threaded(N) else advance_serial)(
            self.alive, self.kind, self.seg, self.s, self.v, self.x, self.y, self.h, self.cos,
            self.sin, self.turn, self.turn_chosen, self.steer, accel, self.dest,
            r.points, r.heading, r.length, r.succ, self._link_to_node, self._is_connector,
            self._is_crosswalk, r.best_turn, self._max_speed, LATERAL_OFFSET, u, dt,
            cfg.wheelbase, DS, C, PED_CONTINUE,
        )  # fmt: skip

        # --- bookkeeping: stuck scripted road users are removed, new ones spawn (compiled)
        self._spawn(us)
        self.t += 1

        # --- controlled cars: events, costs, rewards (compiled)
        self._surroundings()
        self._route_features()
        # fresh arrays each step: the StepResult hands them out
        crashed, arrived, offroad, lm, terminated = np.empty((5, N, C), bool)
        cost, rewards = np.empty((N, C)), np.empty((N, C, 5))
        (outcomes if threaded(N) else outcomes_serial)(
            self.alive, self.x, self.y, self.cos, self.sin, self.dest, r.goal,
            self._separation, left_map, self.done, self.route_dist, self.prev_dist,
            self.continuous, self._bounds, r.roads_h, r.roads_v, cfg.arrive_radius**2,
            1.0 / cfg.near_miss_distance, cfg.collision_cost, cfg.near_miss_cost,
            self._reward_weights, crashed, arrived, offroad, lm, cost, rewards, terminated,
        )  # fmt: skip
        out = self._result(crashed, arrived, offroad, lm, terminated, cost, rewards, active)
        self.prev_dist = self.route_dist.copy()
        self.last = out
        return out

    def _update_poses(self) -> None:
        """Poses of lane followers from ``(seg, s)``, then the controlled cars' surroundings."""
        lane_poses(
            self.alive, self.kind, self.seg, self.s, self.x, self.y, self.h, self.cos, self.sin,
            self.road.points, self.road.heading, DS, LATERAL_OFFSET,
        )  # fmt: skip
        self._surroundings()

    def held(self) -> np.ndarray:
        """``(N, C)`` bool: controlled cars that the traffic in front holds in place.

        The scripted cars' driver model (:meth:`_idm`: IDM with the yielding rules) is
        put in each controlled car's place (its lane, planned turn, the road's speed
        limits); the car is *held* when that driver would accelerate at less than
        :data:`HELD_FRACTION` of its maximum: a road user stands within about two
        standstill gaps (4 m) ahead (a queue), or the car waits at a stop line it must
        yield at (conflicting traffic in or nearer the intersection, a pedestrian on the
        crosswalk). Evaluations count a step as standing still only when the car is slow
        and not held. Freely driven (continuous-mode) cars are never held: they have no
        lane for the rule.
        """
        C = self.C
        kind = self.kind.copy()
        kind[:, :C] = CAR
        v0 = self.v0.copy()
        v0[:, :C] = self.config.ego_max_speed
        acc = self._idm(kind=kind, v0=v0, follow_controlled=False)[:, :C]
        lane = self.alive[:, :C] & (self.seg[:, :C] >= 0)
        return lane & (acc < HELD_FRACTION * IDM_ACCEL[CAR])

    def _idm(
        self,
        kind: np.ndarray | None = None,
        v0: np.ndarray | None = None,
        follow_controlled: bool | None = None,
    ) -> np.ndarray:
        """IDM acceleration ``(N, A)`` of the scripted road users (compiled kernel).

        ``kind`` / ``v0`` / ``follow_controlled`` replace the sim's own (:meth:`held`).

        Model: IDM (``a = a_max (1 - (v / v0)^4 - (s* / gap)^2)``) where the leader is the
        nearest road user ahead in a corridor along the heading (its box projected on
        the follower's axes) or ahead on the same segment. ``v0`` is capped by the turn
        speed limits. Within ``YIELD_ZONE`` of an intersection a car stops at the stop
        line (a virtual standing leader) while a car on a conflicting path is inside the
        intersection or closer to it (ties: lower slot first), while a pedestrian walks
        on (or within a few metres of) a crosswalk spot its path crosses, or while a
        freely driven car is inside the intersection; unless it can no longer stop at
        6 m/s^2. Pedestrians wait at the curb while a vehicle moves within
        ``PED_CLEARANCE`` and stop while a moving vehicle is within ``PED_STOP_RADIUS``
        ahead. See :func:`bystander.envs.intersection.kernels.idm_accel`.
        """
        r = self.road
        if self.continuous:
            free_box = np.where(self.alive & (self.seg < 0), r.in_box(self.x, self.y), -1)
        else:
            free_box = self._no_box
        return (idm_accel if threaded(self.N) else idm_accel_serial)(
            self.alive, self.kind if kind is None else kind, self.x, self.y, self.cos, self.sin,
            self.v, self.s, self.seg, self.turn, self.v0 if v0 is None else v0, self.length,
            self.width, free_box,
            r.length, self._link_to_node, self._is_connector, r.succ, r.conflict, r.crosses,
            r.cross_s, r.speed_limit, r.node,
            LOOKAHEAD, IDM_ACCEL, IDM_S0, IDM_T, IDM_INV_2SQRT_AB,
            YIELD_ZONE, TURN_BRAKE_ZONE, MAX_BRAKE, PED_APPROACH, PED_LEAVE, PED_STOP_RADIUS,
            PED_CLEARANCE,
            self._follow_controlled if follow_controlled is None else follow_controlled,
        )  # fmt: skip

    def _spawn(self, us: np.ndarray) -> None:
        """Road users stuck longer than ``stuck_time`` leave; at most one new one per world
        per step, at a clear entry / crosswalk start (compiled:
        :func:`~bystander.envs.intersection.kernels.spawn`)."""
        r, cfg = self.road, self.config
        (spawn if threaded(self.N) else spawn_serial)(
            us, self._spawn_p, self._spawn_cum, self._spawn_kinds, r.entries, r.crosswalks,
            r.points, r.heading, self.alive, self.kind, self.uid, self.next_uid, self.seg,
            self.s, self.v, self.v0, self.length, self.width, self.stuck, self.turn_chosen,
            self.turn, self.x, self.y, self.h, self.cos, self.sin, self.C, self._base_speed,
            LENGTH, WIDTH, LATERAL_OFFSET, cfg.dt, cfg.stuck_time,
        )  # fmt: skip

    def _surroundings(self, worlds: np.ndarray | None = None) -> None:
        """Visibility, box gaps and nearest neighbours of the controlled cars (compiled).

        ``worlds``: recompute these worlds only, in place but for the visibility (a fresh
        array: earlier results keep theirs; the gaps and neighbours are read by the
        simulator only).
        """
        cfg, N, C, K = self.config, self.N, self.C, self.config.n_nearest
        if worlds is None:  # the kernel clears every row it writes
            worlds = self._all_worlds
            vis = np.empty((N, C, self.A), bool)
            sep, others = np.empty((N, C)), np.empty((N, C, K, N_OTHER_FEATURES))
        else:
            vis, sep, others = self._visible.copy(), self._separation, self._others
        (surroundings if threaded(len(worlds)) else surroundings_serial)(
            self.alive, self.kind, self.x, self.y, self.cos, self.sin, self.v, self.length,
            self.width, C, K, _KIND_ONE_HOT, self._fov_cos, self._fov_full, self._range,
            self.road.buildings, cfg.occlusion_by_vehicles, worlds, vis, sep, others,
        )  # fmt: skip
        self._visible, self._separation, self._others = vis, sep, others

    def pairwise_separation(self) -> np.ndarray:
        """Box gaps ``(N, A, A)`` [m] between all alive road users (``< 0``: overlap, ``inf``: n/a)."""
        return pairwise_gaps(
            self.alive, self.x, self.y, self.cos, self.sin, self.length, self.width
        )

    # ------------------------------------------------------------------ outputs
    def _route_features(self) -> None:
        """Reference lane position of each controlled car and its route distance to goal
        (compiled: :func:`~bystander.envs.intersection.ego_kernels.route_features`)."""
        r, shape = self.road, (self.N, self.C)
        self.ref_seg, self.ref_s = np.empty(shape, np.int64), np.empty(shape)
        self.lane_offset, self.route_dist = np.empty(shape), np.empty(shape)
        (route_features if threaded(self.N) else route_features_serial)(
            self.seg, self.s, self.x, self.y, self.cos, self.sin, self.dest, self.prev_dist,
            self.continuous, r.lane_xy, r.lane_cs, r.lane_seg, r.lane_s, r.dist_to_goal,
            self.ref_seg, self.ref_s, self.lane_offset, self.route_dist,
        )  # fmt: skip

    def _result(
        self, crashed: np.ndarray, arrived: np.ndarray, offroad: np.ndarray,
        left_map: np.ndarray, terminated: np.ndarray, cost: np.ndarray, rewards: np.ndarray,
        active: np.ndarray, obs: np.ndarray | None = None,
    ) -> StepResult:  # fmt: skip
        """The :class:`StepResult` of this step's events, with the current observation
        (``obs`` when given), visibility and time limit."""
        return StepResult(
            obs=self.observe() if obs is None else obs,
            rewards=rewards,
            cost=cost,
            crashed=crashed,
            arrived=arrived,
            offroad=offroad,
            left_map=left_map,
            terminated=terminated,
            truncated=self.t >= self.config.max_cycles,
            visible=self.visibility(),
            active=active,
        )

    def _quiet_result(self, active: np.ndarray, obs: np.ndarray | None = None) -> StepResult:
        """A result without events, costs or rewards (after a reset or a manual edit);
        ``obs``: its observation when already computed."""
        none = np.zeros((self.N, self.C), bool)
        return self._result(none, none, none, none, none, np.zeros((self.N, self.C)),
                            np.zeros((self.N, self.C, 5)), active, obs)  # fmt: skip

    def visibility(self) -> np.ndarray:
        """``(N, C, A)`` bool: slot ``j`` (alive, not ``c``) sees controlled car ``c`` now.

        Seen means: within the observer type's range, inside its field of view (full
        angle centred on its heading), and the straight sight line from the observer's
        centre to the ego's centre crosses no building (nor, with
        ``occlusion_by_vehicles``, another vehicle approximated by a disc of radius
        ``(length + width) / 4``).

        The value is computed with every pose change (step, reset, :meth:`place`); see
        :func:`bystander.envs.intersection.kernels.surroundings`.
        """
        return self._visible

    def observe(self) -> np.ndarray:
        """Vector observation ``(N, C, F)`` float32 in [-1, 1], ``F = 15 + 11 K``.

        Ego features (index: meaning, scale):
            0: speed / ego_max_speed.  1, 2: cos, sin of heading (world frame).
            3, 4: goal point in the ego frame (forward, left) / 100 m.
            5: route distance to the goal / 200 m.
            6: discrete: target speed / ego_max_speed; continuous: last steering / max_steer.
            7: distance to the next stop line / 50 m (1 when none ahead).
            8-10: navigation turn at the next intersection one-hot (right, straight, left).
            11-13: planned turn one-hot (discrete; zeros in continuous mode).
            14: 1 inside an intersection (on a connector / in its box), else 0.
        Then the K nearest other road users by distance, each (zeros when absent):
            0: presence 1.  1, 2: position in the ego frame / 50 m.
            3, 4: velocity relative to the ego, in the ego frame / 20 m/s.
            5, 6: cos, sin of heading relative to the ego.
            7-10: type one-hot (scripted car, pedestrian, cyclist, controlled car).
        """
        K = self.config.n_nearest
        obs = np.empty((self.N, self.C, N_EGO_FEATURES + K * N_OTHER_FEATURES), np.float32)
        self._observe_into(obs, self._all_worlds)
        return obs

    def _observe_into(self, obs: np.ndarray, worlds: np.ndarray) -> None:
        """Write the observation rows of ``worlds`` (int64 indices) into ``obs``."""
        cfg, r = self.config, self.road
        if self.continuous:
            command, scale = self.steer, cfg.max_steer
        else:
            command, scale = self.target_v, cfg.ego_max_speed
        (observation if threaded(len(worlds)) else observation_serial)(
            self.x, self.y, self.cos, self.sin, self.v, self.dest, r.goal, self.route_dist,
            self.ref_seg, self.ref_s, command, self.turn, self.continuous, r.length,
            self._link_to_node, r.succ, r.best_turn, r.nodes, r.stop_offset,
            cfg.ego_max_speed, scale, self._others, worlds, obs,
        )  # fmt: skip

    def occupancy(self) -> np.ndarray:
        """Occupancy grid ``(N, C, 4, G, G)`` float32 around each controlled car, ego frame.

        Cells of ``occupancy_cell`` m, ego at the centre, rows along the ego's left
        (+y), columns along its heading (+x). Channels: 0 road user present (centre in
        the cell), 1-2 its velocity relative to the ego in the ego frame / 20 m/s,
        3 drivable road at the cell centre.
        """
        cfg, C, N = self.config, self.C, self.N
        G, cell = cfg.occupancy_size, cfg.occupancy_cell
        grid = np.zeros((N, C, 4, G, G), dtype=np.float32)
        ex, ey = self.x[:, :C], self.y[:, :C]
        ec, es, ev = self.cos[:, :C], self.sin[:, :C], self.v[:, :C]
        off = (np.arange(G) - (G - 1) / 2) * cell
        fx, ly = np.meshgrid(off, off)  # [row=left, col=forward]
        wx = ex[..., None, None] + ec[..., None, None] * fx - es[..., None, None] * ly
        wy = ey[..., None, None] + es[..., None, None] * fx + ec[..., None, None] * ly
        grid[:, :, 3] = self.road.on_road(wx, wy)
        dx = self.x[:, None, :] - ex[..., None]
        dy = self.y[:, None, :] - ey[..., None]
        lon = ec[..., None] * dx + es[..., None] * dy
        lat = -es[..., None] * dx + ec[..., None] * dy
        col = np.floor(lon / cell + G / 2).astype(np.int64)
        row = np.floor(lat / cell + G / 2).astype(np.int64)
        other = self.alive[:, None, :] & (self._slot[None, None, :] != np.arange(C)[None, :, None])
        ok = other & (col >= 0) & (col < G) & (row >= 0) & (row < G)
        w, c, j = np.nonzero(ok)
        rvx = self.v[w, j] * self.cos[w, j] - ev[w, c] * ec[w, c]
        rvy = self.v[w, j] * self.sin[w, j] - ev[w, c] * es[w, c]
        grid[w, c, 0, row[w, c, j], col[w, c, j]] = 1.0
        grid[w, c, 1, row[w, c, j], col[w, c, j]] = np.clip(
            (ec[w, c] * rvx + es[w, c] * rvy) / 20, -1, 1
        )
        grid[w, c, 2, row[w, c, j], col[w, c, j]] = np.clip(
            (-es[w, c] * rvx + ec[w, c] * rvy) / 20, -1, 1
        )
        return grid

    # ------------------------------------------------------------------ observers
    def observer_view(self, w: int = 0, c: int = 0, visible: np.ndarray | None = None) -> dict:
        """The observers of controlled car ``c`` in world ``w``, sorted by id.

        Returns a dict of numpy arrays (``M`` observers = every alive road user but ``c``):
            ``ids (M,) int64`` stable ids (never reused in an episode), ``types (M,)`` str
            (``"car"``, ``"pedestrian"``, ``"cyclist"``), ``visible (M,) bool`` saw the ego
            this step, ``poses (M, 3)`` observer ``(x, y, heading)`` world frame,
            ``ego_in_frame (M, 2)`` the ego position in each observer's frame (+x ahead,
            +y left), ``distance (M,)`` [m], ``slots (M,)`` simulator slots.
        """
        if visible is None:
            visible = self.last.visible if self.last is not None else self.visibility()
        slots = observer_slots(self.alive[w], self.uid[w], c)
        poses = np.stack([self.x[w, slots], self.y[w, slots], self.h[w, slots]], axis=1)
        dx, dy = self.x[w, c] - poses[:, 0], self.y[w, c] - poses[:, 1]
        cs, sn = np.cos(poses[:, 2]), np.sin(poses[:, 2])
        return {
            "ids": self.uid[w, slots].astype(np.int64),
            "types": OBSERVER_TYPES[self.kind[w, slots]],
            "visible": visible[w, c, slots].astype(bool),
            "poses": poses,
            "ego_in_frame": np.stack([cs * dx + sn * dy, -sn * dx + cs * dy], axis=1),
            "distance": np.hypot(dx, dy),
            "slots": slots,
        }
