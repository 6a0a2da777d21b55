"""Predictability of the ego to its observers, domain-agnostic.

One core, three shells:

- :class:`PredictabilityTracker` consumes the :class:`~bystander.envs.contract.EgoStep`
  reports of one episode stream, builds the observers' views, holds the pending
  predictions and scores them when their horizon has elapsed. It knows nothing of
  cars or tokens: only ego states, visibility, frames and the :class:`Predictor`
  protocol.
- :class:`PredictabilityReward` (Gymnasium wrapper), :class:`PredictabilityParallelWrapper`
  (PettingZoo ``ParallelEnv``, one tracker per agent that reports an ego step) and
  :class:`PredictabilityVecWrapper` (SB3 ``VecEnvWrapper``, one tracker per world) are
  thin shells over it. The two multi-stream shells batch every stream's requests so
  that each predictor gets ONE ``predict`` call and ONE ``error`` call per step for
  all worlds / agents and all observers (see :func:`run_requests`).

None of them changes the reward.

Scoring rules
-------------
Predictors with integer ``horizon`` H (driving):

- After each step (and after ``reset``), every observer that saw the ego's latest
  state gets a prediction: its view holds the last ``history`` ego states (the whole
  episode so far when ``history is None``) expressed in the observer's frame at that
  time (``FRAMES[ego_step.frame].to_frame`` with the observer's pose), with the
  observer's visibility as ``mask``. Early in an episode a view with integer history
  is left-padded with copies of the first state, masked out. Only the last state of a
  step triggers predictions (a step that reports several states predicts once).
- When H more ego states have arrived, the prediction is scored against those states
  (the truth), transformed with the same stored pose.
- An observer absent from the ``EgoStep`` at the step its prediction comes due (it
  despawned) has that prediction dropped. An observer that is absent for a step and
  comes back starts with no visibility history.
- At episode end (terminated or truncated) predictions not yet due are dropped, and
  no new predictions are made.

Predictors with ``horizon=None`` (text): once, at episode end, every observer present
in the final ``EgoStep`` that saw at least one ego state gets one ``score(views,
truth)`` call entry: ``views.states`` is the whole episode trajectory in the
observer's frame (final pose), ``views.mask`` its visibility, and ``truth`` the same
trajectory (same shape as ``views.states``).

Observer types without a predictor (no key and no ``"*"`` default) are not scored.
A step that reports zero new states (e.g. a :class:`~bystander.envs.review.ReviewGate`
escalation) scores and predicts nothing.

Info written (each step, by the shells)
---------------------------------------
``info["costs"][channel]``: mean error of the predictions scored this step (0.0 when
none); ``info["cost"]``: sum of ``info["costs"]`` (an env ``info["cost"]`` without a
``"costs"`` dict is kept as channel ``"env"``); ``info["predictability"]``: minus that
mean error; ``info["observers_scored"]``: number of predictions scored;
``info["prediction_error_by_type"]``: observer type -> mean error (types scored this
step only). At episode end additionally: ``info["episode_cost"]`` (sum of
``info["cost"]`` over the episode's steps), ``info["episode_costs"]`` (channel ->
sum), ``info["episode_prediction_error"]`` (mean error over all predictions scored in
the episode, 0.0 if none), ``info["episode_observers_scored"]`` and
``info["episode_prediction_error_by_type"]`` (type -> mean error over the episode).
Episode figures need the wrapper to see the end: let it wrap the ``TimeLimit`` (as
``PredictabilityReward(gym.make(...))`` does); a ``TimeLimit`` put around the wrapper
truncates episodes it never hears of (per-step figures stay right; the next ``reset``
starts afresh).

``Views.dt`` (seconds between ego states) comes from the ``dt`` argument, else the
env's ``unwrapped.dt``, else ``EgoStep.context["dt"]`` (the one context entry the
wrappers read), else 1.0.

Co-training
-----------
``on_scored(predictor, views, truth, errors)`` is called after each batched error /
score call with exactly what was scored (``truth`` in the views' frame). A
:class:`ScoredReplay` collects these so that a training loop can run
``predictor.update(views, truth)`` off the hot path.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from pettingzoo.utils import BaseParallelWrapper

from bystander.envs.contract import EGO_STEP_KEY, FRAMES, EgoStep, Predictor, Views

__all__ = [
    "PredictabilityParallelWrapper",
    "PredictabilityReward",
    "PredictabilityTracker",
    "PredictabilityVecWrapper",  # noqa: F822 - built lazily by __getattr__
    "ScoredReplay",
    "StepFigures",
    "StepRequests",
    "run_requests",
]

OnScored = Callable[[Predictor, Views, np.ndarray, np.ndarray], None]


# ------------------------------------------------------------------------ validation


def _name(predictor: Any) -> str:
    return type(predictor).__name__


def _check_predictor(predictor: Any, key: str) -> None:
    for attr in ("horizon", "history"):
        if not hasattr(predictor, attr):
            raise TypeError(
                f"predictors[{key!r}] ({_name(predictor)}): expected a Predictor with a "
                f"{attr!r} attribute (and predict/error or score methods)"
            )
    for attr in ("horizon", "history"):
        value = getattr(predictor, attr)
        if value is not None and (
            not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1
        ):
            raise ValueError(
                f"predictors[{key!r}] ({_name(predictor)}).{attr}: expected an int >= 1 or "
                f"None, got {value!r}"
            )
    needed = ("predict", "error") if predictor.horizon is not None else ("score",)
    for method in needed:
        if not callable(getattr(predictor, method, None)):
            raise TypeError(
                f"predictors[{key!r}] ({_name(predictor)}): expected a Predictor with a "
                f"{method}() method"
            )


def _check_dt(dt: Any, name: str) -> float:
    try:
        value = float(dt)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected seconds as a float, got {dt!r}") from exc
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a finite number > 0 (seconds), got {value}")
    return value


def _check_errors(errors: Any, n: int, predictor: Any, method: str) -> np.ndarray:
    errors = np.asarray(errors, dtype=np.float64)
    if errors.shape != (n,):
        raise ValueError(
            f"{_name(predictor)}.{method}: expected errors of shape ({n},), got {errors.shape}"
        )
    if not np.all(np.isfinite(errors)):
        raise ValueError(f"{_name(predictor)}.{method}: returned non-finite errors {errors}")
    return errors


def _check_predictions(preds: Any, views: Views, predictor: Any) -> np.ndarray:
    preds = np.asarray(preds)
    n = len(views)
    horizon = predictor.horizon
    if preds.ndim < 2 or preds.shape[0] != n:
        raise ValueError(
            f"{_name(predictor)}.predict: expected {n} predictions (one per view) of "
            f"horizon {horizon}, got shape {preds.shape}"
        )
    if views.states.ndim == 3:
        d = views.states.shape[-1]
        if preds.ndim not in (3, 4) or preds.shape[-2:] != (horizon, d):
            raise ValueError(
                f"{_name(predictor)}.predict: expected shape ({n}, {horizon}, {d}) or "
                f"({n}, K, {horizon}, {d}), got {preds.shape}"
            )
    if np.issubdtype(preds.dtype, np.floating) and not np.all(np.isfinite(preds)):
        raise ValueError(f"{_name(predictor)}.predict: returned non-finite predictions")
    return preds


# ---------------------------------------------------------------------- requests


@dataclass(slots=True)
class _PredictRequest:
    """A ``predict`` call; once committed, a pending prediction of the tracker.

    ``views.states`` is in the world frame until :func:`run_requests` maps every
    stream's views of a group to the observers' frames in one batched transform
    (``frame`` with ``poses``, one pose per view).
    """

    predictor: Any
    views: Views
    due: int  # absolute index of the last truth state
    poses: np.ndarray | None
    frame: str
    predictions: np.ndarray | None = None
    t_pred: int = -1  # absolute index of the ego state the prediction is made at
    epoch: int = -1  # tracker's observer-set epoch at commit (same epoch: all present)


@dataclass(slots=True)
class _ScoreRequest:
    """An ``error`` call (``predictions`` set) or a ``score`` call (horizon None).

    ``truth`` ``(B, H, ...)`` is in the world frame when ``truth_frame`` is set:
    :func:`run_requests` maps it to the views' frame (``truth_poses``, one per view) in
    one batched transform per group; ``views`` are already in the observers' frames.
    """

    predictor: Any
    views: Views
    truth: np.ndarray
    predictions: np.ndarray | None = None
    errors: np.ndarray | None = None
    truth_frame: str | None = None
    truth_poses: np.ndarray | None = None


@dataclass
class StepRequests:
    """What one stream needs from the predictors this step (filled in by :func:`run_requests`)."""

    predict: list[_PredictRequest] = field(default_factory=list)
    score: list[_ScoreRequest] = field(default_factory=list)
    done: bool = False


def _concat_views(views: Sequence[Views]) -> Views:
    if len(views) == 1:
        return views[0]
    contexts: list[Mapping[str, Any]] | None = None
    if any(v.context is not None for v in views):
        contexts = []
        for v in views:
            contexts.extend(v.context if v.context is not None else [{}] * len(v))
    return Views(
        states=np.concatenate([v.states for v in views]),
        mask=np.concatenate([v.mask for v in views]),
        observer_types=np.concatenate([v.observer_types for v in views]),
        observer_ids=np.concatenate([v.observer_ids for v in views]),
        dt=views[0].dt,
        context=contexts,
    )


def _group_key(req: _PredictRequest | _ScoreRequest) -> tuple:
    v = req.views
    key: tuple = (id(req.predictor), v.states.shape[1:], v.states.dtype.str, v.dt)
    if isinstance(req, _ScoreRequest):
        key += (req.truth.shape[1:], req.truth.dtype.str, req.truth_frame)
        if req.predictions is not None:
            key += (req.predictions.shape[1:],)
    else:
        key += (req.frame,)
    return key


def _to_frame(frame: str, states: np.ndarray, poses: Sequence[np.ndarray | None]) -> np.ndarray:
    """``FRAMES[frame].to_frame`` of the concatenated ``states`` ``(B, ...)`` with the
    requests' poses (elementwise, so one batched call equals one call per request)."""
    if poses[0] is None:
        pose = None
    else:
        pose = np.concatenate(poses) if len(poses) > 1 else poses[0]  # type: ignore[arg-type]
    out = np.asarray(FRAMES[frame].to_frame(states, pose))
    return out if out.flags.writeable else out.copy()


