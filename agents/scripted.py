"""Scripted drivers: the baselines every trained ego is compared with.

A trained ego that is only as predictable as a scripted driver going slower has not
shown predictability (``docs/DESIGN.md``, rules of evidence). These drivers act on the
intersection's vector observation with the discrete meta-actions, through SB3's
``predict(obs, deterministic=...) -> (actions, None)``, so they run wherever a trained
policy does (:func:`~bystander.agents.evaluation.evaluate_policy`,
:func:`~bystander.agents.heldout.evaluate_batched`, ``bystander evaluate --scripted``).

- :class:`ConstantSpeedDriver` ``speed:<m/s>``: holds a target speed (the nearest the
  SLOWER / FASTER steps reach) and follows the navigation turn (the shortest route),
  with the env's car following (it brakes for the road user ahead).
- :class:`StopDriver` ``stop``: brakes to a standstill and stays there.
- :class:`RouteHabitDriver` ``habit:<turn>[:<m/s>]``: holds a target speed (default
  9 m/s) like ``speed:`` but takes the same turn (``right``, ``straight`` or ``left``)
  at every intersection, whatever the navigation says: a route habit.
- ``route:<habit>[:<m/s>]`` (default 9 m/s), the goal-reaching route habits of the
  route-habit study: ``shortest`` (the navigation's turn: ``speed:``),
  ``straight-first`` and ``no-left`` (:class:`RoutePreferenceDriver`) and
  ``always-right`` (``habit:right``, which on a grid circles a block and rarely
  arrives: the founding analogy taken literally).

In a ``target_speed`` env (absolute speed levels, turns by the navigation) ``speed:``
and ``stop`` ask for the level nearest their speed; the drivers that choose turns are
refused.

Observation features read (see ``IntersectionSim.observe``): 0 speed, 6 target speed
(both / ``ego_max_speed``), 8-10 navigation turn one-hot (right, straight, left), 11-13
planned turn one-hot; :class:`RoutePreferenceDriver` also reads 3 (goal point ahead of
the ego / 100 m), 7 (distance to the next stop line / 50 m) and 14 (in an intersection).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bystander.envs.intersection.config import IntersectionConfig
from bystander.envs.intersection.sim import META_ACTIONS, META_TO_FACTORED
from bystander.envs.intersection.views import nearest_level

__all__ = [
    "HABIT_TURNS",
    "ROUTE_HABITS",
    "SCRIPTED_SPEEDS",
    "ConstantSpeedDriver",
    "RouteHabitDriver",
    "RoutePreferenceDriver",
    "StopDriver",
    "scripted_driver",
]

SCRIPTED_SPEEDS = (3.0, 6.0, 9.0, 12.0)
"""Target speeds [m/s] of the speed-only scripted frontier."""

_SLOWER, _KEEP, _FASTER = (META_ACTIONS.index(a) for a in ("SLOWER", "KEEP", "FASTER"))
# navigation / planned turn one-hots are ordered (right, straight, left)
_TURN_ACTIONS = np.array(
    [META_ACTIONS.index(a) for a in ("TURN_RIGHT", "GO_STRAIGHT", "TURN_LEFT")]
)


class _Driver:
    """``predict`` over one observation ``(F,)`` or a batch ``(N, F)``.

    ``factored``: the env has ``action_type="factored"``; the meta-actions are sent as
    their factored twins (:data:`~bystander.envs.intersection.sim.META_TO_FACTORED`), so
    a scripted driver drives the same way in both spaces.
    """

    factored = False
    levels: np.ndarray | None = None
    """``target_speed`` envs: their ``speed_levels`` [m/s]; the driver then asks for the
    level nearest :attr:`cruise` at every step (turns follow the navigation)."""
    cruise: float | None = None
    """The speed [m/s] this driver holds, when it only holds a speed and follows the
    navigation (the drivers a ``target_speed`` env can run)."""

    def __init__(self, ego_max_speed: float = 12.0) -> None:
        if not ego_max_speed > 0:
            raise ValueError(f"ego_max_speed: expected > 0 m/s, got {ego_max_speed!r}")
        self.ego_max_speed = float(ego_max_speed)

    def actions(self, obs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(
        self, obs: Any, state: Any = None, episode_start: Any = None, deterministic: bool = True
    ) -> tuple[np.ndarray, None]:
        arr = np.asarray(obs, dtype=np.float64)
        if arr.ndim not in (1, 2) or arr.shape[-1] < 14:
            raise ValueError(
                f"obs: expected the vector observation (F,) or (N, F) with F >= 14, "
                f"got shape {arr.shape}"
            )
        if self.levels is not None and self.cruise is not None:
            acts = nearest_level(
                self.levels, np.full(len(arr.reshape(-1, arr.shape[-1])), self.cruise)
            )
            return (acts if arr.ndim == 2 else acts[0]), None
        acts = self.actions(arr.reshape(-1, arr.shape[-1]))
        if self.factored:
            acts = META_TO_FACTORED[acts]
        return (acts if arr.ndim == 2 else acts[0]), None


class ConstantSpeedDriver(_Driver):
    """Hold ``speed`` m/s and follow the navigation turn.

    Args:
        speed: Target speed [m/s], in (0, ego_max_speed].
        ego_max_speed: The env's ``ego_max_speed`` [m/s] (observation scale).
        speed_step: The env's ``speed_step`` [m/s] (what SLOWER / FASTER change).
    """

    follows_navigation = True  # the subclasses below choose their own turns

    def __init__(self, speed: float, ego_max_speed: float = 12.0, speed_step: float = 3.0) -> None:
        super().__init__(ego_max_speed)
        if not 0 < speed <= self.ego_max_speed:
            raise ValueError(f"speed: expected in (0, {self.ego_max_speed}] m/s, got {speed!r}")
        self.speed = float(speed)
        self.half_step = 0.5 * float(speed_step)
        self.cruise = self.speed if self.follows_navigation else None

    def actions(self, obs: np.ndarray) -> np.ndarray:
        target = obs[:, 6] * self.ego_max_speed
        nav = obs[:, 8:11].argmax(axis=1)
        planned = obs[:, 11:14]
        follow = np.where(
            (planned[np.arange(len(obs)), nav] > 0.5) | (obs[:, 8:11].sum(axis=1) == 0),
            _KEEP,
            _TURN_ACTIONS[nav],
        )  # plan the navigation turn once (none ahead: nothing to plan), then keep speed
        return np.where(
            target < self.speed - self.half_step,
            _FASTER,
            np.where(target > self.speed + self.half_step, _SLOWER, follow),
        ).astype(np.int64)


class StopDriver(_Driver):
    """Brake to a standstill and stay there."""

    cruise = 0.0

    def actions(self, obs: np.ndarray) -> np.ndarray:
        return np.full(len(obs), _SLOWER, dtype=np.int64)


HABIT_TURNS = ("right", "straight", "left")
"""Turns a :class:`RouteHabitDriver` can make a habit of (the env's turn order)."""


class RouteHabitDriver(ConstantSpeedDriver):
    """Hold ``speed`` m/s and take turn ``habit`` at every intersection.

    Args:
        habit: One of :data:`HABIT_TURNS`.
        speed: Target speed [m/s], in (0, ego_max_speed].
        ego_max_speed: The env's ``ego_max_speed`` [m/s] (observation scale).
        speed_step: The env's ``speed_step`` [m/s].
    """

    follows_navigation = False

    def __init__(
        self, habit: str, speed: float = 9.0, ego_max_speed: float = 12.0, speed_step: float = 3.0
    ) -> None:
        super().__init__(speed, ego_max_speed, speed_step)
        if habit not in HABIT_TURNS:
            raise ValueError(f"habit: expected one of {HABIT_TURNS}, got {habit!r}")
        self.habit = habit
        self.turn = HABIT_TURNS.index(habit)

    def actions(self, obs: np.ndarray) -> np.ndarray:
        target = obs[:, 6] * self.ego_max_speed
        planned = obs[:, 11:14]
        follow = np.where(
            (planned[:, self.turn] > 0.5) | (obs[:, 8:11].sum(axis=1) == 0),
            _KEEP,
            _TURN_ACTIONS[self.turn],
        )  # plan the habitual turn whenever another one is planned (none ahead: keep)
        return np.where(
            target < self.speed - self.half_step,
            _FASTER,
            np.where(target > self.speed + self.half_step, _SLOWER, follow),
        ).astype(np.int64)


ROUTE_HABITS = ("shortest", "straight-first", "no-left", "always-right")
"""Goal-reaching route habits of ``route:<habit>[:<m/s>]`` (module doc)."""


class RoutePreferenceDriver(ConstantSpeedDriver):
    """Hold ``speed`` m/s and prefer going straight over the navigation's turn.

    On a grid, a route that goes straight while the goal still lies at least
    ``ahead_blocks`` blocks beyond the next intersection and then takes the
    navigation's turn is as short as the navigation's own (Manhattan distance): the
    preference picks one of the equally short routes by habit. ``straight-first``
    postpones every turn that way (it turns as late as possible); ``no-left`` postpones
    only left turns (right turns as the navigation says; a left turn is taken only
    when the goal no longer lies ahead, so it avoids the left turns it can).

    Args:
        preference: ``"straight-first"`` or ``"no-left"``.
        speed: Target speed [m/s], in (0, ego_max_speed].
        env_config: The env config (``block_length``, ``lane_width``,
            ``crosswalk_width`` [m] place the intersection centre behind the stop line;
            ``ego_max_speed``, ``speed_step`` [m/s] as :class:`ConstantSpeedDriver`).
        ahead_blocks: How far the goal must lie beyond the next intersection's centre
            to go straight [blocks].
    """

    follows_navigation = False

    def __init__(
        self,
        preference: str,
        speed: float = 9.0,
        env_config: Mapping[str, Any] | None = None,
        ahead_blocks: float = 0.75,
    ) -> None:
        cfg = env_config or {}
        super().__init__(
            speed, float(cfg.get("ego_max_speed", 12.0)), float(cfg.get("speed_step", 3.0))
        )
        if preference not in ("straight-first", "no-left"):
            raise ValueError(
                f"preference: expected 'straight-first' or 'no-left', got {preference!r}"
            )
        self.preference = preference
        lane, walk = float(cfg.get("lane_width", 3.5)), float(cfg.get("crosswalk_width", 3.0))
        self.stop_offset = lane + 1.0 + walk + 1.0  # stop line -> intersection centre [m]
        self.min_ahead = ahead_blocks * float(cfg.get("block_length", 80.0))

    def actions(self, obs: np.ndarray) -> np.ndarray:
        target = obs[:, 6] * self.ego_max_speed
        nav = obs[:, 8:11].argmax(axis=1)
        # the goal's distance ahead of the next intersection's centre [m] (features 3:
        # goal forward / 100 m, clipped; 7: next stop line / 50 m)
        beyond = obs[:, 3] * 100.0 - (obs[:, 7] * 50.0 + self.stop_offset)
        postpone = nav != 1 if self.preference == "straight-first" else nav == 2
        turn = np.where(postpone & (beyond >= self.min_ahead), 1, nav)
        planned = obs[:, 11:14]
        follow = np.where(
            (planned[np.arange(len(obs)), turn] > 0.5)
            | (obs[:, 8:11].sum(axis=1) == 0)
            | (obs[:, 14] > 0.5),
            _KEEP,
            _TURN_ACTIONS[turn],
        )  # (re)plan the preferred turn on the approach; inside an intersection: keep
        return np.where(
            target < self.speed - self.half_step,
            _FASTER,
            np.where(target > self.speed + self.half_step, _SLOWER, follow),
        ).astype(np.int64)


def _route_driver(
    arg: str, env_config: Mapping[str, Any], max_speed: float, step: float
) -> _Driver | None:
    """``route:<habit>[:<m/s>]`` (default 9 m/s), or None when ``arg`` is not one."""
    habit, _, speed_arg = arg.partition(":")
    try:
        speed = float(speed_arg) if speed_arg else 9.0
    except ValueError:
        return None
    if habit not in ROUTE_HABITS or speed != speed:
        return None
    if habit == "shortest":
        return ConstantSpeedDriver(speed, max_speed, step)
    if habit == "always-right":
        return RouteHabitDriver("right", speed, max_speed, step)
    return RoutePreferenceDriver(habit, speed, env_config)


def scripted_driver(spec: str, env_config: Mapping[str, Any] | None = None) -> _Driver:
    """A driver from its name: ``speed:<m/s>``, ``habit:<turn>[:<m/s>]``,
    ``route:<habit>[:<m/s>]`` (:data:`ROUTE_HABITS`) or ``stop``, for an env built with
    ``env_config`` (its ``ego_max_speed`` and ``speed_step`` scale the observation and
    the meta-actions; defaults: the intersection's).

    Raises:
        ValueError: an unknown spec, naming the accepted ones.
    """
    env_config = env_config or {}
    driver = _scripted_driver(spec, env_config)
    action_type = env_config.get("action_type", "discrete")
    if action_type not in ("discrete", "factored", "target_speed"):
        raise ValueError(
            f"env_config.action_type: expected 'discrete', 'factored' or 'target_speed' for "
            f"scripted drivers (they act with meta-actions or speed levels), got {action_type!r}"
        )
    driver.factored = action_type == "factored"
    if action_type == "target_speed":
        if driver.cruise is None:
            raise ValueError(
                f"scripted: {spec!r} chooses turns, but a target_speed env follows the "
                "navigation; expected 'speed:<m/s>' (the nearest of env.config.speed_levels) "
                "or 'stop'"
            )
        levels = IntersectionConfig.from_dict(env_config).speed_levels  # validated
        driver.levels = np.asarray(levels, np.float64)
    return driver


def _scripted_driver(spec: str, env_config: Mapping[str, Any]) -> _Driver:
    max_speed = float(env_config.get("ego_max_speed", 12.0))
    step = float(env_config.get("speed_step", 3.0))
    name, _, arg = str(spec).partition(":")
    if name == "stop" and not arg:
        return StopDriver(max_speed)
    if name == "route":
        driver = _route_driver(arg, env_config, max_speed, step)
        if driver is not None:
            return driver
    if name == "habit":
        turn, _, speed_arg = arg.partition(":")
        try:
            speed = float(speed_arg) if speed_arg else 9.0
        except ValueError:
            speed = float("nan")
        if turn in HABIT_TURNS and speed == speed:
            return RouteHabitDriver(turn, speed, max_speed, step)
    if name == "speed":
        try:
            speed = float(arg)
        except ValueError:
            speed = float("nan")
        if speed == speed:
            return ConstantSpeedDriver(speed, max_speed, step)
    raise ValueError(
        f"scripted: expected 'speed:<m/s>' (e.g. speed:6), 'habit:<turn>[:<m/s>]' "
        f"(turn in {HABIT_TURNS}, e.g. habit:right:9), 'route:<habit>[:<m/s>]' (habit in "
        f"{ROUTE_HABITS}, e.g. route:no-left) or 'stop', got {spec!r}"
    )
