"""Predictability bookkeeping for ``N`` worlds at once, in arrays.

:class:`BatchedTracker` is the array twin of
:class:`~bystander.envs.tracker.PredictabilityTracker`: the same scoring rules
(see :mod:`bystander.envs.scoring`), the same predictor calls, the same
:class:`~bystander.envs.scoring.Figures`, but the state of every world lives in arrays with a world axis and is fed
with :class:`~bystander.envs.contract.EgoBatch` reports instead of one
:class:`~bystander.envs.contract.EgoStep` per world. A step costs a few dozen numpy
operations whatever the number of worlds, instead of a Python pass per world.

It serves predictors with an integer ``horizon`` and ``history`` (the driving
domain): one new ego state per world per step, observers in fixed slots. Text
(``horizon=None``) stays on the per-stream tracker.

State (``N`` worlds, ``A`` observer slots, ring length ``R = max(history + horizon)``),
indexed by the global step ``t`` (every world gets exactly one new state per step, so
step ``t`` is ring row ``t % R`` in every world and a step writes one contiguous row):

- ego ring ``(R, N, D)``: the last ``R`` ego states of each world (older than the
  episode's start: another episode's, never read: windows are padded with the
  episode's first state, masked, as the per-stream tracker pads);
- visibility ring ``(R, N, A)``: whether the slot's observer saw each of them (cleared
  when the slot's observer changes);
- pending predictions, one batch per step, due ``horizon`` steps later (every world
  gets exactly one new state per step, the first state of a new episode standing in
  for the last state of the old one), dropped at due time for worlds whose episode
  changed and observers that left.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from bystander.envs.batched_kernels import recent_states, still_observed, view_windows
from bystander.envs.checks import check_errors, check_predictions
from bystander.envs.contract import FRAMES, EgoBatch, Predictor, Views
from bystander.envs.scoring import Figures, OnScored, PredictorTable, check_combine

__all__ = ["BatchedTracker", "supports_batched"]


def supports_batched(predictors: PredictorTable) -> bool:
    """Whether every predictor of ``predictors`` has an integer ``horizon`` and
    ``history`` (what :class:`BatchedTracker` serves)."""
    return all(p.horizon is not None and p.history is not None for p in predictors.unique)


@dataclass(slots=True)
class _Pending:
    """The predictions one predictor made at one step, due ``horizon`` steps later."""

    due: int
    world: np.ndarray  # (B,) world index
    slot: np.ndarray  # (B,) observer slot
    uid: np.ndarray  # (B,) observer id then
    episode: np.ndarray  # (B,) episode counter of the world then
    tcol: np.ndarray  # (B,) type column
    views: Views
    predictions: np.ndarray
    poses: np.ndarray | None


def _rows_cols(flat: np.ndarray, n_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the C-order flat indices ``flat`` into a 2-d array of
    ``n_cols`` columns (as ``nonzero`` of the 2-d array gives them)."""
    rows = flat // n_cols
    return rows, flat - rows * n_cols