def run_requests(batches: Sequence[StepRequests], on_scored: OnScored | None = None) -> None:
    """Serve several streams' requests with one call per predictor and request kind.

    Requests of all ``batches`` for the same predictor are concatenated along the
    batch axis (views of different shapes, e.g. text trajectories of different
    lengths, go in separate calls), the predictor is called once, its output is
    validated and split back into the requests. The streams' views and truths are
    mapped from the world frame to the observers' frames here, in one batched
    transform per group (the transform is elementwise: same values as per stream).
    """
    predict_groups: dict[tuple, list[_PredictRequest]] = {}
    score_groups: dict[tuple, list[_ScoreRequest]] = {}
    for batch in batches:
        for req in batch.predict:
            predict_groups.setdefault(_group_key(req), []).append(req)
        for sreq in batch.score:
            score_groups.setdefault(_group_key(sreq), []).append(sreq)

    for reqs in predict_groups.values():
        predictor = reqs[0].predictor
        views = _concat_views([r.views for r in reqs])
        # world frame -> observers' frames, once for the whole group
        views.states = _to_frame(reqs[0].frame, views.states, [r.poses for r in reqs])
        preds = _check_predictions(predictor.predict(views), views, predictor)
        start = 0
        for r in reqs:
            b = len(r.views)
            r.views.states = views.states[start : start + b]
            r.predictions = preds[start : start + b]
            start += b

    for sreqs in score_groups.values():
        predictor = sreqs[0].predictor
        views = _concat_views([r.views for r in sreqs])
        truth = np.concatenate([r.truth for r in sreqs]) if len(sreqs) > 1 else sreqs[0].truth
        frame = sreqs[0].truth_frame
        if frame is not None:
            truth = _to_frame(frame, truth, [r.truth_poses for r in sreqs])
            start = 0
            for r in sreqs:
                b = len(r.views)
                r.truth, r.truth_frame, r.truth_poses = truth[start : start + b], None, None
                start += b
        if sreqs[0].predictions is None:
            method = "score"
            errors = predictor.score(views, truth)
        else:
            method = "error"
            preds = [r.predictions for r in sreqs]
            preds_all = np.concatenate(preds) if len(preds) > 1 else preds[0]
            errors = predictor.error(preds_all, truth, views)
        errors = _check_errors(errors, len(views), predictor, method)
        start = 0
        for r in sreqs:
            r.errors = errors[start : start + len(r.views)]
            start += len(r.views)
        if on_scored is not None:
            on_scored(predictor, views, truth, errors)


