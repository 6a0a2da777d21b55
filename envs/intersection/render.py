"""Top-down pygame rendering of one world, headless-safe, and episode video export.

Frames are drawn on a plain ``pygame.Surface`` (no display needed), so ``rgb_array``
works with no display and with ``SDL_VIDEODRIVER=dummy``; only ``human`` mode opens a
window. Drawn: grass, sidewalks, roads, lane markings, stop lines, crosswalks, corner
buildings, the ego's remaining route and goal, its past path, the field-of-view cones
of observers that currently see the ego, road users by type (cars: rectangles, ego
red, other controlled cars purple, scripted blue; cyclists: green; pedestrians: yellow
discs), then the overlays ``fn(surface, world_to_px)``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from bystander.envs.intersection.config import IntersectionConfig
from bystander.envs.intersection.road import CROSSWALK, LINK, RoadNetwork

__all__ = ["KIND_COLOURS", "Renderer", "record_episode", "save_video"]

GRASS = (96, 152, 84)
SIDEWALK = (186, 186, 178)
ROAD = (64, 64, 68)
MARKING = (235, 235, 235)
CENTRE_LINE = (240, 200, 60)
BUILDING = (150, 108, 84)
BUILDING_EDGE = (96, 66, 50)
EGO = (220, 40, 40)
CONTROLLED = (150, 70, 200)
CAR = (60, 120, 210)
PEDESTRIAN = (245, 205, 40)
CYCLIST = (40, 180, 90)
ROUTE = (255, 90, 90)
PATH = (255, 150, 40)
GOAL = (40, 230, 120)
FOV = (255, 255, 120, 50)
SEEN_EDGE = (255, 255, 255)
KIND_COLOURS = (CONTROLLED, CAR, PEDESTRIAN, CYCLIST)


def _pygame():
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame

    return pygame


class Renderer:
    """Draws worlds of one road network; ``draw`` returns a uint8 ``(H, W, 3)`` frame."""

    def __init__(self, road: RoadNetwork, config: IntersectionConfig, human: bool = False) -> None:
        pg = self.pg = _pygame()
        self.road, self.config, self.human = road, config, human
        xmin, ymin, xmax, ymax = road.bounds
        size = config.screen_size
        self.scale = size / max(xmax - xmin, ymax - ymin)
        self.width = int(round((xmax - xmin) * self.scale))
        self.height = int(round((ymax - ymin) * self.scale))
        self.origin = (xmin, ymax)
        self.surface = pg.Surface((self.width, self.height))
        self.background = self._draw_background()
        self.window = None
        self.clock = None
        self.font = None
        try:
            if not pg.font.get_init():
                pg.font.init()
            self.font = pg.font.Font(None, max(14, size // 40))
        except Exception:  # fonts are decoration only
            self.font = None

    # ------------------------------------------------------------------ transforms
    def world_to_px(self, p: np.ndarray) -> np.ndarray:
        """World points ``(..., 2)`` [m] -> pixel coordinates ``(..., 2)`` (float)."""
        p = np.asarray(p, dtype=np.float64)
        out = np.empty_like(p)
        out[..., 0] = (p[..., 0] - self.origin[0]) * self.scale
        out[..., 1] = (self.origin[1] - p[..., 1]) * self.scale
        return out

    def _pts(self, p: np.ndarray) -> list[tuple[float, float]]:
        return [tuple(q) for q in self.world_to_px(p).tolist()]

    # ------------------------------------------------------------------ static scene
    def _draw_background(self):
        pg, r, cfg = self.pg, self.road, self.config
        bg = pg.Surface((self.width, self.height))
        bg.fill(GRASS)
        xmin, ymin, xmax, ymax = r.bounds
        hw = r.half_width
        for half, colour in ((hw + 2.0, SIDEWALK), (hw, ROAD)):
            for yc, _ in r.roads_h:
                self._rect(bg, colour, xmin, yc - half, xmax, yc + half)
            for xc, _ in r.roads_v:
                self._rect(bg, colour, xc - half, ymin, xc + half, ymax)
        for b in r.buildings:
            self._rect(bg, BUILDING, *b, inset=1.0)
            self._rect(bg, BUILDING_EDGE, *b, inset=1.0, width=2)
        # centre lines and stop lines on every link (dashed yellow centre line)
        for sid in np.where(r.kind == LINK)[0]:
            pts = r.points[sid, : r.n_points[sid]]
            left = pts[:, :2] + (cfg.lane_width / 2) * np.stack([-pts[:, 3], pts[:, 2]], axis=1)
            for k in range(0, len(left) - 4, 8):
                pg.draw.line(bg, CENTRE_LINE, *self._pts(left[[k, k + 4]]), 1)
            if r.node[sid] >= 0:  # stop line at the end of an incoming link
                end, c, s = pts[-1, :2], pts[-1, 2], pts[-1, 3]
                n = np.array([s, -c]) * (cfg.lane_width / 2)
                pg.draw.line(bg, MARKING, *self._pts(np.stack([end - n, end + n])), 2)
        # zebra crossings
        for sid in r.crosswalks[::2]:
            a, b = r.points[sid, 0, :2], r.points[sid, r.n_points[sid] - 1, :2]
            along = (b - a) / max(np.linalg.norm(b - a), 1e-9)
            across = np.array([-along[1], along[0]]) * (cfg.crosswalk_width / 2)
            n_stripes = max(3, int(np.linalg.norm(b - a) / 1.0))
            for k in range(1, n_stripes, 2):
                p0 = a + (b - a) * k / n_stripes
                p1 = a + (b - a) * (k + 0.6) / n_stripes
                poly = np.stack([p0 - across, p1 - across, p1 + across, p0 + across])
                pg.draw.polygon(bg, MARKING, self._pts(poly))
        return bg

    def _rect(self, surf, colour, x0, y0, x1, y1, inset: float = 0.0, width: int = 0) -> None:
        p = self.world_to_px(np.array([[x0 + inset, y1 - inset], [x1 - inset, y0 + inset]]))
        w, h = p[1] - p[0]
        if w > 0 and h > 0:
            self.pg.draw.rect(surf, colour, self.pg.Rect(p[0, 0], p[0, 1], w, h), width)

    # ------------------------------------------------------------------ dynamic scene
    def route(self, sim: Any, w: int, c: int) -> np.ndarray:
        """Remaining shortest route of controlled car ``c`` to its goal, ``(P, 2)`` [m]."""
        r = self.road
        dest = int(sim.dest[w, c])
        seg = int(sim.ref_seg[w, c]) if hasattr(sim, "ref_seg") else int(max(sim.seg[w, c], 0))
        s = float(sim.ref_s[w, c]) if hasattr(sim, "ref_s") else float(sim.s[w, c])
        pieces = []
        goal_seg = int(r.exits[dest])
        for _ in range(64):
            k0 = min(int(s / 0.5), r.n_points[seg] - 1)
            pieces.append(r.points[seg, k0 : r.n_points[seg], :2])
            if seg == goal_seg:
                break
            t = int(r.best_turn[dest, seg]) if r.node[seg] >= 0 and r.kind[seg] == LINK else 0
            nxt = int(r.succ[seg, max(t, 0)])
            if nxt < 0 or r.kind[nxt] == CROSSWALK:
                break
            seg, s = nxt, 0.0
        return np.concatenate(pieces) if pieces else np.zeros((0, 2))

    def draw(
        self, sim: Any, w: int = 0, c: int = 0, paths: Sequence[Sequence[tuple[float, float]]] = (),
        overlays: Iterable[Callable] = (),
    ) -> np.ndarray:  # fmt: skip
        pg, cfg = self.pg, self.config
        surf = self.surface
        surf.blit(self.background, (0, 0))
        ego_alive = bool(sim.alive[w, c]) or not bool(sim.done[w, c])
        # route and goal
        goal = self.road.goal[int(sim.dest[w, c])]
        route = self.route(sim, w, c)
        route = _thin(route)
        if len(route) > 1 and not sim.done[w, c]:
            pg.draw.lines(surf, ROUTE, False, self._pts(route), 2)
        gp = self.world_to_px(goal[:2])
        pg.draw.circle(surf, GOAL, gp, max(4, int(cfg.arrive_radius * self.scale)), 2)
        # past path
        if c < len(paths) and len(paths[c]) > 1:
            pg.draw.lines(surf, PATH, False, self._pts(np.asarray(paths[c])), 2)
        # field-of-view cones of the observers that see the ego
        visible = sim.last.visible[w, c] if sim.last is not None else np.zeros(sim.A, bool)
        cone = pg.Surface((self.width, self.height), pg.SRCALPHA)
        fovs = {1: cfg.fov_car, 0: cfg.fov_car, 2: cfg.fov_pedestrian, 3: cfg.fov_cyclist}
        ranges = {1: cfg.range_car, 0: cfg.range_car, 2: cfg.range_pedestrian, 3: cfg.range_cyclist}
        ego_xy = np.array([sim.x[w, c], sim.y[w, c]])
        for j in np.nonzero(visible & sim.alive[w])[0]:
            k = int(sim.kind[w, j])
            fov, rng = fovs[k], ranges[k]
            angs = sim.h[w, j] + np.linspace(-fov / 2, fov / 2, 17)
            pts = np.concatenate(
                [[[sim.x[w, j], sim.y[w, j]]], np.stack([sim.x[w, j] + rng * np.cos(angs), sim.y[w, j] + rng * np.sin(angs)], 1)]
            )  # fmt: skip
            pg.draw.polygon(cone, FOV, self._pts(pts))
            pg.draw.line(cone, (255, 255, 255, 140), *self._pts(np.stack([pts[0], ego_xy])), 1)
        surf.blit(cone, (0, 0))
        # road users
        for j in np.nonzero(sim.alive[w])[0]:
            k = int(sim.kind[w, j])
            colour = EGO if j == c else KIND_COLOURS[k]
            cx, cy, cs, sn = sim.x[w, j], sim.y[w, j], sim.cos[w, j], sim.sin[w, j]
            if k == 2:
                p = self.world_to_px(np.array([cx, cy]))
                rad = max(3, int(0.5 * self.scale))
                pg.draw.circle(surf, colour, p, rad)
                if visible[j]:
                    pg.draw.circle(surf, SEEN_EDGE, p, rad, 1)
                continue
            half_l, half_w = sim.length[w, j] / 2, sim.width[w, j] / 2
            corners = np.array(
                [[half_l, half_w], [half_l, -half_w], [-half_l, -half_w], [-half_l, half_w]]
            )
            world = np.stack(
                [cx + cs * corners[:, 0] - sn * corners[:, 1], cy + sn * corners[:, 0] + cs * corners[:, 1]], 1
            )  # fmt: skip
            pts = self._pts(world)
            pg.draw.polygon(surf, colour, pts)
            pg.draw.polygon(surf, SEEN_EDGE if visible[j] else (20, 20, 20), pts, 1)
            nose = self._pts(np.array([[cx + cs * half_l, cy + sn * half_l]]))[0]
            pg.draw.circle(surf, (250, 250, 250), nose, 2)
        for fn in overlays:
            fn(surf, self.world_to_px)
        if self.font is not None:
            text = f"t={int(sim.t[w])}  v={sim.v[w, c]:.1f} m/s  seen by {int(visible.sum())}"
            if not ego_alive:
                text += "  (done)"
            surf.blit(self.font.render(text, True, (255, 255, 255)), (6, 6))
        return np.transpose(pg.surfarray.array3d(surf), (1, 0, 2)).copy()

    def show(self) -> None:
        """Blit the last frame to the window (``human`` mode), at ``render_fps``."""
        pg = self.pg
        if self.window is None:
            pg.display.init()
            self.window = pg.display.set_mode((self.width, self.height))
            pg.display.set_caption("bystander intersection")
            self.clock = pg.time.Clock()
        pg.event.pump()
        self.window.blit(self.surface, (0, 0))
        pg.display.flip()
        self.clock.tick(self.config.render_fps)

    def close(self) -> None:
        if self.window is not None:
            self.pg.display.quit()
            self.window = None


def save_video(frames: Sequence[np.ndarray], path: str | os.PathLike, fps: int = 10) -> str:
    """Write uint8 ``(H, W, 3)`` frames to ``path``: ``.gif`` (imageio) or ``.mp4``.

    MP4 needs the ``imageio-ffmpeg`` package; without it a clear ``RuntimeError`` says so.
    Returns the path written.
    """
    import imageio.v2 as imageio

    path = os.fspath(path)
    if not frames:
        raise ValueError("frames: expected at least one frame, got none")
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".gif", ".mp4"):
        raise ValueError(f"path: expected a .gif or .mp4 file name, got {path!r}")
    if ext == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError as err:
            raise RuntimeError(
                "save_video: .mp4 needs the imageio-ffmpeg package; use .gif"
            ) from err
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)  # an OSError naming the path if it cannot be
    tmp = os.path.join(folder, f".{name}.tmp{ext}")  # written whole, then moved in place
    try:
        if ext == ".gif":
            imageio.mimsave(tmp, list(frames), duration=1000.0 / fps, loop=0)
        else:
            imageio.mimwrite(tmp, list(frames), fps=fps)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def record_episode(
    env: Any, path: str | os.PathLike, policy: Callable[[Any], Any] | None = None,
    seed: int | None = None, max_steps: int | None = None, fps: int | None = None,
) -> dict[str, float]:  # fmt: skip
    """Run one episode of an ``rgb_array`` Gymnasium env and save it with :func:`save_video`.

    ``policy(obs) -> action`` (default: random actions). Returns ``{"steps", "return"}``.
    """
    if getattr(env, "render_mode", None) != "rgb_array":
        raise ValueError(
            f"env.render_mode: expected 'rgb_array', got {getattr(env, 'render_mode', None)!r}"
        )
    obs, _ = env.reset(seed=seed)
    frames = [env.render()]
    total, steps = 0.0, 0
    limit = max_steps if max_steps is not None else math.inf
    while steps < limit:
        action = policy(obs) if policy is not None else env.action_space.sample()
        obs, reward, term, trunc, _ = env.step(action)
        frames.append(env.render())
        total += float(reward)
        steps += 1
        if term or trunc:
            break
    save_video(frames, path, fps=fps or env.metadata.get("render_fps", 10))
    return {"steps": float(steps), "return": total}


def _thin(points: np.ndarray) -> np.ndarray:
    """Every other point of a polyline ``(P, 2)``, always keeping both ends."""
    if len(points) <= 2:
        return points
    thinned = points[::2]
    return thinned if len(points) % 2 == 1 else np.concatenate([thinned, points[-1:]])
