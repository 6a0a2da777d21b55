"""Standing still by choice: slow, and not held by the traffic in front.

The ``stand_still_fraction`` of every evaluation (:mod:`bystander.agents.evaluation`,
:mod:`bystander.agents.heldout`) counts the steps of :func:`standing_still`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["STAND_STILL_SPEED", "standing_still"]

STAND_STILL_SPEED = 0.5
"""Speed [m/s] below which a step counts as standing still (``stand_still_fraction``),
unless the traffic holds the ego (:func:`standing_still`)."""


def standing_still(speed: Any, sim: Any | None, fresh: Any = None) -> np.ndarray:
    """Which controlled cars stand still by choice this step.

    A car stands still when its speed is below :data:`STAND_STILL_SPEED` [m/s] and the
    traffic does not hold it (:meth:`bystander.envs.intersection.sim.IntersectionSim.held`:
    no queue right ahead, no stop line it must yield at): waiting in a queue or for
    crossing traffic is not counted.

    Args:
        speed: Speeds ``(S,)`` [m/s] of the controlled cars, world-major (``w * C + c``),
            or one float.
        sim: The env's simulator (``None``: speed alone decides).
        fresh: Optional ``(S,)`` bool: cars whose world was reset after the step (the
            sim now holds the next episode): judged by speed alone.

    Returns:
        ``(S,)`` bool.
    """
    slow = np.atleast_1d(np.asarray(speed, dtype=np.float64)) < STAND_STILL_SPEED
    if sim is None or not slow.any():
        return slow
    held = sim.held().reshape(-1)[: slow.size]
    if fresh is not None:
        held = held & ~np.asarray(fresh, dtype=bool)
    return slow & ~held
