"""Per-stream predictability bookkeeping and the batching of predictor calls.

:class:`PredictabilityTracker` consumes the :class:`~bystander.envs.contract.EgoStep`
reports of one episode stream, builds the observers' views, holds the pending
predictions and scores them when their horizon has elapsed, by the rules of
:mod:`bystander.envs.scoring`. It knows nothing of cars or tokens: only ego states,
visibility, frames and the :class:`~bystander.envs.contract.Predictor` protocol.

Several streams (worlds, agents) share predictor calls: :meth:`PredictabilityTracker.prepare`
returns a stream's :class:`StepRequests`, :func:`run_requests` serves every stream's
requests with ONE ``predict`` call and ONE ``error`` call per predictor, and
:meth:`PredictabilityTracker.commit` turns the answers into the step's
:class:`~bystander.envs.scoring.Figures`.

The array twin for ``N`` worlds at once is
:class:`~bystander.envs.batched_tracker.BatchedTracker`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from bystander.envs.checks import check_dt, check_errors, check_predictions
from bystander.envs.contract import (
    EGO_STEP_KEY,
    FRAMES,
    EgoStep,
    Predictor,
    Views,
    concat_poses,
)
from bystander.envs.scoring import (
    Figures,
    OnScored,
    PredictorTable,
    check_combine,
    env_costs,
    episode_summary,
    step_info,
)

__all__ = ["PredictabilityTracker", "StepRequests", "ego_step_of", "run_requests"]


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
        poses=concat_poses(views),
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
        preds = check_predictions(predictor.predict(views), views, predictor)
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
        preds_all: np.ndarray | None = None
        if sreqs[0].predictions is None:
            method = "score"
            errors = predictor.score(views, truth)
        else:
            method = "error"
            preds = [r.predictions for r in sreqs]
            preds_all = np.concatenate(preds) if len(preds) > 1 else preds[0]
            errors = predictor.error(preds_all, truth, views)
        errors = check_errors(errors, len(views), predictor, method)
        start = 0
        for r in sreqs:
            r.errors = errors[start : start + len(r.views)]
            start += len(r.views)
        if on_scored is not None:
            on_scored(predictor, views, truth, preds_all, errors)


class PredictabilityTracker:
    """Bookkeeping of one stream of :class:`EgoStep` reports (one world, one ego).

    Use :meth:`step` for a single stream, or :meth:`prepare` / :func:`run_requests` /
    :meth:`commit` to batch several streams' predictor calls.

    Args:
        predictors: One predictor for every observer, or a dict observer type ->
            predictor (key ``"*"``: default for other types; a ``None`` value: that
            type is not scored; :class:`~bystander.envs.scoring.PredictorTable`).
        channel: Cost channel name written by :meth:`write_info`.
        dt: Seconds between consecutive ego states, passed as ``Views.dt``. ``None``:
            the ``"dt"`` entry of the first ``EgoStep.context`` that has one, else 1.0
            (the only context entry the wrappers read).
        on_scored: Optional co-training hook (:data:`~bystander.envs.scoring.OnScored`).
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
        self.combine = check_combine(combine)
        if dt is not None:
            dt = check_dt(dt, "dt")
        self.table = PredictorTable(predictors)
        self.predictors = self.table.predictors
        self.channel = channel
        self.dt = dt
        self.on_scored = on_scored
        unique = self.table.unique
        bounded = [p for p in unique if p.horizon is not None and p.history is not None]
        # keep everything when a view or a score needs the whole episode
        self._keep: int | None = (
            max(p.history + p.horizon for p in bounded) if len(bounded) == len(unique) else None
        )
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
        self.episode_costs: dict[str, float] = {}
        self._ep_err_sum: dict[str, float] = {}
        self._ep_err_n: dict[str, int] = {}

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
        if ego.context and not (
            # a read-only context seen last step (e.g. shared by a batched env's worlds)
            ego.context is self._ctx_src and isinstance(ego.context, MappingProxyType)
        ):
            self._context.update(ego.context)
            self._ctx_copy = None  # views get a fresh copy of the merged context
            self._ctx_src = ego.context
            if self.dt is None and "dt" in ego.context:
                self.dt = check_dt(ego.context["dt"], 'EgoStep.context["dt"]')
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
        single = self.table.single
        if single is not None:  # one predictor for every type: no per-observer lookup
            idx = select.nonzero()[0]
            if len(idx):
                yield single, idx
            return
        chosen = select.nonzero()[0]
        types = np.asarray(ego.observer_types)[chosen]
        for p, pos in self.table.groups(types.tolist()):
            yield p, chosen[pos]

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
            poses=poses,
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

    def commit(self, req: StepRequests) -> Figures:
        """Store new predictions and turn the scored errors into this step's figures
        (``N = 1``; columns: the observer types scored this step, in scoring order)."""
        for pr in req.predict:
            assert pr.predictions is not None, "run_requests() was not called"
            pr.epoch = self._epoch
            self._pending.append(pr)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        worst = 0.0
        for sr in req.score:
            assert sr.errors is not None, "run_requests() was not called"
            for t, e in zip(sr.views.observer_types.tolist(), sr.errors.tolist(), strict=True):
                t = str(t)
                sums[t] = sums.get(t, 0.0) + e
                counts[t] = counts.get(t, 0) + 1
                worst = max(worst, e)
        for t, n in counts.items():
            self._ep_err_sum[t] = self._ep_err_sum.get(t, 0.0) + sums[t]
            self._ep_err_n[t] = self._ep_err_n.get(t, 0) + n
        return Figures(
            [list(sums.values())], [list(counts.values())], [worst], tuple(sums), self.combine
        )

    def step(self, ego: EgoStep, done: bool = False) -> Figures:
        """``prepare`` + ``run_requests`` + ``commit`` for a single stream."""
        req = self.prepare(ego, done)
        run_requests([req], self.on_scored)
        return self.commit(req)

    # -- info -------------------------------------------------------------------------

    def write_info(self, info: Mapping[str, Any], figs: Figures, done: bool) -> dict[str, Any]:
        """Return a copy of a step's ``info`` with the figures and cost channels added
        (:func:`~bystander.envs.scoring.step_info`; at episode end also
        :meth:`episode_info`)."""
        error, n, by_type = figs.row(0)
        costs = env_costs(info)
        info = step_info(info, costs, self.channel, error, n, by_type)
        episode_costs = self.episode_costs
        for ch, c in costs.items():
            episode_costs[ch] = episode_costs.get(ch, 0.0) + float(c)
        if done:
            info.update(self.episode_info())
        return info

    def episode_info(self) -> dict[str, Any]:
        """Episode totals so far (what :meth:`write_info` adds at episode end;
        :func:`~bystander.envs.scoring.episode_summary`)."""
        return episode_summary(self.episode_costs, *self.episode_errors())

    def episode_errors(self) -> tuple[list[float], list[int], list[str]]:
        """The episode's prediction errors so far: per observer type scored, the sum of
        the errors and the number of predictions, and the types."""
        return list(self._ep_err_sum.values()), list(self._ep_err_n.values()), list(self._ep_err_n)

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


def ego_step_of(info: Mapping[str, Any], where: str) -> EgoStep:
    """``info["ego_step"]``, or a ``ValueError`` naming ``where`` the info came from."""
    try:
        return info[EGO_STEP_KEY]
    except (KeyError, TypeError):
        raise ValueError(
            f'info["{EGO_STEP_KEY}"] is missing from {where}: the wrapped env is not '
            "predictable (it must report an EgoStep on reset and every step)"
        ) from None


# -------------------------------------------------------------------------- shells
