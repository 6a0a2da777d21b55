"""Physics predictors of the ego's trajectory: constant velocity and constant turn rate.

Both implement :class:`bystander.envs.contract.Predictor` for the driving domain. A
prediction is made from a batch of :class:`~bystander.envs.contract.Views`: each
view is one observer's masked history of the ego's positions in that observer's
frame, ``states`` ``(B, L, D >= 2)`` metres (first two columns ``x, y``; extra
columns are ignored), ``mask`` ``(B, L)`` bool, the last entry being "now". Unseen
entries are ignored: the motion is estimated from the last *seen* states with the
real time gap between them (``views.dt`` seconds per entry), and extrapolated from
the last seen position to ``now + k * dt`` for ``k = 1..horizon``. Predictions are
``(B, horizon, 2)`` metres in the same frame; errors are ADE in metres
(:func:`bystander.agents.metrics.ade`, minADE_k for ``(B, K, H, 2)`` predictions).

Fallbacks: one seen state -> the ego is predicted to stand still there; no seen state
-> the ego is predicted at the observer's own origin (the wrapper never asks for a
view without a seen state, since only observers that currently see the ego predict).

Everything is vectorised over the batch (no Python loop over views). Schoeller et
al. (2020), "What the Constant Velocity Model Can Teach Us About Pedestrian Motion
Prediction", show how hard this floor is to beat.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bystander.agents.metrics import ade
from bystander.envs.contract import Views

__all__ = [
    "ConstantTurnRatePredictor",
    "ConstantVelocityPredictor",
    "TrajectoryPredictor",
    "check_views",
    "constant_velocity",
    "constant_velocity_parts",
    "seen_indices",
]


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int >= {minimum}, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return int(value)


def check_views(views: Views) -> tuple[np.ndarray, np.ndarray, float]:
    """Validate driving views; return ``states`` ``(B, L, 2)`` float64, ``mask`` ``(B, L)``, ``dt``.

    Raises:
        TypeError: ``views`` is not a :class:`Views`.
        ValueError: a field has the wrong shape or a non-finite / non-positive value.
    """
    if not isinstance(views, Views):
        raise TypeError(
            f"views: expected a bystander.envs.contract.Views, got {type(views).__name__}"
        )
    states = np.asarray(views.states)
    mask = np.asarray(views.mask)
    if states.ndim != 3 or states.shape[2] < 2:
        raise ValueError(f"views.states: expected shape (B, L, D>=2) metres, got {states.shape}")
    if mask.shape != states.shape[:2]:
        raise ValueError(f"views.mask: expected shape {states.shape[:2]} (B, L), got {mask.shape}")
    if mask.dtype != np.bool_:
        raise ValueError(f"views.mask: expected dtype bool, got {mask.dtype}")
    dt = float(views.dt)
    if not (np.isfinite(dt) and dt > 0):
        raise ValueError(f"views.dt: expected a positive number of seconds, got {views.dt}")
    states = states[..., :2].astype(np.float64, copy=False)
    # all finite (the usual case) is one cheap pass; else only seen entries must be
    if not np.isfinite(states).all() and not np.isfinite(states[mask]).all():
        raise ValueError("views.states: seen entries must be finite")
    return states, mask, dt


def seen_indices(mask: np.ndarray, count: int = 3) -> np.ndarray:
    """Indices of the last ``count`` seen entries per row, newest first, ``(count, B)`` int.

    ``result[0]`` is the last seen index, ``result[1]`` the one before, ...; ``-1``
    where a row has fewer seen entries.
    """
    b, length = mask.shape
    idx = np.broadcast_to(np.arange(length), (b, length))
    out = np.full((count, b), -1, dtype=np.int64)
    remaining = mask.copy()
    for j in range(count):  # loop over the (tiny) count, not over the batch
        last = np.where(remaining, idx, -1).max(axis=1) if length else np.full(b, -1)
        out[j] = last
        remaining &= idx < last[:, None]
    return out


def _gather(states: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``states[b, index[b]]`` ``(B, 2)`` with zeros where ``index`` is -1."""
    rows = np.arange(states.shape[0])
    out = states[rows, np.maximum(index, 0)]
    return np.where((index >= 0)[:, None], out, 0.0)


def _finite_diff_velocity(
    states: np.ndarray, newer: np.ndarray, older: np.ndarray, dt: float
) -> np.ndarray:
    """Velocity ``(B, 2)`` m/s between two seen entries (zeros where one is missing)."""
    ok = (newer >= 0) & (older >= 0)
    gap = np.where(ok, newer - older, 1).astype(np.float64) * dt
    v = (_gather(states, newer) - _gather(states, older)) / gap[:, None]
    return np.where(ok[:, None], v, 0.0)


