"""Lane-following route hypotheses on the intersection's road graph (numba kernel).

The compiled half of :class:`~bystander.agents.map_predictor.MapPredictor`, one pass
per view: :func:`rollout_hypotheses` maps the ego's seen positions from the observer's
frame to the world frame (the observer's pose), matches the ego to a lane, rolls out
``K = 3 ** depth`` lane-following hypotheses (hypothesis ``k`` takes turn
``digit_i(k)``, base 3: ``0`` right, ``1`` straight, ``2`` left, at the ``i``-th
intersection ahead, straight after the first ``depth``), computes each hypothesis'
features (:data:`FEATURE_NAMES`) and log-probability ``log softmax(features @ w)``,
and writes the hypotheses back in the observer's frame, optionally ranked. The speed
law (see :func:`rollout_hypotheses`) is the same for every hypothesis; their profiles
differ only through the route they follow. Duplicates (hypotheses that differ only in
turns the rollout never reaches) get probability 0.

Map matching: the nearest resampled lane point under the cost ``d^2 + heading_weight *
(1 - cos(heading error))`` (heading from the last two seen positions; ignored below
``0.5 m/s``). Segments are pre-filtered by bounding boxes. A match on a connector
whose sibling connectors (same approach, other turns) match almost as well is
*undecided*: the ego is then placed at the end of the approach link with the arc
length already driven on the connector still to go, so every hypothesis branches
there. A clear match pins the turn being driven; the branches are the later ones.

Everything here is plain arrays; the road graph is read once from a
:class:`~bystander.envs.intersection.road.RoadNetwork` into :class:`MapArrays`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from bystander.envs.intersection.road import CONNECTOR, CROSSWALK, DS, LINK, RoadNetwork

__all__ = ["N_FEATURES", "FEATURE_NAMES", "MapArrays", "rollout_hypotheses"]

FEATURE_NAMES = (
    "first_right",
    "first_straight",
    "first_left",
    "second_right",
    "second_straight",
    "second_left",
    "agreement",
    "first_right_near",
    "first_straight_near",
    "first_left_near",
)
"""Per-hypothesis features: one-hot of the turn at the first / second intersection ahead
(zeros when the horizon does not reach it or the turn is already pinned), the agreement
of the hypothesis with a constant-turn-rate extrapolation over the first second
(``-d^2 / (2 sigma^2)``, ``d`` in metres), and the first turn's one-hot times
``exp(-distance to that intersection / 20 m)`` (habits that show on approach)."""
N_FEATURES = len(FEATURE_NAMES)


@dataclass(frozen=True)
class MapArrays:
    """The lane graph as contiguous arrays (``S`` segments, ``P`` points per segment).

    Attributes:
        points: ``(S, P, 2)`` resampled lane centre points [m], every ``DS`` m.
        length: ``(S,)`` segment lengths [m]. n_points: ``(S,)`` valid points.
        kind: ``(S,)`` LINK / CONNECTOR / CROSSWALK codes of ``road.py``.
        succ: ``(S, 3)`` successor per turn (``-1``: leaves the map).
        decision: ``(S,)`` True for links that end at an intersection.
        turn: ``(S,)`` a connector's turn (``-1`` for other segments).
        pred: ``(S,)`` the approach link of a connector (``-1`` otherwise).
        bbox: ``(S, 4)`` ``(xmin, ymin, xmax, ymax)`` of each lane [m].
        heading: ``(S, P, 2)`` unit tangent ``(cos, sin)`` at each point.
        table_f: ``(S, 5)`` float ``length, bbox`` and table_i: ``(S, 8)`` int ``n_points,
            kind, succ (3), decision, turn, pred``: the kernel's packed view of the above.
    """

    points: np.ndarray
    length: np.ndarray
    n_points: np.ndarray
    kind: np.ndarray
    succ: np.ndarray
    decision: np.ndarray
    turn: np.ndarray
    pred: np.ndarray
    bbox: np.ndarray
    heading: np.ndarray

    @property
    def table_f(self) -> np.ndarray:
        return np.ascontiguousarray(np.column_stack([self.length, self.bbox]))

    @property
    def table_i(self) -> np.ndarray:
        cols = [self.n_points, self.kind, self.succ, self.decision, self.turn, self.pred]
        return np.ascontiguousarray(np.column_stack(cols).astype(np.int64))

    @classmethod
    def from_road(cls, road: RoadNetwork) -> MapArrays:
        """Read the lanes (links and connectors) of ``road``; crosswalks are left out."""
        kind = np.asarray(road.kind, dtype=np.int64)
        succ = np.asarray(road.succ, dtype=np.int64)
        n = len(kind)
        pred = -np.ones(n, dtype=np.int64)
        for sid in np.flatnonzero(kind == LINK):
            for t in range(3):
                if succ[sid, t] >= 0 and kind[succ[sid, t]] == CONNECTOR:
                    pred[succ[sid, t]] = sid
        bbox = np.full((n, 4), np.inf)
        for sid in range(n):
            if kind[sid] == CROSSWALK:
                continue
            pts = road.points[sid, : road.n_points[sid], :2]
            bbox[sid] = (*pts.min(axis=0), *pts.max(axis=0))
        decision = (kind == LINK) & (np.asarray(road.node) >= 0)
        return cls(
            points=np.ascontiguousarray(road.points[..., :2], dtype=np.float64),
            length=np.asarray(road.length, dtype=np.float64),
            n_points=np.asarray(road.n_points, dtype=np.int64),
            kind=kind,
            succ=succ,
            decision=decision,
            turn=np.asarray(road.connector_turn, dtype=np.int64),
            pred=pred,
            bbox=bbox,
            heading=np.ascontiguousarray(road.points[..., 2:4], dtype=np.float64),
        )


def rollout_hypotheses(
    arrays: MapArrays,
    states: np.ndarray,
    mask: np.ndarray,
    poses: np.ndarray | None,
    dt: float,
    horizon: int,
    depth: int,
    params: np.ndarray,
    weights: np.ndarray,
    ranked: bool = False,
    tables: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Roll out every view's ``K = 3 ** depth`` hypotheses and weigh them.

    Args:
        arrays: The lane graph.
        states: Ego positions ``(B, L, 2)`` [m] in each observer's frame, oldest first
            (last = now).
        mask: Seen entries ``(B, L)`` bool.
        poses: Observer poses ``(B, 3)`` ``(x [m], y [m], heading [rad])``, world frame;
            None: ``states`` are world-frame. A view with no seen entry is predicted
            at its observer's position.
        dt: Seconds per entry.
        horizon: Predicted steps ``H``.
        depth: Intersections ahead whose turn is enumerated (``K = 3 ** depth``).
        params: ``(8,)`` float: heading weight [m^2], bbox margin [m], ambiguity margin
            [m^2], speed-change time constant [s], max speed [m/s], max acceleration
            [m/s^2], lateral-offset decay time [s], agreement sigma [m].
        weights: ``(N_FEATURES,)`` logit weights.
        ranked: Return the hypotheses most likely first (ties: fewer non-straight turns
            first, then mode index), else in mode order.
        tables: ``(points (S, P, 4), table_f, table_i)`` of ``arrays``, cached by callers.

    Returns:
        ``traj`` ``(B, K, H, 2)`` [m] in the views' frames; ``log_probs`` ``(B, K)``
        (``-inf`` for duplicates: hypotheses that differ only in turns the rollout does
        not reach); ``features`` ``(B, K, N_FEATURES)`` and ``valid`` ``(B, K)`` bool,
        both in mode order.

    Speed profile: from the seen speed ``v0`` and acceleration ``a0`` (clipped to
    ``+-max acceleration``), ``v(t) = v0 + a0 * tau * (1 - exp(-t / tau))`` within
    ``[0, max speed]``; the lateral offset of the ego from the matched lane decays as
    ``exp(-t / decay)``. The rollout starts at the last seen entry and walks to ``now``
    before the ``H`` predicted steps.
    """
    b = states.shape[0]
    k = 3 ** int(depth)
    if tables is None:
        pts = np.ascontiguousarray(np.concatenate([arrays.points, arrays.heading], axis=-1))
        tables = (pts, arrays.table_f, arrays.table_i)
    traj = np.empty((b, k, int(horizon), 2))
    logp = np.empty((b, k))
    feats = np.zeros((b, k, N_FEATURES))
    valid = np.zeros((b, k), dtype=np.bool_)
    has_pose = poses is not None
    _kernel(
        np.ascontiguousarray(states[..., :2], dtype=np.float64),
        np.ascontiguousarray(mask, dtype=np.bool_),
        np.ascontiguousarray(poses if has_pose else np.zeros((b, 3)), dtype=np.float64),
        has_pose,
        float(dt),
        int(depth),
        params,
        weights,
        ranked,
        tables[0],
        tables[1],
        tables[2],
        traj,
        logp,
        feats,
        valid,
    )
    return traj, logp, feats, valid


