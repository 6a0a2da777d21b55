"""The scoring rulebook: one place for the rules every tracker and trainer shares.

Used by the per-stream tracker (:class:`~bystander.envs.tracker.PredictabilityTracker`),
the array tracker (:class:`~bystander.envs.batched_tracker.BatchedTracker`), the
wrappers over them (:mod:`bystander.envs.predictability`,
:mod:`bystander.envs.vector`), the LLM trainer (:mod:`bystander.llm.grpo`) and the TRL
adapter (:mod:`bystander.llm.trl_adapter`).

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

Which predictor scores an observer: :class:`PredictorTable` (its type's entry, else
the ``"*"`` default; no entry or ``None``: not scored). A step that reports zero new
states (e.g. a :class:`~bystander.envs.review.ReviewGate` escalation) scores and
predicts nothing.

How the errors of a step make its cost: :data:`COMBINE` and :func:`step_cost`
(``"mean"`` over the predictions scored, or the ``"worst"`` one; 0.0 when none).

Info written (each step, by the wrappers; :func:`step_info`, :func:`episode_summary`)
------------------------------------------------------------------------------------
``info["costs"][channel]``: the step's cost (mean error of the predictions scored this
step, or the worst; 0.0 when none); ``info["cost"]``: sum of ``info["costs"]`` (an env
``info["cost"]`` without a ``"costs"`` dict is kept as channel ``"env"``);
``info["predictability"]``: minus that cost; ``info["observers_scored"]``: number of
predictions scored; ``info["prediction_error_by_type"]``: observer type -> mean error
(types scored this step only). At episode end additionally: ``info["episode_cost"]``
(sum of ``info["cost"]`` over the episode's steps), ``info["episode_costs"]`` (channel
-> sum), ``info["episode_prediction_error"]`` (mean error over all predictions scored
in the episode, 0.0 if none), ``info["episode_observers_scored"]`` and
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
``on_scored(predictor, views, truth, predictions, errors)`` (:data:`OnScored`) is
called after each batched error / score call with exactly what was scored (``truth``
in the views' frame; ``predictions`` None for ``score`` calls). A
:class:`ScoredReplay` collects these so that a training loop can run
``predictor.update(views, truth)`` off the hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from bystander.envs.checks import check_predictor
from bystander.envs.contract import Predictor, Views

__all__ = [
    "COMBINE",
    "Figures",
    "OnScored",
    "PredictorTable",
    "ScoredReplay",
    "check_combine",
    "combine_errors",
    "env_costs",
    "episode_summary",
    "step_cost",
    "step_info",
]

OnScored = Callable[[Predictor, Views, np.ndarray, np.ndarray | None, np.ndarray], None]
"""Co-training hook ``(predictor, views, truth, predictions, errors)``: ``views`` and
``truth`` ``(B, H, ...)`` in the observers' frames, ``predictions`` as returned by
``predict`` (None for ``score`` calls), ``errors`` ``(B,)``."""

# ------------------------------------------------------------------------- combining

COMBINE = ("mean", "worst")
"""How observers' errors in one step combine into the step's cost."""


def check_combine(mode: str) -> str:
    """``mode`` if it is one of :data:`COMBINE`, else a ``ValueError``."""
    if mode not in COMBINE:
        raise ValueError(f"combine: expected one of {COMBINE}, got {mode!r}")
    return mode


def step_cost(total: Any, count: Any, worst: Any, mode: str) -> Any:
    """The cost of the errors scored in a step: ``total / count`` for ``"mean"``, ``worst``
    for ``"worst"``; 0.0 where ``count == 0``.

    Args:
        total: Sum of the errors scored (float, or an array over worlds / completions).
        count: Number of errors scored (int, or an int array of the same shape).
        worst: Largest error scored, 0.0 where none (same shape).
        mode: One of :data:`COMBINE`.

    Python numbers in, Python numbers out; arrays in, arrays out.
    """
    if mode == "worst":
        return worst
    return total / (count + (count == 0))  # total is 0.0 where nothing was scored


def combine_errors(errors: np.ndarray, mode: str = "mean") -> np.ndarray:
    """Combine observers' errors ``(..., M)`` (NaN: not scored) into one cost ``(...)``.

    The rule of :func:`step_cost`: ``mean`` over the observers that scored, or ``worst``
    (the maximum); 0.0 where no observer scored.
    """
    check_combine(mode)
    errors = np.asarray(errors, dtype=np.float64)
    valid = ~np.isnan(errors)
    count = valid.sum(axis=-1)
    total = np.where(valid, errors, 0.0).sum(axis=-1)
    worst = np.where(count > 0, np.where(valid, errors, -np.inf).max(axis=-1), 0.0)
    return step_cost(total, count, worst, mode)


# ----------------------------------------------------------------- type -> predictor


class PredictorTable:
    """Observer type -> predictor: the type's entry, else the ``"*"`` default; no entry or
    a ``None`` value: observers of that type are not scored.

    Args:
        predictors: One predictor for every observer, or a dict observer type ->
            predictor (or None). Each predictor is checked
            (:func:`~bystander.envs.checks.check_predictor`); at least one is needed.
    """

    def __init__(self, predictors: Predictor | Mapping[str, Predictor | None]) -> None:
        if isinstance(predictors, PredictorTable):
            predictors = predictors.predictors
        if isinstance(predictors, Mapping):
            if not predictors:
                raise ValueError(
                    "predictors: expected a Predictor or a non-empty dict type -> Predictor"
                )
            table: dict[str, Any] = {str(k): p for k, p in predictors.items()}
        else:
            table = {"*": predictors}
        for key, p in table.items():
            if p is not None:
                check_predictor(p, key)
        if all(p is None for p in table.values()):
            raise ValueError("predictors: expected at least one Predictor, got only None")
        self.predictors = table
        self.unique: list[Any] = list({id(p): p for p in table.values() if p is not None}.values())
        """The distinct predictors, in table order."""
        self.single: Any | None = table["*"] if list(table) == ["*"] else None
        """The predictor of every type when the table holds only a default, else None."""
        self._cache: dict[str, Any] = {}

    def for_type(self, observer_type: str) -> Any | None:
        """The predictor that scores observers of ``observer_type`` (None: not scored)."""
        try:
            return self._cache[observer_type]
        except KeyError:
            p = self.predictors.get(observer_type, self.predictors.get("*"))
            self._cache[observer_type] = p
            return p

    def groups(self, observer_types: Iterable[Any]) -> list[tuple[Any, list[int]]]:
        """``(predictor, positions)`` for each predictor scoring some of
        ``observer_types`` (positions of the types it scores, in order)."""
        groups: dict[int, tuple[Any, list[int]]] = {}
        for i, t in enumerate(observer_types):
            p = self.for_type(str(t))
            if p is not None:
                groups.setdefault(id(p), (p, []))[1].append(i)
        return list(groups.values())


# ------------------------------------------------------------------------- figures


class Figures:
    """One step's predictability figures of ``N`` streams (one stream: ``N = 1``).

    Args / attributes:
        error_sum: ``(N, T)`` sum of the errors scored this step per stream and observer
            type (``T = len(type_names)``; unit of the predictor: metres, nats/token...).
        count: ``(N, T)`` int, number of predictions scored.
        worst: ``(N,)`` largest error scored this step (0.0 where none; the array
            tracker keeps it only when ``combine == "worst"``, else zeros).
        type_names: Observer type of each column.
        combine: One of :data:`COMBINE`.

    The three figures may be given as arrays (the array tracker) or as nested Python
    lists (the per-stream tracker, which runs per world per step: three small arrays
    there and reading them back cost about as much as the rest of its info writing);
    the attributes are arrays either way, made on first read, and :meth:`row` reads
    Python lists.
    """

    __slots__ = ("_count", "_error_sum", "_worst", "combine", "type_names")

    def __init__(
        self,
        error_sum: np.ndarray | list[list[float]],
        count: np.ndarray | list[list[int]],
        worst: np.ndarray | list[float],
        type_names: tuple[str, ...],
        combine: str = "mean",
    ) -> None:
        self._error_sum, self._count, self._worst = error_sum, count, worst
        self.type_names = type_names
        self.combine = combine

    @classmethod
    def stack(cls, figs: Sequence[Figures]) -> Figures:
        """The figures of ``len(figs)`` streams in one (columns: the union of their
        types, in order of appearance)."""
        col: dict[str, int] = {}
        for f in figs:
            for t in f.type_names:
                col.setdefault(t, len(col))
        n_cols = len(col)
        sums: list[list[float]] = []
        counts: list[list[int]] = []
        worst: list[float] = []
        for f in figs:
            f_sums, f_counts, f_worst = f._error_sum, f._count, f._worst
            if isinstance(f_sums, np.ndarray):
                f_sums, f_counts, f_worst = f_sums.tolist(), f.count.tolist(), f.worst.tolist()
            worst.extend(f_worst)
            if len(f.type_names) == n_cols and all(
                col[t] == k for k, t in enumerate(f.type_names)
            ):  # the same columns: rows as they are
                sums.extend(f_sums)
                counts.extend(f_counts)
                continue
            cols = [col[t] for t in f.type_names]
            for es, cs in zip(f_sums, f_counts, strict=True):
                row_s, row_c = [0.0] * n_cols, [0] * n_cols
                for k, c in enumerate(cols):
                    row_s[c], row_c[c] = es[k], cs[k]
                sums.append(row_s)
                counts.append(row_c)
        names = tuple(col)
        return cls(sums, counts, worst, names, figs[0].combine if figs else "mean")

    @property
    def error_sum(self) -> np.ndarray:
        """``(N, T)`` float64 (see class doc)."""
        if not isinstance(self._error_sum, np.ndarray):
            shape = (len(self._worst), len(self.type_names))
            self._error_sum = np.array(self._error_sum, dtype=np.float64).reshape(shape)
        return self._error_sum

    @property
    def count(self) -> np.ndarray:
        """``(N, T)`` int64 (see class doc)."""
        if not isinstance(self._count, np.ndarray):
            shape = (len(self._worst), len(self.type_names))
            self._count = np.array(self._count, dtype=np.int64).reshape(shape)
        return self._count

    @property
    def worst(self) -> np.ndarray:
        """``(N,)`` float64 (see class doc)."""
        if not isinstance(self._worst, np.ndarray):
            self._worst = np.array(self._worst, dtype=np.float64)
        return self._worst

    @property
    def observers_scored(self) -> np.ndarray:
        """``(N,)`` int: predictions scored this step."""
        return self.count.sum(axis=1)

    @property
    def error(self) -> np.ndarray:
        """``(N,)`` the step's cost (:func:`step_cost`): mean error (or worst) of the
        predictions scored; 0.0 where none."""
        return step_cost(
            self.error_sum.sum(axis=1), self.observers_scored, self.worst, self.combine
        )

    @property
    def predictability(self) -> np.ndarray:
        """``(N,)`` minus :attr:`error` (0.0 where nothing was scored)."""
        return np.where(self.observers_scored > 0, -self.error, 0.0)

    @property
    def error_by_type(self) -> list[dict[str, float]]:
        """Per stream, observer type -> mean error (types scored this step only)."""
        return [self.row(i)[2] for i in range(len(self._worst))]

    def row(self, i: int) -> tuple[float, int, dict[str, float]]:
        """Stream ``i``'s ``(error, observers_scored, error by type)`` as Python numbers
        (the values of :attr:`error` etc.: sums of fewer than 8 types add up in the
        same order)."""
        sums, counts, worst = self._error_sum, self._count, self._worst
        # one row of the arrays (e.g. the few worlds that ended of many), or of the lists
        es = sums[i].tolist() if isinstance(sums, np.ndarray) else sums[i]
        cs = counts[i].tolist() if isinstance(counts, np.ndarray) else counts[i]
        wi = float(worst[i]) if isinstance(worst, np.ndarray) else worst[i]
        n = sum(cs)
        by_type = {t: e / k for t, e, k in zip(self.type_names, es, cs, strict=False) if k}
        return step_cost(sum(es), n, wi, self.combine), n, by_type


def env_costs(info: Mapping[str, Any]) -> dict[str, Any]:
    """The env's own cost channels in a step's ``info``: a copy of ``info["costs"]``, or
    ``{"env": info["cost"]}`` when it writes only ``"cost"``, else ``{}``."""
    if isinstance(info.get("costs"), Mapping):
        return dict(info["costs"])
    if "cost" in info:
        return {"env": float(info["cost"])}
    return {}


def step_info(
    info: Mapping[str, Any],
    costs: dict[str, Any],
    channel: str,
    error: float,
    n: int,
    by_type: dict[str, float],
) -> dict[str, Any]:
    """A copy of a step's ``info`` with the step keys of the module doc written.

    Args:
        info: The env's info of the step.
        costs: The env's cost channels (:func:`env_costs`); ``costs[channel] = error`` is
            set in place, so the caller can add them to the episode's totals.
        channel: The predictability cost channel.
        error: The step's cost (:func:`step_cost`).
        n: Predictions scored this step.
        by_type: Observer type -> mean error this step.
    """
    info = dict(info)
    costs[channel] = error
    info["costs"] = costs
    info["cost"] = float(sum(costs.values()))
    info["predictability"] = -error if n else 0.0
    info["observers_scored"] = n
    info["prediction_error_by_type"] = by_type
    return info


def episode_summary(
    costs: Mapping[str, float],
    error_sum: Sequence[float],
    count: Sequence[int],
    type_names: Sequence[str],
) -> dict[str, Any]:
    """The episode keys of the module doc.

    Args:
        costs: Cost channel -> sum over the episode's steps.
        error_sum: Per observer type, sum of the errors scored in the episode.
        count: Per observer type, predictions scored in the episode.
        type_names: The observer type of each entry.
    """
    n = int(sum(count))
    return {
        "episode_cost": float(sum(costs.values())),
        "episode_costs": {ch: float(c) for ch, c in costs.items()},
        "episode_prediction_error": float(sum(error_sum) / n) if n else 0.0,
        "episode_observers_scored": n,
        "episode_prediction_error_by_type": {
            t: float(s / c) for t, s, c in zip(type_names, error_sum, count, strict=True) if c
        },
    }


# ------------------------------------------------------------------------- co-training


class ScoredReplay:
    """The ``on_scored`` collector: keeps what the trackers scored, for co-training and
    evaluation, off the hot path.

    Pass it as ``on_scored``; then::

        for predictor, views, truth in replay.drain():
            predictor.update(views, truth)

    Batches are kept while fewer than ``capacity`` views are held (later ones are
    dropped until :meth:`drain` empties it). Subclasses keep other things by overriding
    :meth:`keep` (e.g. per-type figures computed from the ``predictions`` handed over).

    Args:
        capacity: Views held at most between two :meth:`drain` calls (None: no bound).
    """

    def __init__(self, capacity: int | None = 65_536) -> None:
        if capacity is not None and capacity < 1:
            raise ValueError(f"capacity: expected >= 1 or None, got {capacity}")
        self.capacity = capacity
        self.batches: list[tuple[Predictor, Views, np.ndarray]] = []
        self.n_views = 0

    def __call__(
        self,
        predictor: Predictor,
        views: Views,
        truth: np.ndarray,
        predictions: np.ndarray | None,
        errors: np.ndarray,
    ) -> None:
        if self.capacity is None or self.n_views < self.capacity:
            self.keep(predictor, views, truth, predictions, errors)
            self.n_views += len(views)

    def keep(
        self,
        predictor: Predictor,
        views: Views,
        truth: np.ndarray,
        predictions: np.ndarray | None,
        errors: np.ndarray,
    ) -> None:
        """Store one scored batch (default: the ``(predictor, views, truth)`` triple)."""
        self.batches.append((predictor, views, np.asarray(truth)))

    def __len__(self) -> int:
        return len(self.batches)

    def drain(self) -> list[tuple[Predictor, Views, np.ndarray]]:
        """The batches kept since the last call (emptied)."""
        out, self.batches, self.n_views = self.batches, [], 0
        return out
