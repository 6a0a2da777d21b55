"""Predictability of the ego to its observers: the single-env and PettingZoo wrappers.

- :class:`PredictabilityReward` (Gymnasium wrapper, one stream) and
  :class:`PredictabilityParallelWrapper` (PettingZoo ``ParallelEnv``, one tracker per
  agent that reports an ego step, every agent's predictor calls batched) are thin
  shells over :class:`~bystander.envs.tracker.PredictabilityTracker`.
- The vector twin, :class:`~bystander.envs.vector.PredictabilityVecWrapper` (SB3
  ``VecEnvWrapper``), lives in :mod:`bystander.envs.vector` (it imports SB3).

None of them changes the reward. The scoring rules and the info keys they write are
those of :mod:`bystander.envs.scoring`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, SupportsFloat

import gymnasium as gym
from pettingzoo.utils import BaseParallelWrapper

from bystander.envs.contract import EGO_STEP_KEY, EgoStep, Predictor
from bystander.envs.scoring import Figures, OnScored
from bystander.envs.tracker import PredictabilityTracker, ego_step_of, run_requests

__all__ = ["PredictabilityParallelWrapper", "PredictabilityReward"]


class PredictabilityReward(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Gymnasium wrapper: scores the ego's predictability, leaves the reward unchanged.

    Args:
        env: A predictable env (``info["ego_step"]`` on reset and every step).
        predictors: One predictor, or a dict observer type -> predictor (``"*"`` default).
        channel: Cost channel for the mean prediction error.
        dt: Seconds per ego state for ``Views.dt``; default ``env.unwrapped.dt``, else
            ``EgoStep.context["dt"]``, else 1.0.
        on_scored: Optional co-training hook ``(predictor, views, truth, predictions,
            errors)`` (:data:`~bystander.envs.scoring.OnScored`).

    See :mod:`bystander.envs.scoring` for the exact info keys and scoring rules.
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
        self.tracker.step(ego_step_of(info, "reset()"), done=False)
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        done = bool(terminated or truncated)
        figs = self.tracker.step(ego_step_of(info, "step()"), done)
        return obs, reward, terminated, truncated, self.tracker.write_info(info, figs, done)


class PredictabilityParallelWrapper(BaseParallelWrapper):
    """PettingZoo ``ParallelEnv`` wrapper: every agent whose info carries an ``EgoStep``
    is an ego with its own tracker; all agents' requests are batched (one call per
    predictor and request kind per step). Per-agent infos get the same keys as
    :class:`PredictabilityReward`; an agent's episode ends when it is terminated or
        truncated, or on its last step in play (``info["finished"]``, the intersection's
    ``finished_agents="inactive"`` mode). Arguments as :class:`PredictabilityReward`.
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

    def _run(self, items: list[tuple[Any, EgoStep, bool]]) -> dict[Any, Figures]:
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
            (
                a,
                info[EGO_STEP_KEY],
                bool(terms.get(a, False) or truncs.get(a, False) or info.get("finished", False)),
            )
            for a, info in infos.items()
            if EGO_STEP_KEY in info
        ]
        figs = self._run(items)
        infos = dict(infos)
        for agent, _, done in items:
            infos[agent] = self.trackers[agent].write_info(infos[agent], figs[agent], done)
        return obs, rewards, terms, truncs, infos
