"""Validation of what predictors are, return and are given, with messages that name the
field and the expectation.

Shared by the per-stream tracker (:mod:`bystander.envs.tracker`), the array tracker
(:mod:`bystander.envs.batched_tracker`) and the type -> predictor table
(:class:`bystander.envs.scoring.PredictorTable`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bystander.envs.contract import Views

__all__ = ["check_dt", "check_errors", "check_predictions", "check_predictor", "name_of"]


def name_of(predictor: Any) -> str:
    """The class name of ``predictor``, for error messages."""
    return type(predictor).__name__


def check_predictor(predictor: Any, key: str) -> None:
    """Raise unless ``predictor`` (``predictors[key]``) is a usable Predictor: integer
    ``horizon`` / ``history`` >= 1 or None, ``predict`` + ``error`` (integer horizon) or
    ``score`` (``horizon=None``)."""
    for attr in ("horizon", "history"):
        if not hasattr(predictor, attr):
            raise TypeError(
                f"predictors[{key!r}] ({name_of(predictor)}): expected a Predictor with a "
                f"{attr!r} attribute (and predict/error or score methods)"
            )
    for attr in ("horizon", "history"):
        value = getattr(predictor, attr)
        if value is not None and (
            not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1
        ):
            raise ValueError(
                f"predictors[{key!r}] ({name_of(predictor)}).{attr}: expected an int >= 1 or "
                f"None, got {value!r}"
            )
    needed = ("predict", "error") if predictor.horizon is not None else ("score",)
    for method in needed:
        if not callable(getattr(predictor, method, None)):
            raise TypeError(
                f"predictors[{key!r}] ({name_of(predictor)}): expected a Predictor with a "
                f"{method}() method"
            )


def check_dt(dt: Any, name: str) -> float:
    """``dt`` as a finite float > 0 (seconds between ego states); ``name`` labels errors."""
    try:
        value = float(dt)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected seconds as a float, got {dt!r}") from exc
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a finite number > 0 (seconds), got {value}")
    return value


def check_errors(errors: Any, n: int, predictor: Any, method: str) -> np.ndarray:
    """``errors`` returned by ``predictor.<method>`` as finite float64 of shape ``(n,)``."""
    errors = np.asarray(errors, dtype=np.float64)
    if errors.shape != (n,):
        raise ValueError(
            f"{name_of(predictor)}.{method}: expected errors of shape ({n},), got {errors.shape}"
        )
    if not np.all(np.isfinite(errors)):
        raise ValueError(f"{name_of(predictor)}.{method}: returned non-finite errors {errors}")
    return errors


def check_predictions(preds: Any, views: Views, predictor: Any) -> np.ndarray:
    """``predictor.predict(views)`` output as an array: one prediction per view, of shape
    ``(B, H, D)`` or ``(B, K, H, D)`` for views of states ``(B, L, D)``, finite."""
    preds = np.asarray(preds)
    n = len(views)
    horizon = predictor.horizon
    if preds.ndim < 2 or preds.shape[0] != n:
        raise ValueError(
            f"{name_of(predictor)}.predict: expected {n} predictions (one per view) of "
            f"horizon {horizon}, got shape {preds.shape}"
        )
    if views.states.ndim == 3:
        d = views.states.shape[-1]
        if preds.ndim not in (3, 4) or preds.shape[-2:] != (horizon, d):
            raise ValueError(
                f"{name_of(predictor)}.predict: expected shape ({n}, {horizon}, {d}) or "
                f"({n}, K, {horizon}, {d}), got {preds.shape}"
            )
    if np.issubdtype(preds.dtype, np.floating) and not np.all(np.isfinite(preds)):
        raise ValueError(f"{name_of(predictor)}.predict: returned non-finite predictions")
    return preds
