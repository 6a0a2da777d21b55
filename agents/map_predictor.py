"""A map-aware, multi-modal trajectory predictor: route hypotheses with learned odds.

:class:`MapPredictor` implements :class:`bystander.envs.contract.Predictor` for
driving views. Road users know the route graph, so the observer's question is not
"where does the ego's velocity point" but "which way will it turn, and how fast will it
go". For each view it

1. maps the view's states back to the world frame with the observer's pose
   (:attr:`Views.poses`, filled in by the trackers; ``None`` means the states are
   already world-frame), because the road graph lives there;
2. matches the ego to a lane and rolls out ``K = 3 ** depth`` lane-following
   hypotheses, one per combination of turns at the next ``depth`` intersections, each
   with a speed profile from the seen speed and acceleration;
3. gives each hypothesis a logit ``w . phi_k`` from its features ``phi_k`` (turn
   one-hots, the turn near the intersection, agreement with a constant-turn-rate
   extrapolation over the first second; see
   :data:`~bystander.agents.map_hypotheses.FEATURE_NAMES`); duplicates (hypotheses
   that differ only in turns beyond the horizon) get probability 0;
4. maps the hypotheses back to the observer's frame and returns them ordered from the
   most to the least likely (ties: the straighter route first): ``(B, K, H, 2)`` m.

Steps 1-4 are one numba pass over the batch
(:func:`~bystander.agents.map_hypotheses.rollout_hypotheses`), like the
constant-velocity kernel; torch is used only by :meth:`MapPredictor.update`.

The learned distribution is a conditional logit (a linear softmax over hypotheses,
torch ``nn.Linear(N_FEATURES, 1)`` in :attr:`MapPredictor.net`). It starts *habit-blind*:
weight 1 on the agreement feature, 0 on the turn features, so only the seen motion
separates the hypotheses. :meth:`MapPredictor.update` takes one Adam step on the
mixture's negative log-likelihood of the true future (each hypothesis an isotropic
Gaussian tube around its positions, ``sigma(t) = sigma0 + sigma_rate * t``): the
hypotheses' trajectories are fixed, so the gradient moves probability to the routes
the ego really takes. Co-trained on an ego that always turns right, the right-turn
weights grow and the right-turn hypothesis becomes the most likely one on approach.

``error`` (the predictability cost) is, by default, the ADE of the *most likely* mode
(``error="top"``): it is what a bystander acting on its best guess suffers, and it
rewards an ego whose habits the observer has learned. ``error="min"`` gives minADE_K.
:meth:`MapPredictor.predict_modes` exposes the unsorted hypotheses with their
log-probabilities, :meth:`MapPredictor.nll` the mixture's negative log-likelihood.

Frozen use: :meth:`~MapPredictor.freeze` (``predictor.kind: map`` in a run config).
Co-training: ``predictor.kind: map_cotrained`` (the training loop calls ``update`` on
the pairs the tracker scored and syncs ``net`` to the env copies). The map comes from
the env config (:class:`~bystander.envs.intersection.config.IntersectionConfig`).

Design decisions and limits: the contract's views carried no observer pose, so
:class:`~bystander.envs.contract.Views` gained an optional ``poses`` field (the rigid
transform is exact, so predicting in the world frame and mapping back loses nothing).
The learned part is deliberately small: it learns *which route*, not *how fast*; the
speed law is shared by all hypotheses (no stops for queues or crossings, no turn speed
limits: the discrete ego keeps its target speed through turns). Beyond ``depth``
intersections every hypothesis goes straight, and at the map edge it stops. The cost
uses the predicted ranking, so it changes as soon as the weights do. With Adam the
logit weights move about ``lr`` per step: 0.05 learns a habit within tens of steps.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bystander.agents.map_hypotheses import N_FEATURES, MapArrays, rollout_hypotheses
from bystander.agents.predictors import TrajectoryPredictor, _check_int, check_views
from bystander.atomic import atomic_open
from bystander.envs.contract import Views
from bystander.envs.intersection.config import IntersectionConfig
from bystander.envs.intersection.road import RoadNetwork

__all__ = ["FORMAT", "MapPredictor"]

FORMAT = "bystander.MapPredictor"
"""Value of the ``format`` field in a saved file's header."""
_VERSION = 1
_ERRORS = ("top", "min")
_AGREEMENT = 6  # index of the agreement feature (prior weight 1)


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a positive number, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
    return float(value)


