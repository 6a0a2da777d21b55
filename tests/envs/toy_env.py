"""Small predictable environments and predictors for tests (not cars, not text models).

- :class:`ToyPointEnv`: a point on a plane, moved by a velocity command, watched by
  stationary or moving observers with a field of view and a range, which may appear
  and disappear. Reports an :class:`EgoStep` in the ``rigid2d`` frame.
- :class:`ToyTokenEnv`: emits ``chunk`` token ids per step, watched by observers that
  see every token or every other one (``identity`` frame, ``context["prompt_ids"]``).
- Predictors: :class:`HoldPredictor` (the ego stays where last seen),
  :class:`LinearPredictor` (constant velocity from the last two seen states) and
  :class:`UnigramPredictor` (``horizon=None``: nats/token under smoothed counts of
  the visible tokens).

Other test files may reuse them: ``from toy_env import ToyPointEnv, ...``.
``register_toy_envs()`` registers ``bystander-test/ToyPoint-v0`` and
``bystander-test/ToyToken-v0`` (tests only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from bystander.envs.contract import EGO_STEP_KEY, EgoStep, Views


@dataclass(frozen=True)
class ToyObserver:
    """An observer of :class:`ToyPointEnv`.

    Attributes:
        kind: Observer type name.
        x, y: Position at step 0 (m). heading: facing direction (rad), fixed.
        vx, vy: Velocity (m/s); position at step k is ``(x + vx*k*dt, y + vy*k*dt)``.
        fov: Full field-of-view angle (rad); ``2*pi`` sees all around.
        range: Sight range (m).
        start, stop: Present for steps ``start <= k < stop`` (``stop=None``: to the end).
    """

    kind: str
    x: float
    y: float
    heading: float = 0.0
    vx: float = 0.0
    vy: float = 0.0
    fov: float = 2 * math.pi
    range: float = math.inf
    start: int = 0
    stop: int | None = None


DEFAULT_OBSERVERS = (
    ToyObserver("post", x=5.0, y=3.0, heading=-math.pi / 2),
    ToyObserver("walker", x=10.0, y=-4.0, heading=math.pi / 2, vx=-0.5, fov=math.pi, range=12.0),
    ToyObserver("post", x=-5.0, y=0.0, heading=math.pi, fov=math.pi / 2),  # looks away
)


class ToyPointEnv(gym.Env):
    """A point on a plane (position in m), action = velocity command in [-1, 1]^2 * speed.

    Observation ``(x, y, vx, vy)`` float32. Reward ``"progress"`` = x displacement (m).
    Cost channel ``"boundary"`` = 1 when ``|y| > bound``. Terminates at ``x >= goal``,
    truncates after ``max_steps`` steps.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        observers: Sequence[ToyObserver] = DEFAULT_OBSERVERS,
        max_steps: int = 40,
        speed: float = 1.0,
        dt: float = 1.0,
        goal: float = 1e9,
        bound: float = 3.0,
    ) -> None:
        self.observers = tuple(observers)
        self.max_steps = max_steps
        self.speed = speed
        self.dt = dt
        self.goal = goal
        self.bound = bound
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._pos = np.zeros(2)
        self._vel = np.zeros(2)
        self._k = 0

    def _obs(self) -> np.ndarray:
        return np.concatenate([self._pos, self._vel]).astype(np.float32)

    def observer_poses(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Ids ``(M,)``, types ``(M,)``, poses ``(M, 3)`` and ranges of observers present at step k."""
        idx = [
            i
            for i, o in enumerate(self.observers)
            if o.start <= k and (o.stop is None or k < o.stop)
        ]
        obs = [self.observers[i] for i in idx]
        poses = np.array(
            [[o.x + o.vx * k * self.dt, o.y + o.vy * k * self.dt, o.heading] for o in obs],
            dtype=np.float64,
        ).reshape(-1, 3)
        types = np.array([o.kind for o in obs], dtype=object)
        return np.array(idx, dtype=np.int64), types, poses, np.array([o.range for o in obs])

    def _ego_step(self, start: bool) -> EgoStep:
        ids, types, poses, ranges = self.observer_poses(self._k)
        rel = self._pos[None, :] - poses[:, :2]
        dist = np.hypot(rel[:, 0], rel[:, 1])
        bearing = np.arctan2(rel[:, 1], rel[:, 0]) - poses[:, 2]
        bearing = (bearing + np.pi) % (2 * np.pi) - np.pi
        fov = np.array([self.observers[i].fov for i in ids])
        visible = (dist <= ranges) & ((np.abs(bearing) <= fov / 2) | (fov >= 2 * np.pi))
        return EgoStep(
            states=self._pos[None, :].copy(),
            observer_ids=ids,
            observer_types=types,
            visible=visible[:, None],
            observer_frames=poses,
            frame="rigid2d",
            episode_start=start,
        )

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._pos = np.zeros(2)
        self._vel = np.zeros(2)
        self._k = 0
        return self._obs(), {EGO_STEP_KEY: self._ego_step(True)}

    def step(self, action: Any):
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        self._vel = a * self.speed
        old_x = self._pos[0]
        self._pos = self._pos + self._vel * self.dt
        self._k += 1
        progress = float(self._pos[0] - old_x)
        boundary = float(abs(self._pos[1]) > self.bound)
        info = {
            EGO_STEP_KEY: self._ego_step(False),
            "rewards": {"progress": progress},
            "costs": {"boundary": boundary},
            "cost": boundary,
        }
        terminated = bool(self._pos[0] >= self.goal)
        truncated = self._k >= self.max_steps
        return self._obs(), progress, terminated, truncated, info


class ToyTokenEnv(gym.Env):
    """Emits ``chunk`` token ids per step for ``n_steps`` steps (then terminates).

    Observers (type ``"slm"``): id 0 sees every token, id 1 every other token (even
    absolute positions), id 2 none. Observation: the tokens just emitted.
    """

    metadata = {"render_modes": []}

    def __init__(self, vocab: int = 8, chunk: int = 3, n_steps: int = 4) -> None:
        self.vocab, self.chunk, self.n_steps = vocab, chunk, n_steps
        self.observation_space = gym.spaces.MultiDiscrete([vocab] * chunk)
        self.action_space = gym.spaces.MultiDiscrete([vocab] * chunk)
        self._k = 0
        self._n = 0

    def _ego_step(self, tokens: np.ndarray, start: bool) -> EgoStep:
        pos = self._n + np.arange(len(tokens))
        visible = np.stack([np.ones(len(tokens), bool), pos % 2 == 0, np.zeros(len(tokens), bool)])
        return EgoStep(
            states=tokens.astype(np.int64),
            observer_ids=np.arange(3, dtype=np.int64),
            observer_types=np.array(["slm"] * 3, dtype=object),
            visible=visible,
            episode_start=start,
            context={"prompt_ids": np.array([1, 2, 3], dtype=np.int64)},
        )

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._k = self._n = 0
        info = {EGO_STEP_KEY: self._ego_step(np.zeros(0, np.int64), True)}
        return np.zeros(self.chunk, np.int64), info

    def step(self, action: Any):
        tokens = np.asarray(action, dtype=np.int64).reshape(self.chunk)
        ego = self._ego_step(tokens, False)
        self._n += self.chunk
        self._k += 1
        info = {EGO_STEP_KEY: ego, "rewards": {"task": 0.0}}
        return tokens.copy(), 0.0, self._k >= self.n_steps, False, info


# ---------------------------------------------------------------------------- predictors


def _last_seen(views: Views, back: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per view: the ``back``-th most recent seen state ``(B, D)`` and its index ``(B,)``."""
    mask = views.mask
    b, length = mask.shape
    idx = np.full(b, -1)
    for i in range(b):
        seen = np.flatnonzero(mask[i])
        if len(seen) > back:
            idx[i] = seen[-1 - back]
    safe = np.maximum(idx, 0)
    return views.states[np.arange(b), safe], idx


def ade(predictions: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Average displacement ``(B,)`` of ``(B, H, D)`` (or min over K of ``(B, K, H, D)``)."""
    if predictions.ndim == 4:
        d = np.linalg.norm(predictions - truth[:, None], axis=-1).mean(axis=-1)
        return d.min(axis=1)
    return np.linalg.norm(predictions - truth, axis=-1).mean(axis=-1)


class _PlanePredictor:
    unit = "m"

    def __init__(self, horizon: int = 3, history: int | None = 4) -> None:
        self.horizon = horizon
        self.history = history
        self.predict_calls = 0
        self.error_calls = 0

    def error(self, predictions: np.ndarray, truth: np.ndarray, views: Views) -> np.ndarray:
        self.error_calls += 1
        return ade(np.asarray(predictions, float), np.asarray(truth, float))

    def score(self, views: Views, truth: np.ndarray) -> np.ndarray:
        return self.error(self.predict(views), truth, views)

    def update(self, views: Views, truth: np.ndarray) -> dict[str, float]:
        return {}


class HoldPredictor(_PlanePredictor):
    """Predicts that the ego stays where it was last seen."""

    def predict(self, views: Views) -> np.ndarray:
        self.predict_calls += 1
        last, _ = _last_seen(views)
        return np.repeat(last[:, None, :], self.horizon, axis=1)


class LinearPredictor(_PlanePredictor):
    """Constant velocity from the last two seen states (hold when only one was seen)."""

    def predict(self, views: Views) -> np.ndarray:
        self.predict_calls += 1
        last, i1 = _last_seen(views)
        prev, i0 = _last_seen(views, back=1)
        gap = np.where(i0 >= 0, i1 - i0, 1).astype(float)[:, None]
        vel = np.where((i0 >= 0)[:, None], (last - prev) / gap, 0.0)
        steps = np.arange(1, self.horizon + 1, dtype=float)[None, :, None]
        return last[:, None, :] + steps * vel[:, None, :]


class UnigramPredictor:
    """``horizon=None``: mean nats/token of the truth under add-one counts of the seen tokens."""

    horizon = None
    history = None
    unit = "nats/token"

    def __init__(self, vocab: int = 8) -> None:
        self.vocab = vocab
        self.score_calls = 0

    def predict(self, views: Views) -> np.ndarray:
        counts = np.ones((len(views), self.vocab))
        for i in range(len(views)):
            np.add.at(counts[i], views.states[i][views.mask[i]], 1.0)
        return counts / counts.sum(axis=1, keepdims=True)

    def error(self, predictions: np.ndarray, truth: np.ndarray, views: Views) -> np.ndarray:
        picked = np.take_along_axis(predictions, truth, axis=1)
        return -np.log(picked).mean(axis=1)

    def score(self, views: Views, truth: np.ndarray) -> np.ndarray:
        self.score_calls += 1
        return self.error(self.predict(views), truth, views)

    def update(self, views: Views, truth: np.ndarray) -> dict[str, float]:
        return {}


# -------------------------------------------------------------------------- policies


def smooth_action(k: int) -> np.ndarray:
    """Lane following: straight ahead at constant speed."""
    return np.array([1.0, 0.0], np.float32)


def erratic_action(k: int) -> np.ndarray:
    """Weaving and stop-and-go."""
    return np.array([1.0 if k % 4 < 2 else 0.0, 1.0 if k % 2 == 0 else -1.0], np.float32)


def register_toy_envs() -> None:
    for env_id, entry in (
        ("bystander-test/ToyPoint-v0", ToyPointEnv),
        ("bystander-test/ToyToken-v0", ToyTokenEnv),
    ):
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry)


class ReplayEnv(gym.Env):
    """Replays a fixed list of :class:`EgoStep` reports (first one on ``reset``).

    Action ``Discrete(1)``; observation: the step index. Terminates after the last
    report. Useful to pin exact figures on a hand-made trajectory.
    """

    metadata = {"render_modes": []}

    def __init__(self, ego_steps: Sequence[EgoStep], dt: float = 1.0) -> None:
        self.ego_steps = list(ego_steps)
        self.dt = dt
        self.observation_space = gym.spaces.Box(0, len(self.ego_steps), (1,), np.float32)
        self.action_space = gym.spaces.Discrete(1)
        self._k = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._k = 0
        return np.zeros(1, np.float32), {EGO_STEP_KEY: self.ego_steps[0]}

    def step(self, action: Any):
        self._k += 1
        done = self._k >= len(self.ego_steps) - 1
        info = {EGO_STEP_KEY: self.ego_steps[self._k]}
        return np.full(1, self._k, np.float32), 0.0, done, False, info


def line_steps(
    xs: Sequence[Sequence[float]],
    visible: Sequence[Sequence[bool]] | None = None,
    poses: Sequence[Sequence[Sequence[float]]] | None = None,
    ids: Sequence[Sequence[int]] | None = None,
) -> list[EgoStep]:
    """EgoSteps of an ego on the x axis: ``xs[k]`` = x of the states of report k.

    ``visible[k]``, ``poses[k]``, ``ids[k]``: per report, one entry per observer
    (defaults: one observer id 0 at the origin facing +x that always sees the ego).
    """
    out = []
    for k, x in enumerate(xs):
        states = np.stack([np.asarray(x, float), np.zeros(len(x))], axis=1)
        oid = np.asarray(ids[k] if ids is not None else [0], dtype=np.int64)
        pose = np.asarray(poses[k] if poses is not None else [[0.0, 0.0, 0.0]] * len(oid), float)
        vis = np.asarray(visible[k] if visible is not None else [True] * len(oid), bool)
        out.append(
            EgoStep(
                states=states,
                observer_ids=oid,
                observer_types=np.array(["o"] * len(oid), dtype=object),
                visible=np.repeat(vis[:, None], len(x), axis=1),
                observer_frames=pose.reshape(len(oid), 3),
                frame="rigid2d",
                episode_start=k == 0,
            )
        )
    return out


class ToyParallelEnv:
    """A PettingZoo-style ``ParallelEnv`` of two independent :class:`ToyPointEnv` points
    (agents ``"a"`` and ``"b"``), each reporting its own ``EgoStep``."""

    metadata = {"render_modes": [], "name": "toy_parallel_v0"}
    possible_agents = ["a", "b"]

    def __init__(self, **kwargs: Any) -> None:
        self.worlds = {a: ToyPointEnv(**kwargs) for a in self.possible_agents}
        self.agents: list[str] = []

    @property
    def unwrapped(self) -> ToyParallelEnv:
        return self

    def observation_space(self, agent: str) -> gym.Space:
        return self.worlds[agent].observation_space

    def action_space(self, agent: str) -> gym.Space:
        return self.worlds[agent].action_space

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None):
        self.agents = list(self.possible_agents)
        out = {a: self.worlds[a].reset(seed=seed) for a in self.agents}
        return {a: o for a, (o, _) in out.items()}, {a: i for a, (_, i) in out.items()}

    def step(self, actions: dict[str, Any]):
        res = {a: self.worlds[a].step(actions[a]) for a in self.agents}
        obs = {a: r[0] for a, r in res.items()}
        rew = {a: r[1] for a, r in res.items()}
        term = {a: r[2] for a, r in res.items()}
        trunc = {a: r[3] for a, r in res.items()}
        infos = {a: r[4] for a, r in res.items()}
        self.agents = [a for a in self.agents if not (term[a] or trunc[a])]
        return obs, rew, term, trunc, infos
