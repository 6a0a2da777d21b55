"""Compiled (numba) per-step work on the controlled cars: commands, events, costs and
rewards, route features, observation, report.

One small kernel each for what the simulator did before as a dozen numpy operations on
``(N, C)`` arrays: at ``N = 1`` each numpy call costs about a microsecond whatever the
size, so a step of one world spent more time in them than in the pairwise kernels of
:mod:`bystander.envs.intersection.kernels`. The kernels loop over worlds and write into
arrays the caller passes, so no array is boxed on return. :func:`outcomes`,
:func:`route_features` and :func:`observation` run one world per thread (``prange``)
with serial twins, as the kernels of :mod:`~bystander.envs.intersection.kernels` (the
others are a few flops per world: serial). Each reproduces the numpy arithmetic it replaces bit for bit
(same operations in the same order; ``min`` / ``max`` equal numpy's ``minimum`` /
``maximum`` on finite values, and the clipping keeps NaN as ``np.clip`` does).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from bystander.envs.intersection.kernels import serial_twin

__all__ = [
    "ego_commands",
    "merge_idm",
    "observation",
    "observation_serial",
    "observer_report",
    "outcomes",
    "outcomes_serial",
    "route_features",
    "route_features_serial",
]

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


@njit(cache=True, parallel=True)
def observation(
    x, y, c, s_, v, dest, goal, route_dist, ref_seg, ref_s, last_command, turn, continuous,
    seg_len, link_to_node, succ, best_turn, nodes, box_half, ego_max_speed, command_scale,
    others, worlds, out,
):  # fmt: skip  # pragma: no cover - jit
    """Write the vector observation ``out (N, C, 15 + 11 K)`` float32 (see ``observe``)
    of the worlds ``worlds`` (int64 indices; the other rows are left as they are).

    The 15 ego features of each controlled car, then its ``others (N, C, K, 11)``
    neighbour features, each computed in float64, clipped to [-1, 1] and rounded to
    float32. ``x, y, c, s_, v`` are ``(N, A)`` (the first ``C`` slots are read), ``turn``
    too; ``last_command (N, C)`` is the target speed (discrete) or the steering
    (``(N, A)``, continuous), divided by ``command_scale``.
    """
    n_ctrl = dest.shape[1]
    k_nearest, n_feat = others.shape[2], others.shape[3]
    scratch = np.empty((len(worlds), 15))  # one row per world: worlds run one per thread
    for q in prange(len(worlds)):
        w = worlds[q]
        f = scratch[q]
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


@njit(cache=True, parallel=True)
def outcomes(
    alive, x, y, c, s_, dest, goal, separation, left_map, done, route_dist, prev_dist,
    continuous, bounds, roads_h, roads_v, arrive_r2, near_scale, collision_cost,
    near_miss_cost, weights, crashed, arrived, offroad, lm, cost, rewards, terminated,
):  # fmt: skip  # pragma: no cover - jit
    """The step's events, costs and rewards of the controlled cars (``(N, C)`` slots).

    ``done`` is the flag before this step (``active = ~done``); ``separation`` the box gap
    [m] to the nearest road user, ``left_map (N, A)`` from :func:`advance`,
    ``weights`` the 5 reward weights (progress, arrival, collision, offroad, time).
    Crash: gap < 0 (controlled car still alive). Arrival: within ``sqrt(arrive_r2)`` m
    of the goal point, heading within 60 degrees of the goal direction, not crashed.
    Off-road (``continuous``: outside every road strip or the map; or left the map),
    unless arrived or crashed. Cost: ``collision_cost`` on a crash, else ``near_miss_cost
    * clip(1 - gap * near_scale, 0, 1)``. Writes every entry of ``crashed, arrived,
    offroad, lm`` (left the map), ``cost``, ``terminated`` ``(N, C)`` and ``rewards (N, C,
    5)``, cost and rewards times ``active``
    (the same arithmetic as the numpy code before it, bit for bit). Controlled cars whose
    episode ends here leave the world (``done`` set, ``alive`` cleared, in place).
    """
    n_worlds, n_ctrl = done.shape
    xmin, ymin, xmax, ymax = bounds[0], bounds[1], bounds[2], bounds[3]
    for w in prange(n_worlds):  # worlds are independent: one per thread
        for e in range(n_ctrl):
            sep = separation[w, e]
            cr = sep < 0.0
            near = min(max(1.0 - sep * near_scale, 0.0), 1.0)
            ce = collision_cost if cr else near_miss_cost * near
            xe, ye = x[w, e], y[w, e]
            off = False
            if continuous:
                on = False
                if xe >= xmin and xe <= xmax and ye >= ymin and ye <= ymax:
                    for k in range(roads_h.shape[0]):
                        if abs(ye - roads_h[k, 0]) <= roads_h[k, 1]:
                            on = True
                    for k in range(roads_v.shape[0]):
                        if abs(xe - roads_v[k, 0]) <= roads_v[k, 1]:
                            on = True
                off = not on
            d = dest[w, e]
            gx, gy = xe - goal[d, 0], ye - goal[d, 1]
            aligned = c[w, e] * goal[d, 3] + s_[w, e] * goal[d, 4] > 0.5
            ar = gx * gx + gy * gy < arrive_r2 and aligned and alive[w, e] and not cr
            cr = cr and alive[w, e]
            lme = left_map[w, e]
            off = (off or lme) and not ar and not cr
            act = 0.0 if done[w, e] else 1.0
            crashed[w, e], arrived[w, e], offroad[w, e], lm[w, e] = cr, ar, off, lme
            terminated[w, e] = cr or ar or off or lme
            cost[w, e] = ce * act
            gain = min(max(prev_dist[w, e] - route_dist[w, e], -5.0), 5.0)
            rw = rewards[w, e]
            rw[0] = weights[0] * gain * act
            rw[1] = weights[1] * (1.0 if ar else 0.0) * act
            rw[2] = weights[2] * (1.0 if cr else 0.0) * act
            rw[3] = weights[3] * (1.0 if off else 0.0) * act
            rw[4] = weights[4] * act
            if terminated[w, e] and act:
                done[w, e] = True
                alive[w, e] = False


@njit(cache=True, parallel=True)
def route_features(
    seg, pos, x, y, c, s_, dest, prev_dist, continuous, lane_xy, lane_cs, lane_seg, lane_s,
    dist_to_goal, ref_seg, ref_s, lane_offset, route,
):  # fmt: skip  # pragma: no cover - jit
    """Reference lane position and route distance [m] of each controlled car ``(N, C)``.

    Lane followers: their own segment and arc length. Free movers (``continuous``): the
    lane point minimising ``d^2 + 25 (1 - cos(heading difference))`` over ``lane_xy (P,
    2)`` (first minimum), with ``lane_offset`` the distance to it. Route distance: the
    segment's distance to the goal minus the arc length, the previous value where the
    goal is unreachable from there. Writes every entry of ``ref_seg`` (int64), ``ref_s``,
    ``lane_offset`` (0 for lane followers) and ``route`` (the route distance), ``(N, C)``.
    """
    n_worlds, n_ctrl = dest.shape
    for w in prange(n_worlds):  # worlds are independent: one per thread
        for e in range(n_ctrl):
            if continuous:
                px, py, ce, se = x[w, e], y[w, e], c[w, e], s_[w, e]
                best, bk, bd2 = np.inf, 0, 0.0
                for k in range(lane_xy.shape[0]):
                    dx, dy = lane_xy[k, 0] - px, lane_xy[k, 1] - py
                    d2 = dx * dx + dy * dy
                    val = d2 + 25.0 * (1.0 - (ce * lane_cs[k, 0] + se * lane_cs[k, 1]))
                    if val < best:
                        best, bk, bd2 = val, k, d2
                rs, rss = lane_seg[bk], lane_s[bk]
                lane_offset[w, e] = np.sqrt(bd2)
            else:
                rs, rss = max(seg[w, e], 0), pos[w, e]
                lane_offset[w, e] = 0.0
            ref_seg[w, e], ref_s[w, e] = rs, rss
            dist = dist_to_goal[dest[w, e], rs] - rss
            route[w, e] = dist if np.isfinite(dist) else prev_dist[w, e]


observation_serial = serial_twin(observation)
outcomes_serial = serial_twin(outcomes)
route_features_serial = serial_twin(route_features)
