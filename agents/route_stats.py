"""Route figures of driving episodes, from the vector observation: turns and detours.

:class:`RouteLog` follows ``N`` egos step by step (one slot each, as the evaluation
loops play them) and gives each finished episode's row:

- ``driven_m``: metres driven (``speed * dt`` summed over the steps in play);
- ``route_overhead``: ``driven_m / progress_m`` for a successful episode (the route
  length driven over the shortest route's, since the route metres gained from the
  start to the goal are the shortest route's length less the arrival radius; NaN
  otherwise; about 1 for the shortest route at any speed, more for detours);
- ``crossings``: intersections crossed (entered and left);
- ``turns_<approach>_<turn>``: crossings counted by the approach heading
  (:data:`APPROACHES`: ``E``, ``N``, ``W``, ``S``, the world heading on entering the
  intersection, rounded to the nearest) and the turn taken (:data:`TURNS`: the
  heading change from entering to leaving, right below -45 deg, left above +45 deg).

:func:`turn_entropy_bits` pools these counts over episodes into the conditional
entropy of the turn given the approach heading [bits]: 0 for an ego that always makes
the same turn from a given heading (a habit), up to log2(3) = 1.58 bits. The
approach is the heading only (the observation names no intersection), so the figure
pools the intersections of a grid.

Observation features read (``IntersectionSim.observe``): 1, 2 cos / sin of the world
heading, 14 in an intersection (1) or not (0).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

__all__ = ["APPROACHES", "TURNS", "RouteLog", "turn_columns", "turn_entropy_bits"]

APPROACHES = ("E", "N", "W", "S")
"""Approach headings: world heading 0, 90, 180, 270 deg (x east, y north)."""
TURNS = ("right", "straight", "left")
"""Turns, in the env's order."""
_TURN_LIMIT = math.radians(45.0)


def turn_columns() -> list[str]:
    """The row keys of the turn counts, ``turns_<approach>_<turn>`` (12)."""
    return [f"turns_{a}_{t}" for a in APPROACHES for t in TURNS]


class RouteLog:
    """Route figures of ``n`` slots (module doc).

    Args:
        n: Slots (egos played at once).
        dt: Seconds per step [s].
    """

    def __init__(self, n: int, dt: float) -> None:
        self.dt = float(dt)
        self.driven = np.zeros(n)
        self.inside = np.zeros(n, bool)
        self.entry = np.zeros(n)  # heading on entering the current intersection [rad]
        self.counts = np.zeros((n, len(APPROACHES), len(TURNS)), np.int64)

    def reset(self, slots: np.ndarray | slice | int = slice(None)) -> None:
        """Forget the figures of ``slots`` (new episodes); call with the reset obs."""
        self.driven[slots] = 0.0
        self.inside[slots] = False
        self.counts[slots] = 0

    def start(self, obs: np.ndarray, slots: np.ndarray | slice | int = slice(None)) -> None:
        """Reset ``slots`` and read their first observation ``(n, F)`` (or ``(F,)``)."""
        self.reset(slots)
        o = np.atleast_2d(np.asarray(obs, dtype=np.float64))
        if o.shape[-1] < 15:
            return
        self.inside[slots] = o[slots, 14] > 0.5
        self.entry[slots] = np.arctan2(o[slots, 2], o[slots, 1])

    def step(
        self,
        obs: np.ndarray,
        speed: np.ndarray | float,
        playing: np.ndarray | bool,
        ended: np.ndarray | None = None,
    ) -> None:
        """One step of every slot.

        Args:
            obs: The observation after the step, ``(n, F)`` (or ``(F,)`` for one slot).
            speed: The speed after the step ``(n,)`` [m/s].
            playing: Slots in play during the step (the others are left alone).
            ended: Slots whose episode ended with the step (VecEnv auto-reset: their
                ``obs`` is the next episode's, so only their metres count).
        """
        o = np.atleast_2d(np.asarray(obs, dtype=np.float64))
        play = np.broadcast_to(np.asarray(playing, bool), self.inside.shape)
        self.driven += np.where(play, np.asarray(speed, dtype=np.float64) * self.dt, 0.0)
        if o.shape[-1] < 15:
            return  # not the intersection's vector observation: no turns
        if ended is not None:
            play = play & ~np.asarray(ended, bool)
        heading = np.arctan2(o[:, 2], o[:, 1])
        inside = o[:, 14] > 0.5
        enter = play & inside & ~self.inside
        leave = play & ~inside & self.inside
        self.entry = np.where(enter, heading, self.entry)
        for i in np.flatnonzero(leave):
            change = (heading[i] - self.entry[i] + math.pi) % (2 * math.pi) - math.pi
            turn = 0 if change < -_TURN_LIMIT else (2 if change > _TURN_LIMIT else 1)
            approach = int(round(self.entry[i] / (math.pi / 2))) % 4
            self.counts[i, approach, turn] += 1
        self.inside = np.where(play, inside, self.inside)

    def row(self, slot: int, success: bool, progress_m: float | None) -> dict[str, float]:
        """The route figures of ``slot``'s episode (module doc)."""
        driven = float(self.driven[slot])
        ok = success and progress_m is not None and progress_m > 0
        out = {
            "driven_m": driven,
            "route_overhead": driven / float(progress_m) if ok else math.nan,
            "crossings": float(self.counts[slot].sum()),
        }
        out.update(
            zip(turn_columns(), self.counts[slot].ravel().astype(float).tolist(), strict=True)
        )
        return out


def turn_entropy_bits(rows: Iterable[Mapping[str, float]]) -> float:
    """Entropy of the turn given the approach heading [bits], pooled over ``rows``
    (episode rows with ``turns_<approach>_<turn>`` counts); NaN without a crossing.

    ``H(T | A) = sum_a p(a) H(T | A = a)`` with the empirical frequencies (a plug-in
    estimate: biased low when an approach has few crossings).
    """
    cols = turn_columns()
    counts = np.zeros(len(cols))
    for r in rows:
        counts += [float(r.get(c, 0.0)) if math.isfinite(float(r.get(c, 0.0))) else 0.0
                   for c in cols]  # fmt: skip
    table = counts.reshape(len(APPROACHES), len(TURNS))
    total = table.sum()
    if total <= 0:
        return math.nan
    h = 0.0
    for n_a in table:
        s = n_a.sum()
        if s > 0:
            p = n_a[n_a > 0] / s
            h += s / total * float(-(p * np.log2(p)).sum())
    return h