# ------------------------------------------------------------------------- figures

COMBINE = ("mean", "worst")
"""How observers' errors in one step combine into the step's cost."""


@dataclass
class StepFigures:
    """Per-step predictability figures of one stream.

    Attributes:
        error_sum: observer type -> sum of the errors of the predictions scored this
            step (unit of the predictor: metres, nats/token...).
        count: observer type -> number of predictions scored this step.
    """

    error_sum: dict[str, float] = field(default_factory=dict)
    count: dict[str, int] = field(default_factory=dict)
    worst_error: float = 0.0
    combine: str = "mean"

    @property
    def observers_scored(self) -> int:
        return sum(self.count.values())

    @property
    def mean_error(self) -> float:
        """Mean error over all predictions scored this step (0.0 when none)."""
        n = self.observers_scored
        return sum(self.error_sum.values()) / n if n else 0.0

    @property
    def error(self) -> float:
        """The step's cost: :attr:`mean_error`, or the worst observer's error when
        ``combine == "worst"`` (0.0 when nothing was scored)."""
        return self.worst_error if self.combine == "worst" else self.mean_error

    @property
    def predictability(self) -> float:
        """Minus :attr:`error` (0.0 when nothing was scored)."""
        return -self.error if self.count else 0.0

    @property
    def error_by_type(self) -> dict[str, float]:
        """Observer type -> mean error (types scored this step only)."""
        return {t: self.error_sum[t] / n for t, n in self.count.items()}


class ScoredReplay:
    """A bounded buffer of scored ``(predictor, views, truth)`` batches for co-training.

    Pass it as ``on_scored``; then, off the hot path::

        for predictor, views, truth in replay.drain():
            predictor.update(views, truth)
    """

    def __init__(self, capacity: int = 1024) -> None:
        if capacity < 1:
            raise ValueError(f"capacity: expected >= 1, got {capacity}")
        self.batches: deque[tuple[Predictor, Views, np.ndarray]] = deque(maxlen=capacity)

    def __call__(
        self, predictor: Predictor, views: Views, truth: np.ndarray, errors: np.ndarray
    ) -> None:
        self.batches.append((predictor, views, truth))

    def __len__(self) -> int:
        return len(self.batches)

    def drain(self) -> list[tuple[Predictor, Views, np.ndarray]]:
        out = list(self.batches)
        self.batches.clear()
        return out


# ------------------------------------------------------------------------- tracker


def _resolve_predictors(predictors: Predictor | Mapping[str, Predictor]) -> dict[str, Any]:
    if isinstance(predictors, Mapping):
        if not predictors:
            raise ValueError(
                "predictors: expected a Predictor or a non-empty dict type -> Predictor"
            )
        resolved = {str(k): p for k, p in predictors.items()}
    else:
        resolved = {"*": predictors}
    for key, p in resolved.items():
        if p is not None:  # None: observers of this type are not scored
            _check_predictor(p, key)
    if all(p is None for p in resolved.values()):
        raise ValueError("predictors: expected at least one Predictor, got only None")
    return resolved


