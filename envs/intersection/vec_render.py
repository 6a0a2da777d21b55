"""The rendering side of :class:`~bystander.envs.intersection.vec_env.IntersectionVecEnv`:
frames of one slot's world centred on its car, overlays drawn on every frame, and the
observers' view of a slot's ego. A mixin over the env's state (``sim``, ``config``,
``render_world``, ``render_mode``); pygame is imported at the first frame only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["VecRendering"]


class VecRendering:
    """Rendering methods of the batched env (see the module doc)."""

    sim: Any
    config: Any
    metadata: dict[str, Any]
    num_envs: int
    render_mode: str | None
    render_world: int
    overlays: list[Callable]
    _renderer: Any
    _path: Any
    _started: bool
    _C: int

    def observer_view(self, world: int = 0) -> dict:
        """Observers of slot ``world``'s ego this step, as the single env's ``observer_view``."""
        if not self._started:
            raise RuntimeError("observer_view() called before reset()")
        w, c = divmod(int(world), self._C)
        return self.sim.observer_view(w, c, self.sim.last.visible)

    def add_overlay(self, fn: Callable) -> None:
        """Draw ``fn(surface, world_to_px)`` on every rendered frame (after the scene)."""
        if not callable(fn):
            raise TypeError(
                f"add_overlay: expected a callable fn(surface, world_to_px), got {fn!r}"
            )
        self.overlays.append(fn)

    def clear_overlays(self) -> None:
        self.overlays.clear()

    def render_frame(self, world: int | None = None) -> np.ndarray:
        """uint8 ``(H, W, 3)`` frame of slot ``world``'s world, centred on its car
        (default ``render_world``).

        Works in any render mode (headless); the ego's past path is drawn only for
        ``render_world``.
        """
        if not self._started:
            raise RuntimeError("render called before reset()")
        w = self.render_world if world is None else int(world)
        if not 0 <= w < self.num_envs:
            raise ValueError(f"world: expected an int in [0, {self.num_envs}), got {w}")
        if self._renderer is None:
            from bystander.envs.intersection.render import Renderer

            self._renderer = Renderer(self.sim.road, self.config, human=self.render_mode == "human")
        paths = [self._path] if w == self.render_world else []
        wc = divmod(w, self._C)
        return self._renderer.draw(self.sim, w=wc[0], c=wc[1], paths=paths, overlays=self.overlays)

    def render(self, mode: str | None = None) -> np.ndarray | None:
        """Frame of world ``render_world``: returned (``rgb_array``) or shown (``human``)."""
        mode = mode or self.render_mode
        if mode is None:
            return None
        if mode not in self.metadata["render_modes"]:
            raise ValueError(f"mode: expected one of {self.metadata['render_modes']}, got {mode!r}")
        frame = self.render_frame()
        if mode == "human":
            if self.render_mode != "human":
                raise ValueError("render('human'): construct the env with render_mode='human'")
            self._renderer.show()
            return None
        return frame

    def get_images(self) -> Sequence[np.ndarray | None]:
        """One frame per world (costly for large ``N``: prefer :meth:`render`)."""
        return [self.render_frame(w) for w in range(self.num_envs)]
