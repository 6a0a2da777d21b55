"""SB3 callbacks of a bystander training run.

- :class:`EpisodeMetricsCallback`: per-episode statistics from the env infos, logged to
  SB3's logger (TensorBoard/CSV) once per rollout: task return, success and collision
  rate, predictability, each cost channel, escalations, lambda.
- :class:`MultiplierCallback`: ``multiplier.update(mean episode cost)`` once per
  rollout (the only place lambda changes), then syncs every env's copy through the
  trainer's :class:`~bystander.agents.hooks.VecHooks` (SubprocVecEnv workers included).
- :class:`PredictorCoTrainingCallback`: the GAN-like loop: after each rollout, update
  the learned predictor on the (view, truth) pairs the envs scored, then sync its
  weights into the envs.
- :class:`LinearDecay` and :class:`ScheduleClock`: ``train.lr_schedule: linear`` /
  ``train.ent_schedule: linear``, a learning rate / entropy bonus that falls to 0 over
  the whole run (SB3's own progress restarts at each of the trainer's ``learn`` chunks,
  so the clock sets the step).

All of them are cheap per step (a few dict lookups per finished episode) and keep their
state across ``model.learn`` calls (the trainer learns in chunks).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from bystander.config import COTRAINED_KINDS, resolved_hyperparams
from bystander.envs.constraints import episode_cost_for_budget
from bystander.envs.contract import Views, concat_poses

if TYPE_CHECKING:  # pragma: no cover
    from bystander.agents.training import Trainer

__all__ = [
    "EpisodeMetricsCallback",
    "LinearDecay",
    "MultiplierCallback",
    "PredictorCoTrainingCallback",
    "ScheduleClock",
    "build_callbacks",
    "concat_views",
]


class EpisodeMetricsCallback(BaseCallback):
    """Collect finished episodes' figures; log their means once per rollout.

    Logged keys (over the last ``window`` finished episodes): ``episode/task_return``,
    ``episode/length``, ``episode/success_rate`` (``info["arrived"]``),
    ``episode/collision_rate`` (``info["crashed"]``), ``episode/cost``,
    ``episode/cost_<channel>`` (summed over the episode) and the same divided by the
    episode's length, ``episode/cost_per_step`` and ``episode/cost_<channel>_per_step``
    (mean over episodes of each episode's cost per env step),
    ``episode/prediction_error`` (metres),
    ``episode/prediction_error_<type>``, ``episode/escalations``; and
    ``constraint/lambda_<key>`` for each multiplier.

    Args:
        multipliers: The trainer's master multipliers (read only).
        window: Episodes averaged.
    """

    def __init__(self, multipliers: dict[str, Any] | None = None, window: int = 100) -> None:
        super().__init__()
        self.multipliers = multipliers or {}
        self.episodes: deque[dict[str, float]] = deque(maxlen=window)
        self._escalations: np.ndarray | None = None
        self.last_stats: dict[str, float] = {}
        self.total_episodes = 0

    def _on_step(self) -> bool:
        infos = self.locals["infos"]
        dones = self.locals["dones"]
        if self._escalations is None or len(self._escalations) != len(infos):
            self._escalations = np.zeros(len(infos))
        for i, info in enumerate(infos):
            if info.get("escalated"):
                self._escalations[i] += 1
            if dones[i]:
                self.episodes.append(self._episode_figures(info, float(self._escalations[i])))
                self._escalations[i] = 0
                self.total_episodes += 1
        return True

    @staticmethod
    def _episode_figures(info: dict[str, Any], escalations: float) -> dict[str, float]:
        ep: dict[str, float] = {"escalations": escalations}
        mon = info.get("episode")
        if mon is not None:
            ep["task_return"] = float(mon["r"])
            ep["length"] = float(mon["l"])
        ep["success_rate"] = float(bool(info.get("arrived", False)))
        ep["collision_rate"] = float(bool(info.get("crashed", False)))
        if "episode_cost" in info:
            ep["cost"] = float(info["episode_cost"])
        for ch, v in (info.get("episode_costs") or {}).items():
            ep[f"cost_{ch}"] = float(v)
        if ep.get("length", 0.0) >= 1:
            for k in [k for k in ep if k == "cost" or k.startswith("cost_")]:
                ep[f"{k}_per_step"] = ep[k] / ep["length"]
        if info.get("episode_observers_scored", 0):
            ep["prediction_error"] = float(info["episode_prediction_error"])
        for t, v in (info.get("episode_prediction_error_by_type") or {}).items():
            ep[f"prediction_error_{t}"] = float(v)
        return ep

    def _on_rollout_end(self) -> None:
        stats: dict[str, float] = {}
        if self.episodes:
            keys = sorted({k for ep in self.episodes for k in ep})
            for k in keys:
                vals = [ep[k] for ep in self.episodes if k in ep]
                stats[f"episode/{k}"] = float(np.mean(vals))
        for key, m in self.multipliers.items():
            stats[f"constraint/lambda_{key}"] = float(m.value)
        stats["episode/count"] = float(self.total_episodes)
        for k, v in stats.items():
            self.logger.record(k, v)
        self.last_stats = stats

    def state_dict(self) -> dict[str, Any]:
        return {"total_episodes": self.total_episodes, "episodes": list(self.episodes)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total_episodes = int(state.get("total_episodes", 0))
        self.episodes.extend(state.get("episodes", []))


class MultiplierCallback(BaseCallback):
    """Update each multiplier once per rollout from the rollout's finished episodes.

    The cost of an episode is ``info["episode_costs"][channel]`` (or
    ``info["episode_cost"]`` for key ``"cost"``), read at the episode's last step and
    put in the budget's unit by
    :func:`~bystander.envs.constraints.episode_cost_for_budget` with
    ``constraint.cost_normalization``: as summed (``sum``) or divided by the episode
    length ``info["episode"]["l"]`` that SB3's ``Monitor`` (per-env stack) or
    ``VecMonitor`` (batched stack) writes (``per_step``), or by the metres of route the
    episode gained, ``info["episode_progress"]`` (``per_metre``). The multiplier gets the mean
    over the rollout's episodes, which is also logged as ``constraint/episode_cost_<key>``
    (same unit as ``constraint.budget``). A rollout in which no episode finished
    leaves lambda unchanged (its partial episodes count in the rollout where they
    finish). After an update, every env's multiplier copy is synced.

    Args:
        trainer: The :class:`~bystander.agents.training.Trainer` (master multipliers,
            the stacks' hooks).
    """

    def __init__(self, trainer: Trainer) -> None:
        super().__init__()
        self.trainer = trainer
        self.normalization = trainer.cfg.constraint.cost_normalization
        self.costs: dict[str, list[float]] = {k: [] for k in trainer.multipliers}
        self.updates = 0
        self.last_stats: dict[str, float] = {}

    def _on_step(self) -> bool:
        dones = self.locals["dones"]
        if not dones.any():
            return True
        infos = self.locals["infos"]
        for i in np.flatnonzero(dones):
            info = infos[i]
            for key in self.costs:
                if key == "cost":
                    value = info.get("episode_cost")
                else:
                    value = (info.get("episode_costs") or {}).get(key)
                if value is None:
                    raise KeyError(
                        f"constraint: finished episode has no cost for channel {key!r} "
                        f"(info keys: {sorted(info)}); is the channel written by a wrapper?"
                    )
                length = (info.get("episode") or {}).get("l")
                progress = info.get("episode_progress")
                self.costs[key].append(
                    episode_cost_for_budget(value, length, self.normalization, progress)
                )
        return True

    def _on_rollout_end(self) -> None:
        changed = False
        for key, values in self.costs.items():
            if not values:
                continue
            m = self.trainer.multipliers[key]
            mean = float(np.mean(values))
            self.logger.record(f"constraint/episode_cost_{key}", mean)
            if self.trainer.cfg.constraint.signal != "rollout":
                values.clear()  # lambda follows the held-out evaluations (HeldOutEvaluation)
                continue
            m.update(mean)
            self.logger.record(f"constraint/lambda_{key}", m.value)
            self.last_stats[f"lambda_{key}"] = m.value
            values.clear()
            changed = True
        if changed:
            self.updates += 1
            self.trainer.sync_multipliers()

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "pending_costs": self.costs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state.get("updates", 0))
        for k, v in (state.get("pending_costs") or {}).items():
            if k in self.costs:
                self.costs[k] = [float(x) for x in v]


def concat_views(batches: list[tuple[Views, np.ndarray]]) -> tuple[Views, np.ndarray] | None:
    """Concatenate (views, truth) batches of one shape along the batch axis."""
    if not batches:
        return None
    key = (batches[0][0].states.shape[1:], batches[0][1].shape[1:])
    same = [(v, t) for v, t in batches if (v.states.shape[1:], t.shape[1:]) == key]
    views = Views(
        states=np.concatenate([v.states for v, _ in same]),
        mask=np.concatenate([v.mask for v, _ in same]),
        observer_types=np.concatenate([v.observer_types for v, _ in same]),
        observer_ids=np.concatenate([v.observer_ids for v, _ in same]),
        dt=same[0][0].dt,
        poses=concat_poses([v for v, _ in same]),
    )
    return views, np.concatenate([t for _, t in same])


class PredictorCoTrainingCallback(BaseCallback):
    """After each rollout: ``predictor.update`` on fresh scored pairs, then sync weights.

    The envs keep the (view, truth) pairs their tracker scored during the rollout
    (:class:`~bystander.agents.hooks.StackHooks`); this callback gathers them, keeps the newest
    ``predictor.buffer_size`` in a buffer, runs ``predictor.updates_per_rollout``
    Adam steps on random minibatches of ``predictor.batch_size`` (seeded with
    ``train.seed``), and loads the new weights into every env's predictor copy.
    """

    def __init__(self, trainer: Trainer) -> None:
        super().__init__()
        self.trainer = trainer
        self.rng = np.random.default_rng(trainer.cfg.train.seed + 12345)
        self.buffer: tuple[Views, np.ndarray] | None = None
        self.updates = 0
        self.last_stats: dict[str, float] = {}

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        p = self.trainer.cfg.predictor
        predictor = self.trainer.predictor
        batches = self.trainer.hooks.pop_scored()
        if self.buffer is not None:
            batches = [self.buffer, *batches]
        merged = concat_views(batches)
        if merged is None:
            return
        views, truth = merged
        if len(views) > p.buffer_size:
            keep = np.arange(len(views) - p.buffer_size, len(views))
            views, truth = views.take(keep), truth[keep]
        self.buffer = (views, truth)
        losses = []
        for _ in range(p.updates_per_rollout):
            idx = self.rng.choice(len(views), size=min(p.batch_size, len(views)), replace=False)
            out = predictor.update(views.take(idx), truth[idx])
            if "loss" in out:
                losses.append(float(out["loss"]))
        self.updates += 1
        if losses:
            self.logger.record("predictor/loss", float(np.mean(losses)))
            self.last_stats["predictor_loss"] = float(np.mean(losses))
        self.logger.record("predictor/buffer", float(len(views)))
        self.trainer.hooks.sync({}, predictor.net.state_dict())

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "buffer": self.buffer, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state.get("updates", 0))
        self.buffer = state.get("buffer")
        if "rng" in state:
            self.rng.bit_generator.state = state["rng"]


class LinearDecay:
    """A value falling linearly from ``initial`` at step 0 to 0 at ``total``; also an
    SB3 ``lr_schedule``.

    SB3 calls a schedule with its progress, which restarts at every ``learn`` call; the
    run's step comes from :attr:`step` instead, which :class:`ScheduleClock` sets at the
    end of each rollout (before PPO's update reads the rate). So the update after a
    rollout ending at step ``s`` uses ``initial * (1 - s / total)``: the first one
    slightly under ``initial``, the last one 0 (CleanRL's ``anneal_lr`` reads the step at
    the rollout's start instead; the difference is one rollout). A plain object, so it
    pickles into ``model.zip``.

    Args:
        initial: Value at step 0 (>= 0).
        total: The run's ``train.total_timesteps`` (env steps, >= 1).
    """

    def __init__(self, initial: float, total: int) -> None:
        self.initial = float(initial)
        self.total = int(total)
        self.step = 0

    def __call__(self, _progress_remaining: float = 1.0) -> float:
        return self.initial * max(0.0, 1.0 - self.step / self.total)


class ScheduleClock(BaseCallback):
    """After each rollout (before PPO's update), moves the run's schedules to its env
    steps: ``lr`` (PPO's ``lr_schedule``) and ``entropy`` (sets PPO's ``ent_coef``,
    logged as ``train/ent_coef``); either may be ``None``."""

    def __init__(self, lr: LinearDecay | None, entropy: LinearDecay | None = None) -> None:
        super().__init__()
        self.lr = lr
        self.entropy = entropy

    def sync(self, model: Any) -> None:
        """Set the schedules to ``model``'s step (also at build time, for a resume)."""
        for s in (self.lr, self.entropy):
            if s is not None:
                s.step = int(model.num_timesteps)
        if self.entropy is not None:
            model.ent_coef = self.entropy()
            model.logger.record("train/ent_coef", model.ent_coef)

    def _on_rollout_end(self) -> None:
        self.sync(self.model)

    def _on_step(self) -> bool:
        return True


def build_callbacks(trainer: Trainer) -> list[BaseCallback]:
    """The callbacks a run needs given its config."""
    cbs: list[BaseCallback] = [EpisodeMetricsCallback(trainer.multipliers)]
    train, model = trainer.cfg.train, trainer.model
    lr = ent = None
    if train.lr_schedule == "linear":
        lr = model.lr_schedule = LinearDecay(model.learning_rate, train.total_timesteps)
    if train.ent_schedule == "linear":
        ent = LinearDecay(resolved_hyperparams(train).get("ent_coef", 0.0), train.total_timesteps)
    if lr is not None or ent is not None:
        clock = ScheduleClock(lr, ent)
        clock.sync(model)  # the values at the run's current step (a resume)
        cbs.append(clock)
    if trainer.multipliers:
        cbs.append(MultiplierCallback(trainer))
    if trainer.cfg.predictor.kind in COTRAINED_KINDS:
        cbs.append(PredictorCoTrainingCallback(trainer))
    state = getattr(trainer, "callback_state", None) or {}
    for cb in cbs:
        if type(cb).__name__ in state:
            cb.load_state_dict(state[type(cb).__name__])  # type: ignore[attr-defined]
    return cbs