class PredictabilityTracker:
    """Bookkeeping of one stream of :class:`EgoStep` reports (one world, one ego).

    Use :meth:`step` for a single stream, or :meth:`prepare` / :func:`run_requests` /
    :meth:`commit` to batch several streams' predictor calls.

    Args:
        predictors: One predictor for every observer, or a dict observer type ->
            predictor (key ``"*"``: default for other types; a ``None`` value: that
            type is not scored).
        channel: Cost channel name written by :meth:`write_info`.
        dt: Seconds between consecutive ego states, passed as ``Views.dt``. ``None``:
            the ``"dt"`` entry of the first ``EgoStep.context`` that has one, else 1.0
            (the only context entry the wrappers read).
        on_scored: Optional co-training hook (see module doc).
        combine: How the errors of the observers scored in a step make its cost:
            ``"mean"`` (default) or ``"worst"`` (the least convinced observer).
            ``info["predictability"]`` is minus that cost either way.
    """

    def __init__(
        self,
        predictors: Predictor | Mapping[str, Predictor],
        *,
        channel: str = "predictability",
        dt: float | None = None,
        on_scored: OnScored | None = None,
        combine: str = "mean",
    ) -> None:
        if not isinstance(channel, str) or not channel:
            raise ValueError(f"channel: expected a non-empty string, got {channel!r}")
        if combine not in COMBINE:
            raise ValueError(f"combine: expected one of {COMBINE}, got {combine!r}")
        self.combine = combine
        if dt is not None:
            dt = _check_dt(dt, "dt")
        self.predictors = _resolve_predictors(predictors)
        self.channel = channel
        self.dt = dt
        self.on_scored = on_scored
        unique = {id(p): p for p in self.predictors.values() if p is not None}.values()
        bounded = [p for p in unique if p.horizon is not None and p.history is not None]
        # keep everything when a view or a score needs the whole episode
        self._keep: int | None = (
            max(p.history + p.horizon for p in bounded) if len(bounded) == len(unique) else None
        )
        self._by_type_cache: dict[str, Any] = {}
        self._single = self.predictors["*"] if list(self.predictors) == ["*"] else None
        self.reset()

    # -- episode state ------------------------------------------------------------

    def reset(self) -> None:
        """Forget the episode: history, visibility, pending predictions, totals."""
        self._states: np.ndarray | None = None
        self._vis = np.zeros((0, 0), dtype=bool)
        self._base = 0  # absolute index of self._states[0]
        self._n = 0  # number of ego states this episode
        self._row: dict[int, int] = {}
        self._free_rows: list[int] = []
        self._present: set[int] = set()
        self._epoch = 0  # bumped whenever the set of observers present changes
        self._last_ids: bytes | None = None  # observer ids of the last EgoStep (int64 bytes)
        self._last_rows = np.zeros(0, dtype=np.int64)  # and their visibility rows
        self._pending: list[_PredictRequest] = []  # committed, not yet due
        self._context: dict[str, Any] = {}
        self._ctx_copy: dict[str, Any] | None = None  # copy of _context shared by views
        self._ctx_src: Mapping[str, Any] | None = None  # the last EgoStep.context merged
        self._last: EgoStep | None = None
        self.episode_costs: dict[str, float] = {}
        self._ep_err_sum: dict[str, float] = {}
        self._ep_err_n: dict[str, int] = {}

    def predictor_for(self, observer_type: str) -> Any | None:
        """The predictor that scores observers of ``observer_type`` (None: not scored)."""
        try:
            return self._by_type_cache[observer_type]
        except KeyError:
            p = self.predictors.get(observer_type, self.predictors.get("*"))
            self._by_type_cache[observer_type] = p
            return p

    def _append(self, ego: EgoStep) -> tuple[np.ndarray, int]:
        """Store new states and visibility; return the visibility rows of ``ego``'s
        observers and the number of new states."""
        new = np.asarray(ego.states)
        t_new = new.shape[0]
        ids = np.asarray(ego.observer_ids, dtype=np.int64)
        if self._states is None:
            cap = max(16, t_new * 2, 2 * (self._keep or 0))
            self._states = np.zeros((cap, *new.shape[1:]), dtype=new.dtype)
        elif new.shape[1:] != self._states.shape[1:]:
            raise ValueError(
                f"EgoStep.states: expected state shape {self._states.shape[1:]} as earlier in "
                f"the episode, got {new.shape[1:]}"
            )
        key = ids.tobytes()
        if key == self._last_ids:
            rows = self._last_rows  # the same observers as last step (the common case)
        else:
            rows = self._assign_rows(ids)
            self._last_ids, self._last_rows = key, rows
        if t_new == 0:
            return rows, 0
        # make room
        used = self._n - self._base
        cap = self._states.shape[0]
        if used + t_new > cap:
            if self._keep is not None and self._keep + t_new <= cap:
                # drop all but the last `keep` states (amortised: cap >= 2 * keep)
                shift = used - self._keep
                self._states[: used - shift] = self._states[shift:used]
                self._vis[:, : used - shift] = self._vis[:, shift:used]
                self._vis[:, used - shift :] = False
                self._base += shift
                used -= shift
            else:
                new_cap = max(2 * cap, used + t_new)
                states = np.zeros((new_cap, *self._states.shape[1:]), dtype=self._states.dtype)
                states[:used] = self._states[:used]
                self._states = states
                vis = np.zeros((self._vis.shape[0], new_cap), dtype=bool)
                vis[:, :used] = self._vis[:, :used]
                self._vis = vis
        if self._vis.shape[1] < self._states.shape[0]:
            vis = np.zeros((self._vis.shape[0], self._states.shape[0]), dtype=bool)
            vis[:, : self._vis.shape[1]] = self._vis
            self._vis = vis
        self._states[used : used + t_new] = new
        if len(rows):
            self._vis[rows, used : used + t_new] = np.asarray(ego.visible, dtype=bool)
        self._n += t_new
        return rows, t_new

    def _assign_rows(self, ids: np.ndarray) -> np.ndarray:
        """Visibility rows of observers ``ids`` ``(M,)``: observers that left free their
        rows, newcomers take a free row (growing the table). Sets ``_present``."""
        present = set(ids.tolist())
        for oid in [o for o in self._row if o not in present]:
            row = self._row.pop(oid)
            self._vis[row] = False
            self._free_rows.append(row)
        self._epoch += 1
        rows = np.empty(len(ids), dtype=np.int64)
        for i, oid in enumerate(ids.tolist()):
            row = self._row.get(oid)
            if row is None:
                if not self._free_rows:
                    grow = max(8, self._vis.shape[0])
                    self._free_rows.extend(
                        range(self._vis.shape[0] + grow - 1, self._vis.shape[0] - 1, -1)
                    )
                    self._vis = np.concatenate(
                        [self._vis, np.zeros((grow, self._vis.shape[1]), dtype=bool)]
                    )
                row = self._free_rows.pop()
                self._row[oid] = row
            rows[i] = row
        self._present = present
        return rows

    def _window(self, start: int, stop: int) -> tuple[np.ndarray, slice]:
        """States of absolute indices [start, stop) and the matching storage slice."""
        sl = slice(start - self._base, stop - self._base)
        assert self._states is not None and sl.start >= 0, "history window fell out of storage"
        return self._states[sl], sl

    # -- the three phases -----------------------------------------------------------

    def prepare(self, ego: EgoStep, done: bool = False) -> StepRequests:
        """Take in one :class:`EgoStep`; return the predictor calls this step needs."""
        if not isinstance(ego, EgoStep):
            raise TypeError(
                f'info["{EGO_STEP_KEY}"]: expected an EgoStep, got {type(ego).__name__}'
            )
        if ego.episode_start and self._n:
            self.reset()
        self._last = ego
        if ego.context and not (
            # a read-only context seen last step (e.g. shared by a batched env's worlds)
            ego.context is self._ctx_src and isinstance(ego.context, MappingProxyType)
        ):
            self._context.update(ego.context)
            self._ctx_copy = None  # views get a fresh copy of the merged context
            self._ctx_src = ego.context
            if self.dt is None and "dt" in ego.context:
                self.dt = _check_dt(ego.context["dt"], 'EgoStep.context["dt"]')
        rows, t_new = self._append(ego)
        req = StepRequests(done=done)
        now = self._n - 1  # absolute index of the latest state
        if t_new:
            self._due_requests(req, ego, now)
        if done:
            self._pending.clear()
            self._episode_end_requests(req, ego, rows)
        elif t_new:
            self._predict_requests(req, ego, rows, now)
        return req

    def _due_requests(self, req: StepRequests, ego: EgoStep, now: int) -> None:
        still: list[_PredictRequest] = []
        present = self._present
        for p in self._pending:
            if p.due > now:
                still.append(p)
                continue
            if p.epoch == self._epoch:  # no observer came or left since: all present
                keep = None
            else:
                ids = p.views.observer_ids.tolist()
                keep = np.fromiter((i in present for i in ids), dtype=bool, count=len(ids))
                if not keep.any():
                    continue
                if keep.all():
                    keep = None
            truth_w, _ = self._window(p.t_pred + 1, p.due + 1)
            b = len(p.views)
            # world frame; run_requests maps it to the views' frames, batched
            truth = truth_w[None].repeat(b, axis=0)
            views, preds, poses = p.views, p.predictions, p.poses
            if keep is not None:
                views = views.take(keep)
                preds, truth = preds[keep], truth[keep]
                poses = None if poses is None else poses[keep]
            req.score.append(_ScoreRequest(p.predictor, views, truth, preds, None, p.frame, poses))
        self._pending = still

    def _observer_groups(self, ego: EgoStep, select: np.ndarray):
        """Yield (predictor, index array) for observers selected by the bool mask ``select``."""
        if self._single is not None:  # one predictor for every type: no per-observer lookup
            idx = select.nonzero()[0]
            if len(idx):
                yield self._single, idx
            return
        types = np.asarray(ego.observer_types)
        groups: dict[int, tuple[Any, list[int]]] = {}
        for i in select.nonzero()[0].tolist():
            p = self.predictor_for(str(types[i]))
            if p is None:
                continue
            groups.setdefault(id(p), (p, []))[1].append(i)
        for p, idx in groups.values():
            yield p, np.asarray(idx, dtype=np.int64)

    def _make_views(
        self,
        ego: EgoStep,
        idx: np.ndarray,
        rows: np.ndarray,
        start: int,
        stop: int,
        transform: bool = True,
    ) -> tuple[Views, np.ndarray | None]:
        """Views of observers ``idx`` over absolute ego indices [start, stop), left-padded.

        ``transform=False``: ``states`` stay in the world frame for
        :func:`run_requests` to transform, batched with the other streams'."""
        first = max(start, self._base)
        hist, sl = self._window(first, stop)
        vis = self._vis[rows[idx], sl]
        pad = first - start
        if pad:
            hist = np.concatenate([np.repeat(hist[:1], pad, axis=0), hist])
            vis = np.concatenate([np.zeros((len(idx), pad), dtype=bool), vis], axis=1)
        poses = None if ego.observer_frames is None else np.asarray(ego.observer_frames)[idx]
        states = hist[None].repeat(len(idx), axis=0)
        if transform:
            states = _to_frame(ego.frame, states, [poses])
        if self._ctx_copy is None:
            self._ctx_copy = dict(self._context)
        ctx = self._ctx_copy
        views = Views(
            states=states,
            mask=vis,
            observer_types=np.asarray(ego.observer_types)[idx],
            observer_ids=np.asarray(ego.observer_ids, dtype=np.int64)[idx],
            dt=1.0 if self.dt is None else self.dt,
            context=[ctx] * len(idx),
        )
        return views, poses

    def _predict_requests(
        self, req: StepRequests, ego: EgoStep, rows: np.ndarray, now: int
    ) -> None:
        visible = np.asarray(ego.visible, dtype=bool)
        if visible.shape[0] == 0:
            return
        for p, idx in self._observer_groups(ego, visible[:, -1]):
            if p.horizon is None:
                continue
            length = p.history if p.history is not None else self._n
            views, poses = self._make_views(ego, idx, rows, now - length + 1, now + 1, False)
            req.predict.append(
                _PredictRequest(p, views, now + int(p.horizon), poses, ego.frame, None, now)
            )

    def _episode_end_requests(self, req: StepRequests, ego: EgoStep, rows: np.ndarray) -> None:
        if self._n == 0 or len(rows) == 0:
            return
        seen = self._vis[rows, : self._n - self._base].any(axis=1)
        for p, idx in self._observer_groups(ego, seen):
            if p.horizon is not None:
                continue
            views, _ = self._make_views(ego, idx, rows, self._base, self._n)
            truth = views.states.copy()
            req.score.append(_ScoreRequest(p, views, truth))

    def commit(self, req: StepRequests) -> StepFigures:
        """Store new predictions and turn the scored errors into this step's figures."""
        for pr in req.predict:
            assert pr.predictions is not None, "run_requests() was not called"
            pr.epoch = self._epoch
            self._pending.append(pr)
        figs = StepFigures(combine=self.combine)
        sums, counts = figs.error_sum, figs.count
        for sr in req.score:
            assert sr.errors is not None, "run_requests() was not called"
            for t, e in zip(sr.views.observer_types.tolist(), sr.errors.tolist(), strict=True):
                t = str(t)
                sums[t] = sums.get(t, 0.0) + e
                counts[t] = counts.get(t, 0) + 1
                figs.worst_error = max(figs.worst_error, e)
        for t, n in counts.items():
            self._ep_err_sum[t] = self._ep_err_sum.get(t, 0.0) + sums[t]
            self._ep_err_n[t] = self._ep_err_n.get(t, 0) + n
        return figs

    def step(self, ego: EgoStep, done: bool = False) -> StepFigures:
        """``prepare`` + ``run_requests`` + ``commit`` for a single stream."""
        req = self.prepare(ego, done)
        run_requests([req], self.on_scored)
        return self.commit(req)

    # -- info -------------------------------------------------------------------------

    def write_info(self, info: Mapping[str, Any], figs: StepFigures, done: bool) -> dict[str, Any]:
        """Return a copy of a step's ``info`` with the figures and cost channels added."""
        info = dict(info)
        if isinstance(info.get("costs"), Mapping):
            costs = dict(info["costs"])
        elif "cost" in info:
            costs = {"env": float(info["cost"])}
        else:
            costs = {}
        # StepFigures' properties, each computed once (this runs per world per step)
        count, error_sum = figs.count, figs.error_sum
        n = sum(count.values())
        if figs.combine == "worst":
            error = figs.worst_error
        else:
            error = sum(error_sum.values()) / n if n else 0.0
        costs[self.channel] = error
        info["costs"] = costs
        info["cost"] = float(sum(costs.values()))
        info["predictability"] = -error if count else 0.0
        info["observers_scored"] = n
        info["prediction_error_by_type"] = {t: error_sum[t] / k for t, k in count.items()}
        episode_costs = self.episode_costs
        for ch, c in costs.items():
            episode_costs[ch] = episode_costs.get(ch, 0.0) + float(c)
        if done:
            info.update(self.episode_info())
        return info

    def episode_info(self) -> dict[str, Any]:
        """Episode totals so far (what :meth:`write_info` adds at episode end)."""
        n = sum(self._ep_err_n.values())
        return {
            "episode_cost": float(sum(self.episode_costs.values())),
            "episode_costs": dict(self.episode_costs),
            "episode_prediction_error": float(sum(self._ep_err_sum.values()) / n) if n else 0.0,
            "episode_observers_scored": int(n),
            "episode_prediction_error_by_type": {
                t: self._ep_err_sum[t] / self._ep_err_n[t] for t in self._ep_err_n
            },
        }

    def latest_predictions(self) -> list[dict[str, Any]]:
        """The predictions made at the latest ego state, mapped back to the world frame.

        One dict per observer that saw the ego then: ``observer_id``, ``observer_type``,
        ``pose`` (the observer's frame pose, ``(F,)``, or None) and ``path``, the first
        mode of its prediction in world coordinates, shape ``(H, D)``. Empty for
        ``horizon=None`` predictors (they predict nothing ahead). For rendering and
        inspection; nothing here is on the scoring path.
        """
        if not self._pending:
            return []
        now = max(p.t_pred for p in self._pending)
        out: list[dict[str, Any]] = []
        for p in self._pending:
            if p.t_pred != now:
                continue
            pred = np.asarray(p.predictions, dtype=float)
            if pred.ndim == 4:  # (B, K, H, D): first mode
                pred = pred[:, 0]
            world = FRAMES[p.frame].from_frame(pred, p.poses)
            for b in range(len(world)):
                out.append(
                    {
                        "observer_id": int(p.views.observer_ids[b]),
                        "observer_type": str(p.views.observer_types[b]),
                        "pose": None if p.poses is None else np.asarray(p.poses[b], dtype=float),
                        "path": world[b],
                    }
                )
        return out

    @property
    def last_ego_step(self) -> EgoStep | None:
        """The last :class:`EgoStep` taken in (None right after :meth:`reset`)."""
        return self._last


