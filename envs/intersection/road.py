"""Static road network: a grid of 4-way intersections, as arrays the simulator indexes.

World frame: x east, y north, metres; headings in radians from +x, counter-clockwise.
Intersection ``(r, c)`` sits at ``(c * block_length, r * block_length)``. Traffic keeps
right. Every arm of every intersection has a road with one lane each way; the arms of
boundary intersections lead to the map edge (entries and exits).

Everything road users move along is a *segment*, a polyline resampled every ``DS``
metres (``points[seg, k] = (x, y, cos h, sin h)``):

- *links*: a lane between two intersections, or from the map edge (entry) / to it (exit);
- *connectors*: a lane through an intersection, from an incoming arm to an outgoing arm
  (turn ``0`` right, ``1`` straight, ``2`` left; no U-turns);
- *crosswalks*: a pedestrian path across an arm, one per direction.

``succ[seg, t]`` is the segment that follows ``seg`` for choice ``t`` (``-1``: the road
user leaves the map). For links ``t`` is the turn at the next intersection; for
connectors every ``t`` gives the outgoing link; for crosswalks ``t = 0`` continues on
the next crosswalk around the corner and ``t = 1`` ends the walk.
"""

from __future__ import annotations

import math

import numpy as np

from bystander.envs.intersection.config import IntersectionConfig

__all__ = ["DS", "RoadNetwork", "TURN_NAMES", "TURN_SPEED"]

DS = 0.5
"""Resampling step of segment polylines [m]."""

LINK, CONNECTOR, CROSSWALK = 0, 1, 2
TURN_NAMES = ("right", "straight", "left")
TURN_SPEED = (4.5, np.inf, 6.0)
"""Speed limit of scripted road users on right / straight / left connectors [m/s]."""


def _dir(angle: float) -> np.ndarray:
    return np.array([math.cos(angle), math.sin(angle)])


def _right(angle: float) -> np.ndarray:
    return np.array([math.sin(angle), -math.cos(angle)])


def _bezier(p0: np.ndarray, h0: float, p3: np.ndarray, h1: float, n: int = 64) -> np.ndarray:
    k = 0.55 * float(np.linalg.norm(p3 - p0))
    p1, p2 = p0 + k * _dir(h0), p3 - k * _dir(h1)
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3


def _resample(poly: np.ndarray) -> tuple[np.ndarray, float]:
    """Resample a polyline ``(P, 2)`` every ``DS`` m -> ``(K, 4)`` (x, y, cos h, sin h), length."""
    seg = np.diff(poly, axis=0)
    cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(seg, axis=1))])
    length = float(cum[-1])
    s = np.arange(0.0, length + 1e-9, DS)
    if s[-1] < length - 1e-9:
        s = np.append(s, length)
    x = np.interp(s, cum, poly[:, 0])
    y = np.interp(s, cum, poly[:, 1])
    dx = np.gradient(x) if len(x) > 2 else np.full_like(x, x[-1] - x[0])
    dy = np.gradient(y) if len(y) > 2 else np.full_like(y, y[-1] - y[0])
    norm = np.hypot(dx, dy) + 1e-12
    return np.stack([x, y, dx / norm, dy / norm], axis=1), length


