"""Compiled (numba) per-step work on the controlled cars: commands, observation, report.

One small kernel each for what the simulator did before as a dozen numpy operations on
``(N, C)`` arrays: at ``N = 1`` each numpy call costs about a microsecond whatever the
size, so a step of one world spent more time in them than in the pairwise kernels of
:mod:`bystander.envs.intersection.kernels`. The kernels loop over worlds (serially:
the work per world is a few dozen flops) and write into arrays the caller passes, so no
array is boxed on return. Each reproduces the numpy arithmetic it replaces bit for bit
(same operations in the same order; ``min`` / ``max`` equal numpy's ``minimum`` /
``maximum`` on finite values, and the clipping keeps NaN as ``np.clip`` does).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["ego_commands", "merge_idm", "observation", "observer_report"]

CONTROLLED = 0


@njit(cache=True)
def ego_commands(
    actions, meta, continuous, active, v, target_v, turn, turn_chosen, steer, speed_delta,
    turn_table, max_accel, max_decel, max_steer, ego_max_speed, accel,
):  # fmt: skip  # pragma: no cover - jit
    """The controlled cars' requested accelerations, written to ``accel[:, :C]`` [m/s^2];
    their commands applied in place.

    Continuous ``actions (N, C, 2)`` float64 in [-1, 1] give ``a0 * (max_accel if a0 > 0
    else max_decel)`` and ``steer = a1 * max_steer`` [rad]. Discrete ``meta (N, C)``
    (int64 action indices) change ``target_v`` [m/s] by ``speed_delta[a]`` (kept in ``[0,
    ego_max_speed]``), set ``turn`` to ``turn_table[a]`` when that is ``>= 0`` and the car
    is ``active`` (marking ``turn_chosen``), and ask for ``2 (target_v - v)`` clipped to
    ``[-max_decel, max_accel]``. The unused one of ``actions`` / ``meta`` may be any
    array of its type.
    """
    n_worlds, n_ctrl = target_v.shape
    for w in range(n_worlds):
        for e in range(n_ctrl):
            if continuous:
                a0 = actions[w, e, 0]
                accel[w, e] = a0 * (max_accel if a0 > 0 else max_decel)
                steer[w, e] = actions[w, e, 1] * max_steer
            else:
                a = meta[w, e]
                tv = min(max(target_v[w, e] + speed_delta[a], 0.0), ego_max_speed)
                target_v[w, e] = tv
                new_turn = turn_table[a]
                if new_turn >= 0 and active[w, e]:
                    turn[w, e] = new_turn
                    turn_chosen[w, e] = True
                accel[w, e] = min(max(2.0 * (tv - v[w, e]), -max_decel), max_accel)


@njit(cache=True)
def merge_idm(kind, seg, idm, n_ctrl, follow, max_brake, accel):  # pragma: no cover - jit
    """Complete ``accel (N, A)`` [m/s^2] (in place) from the controlled cars' requests in
    its first ``n_ctrl`` columns (:func:`ego_commands`): scripted road users on a lane
    (``kind != 0``, ``seg >= 0``) take the IDM acceleration ``idm (N, A)``, free ones
    coast (0). With ``follow`` the controlled cars' requests are then bounded by ``idm``
    (its interaction term: adaptive cruise) and by ``-max_brake``.
    """
    n_worlds, n_agents = accel.shape
    for w in range(n_worlds):
        for i in range(n_agents):
            if kind[w, i] != CONTROLLED and seg[w, i] >= 0:
                accel[w, i] = idm[w, i]
            elif i >= n_ctrl:
                accel[w, i] = 0.0
        if follow:
            for e in range(n_ctrl):
                accel[w, e] = max(min(accel[w, e], idm[w, e]), -max_brake)


@njit(cache=True)
def _clip1(val):  # pragma: no cover - jit
    """``val`` clipped to [-1, 1] as ``np.clip`` does (NaN stays NaN, -0.0 stays -0.0)."""
    if val < -1.0:
        return -1.0
    if val > 1.0:
        return 1.0
    return val


@njit(cache=True)
def observation(
    x, y, c, s_, v, dest, goal, route_dist, ref_seg, ref_s, last_command, turn, continuous,
    seg_len, link_to_node, succ, best_turn, nodes, box_half, ego_max_speed, command_scale,
    others, out,
):  # fmt: skip  # pragma: no cover - jit
    """Write the vector observation ``out (N, C, 15 + 11 K)`` float32 (see ``observe``).

    The 15 ego features of each controlled car, then its ``others (N, C, K, 11)``
    neighbour features, each computed in float64, clipped to [-1, 1] and rounded to
    float32. ``x, y, c, s_, v`` are ``(N, A)`` (the first ``C`` slots are read), ``turn``
    too; ``last_command (N, C)`` is the target speed (discrete) or the steering
    (``(N, A)``, continuous), divided by ``command_scale``.
    """
    n_worlds, n_ctrl = dest.shape
    k_nearest, n_feat = others.shape[2], others.shape[3]
    f = np.empty(15)
    for w in range(n_worlds):
        for e in range(n_ctrl):
            f[:] = 0.0
            ec, es = c[w, e], s_[w, e]
            f[0] = v[w, e] / ego_max_speed
            f[1], f[2] = ec, es
            d = dest[w, e]
            gx, gy = goal[d, 0] - x[w, e], goal[d, 1] - y[w, e]
            f[3] = (ec * gx + es * gy) * 0.01
            f[4] = (ec * gy - es * gx) * 0.01
            f[5] = route_dist[w, e] / 200.0
            f[6] = last_command[w, e] / command_scale
            rs = ref_seg[w, e]
            if link_to_node[rs]:
                f[7] = (seg_len[rs] - ref_s[w, e]) * 0.02
                nxt = rs
            else:
                f[7] = 1.0
                nxt = succ[rs, 0]
            if nxt >= 0:
                nav = best_turn[d, nxt]
                if nav >= 0:
                    f[8 + nav] = 1.0
            if not continuous:
                f[11 + turn[w, e]] = 1.0
            for n in range(nodes.shape[0]):
                if (
                    abs(x[w, e] - nodes[n, 0]) <= box_half
                    and abs(y[w, e] - nodes[n, 1]) <= box_half
                ):
                    f[14] = 1.0
                    break
            o = out[w, e]
            for k in range(15):
                o[k] = np.float32(_clip1(f[k]))
            for n in range(k_nearest):
                base = 15 + n * n_feat
                for k in range(n_feat):
                    o[base + k] = np.float32(_clip1(others[w, e, n, k]))


@njit(cache=True)
def observer_report(
    alive, uid, kind, x, y, h, visible, w, ego, ids, kinds, seen, frames
):  # pragma: no cover - jit
    """The observers of controlled car ``ego`` in world ``w``: every alive road user but
    ``ego``, sorted by id; returns their number ``M``.

    Writes rows ``0 .. M-1`` of ``ids (A,)`` int64, ``kinds (A,)`` int64, ``seen (A, 1)``
    bool (``visible (N, C, A)`` of the step) and ``frames (A, 3)`` (``x, y, h`` [m, m,
    rad]) from the ``(N, A)`` state arrays.
    """
    m = 0
    for j in range(alive.shape[1]):
        if alive[w, j] and j != ego:
            k = m  # insertion by id (ids are unique)
            while k > 0 and ids[k - 1] > uid[w, j]:
                ids[k], kinds[k], seen[k, 0] = ids[k - 1], kinds[k - 1], seen[k - 1, 0]
                frames[k, 0], frames[k, 1], frames[k, 2] = (
                    frames[k - 1, 0], frames[k - 1, 1], frames[k - 1, 2]
                )  # fmt: skip
                k -= 1
            ids[k], kinds[k], seen[k, 0] = uid[w, j], kind[w, j], visible[w, ego, j]
            frames[k, 0], frames[k, 1], frames[k, 2] = x[w, j], y[w, j], h[w, j]
            m += 1
    return m