def _ego_step(info: Mapping[str, Any], where: str) -> EgoStep:
    try:
        return info[EGO_STEP_KEY]
    except (KeyError, TypeError):
        raise ValueError(
            f'info["{EGO_STEP_KEY}"] is missing from {where}: the wrapped env is not '
            "predictable (it must report an EgoStep on reset and every step)"
        ) from None


# -------------------------------------------------------------------------- shells


class PredictabilityReward(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Gymnasium wrapper: scores the ego's predictability, leaves the reward unchanged.

    Args:
        env: A predictable env (``info["ego_step"]`` on reset and every step).
        predictors: One predictor, or a dict observer type -> predictor (``"*"`` default).
        channel: Cost channel for the mean prediction error.
        dt: Seconds per ego state for ``Views.dt``; default ``env.unwrapped.dt``, else
            ``EgoStep.context["dt"]``, else 1.0.
        on_scored: Optional co-training hook ``(predictor, views, truth, errors)``.

    See the module docstring for the exact info keys and scoring rules.
    """

    def __init__(
        self,
        env: gym.Env,
        predictors: Predictor | Mapping[str, Predictor],
        *,
        channel: str = "predictability",
        dt: float | None = None,
        on_scored: OnScored | None = None,
        combine: str = "mean",
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self,
            predictors=predictors,
            channel=channel,
            dt=dt,
            on_scored=on_scored,
            combine=combine,
        )
        gym.Wrapper.__init__(self, env)
        if dt is None:
            dt = getattr(env.unwrapped, "dt", None)
        self.tracker = PredictabilityTracker(
            predictors, channel=channel, dt=dt, on_scored=on_scored, combine=combine
        )

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self.tracker.reset()
        self.tracker.step(_ego_step(info, "reset()"), done=False)
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        done = bool(terminated or truncated)
        figs = self.tracker.step(_ego_step(info, "step()"), done)
        return obs, reward, terminated, truncated, self.tracker.write_info(info, figs, done)


class PredictabilityParallelWrapper(BaseParallelWrapper):
    """PettingZoo ``ParallelEnv`` wrapper: every agent whose info carries an ``EgoStep``
    is an ego with its own tracker; all agents' requests are batched (one call per
    predictor and request kind per step). Per-agent infos get the same keys as
    :class:`PredictabilityReward`; an agent's episode ends when it is terminated or
    truncated. Arguments as :class:`PredictabilityReward`.
    """

    def __init__(
        self,
        env: Any,
        predictors: Predictor | Mapping[str, Predictor],
        *,
        channel: str = "predictability",
        dt: float | None = None,
        on_scored: OnScored | None = None,
        combine: str = "mean",
    ) -> None:
        super().__init__(env)
        if dt is None:
            dt = getattr(env.unwrapped, "dt", None)
        self.tracker_kwargs = {
            "predictors": predictors,
            "channel": channel,
            "dt": dt,
            "on_scored": on_scored,
            "combine": combine,
        }
        PredictabilityTracker(**self.tracker_kwargs)  # validate eagerly
        self.on_scored = on_scored
        self.trackers: dict[Any, PredictabilityTracker] = {}

    def _run(self, items: list[tuple[Any, EgoStep, bool]]) -> dict[Any, StepFigures]:
        reqs = {}
        for agent, ego, done in items:
            if agent not in self.trackers:
                self.trackers[agent] = PredictabilityTracker(**self.tracker_kwargs)
            reqs[agent] = self.trackers[agent].prepare(ego, done)
        run_requests(list(reqs.values()), self.on_scored)
        return {a: self.trackers[a].commit(r) for a, r in reqs.items()}

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, infos = self.env.reset(seed=seed, options=options)
        for tracker in self.trackers.values():
            tracker.reset()
        self._run([(a, i[EGO_STEP_KEY], False) for a, i in infos.items() if EGO_STEP_KEY in i])
        return obs, infos

    def step(self, actions: dict[Any, Any]):
        obs, rewards, terms, truncs, infos = self.env.step(actions)
        items = [
            (a, info[EGO_STEP_KEY], bool(terms.get(a, False) or truncs.get(a, False)))
            for a, info in infos.items()
            if EGO_STEP_KEY in info
        ]
        figs = self._run(items)
        infos = dict(infos)
        for agent, _, done in items:
            infos[agent] = self.trackers[agent].write_info(infos[agent], figs[agent], done)
        return obs, rewards, terms, truncs, infos


def _base_venv(venv: Any) -> Any:
    from stable_baselines3.common.vec_env import VecEnvWrapper

    while isinstance(venv, VecEnvWrapper):
        venv = venv.venv
    return venv


def _make_vec_wrapper_class() -> type:
    """Build :class:`PredictabilityVecWrapper` on first use (SB3 imports torch: ~3 s)."""
    from stable_baselines3.common.vec_env import VecEnvWrapper

    class PredictabilityVecWrapper(VecEnvWrapper):
        """SB3 ``VecEnvWrapper``: scores every world; ONE ``predict`` and ONE ``error``
        call per predictor per step serve all worlds and observers.

        Two paths, same figures:

        - *array path* (used when the base VecEnv reports
          :class:`~bystander.envs.contract.EgoBatch` es, as
          :class:`~bystander.envs.intersection.vec_env.IntersectionVecEnv` does, and
          every predictor has an integer horizon and history): one
          :class:`~bystander.envs.batched_tracker.BatchedTracker` for all worlds, a few
          array operations per step whatever ``N``.
        - *per-world path* (any other VecEnv, or ``batched=False``): one
          :class:`PredictabilityTracker` per world, fed with each world's ``EgoStep``
          from ``infos[i]`` and, after SB3's auto-reset, from the base VecEnv's
          ``reset_infos[i]``.

        Per-world infos get the same keys as :class:`PredictabilityReward`: every step
        when the base env writes full infos, at episode end only when it writes lean
        ones (``info_mode="lean"``). Either way :attr:`step_arrays` holds the step's
        values as arrays over worlds: the base env's, with ``"costs"`` (channel ->
        ``(N,)``), ``"cost"``, ``"predictability"`` and ``"observers_scored"``
        replaced / added. Arguments as :class:`PredictabilityReward` (``dt`` default:
        the envs' ``dt`` attribute, else ``EgoStep.context["dt"]``, else 1.0), plus
        ``batched`` (None: the array path where it applies; False: per-world trackers;
        True: the array path or an error).
        """

        def __init__(
            self,
            venv: Any,
            predictors: Predictor | Mapping[str, Predictor],
            *,
            channel: str = "predictability",
            dt: float | None = None,
            on_scored: OnScored | None = None,
            combine: str = "mean",
            batched: bool | None = None,
        ) -> None:
            from bystander.envs.batched_tracker import BatchedTracker, supports_batched

            super().__init__(venv)
            if dt is None:
                try:
                    dt = venv.get_attr("dt", [0])[0]
                except AttributeError:
                    dt = None
            kwargs = {"channel": channel, "dt": dt, "on_scored": on_scored, "combine": combine}
            n = venv.num_envs
            resolved = _resolve_predictors(predictors)
            base = _base_venv(venv)
            array_env = hasattr(base, "ego_batch") and hasattr(base, "reset_ego_batch")
            lean = getattr(base, "info_mode", "full") == "lean"
            if batched is None:
                batched = array_env and supports_batched(resolved)
            elif batched and not (array_env and supports_batched(resolved)):
                raise ValueError(
                    "batched: True needs a base VecEnv that reports EgoBatch es "
                    "(IntersectionVecEnv) and predictors with integer horizon and history"
                )
            if lean and not batched:
                raise ValueError(
                    "info_mode='lean' base env: its infos carry no EgoStep, so the "
                    "predictors must suit the array path (integer horizon and history)"
                )
            self.channel = channel
            self.on_scored = on_scored
            self.batched = bool(batched)
            self._full_infos = not lean
            self.step_arrays: dict[str, Any] = {}
            if self.batched:
                self.trackers: list[PredictabilityTracker] = []
                self._spares: list[PredictabilityTracker] = []
                self.batched_tracker: BatchedTracker | None = BatchedTracker(
                    resolved,
                    n,
                    dt=None if dt is None else _check_dt(dt, "dt"),
                    on_scored=on_scored,
                    combine=combine,
                )
                self._episode_costs: dict[str, np.ndarray] = {}
            else:
                self.batched_tracker = None
                self.trackers = [PredictabilityTracker(predictors, **kwargs) for _ in range(n)]
                self._spares = [PredictabilityTracker(predictors, **kwargs) for _ in range(n)]

        def set_on_scored(self, fn: OnScored | None) -> None:
            """Set the co-training hook on every tracker."""
            self.on_scored = fn
            if self.batched_tracker is not None:
                self.batched_tracker.on_scored = fn
            for tracker in [*self.trackers, *self._spares]:
                tracker.on_scored = fn

        def reset(self):
            obs = self.venv.reset()
            base = _base_venv(self.venv)
            if self.batched:
                from bystander.envs.batched_tracker import BatchedTracker

                old = self.batched_tracker
                assert old is not None
                self.batched_tracker = BatchedTracker(
                    old.predictors,
                    old.n_worlds,
                    dt=old.dt,
                    on_scored=old.on_scored,
                    combine=old.combine,
                )
                self.batched_tracker.start(base.reset_ego_batch)
                self._episode_costs = {}
                self.reset_infos = list(base.reset_infos)
                return obs
            reqs = []
            for i, tracker in enumerate(self.trackers):
                tracker.reset()
                reqs.append(tracker.prepare(_ego_step(base.reset_infos[i], "reset_infos"), False))
            run_requests(reqs, self.on_scored)
            for tracker, req in zip(self.trackers, reqs, strict=True):
                tracker.commit(req)
            self.reset_infos = list(base.reset_infos)
            return obs

        def step_wait(self):
            if self.batched:
                return self._step_arrays()
            obs, rewards, dones, infos = self.venv.step_wait()
            base = _base_venv(self.venv)
            steps = []  # (tracker, requests, world index or None for a fresh episode)
            trackers = self.trackers
            for i, (info, done) in enumerate(
                zip(infos, np.asarray(dones, bool).tolist(), strict=True)
            ):
                tracker = trackers[i]
                ego = info.get(EGO_STEP_KEY) if isinstance(info, dict) else None
                if ego is None:
                    ego = _ego_step(info, "step infos")
                steps.append((tracker, tracker.prepare(ego, done), i))
                if done:
                    fresh = self._spares[i]
                    fresh.reset()
                    ego = _ego_step(base.reset_infos[i], "reset_infos")
                    steps.append((fresh, fresh.prepare(ego, False), None))
                    self.trackers[i], self._spares[i] = fresh, tracker
            run_requests([req for _, req, _ in steps], self.on_scored)
            infos = list(infos)
            for tracker, req, i in steps:
                figs = tracker.commit(req)
                if i is not None:
                    infos[i] = tracker.write_info(infos[i], figs, req.done)
            self.reset_infos = list(base.reset_infos)
            return obs, rewards, dones, infos

        def _step_arrays(self):
            obs, rewards, dones, infos = self.venv.step_wait()
            base = _base_venv(self.venv)
            tracker = self.batched_tracker
            assert tracker is not None
            dones = np.asarray(dones, dtype=bool)
            figs = tracker.step(base.ego_batch, dones)
            done_idx = np.flatnonzero(dones)
            figures = tracker.episode_figures(done_idx) if len(done_idx) else []
            if base.reset_ego_batch is not None:
                tracker.start(base.reset_ego_batch)
            arrays = dict(getattr(base, "step_arrays", None) or {})
            if isinstance(arrays.get("costs"), Mapping):
                costs = dict(arrays["costs"])
            elif "cost" in arrays:
                costs = {"env": np.asarray(arrays["cost"], dtype=np.float64)}
            else:
                costs = {}
            error = figs.error
            count = figs.observers_scored
            costs[self.channel] = error
            cost = np.sum(list(costs.values()), axis=0) if costs else np.zeros(len(dones))
            arrays.update(
                costs=costs,
                cost=cost,
                predictability=np.where(count > 0, -error, 0.0),
                observers_scored=count,
            )
            self.step_arrays = arrays
            ep = self._episode_costs
            for ch, c in costs.items():
                if ch in ep:
                    ep[ch] += c
                else:
                    ep[ch] = np.array(c, dtype=np.float64)
            worlds = range(len(dones)) if self._full_infos else done_idx.tolist()
            if len(worlds):
                infos = list(infos)
                names = figs.type_names
                for i in worlds:
                    info = dict(infos[i])
                    step_costs = {ch: float(c[i]) for ch, c in costs.items()}
                    info["costs"] = step_costs
                    info["cost"] = float(sum(step_costs.values()))
                    info["predictability"] = float(arrays["predictability"][i])
                    n_i = int(count[i])
                    info["observers_scored"] = n_i
                    info["prediction_error_by_type"] = (
                        {
                            t: float(figs.error_sum[i, k] / figs.count[i, k])
                            for k, t in enumerate(names)
                            if figs.count[i, k]
                        }
                        if n_i
                        else {}
                    )
                    infos[i] = info
                if len(done_idx):
                    for k, i in enumerate(done_idx.tolist()):
                        totals = {ch: float(c[i]) for ch, c in ep.items()}
                        infos[i]["episode_cost"] = float(sum(totals.values()))
                        infos[i]["episode_costs"] = totals
                        infos[i].update(figures[k])
                    for c in ep.values():
                        c[done_idx] = 0.0
            self.reset_infos = list(base.reset_infos)
            return obs, rewards, dones, infos

    return PredictabilityVecWrapper


_LAZY: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    if name == "PredictabilityVecWrapper":
        if name not in _LAZY:
            _LAZY[name] = _make_vec_wrapper_class()
        return _LAZY[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