class MapPredictor(TrajectoryPredictor):
    """Route hypotheses on the road graph with a learned distribution (module docstring).

    Args:
        env_config: The map: an :class:`IntersectionConfig` or its dict (the run's
            ``env.config``); ``None`` for the intersection's defaults.
        horizon: Future positions predicted (int >= 1; 30 = 3 s at dt 0.1 s).
        history: Past states per view (int >= 1).
        depth: Intersections ahead whose turns are enumerated (int in [1, 4]);
            ``K = 3 ** depth`` modes.
        lr: Adam learning rate of the logit weights (> 0).
        sigma0: Positional spread of a hypothesis at ``t = 0`` [m] (> 0).
        sigma_rate: Growth of that spread [m/s] (> 0).
        error: ``"top"`` (ADE of the most likely mode) or ``"min"`` (minADE_K).
        max_speed: Speed cap of the speed profiles [m/s]; None: the env's ``ego_max_speed``.
        seed: Seeds nothing random today (the weights start at the prior); kept in the
            config for symmetry with the learned predictor.

    Attributes:
        frozen: When True, :meth:`update` is a no-op returning ``{}``.
        updates: Number of optimizer steps taken so far.
        net: ``nn.Linear(N_FEATURES, 1, bias=False)``: the logit weights.
    """

    def __init__(
        self,
        env_config: IntersectionConfig | Mapping[str, Any] | None = None,
        horizon: int = 30,
        history: int = 8,
        *,
        depth: int = 2,
        lr: float = 0.05,
        sigma0: float = 0.5,
        sigma_rate: float = 1.0,
        error: str = "top",
        max_speed: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(horizon, history)
        if env_config is not None and not isinstance(env_config, (IntersectionConfig, Mapping)):
            raise TypeError(
                f"env_config: expected an IntersectionConfig, a dict or None, "
                f"got {type(env_config).__name__}"
            )
        config = IntersectionConfig.from_dict(env_config)
        self.env_config = config.to_dict()
        self.depth = _check_int("depth", depth, 1)
        if self.depth > 4:
            raise ValueError(f"depth: expected an int in [1, 4] (K = 3 ** depth), got {depth}")
        self.lr = _positive("lr", lr)
        self.sigma0 = _positive("sigma0", sigma0)
        self.sigma_rate = _positive("sigma_rate", sigma_rate)
        if error not in _ERRORS:
            raise ValueError(f"error: expected one of {_ERRORS}, got {error!r}")
        self.error_kind = error
        self.max_speed = _positive(
            "max_speed", config.ego_max_speed if max_speed is None else max_speed
        )
        self.seed = _check_int("seed", seed, 0)
        self.arrays = MapArrays.from_road(RoadNetwork(config))
        # heading weight, bbox margin, ambiguity margin, speed tau, vmax, amax, lateral
        # decay, agreement sigma (see rollout_hypotheses)
        self._params = np.array(
            [25.0, 4.0, 1.0, 2.0, self.max_speed, config.max_accel, 1.0, 3.0], dtype=np.float64
        )
        self.net = nn.Linear(N_FEATURES, 1, bias=False).double()
        with torch.no_grad():
            self.net.weight.zero_()
            self.net.weight[0, _AGREEMENT] = 1.0
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        self.frozen = False
        self.updates = 0

    @property
    def modes(self) -> int:
        """Number of hypotheses ``K = 3 ** depth``."""
        return 3**self.depth

    # ------------------------------------------------------------------ config / io
    def config(self) -> dict[str, Any]:
        """Constructor arguments, as stored in a saved file's header."""
        return {
            "env_config": self.env_config,
            "horizon": self.horizon,
            "history": self.history,
            "depth": self.depth,
            "lr": self.lr,
            "sigma0": self.sigma0,
            "sigma_rate": self.sigma_rate,
            "error": self.error_kind,
            "max_speed": self.max_speed,
            "seed": self.seed,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write header, weights and optimizer state to ``path`` atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": FORMAT,
            "version": _VERSION,
            "config": self.config(),
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "frozen": self.frozen,
            "updates": self.updates,
        }
        with atomic_open(path) as fh:
            torch.save(payload, fh)
        return path

    @staticmethod
    def _read(path: str | os.PathLike[str]) -> dict[str, Any]:
        try:
            payload = torch.load(Path(path), map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as exc:  # a corrupt or foreign file
            raise ValueError(f"path: {path} is not a {FORMAT} file ({exc})") from exc
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError(f"path: {path} is not a {FORMAT} file (missing format header)")
        if payload.get("version") != _VERSION:
            raise ValueError(
                f"path: {path} has format version {payload.get('version')}, expected {_VERSION}"
            )
        return payload

    def load(self, path: str | os.PathLike[str]) -> MapPredictor:
        """Load weights, optimizer state and frozen flag saved by :meth:`save`.

        Raises:
            ValueError: not a saved map predictor, or its config differs (fields named).
        """
        payload = self._read(path)
        mine, theirs = self.config(), dict(payload["config"])
        diff = [k for k in mine if theirs.get(k) != mine.get(k)]
        if diff:
            raise ValueError(f"config mismatch loading {path}: {', '.join(diff)} differ")
        self.net.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.updates = int(payload["updates"])
        self.freeze() if payload["frozen"] else self.unfreeze()
        return self

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> MapPredictor:
        """Build a predictor with the configuration stored in ``path`` and load it."""
        return cls(**cls._read(path)["config"]).load(path)

    def freeze(self) -> MapPredictor:
        """Stop learning: :meth:`update` returns ``{}``."""
        self.frozen = True
        self.net.requires_grad_(False)
        return self

    def unfreeze(self) -> MapPredictor:
        """Resume learning via :meth:`update`."""
        self.frozen = False
        self.net.requires_grad_(True)
        return self

    # ------------------------------------------------------------------ model
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_tables", None)  # rebuilt on demand (numpy copies of the map)
        return state

    def _run(
        self, views: Views, horizon: int | None, ranked: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The kernel on ``views``: hypotheses ``(B, K, H, 2)`` in the views' frames,
        log-probabilities ``(B, K)``, features ``(B, K, F)`` and valid ``(B, K)``."""
        states, mask, dt = check_views(views)
        h = int(self.horizon) if horizon is None else _check_int("horizon", horizon, 1)
        b = states.shape[0]
        poses = views.poses
        if poses is not None:
            poses = np.asarray(poses, dtype=np.float64)
            if poses.shape != (b, 3) or not np.isfinite(poses).all():
                raise ValueError(
                    f"views.poses: expected finite observer poses of shape ({b}, 3) "
                    f"(x [m], y [m], heading [rad]) or None, got shape {poses.shape}"
                )
        tables = self.__dict__.get("_tables")
        if tables is None:
            a = self.arrays
            pts = np.ascontiguousarray(np.concatenate([a.points, a.heading], axis=-1))
            tables = self._tables = (pts, a.table_f, a.table_i)
        weights = self.net.weight.detach().numpy()[0]
        return rollout_hypotheses(
            self.arrays, states, mask, poses, dt, h, self.depth, self._params, weights,
            ranked, tables,
        )  # fmt: skip

    def predict_modes(
        self, views: Views, horizon: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """All hypotheses ``(B, K, H, 2)`` [m] in the views' frames (fixed order: mode ``k``
        turns ``digit_i(k)`` at the ``i``-th intersection ahead) and their log-probabilities
        ``(B, K)`` (``-inf`` for duplicates). ``horizon`` overrides :attr:`horizon`."""
        traj, logp, _, _ = self._run(views, horizon, ranked=False)
        return traj, logp

    def predict_ranked(
        self, views: Views, horizon: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`predict_modes`, most likely first (ties: the straighter route first)."""
        traj, logp, _, _ = self._run(views, horizon, ranked=True)
        return traj, logp

    def predict(self, views: Views) -> np.ndarray:
        """Hypotheses ``(B, K, horizon, 2)`` [m], each view in its own frame, most likely
        first (ties: the straighter route first)."""
        return self._run(views, None, ranked=True)[0]

    def error(
        self, predictions: np.ndarray, truth: np.ndarray, views: Views | None = None
    ) -> np.ndarray:
        """Per view ``(B,)`` [m]: ADE of the first (most likely) mode of ``predictions``
        ``(B, [K,] H, 2)`` against ``truth`` ``(B, H, D)``, or minADE_K with ``error="min"``."""
        predictions = np.asarray(predictions, dtype=np.float64)
        if self.error_kind == "top" and predictions.ndim == 4:
            predictions = predictions[:, :1]
        return super().error(predictions, truth, views)

    def _sigma(self, h: int, dt: float) -> np.ndarray:
        return self.sigma0 + self.sigma_rate * dt * np.arange(1, h + 1)

    def _check_truth(self, truth: np.ndarray, n: int, h: int) -> np.ndarray:
        truth = np.asarray(truth, dtype=np.float64)
        if truth.ndim != 3 or truth.shape[:2] != (n, h) or truth.shape[2] < 2:
            raise ValueError(f"truth: expected shape ({n}, {h}, D>=2) metres, got {truth.shape}")
        if not np.isfinite(truth[..., :2]).all():
            raise ValueError("truth: expected finite positions")
        return truth[..., :2]

    def _mode_loglik(self, traj: np.ndarray, truth: np.ndarray, dt: float) -> np.ndarray:
        """Log-likelihood ``(B, K)`` of ``truth`` ``(B, H, 2)`` under each hypothesis' tube."""
        sig = self._sigma(traj.shape[2], dt)
        d2 = ((traj - truth[:, None]) ** 2).sum(-1)  # (B, K, H)
        return (-0.5 * d2 / sig**2 - np.log(2 * np.pi * sig**2)).sum(-1)

    def nll(self, views: Views, truth: np.ndarray) -> np.ndarray:
        """The mixture's negative log-likelihood of ``truth`` ``(B, H, D)`` [m], nats per
        trajectory, ``(B,)`` (``H`` = ``truth.shape[1]``)."""
        h = int(np.asarray(truth).shape[1]) if np.asarray(truth).ndim == 3 else -1
        truth = self._check_truth(truth, len(views), h)
        traj, logp = self.predict_modes(views, h)
        joint = logp + self._mode_loglik(traj, truth, float(views.dt))
        top = joint.max(axis=1, keepdims=True)
        lse = top[:, 0] + np.log(np.exp(joint - top).sum(axis=1))
        return -lse

    def update(self, views: Views, truth: np.ndarray) -> dict[str, float]:
        """One Adam step on the mixture NLL (nats per trajectory) of (views, truth ``(B, H, D)``).

        Returns:
            ``{"loss": NLL before the step, "n": B}``; ``{}`` when frozen.
        """
        if self.frozen:
            return {}
        truth = self._check_truth(truth, len(views), int(self.horizon))
        if len(views) == 0:
            return {"loss": float("nan"), "n": 0}
        traj, _, feats, valid = self._run(views, None, ranked=False)
        ll = torch.from_numpy(self._mode_loglik(traj, truth, float(views.dt)))
        logits = self.net(torch.from_numpy(feats))[..., 0]
        logits = logits.masked_fill(~torch.from_numpy(valid), -torch.inf)
        logp = torch.log_softmax(logits, dim=1)
        loss = -torch.logsumexp(logp + ll, dim=1).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.updates += 1
        return {"loss": float(loss.detach()), "n": len(views)}

    def __repr__(self) -> str:
        return (
            f"MapPredictor(grid={tuple(self.env_config['grid'])}, horizon={self.horizon}, "
            f"history={self.history}, depth={self.depth}, error={self.error_kind!r}, "
            f"frozen={self.frozen})"
        )
