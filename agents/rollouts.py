"""Datasets of (views, truth) pairs for pretraining and evaluating driving predictors.

A :class:`TrajectoryDataset` holds ``N`` samples: each is one observer's masked view
of the ego's last ``L`` positions in that observer's frame (``states`` ``(N, L, 2)``
metres, ``mask`` ``(N, L)`` bool) and the ego's true next ``H`` positions in the same
frame (``truth`` ``(N, H, 2)`` metres), with the observer's type and id and the
episode it came from (for held-out splits by episode).

Sources:

- :func:`collect_intersection`: drive ``bystander/Intersection-v0`` with a scripted
  ego policy through the shared :class:`~bystander.envs.predictability.PredictabilityReward`
  and record every (views, truth) pair it scores: exactly what the predictors see
  in training, built by the one view-building mechanism in the tracker.
- :func:`synthetic_dataset`: kinematic tracks with random acceleration and turn
  rate, random occlusion and random observer poses (tests, no env needed).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bystander.agents.metrics import summarize
from bystander.atomic import atomic_open
from bystander.envs.contract import FRAMES, Predictor, Views
from bystander.envs.scoring import ScoredReplay

__all__ = [
    "POLICIES",
    "TrajectoryDataset",
    "collect",
    "collect_intersection",
    "evaluate",
    "lane_following",
    "random_meta",
    "stop_and_go",
    "synthetic_dataset",
    "weaving",
]

OBSERVER_TYPES = ("car", "pedestrian", "cyclist")


@dataclass
class TrajectoryDataset:
    """``N`` (view, truth) samples; see the module docstring for shapes and units.

    Attributes:
        states: ``(N, L, 2)`` float64 metres, observer frame, oldest first.
        mask: ``(N, L)`` bool, which history entries the observer saw.
        truth: ``(N, H, 2)`` float64 metres, the ego's next ``H`` positions.
        observer_types: ``(N,)`` type names.
        observer_ids: ``(N,)`` int64 observer ids (unique within an episode).
        episode: ``(N,)`` int64 index of the episode each sample came from.
        dt: Seconds between consecutive states.
    """

    states: np.ndarray
    mask: np.ndarray
    truth: np.ndarray
    observer_types: np.ndarray
    observer_ids: np.ndarray
    episode: np.ndarray
    dt: float

    def __post_init__(self) -> None:
        self.states = np.asarray(self.states, dtype=np.float64)
        self.mask = np.asarray(self.mask, dtype=bool)
        self.truth = np.asarray(self.truth, dtype=np.float64)
        self.observer_types = np.asarray(self.observer_types, dtype=object)
        self.observer_ids = np.asarray(self.observer_ids, dtype=np.int64)
        self.episode = np.asarray(self.episode, dtype=np.int64)
        n = self.states.shape[0]
        if self.states.ndim != 3 or self.states.shape[2] != 2:
            raise ValueError(f"states: expected shape (N, L, 2), got {self.states.shape}")
        if self.mask.shape != self.states.shape[:2]:
            raise ValueError(f"mask: expected shape {self.states.shape[:2]}, got {self.mask.shape}")
        if self.truth.ndim != 3 or self.truth.shape[0] != n or self.truth.shape[2] != 2:
            raise ValueError(f"truth: expected shape ({n}, H, 2), got {self.truth.shape}")
        for name in ("observer_types", "observer_ids", "episode"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name}: expected shape ({n},), got {getattr(self, name).shape}")
        if not (np.isfinite(self.dt) and self.dt > 0):
            raise ValueError(f"dt: expected a positive number of seconds, got {self.dt}")

    def __len__(self) -> int:
        return int(self.states.shape[0])

    @property
    def horizon(self) -> int:
        return int(self.truth.shape[1])

    @property
    def history(self) -> int:
        return int(self.states.shape[1])

    def views(self) -> Views:
        """The samples as a :class:`Views` batch (for ``predict``/``score``/``update``)."""
        return Views(
            states=self.states,
            mask=self.mask,
            observer_types=self.observer_types,
            observer_ids=self.observer_ids,
            dt=float(self.dt),
        )

    def select(self, index: np.ndarray) -> TrajectoryDataset:
        """Rows ``index`` (int indices or a bool mask)."""
        return TrajectoryDataset(
            self.states[index],
            self.mask[index],
            self.truth[index],
            self.observer_types[index],
            self.observer_ids[index],
            self.episode[index],
            self.dt,
        )

    def split_episodes(
        self, held_out: float = 0.2, seed: int = 0
    ) -> tuple[TrajectoryDataset, TrajectoryDataset]:
        """Split by whole episodes: (train, held-out), ``held_out`` fraction of episodes."""
        if not 0 < held_out < 1:
            raise ValueError(f"held_out: expected a fraction in (0, 1), got {held_out}")
        eps = np.unique(self.episode)
        if eps.size < 2:
            raise ValueError(f"episode: need at least 2 episodes to split, got {eps.size}")
        rng = np.random.default_rng(seed)
        k = min(max(1, round(held_out * eps.size)), eps.size - 1)
        test_eps = rng.choice(eps, size=k, replace=False)
        test = np.isin(self.episode, test_eps)
        return self.select(~test), self.select(test)

    @classmethod
    def from_views(cls, views: Views, truth: np.ndarray, episode: int = 0) -> TrajectoryDataset:
        """One batch of views and their truth ``(B, H, D)`` (first two columns kept)."""
        n = len(views)
        return cls(
            np.asarray(views.states, dtype=np.float64)[..., :2].copy(),
            np.asarray(views.mask, dtype=bool).copy(),
            np.asarray(truth, dtype=np.float64)[..., :2].copy(),
            np.asarray(views.observer_types, dtype=object).copy(),
            np.asarray(views.observer_ids, dtype=np.int64).copy(),
            np.full(n, episode, dtype=np.int64),
            float(views.dt),
        )

    @classmethod
    def from_batches(cls, batches: Sequence[tuple[Any, ...]]) -> TrajectoryDataset:
        """Concatenate scored batches: ``(views, truth)`` pairs or the ``(predictor, views,
        truth)`` triples of :meth:`bystander.envs.scoring.ScoredReplay.drain`."""
        parts = [cls.from_views(*b[-2:]) for b in batches if len(b[-2])]
        return cls.concat(parts)

    @staticmethod
    def concat(parts: Sequence[TrajectoryDataset]) -> TrajectoryDataset:
        """Concatenate datasets with equal ``dt``, history and horizon."""
        if not parts:
            raise ValueError("parts: expected at least one dataset")
        dts = {p.dt for p in parts}
        if len(dts) != 1:
            raise ValueError(f"dt: datasets disagree ({sorted(dts)})")
        return TrajectoryDataset(
            np.concatenate([p.states for p in parts]),
            np.concatenate([p.mask for p in parts]),
            np.concatenate([p.truth for p in parts]),
            np.concatenate([p.observer_types for p in parts]),
            np.concatenate([p.observer_ids for p in parts]),
            np.concatenate([p.episode for p in parts]),
            parts[0].dt,
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a compressed ``.npz`` (atomically: temp file + rename)."""
        path = Path(path)
        with atomic_open(path) as fh:
            np.savez_compressed(
                fh,
                states=self.states,
                mask=self.mask,
                truth=self.truth,
                observer_types=self.observer_types.astype(str),
                observer_ids=self.observer_ids,
                episode=self.episode,
                dt=np.float64(self.dt),
            )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrajectoryDataset:
        """Read a file written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as z:
            return cls(
                z["states"],
                z["mask"],
                z["truth"],
                z["observer_types"].astype(object),
                z["observer_ids"],
                z["episode"],
                float(z["dt"]),
            )


def evaluate(
    predictor: Predictor, data: TrajectoryDataset, batch_size: int = 4096
) -> dict[str, object]:
    """ADE/FDE/miss rate of ``predictor`` on ``data``, overall and per observer type.

    See :func:`bystander.agents.metrics.summarize` for the returned structure.
    """
    if predictor.horizon != data.horizon:
        raise ValueError(
            f"horizon: predictor predicts {predictor.horizon} steps, dataset has {data.horizon}"
        )
    preds = []
    for start in range(0, len(data), batch_size):
        preds.append(predictor.predict(data.select(slice(start, start + batch_size)).views()))
    pred = np.concatenate(preds) if preds else np.zeros((0, data.horizon, 2))
    return summarize(pred, data.truth, data.observer_types)


def synthetic_dataset(
    n_tracks: int = 200,
    *,
    history: int = 8,
    horizon: int = 10,
    dt: float = 0.1,
    windows_per_track: int = 4,
    p_seen: float = 0.8,
    seed: int = 0,
) -> TrajectoryDataset:
    """Kinematic tracks (unicycle: piecewise-constant acceleration and turn rate).

    Each track (one "episode") starts at a random pose with speed U(0, 12) m/s; every
    step the acceleration (N(0, 1.5) m/s^2) and turn rate (0 with prob. 0.5, else
    U(-0.6, 0.6) rad/s) are redrawn with probability 0.05; speed stays in [0, 15]
    m/s. ``windows_per_track`` windows per track are cut at random times and seen
    from a random observer pose; each history entry is seen with probability
    ``p_seen`` except the last, which is always seen (only observers that see the
    ego now predict).
    """
    if n_tracks < 2:
        raise ValueError(f"n_tracks: expected an int >= 2, got {n_tracks}")
    rng = np.random.default_rng(seed)
    steps = history + horizon + 20
    pos = rng.uniform(-50, 50, size=(n_tracks, 2))
    heading = rng.uniform(-np.pi, np.pi, n_tracks)
    speed = rng.uniform(0, 12, n_tracks)
    acc = rng.normal(0, 1.5, n_tracks)
    turn = np.where(rng.random(n_tracks) < 0.5, 0.0, rng.uniform(-0.6, 0.6, n_tracks))
    track = np.empty((n_tracks, steps, 2))
    for t in range(steps):  # loop over time, vectorised over tracks
        track[:, t] = pos
        redraw = rng.random(n_tracks) < 0.05
        acc = np.where(redraw, rng.normal(0, 1.5, n_tracks), acc)
        turn = np.where(
            rng.random(n_tracks) < 0.05,
            np.where(rng.random(n_tracks) < 0.5, 0.0, rng.uniform(-0.6, 0.6, n_tracks)),
            turn,
        )
        speed = np.clip(speed + acc * dt, 0.0, 15.0)
        heading = heading + turn * dt
        pos = pos + speed[:, None] * dt * np.stack([np.cos(heading), np.sin(heading)], -1)
    n = n_tracks * windows_per_track
    track_idx = np.repeat(np.arange(n_tracks), windows_per_track)
    start = rng.integers(0, steps - history - horizon + 1, size=n)
    offsets = start[:, None] + np.arange(history + horizon)[None, :]
    window = track[track_idx[:, None], offsets]  # (N, L + H, 2)
    poses = np.column_stack(
        [window[:, history - 1] + rng.uniform(-30, 30, (n, 2)), rng.uniform(-np.pi, np.pi, n)]
    )
    window = FRAMES["rigid2d"].to_frame(window, poses)
    mask = rng.random((n, history)) < p_seen
    mask[:, -1] = True
    types = np.asarray(OBSERVER_TYPES, dtype=object)[rng.integers(0, 3, n)]
    return TrajectoryDataset(
        window[:, :history], mask, window[:, history:], types, np.arange(n), track_idx, dt
    )


class _Collector(ScoredReplay):
    """``on_scored`` collector that keeps every scored (views, truth) pair, tagged by
    episode."""

    def __init__(self) -> None:
        super().__init__(capacity=None)
        self.parts: list[TrajectoryDataset] = []
        self.episode = 0

    def keep(
        self,
        predictor: Any,
        views: Views,
        truth: np.ndarray,
        predictions: np.ndarray | None,
        errors: np.ndarray,
    ) -> None:
        if len(views):
            self.parts.append(TrajectoryDataset.from_views(views, truth, self.episode))


Policy = Callable[[Any, Any, np.random.Generator], Any]
"""A scripted ego policy: ``policy(env, obs, rng) -> action`` (``env`` is the wrapped env)."""


def collect(
    env: Any,
    policy: Policy,
    n_episodes: int,
    *,
    history: int = 8,
    horizon: int = 10,
    seed: int = 0,
    max_steps: int | None = None,
    dt: float | None = None,
) -> TrajectoryDataset:
    """Run ``n_episodes`` of a predictable Gymnasium env and keep every scored (view, truth).

    The env is wrapped in :class:`~bystander.envs.predictability.PredictabilityReward`
    with a :class:`~bystander.agents.predictors.ConstantVelocityPredictor` of the given
    ``history``/``horizon`` (the predictor only decides which pairs exist; the pairs do
    not depend on it). Episode ``i`` is reset with seed ``seed + i``.

    Args:
        env: A predictable Gymnasium env (``info["ego_step"]``), not yet wrapped.
        policy: ``policy(env, obs, rng) -> action``.
        n_episodes: Episodes to run (int >= 1).
        history / horizon: View length and prediction length in steps.
        seed: Base seed of the episodes and of the policy's ``rng``.
        max_steps: Optional cap on steps per episode (besides the env's own end).
        dt: Seconds per step for ``Views.dt``; default ``env.unwrapped.dt``, else the
            intersection simulator's ``config.dt``, else 1.0.
    """
    from bystander.agents.predictors import ConstantVelocityPredictor
    from bystander.envs.predictability import PredictabilityReward

    if isinstance(n_episodes, bool) or not isinstance(n_episodes, int) or n_episodes < 1:
        raise ValueError(f"n_episodes: expected an int >= 1, got {n_episodes!r}")
    if dt is None:
        dt = getattr(env.unwrapped, "dt", None)
    if dt is None:
        sim = getattr(env.unwrapped, "sim", None)
        dt = float(sim.config.dt) if sim is not None else 1.0
    collector = _Collector()
    wrapped = PredictabilityReward(
        env,
        ConstantVelocityPredictor(horizon=horizon, history=history),
        dt=float(dt),
        on_scored=collector,
    )
    rng = np.random.default_rng(seed)
    for i in range(n_episodes):
        collector.episode = i
        obs, _ = wrapped.reset(seed=seed + i)
        steps = 0
        while True:
            obs, _, terminated, truncated, _ = wrapped.step(policy(wrapped, obs, rng))
            steps += 1
            if terminated or truncated or (max_steps is not None and steps >= max_steps):
                break
    if not collector.parts:
        raise RuntimeError(
            "collect: no prediction was scored; episodes too short for the horizon or the "
            "ego never seen"
        )
    return TrajectoryDataset.concat(collector.parts)


# ----------------------------------------------------------------------------- policies
# Scripted ego drivers for the intersection. Discrete meta-actions (see
# bystander.envs.intersection.sim.META_ACTIONS): 0 SLOWER, 1 KEEP, 2 FASTER; the turn at
# each intersection follows the shortest route. Continuous: (acceleration, steering) in
# [-1, 1]. The step counter is the simulator's (``env.unwrapped.sim.t``).

_SLOWER, _KEEP, _FASTER = 0, 1, 2


def _t(env: Any) -> int:
    from bystander.agents.reviewers import find_sim

    return int(find_sim(env).t[0])


def lane_following(env: Any, obs: Any, rng: np.random.Generator) -> Any:
    """Smooth: keep the target speed along the lane (discrete ``KEEP``; continuous: coast)."""
    return _KEEP if not _continuous(env) else np.zeros(2, dtype=np.float32)


def random_meta(env: Any, obs: Any, rng: np.random.Generator, p_change: float = 0.08) -> Any:
    """Mostly ``KEEP``; with probability ``p_change`` per step ``SLOWER`` or ``FASTER``."""
    if rng.random() < p_change:
        return int(rng.choice([_SLOWER, _FASTER]))
    return _KEEP


def stop_and_go(env: Any, obs: Any, rng: np.random.Generator, period: int = 15) -> Any:
    """Erratic: ``FASTER`` for ``period`` steps, then ``SLOWER`` for ``period`` steps, repeat."""
    return _FASTER if (_t(env) // period) % 2 == 0 else _SLOWER


def weaving(
    env: Any, obs: Any, rng: np.random.Generator, amplitude: float = 0.3, period: float = 2.0
) -> Any:
    """Erratic (continuous actions): sinusoidal steering of ``amplitude`` (fraction of the
    steering limit) and ``period`` seconds, no acceleration."""
    from bystander.agents.reviewers import find_sim

    sim = find_sim(env)
    phase = 2 * np.pi * sim.t[0] * sim.config.dt / period
    return np.array([0.0, amplitude * np.sin(phase)], dtype=np.float32)


def _continuous(env: Any) -> bool:
    from bystander.agents.reviewers import find_sim

    return bool(find_sim(env).continuous)


POLICIES: dict[str, Policy] = {
    "lane_following": lane_following,
    "random_meta": random_meta,
    "stop_and_go": stop_and_go,
    "weaving": weaving,
}
"""Scripted ego policies by name."""


def collect_intersection(
    n_episodes: int,
    *,
    policy: str | Policy = "random_meta",
    config: dict[str, Any] | None = None,
    history: int = 8,
    horizon: int = 10,
    seed: int = 0,
    max_steps: int | None = None,
) -> TrajectoryDataset:
    """(views, truth) pairs from ``bystander/Intersection-v0`` episodes with scripted traffic.

    Every road user but the ego is scripted by the simulator; the ego is driven by
    ``policy`` (a name in :data:`POLICIES` or a callable, default ``"random_meta"``: lane
    following with occasional speed changes). See :func:`collect`.
    """
    import gymnasium as gym

    import bystander.envs  # noqa: F401 - registers the env id

    if isinstance(policy, str):
        if policy not in POLICIES:
            raise ValueError(
                f"policy: expected one of {sorted(POLICIES)} or a callable, got {policy!r}"
            )
        policy = POLICIES[policy]
    env = gym.make("bystander/Intersection-v0", config=dict(config or {}))
    try:
        return collect(
            env,
            policy,
            n_episodes,
            history=history,
            horizon=horizon,
            seed=seed,
            max_steps=max_steps,
        )
    finally:
        env.close()
