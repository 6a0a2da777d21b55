"""Compiled (numba) reads of :class:`~bystander.envs.batched_tracker.BatchedTracker`'s rings.

The tracker keeps, per world, its last ``R`` ego states and, per observer slot, whether
they were seen, in rings indexed by the global step (step ``g`` is ring row ``g % R``
in every world). Each step it gathers, for a few thousand views, a window of states
and a mask, and for the predictions due, the states since they were made. As numpy
fancy indexing (``ego[rows, world[:, None]]`` and friends) these gathers cost a few
temporaries each; these kernels loop over the views and write into arrays the caller
passes. They only copy values (no arithmetic), so they equal the numpy gathers bit for
bit.
"""

from __future__ import annotations

from numba import njit

__all__ = ["recent_states", "still_observed", "view_windows"]


@njit(cache=True)
def view_windows(ego, vis, start_t, world, slot, t, states, mask):  # pragma: no cover - jit
    """Each view's window of the ``L = states.shape[1]`` ego states of world ``world[b]``
    up to global step ``t``, oldest first, into ``states (B, L, D)`` and ``mask (B, L)``.

    Steps before the episode's first (``start_t[world[b]]``) are padded with that first
    state and masked; ``mask[b, j]``: the observer of slot ``slot[b]`` saw state ``j``
    (``vis (R, N, A)``).
    """
    ring = ego.shape[0]
    n, length = mask.shape
    d = ego.shape[2]
    for b in range(n):
        w = world[b]
        a = slot[b]
        first = start_t[w]
        for j in range(length):
            g = t - length + 1 + j
            r = (g if g > first else first) % ring
            for k in range(d):
                states[b, j, k] = ego[r, w, k]
            mask[b, j] = vis[r, w, a] and g >= first


@njit(cache=True)
def recent_states(ego, world, t, out):  # pragma: no cover - jit
    """The ego states of world ``world[b]`` at global steps ``t - H + 1 .. t`` (``H =
    out.shape[1]``), oldest first, into ``out (B, H, D)``."""
    ring = ego.shape[0]
    n, horizon, d = out.shape
    for b in range(n):
        w = world[b]
        for j in range(horizon):
            r = (t - horizon + 1 + j) % ring
            for k in range(d):
                out[b, j, k] = ego[r, w, k]


@njit(cache=True)
def still_observed(
    episode, present, uid, world, slot, made_episode, made_uid, keep
):  # pragma: no cover - jit
    """``keep[b]``: world ``world[b]`` is still in episode ``made_episode[b]`` and slot
    ``slot[b]`` still holds observer ``made_uid[b]``; returns how many are kept."""
    kept = 0
    for b in range(world.shape[0]):
        w = world[b]
        a = slot[b]
        ok = episode[w] == made_episode[b] and present[w, a] and uid[w, a] == made_uid[b]
        keep[b] = ok
        kept += ok
    return kept
