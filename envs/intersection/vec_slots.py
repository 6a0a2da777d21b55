"""Slots of the batched intersection: one per controlled car per world.

:class:`~bystander.envs.intersection.vec_env.IntersectionVecEnv` serves ``N`` worlds of
``C = config.n_controlled`` controlled cars as ``N * C`` slots (SB3 "envs"), slot
``k = w * C + c`` being car ``c`` of world ``w`` (with ``C = 1`` a slot is a world).
These functions turn the simulator's ``(N, C, ...)`` and ``(N, A)`` arrays into per-slot
reports: the contract's :class:`~bystander.envs.contract.EgoBatch` (every slot at once)
and :class:`~bystander.envs.contract.EgoStep` lists (for full info dicts), each car's
observers being every other road user of its world, the other controlled cars included
(typed ``"car"``): each controlled car is an ego and an observer of the others.

A car that has finished while its world goes on (``active`` false) has no observers:
nothing is scored for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bystander.envs.contract import EgoBatch, EgoStep
from bystander.envs.intersection.sim import OBSERVER_TYPES, IntersectionSim, StepResult

__all__ = ["OUTCOMES", "ActiveEvents", "ego_batch", "ego_steps", "outcome_codes", "slots_of"]

_NO_UID = np.iinfo(np.int64).max
_TYPE_NAMES = tuple(str(t) for t in OBSERVER_TYPES)

OUTCOMES = ("timeout", "arrived", "crashed", "offroad", "left_map")
"""How a controlled car's episode ended (``info["episode_outcome"]`` with several cars
per world); codes index this tuple."""


class ActiveEvents:
    """A step's ``(N, C)`` event flags of the cars in play (``active``) only."""

    def __init__(self, out: StepResult, active: np.ndarray) -> None:
        self.crashed = out.crashed & active
        self.arrived = out.arrived & active
        self.offroad = out.offroad & active
        self.left_map = out.left_map & active
        self.terminated = out.terminated & active


def slots_of(worlds: np.ndarray, n_controlled: int) -> np.ndarray:
    """Slot indices ``(len(worlds) * C,)`` of ``worlds``, world-major (``w * C + c``)."""
    worlds = np.asarray(worlds, dtype=np.int64)
    if n_controlled == 1:
        return worlds
    return (worlds[:, None] * n_controlled + np.arange(n_controlled)).ravel()


def outcome_codes(out: StepResult | ActiveEvents) -> np.ndarray:
    """``(N, C)`` int8 index into :data:`OUTCOMES` of this step's events (0 where none)."""
    return np.select([out.arrived, out.crashed, out.left_map, out.offroad], [1, 2, 4, 3], 0).astype(
        np.int8
    )


def _observers(
    sim: IntersectionSim, sel: Any, active: np.ndarray | None
) -> tuple[np.ndarray, int, int]:
    """``(M * C, A)`` bool: the observers of each slot of worlds ``sel`` (alive road
    users but the car itself; none for inactive cars), with ``M`` and ``C``."""
    C = sim.C
    alive = sim.alive[sel]
    M = alive.shape[0]
    if C == 1:  # the common case, on the training hot path
        present = alive.copy()
        present[:, 0] = False  # the ego is not its own observer
        return present, M, C
    present = np.repeat(alive, C, axis=0)
    present[np.arange(M * C), np.tile(np.arange(C), M)] = False  # not its own observer
    if active is not None:
        present &= active.reshape(M * C, 1)
    return present, M, C


def ego_batch(
    sim: IntersectionSim,
    out: StepResult,
    worlds: np.ndarray,
    start: bool,
    context: Mapping[str, Any],
    active: np.ndarray | None = None,
) -> EgoBatch:
    """:class:`EgoBatch` of every slot of ``worlds`` (arrays copied: an auto-reset
    rewrites the simulator's).

    Args:
        sim: The simulator (``N`` worlds, ``C`` controlled cars, ``A`` agent slots).
        out: Its last :class:`StepResult` (for ``visible``).
        worlds: World indices ``(M,)``; the batch's ``worlds`` are their slots.
        start: The states are the first of new episodes.
        context: Shared :attr:`EgoStep.context` (``{"dt": ...}``).
        active: ``(M, C)`` bool, cars in play during the step (None: all).
    """
    sel: Any = slice(None) if len(worlds) == sim.N else worlds
    present, M, C = _observers(sim, sel, active)
    poses = np.stack([sim.x[sel], sim.y[sel], sim.h[sel]], axis=-1)
    if C > 1:
        ids, kinds = np.repeat(sim.uid[sel], C, axis=0), np.repeat(sim.kind[sel], C, axis=0)
        poses = np.repeat(poses, C, axis=0)
    else:
        ids, kinds = sim.uid[sel].copy(), sim.kind[sel].copy()
    states = np.stack([sim.x[sel, :C], sim.y[sel, :C]], axis=-1).reshape(M * C, 2)
    return EgoBatch(
        worlds=slots_of(worlds, C),
        states=states,
        observer_ids=ids,
        present=present,
        observer_types=kinds,
        type_names=_TYPE_NAMES,
        visible=out.visible[sel].reshape(M * C, -1) & present,
        observer_frames=poses,
        frame="rigid2d",
        episode_start=start,
        context=context,
    )


def ego_steps(
    sim: IntersectionSim,
    out: StepResult,
    worlds: np.ndarray,
    start: bool,
    context: Mapping[str, Any],
    active: np.ndarray | None = None,
) -> list[EgoStep]:
    """:class:`EgoStep` of every slot of ``worlds``, identical to the single env's
    (observers sorted by id). Arguments as :func:`ego_batch`."""
    present, M, C = _observers(sim, worlds, active)
    key = np.where(present, np.repeat(sim.uid[worlds], C, axis=0), _NO_UID)
    order = np.argsort(key, axis=1, kind="stable")
    counts = present.sum(axis=1).tolist()
    wsel = np.repeat(worlds, C)[:, None]
    ids = sim.uid[wsel, order]
    types = OBSERVER_TYPES[sim.kind[wsel, order]]
    visible = out.visible[worlds].reshape(M * C, -1)[np.arange(M * C)[:, None], order][..., None]
    poses = np.stack([sim.x[wsel, order], sim.y[wsel, order], sim.h[wsel, order]], axis=-1)
    ego = np.stack([sim.x[worlds, :C], sim.y[worlds, :C]], axis=-1).reshape(M * C, 1, 2)
    # valid by construction (the single env's shapes, which EgoStep validates)
    return [
        EgoStep.trusted(
            states=ego[k],
            observer_ids=ids[k, :m],
            observer_types=types[k, :m],
            visible=visible[k, :m],
            observer_frames=poses[k, :m],
            frame="rigid2d",
            episode_start=start,
            context=context,
        )
        for k, m in enumerate(counts)
    ]
