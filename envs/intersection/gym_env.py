"""Single-agent Gymnasium view: one ego car controlled, every other road user scripted.

Registered as ``bystander/Intersection-v0`` on ``import bystander.envs``::

    env = gymnasium.make("bystander/Intersection-v0", render_mode="rgb_array",
                         config={"action_type": "continuous"})
    obs, info = env.reset(seed=0, options={"config": {"grid": (2, 2)}})

``info`` keys: see :data:`bystander.envs.intersection.views.INFO_KEYS` (``ego_step`` with
the observers' view of the ego, ``rewards`` by component, ``costs`` / ``cost``,
``crashed``, ``arrived``...). The observers are also available, documented, from
:meth:`IntersectionEnv.observer_view`.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from bystander.envs.intersection.config import IntersectionConfig
from bystander.envs.intersection.views import WorldView, check_action, make_spaces, seed_from

__all__ = ["IntersectionEnv"]


class IntersectionEnv(gym.Env):
    """One ego car at an intersection (or a grid of them) among scripted traffic.

    Args:
        render_mode: ``None``, ``"human"`` (a pygame window, real time at ``render_fps``)
            or ``"rgb_array"`` (uint8 ``(H, W, 3)`` frames, works headless).
        config: Overrides of :class:`IntersectionConfig` fields (``n_controlled`` must be 1).

    Observation: see :meth:`bystander.envs.intersection.sim.IntersectionSim.observe`
    (vector, default), ``occupancy`` or a dict of both. Action: ``Discrete(6)``
    meta-actions (SLOWER, KEEP, FASTER, TURN_LEFT, GO_STRAIGHT, TURN_RIGHT),
    ``Discrete(12)`` for ``action_type="factored"`` (speed x turn intent, ``4 * speed +
    turn``), ``Discrete(len(speed_levels))`` for ``action_type="target_speed"`` (absolute
    target speeds, turns by the navigation) or ``Box(-1, 1, (2,))`` (acceleration,
    steering). Reward: the sum of
    ``info["rewards"]``. Episodes terminate on arrival, crash, leaving the road or the
    map, and truncate after ``max_cycles`` steps.
    """

    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": 10}

    def __init__(
        self, render_mode: str | None = None, config: dict | IntersectionConfig | None = None
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode: expected None or one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        self.render_mode = render_mode
        self._build(IntersectionConfig.from_dict(config))

    def _build(self, config: IntersectionConfig) -> None:
        if config.n_controlled != 1:
            raise ValueError(
                f"config.n_controlled: expected 1 for the single-agent Gymnasium view, got "
                f"{config.n_controlled} (use bystander.envs.intersection_v0 for several)"
            )
        old = getattr(self, "world", None)
        if old is not None:
            old.close()
        self.config = config
        self.world = WorldView(config, self.render_mode)
        self.observation_space, self.action_space = make_spaces(config)
        self.metadata = {**self.metadata, "render_fps": config.render_fps}
        self._out = None
        self._ended = False

    @property
    def sim(self):
        """The underlying :class:`~bystander.envs.intersection.sim.IntersectionSim` (N = 1)."""
        return self.world.sim

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options:
            unknown = sorted(set(options) - {"config"})
            if unknown:
                raise ValueError(f"options: unknown key(s) {unknown}; expected 'config'")
            if options.get("config"):
                self._build(self.config.replace(options["config"]))
        out = self.world.reset(seed_from(self.np_random))
        self._out = out
        self._ended = False
        if self.render_mode == "human":
            self.render()
        return self.world.observation(out, 0), self.world.info(out, 0, reset=True)

    def step(self, action: Any):
        if self._out is None:
            raise RuntimeError("step() called before reset()")
        if self._ended:
            raise RuntimeError("step() called after the episode ended; call reset()")
        a = check_action(action, self.config)
        out = self.world.step(np.asarray([a]))
        self._out = out
        # terminated (this car) or truncated (max_cycles): both end the episode
        self._ended = bool(out.terminated[0, 0]) or bool(out.truncated[0])
        obs = self.world.observation(out, 0)
        reward = float(out.rewards[0, 0].sum())
        info = self.world.info(out, 0)
        if self.render_mode == "human":
            self.render()
        return obs, reward, bool(out.terminated[0, 0]), bool(out.truncated[0]), info

    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; returning None")
            return None
        return self.world.render(0)

    def close(self) -> None:
        self.world.close()

    # ------------------------------------------------------------------ extras
    def observer_view(self) -> dict:
        """Every other road user as an observer of the ego, this step (sorted by id).

        Dict of arrays, ``M`` observers: ``ids (M,) int64`` (stable, never reused in an
        episode), ``types (M,)`` str (``"car"``, ``"pedestrian"``, ``"cyclist"``),
        ``visible (M,) bool`` (saw the ego: range, field of view, occlusion), ``poses
        (M, 3)`` observer ``(x [m], y [m], heading [rad])`` world frame, ``ego_in_frame
        (M, 2)`` the ego position in each observer's frame (+x ahead, +y left) [m],
        ``distance (M,)`` [m], ``slots (M,)`` simulator slots.
        """
        if self._out is None:
            raise RuntimeError("observer_view() called before reset()")
        return self.sim.observer_view(0, 0, self._out.visible)

    def add_overlay(self, fn) -> None:
        """Draw ``fn(surface, world_to_px)`` on every rendered frame (after the scene).

        ``world_to_px`` maps world points ``(..., 2)`` [m] to pixel coordinates ``(..., 2)``.
        """
        if not callable(fn):
            raise TypeError(
                f"add_overlay: expected a callable fn(surface, world_to_px), got {fn!r}"
            )
        self.world.overlays.append(fn)

    def clear_overlays(self) -> None:
        self.world.overlays.clear()
