"""A learned trajectory predictor (torch): residuals over constant velocity.

:class:`LearnedPredictor` implements :class:`bystander.envs.contract.Predictor` for
driving views (see :mod:`bystander.agents.predictors` for the view conventions).
For each view it

1. computes the constant-velocity (CV) prediction from the last two seen states
   (:func:`bystander.agents.predictors.constant_velocity`);
2. normalises the masked history: positions relative to the last seen position,
   rotated so that the CV heading points along +x (so the model is invariant to
   where the observer stands and how it is turned), divided by ``pos_scale``
   metres; unseen entries are zeroed and flagged by the mask channel;
3. runs a small MLP (or GRU) that outputs ``horizon`` 2-D residuals in that rotated,
   scaled frame (``modes`` sets of them for a K-modal predictor); the last layer
   starts at zero, so an untrained single-mode model *is* CV;
4. rotates the residuals back and adds them to the CV prediction.

It trains on (views, truth) pairs with an ADE loss in metres: pretrain with
:meth:`LearnedPredictor.fit` on collected rollouts (:mod:`bystander.agents.rollouts`)
and :meth:`~LearnedPredictor.freeze`, or co-train online with
:meth:`~LearnedPredictor.update` (one Adam step per call) on the pairs the
predictability tracker scored. :meth:`~LearnedPredictor.save` /
:meth:`~LearnedPredictor.load` keep weights and optimizer state in one file with a
config header; loading a file made with another configuration is refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from bystander.agents.predictors import (
    TrajectoryPredictor,
    _check_int,
    _gather,
    check_views,
    constant_velocity_parts,
)
from bystander.agents.torch_state import TorchPredictorState
from bystander.envs.contract import Views
from bystander.seeding import forked_torch_seed

__all__ = ["LearnedPredictor", "FORMAT"]

FORMAT = "bystander.LearnedPredictor"
"""Value of the ``format`` field in a saved file's header."""
_VERSION = 1
_ARCHS = ("mlp", "gru")
_STEP_FEATURES = 3  # x, y (rotated, scaled, relative to the last seen position), seen flag
_GLOBAL_FEATURES = 3  # CV speed / vel_scale, entries since last seen / history, seen fraction


class _Net(nn.Module):
    """Masked history ``(B, L, 3)`` + globals ``(B, 3)`` -> residuals ``(B, H * 2)``."""

    def __init__(
        self, arch: str, history: int, horizon: int, hidden: int, layers: int, modes: int
    ) -> None:
        super().__init__()
        self.arch = arch
        if arch == "gru":
            self.gru = nn.GRU(_STEP_FEATURES, hidden, batch_first=True)
            width = hidden + _GLOBAL_FEATURES
        else:
            width = history * _STEP_FEATURES + _GLOBAL_FEATURES
        body: list[nn.Module] = []
        for _ in range(layers):
            body += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.body = nn.Sequential(*body)
        self.head = nn.Linear(width, modes * horizon * 2)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        if modes > 1:  # spread the modes so that winner-takes-all training separates them
            with torch.no_grad():
                self.head.bias.normal_(0.0, 0.05)

    def forward(self, steps: torch.Tensor, globals_: torch.Tensor) -> torch.Tensor:
        if self.arch == "gru":
            _, h = self.gru(steps)
            x = torch.cat([h[-1], globals_], dim=1)
        else:
            x = torch.cat([steps.flatten(1), globals_], dim=1)
        return self.head(self.body(x))


