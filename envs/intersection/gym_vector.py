"""The batched intersection as a native Gymnasium ``VectorEnv``.

:class:`IntersectionVectorEnv` serves Gymnasium 1.x clients (CleanRL, Gymnasium's own
vector wrappers) with the batched simulator that :class:`IntersectionVecEnv` exposes to
SB3: ``N`` worlds stepped in one call. It is the ``vector_entry_point`` of
``bystander/Intersection-v0``::

    envs = gymnasium.make_vec("bystander/Intersection-v0", num_envs=64,
                              vectorization_mode="vector_entry_point", config={...})

Conventions (Gymnasium 1.x):

- ``metadata["autoreset_mode"] = AutoresetMode.SAME_STEP``: a world whose episode ends
  is reset within the same ``step``; the returned observation is the new episode's
  first, the last one is in ``infos["final_obs"]`` (an object array, entries where
  ``infos["_final_obs"]``), and the ending step's info in ``infos["final_info"]``, a
  dict of ``(N,)`` arrays with ``_key`` masks as Gymnasium 1.x lays it out (e.g.
  ``infos["final_info"]["episode_cost"][infos["_final_info"]]``).
- ``terminations`` and ``truncations`` are separate (``max_cycles`` truncates).
- ``reset(seed=s)`` seeds world ``i`` with ``s + i``: world ``i`` then plays the
  episodes of ``gymnasium.make("bystander/Intersection-v0")`` reset with that seed.
- ``infos`` is a dict of ``(N,)`` arrays with ``_key`` masks (all true, every world
  reports every key each step): ``cost``, ``costs`` (channel -> array), ``rewards``
  (component -> array), ``speed``, ``route_distance``, ``destination``, ``crashed``,
  ``arrived``, ``offroad``, ``left_map``; with ``predictors``, ``predictability`` and
  ``observers_scored`` too, and ``final_info`` carries the episode's figures
  (``episode_cost``, ``episode_prediction_error``...).
- The predictability and constraint layers are the SB3 path's own VecEnv layers
  (``predictors=``, ``wrappers=``), so the figures are the same by construction.

Units as the single env (metres, seconds, ``dt = 0.1`` s per step).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from bystander.dataconfig import is_int
from bystander.envs.contract import step_arrays
from bystander.envs.intersection.config import IntersectionConfig
from bystander.envs.intersection.vec_env import IntersectionVecEnv
from bystander.envs.vector import PredictabilityVecWrapper

__all__ = ["IntersectionVectorEnv"]

_NOT_FINAL_INFO = ("terminal_observation", "ego_step", "TimeLimit.truncated")
"""Keys of an ended episode's info that ``final_info`` leaves out (they have their own
place: ``final_obs``, the contract's report, ``truncations``)."""


class IntersectionVectorEnv(VectorEnv):
    """``num_envs`` intersection worlds in one simulator, as a Gymnasium ``VectorEnv``.

    Args:
        num_envs: Number of worlds ``N`` >= 1.
        config: Env config overrides (as ``gymnasium.make(..., config=...)``).
        render_mode: ``None`` or ``"rgb_array"`` (frames of world 0).
        predictors: The observers' predictor(s) (``None``: none): the
            :class:`~bystander.envs.vector.PredictabilityVecWrapper` layer, whose step
            values (``costs["predictability"]``, ``predictability``,
            ``observers_scored``) join ``infos``.
        wrappers: Further VecEnv layers ``venv -> venv`` in order, e.g.
            ``lambda v: LagrangianVecReward(v, multiplier)`` (its reward is returned).
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": ["rgb_array"]}

    def __init__(
        self,
        num_envs: int = 1,
        config: Mapping[str, Any] | IntersectionConfig | None = None,
        render_mode: str | None = None,
        *,
        predictors: Any = None,
        wrappers: Sequence[Callable[[Any], Any]] = (),
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode: expected None or 'rgb_array', got {render_mode!r}")
        cfg = IntersectionConfig.from_dict(config)
        if cfg.n_controlled != 1:
            raise ValueError(
                f"config.n_controlled: expected 1 (one ego per world: num_envs counts worlds), "
                f"got {cfg.n_controlled}; several cars per world: IntersectionVecEnv (SB3) "
                "or bystander.envs.intersection_v0 (PettingZoo)"
            )
        self._base = IntersectionVecEnv(num_envs, cfg, render_mode=render_mode, info_mode="lean")
        # the shared layers, as on the SB3 path (same code, same figures)
        self._venv: Any = self._base
        if predictors is not None:
            self._venv = PredictabilityVecWrapper(self._venv, predictors)
        for wrap in wrappers:
            if not callable(wrap):
                raise TypeError(f"wrappers: expected callables venv -> venv, got {wrap!r}")
            self._venv = wrap(self._venv)
        self.num_envs = self._base.num_envs
        self.render_mode = render_mode
        self.single_observation_space = self._venv.observation_space
        self.single_action_space = self._venv.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._mask = np.ones(self.num_envs, dtype=bool)

    @property
    def config(self) -> IntersectionConfig:
        """The worlds' :class:`IntersectionConfig`."""
        return self._base.config

    def reset(
        self,
        *,
        seed: int | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        """Reset every world; ``seed``: world ``i`` gets ``seed + i``."""
        if seed is not None:
            if not is_int(seed):
                raise TypeError(f"seed: expected an int (world i gets seed + i), got {seed!r}")
            self._base.seed(int(seed))
        if options:
            self._base.set_options(dict(options))
        obs = self._venv.reset()
        return obs, {}

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        obs, rewards, dones, lean_infos = self._venv.step(actions)
        dones = np.asarray(dones, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        infos = self._batched(step_arrays(self._venv))
        done_idx = np.flatnonzero(dones)
        if len(done_idx):
            final_obs = np.full(self.num_envs, None, dtype=object)
            final_info: dict[str, Any] = {}
            for i in done_idx.tolist():
                info = lean_infos[i]
                truncated[i] = bool(info.get("TimeLimit.truncated", False))
                final_obs[i] = info["terminal_observation"]
                ended = {k: v for k, v in info.items() if k not in _NOT_FINAL_INFO}
                final_info = self._add_info(final_info, ended, i)  # Gymnasium's own layout
            infos["final_obs"], infos["_final_obs"] = final_obs, dones.copy()
            infos["final_info"], infos["_final_info"] = final_info, dones.copy()
        terminated = dones & ~truncated
        return obs, np.asarray(rewards, dtype=np.float64), terminated, truncated, infos

    def _batched(self, arrays: Mapping[str, Any]) -> dict[str, Any]:
        """The step's values as ``(N,)`` arrays (scalars broadcast), with a ``_key`` mask
        beside every key at every level of nesting (every world reports every key)."""
        out: dict[str, Any] = {}
        for key, value in arrays.items():
            if isinstance(value, Mapping):
                out[key] = self._batched(value)
            else:
                arr = np.asarray(value)
                out[key] = np.full(self.num_envs, arr) if arr.ndim == 0 else arr
            out[f"_{key}"] = self._mask
        return out

    def render(self) -> np.ndarray | None:
        """uint8 ``(H, W, 3)`` frame of world 0 (``render_mode="rgb_array"``)."""
        if self.render_mode is None:
            return None
        return self._base.render_frame(0)

    def close_extras(self, **kwargs: Any) -> None:
        self._venv.close()