def constant_velocity(states: np.ndarray, mask: np.ndarray, dt: float, horizon: int) -> np.ndarray:
    """Constant-velocity extrapolation, ``(B, horizon, 2)`` metres (see module docstring)."""
    return constant_velocity_parts(states, mask, dt, horizon)[0]


def constant_velocity_parts(
    states: np.ndarray, mask: np.ndarray, dt: float, horizon: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CV prediction ``(B, H, 2)``, last seen index ``(B,)``, last seen position ``(B, 2)``
    and velocity ``(B, 2)`` m/s (zeros with fewer than two seen entries).

    One compiled pass over the batch (numba); the arithmetic is that of
    :func:`seen_indices`, :func:`_gather` and :func:`_finite_diff_velocity`.
    """
    b = states.shape[0]
    out = np.empty((b, int(horizon), 2))
    last = np.empty(b, dtype=np.int64)
    pos = np.empty((b, 2))
    v = np.empty((b, 2))
    _cv_kernel(
        np.ascontiguousarray(states[..., :2], dtype=np.float64),
        np.ascontiguousarray(mask, dtype=np.bool_),
        float(dt),
        out,
        last,
        pos,
        v,
    )
    return out, last, pos, v


@njit(cache=True)
def _cv_kernel(states, mask, dt, out, last_out, pos_out, v_out):  # pragma: no cover - jit
    n, length = mask.shape
    horizon = out.shape[1]
    for b in range(n):
        last = -1
        prev = -1
        for j in range(length - 1, -1, -1):
            if mask[b, j]:
                if last < 0:
                    last = j
                else:
                    prev = j
                    break
        px = 0.0
        py = 0.0
        if last >= 0:
            px = states[b, last, 0]
            py = states[b, last, 1]
        vx = 0.0
        vy = 0.0
        if last >= 0 and prev >= 0:
            gap = float(last - prev) * dt
            vx = (px - states[b, prev, 0]) / gap
            vy = (py - states[b, prev, 1]) / gap
        last_out[b] = last
        pos_out[b, 0] = px
        pos_out[b, 1] = py
        v_out[b, 0] = vx
        v_out[b, 1] = vy
        for k in range(horizon):
            t = float((length - 1 - last) + (k + 1)) * dt if last >= 0 else 0.0
            out[b, k, 0] = px + vx * t
            out[b, k, 1] = py + vy * t


class TrajectoryPredictor:
    """Shared plumbing for driving predictors: validated ``horizon``/``history``, ADE error.

    Subclasses implement :meth:`predict`. ``error`` is ADE (minADE_k for K modes) in
    metres, ``score`` is ``error(predict(views), truth, views)``, and ``update`` is a
    no-op returning ``{}`` (physics models do not learn).

    Args:
        horizon: Number of future positions predicted (int >= 1; 10 = 1 s at dt 0.1 s).
        history: Number of past states (including now) a view should hold (int >= 1).
    """

    unit = "m"

    def __init__(self, horizon: int = 10, history: int = 8) -> None:
        self.horizon: int | None = _check_int("horizon", horizon, 1)
        self.history: int | None = _check_int("history", history, 1)

    def predict(self, views: Views) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def error(
        self, predictions: np.ndarray, truth: np.ndarray, views: Views | None = None
    ) -> np.ndarray:
        """ADE per view ``(B,)`` metres of ``predictions`` ``(B, [K,] H, 2)`` vs ``truth`` ``(B, H, D)``."""
        truth = np.asarray(truth, dtype=np.float64)
        if truth.ndim != 3 or truth.shape[2] < 2:
            raise ValueError(f"truth: expected shape (B, H, D>=2) metres, got {truth.shape}")
        return ade(predictions, truth[..., :2])

    def score(self, views: Views, truth: np.ndarray) -> np.ndarray:
        """``error(predict(views), truth, views)``: ADE per view, ``(B,)`` metres."""
        return self.error(self.predict(views), truth, views)

    def update(self, views: Views, truth: np.ndarray) -> dict[str, float]:
        """Physics predictors do not learn: returns ``{}``."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(horizon={self.horizon}, history={self.history})"


class ConstantVelocityPredictor(TrajectoryPredictor):
    """The ego keeps the velocity of its last two seen positions.

    ``v = (p[i] - p[j]) / ((i - j) * dt)`` for the last two seen entries ``j < i``;
    the prediction at ``now + k*dt`` is ``p[i] + v * (L - 1 - i + k) * dt``. One
    seen entry: zero velocity.
    """

    def predict(self, views: Views) -> np.ndarray:
        """Predict ``(B, horizon, 2)`` positions in metres, each view in its own frame."""
        states, mask, dt = check_views(views)
        return constant_velocity(states, mask, dt, int(self.horizon))


class ConstantTurnRatePredictor(TrajectoryPredictor):
    """Constant speed and turn rate (CTRV) from the last three seen positions.

    The two finite-difference velocities ``v1`` (older) and ``v2`` (newer) give a
    heading change over the time between their midpoints: the turn rate ``omega``
    (rad/s), clamped to ``max_turn_rate``. Speed is ``|v2|`` corrected from chord to arc length; the heading at the last
    seen entry is ``angle(v2)`` advanced by ``omega`` over half of ``v2``'s interval.
    The ego then moves on a circular arc. With fewer than three seen entries, or a
    speed below ``min_speed`` (heading undefined), it falls back to constant velocity.

    Args:
        horizon: Future positions predicted (int >= 1).
        history: Past states per view (int >= 1).
        max_turn_rate: Largest turn rate in rad/s (> 0); guards against noise at low speed.
        min_speed: Speed in m/s below which the turn rate is taken as 0 (>= 0).
    """

    def __init__(
        self,
        horizon: int = 10,
        history: int = 8,
        max_turn_rate: float = 1.5,
        min_speed: float = 0.5,
    ) -> None:
        super().__init__(horizon, history)
        if not (np.isfinite(max_turn_rate) and max_turn_rate > 0):
            raise ValueError(f"max_turn_rate: expected a positive rad/s, got {max_turn_rate}")
        if not (np.isfinite(min_speed) and min_speed >= 0):
            raise ValueError(f"min_speed: expected a non-negative m/s, got {min_speed}")
        self.max_turn_rate = float(max_turn_rate)
        self.min_speed = float(min_speed)

    def predict(self, views: Views) -> np.ndarray:
        """Predict ``(B, horizon, 2)`` positions in metres, each view in its own frame."""
        states, mask, dt = check_views(views)
        h = int(self.horizon)
        last, prev, prev2 = seen_indices(mask, 3)
        v2 = _finite_diff_velocity(states, last, prev, dt)
        v1 = _finite_diff_velocity(states, prev, prev2, dt)
        s1, s2 = np.hypot(v1[:, 0], v1[:, 1]), np.hypot(v2[:, 0], v2[:, 1])
        th1, th2 = np.arctan2(v1[:, 1], v1[:, 0]), np.arctan2(v2[:, 1], v2[:, 0])
        turning = (prev2 >= 0) & (s1 >= self.min_speed) & (s2 >= self.min_speed)
        # Time between the midpoints of the two finite-difference intervals, seconds.
        mid_gap = np.where(turning, (last - prev2).astype(np.float64) * 0.5 * dt, 1.0)
        dth = np.angle(np.exp(1j * (th2 - th1)))
        omega = np.where(
            turning, np.clip(dth / mid_gap, -self.max_turn_rate, self.max_turn_rate), 0.0
        )
        half = np.where(turning, (last - prev).astype(np.float64) * 0.5 * dt, 0.0)
        th0 = th2 + omega * half
        # A chord of an arc is shorter than the arc: speed = chord / (sinc of half the angle).
        s2 = s2 / np.sinc(omega * half / np.pi)
        length = mask.shape[1]
        t = ((length - 1 - last)[:, None] + np.arange(1, h + 1)[None, :]) * dt  # (B, H) s
        t = np.where((last >= 0)[:, None], t, 0.0)
        w = omega[:, None]
        small = np.abs(w) < 1e-6
        w_safe = np.where(small, 1.0, w)
        ang = th0[:, None] + w * t
        arc_x = np.where(
            small, t * np.cos(th0)[:, None], (np.sin(ang) - np.sin(th0)[:, None]) / w_safe
        )
        arc_y = np.where(
            small, t * np.sin(th0)[:, None], (np.cos(th0)[:, None] - np.cos(ang)) / w_safe
        )
        pos = _gather(states, last)
        out = np.empty((states.shape[0], h, 2))
        out[..., 0] = pos[:, None, 0] + s2[:, None] * arc_x
        out[..., 1] = pos[:, None, 1] + s2[:, None] * arc_y
        return out