class RoadNetwork:
    """Geometry and topology of the map for one :class:`IntersectionConfig`.

    Attributes (S segments, K points per segment at most, E entries/exits, R buildings):
        points: ``(S, K, 4)`` float64 resampled polylines (padded with the last point).
        length: ``(S,)`` segment lengths [m]. kind: ``(S,)`` LINK / CONNECTOR / CROSSWALK.
        succ: ``(S, 3)`` int successor table (see module doc).
        speed_limit: ``(S,)`` scripted road users' speed limit per segment [m/s] (turns).
        node: ``(S,)`` intersection index a connector / crosswalk belongs to, or a link
            ends at (``-1``: the link is an exit).
        conflict: ``(S, S)`` bool, connectors of one intersection whose paths come
            within 3 m of each other (different incoming arms).
        crosses: ``(S, S)`` bool, connector ``i`` passes over crosswalk ``j``, at arc
            length ``cross_s[i, j]`` [m] along the crosswalk.
        entries: ``(E,)`` entry link ids; exits: ``(E,)`` exit link ids.
        crosswalk_starts: crosswalk segment ids.
        buildings: ``(R, 4)`` axis-aligned rectangles ``(xmin, ymin, xmax, ymax)``.
        roads_h / roads_v: ``(rows, 2)`` / ``(cols, 2)`` centre coordinate and half-width
            of the horizontal (y = const) and vertical (x = const) road strips.
        bounds: ``(xmin, ymin, xmax, ymax)`` of the map.
        goal: ``(E, 5)`` goal pose ``(x, y, heading, cos, sin)`` on each exit.
        dist_to_goal: ``(E, S)`` route distance from the start of each segment to each
            exit's goal point along the shortest path (``inf``: unreachable).
        best_turn: ``(E, S)`` turn of the shortest route at the end of a link (``-1``: none).
        lane_points: flattened link + connector points for projection: ``lane_xy (P, 2)``,
            ``lane_cs (P, 2)`` (cos, sin), ``lane_seg (P,)``, ``lane_s (P,)``.
    """

    def __init__(self, config: IntersectionConfig) -> None:
        self.config = c = config
        rows, cols = c.grid
        lw = c.lane_width
        self.half_width = lw
        self.stop_offset = lw + 1.0 + c.crosswalk_width + 1.0
        self.crosswalk_offset = lw + 1.0 + c.crosswalk_width / 2
        self.nodes = np.array(
            [
                (col * c.block_length, row * c.block_length)
                for row in range(rows)
                for col in range(cols)
            ],
            dtype=np.float64,
        )
        n_nodes = len(self.nodes)
        xmin, xmax = -c.arm_length, (cols - 1) * c.block_length + c.arm_length
        ymin, ymax = -c.arm_length, (rows - 1) * c.block_length + c.arm_length
        self.bounds = (xmin, ymin, xmax, ymax)

        def neighbour(n: int, arm: int) -> int:
            r, col = divmod(n, cols)
            dr, dc = {0: (0, 1), 1: (1, 0), 2: (0, -1), 3: (-1, 0)}[arm]
            r2, c2 = r + dr, col + dc
            return r2 * cols + c2 if 0 <= r2 < rows and 0 <= c2 < cols else -1

        polys: list[np.ndarray] = []
        kinds: list[int] = []
        seg_node: list[int] = []
        info: list[tuple] = []
        out_link: dict[tuple[int, int], int] = {}
        in_link: dict[tuple[int, int], int] = {}
        entries, exits = [], []

        def add(poly: np.ndarray, kind: int, node: int, meta: tuple) -> int:
            polys.append(poly)
            kinds.append(kind)
            seg_node.append(node)
            info.append(meta)
            return len(polys) - 1

        def lane_point(n: int, arm: int, incoming: bool) -> np.ndarray:
            heading = arm * math.pi / 2 + (math.pi if incoming else 0.0)
            return (
                self.nodes[n]
                + self.stop_offset * _dir(arm * math.pi / 2)
                + lw / 2 * _right(heading)
            )

        for n in range(n_nodes):
            for arm in range(4):
                m = neighbour(n, arm)
                start = lane_point(n, arm, incoming=False)
                u = _dir(arm * math.pi / 2)
                if m >= 0:
                    end = lane_point(m, (arm + 2) % 4, incoming=True)
                    sid = add(np.stack([start, end]), LINK, m, ("link", n, arm))
                    out_link[(n, arm)] = sid
                    in_link[(m, (arm + 2) % 4)] = sid
                else:
                    if arm == 0:
                        along = xmax - start[0]
                    elif arm == 1:
                        along = ymax - start[1]
                    elif arm == 2:
                        along = start[0] - xmin
                    else:
                        along = start[1] - ymin
                    sid = add(np.stack([start, start + along * u]), LINK, -1, ("exit", n, arm))
                    out_link[(n, arm)] = sid
                    exits.append(sid)
                    istart = lane_point(n, arm, incoming=True) + along * u
                    iend = lane_point(n, arm, incoming=True)
                    eid = add(np.stack([istart, iend]), LINK, n, ("entry", n, arm))
                    in_link[(n, arm)] = eid
                    entries.append(eid)
        connector: dict[tuple[int, int, int], int] = {}
        for n in range(n_nodes):
            for a in range(4):
                for t in range(3):
                    b = (a + 1 + t) % 4
                    p0, h0 = lane_point(n, a, True), a * math.pi / 2 + math.pi
                    p3, h1 = lane_point(n, b, False), b * math.pi / 2
                    poly = np.stack([p0, p3]) if t == 1 else _bezier(p0, h0, p3, h1)
                    connector[(n, a, t)] = add(poly, CONNECTOR, n, ("connector", n, a, t))
        crosswalk: dict[tuple[int, int, int], int] = {}
        side = lw + 1.0
        for n in range(n_nodes):
            for arm in range(4):
                u, v = _dir(arm * math.pi / 2), _dir(arm * math.pi / 2 + math.pi / 2)
                centre = self.nodes[n] + self.crosswalk_offset * u
                # direction +1 walks from the corner arm-1 side to the corner arm side
                for sign in (1, -1):
                    poly = np.stack([centre - sign * side * v, centre + sign * side * v])
                    crosswalk[(n, arm, sign)] = add(poly, CROSSWALK, n, ("crosswalk", n, arm, sign))

        self.n_segments = S = len(polys)
        res = [_resample(p) for p in polys]
        K = max(len(r[0]) for r in res)
        self.points = np.zeros((S, K, 4))
        self.length = np.zeros(S)
        self.n_points = np.zeros(S, dtype=np.int64)
        for i, (pts, length) in enumerate(res):
            self.points[i, : len(pts)] = pts
            self.points[i, len(pts) :] = pts[-1]
            self.length[i] = length
            self.n_points[i] = len(pts)
        self.heading = np.arctan2(self.points[..., 3], self.points[..., 2])
        self.kind = np.array(kinds, dtype=np.int64)
        self.node = np.array(seg_node, dtype=np.int64)
        self.meta = info
        self.entries = np.array(entries, dtype=np.int64)
        self.exits = np.array(exits, dtype=np.int64)
        self.crosswalks = np.array(sorted(crosswalk.values()), dtype=np.int64)

        succ = -np.ones((S, 3), dtype=np.int64)
        self.connector_turn = -np.ones(S, dtype=np.int64)
        speed_limit = np.full(S, np.inf)
        self.connector_in_arm = -np.ones(S, dtype=np.int64)
        for (n, a, t), sid in connector.items():
            succ[sid, :] = out_link[(n, (a + 1 + t) % 4)]
            self.connector_turn[sid] = t
            speed_limit[sid] = TURN_SPEED[t]
            self.connector_in_arm[sid] = a
        for (m, a), sid in in_link.items():
            for t in range(3):
                succ[sid, t] = connector[(m, a, t)]
        for (n, arm, sign), sid in crosswalk.items():
            # the corner reached: sign +1 ends near corner `arm` (between arm and arm+1),
            # sign -1 near corner `arm-1` (between arm-1 and arm).
            nxt = (n, (arm + 1) % 4, 1) if sign == 1 else (n, (arm - 1) % 4, -1)
            succ[sid, 0] = crosswalk[nxt]
        self.succ = succ
        self.speed_limit = speed_limit
        self.link_end_node = np.where(self.kind == LINK, self.node, -1)

        conflict = np.zeros((S, S), dtype=bool)
        conns = sorted(connector.values())
        for i in conns:
            pi = self.points[i, : self.n_points[i], :2]
            for j in conns:
                if j <= i or self.node[i] != self.node[j]:
                    continue
                if self.connector_in_arm[i] == self.connector_in_arm[j]:
                    continue
                pj = self.points[j, : self.n_points[j], :2]
                d = np.min(np.linalg.norm(pi[:, None] - pj[None], axis=-1))
                if d < 3.0:
                    conflict[i, j] = conflict[j, i] = True
        self.conflict = conflict
        # connectors passing over a crosswalk of their intersection (either direction)
        crosses = np.zeros((S, S), dtype=bool)
        cross_s = np.zeros((S, S))
        for i in conns:
            pi = self.points[i, : self.n_points[i], :2]
            for j in crosswalk.values():
                if self.node[i] != self.node[j]:
                    continue
                pj = self.points[j, : self.n_points[j], :2]
                d = np.linalg.norm(pi[:, None] - pj[None], axis=-1)
                crosses[i, j] = d.min() < 1.0 + lw / 2
                cross_s[i, j] = np.unravel_index(np.argmin(d), d.shape)[1] * DS
        self.crosses = crosses
        self.cross_s = cross_s

        # buildings fill the blocks between roads, set back by a 2 m sidewalk
        set_back = lw + 2.0
        xs = [xmin] + [x for col in range(cols) for x in (col * c.block_length - set_back, col * c.block_length + set_back)] + [xmax]  # fmt: skip
        ys = [ymin] + [y for row in range(rows) for y in (row * c.block_length - set_back, row * c.block_length + set_back)] + [ymax]  # fmt: skip
        blds = []
        for i in range(0, len(xs), 2):
            for j in range(0, len(ys), 2):
                blds.append((xs[i], ys[j], xs[i + 1], ys[j + 1]))
        self.buildings = np.array(blds, dtype=np.float64)
        self.roads_h = np.array(
            [[row * c.block_length, lw] for row in range(rows)], dtype=np.float64
        )
        self.roads_v = np.array(
            [[col * c.block_length, lw] for col in range(cols)], dtype=np.float64
        )

        # goals and shortest routes (Dijkstra-free: Bellman-Ford on a small DAG-like graph)
        E = len(self.exits)
        self.goal = np.zeros((E, 5))
        dist = np.full((E, S), np.inf)
        for e, sid in enumerate(self.exits):
            s_goal = min(c.arrive_distance, self.length[sid] - 1.0)
            k = min(int(round(s_goal / DS)), self.n_points[sid] - 1)
            px, py, cs, sn = self.points[sid, k]
            self.goal[e] = (px, py, math.atan2(sn, cs), cs, sn)
            dist[e, sid] = s_goal
        drivable = np.where(self.kind != CROSSWALK)[0]
        for _ in range(S):
            changed = False
            for sid in drivable:
                nxt = succ[sid]
                nxt = nxt[nxt >= 0]
                if len(nxt) == 0:
                    continue
                cand = self.length[sid] + dist[:, nxt].min(axis=1)
                better = cand < dist[:, sid]
                if better.any():
                    dist[better, sid] = cand[better]
                    changed = True
            if not changed:
                break
        self.dist_to_goal = dist
        best = -np.ones((E, S), dtype=np.int64)
        links_to_node = np.where((self.kind == LINK) & (self.node >= 0))[0]
        for sid in links_to_node:
            d = dist[:, succ[sid]]  # (E, 3)
            ok = np.isfinite(d).any(axis=1)
            best[ok, sid] = np.argmin(d[ok], axis=1)
        self.best_turn = best

        lanes = np.where(self.kind != CROSSWALK)[0]
        xy, cs, sg, ss = [], [], [], []
        for sid in lanes:
            n = self.n_points[sid]
            xy.append(self.points[sid, :n, :2])
            cs.append(self.points[sid, :n, 2:])
            sg.append(np.full(n, sid))
            ss.append(np.minimum(np.arange(n) * DS, self.length[sid]))
        self.lane_xy = np.concatenate(xy)
        self.lane_cs = np.concatenate(cs)
        self.lane_seg = np.concatenate(sg)
        self.lane_s = np.concatenate(ss)

    # ------------------------------------------------------------------ queries
    def pose_at(
        self, seg: np.ndarray, s: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Pose at arc length ``s`` [m] on segments ``seg`` (same shapes).

        Returns ``(x, y, heading, cos h, sin h)``; the position is interpolated, the
        heading is that of the resampled point just behind (``DS`` resolution).
        """
        f = s * (1.0 / DS)
        k = np.minimum(f.astype(np.int64), self.points.shape[1] - 2)
        frac = f - k
        p0 = self.points[seg, k]
        p1 = self.points[seg, k + 1]
        x = p0[..., 0] + (p1[..., 0] - p0[..., 0]) * frac
        y = p0[..., 1] + (p1[..., 1] - p0[..., 1]) * frac
        return x, y, self.heading[seg, k], p0[..., 2], p0[..., 3]

    def on_road(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """True where ``(x, y)`` lies on a road strip inside the map (any shape)."""
        xmin, ymin, xmax, ymax = self.bounds
        inside = (x >= xmin) & (x <= xmax) & (y >= ymin) & (y <= ymax)
        h = (np.abs(y[..., None] - self.roads_h[:, 0]) <= self.roads_h[:, 1]).any(-1)
        v = (np.abs(x[..., None] - self.roads_v[:, 0]) <= self.roads_v[:, 1]).any(-1)
        return inside & (h | v)

    def in_box(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Index of the intersection whose box (stop lines included) contains the point, else -1."""
        d = np.maximum(
            np.abs(x[..., None] - self.nodes[:, 0]), np.abs(y[..., None] - self.nodes[:, 1])
        )
        inside = d <= self.stop_offset
        return np.where(inside.any(-1), inside.argmax(-1), -1)
