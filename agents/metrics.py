"""Trajectory-prediction metrics in metres: ADE, FDE, minADE_k, minFDE_k, miss rate.

Shapes used throughout:

- ``pred``: ``(B, H, 2)`` (one mode) or ``(B, K, H, 2)`` (K modes), positions in
  metres in the same frame as ``truth``.
- ``truth``: ``(B, H, 2)``, the ego's real next ``H`` positions.

Every per-sample function returns a ``(B,)`` float64 array; for multi-modal
predictions the best mode per sample is taken (``minADE_k`` picks the mode with the
lowest ADE, ``minFDE_k`` the mode with the lowest FDE), as in the Argoverse and
nuScenes benchmarks. A *miss* is a sample whose (best-mode) final displacement
exceeds ``threshold`` metres (Argoverse's definition, default 2 m).

:func:`summarize` aggregates everything, overall and per observer type.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = [
    "MISS_THRESHOLD_M",
    "ade",
    "by_type",
    "displacement",
    "fde",
    "improvement",
    "min_ade_k",
    "min_fde_k",
    "miss",
    "miss_rate",
    "summarize",
]

MISS_THRESHOLD_M = 2.0
"""Default miss threshold in metres (final displacement)."""


def _as_modes(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return ``pred`` as ``(B, K, H, D)`` and ``truth`` as ``(B, H, D)``."""
    pred = np.asarray(pred, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if truth.ndim != 3:
        raise ValueError(f"truth: expected shape (B, H, D), got {truth.shape}")
    if pred.ndim == 3:
        pred = pred[:, None]
    if pred.ndim != 4:
        raise ValueError(f"pred: expected shape (B, H, D) or (B, K, H, D), got {pred.shape}")
    if pred.shape[0] != truth.shape[0] or pred.shape[2:] != truth.shape[1:]:
        raise ValueError(
            f"pred: shape {pred.shape} does not match truth {truth.shape} "
            "(expected (B, H, D) or (B, K, H, D) with the same B, H, D)"
        )
    return pred, truth


def displacement(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Euclidean distance per predicted point, ``(B, K, H)`` metres (K = 1 for one mode)."""
    pred, truth = _as_modes(pred, truth)
    diff = pred[..., :2] - truth[:, None, :, :2]
    if diff.shape[-1] == 2:  # x^2 + y^2 in that order: einsum's bits at a quarter of its cost
        dx, dy = diff[..., 0], diff[..., 1]
        return np.sqrt(dx * dx + dy * dy)
    return np.sqrt(np.einsum("bkhd,bkhd->bkh", diff, diff))


def ade(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Average displacement error per sample, ``(B,)`` metres (minADE_k for K modes)."""
    return displacement(pred, truth).mean(axis=2).min(axis=1)


def fde(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Final displacement error per sample, ``(B,)`` metres (minFDE_k for K modes)."""
    return displacement(pred, truth)[:, :, -1].min(axis=1)


def min_ade_k(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """minADE_k: the lowest ADE over the K modes, ``(B,)`` metres."""
    return ade(pred, truth)


def min_fde_k(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """minFDE_k: the lowest FDE over the K modes, ``(B,)`` metres."""
    return fde(pred, truth)


def miss(pred: np.ndarray, truth: np.ndarray, threshold: float = MISS_THRESHOLD_M) -> np.ndarray:
    """Whether each sample is a miss (best final displacement > ``threshold`` m), ``(B,)`` bool."""
    if not threshold > 0:
        raise ValueError(f"threshold: expected a positive distance in metres, got {threshold}")
    return fde(pred, truth) > threshold


def miss_rate(pred: np.ndarray, truth: np.ndarray, threshold: float = MISS_THRESHOLD_M) -> float:
    """Fraction of samples that are misses (see :func:`miss`), in [0, 1]; 0.0 for B = 0."""
    m = miss(pred, truth, threshold)
    return float(m.mean()) if m.size else 0.0


def by_type(values: np.ndarray, types: np.ndarray) -> dict[str, float]:
    """Mean of ``values`` ``(B,)`` per observer type ``(B,)``, types in sorted order."""
    values = np.asarray(values, dtype=np.float64)
    types = np.asarray(types)
    if values.shape != types.shape:
        raise ValueError(
            f"types: expected shape {values.shape} (one type per value), got {types.shape}"
        )
    return {str(t): float(values[types == t].mean()) for t in sorted(set(types.tolist()))}


def summarize(
    pred: np.ndarray,
    truth: np.ndarray,
    types: np.ndarray | None = None,
    threshold: float = MISS_THRESHOLD_M,
) -> dict[str, object]:
    """ADE, FDE (min over modes), miss rate and count, overall and per observer type.

    Returns:
        ``{"ade": m, "fde": m, "miss_rate": fraction, "n": count, "by_type":
        {type: {"ade", "fde", "miss_rate", "n"}}}`` (``by_type`` empty without
        ``types``). Keys ``min_ade_k``/``min_fde_k`` are added for K > 1 modes; they
        equal ``ade``/``fde`` then.
    """
    a, f = ade(pred, truth), fde(pred, truth)
    m = f > threshold
    k = 1 if np.asarray(pred).ndim == 3 else int(np.asarray(pred).shape[1])

    def block(sel: np.ndarray | slice) -> dict[str, float]:
        n = int(a[sel].size)
        out: dict[str, float] = {
            "ade": float(a[sel].mean()) if n else float("nan"),
            "fde": float(f[sel].mean()) if n else float("nan"),
            "miss_rate": float(m[sel].mean()) if n else float("nan"),
            "n": n,
        }
        if k > 1:
            out["min_ade_k"], out["min_fde_k"] = out["ade"], out["fde"]
        return out

    result: dict[str, object] = dict(block(slice(None)))
    per: dict[str, dict[str, float]] = {}
    if types is not None:
        types = np.asarray(types)
        if types.shape != a.shape:
            raise ValueError(f"types: expected shape {a.shape}, got {types.shape}")
        for t in sorted(set(types.tolist())):
            per[str(t)] = block(types == t)
    result["by_type"] = per
    return result


def improvement(baseline: Mapping[str, float], model: Mapping[str, float]) -> dict[str, float]:
    """Relative improvement of ``model`` over ``baseline`` per metric, ``1 - model/baseline``.

    Positive means the model's error is lower. Only the keys ``ade``, ``fde`` and
    ``miss_rate`` present in both are compared (a zero baseline gives 0.0).
    """
    out = {}
    for key in ("ade", "fde", "miss_rate"):
        if key in baseline and key in model:
            b = float(baseline[key])
            out[key] = 0.0 if b == 0 else 1.0 - float(model[key]) / b
    return out