class BatchedTracker:
    """Predictability bookkeeping for ``n_worlds`` streams (see module docstring).

    Args:
        predictors: One predictor, or observer type -> predictor (``"*"``: default;
            None: not scored; see :class:`~bystander.envs.scoring.PredictorTable`);
            every predictor needs an integer ``horizon`` and ``history``.
        n_worlds: Number of worlds ``N``.
        dt: Seconds between ego states (``Views.dt``); None: the batches' context
            ``"dt"``, else 1.0.
        on_scored: Co-training hook ``(predictor, views, truth, predictions, errors)``
            after each batched error call (:data:`~bystander.envs.scoring.OnScored`).
        combine: ``"mean"`` or ``"worst"``.

    Use: :meth:`step` with each step's batch of all worlds and their ``done`` flags,
    then :meth:`start` with the batch of the worlds reset since (their first states).
    The episode figures of the worlds whose episode ended with a step are in
    :attr:`episode_error_sum` / :attr:`episode_count` between the two calls.

    Attributes:
        episode_error_sum: ``(N, T)`` sum of the errors scored in each world's current
            episode per observer type (columns :attr:`type_names`).
        episode_count: ``(N, T)`` int, predictions scored in each world's episode.
        type_names: Observer type of each column (set by the first batch).
    """

    def __init__(
        self,
        predictors: Predictor | Mapping[str, Predictor | None] | PredictorTable,
        n_worlds: int,
        *,
        dt: float | None = None,
        on_scored: OnScored | None = None,
        combine: str = "mean",
    ) -> None:
        self.table = PredictorTable(predictors)
        if not supports_batched(self.table):
            raise ValueError(
                "predictors: BatchedTracker needs integer horizon and history for every "
                "predictor (horizon=None predictors use PredictabilityTracker)"
            )
        self.predictors = self.table.predictors
        self.groups: list[Any] = self.table.unique
        self.n_worlds = int(n_worlds)
        self._all = np.arange(self.n_worlds)
        self.dt = dt
        self.on_scored = on_scored
        self.combine = check_combine(combine)
        self.ring = max(int(p.history) + int(p.horizon) for p in self.groups)
        self._pending: list[deque[_Pending]] = [deque() for _ in self.groups]
        self._tables_for: tuple[str, ...] | None = None
        self._allocated = False
        self.t = 0  # steps taken (global: the same for every world)

    # ----------------------------------------------------------------- set-up
    def _alloc(self, batch: EgoBatch) -> None:
        n, a = self.n_worlds, batch.present.shape[1]
        d = batch.states.shape[1]
        self.ego = np.zeros((self.ring, n, d))
        self.vis = np.zeros((self.ring, n, a), dtype=bool)
        self.uid = np.full((n, a), -1, dtype=np.int64)
        self.present = np.zeros((n, a), dtype=bool)
        self.start_t = np.zeros(n, dtype=np.int64)  # global step of the episode's first state
        self.episode = np.zeros(n, dtype=np.int64)
        self._allocated = True

    def _tables(self, type_names: tuple[str, ...]) -> None:
        """Per type code: column of its type name, and predictor group (-1: none)."""
        if self._tables_for == type_names:
            return
        names = list(dict.fromkeys(type_names))
        self.type_names = tuple(names)
        self._col = np.array([names.index(t) for t in type_names], dtype=np.int64)
        group_of = {id(p): g for g, p in enumerate(self.groups)}
        groups = []
        for t in type_names:
            p = self.table.for_type(t)
            groups.append(-1 if p is None else group_of[id(p)])
        self._group = np.array(groups, dtype=np.int64)
        # one predictor scores every type: no per-slot group lookup on the hot path
        self._one_group = len(self.groups) == 1 and bool((self._group == 0).all())
        self._names = np.array(type_names, dtype=object)
        self._tables_for = type_names
        n = self.n_worlds
        self.episode_error_sum = np.zeros((n, len(names)))
        self.episode_count = np.zeros((n, len(names)), dtype=np.int64)

    def _dt(self, batch: EgoBatch) -> float:
        if self.dt is None:
            self.dt = float(batch.context.get("dt", 1.0)) if batch.context else 1.0
        return self.dt

    # ----------------------------------------------------------------- steps
    def _ingest(self, batch: EgoBatch) -> np.ndarray | slice:
        """Store the batch's states and visibility at ring row ``t % R``; return its
        worlds (a slice when it covers every world in order)."""
        if not self._allocated:
            self._alloc(batch)
        self._tables(batch.type_names)
        worlds = np.asarray(batch.worlds, dtype=np.int64)
        everyone = len(worlds) == self.n_worlds and bool((worlds == self._all).all())
        w: np.ndarray | slice = slice(None) if everyone else worlds
        present, uid = batch.present, batch.observer_ids
        row = self.t % self.ring
        if batch.episode_start:
            self.vis[:, w] = False
            self.start_t[w] = self.t
            self.episode[w] += 1
            self.episode_error_sum[w] = 0.0
            self.episode_count[w] = 0
        else:
            changed = (present != self.present[w]) | (uid != self.uid[w])
            flat = np.flatnonzero(changed)
            if len(flat):
                cw, ca = _rows_cols(flat, changed.shape[1])
                self.vis[:, worlds[cw], ca] = False
        self.present[w] = present
        self.uid[w] = uid
        self.ego[row, w] = batch.states
        self.vis[row, w] = batch.visible & present
        return w

    def step(self, batch: EgoBatch, done: np.ndarray) -> Figures:
        """Take in every world's new state (``batch.worlds`` must be ``0..N-1``), score
        the predictions due, predict for worlds whose episode goes on.

        Args:
            batch: The step's :class:`EgoBatch` (``episode_start`` False).
            done: ``(N,)`` bool, episodes that ended with this step (no predictions
                are made for them; their pending ones are dropped).
        """
        if batch.episode_start or len(batch.worlds) != self.n_worlds:
            raise ValueError(
                f"batch: step() expects the step's EgoBatch of all {self.n_worlds} worlds "
                f"(episode_start False), got {len(batch.worlds)} worlds, episode_start="
                f"{batch.episode_start}; new episodes go to start()"
            )
        self.t += 1
        w = self._ingest(batch)
        if not isinstance(w, slice):
            raise ValueError("batch.worlds: expected 0..N-1 in order for step()")
        figs = self._score(batch)
        self._predict(batch, w, ~np.asarray(done, dtype=bool))
        return figs

    def start(self, batch: EgoBatch) -> None:
        """Take in the first state of new episodes in ``batch.worlds`` and predict."""
        if not batch.episode_start:
            raise ValueError("batch.episode_start: start() takes the first states of episodes")
        w = self._ingest(batch)
        self._predict(batch, w, None)

    def _score(self, batch: EgoBatch) -> Figures:
        n = self.n_worlds
        ncol = len(self.type_names)
        sums = np.zeros(n * ncol)
        counts = np.zeros(n * ncol, dtype=np.int64)
        worst = np.zeros(n)
        for g, predictor in enumerate(self.groups):
            queue = self._pending[g]
            while queue and queue[0].due <= self.t:
                p = queue.popleft()
                if p.due < self.t:
                    continue
                keep = np.empty(len(p.world), dtype=bool)
                kept = still_observed(
                    self.episode, self.present, self.uid, p.world, p.slot, p.episode, p.uid, keep
                )
                if not kept:
                    continue
                if kept == len(keep):
                    world, views, preds, poses, tcol = (
                        p.world,
                        p.views,
                        p.predictions,
                        p.poses,
                        p.tcol,
                    )
                else:
                    rows = keep.nonzero()[0]
                    world, tcol = np.take(p.world, rows), np.take(p.tcol, rows)
                    preds = np.take(p.predictions, rows, axis=0)
                    views = p.views.take(rows)
                    poses = None if p.poses is None else np.take(p.poses, rows, axis=0)
                # the states of the last `horizon` steps: the truth of this prediction
                truth = np.empty((len(world), int(predictor.horizon), self.ego.shape[2]))
                recent_states(self.ego, world, self.t, truth)
                truth = np.asarray(FRAMES[batch.frame].to_frame(truth, poses))
                errors = check_errors(
                    predictor.error(preds, truth, views), len(world), predictor, "error"
                )
                if self.on_scored is not None:
                    self.on_scored(predictor, views, truth, preds, errors)
                flat = world * ncol + tcol
                sums += np.bincount(flat, errors, minlength=n * ncol)
                counts += np.bincount(flat, minlength=n * ncol)
                if self.combine == "worst":  # ufunc.at is slow: only when it is read
                    np.maximum.at(worst, world, errors)
        figs = Figures(
            sums.reshape(n, ncol), counts.reshape(n, ncol), worst, self.type_names, self.combine
        )
        self.episode_error_sum += figs.error_sum
        self.episode_count += figs.count
        return figs

    def _predict(self, batch: EgoBatch, w: np.ndarray | slice, go_on: np.ndarray | None) -> None:
        codes = batch.observer_types
        group = None if self._one_group else self._group[codes]
        select = batch.visible & batch.present
        if go_on is not None:
            select &= go_on[:, None]
        dt = self._dt(batch)
        ctx = dict(batch.context) if batch.context else {}
        for g, predictor in enumerate(self.groups):
            sel = select if group is None else select & (group == g)
            flat = np.flatnonzero(sel)  # (a 2-d nonzero costs several times more)
            if not len(flat):
                continue
            bi, slot = _rows_cols(flat, sel.shape[1])
            world = self._all[w][bi]
            hist = int(predictor.history)
            # the window of the last `hist` steps, padded with the episode's first state
            states = np.empty((len(world), hist, self.ego.shape[2]))
            mask = np.empty((len(world), hist), dtype=bool)
            view_windows(self.ego, self.vis, self.start_t, world, slot, self.t, states, mask)
            poses = None
            if batch.observer_frames is not None:
                frames = np.asarray(batch.observer_frames)
                poses = np.take(frames.reshape(-1, frames.shape[-1]), flat, axis=0)
            states = np.asarray(FRAMES[batch.frame].to_frame(states, poses))
            code = np.take(codes, flat)
            uid = np.take(batch.observer_ids, flat)
            views = Views(
                states=states,
                mask=mask,
                observer_types=self._names[code],
                observer_ids=uid,
                dt=dt,
                context=[ctx] * len(world),
                poses=poses,
            )
            preds = check_predictions(predictor.predict(views), views, predictor)
            self._pending[g].append(
                _Pending(
                    due=self.t + int(predictor.horizon),
                    world=world,
                    slot=slot,
                    uid=uid,
                    episode=self.episode[world],
                    tcol=self._col[code],
                    views=views,
                    predictions=preds,
                    poses=poses,
                )
            )
