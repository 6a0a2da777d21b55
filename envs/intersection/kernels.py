"""Compiled (numba) inner loops of the simulator: pairwise work per world.

The car-following / yielding rule looks at every pair of road users in a world; as numpy
it is dozens of ``(N, A, A)`` temporaries per step, as a loop it is a few microseconds
per world. :func:`idm_accel` is the one implementation of that rule (see
:meth:`bystander.envs.intersection.sim.IntersectionSim._idm` for the model); it loops over
worlds, so it serves one env and a batched VecEnv alike. Compiled on first use and cached
on disk (``cache=True``).

Threads: the heavy kernels of the step and the reset (:func:`idm_accel`,
:func:`advance`, :func:`spawn`, :func:`surroundings`, :func:`reset_worlds`, and the
controlled cars' outcomes, route features and observation in
:mod:`~bystander.envs.intersection.ego_kernels`; the commands, the IDM merge and the
random draws, a few flops per world, stay serial) run one world per thread
(``prange``); each has a serial twin (``*_serial``, the same code compiled
without the thread pool) that the simulator calls below :data:`PARALLEL_MIN_WORLDS`
worlds (:func:`threaded`). A world's computation never reads another world's state and
every world draws from its own random streams, so results are bit-identical for any
thread count (``numba.set_num_threads``; ``NUMBA_NUM_THREADS``). The threading layer is
TBB where it loads and else numba's ``workqueue`` (numba's ``forksafe`` choice), unless
``NUMBA_THREADING_LAYER`` says otherwise.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
import types

import numba
import numpy as np
from numba import njit, prange

from bystander.envs.intersection.pcg import pcg64_bounded, pcg64_double, pcg64_next64


def _preload_tbb() -> bool:
    """Load the ``tbb`` wheel's ``libtbb.so.12`` (in ``<prefix>/lib``, outside the loader's
    path in a virtual environment, numba issue 6108) so that numba's TBB layer finds it.
    Returns whether it is loaded."""
    for path in sorted(glob.glob(os.path.join(sys.prefix, "lib", "libtbb.so.12*"))):
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            return True
        except OSError:
            continue
    return False


if "NUMBA_THREADING_LAYER" not in os.environ:
    # Unless the user chose a layer: numba's "forksafe" choice, which on Linux is TBB
    # when it loads (the `tbb` dependency) and else the workqueue. Both are fork-safe
    # (GNU OpenMP, numba's default pick, can abort a forked child: Gymnasium's async
    # vector env) and neither spin-waits the way GNU OpenMP's barrier did on a loaded
    # 2-core machine (2 threads 3x slower than 1). Measured at N = 1024, 2 threads
    # (experiments/benchmarks/README.md): TBB 602k simulator / 257k training-env
    # world-steps/s, the workqueue 373k / 186k; with one core busy 364k / 209k against
    # 339k / 189k. The workqueue is not thread-safe: step one simulator per process from
    # one Python thread at a time.
    _preload_tbb()
    numba.config.THREADING_LAYER = "forksafe"

__all__ = [
    "CONTROLLED",
    "PEDESTRIAN",
    "STANDING",
    "advance",
    "advance_serial",
    "box_gap",
    "PARALLEL_MIN_WORLDS",
    "idm_accel",
    "idm_accel_serial",
    "lane_poses",
    "observer_slots",
    "pairwise_gaps",
    "reset_worlds",
    "reset_worlds_serial",
    "spawn",
    "spawn_serial",
    "splitmix_uniforms",
    "surroundings",
    "surroundings_serial",
    "serial_twin",
    "threaded",
]

PARALLEL_MIN_WORLDS = 256
"""Calls over fewer worlds run the serial twin: a thread-pool launch costs tens of
microseconds (50 us measured with the workqueue layer), more than it saves on a small
batch; and on a loaded machine a parallel region waits for a descheduled thread. So a
one-world env never starts the pool, nor does the default training stack (128 worlds)."""

PEDESTRIAN = 2
CONTROLLED = 0
STANDING = 0.5  # [m/s] below this a vehicle is standing: walkers step around it


@njit(cache=True, parallel=True)
def idm_accel(
    alive, kind, x, y, c, s_, v, pos, seg, turn, v0, length, width, free_box,
    seg_len, link_to_node, is_connector, succ, conflict, crosses, cross_s, speed_limit, node,
    lookahead, a_max_k, s0_k, t_k, inv2sqrt_k,
    yield_zone, turn_brake_zone, max_brake, ped_approach, ped_leave, ped_stop_radius,
    ped_clearance, follow_controlled,
):  # fmt: skip
    """IDM acceleration ``(N, A)`` [m/s^2] of every scripted road user.

    With ``follow_controlled``, lane-following controlled cars get the IDM *interaction*
    term only, ``a_max (1 - (s* / gap)^2)`` (``inf`` with no leader): an adaptive-cruise
    bound the caller combines with the car's own speed command. They never yield.

    Args (``(N, A)`` arrays unless said): ``alive``, ``kind``, position ``x, y`` [m], heading
    ``c, s_`` (cos, sin), speed ``v`` [m/s], arc length ``pos`` [m] on segment ``seg``,
    planned ``turn``, desired speed ``v0`` [m/s], ``length, width`` [m], ``free_box``
    intersection a freely driven car is inside (``-1``: none); the road tables of
    :class:`~bystander.envs.intersection.road.RoadNetwork`; per-kind IDM parameters; the
    rule's distances [m]. Entries of controlled, dead or free road users are 0.
    """
    n_worlds, n_agents = alive.shape
    out = np.zeros((n_worlds, n_agents))
    inf = np.inf
    # scratch rows, one per world, allocated once (an allocation per world cost more)
    leads, all_gaps = np.empty((n_worlds, n_agents), np.int64), np.empty((n_worlds, n_agents))
    speeds, lives = np.empty((n_worlds, n_agents)), np.empty((n_worlds, n_agents), np.int64)
    for w in prange(n_worlds):  # worlds are independent: one per thread
        lead, gaps, lead_speed = leads[w], all_gaps[w], speeds[w]
        live = lives[w]  # the alive slots in order (the loops over others skip the dead)
        n_live = 0
        for j in range(n_agents):
            if alive[w, j]:
                live[n_live] = j
                n_live += 1
        # pass 1: leaders. Leader: nearest road user ahead in the corridor along the
        # heading, or ahead on the same segment (curves defeat the corridor).
        for i in range(n_agents):
            lead[i] = -1
            gaps[i] = inf
            lead_speed[i] = 0.0
            ki = kind[w, i]
            si = seg[w, i]
            if not alive[w, i] or si < 0 or (ki == CONTROLLED and not follow_controlled):
                continue
            xi, yi, ci, sni = x[w, i], y[w, i], c[w, i], s_[w, i]
            hli, hwi = 0.5 * length[w, i], 0.5 * width[w, i]
            look = lookahead[ki]
            g = inf
            vl = 0.0
            best = -1
            for q in range(n_live):
                j = live[q]
                if j == i:
                    continue
                kj = kind[w, j]
                if ki == PEDESTRIAN and (kj == PEDESTRIAN or v[w, j] < STANDING):
                    continue  # walkers pass each other and step around standing vehicles
                dx, dy = x[w, j] - xi, y[w, j] - yi
                lon = ci * dx + sni * dy
                ahead = lon > 0.0 and lon < look
                same_seg = ki != PEDESTRIAN and seg[w, j] == si
                if not ahead and not same_seg:
                    continue  # neither test can pick j: skip the rest of its geometry
                lat = ci * dy - sni * dx
                dot = ci * c[w, j] + sni * s_[w, j]
                cd = abs(dot)
                sd = abs(sni * c[w, j] - ci * s_[w, j])
                hlj, hwj = 0.5 * length[w, j], 0.5 * width[w, j]
                if ahead and abs(lat) < hwi + sd * hlj + cd * hwj + 0.3:
                    gap = lon - hli - (cd * hlj + sd * hwj)
                    if gap < g:
                        g, vl, best = gap, v[w, j] * dot, j
                if same_seg:
                    ds = pos[w, j] - pos[w, i]
                    if ds > 0.0:
                        gap = ds - hli - hlj
                        if gap < g:
                            g, vl, best = gap, v[w, j] * dot, j
            lead[i], gaps[i], lead_speed[i] = best, g, vl
        # two road users that are each other's leader (crossing paths, both standing)
        # would wait forever: the one in the higher slot goes first
        for i in range(n_agents):
            j = lead[i]
            if j > i and lead[j] == i:
                gaps[j], lead_speed[j] = inf, 0.0

        # pass 2: accelerations
        for i in range(n_agents):
            ki = kind[w, i]
            si = seg[w, i]
            if not alive[w, i] or si < 0 or (ki == CONTROLLED and not follow_controlled):
                continue
            xi, yi, ci, sni, vi = x[w, i], y[w, i], c[w, i], s_[w, i], v[w, i]
            hli = 0.5 * length[w, i]
            g, vl = gaps[i], lead_speed[i]

            if ki == CONTROLLED:
                if g < inf:
                    s_star = s0_k[ki] + max(0.0, vi * t_k[ki] + vi * (vi - vl) * inv2sqrt_k[ki])
                    inter = s_star / max(g, 0.1)
                    out[w, i] = a_max_k[ki] * (1.0 - inter * inter)
                else:
                    out[w, i] = inf
                continue

            # yield before an intersection and slow down for the turn
            desired = min(v0[w, i], speed_limit[si])
            if link_to_node[si]:
                dstop = seg_len[si] - pos[w, i]
                if dstop < yield_zone:
                    plan = succ[si, turn[w, i]]
                    if dstop < turn_brake_zone:
                        desired = min(desired, speed_limit[plan])
                    blocked = False
                    for q in range(n_live):
                        j = live[q]
                        if j == i or blocked:
                            continue
                        sj = seg[w, j]
                        if sj < 0:
                            if free_box[w, j] >= 0 and free_box[w, j] == node[plan]:
                                blocked = True  # a freely driven car inside this intersection
                            continue
                        if is_connector[sj]:
                            blocked = conflict[plan, sj]
                        elif link_to_node[sj]:
                            dj = seg_len[sj] - pos[w, j]
                            if dj < yield_zone and (dj < dstop or (dj == dstop and j < i)):
                                blocked = conflict[plan, succ[sj, turn[w, j]]]
                        if kind[w, j] == PEDESTRIAN and pos[w, j] >= 0.5 and crosses[plan, sj]:
                            rel = pos[w, j] - cross_s[plan, sj]
                            if rel > -ped_approach and rel < ped_leave:
                                blocked = True
                    committed = (dstop - hli) < vi * vi / 12.0  # cannot stop at 6 m/s^2
                    if blocked and not committed and ki != PEDESTRIAN:
                        g_stop = dstop - hli - 1.0
                        if g_stop < g:
                            g, vl = g_stop, 0.0

            # walkers wait at the curb while a vehicle moves close, and stop on the
            # crosswalk while a moving vehicle is right in front of them
            if ki == PEDESTRIAN:
                hold = False
                for q in range(n_live):
                    j = live[q]
                    if kind[w, j] == PEDESTRIAN or v[w, j] <= 1.0:
                        continue
                    dx, dy = x[w, j] - xi, y[w, j] - yi
                    d2 = dx * dx + dy * dy
                    if pos[w, i] < 0.5 and d2 < ped_clearance * ped_clearance:
                        hold = True
                    if d2 < ped_stop_radius * ped_stop_radius and ci * dx + sni * dy > -1.0:
                        hold = True
                if hold:
                    g, vl = 0.0, 0.0

            a_max = a_max_k[ki]
            s_star = s0_k[ki] + max(0.0, vi * t_k[ki] + vi * (vi - vl) * inv2sqrt_k[ki])
            inter = s_star / max(g, 0.1) if g < inf else 0.0
            vr = vi / max(desired, 0.1)
            vr *= vr
            acc = a_max * (1.0 - vr * vr - inter * inter)
            out[w, i] = min(max(acc, -max_brake), a_max)
    return out


@njit(cache=True)
def lane_poses(alive, kind, seg, pos, x, y, h, c, s_, points, heading, ds, lateral_offset):
    """Write the pose of every alive lane follower (``seg >= 0``) from its arc length.

    Position interpolated on the segment polyline ``points (S, K, 4)`` resampled every
    ``ds`` m, heading (and its cos / sin) of the point just behind, then shifted right by
    the kind's ``lateral_offset`` [m]. Free road users (``seg < 0``) keep their pose.
    """
    for w in range(alive.shape[0]):
        _world_lane_poses(w, alive, kind, seg, pos, x, y, h, c, s_, points, heading, ds,
                          lateral_offset)  # fmt: skip


@njit(cache=True)
def _world_lane_poses(
    w, alive, kind, seg, pos, x, y, h, c, s_, points, heading, ds, lateral_offset
):
    """:func:`lane_poses` of world ``w``."""
    k_max = points.shape[1] - 2
    for i in range(alive.shape[1]):
        sg = seg[w, i]
        if not alive[w, i] or sg < 0:
            continue
        f = pos[w, i] / ds
        k = min(int(f), k_max)
        frac = f - k
        p0x, p0y = points[sg, k, 0], points[sg, k, 1]
        cs, sn = points[sg, k, 2], points[sg, k, 3]
        off = lateral_offset[kind[w, i]]
        x[w, i] = p0x + (points[sg, k + 1, 0] - p0x) * frac + off * sn
        y[w, i] = p0y + (points[sg, k + 1, 1] - p0y) * frac - off * cs
        h[w, i] = heading[sg, k]
        c[w, i] = cs
        s_[w, i] = sn


@njit(cache=True, parallel=True)
def advance(
    alive, kind, seg, pos, v, x, y, h, c, s_, turn, turn_chosen, steer, accel, dest,
    points, heading, seg_len, succ, link_to_node, is_connector, is_crosswalk, best_turn,
    max_speed, lateral_offset, u, dt, wheelbase, ds, n_controlled, ped_continue,
):  # fmt: skip
    """Integrate one step of ``dt`` s in place; returns ``left_map (N, A)`` bool.

    Speeds: ``v += accel * dt`` clipped to ``[0, max_speed[kind]]``. Free road users
    (``seg < 0``) move on a kinematic bicycle model (``steer`` [rad], ``wheelbase`` [m]).
    Lane followers advance their arc length and pass to the next segment at the end of
    one: after a link, the planned ``turn``; after a crosswalk, the next crosswalk with
    probability ``ped_continue`` (``u[..., 0]``), else the walk ends; a road user with no
    next segment leaves the map (``alive`` cleared, ``left_map`` set). Entering a link
    that ends at an intersection sets the next turn: random (``u[..., 1]``) for scripted
    road users, the navigation's ``best_turn`` for controlled cars unless they chose one
    (``turn_chosen``), which entering a connector consumes.
    """
    n_worlds, n_agents = alive.shape
    left_map = np.zeros((n_worlds, n_agents), dtype=np.bool_)
    for w in prange(n_worlds):  # worlds are independent: one per thread
        for i in range(n_agents):
            if not alive[w, i]:
                continue
            vi = min(max(v[w, i] + accel[w, i] * dt, 0.0), max_speed[kind[w, i]])
            v[w, i] = vi
            sg = seg[w, i]
            if sg < 0:
                hn = h[w, i] + vi / wheelbase * np.tan(steer[w, i]) * dt
                x[w, i] += vi * c[w, i] * dt
                y[w, i] += vi * s_[w, i] * dt
                hn = (hn + np.pi) % (2 * np.pi) - np.pi
                h[w, i] = hn
                c[w, i] = np.cos(hn)
                s_[w, i] = np.sin(hn)
                continue
            p = pos[w, i] + vi * dt
            if p >= seg_len[sg]:
                p -= seg_len[sg]
                if link_to_node[sg]:
                    choice = turn[w, i]
                elif is_crosswalk[sg]:
                    choice = 0 if u[w, i, 0] < ped_continue else 1
                else:
                    choice = 0
                new = succ[sg, choice]
                if new < 0:
                    alive[w, i] = False
                    left_map[w, i] = True
                    pos[w, i] = p
                    continue
                seg[w, i] = new
                if link_to_node[new]:
                    if kind[w, i] == CONTROLLED:
                        if not turn_chosen[w, i]:
                            turn[w, i] = max(best_turn[dest[w, min(i, n_controlled - 1)], new], 0)
                    else:
                        turn[w, i] = min(int(u[w, i, 1] * 3), 2)
                if is_connector[new]:
                    turn_chosen[w, i] = False
            pos[w, i] = p
        _world_lane_poses(w, alive, kind, seg, pos, x, y, h, c, s_, points, heading, ds,
                          lateral_offset)  # fmt: skip
    return left_map


@njit(cache=True)
def box_gap(dx, dy, ci, si, hli, hwi, cj, sj, hlj, hwj):
    """Separating-axis gap [m] between two oriented boxes (``< 0``: they overlap).

    Box ``i`` at the origin, box ``j`` at ``(dx, dy)``; headings as (cos, sin), half
    lengths ``hl`` along the heading and half widths ``hw``. The largest gap along the
    four box axes: a lower bound of the distance between the boxes.
    """
    cd = abs(ci * cj + si * sj)
    sd = abs(si * cj - ci * sj)
    a1 = abs(dx * ci + dy * si) - hli - (hlj * cd + hwj * sd)
    a2 = abs(dy * ci - dx * si) - hwi - (hlj * sd + hwj * cd)
    a3 = abs(dx * cj + dy * sj) - hlj - (hli * cd + hwi * sd)
    a4 = abs(dy * cj - dx * sj) - hwj - (hli * sd + hwi * cd)
    return max(max(a1, a2), max(a3, a4))


@njit(cache=True)
def pairwise_gaps(alive, x, y, c, s_, length, width):
    """:func:`box_gap` between every two alive road users, ``(N, A, A)`` (``inf`` otherwise)."""
    n_worlds, n_agents = alive.shape
    out = np.full((n_worlds, n_agents, n_agents), np.inf)
    for w in range(n_worlds):
        for i in range(n_agents):
            if not alive[w, i]:
                continue
            for j in range(n_agents):
                if j != i and alive[w, j]:
                    out[w, i, j] = box_gap(
                        x[w, j] - x[w, i], y[w, j] - y[w, i], c[w, i], s_[w, i],
                        0.5 * length[w, i], 0.5 * width[w, i], c[w, j], s_[w, j],
                        0.5 * length[w, j], 0.5 * width[w, j],
                    )  # fmt: skip
    return out


@njit(cache=True)
def _segment_hits_box(px, py, qx, qy, box) -> bool:
    """Slab test: does the segment p -> q cross the axis-aligned ``box`` (x0, y0, x1, y1)?"""
    t0, t1 = 0.0, 1.0
    for axis in range(2):
        p = px if axis == 0 else py
        d = (qx - px) if axis == 0 else (qy - py)
        lo, hi = box[axis], box[axis + 2]
        if abs(d) < 1e-12:
            if p < lo or p > hi:
                return False
        else:
            ta, tb = (lo - p) / d, (hi - p) / d
            if ta > tb:
                ta, tb = tb, ta
            t0, t1 = max(t0, ta), min(t1, tb)
            if t0 > t1:
                return False
    return True


@njit(cache=True, parallel=True)
def surroundings(
    alive, kind, x, y, c, s_, v, length, width, n_controlled, k_nearest, kind_onehot,
    fov_cos, fov_full, ranges, buildings, occlude_vehicles, worlds, visible, separation,
    others,
):  # fmt: skip
    """What each controlled car ``c`` has around it, for the worlds ``worlds (M,)``.

    Writes the rows ``worlds`` of the outputs (other rows untouched), one world per thread:
        visible ``(N, C, A)`` bool: road user ``j`` (alive, not ``c``) sees ``c``: within
            ``ranges[kind_j]`` [m], inside its field of view (``cos(angle) >=
            fov_cos[kind_j]`` or ``fov_full``), sight line centre to centre crossing no
            building and (``occlude_vehicles``) no other vehicle, a disc of radius
            ``(length + width) / 4`` strictly between them.
        separation ``(N, C)`` [m]: smallest separating-axis gap between ``c``'s box and
            any other road user's box (``< 0``: overlap; ``inf``: nobody).
        others ``(N, C, K, 11)``: the ``K`` nearest other road users (ties: lower slot),
            features as in :meth:`IntersectionSim.observe` (before clipping).
    """
    n_agents = alive.shape[1]
    for q in prange(worlds.shape[0]):
        w = worlds[q]
        d2s = np.empty(n_agents)
        visible[w] = False
        separation[w] = np.inf
        others[w] = 0.0
        live = np.empty(n_agents, dtype=np.int64)  # the alive slots in order
        n_live = 0
        for j in range(n_agents):
            if alive[w, j]:
                live[n_live] = j
                n_live += 1
        for e in range(n_controlled):
            ex, ey, ec, es, ev = x[w, e], y[w, e], c[w, e], s_[w, e], v[w, e]
            hle, hwe = 0.5 * length[w, e], 0.5 * width[w, e]
            for u in range(n_live):
                j = live[u]
                d2s[j] = np.inf
                if j == e:
                    continue
                dx, dy = x[w, j] - ex, y[w, j] - ey  # ego -> j
                d2 = dx * dx + dy * dy
                d2s[j] = d2
                cj, sj = c[w, j], s_[w, j]
                if kind[w, j] == PEDESTRIAN and ev < STANDING:
                    sep = np.inf  # a walker stepping around a standing car is no collision
                else:
                    sep = box_gap(
                        dx, dy, ec, es, hle, hwe, cj, sj, 0.5 * length[w, j], 0.5 * width[w, j]
                    )
                if sep < separation[w, e]:
                    separation[w, e] = sep
                # visibility of the ego to j
                kj = kind[w, j]
                if d2 > ranges[kj] * ranges[kj]:
                    continue
                ahead = -(cj * dx + sj * dy)  # ego seen from j, along j's heading
                if not fov_full[kj] and ahead < fov_cos[kj] * np.sqrt(d2):
                    continue
                seen = True
                for b in range(buildings.shape[0]):
                    if _segment_hits_box(x[w, j], y[w, j], ex, ey, buildings[b]):
                        seen = False
                        break
                if seen and occlude_vehicles:
                    for ob in range(n_live):
                        b = live[ob]
                        if b == j or b == e or kind[w, b] == PEDESTRIAN:
                            continue
                        sx, sy = -dx, -dy  # j -> ego
                        t = ((x[w, b] - x[w, j]) * sx + (y[w, b] - y[w, j]) * sy) / max(d2, 1e-9)
                        if t <= 0.0 or t >= 1.0:
                            continue
                        qx = x[w, j] + t * sx - x[w, b]
                        qy = y[w, j] + t * sy - y[w, b]
                        rad = 0.25 * (length[w, b] + width[w, b])
                        if qx * qx + qy * qy < rad * rad:
                            seen = False
                            break
                visible[w, e, j] = seen
            # K nearest, in order (ties: lower slot first)
            for n in range(k_nearest):
                best, best_d = -1, np.inf
                for u in range(n_live):
                    j = live[u]
                    if d2s[j] < best_d:
                        best, best_d = j, d2s[j]
                if best < 0:
                    break
                d2s[best] = np.inf
                j = best
                dx, dy = x[w, j] - ex, y[w, j] - ey
                cj, sj, vj = c[w, j], s_[w, j], v[w, j]
                rvx, rvy = vj * cj - ev * ec, vj * sj - ev * es
                f = others[w, e, n]
                f[0] = 1.0
                f[1] = (ec * dx + es * dy) * 0.02
                f[2] = (ec * dy - es * dx) * 0.02
                f[3] = (ec * rvx + es * rvy) * 0.05
                f[4] = (ec * rvy - es * rvx) * 0.05
                f[5] = ec * cj + es * sj
                f[6] = ec * sj - es * cj
                for o in range(4):
                    f[7 + o] = kind_onehot[kind[w, j], o]


@njit(cache=True)
def observer_slots(alive, uid, ego):
    """Slots of the alive road users other than ``ego`` in one world, sorted by id."""
    n = 0
    slots = np.empty(alive.shape[0], dtype=np.int64)
    for j in range(alive.shape[0]):
        if alive[j] and j != ego:
            # insertion by id (ids are unique)
            k = n
            while k > 0 and uid[slots[k - 1]] > uid[j]:
                slots[k] = slots[k - 1]
                k -= 1
            slots[k] = j
            n += 1
    return slots[:n]


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True)
def splitmix_uniforms(state, out):  # pragma: no cover - jit
    """Fill ``out`` ``(N, K)`` with uniforms in [0, 1): world ``w``'s next ``K`` draws of
    its own SplitMix64 stream (state ``state[w]``, uint64, advanced in place).

    SplitMix64 (Steele, Lea and Flood 2014; the seeder of xoshiro) passes BigCrush; each
    world's stream depends on its state only, so a world draws the same numbers whatever
    the batch. The top 53 bits of each output make the double.
    """
    n, k = out.shape
    for w in range(n):
        z0 = state[w]
        for j in range(k):
            z0 += _GOLDEN
            z = z0
            z = (z ^ (z >> np.uint64(30))) * _MIX1
            z = (z ^ (z >> np.uint64(27))) * _MIX2
            z = z ^ (z >> np.uint64(31))
            out[w, j] = (z >> np.uint64(11)) * (1.0 / 9007199254740992.0)
        state[w] = z0


@njit(cache=True, parallel=True)
def reset_worlds(
    idx, gens, step_state, alive, kind, uid, seg, pos, v, v0, x, y, h, c, s_, length,
    width, turn, turn_chosen, stuck, accel, steer, next_uid, t, target_v, dest, done,
    entries, valid_dest, best_turn, links, crosswalks, plan, seg_len, points, heading, ds,
    length_k, width_k, lateral_offset, base_speed, ego_max_speed, continuous, start_v,
):  # fmt: skip  # pragma: no cover - jit
    """New episodes in worlds ``idx`` ``(M,)``, in place, one world per thread.

    World ``w`` draws only from its generator ``gens[w]`` (NumPy's ``default_rng``
    compiled: :mod:`bystander.envs.intersection.pcg`), in this order: the key of its
    per-step stream (``step_state[w]``, ``integers(2**63)``); ``E`` uniforms whose ``C``
    smallest pick distinct entry roads of the controlled cars; ``C x n_exits`` uniforms
    (the largest valid one is a car's destination: reachable, no U-turn); ``C`` starts
    ``uniform(5, 20)`` m into the entry roads; then per planned road user (``plan (A - C,)``
    kinds, slot ``C + p``) up to 20 candidate spots (segment ``pool[integers(n)]``, arc
    length ``uniform(0, seg_len)``) until one is at least 12 m (1.5 m for pedestrians)
    from every road user placed before, then its desired speed (80-110 % of
    ``base_speed[kind]``, starting at 70 % of it) and, for vehicles, a turn
    ``integers(3)``; last, when ``start_v`` (the start target speeds [m/s], ``(S,)``)
    holds more than one, each controlled car's ``integers(S)`` (with one, every car starts
    at ``start_v[0]`` and nothing is drawn). Ids follow placement order. A world's episode
    depends on its generator only, never on the batch or the thread count. Poses as :func:`lane_poses`;
    controlled cars in ``continuous`` mode become free movers.
    """
    n_agents = alive.shape[1]
    n_ctrl = dest.shape[1]
    n_entries = entries.shape[0]
    n_exits = valid_dest.shape[1]
    k_max = points.shape[1] - 2
    for q in prange(idx.shape[0]):
        w = idx[q]
        g = gens[w]
        step_state[w] = pcg64_next64(g) >> np.uint64(1)
        for j in range(n_agents):
            alive[w, j] = False
            uid[w, j] = -1
            seg[w, j] = -1
            v[w, j] = 0.0
            stuck[w, j] = 0.0
            accel[w, j] = 0.0
            steer[w, j] = 0.0
            turn_chosen[w, j] = False
        t[w] = 0
        u_entry = np.empty(n_entries)
        for e in range(n_entries):
            u_entry[e] = pcg64_double(g)
        order = np.argsort(u_entry)
        for p in range(n_ctrl):  # destinations: a valid exit per controlled car
            best, best_k = -1.0, 0
            for k in range(n_exits):
                u = pcg64_double(g)
                if valid_dest[order[p], k] and u > best:
                    best, best_k = u, k
            dest[w, p] = best_k
            target_v[w, p] = start_v[0]
            done[w, p] = False
        n_placed = 0
        for p in range(n_ctrl + plan.shape[0]):
            if p < n_ctrl:  # controlled car p at its entry
                ki, sg = CONTROLLED, entries[order[p]]
                sp = 5.0 + 15.0 * pcg64_double(g)
                vi, v0i = 5.0, ego_max_speed
                turn[w, p] = max(best_turn[dest[w, p], sg], 0)
            else:  # a scripted road user, clear of everyone placed before
                ki = plan[p - n_ctrl]
                pool = crosswalks if ki == PEDESTRIAN else links
                clear = 1.5 if ki == PEDESTRIAN else 12.0
                sg, sp = -1, 0.0
                for _ in range(20 if pool.shape[0] else 0):
                    cand = pool[pcg64_bounded(g, pool.shape[0])]
                    sc = 0.0 + seg_len[cand] * pcg64_double(g)
                    f = sc * (1.0 / ds)  # as RoadNetwork.pose_at
                    k = min(int(f), k_max)
                    frac = f - k
                    px = points[cand, k, 0] + (points[cand, k + 1, 0] - points[cand, k, 0]) * frac
                    py = points[cand, k, 1] + (points[cand, k + 1, 1] - points[cand, k, 1]) * frac
                    ok = True
                    for j in range(n_agents):
                        if alive[w, j]:
                            dx, dy = x[w, j] - px, y[w, j] - py
                            if dx * dx + dy * dy < clear * clear:
                                ok = False
                                break
                    if ok:
                        sg, sp = cand, sc
                        break
                if sg < 0:
                    continue
                v0i = base_speed[ki] * (0.8 + 0.3 * pcg64_double(g))
                vi = 0.7 * v0i
                if ki != PEDESTRIAN:
                    turn[w, p] = pcg64_bounded(g, 3)
            # place road user p (slot p) on (sg, sp)
            alive[w, p] = True
            kind[w, p] = ki
            uid[w, p] = n_placed
            n_placed += 1
            seg[w, p] = sg
            pos[w, p] = sp
            v[w, p] = vi
            v0[w, p] = v0i
            length[w, p] = length_k[ki]
            width[w, p] = width_k[ki]
            f = sp * (1.0 / ds)
            k = min(int(f), k_max)
            frac = f - k
            cs, sn = points[sg, k, 2], points[sg, k, 3]
            off = lateral_offset[ki]
            x[w, p] = points[sg, k, 0] + (points[sg, k + 1, 0] - points[sg, k, 0]) * frac + off * sn
            y[w, p] = points[sg, k, 1] + (points[sg, k + 1, 1] - points[sg, k, 1]) * frac - off * cs
            h[w, p] = heading[sg, k]
            c[w, p] = cs
            s_[w, p] = sn
            if continuous and ki == CONTROLLED:
                seg[w, p] = -1
        next_uid[w] = n_placed
        if start_v.shape[0] > 1:
            for p in range(n_ctrl):
                target_v[w, p] = start_v[pcg64_bounded(g, start_v.shape[0])]


def serial_twin(dispatcher):
    """The same kernel compiled without the thread pool (``prange`` runs as ``range``):
    the same code, so bit-identical results; cached under its own name."""
    fn = dispatcher.py_func
    twin = types.FunctionType(
        fn.__code__, fn.__globals__, fn.__name__ + "_serial", fn.__defaults__, fn.__closure__
    )
    twin.__qualname__ = fn.__qualname__ + "_serial"
    twin.__doc__ = f"Serial twin of :func:`{fn.__name__}` (same results, one thread)."
    return njit(cache=True)(twin)


def threaded(n_worlds: int) -> bool:
    """Whether a call over ``n_worlds`` worlds should use the parallel kernels: at least
    :data:`PARALLEL_MIN_WORLDS` worlds and more than one numba thread."""
    return n_worlds >= PARALLEL_MIN_WORLDS and numba.get_num_threads() > 1


@njit(cache=True, parallel=True)
def spawn(
    us, p, cum, kinds, entries, crosswalks, points, heading, alive, kind, uid, next_uid, seg,
    pos, v, v0, length, width, stuck, turn_chosen, turn, x, y, h, c, s_, n_controlled,
    base_speed, length_k, width_k, lateral_offset, dt, stuck_time,
):  # fmt: skip  # pragma: no cover - jit
    """Stuck road users out, then at most one new one per world, in place.

    First every scripted road user slower than 0.1 m/s adds ``dt`` to its ``stuck`` time
    (others reset it to 0) and leaves the world past ``stuck_time`` [s]. Then, with
    ``us (N, 5)`` the step's uniforms:

    World ``w`` spawns when ``us[w, 0] < p``: kind ``kinds[i]`` with ``i`` the number of
    ``cum`` (cumulative rate shares: car, cyclist, pedestrian) at or below ``us[w, 1]``;
    at the start of entry road (crosswalk for pedestrians) ``int(us[w, 2] * n)``; only if
    no road user stands within 10 m (1.5 m) of it and a scripted slot is free (the
    lowest). Desired speed ``base_speed[kind] * (0.8 + 0.3 us[w, 3])``, starting at 80 %
    of it; vehicles turn ``int(3 us[w, 4])`` at the next intersection.
    """
    n_worlds, n_agents = alive.shape
    n_e, n_c = entries.shape[0], crosswalks.shape[0]
    for w in prange(n_worlds):  # worlds are independent: one per thread
        for j in range(n_agents):
            still = alive[w, j] and kind[w, j] != CONTROLLED and v[w, j] < 0.1
            stuck[w, j] = (stuck[w, j] + dt) * (1.0 if still else 0.0)
            if stuck[w, j] > stuck_time:
                alive[w, j] = False
        if not us[w, 0] < p:
            continue
        which = 0
        while which < 3 and cum[which] <= us[w, 1]:
            which += 1
        which = min(which, 2)
        ki = kinds[which]
        if which == 2:
            sg = crosswalks[min(int(us[w, 2] * n_c), n_c - 1)]
        else:
            sg = entries[min(int(us[w, 2] * n_e), n_e - 1)]
        sx, sy = points[sg, 0, 0], points[sg, 0, 1]
        clear = 1.5 if which == 2 else 10.0
        clear2 = clear * clear
        blocked = False
        for j in range(n_agents):
            if alive[w, j]:
                dx, dy = x[w, j] - sx, y[w, j] - sy
                if dx * dx + dy * dy < clear2:
                    blocked = True
                    break
        if blocked:
            continue
        slot = -1
        for j in range(n_controlled, n_agents):
            if not alive[w, j]:
                slot = j
                break
        if slot < 0:
            continue
        v0i = base_speed[ki] * (0.8 + 0.3 * us[w, 3])
        alive[w, slot] = True
        kind[w, slot] = ki
        uid[w, slot] = next_uid[w]
        next_uid[w] += 1
        seg[w, slot] = sg
        pos[w, slot] = 0.0
        v[w, slot] = 0.8 * v0i
        v0[w, slot] = v0i
        length[w, slot] = length_k[ki]
        width[w, slot] = width_k[ki]
        stuck[w, slot] = 0.0
        turn_chosen[w, slot] = False
        cs, sn = points[sg, 0, 2], points[sg, 0, 3]
        off = lateral_offset[ki]
        x[w, slot] = points[sg, 0, 0] + (points[sg, 1, 0] - points[sg, 0, 0]) * 0.0 + off * sn
        y[w, slot] = points[sg, 0, 1] + (points[sg, 1, 1] - points[sg, 0, 1]) * 0.0 - off * cs
        h[w, slot] = heading[sg, 0]
        c[w, slot] = cs
        s_[w, slot] = sn
        turn[w, slot] = 0 if ki == PEDESTRIAN else min(int(us[w, 4] * 3), 2)


# the serial twins, after every kernel they copy
advance_serial = serial_twin(advance)
idm_accel_serial = serial_twin(idm_accel)
reset_worlds_serial = serial_twin(reset_worlds)
spawn_serial = serial_twin(spawn)
surroundings_serial = serial_twin(surroundings)
