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
from typing import Any

__all__ = ["ACTION_TYPES", "IntersectionConfig", "OBSERVATION_TYPES"]

ACTION_TYPES = ("discrete", "continuous")
OBSERVATION_TYPES = ("vector", "occupancy", "dict")


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
        action_type: ``"discrete"`` meta-actions on lane following or ``"continuous"``
            (acceleration, steering) on a kinematic bicycle model.
        ego_max_speed: Top speed of controlled cars [m/s].
        speed_step: Target-speed change of the SLOWER / FASTER meta-actions [m/s].
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

    def __post_init__(self) -> None:
        grid = self.grid
        if (
            not isinstance(grid, (tuple, list))
            or len(grid) != 2
            or not all(isinstance(g, int) and not isinstance(g, bool) and g >= 1 for g in grid)
        ):
            raise ValueError(f"config.grid: expected (rows, cols) of ints >= 1, got {grid!r}")
        object.__setattr__(self, "grid", (int(grid[0]), int(grid[1])))
        positive = [
            "lane_width", "block_length", "arm_length", "crosswalk_width", "dt", "ego_max_speed",
            "speed_step", "max_accel", "max_decel", "max_steer", "wheelbase", "arrive_radius",
            "occupancy_cell", "speed_limit", "cyclist_speed", "pedestrian_speed", "stuck_time",
            "fov_car", "range_car", "fov_pedestrian", "range_pedestrian", "fov_cyclist",
            "range_cyclist", "near_miss_distance",
        ]  # fmt: skip
        for name in positive:
            v = getattr(self, name)
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float))
                or not math.isfinite(v)
                or v <= 0
            ):
                raise ValueError(f"config.{name}: expected a finite number > 0, got {v!r}")
            object.__setattr__(self, name, float(v))
        nonneg = [
            "car_rate", "cyclist_rate", "pedestrian_rate", "collision_cost", "near_miss_cost",
            "reward_progress", "reward_arrival", "arrive_distance",
        ]  # fmt: skip
        for name in nonneg:
            v = getattr(self, name)
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float))
                or not math.isfinite(v)
                or v < 0
            ):
                raise ValueError(f"config.{name}: expected a finite number >= 0, got {v!r}")
            object.__setattr__(self, name, float(v))
        for name in ("reward_collision", "reward_offroad", "reward_time"):
            v = getattr(self, name)
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float))
                or not math.isfinite(v)
                or v > 0
            ):
                raise ValueError(f"config.{name}: expected a finite number <= 0, got {v!r}")
            object.__setattr__(self, name, float(v))
        ints = {
            "max_cycles": 1, "n_controlled": 1, "n_nearest": 1, "occupancy_size": 2,
            "max_agents": 2, "n_cars": 0, "n_pedestrians": 0, "n_cyclists": 0,
            "screen_size": 64, "render_fps": 1,
        }  # fmt: skip
        for name, lo in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"config.{name}: expected an int >= {lo}, got {v!r}")
        for name in ("fov_car", "fov_pedestrian", "fov_cyclist"):
            if getattr(self, name) > 2 * math.pi:
                raise ValueError(f"config.{name}: expected a full angle in (0, 2*pi] rad")
        if self.action_type not in ACTION_TYPES:
            raise ValueError(
                f"config.action_type: expected one of {ACTION_TYPES}, got {self.action_type!r}"
            )
        if self.observation not in OBSERVATION_TYPES:
            raise ValueError(
                f"config.observation: expected one of {OBSERVATION_TYPES}, got {self.observation!r}"
            )
        if not isinstance(self.ego_car_following, bool):
            raise ValueError(
                f"config.ego_car_following: expected a bool, got {self.ego_car_following!r}"
            )
        if not isinstance(self.occlusion_by_vehicles, bool):
            raise ValueError(
                f"config.occlusion_by_vehicles: expected a bool, got {self.occlusion_by_vehicles!r}"
            )
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
        unknown = sorted(k for k in config if k not in names)
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
        unknown = sorted(k for k in overrides if k not in base)
        if unknown:
            raise ValueError(f"config: unknown key(s) {unknown}; expected keys among {list(base)}")
        base.update(overrides)
        return IntersectionConfig.from_dict(base)

    def to_dict(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in self.field_names()}
