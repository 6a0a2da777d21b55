"""Configuration of the intersection environment (units: metres, seconds, radians).

:class:`IntersectionConfig` is a validated dataclass. Build it from a plain dict with
:meth:`IntersectionConfig.from_dict` (unknown keys and bad values raise ``ValueError``
naming the field and the expected value) or update one with :meth:`replace`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

from bystander.dataconfig import is_int

__all__ = ["ACTION_TYPES", "IntersectionConfig", "OBSERVATION_TYPES"]

ACTION_TYPES = ("discrete", "continuous", "factored", "target_speed")
OBSERVATION_TYPES = ("vector", "occupancy", "dict")


MAX_GRID = 12
"""Most intersections per side of the grid (memory grows with the network)."""

# Bounds of the numeric fields. The upper bounds keep memory, time and float arithmetic
# sane: a 1e300 radius or reward overflows, dt above a second breaks the kinematics,
# 1e5 slots or a 60x60 grid ask for gigabytes.
# real fields > 0: name -> largest value
_POSITIVE: dict[str, float] = {
    "lane_width": 10.0, "block_length": 1000.0, "arm_length": 1000.0, "crosswalk_width": 10.0,
    "dt": 1.0, "ego_max_speed": 100.0, "speed_step": 100.0, "max_accel": 100.0,
    "max_decel": 100.0, "max_steer": math.pi / 2, "wheelbase": 20.0, "arrive_radius": 100.0,
    "occupancy_cell": 100.0, "speed_limit": 100.0, "cyclist_speed": 100.0,
    "pedestrian_speed": 100.0, "stuck_time": 1e5, "fov_car": 2 * math.pi, "range_car": 1000.0,
    "fov_pedestrian": 2 * math.pi, "range_pedestrian": 1000.0, "fov_cyclist": 2 * math.pi,
    "range_cyclist": 1000.0, "near_miss_distance": 100.0,
}  # fmt: skip
# real fields >= 0: name -> largest value
_NONNEGATIVE: dict[str, float] = {
    "car_rate": 100.0, "cyclist_rate": 100.0, "pedestrian_rate": 100.0, "collision_cost": 1e6,
    "near_miss_cost": 1e6, "reward_progress": 1e6, "reward_arrival": 1e6,
    "arrive_distance": 1000.0,
}  # fmt: skip
# real fields <= 0: name -> smallest value
_NONPOSITIVE: dict[str, float] = {
    "reward_collision": -1e6, "reward_offroad": -1e6, "reward_time": -1e6,
}  # fmt: skip
# int fields: name -> (smallest, largest)
_INTS: dict[str, tuple[int, int]] = {
    "max_cycles": (1, 1_000_000), "n_controlled": (1, 64), "n_nearest": (1, 256),
    "occupancy_size": (2, 256), "max_agents": (2, 512), "n_cars": (0, 512),
    "n_pedestrians": (0, 512), "n_cyclists": (0, 512), "screen_size": (64, 4096),
    "render_fps": (1, 10_000),
}  # fmt: skip


def _is_real(v: Any) -> bool:
    """A finite int or float, numpy scalars included (not a bool)."""
    return (
        isinstance(v, (int, float, np.integer, np.floating))
        and not isinstance(v, (bool, np.bool_))
        and math.isfinite(v)
    )


def _check_reals(
    config: IntersectionConfig, bounds: dict[str, float], ok: Any, expected: str
) -> None:
    for name, bound in bounds.items():
        v = getattr(config, name)
        if not _is_real(v) or not ok(v, bound):
            raise ValueError(
                f"config.{name}: expected a finite number {expected(bound)}, got {v!r}"
            )
        object.__setattr__(config, name, float(v))


@dataclass(frozen=True)
class IntersectionConfig:
    """All knobs of the intersection world. Defaults give a learnable single intersection.

    Road network
        grid: ``(rows, cols)`` intersections; ``(1, 1)`` is one 4-way intersection.
        lane_width: Width of one lane [m]; every road has one lane each way.
        block_length: Distance between centres of adjacent intersections [m].
        arm_length: Length of the roads from a boundary intersection to the map edge [m].
        crosswalk_width: Width of the zebra crossings [m].
    Time
        dt: Simulation (and policy) step [s].
        max_cycles: Episode length limit in steps (truncation).
    Ego / controlled cars
        n_controlled: Number of controlled cars (PettingZoo agents); the Gymnasium view needs 1.
        action_type: ``"discrete"`` meta-actions on lane following (6: a step changes the
            target speed *or* plans a turn, so turn actions also keep speed),
            ``"factored"`` (12 = speed x turn intent: SLOWER / KEEP / FASTER times NONE /
            TURN_LEFT / GO_STRAIGHT / TURN_RIGHT, both chosen every step; action
            ``4 * speed + turn``, :data:`~bystander.envs.intersection.sim.FACTORED_ACTIONS`)
            ``"target_speed"`` (one action per entry of ``speed_levels``: it sets the
            target speed to that level; turns follow the navigation, so the route is
            always the shortest one) or ``"continuous"`` (acceleration, steering) on a
            kinematic bicycle model.
        ego_max_speed: Top speed of controlled cars [m/s].
        speed_step: Target-speed change of the SLOWER / FASTER meta-actions [m/s].
        speed_levels: The target speeds [m/s] of the ``target_speed`` actions (action ``i``
            asks for ``speed_levels[i]``): 1-64 increasing values in ``[0,
            ego_max_speed]``; read only in that mode. Absolute levels make a cruise speed a
            choice the policy repeats, not a state it reaches by pressing SLOWER or FASTER
            and then must keep (README "Constraints that hold").
        start_target_speeds: Target speeds [m/s] a controlled car starts an episode with:
            one value (default 6) for every episode, or several, of which each car draws
            one uniformly at every reset (after the rest of the episode's draws, so the
            traffic of a seed is the same whichever speed is drawn). Exploring starts:
            ``[0, 3, 6, 9, 12]`` shows a learner every cruise mode without the speed
            changes that would reach it (``env.train_overrides``, README "Constraints
            that hold"). Each in ``[0, ego_max_speed]``, at most 64 values; a value
            listed twice is drawn twice as often.
        ego_car_following: Discrete mode: controlled cars brake for the road user ahead
            (IDM interaction term, an adaptive cruise control) below their target speed.
            They never yield at intersections: when to go is the policy's decision.
        max_accel / max_decel: Acceleration and braking limits [m/s^2].
        max_steer: Steering angle limit [rad]. wheelbase: [m].
        arrive_distance: Goal point distance past the last intersection on the exit road [m].
        arrive_radius: Arrival when the ego is within this distance of the goal point [m].
    Observation
        observation: ``"vector"`` (default), ``"occupancy"`` or ``"dict"`` (both).
        n_nearest: K nearest road users in the vector observation.
        occupancy_size / occupancy_cell: Grid cells per side / cell size [m].
    Traffic
        max_agents: Slots per world (controlled + scripted); extra spawns wait for a slot.
        n_cars / n_pedestrians / n_cyclists: Road users placed at reset.
        car_rate / cyclist_rate: Spawn rate per entry road [1/s]; pedestrian_rate: per
            crosswalk start [1/s].
        speed_limit: Scripted cars' desired speed [m/s] (each car draws 80-110 %).
        cyclist_speed / pedestrian_speed: Desired speeds [m/s].
        stuck_time: Scripted road users standing still this long are removed [s].
    Observers (full field-of-view angle [rad], range [m])
        fov_car, range_car, fov_pedestrian, range_pedestrian, fov_cyclist, range_cyclist.
        occlusion_by_vehicles: Vehicles (not pedestrians) also block the line of sight.
    Rewards and costs
        reward_progress: Per metre of route distance gained. reward_arrival: once.
        reward_collision: once (negative). reward_offroad: once when leaving the road or
        the map off-route (negative). reward_time: per step (negative).
        collision_cost: Cost of a crash step. near_miss_distance [m] / near_miss_cost: a
        gap below the distance costs ``near_miss_cost * (1 - gap / distance)``.
    Rendering
        screen_size: Side of the square frame [px]. render_fps: Frames per second in "human".
    """

    grid: tuple[int, int] = (1, 1)
    lane_width: float = 3.5
    block_length: float = 80.0
    arm_length: float = 60.0
    crosswalk_width: float = 3.0
    dt: float = 0.1
    max_cycles: int = 250
    n_controlled: int = 1
    action_type: str = "discrete"
    ego_max_speed: float = 12.0
    speed_step: float = 3.0
    speed_levels: tuple[float, ...] = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0)
    start_target_speeds: tuple[float, ...] = (6.0,)
    ego_car_following: bool = True
    max_accel: float = 3.0
    max_decel: float = 6.0
    max_steer: float = 0.6
    wheelbase: float = 2.7
    arrive_distance: float = 20.0
    arrive_radius: float = 2.5
    observation: str = "vector"
    n_nearest: int = 8
    occupancy_size: int = 16
    occupancy_cell: float = 2.0
    max_agents: int = 24
    n_cars: int = 5
    n_pedestrians: int = 4
    n_cyclists: int = 1
    car_rate: float = 0.05
    cyclist_rate: float = 0.01
    pedestrian_rate: float = 0.02
    speed_limit: float = 10.0
    cyclist_speed: float = 5.0
    pedestrian_speed: float = 1.4
    stuck_time: float = 30.0
    fov_car: float = math.radians(120.0)
    range_car: float = 50.0
    fov_pedestrian: float = math.radians(180.0)
    range_pedestrian: float = 30.0
    fov_cyclist: float = math.radians(150.0)
    range_cyclist: float = 40.0
    occlusion_by_vehicles: bool = False
    reward_progress: float = 0.02
    reward_arrival: float = 2.0
    reward_collision: float = -2.0
    reward_offroad: float = -1.0
    reward_time: float = -0.01
    collision_cost: float = 1.0
    near_miss_distance: float = 1.0
    near_miss_cost: float = 0.5
    screen_size: int = 600
    render_fps: int = 10

    def _check_speeds(self, name: str, increasing: bool) -> None:
        """Validate a tuple field of 1-64 speeds in ``[0, ego_max_speed]`` (increasing
        ones when asked) and store it as floats."""
        v = getattr(self, name)
        if (
            not isinstance(v, (tuple, list))
            or not 1 <= len(v) <= 64
            or not all(_is_real(x) and 0 <= x <= self.ego_max_speed for x in v)
            or (increasing and any(b <= a for a, b in pairwise(v)))
        ):
            kind = "increasing speeds" if increasing else "speeds"
            raise ValueError(
                f"config.{name}: expected 1-64 {kind} in [0, ego_max_speed = "
                f"{self.ego_max_speed:g}] m/s, got {v!r}"
            )
        object.__setattr__(self, name, tuple(float(x) for x in v))

    def __post_init__(self) -> None:
        grid = self.grid
        if (
            not isinstance(grid, (tuple, list))
            or len(grid) != 2
            or not all(is_int(g) and 1 <= g <= MAX_GRID for g in grid)
        ):
            raise ValueError(
                f"config.grid: expected (rows, cols) of ints in [1, {MAX_GRID}], got {grid!r}"
            )
        object.__setattr__(self, "grid", (int(grid[0]), int(grid[1])))
        _check_reals(self, _POSITIVE, lambda v, hi: 0 < v <= hi, lambda hi: f"> 0 and <= {hi:g}")
        _check_reals(
            self, _NONNEGATIVE, lambda v, hi: 0 <= v <= hi, lambda hi: f">= 0 and <= {hi:g}"
        )
        _check_reals(
            self, _NONPOSITIVE, lambda v, lo: lo <= v <= 0, lambda lo: f"<= 0 and >= {lo:g}"
        )
        for name, (lo, hi) in _INTS.items():
            v = getattr(self, name)
            if not is_int(v) or not lo <= v <= hi:
                raise ValueError(f"config.{name}: expected an int >= {lo} and <= {hi}, got {v!r}")
            object.__setattr__(self, name, int(v))
        if self.action_type not in ACTION_TYPES:
            raise ValueError(
                f"config.action_type: expected one of {ACTION_TYPES}, got {self.action_type!r}"
            )
        if self.observation not in OBSERVATION_TYPES:
            raise ValueError(
                f"config.observation: expected one of {OBSERVATION_TYPES}, got {self.observation!r}"
            )
        for name in ("ego_car_following", "occlusion_by_vehicles"):
            v = getattr(self, name)
            if not isinstance(v, (bool, np.bool_)):
                raise ValueError(f"config.{name}: expected a bool, got {v!r}")
            object.__setattr__(self, name, bool(v))
        self._check_speeds("start_target_speeds", increasing=False)
        self._check_speeds("speed_levels", increasing=True)
        if self.max_agents < self.n_controlled + 1:
            raise ValueError(
                f"config.max_agents: expected >= n_controlled + 1 = {self.n_controlled + 1}, "
                f"got {self.max_agents}"
            )
        n_entries = 2 * (self.grid[0] + self.grid[1])
        if self.n_controlled > n_entries:
            raise ValueError(
                f"config.n_controlled: expected <= number of entry roads {n_entries}, got {self.n_controlled}"
            )
        inner = 2 * (self.lane_width + self.crosswalk_width + 2.0)
        if self.block_length < inner + 10.0:
            raise ValueError(
                f"config.block_length: expected >= {inner + 10.0:.1f} m, got {self.block_length}"
            )
        if self.arm_length < self.arrive_distance + 10.0:
            raise ValueError(
                f"config.arm_length: expected >= arrive_distance + 10 = {self.arrive_distance + 10.0} m, "
                f"got {self.arm_length}"
            )

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, config: Mapping[str, Any] | IntersectionConfig | None) -> IntersectionConfig:
        """Validate a dict of overrides; unknown keys raise ``ValueError``."""
        if config is None:
            return cls()
        if isinstance(config, IntersectionConfig):
            return config
        if not isinstance(config, Mapping):
            raise TypeError(
                f"config: expected a dict or IntersectionConfig, got {type(config).__name__}"
            )
        names = cls.field_names()
        unknown = sorted((k for k in config if k not in names), key=repr)
        if unknown:
            raise ValueError(f"config: unknown key(s) {unknown}; expected keys among {names}")
        kw = dict(config)
        if "grid" in kw and isinstance(kw["grid"], list):
            kw["grid"] = tuple(kw["grid"])
        return cls(**kw)

    def replace(self, overrides: Mapping[str, Any] | None) -> IntersectionConfig:
        """A copy with ``overrides`` applied (validated like :meth:`from_dict`)."""
        if not overrides:
            return self
        base = {n: getattr(self, n) for n in self.field_names()}
        unknown = sorted((k for k in overrides if k not in base), key=repr)
        if unknown:
            raise ValueError(f"config: unknown key(s) {unknown}; expected keys among {list(base)}")
        base.update(overrides)
        return IntersectionConfig.from_dict(base)

    def to_dict(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in self.field_names()}
