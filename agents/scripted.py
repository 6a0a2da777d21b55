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

Observation features read (see ``IntersectionSim.observe``): 0 speed, 6 target speed
(both / ``ego_max_speed``), 8-10 navigation turn one-hot (right, straight, left), 11-13
planned turn one-hot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bystander.envs.intersection.sim import META_ACTIONS

__all__ = [
    "HABIT_TURNS",
    "SCRIPTED_SPEEDS",
    "ConstantSpeedDriver",
    "RouteHabitDriver",
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
    """``predict`` over one observation ``(F,)`` or a batch ``(N, F)``."""

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
        acts = self.actions(arr.reshape(-1, arr.shape[-1]))
        return (acts if arr.ndim == 2 else acts[0]), None


class ConstantSpeedDriver(_Driver):
    """Hold ``speed`` m/s and follow the navigation turn.

    Args:
        speed: Target speed [m/s], in (0, ego_max_speed].
        ego_max_speed: The env's ``ego_max_speed`` [m/s] (observation scale).
        speed_step: The env's ``speed_step`` [m/s] (what SLOWER / FASTER change).
    """

    def __init__(self, speed: float, ego_max_speed: float = 12.0, speed_step: float = 3.0) -> None:
        super().__init__(ego_max_speed)
        if not 0 < speed <= self.ego_max_speed:
            raise ValueError(f"speed: expected in (0, {self.ego_max_speed}] m/s, got {speed!r}")
        self.speed = float(speed)
        self.half_step = 0.5 * float(speed_step)

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


def scripted_driver(spec: str, env_config: Mapping[str, Any] | None = None) -> _Driver:
    """A driver from its name: ``speed:<m/s>``, ``habit:<turn>[:<m/s>]`` or ``stop``, for an env built with
    ``env_config`` (its ``ego_max_speed`` and ``speed_step`` scale the observation and
    the meta-actions; defaults: the intersection's).

    Raises:
        ValueError: an unknown spec, naming the accepted ones.
    """
    env_config = env_config or {}
    max_speed = float(env_config.get("ego_max_speed", 12.0))
    step = float(env_config.get("speed_step", 3.0))
    name, _, arg = str(spec).partition(":")
    if name == "stop" and not arg:
        return StopDriver(max_speed)
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
        f"(turn in {HABIT_TURNS}, e.g. habit:right:9) or 'stop', got {spec!r}"
    )
