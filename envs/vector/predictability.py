"""The SB3 ``VecEnvWrapper`` twin of :class:`~bystander.envs.predictability.PredictabilityReward`.

:class:`PredictabilityVecWrapper` scores every world of a VecEnv with ONE ``predict``
and ONE ``error`` call per predictor per step, through one of two bookkeepers behind
one small interface (:class:`TrackerBackend`), and writes the infos in one place:

- :class:`ArrayBackend`: one :class:`~bystander.envs.batched_tracker.BatchedTracker`
  for all worlds (a few array operations per step whatever ``N``), for base VecEnvs
  that report :class:`~bystander.envs.contract.EgoBatch` es
  (:class:`~bystander.envs.contract.EgoBatchReporter`) and predictors with integer
  horizon and history;
- :class:`StreamBackend`: one :class:`~bystander.envs.tracker.PredictabilityTracker`
  per world, fed with each world's ``EgoStep`` from ``infos[i]`` and, after SB3's
  auto-reset, from the base VecEnv's ``reset_infos[i]`` (any other VecEnv).

The scoring rules and info keys are those of :mod:`bystander.envs.scoring`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnvWrapper

from bystander.envs.batched_tracker import BatchedTracker, supports_batched
from bystander.envs.checks import check_dt
from bystander.envs.contract import EGO_STEP_KEY, EgoBatchReporter, Predictor
from bystander.envs.scoring import (
    Figures,
    OnScored,
    PredictorTable,
    env_costs,
    episode_summary,
    step_info,
)
from bystander.envs.tracker import PredictabilityTracker, ego_step_of, run_requests

__all__ = [
    "ArrayBackend",
    "EpisodeErrors",
    "PredictabilityVecWrapper",
    "StreamBackend",
    "TrackerBackend",
    "base_venv",
]

EpisodeErrors = tuple[list[float], list[int], Sequence[str]]
"""An ended episode's prediction errors: per observer type the sum of the errors, the
number of predictions scored, and the types (the arguments of
:func:`~bystander.envs.scoring.episode_summary` after the costs)."""


def base_venv(venv: Any) -> Any:
    """The innermost VecEnv under ``venv``'s ``VecEnvWrapper`` s."""
    while isinstance(venv, VecEnvWrapper):
        venv = venv.venv
    return venv