@njit(cache=True)
def _nearest_on(pts, n_pts, sid, x, y, hc, hs, hw):  # pragma: no cover - jit
    """Best (cost, index) of the points of segment ``sid``."""
    best = 1e300
    idx = 0
    for j in range(n_pts):
        dx = pts[sid, j, 0] - x
        dy = pts[sid, j, 1] - y
        c = dx * dx + dy * dy + hw * (1.0 - (pts[sid, j, 2] * hc + pts[sid, j, 3] * hs))
        if c < best:
            best = c
            idx = j
    return best, idx


@njit(cache=True)
def _position(pts, n_pts, length, seg, s):  # pragma: no cover - jit
    """Interpolated lane position at arc length ``s`` of ``seg``."""
    f = min(max(s, 0.0), length) / DS
    j = min(int(f), n_pts - 2)
    if j < 0:
        return pts[seg, 0, 0], pts[seg, 0, 1]
    fr = min(f - j, 1.0)
    x = pts[seg, j, 0] + (pts[seg, j + 1, 0] - pts[seg, j, 0]) * fr
    y = pts[seg, j, 1] + (pts[seg, j + 1, 1] - pts[seg, j, 1]) * fr
    return x, y


@njit(cache=True)
def _kernel(  # pragma: no cover - jit
    states, mask, poses, has_pose, dt, depth, params, weights, ranked, pts, tf, ti,
    traj, logp, feats, valid,
):  # fmt: skip
    n, big_l = mask.shape
    n_modes = traj.shape[1]
    horizon = traj.shape[2]
    hw0, margin, amb, tau, vmax, amax, tlat, sig = (
        params[0], params[1], params[2], params[3], params[4], params[5], params[6], params[7],
    )  # fmt: skip
    n_seg = tf.shape[0]
    steps_a = max(1, int(round(1.0 / dt)))
    world = np.empty((big_l, 2))
    scratch = np.empty((n_modes, horizon, 2))
    logit = np.empty(n_modes)
    order = np.empty(n_modes, dtype=np.int64)
    straight = np.zeros(n_modes)
    for m in range(n_modes):
        for i in range(depth):
            if (m // 3**i) % 3 == 1:
                straight[m] += 1.0
    for b in range(n):
        c0 = 1.0
        s0_ = 0.0
        ox = 0.0
        oy = 0.0
        if has_pose:
            ox = poses[b, 0]
            oy = poses[b, 1]
            c0 = math.cos(poses[b, 2])
            s0_ = math.sin(poses[b, 2])
        for j in range(big_l):  # observer frame -> world
            world[j, 0] = c0 * states[b, j, 0] - s0_ * states[b, j, 1] + ox
            world[j, 1] = s0_ * states[b, j, 0] + c0 * states[b, j, 1] + oy
        last = -1
        prev = -1
        prev2 = -1
        first = -1
        for j in range(big_l - 1, -1, -1):
            if mask[b, j]:
                first = j
                if last < 0:
                    last = j
                elif prev < 0:
                    prev = j
                elif prev2 < 0:
                    prev2 = j
        if last < 0:  # nothing seen: the observer's origin (as CV), one live mode
            for m in range(n_modes):
                valid[b, m] = m == 0
                logp[b, m] = 0.0 if m == 0 else -np.inf
                for h in range(horizon):
                    traj[b, m, h, 0] = 0.0
                    traj[b, m, h, 1] = 0.0
            continue
        px = world[last, 0]
        py = world[last, 1]
        vx = 0.0
        vy = 0.0
        if prev >= 0:
            g = (last - prev) * dt
            vx = (px - world[prev, 0]) / g
            vy = (py - world[prev, 1]) / g
        speed = math.sqrt(vx * vx + vy * vy)
        acc = 0.0
        omega = 0.0
        if prev2 >= 0:
            g2 = (prev - prev2) * dt
            ux = (world[prev, 0] - world[prev2, 0]) / g2
            uy = (world[prev, 1] - world[prev2, 1]) / g2
            s1 = math.sqrt(ux * ux + uy * uy)
            acc = min(max((speed - s1) / (0.5 * (last - prev2) * dt), -amax), amax)
            if speed > 0.5 and s1 > 0.5:
                dth = math.atan2(vy, vx) - math.atan2(uy, ux)
                dth = math.atan2(math.sin(dth), math.cos(dth))
                omega = min(max(dth / (0.5 * (last - prev2) * dt), -1.5), 1.5)
        hc = 1.0
        hs = 0.0
        hw = 0.0
        if speed > 0.5:
            hc = vx / speed
            hs = vy / speed
            hw = hw0
        elif first >= 0 and first != last:
            sx = px - world[first, 0]
            sy = py - world[first, 1]
            sn = math.sqrt(sx * sx + sy * sy)
            if sn > 1.0:
                hc = sx / sn
                hs = sy / sn
                hw = hw0
        # --- map matching: bbox pre-filter, full scan when no lane box is near
        best = 1e300
        seg0 = -1
        j0 = 0
        for sweep in range(2):
            for sid in range(n_seg):
                if ti[sid, 1] == CROSSWALK:
                    continue
                if sweep == 0 and (
                    px < tf[sid, 1] - margin
                    or px > tf[sid, 3] + margin
                    or py < tf[sid, 2] - margin
                    or py > tf[sid, 4] + margin
                ):
                    continue
                c, j = _nearest_on(pts, ti[sid, 0], sid, px, py, hc, hs, hw)
                if c < best:
                    best = c
                    seg0 = sid
                    j0 = j
            if seg0 >= 0:
                break
        s0 = min(j0 * DS, tf[seg0, 0])
        offx = px - pts[seg0, j0, 0]
        offy = py - pts[seg0, j0, 1]
        pre = 0.0  # arc length still to go on an undecided connector
        if ti[seg0, 1] == CONNECTOR and ti[seg0, 7] >= 0:
            ap = ti[seg0, 7]
            clear = True
            for t in range(3):
                sib = ti[ap, 2 + t]
                if sib != seg0 and sib >= 0:
                    c, _ = _nearest_on(pts, ti[sib, 0], sib, px, py, hc, hs, hw)
                    if c - best < amb:
                        clear = False
            if not clear:
                pre = s0
                seg0 = ap
                s0 = tf[ap, 0]
        # distance to the first intersection ahead (m); none: no "near" feature
        near = 0.0
        if ti[seg0, 1] == LINK and ti[seg0, 5]:
            near = math.exp(-max(tf[seg0, 0] - s0 - pre, 0.0) / 20.0)
        elif ti[seg0, 1] == CONNECTOR and ti[seg0, 2] >= 0 and ti[ti[seg0, 2], 5]:
            near = math.exp(-(tf[seg0, 0] - s0 + tf[ti[seg0, 2], 0]) / 20.0)
        walk = big_l - 1 - last
        total = walk + horizon
        # constant-turn-rate point one second after the last seen entry
        na = min(steps_a, total)
        ta = na * dt
        if abs(omega) < 1e-6:
            cx = px + speed * ta * hc
            cy = py + speed * ta * hs
        else:
            th0 = math.atan2(hs, hc)
            cx = px + speed * (math.sin(th0 + omega * ta) - math.sin(th0)) / omega
            cy = py + speed * (math.cos(th0) - math.cos(th0 + omega * ta)) / omega
        top = -np.inf
        for m in range(n_modes):
            seg = seg0
            s = s0 + pre
            dec = 0
            t_first = -1
            t_second = -1
            ax = px
            ay = py
            for step in range(total):
                t = (step + 1) * dt
                v = min(max(speed + acc * tau * (1.0 - math.exp(-t / tau)), 0.0), vmax)
                s += v * dt
                while s > tf[seg, 0]:
                    if ti[seg, 1] == LINK:
                        if not ti[seg, 5] or ti[seg, 2] < 0:
                            s = tf[seg, 0]
                            break
                        tn = (m // 3**dec) % 3 if dec < depth else 1
                        if dec == 0:
                            t_first = tn
                        elif dec == 1:
                            t_second = tn
                        dec += 1
                        s -= tf[seg, 0]
                        seg = ti[seg, 2 + tn]
                    else:
                        if ti[seg, 2] < 0:
                            s = tf[seg, 0]
                            break
                        s -= tf[seg, 0]
                        seg = ti[seg, 2]
                x, y = _position(pts, ti[seg, 0], tf[seg, 0], seg, s)
                decay = math.exp(-t / tlat)
                x += offx * decay
                y += offy * decay
                if step == na - 1:
                    ax = x
                    ay = y
                if step >= walk:  # world -> observer frame
                    dx = x - ox
                    dy = y - oy
                    scratch[m, step - walk, 0] = c0 * dx + s0_ * dy
                    scratch[m, step - walk, 1] = -s0_ * dx + c0 * dy
            ok = True
            for i in range(dec, depth):
                if (m // 3**i) % 3 != 0:
                    ok = False
            valid[b, m] = ok
            if t_first >= 0:
                feats[b, m, t_first] = 1.0
                feats[b, m, 7 + t_first] = near
            if t_second >= 0:
                feats[b, m, 3 + t_second] = 1.0
            dx = ax - cx
            dy = ay - cy
            feats[b, m, 6] = -(dx * dx + dy * dy) / (2.0 * sig * sig)
            z = -np.inf
            if ok:
                z = 0.0
                for f in range(feats.shape[2]):
                    z += feats[b, m, f] * weights[f]
                top = max(top, z)
            logit[m] = z
        total_p = 0.0
        for m in range(n_modes):
            if valid[b, m]:
                total_p += math.exp(logit[m] - top)
        lse = top + math.log(total_p)
        for m in range(n_modes):
            order[m] = m
        if ranked:  # insertion sort: logit desc, then straighter, then index
            for i in range(1, n_modes):
                cur = order[i]
                j = i - 1
                while j >= 0 and (
                    logit[order[j]] < logit[cur]
                    or (logit[order[j]] == logit[cur] and straight[order[j]] < straight[cur])
                ):
                    order[j + 1] = order[j]
                    j -= 1
                order[j + 1] = cur
        for r in range(n_modes):
            m = order[r]
            logp[b, r] = logit[m] - lse
            for h in range(horizon):
                traj[b, r, h, 0] = scratch[m, h, 0]
                traj[b, r, h, 1] = scratch[m, h, 1]