class LearnedPredictor(TorchPredictorState, TrajectoryPredictor):
    """Small torch model predicting residuals over constant velocity (see module docstring).

    Args:
        horizon: Future positions predicted (int >= 1).
        history: Past states the model reads (int >= 2). Longer views keep their
            last ``history`` entries; shorter ones are padded as unseen.
        arch: ``"mlp"`` (default, fastest on CPU) or ``"gru"``.
        hidden: Hidden width (int >= 1).
        layers: Hidden layers after the (optional) GRU (int >= 1).
        lr: Adam learning rate (> 0).
        pos_scale: Metres mapped to 1.0 at the input and output (> 0).
        vel_scale: m/s mapped to 1.0 for the speed feature (> 0).
        seed: Seeds the initial weights and the shuffling in :meth:`fit`.
        modes: Number of predicted modes K (int >= 1). With K > 1, :meth:`predict`
            returns ``(B, K, H, 2)``, :meth:`error` is minADE_K and training is
            winner-takes-all (only the best mode of each sample learns); the modes
            start slightly spread around constant velocity.

    Attributes:
        frozen: When True, :meth:`update` is a no-op returning ``{}``.
        updates: Number of optimizer steps taken so far.
    """

    FORMAT = FORMAT  # the file header (TorchPredictorState)
    FORMAT_VERSION = _VERSION

    def __init__(
        self,
        horizon: int = 10,
        history: int = 8,
        *,
        arch: str = "mlp",
        hidden: int = 64,
        layers: int = 2,
        lr: float = 1e-3,
        pos_scale: float = 10.0,
        vel_scale: float = 10.0,
        seed: int = 0,
        modes: int = 1,
    ) -> None:
        super().__init__(horizon, _check_int("history", history, 2))
        if arch not in _ARCHS:
            raise ValueError(f"arch: expected one of {_ARCHS}, got {arch!r}")
        for name, value in (("lr", lr), ("pos_scale", pos_scale), ("vel_scale", vel_scale)):
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
                raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
        self.arch = arch
        self.hidden = _check_int("hidden", hidden, 1)
        self.layers = _check_int("layers", layers, 1)
        self.lr = float(lr)
        self.pos_scale = float(pos_scale)
        self.vel_scale = float(vel_scale)
        self.seed = _check_int("seed", seed, 0)
        self.modes = _check_int("modes", modes, 1)
        with forked_torch_seed(self.seed):
            self.net = _Net(
                arch, int(self.history), int(self.horizon), self.hidden, self.layers, self.modes
            )
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        self.frozen = False
        self.updates = 0

    # ------------------------------------------------------------------ config / io
    def config(self) -> dict[str, Any]:
        """Constructor arguments, as stored in a saved file's header."""
        return {
            "horizon": self.horizon,
            "history": self.history,
            "arch": self.arch,
            "hidden": self.hidden,
            "layers": self.layers,
            "lr": self.lr,
            "pos_scale": self.pos_scale,
            "vel_scale": self.vel_scale,
            "seed": self.seed,
            "modes": self.modes,
        }

    # ------------------------------------------------------------------ model
    def _features(self, views: Views) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
        """Normalised inputs plus the CV prediction ``(B, H, 2)`` and rotation ``(B, 2, 2)``."""
        states, mask, dt = check_views(views)
        hist = int(self.history)
        b, length = mask.shape
        if length >= hist:
            states, mask = states[:, -hist:], mask[:, -hist:]
        else:  # left-pad as unseen
            pad = hist - length
            states = np.concatenate([np.zeros((b, pad, 2)), states], axis=1)
            mask = np.concatenate([np.zeros((b, pad), bool), mask], axis=1)
        cv, last, anchor, v = constant_velocity_parts(states, mask, dt, int(self.horizon))
        speed = np.hypot(v[:, 0], v[:, 1])
        first = np.where(mask, np.arange(hist), hist).min(axis=1)
        span = anchor - _gather(states, np.where(first < hist, first, -1))
        heading = np.where(
            speed > 1e-3,
            np.arctan2(v[:, 1], v[:, 0]),
            np.where(
                np.hypot(span[:, 0], span[:, 1]) > 1e-3, np.arctan2(span[:, 1], span[:, 0]), 0.0
            ),
        )
        c, s = np.cos(heading), np.sin(heading)
        rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # local -> view frame
        rel = states - anchor[:, None, :]
        local = np.einsum("bji,blj->bli", rot, rel) / self.pos_scale  # rot^T @ rel
        local = np.where(mask[..., None], local, 0.0)
        steps = np.concatenate([local, mask[..., None].astype(np.float64)], axis=-1)
        since = np.where(last >= 0, hist - 1 - last, hist) / hist
        globals_ = np.stack([speed / self.vel_scale, since, mask.mean(axis=1)], axis=-1)
        return torch.from_numpy(steps), torch.from_numpy(globals_), cv, rot

    def _residual(self, steps: torch.Tensor, globals_: torch.Tensor) -> torch.Tensor:
        """Network output as residuals ``(B, K, H, 2)`` in metres, float64, local frame."""
        out = self.net(steps.float(), globals_.float()).double()
        return out.view(steps.shape[0], self.modes, int(self.horizon), 2) * self.pos_scale

    def predict(self, views: Views) -> np.ndarray:
        """Predict positions in metres, each view in its own frame: ``(B, horizon, 2)``, or
        ``(B, modes, horizon, 2)`` when ``modes > 1``."""
        steps, globals_, cv, rot = self._features(views)
        with torch.inference_mode():
            residual = self._residual(steps, globals_).numpy()
        pred = cv[:, None] + np.einsum("bij,bkhj->bkhi", rot, residual)
        return pred[:, 0] if self.modes == 1 else pred

    def _check_truth(self, truth: np.ndarray, n: int) -> torch.Tensor:
        truth = np.asarray(truth, dtype=np.float64)
        h = int(self.horizon)
        if truth.ndim != 3 or truth.shape[0] != n or truth.shape[1] != h or truth.shape[2] < 2:
            raise ValueError(f"truth: expected shape ({n}, {h}, D>=2) metres, got {truth.shape}")
        return torch.from_numpy(np.ascontiguousarray(truth[..., :2]))

    def _step(self, steps, globals_, cv, rot, truth) -> float:
        """One Adam step on the (min over modes) ADE loss in metres; returns the loss."""
        self.net.train()
        pred = cv[:, None] + torch.einsum("bij,bkhj->bkhi", rot, self._residual(steps, globals_))
        diff = pred - truth[:, None]
        ade = torch.sqrt((diff * diff).sum(-1) + 1e-6).mean(-1)  # (B, K)
        loss = ade.min(dim=1).values.mean()  # winner-takes-all for K > 1
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.updates += 1
        return float(loss.detach())

    def _prepare(self, views: Views, truth: np.ndarray) -> tuple[torch.Tensor, ...]:
        truth_t = self._check_truth(truth, len(views))
        steps, globals_, cv, rot = self._features(views)
        return steps, globals_, torch.from_numpy(cv), torch.from_numpy(rot), truth_t

    def update(self, views: Views, truth: np.ndarray) -> dict[str, float]:
        """One Adam step on the ADE loss (minADE_K for K modes) of (views, truth ``(B, H, D)``).

        Returns:
            ``{"loss": ADE in metres before the step, "n": B}``; ``{}`` when frozen.
        """
        if self.frozen:
            return {}
        if len(views) == 0:
            return {"loss": float("nan"), "n": 0}
        return {"loss": self._step(*self._prepare(views, truth)), "n": len(views)}

    def fit(
        self,
        views: Views,
        truth: np.ndarray,
        *,
        epochs: int = 20,
        batch_size: int = 256,
        val: tuple[Views, np.ndarray] | None = None,
        verbose: bool = False,
    ) -> list[dict[str, float]]:
        """Pretrain with minibatch Adam for ``epochs`` passes, shuffled from ``seed``.

        Args:
            views: Training views, ``B`` of them.
            truth: Their true next positions, ``(B, horizon, D)`` metres.
            epochs: Passes over the data (int >= 1).
            batch_size: Minibatch size (int >= 1).
            val: Optional held-out (views, truth) evaluated (ADE) after each epoch.
            verbose: Print one line per epoch.

        Returns:
            One record per epoch: ``{"epoch", "loss"}`` (mean training ADE, metres)
            plus ``"val_ade"`` with ``val``.
        """
        if self.frozen:
            raise RuntimeError("fit: the predictor is frozen; call unfreeze() first")
        epochs = _check_int("epochs", epochs, 1)
        batch_size = _check_int("batch_size", batch_size, 1)
        n = len(views)
        data = self._prepare(views, truth)
        rng = np.random.default_rng(self.seed)
        log = []
        for epoch in range(epochs):
            order = torch.from_numpy(rng.permutation(n))
            total = 0.0
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                total += self._step(*(x[idx] for x in data)) * len(idx)
            rec = {"epoch": epoch + 1, "loss": total / max(n, 1)}
            if val is not None:
                rec["val_ade"] = float(self.score(*val).mean())
            log.append(rec)
            if verbose:
                print(
                    ", ".join(
                        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in rec.items()
                    )
                )
        return log

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"LearnedPredictor({args}, frozen={self.frozen})"


def subset(views: Views, index: np.ndarray) -> Views:
    """Rows ``index`` of ``views`` (states, mask, types, ids, context), same ``dt``."""
    ctx = None if views.context is None else [views.context[i] for i in np.asarray(index)]
    return Views(
        states=np.asarray(views.states)[index],
        mask=np.asarray(views.mask)[index],
        observer_types=np.asarray(views.observer_types)[index],
        observer_ids=np.asarray(views.observer_ids)[index],
        dt=views.dt,
        context=ctx,
        poses=None if views.poses is None else np.asarray(views.poses)[index],
    )