class TrackerBackend(ABC):
    """The bookkeeping of a :class:`PredictabilityVecWrapper`: scores every world."""

    on_scored: OnScored | None

    @abstractmethod
    def reset(self, base: Any) -> None:
        """Start every world's episode from the base VecEnv's reset reports."""

    @abstractmethod
    def step(
        self, base: Any, infos: Sequence[Mapping[str, Any]], dones: np.ndarray
    ) -> tuple[Figures, dict[int, EpisodeErrors]]:
        """Score one step of every world (``dones`` ``(N,)`` bool: episodes that ended
        with it; the base VecEnv has auto-reset them). Returns the step's figures (``N``
        worlds) and, for each world whose episode ended, its :data:`EpisodeErrors`."""

    @abstractmethod
    def env_costs(
        self, base: Any, infos: Sequence[Mapping[str, Any]]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
        """The env's own cost channels this step: channel -> ``(N,)`` cost, and channel
        -> ``(N,)`` bool (which worlds reported it; None: every world)."""

    def set_on_scored(self, fn: OnScored | None) -> None:
        """Set the co-training hook."""
        self.on_scored = fn


class ArrayBackend(TrackerBackend):
    """One :class:`~bystander.envs.batched_tracker.BatchedTracker` for all worlds of an
    :class:`~bystander.envs.contract.EgoBatchReporter` base VecEnv."""

    def __init__(
        self,
        table: PredictorTable,
        n_worlds: int,
        *,
        dt: float | None,
        on_scored: OnScored | None,
        combine: str,
    ) -> None:
        self.table, self.n_worlds, self.dt, self.combine = table, n_worlds, dt, combine
        self.on_scored = on_scored
        self.tracker = self._new_tracker()

    def _new_tracker(self) -> BatchedTracker:
        return BatchedTracker(
            self.table, self.n_worlds, dt=self.dt, on_scored=self.on_scored, combine=self.combine
        )

    def set_on_scored(self, fn: OnScored | None) -> None:
        self.on_scored = self.tracker.on_scored = fn

    def reset(self, base: Any) -> None:
        self.tracker = self._new_tracker()
        self.tracker.start(base.reset_ego_batch)

    def step(
        self, base: Any, infos: Sequence[Mapping[str, Any]], dones: np.ndarray
    ) -> tuple[Figures, dict[int, EpisodeErrors]]:
        tracker = self.tracker
        figs = tracker.step(base.ego_batch, dones)
        done_idx = np.flatnonzero(dones)
        ended: dict[int, EpisodeErrors] = {}
        if len(done_idx):
            sums = tracker.episode_error_sum[done_idx].tolist()
            counts = tracker.episode_count[done_idx].tolist()
            for i, s, c in zip(done_idx.tolist(), sums, counts, strict=True):
                ended[i] = (s, c, tracker.type_names)
        if base.reset_ego_batch is not None:
            tracker.start(base.reset_ego_batch)
        return figs, ended

    def env_costs(
        self, base: Any, infos: Sequence[Mapping[str, Any]]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
        arrays = getattr(base, "step_arrays", None) or {}
        if isinstance(arrays.get("costs"), Mapping):
            return dict(arrays["costs"]), None
        if "cost" in arrays:
            return {"env": np.asarray(arrays["cost"], dtype=np.float64)}, None
        return {}, None


class StreamBackend(TrackerBackend):
    """One :class:`~bystander.envs.tracker.PredictabilityTracker` per world (and a spare
    per world that takes over at auto-reset); all worlds' predictor calls batched."""

    def __init__(self, n_worlds: int, **tracker_kwargs: Any) -> None:
        self.on_scored = tracker_kwargs.get("on_scored")
        self.trackers = [PredictabilityTracker(**tracker_kwargs) for _ in range(n_worlds)]
        self.spares = [PredictabilityTracker(**tracker_kwargs) for _ in range(n_worlds)]

    def set_on_scored(self, fn: OnScored | None) -> None:
        self.on_scored = fn
        for tracker in [*self.trackers, *self.spares]:
            tracker.on_scored = fn

    def reset(self, base: Any) -> None:
        reqs = []
        for i, tracker in enumerate(self.trackers):
            tracker.reset()
            reqs.append(tracker.prepare(ego_step_of(base.reset_infos[i], "reset_infos"), False))
        run_requests(reqs, self.on_scored)
        for tracker, req in zip(self.trackers, reqs, strict=True):
            tracker.commit(req)

    def step(
        self, base: Any, infos: Sequence[Mapping[str, Any]], dones: np.ndarray
    ) -> tuple[Figures, dict[int, EpisodeErrors]]:
        steps = []  # (tracker, requests, world index or None for a fresh episode)
        for i, (info, done) in enumerate(zip(infos, dones.tolist(), strict=True)):
            tracker = self.trackers[i]
            ego = info.get(EGO_STEP_KEY) if isinstance(info, dict) else None
            if ego is None:
                ego = ego_step_of(info, "step infos")
            steps.append((tracker, tracker.prepare(ego, done), i))
            if done:
                fresh = self.spares[i]
                fresh.reset()
                ego = ego_step_of(base.reset_infos[i], "reset_infos")
                steps.append((fresh, fresh.prepare(ego, False), None))
                self.trackers[i], self.spares[i] = fresh, tracker
        run_requests([req for _, req, _ in steps], self.on_scored)
        figs: list[Figures] = []
        ended: dict[int, EpisodeErrors] = {}
        for tracker, req, i in steps:
            f = tracker.commit(req)
            if i is not None:
                figs.append(f)
                if req.done:
                    ended[i] = tracker.episode_errors()
        return Figures.stack(figs), ended

    def env_costs(
        self, base: Any, infos: Sequence[Mapping[str, Any]]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
        n = len(infos)
        costs: dict[str, list[float]] = {}
        seen: dict[str, list[bool]] = {}
        for i, info in enumerate(infos):
            for ch, c in env_costs(info).items():
                if ch not in costs:
                    costs[ch], seen[ch] = [0.0] * n, [False] * n
                costs[ch][i], seen[ch][i] = float(c), True
        return (
            {ch: np.array(c, dtype=np.float64) for ch, c in costs.items()},
            {ch: np.array(s, dtype=bool) for ch, s in seen.items()},
        )


class PredictabilityVecWrapper(VecEnvWrapper):
    """SB3 ``VecEnvWrapper``: scores every world; ONE ``predict`` and ONE ``error`` call
    per predictor per step serve all worlds and observers.

    Two bookkeepers, same figures (see the module doc): the array path
    (:class:`ArrayBackend`) when the base VecEnv is an
    :class:`~bystander.envs.contract.EgoBatchReporter` and every predictor has an
    integer horizon and history, else one tracker per world (:class:`StreamBackend`).

    Per-world infos get the same keys as
    :class:`~bystander.envs.predictability.PredictabilityReward`: every step when the
    base env writes full infos, at episode end only when it writes lean ones
    (``info_mode="lean"``). Either way :attr:`step_arrays` holds the step's values as
    arrays over worlds: the base env's, with ``"costs"`` (channel -> ``(N,)``),
    ``"cost"``, ``"predictability"`` and ``"observers_scored"`` replaced / added.

    Args:
        venv: The VecEnv to wrap.
        predictors, channel, on_scored, combine: As
            :class:`~bystander.envs.predictability.PredictabilityReward`.
        dt: Seconds per ego state for ``Views.dt``; default the envs' ``dt`` attribute,
            else ``EgoStep.context["dt"]``, else 1.0.
        batched: None: the array path where it applies; False: per-world trackers;
            True: the array path or an error.
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
        super().__init__(venv)
        if dt is None:
            try:
                dt = venv.get_attr("dt", [0])[0]
            except AttributeError:
                dt = None
        kwargs = {"channel": channel, "dt": dt, "on_scored": on_scored, "combine": combine}
        n = venv.num_envs
        table = PredictorTable(predictors)
        base = base_venv(venv)
        array_env = isinstance(base, EgoBatchReporter)
        lean = getattr(base, "info_mode", "full") == "lean"
        if batched is None:
            batched = array_env and supports_batched(table)
        elif batched and not (array_env and supports_batched(table)):
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
        self.backend: TrackerBackend
        if self.batched:
            self.backend = ArrayBackend(
                table,
                n,
                dt=None if dt is None else check_dt(dt, "dt"),
                on_scored=on_scored,
                combine=combine,
            )
        else:
            self.backend = StreamBackend(n, predictors=predictors, **kwargs)
        self._episode_costs: dict[str, np.ndarray] = {}
        self._episode_seen: dict[str, np.ndarray] = {}

    def set_on_scored(self, fn: OnScored | None) -> None:
        """Set the co-training hook on every tracker."""
        self.on_scored = fn
        self.backend.set_on_scored(fn)

    def reset(self):
        obs = self.venv.reset()
        base = base_venv(self.venv)
        self.backend.reset(base)
        self._episode_costs, self._episode_seen = {}, {}
        self.reset_infos = list(base.reset_infos)
        return obs

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        base = base_venv(self.venv)
        dones = np.asarray(dones, dtype=bool)
        env_costs, seen = self.backend.env_costs(base, infos)
        figs, ended = self.backend.step(base, infos, dones)
        n = len(dones)
        error, count = figs.error, figs.observers_scored
        costs = dict(env_costs)
        costs[self.channel] = error
        arrays = dict(getattr(base, "step_arrays", None) or {})
        arrays.update(
            costs=costs,
            cost=np.sum(list(costs.values()), axis=0) if costs else np.zeros(n),
            predictability=np.where(count > 0, -error, 0.0),
            observers_scored=count,
        )
        self.step_arrays = arrays
        self._add_episode_costs(costs, seen)
        worlds = range(n) if self._full_infos else sorted(ended)
        # Python numbers, read per world below
        cost_lists = {ch: c.tolist() for ch, c in env_costs.items()} if worlds else {}
        seen_lists = None if seen is None else {ch: s.tolist() for ch, s in seen.items()}
        infos = list(infos)
        for i in worlds:
            error_i, n_i, by_type = figs.row(i)
            step_costs = {
                ch: float(c[i])
                for ch, c in cost_lists.items()
                if seen_lists is None or seen_lists[ch][i]
            }
            info = step_info(infos[i], step_costs, self.channel, error_i, n_i, by_type)
            if i in ended:
                info.update(episode_summary(self._episode_totals(i), *ended[i]))
            infos[i] = info
        if ended:
            done_idx = np.fromiter(ended, dtype=np.int64)
            for c in self._episode_costs.values():
                c[done_idx] = 0.0
            for s in self._episode_seen.values():
                s[done_idx] = False
        self.reset_infos = list(base.reset_infos)
        return obs, rewards, dones, infos

    def _add_episode_costs(
        self, costs: Mapping[str, np.ndarray], seen: Mapping[str, np.ndarray] | None
    ) -> None:
        """Add the step's costs (channel -> ``(N,)``) to the episodes' totals."""
        ep, ep_seen = self._episode_costs, self._episode_seen
        for ch, c in costs.items():
            reported = True if seen is None or ch not in seen else seen[ch]
            if ch in ep:
                ep[ch] += c
                ep_seen[ch] |= reported
            else:
                ep[ch] = np.array(c, dtype=np.float64)
                ep_seen[ch] = np.broadcast_to(reported, ep[ch].shape).copy()

    def _episode_totals(self, i: int) -> dict[str, float]:
        """Cost channel -> sum over world ``i``'s episode (channels it reported)."""
        return {
            ch: float(c[i]) for ch, c in self._episode_costs.items() if self._episode_seen[ch][i]
        }
