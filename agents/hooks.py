"""The training loop's one typed handle on the process-local copies in a driving stack.

The main process owns the *master* multipliers and predictor (the trainer's). Every
stack that steps worlds holds its own copies (the ones its constraint and
predictability layers read), plus the (views, truth) pairs its trackers scored for
co-training. The outermost layer of each stack is a hook layer implementing
:class:`StackHooks`:

- :class:`TrainingHooks`: one Gymnasium env (the per-env stacks of a ``DummyVecEnv``
  or ``SubprocVecEnv``);
- :class:`BatchedHooks`: the batched stack (N worlds in one simulator call).

:class:`VecHooks` is what the trainer and the callbacks call: the same operations over
every hook layer of a training VecEnv, one entry per env index. In-process stacks are
called directly; only ``SubprocVecEnv`` workers are reached through
``VecEnv.env_method``, in :class:`VecHooks` alone.
"""

from __future__ import annotations

import inspect
import io
import pickle
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import cloudpickle
import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import SubprocVecEnv, VecEnv, VecEnvWrapper

from bystander.envs.constraints import Multiplier, multiplier_key
from bystander.envs.contract import find_layer
from bystander.envs.predictability import PredictabilityReward
from bystander.envs.scoring import ScoredReplay
from bystander.envs.vector import PredictabilityVecWrapper

__all__ = ["BatchedHooks", "HookCopies", "StackHooks", "TrainingHooks", "VecHooks"]

ScoredPairs = list[tuple[Any, np.ndarray]]
"""(views, truth) pairs a stack's trackers scored: ``Views`` of ``B`` views and the
true future ``(B, H, D)`` (metres)."""


class HookCopies:
    """One process's copies of the master multipliers and predictor, and the scored
    (views, truth) pairs it keeps for co-training: the state behind both hook wrappers
    (:class:`TrainingHooks` per env, :class:`BatchedHooks` for the batched stack).

    Args:
        multipliers: The copies the constraint wrapper reads, by key.
        predictor: The predictor copy (or ``None``).
        max_scored: Views kept between two :meth:`pop_scored` calls, at most.
    """

    def __init__(
        self,
        multipliers: Mapping[str, Multiplier] | None,
        predictor: Any,
        max_scored: int = 8192,
    ) -> None:
        self.multipliers = dict(multipliers or {})
        self.predictor = predictor
        self.max_scored = max_scored
        self.replay = ScoredReplay(max_scored)

    def on_scored(
        self, predictor: Any, views: Any, truth: np.ndarray, predictions: Any, errors: Any
    ) -> None:
        """The trackers' co-training hook: keep the pair while there is room."""
        self.replay(predictor, views, truth, predictions, errors)

    def pop_scored(self) -> list[tuple[Any, np.ndarray]]:
        """The pairs kept since the last call (emptied)."""
        return [(views, truth) for _, views, truth in self.replay.drain()]

    def sync(self, multipliers: Mapping[str, Mapping[str, Any]], predictor_state: Any) -> None:
        """Load the master multipliers' ``state_dict`` and, when given, the master
        predictor's weights into the copies."""
        for key, state in multipliers.items():
            self.multipliers[key].load_state_dict(state)
        if predictor_state is not None and self.predictor is not None:
            self.predictor.net.load_state_dict(predictor_state)


class StackHooks(ABC):
    """What the training loop needs from the outermost layer of a stack.

    The layer owns a :class:`HookCopies` (attribute ``copies``): the stack's
    multiplier and predictor copies and its scored pairs.
    """

    copies: HookCopies

    @abstractmethod
    def snapshot(self) -> bytes:
        """The whole stack below this layer (simulator mid-episode, trackers, RNGs) and
        the copies, pickled together (so the layers keep sharing the copies)."""

    @abstractmethod
    def restore(self, blob: bytes) -> None:
        """The inverse of :meth:`snapshot`."""

    def sync(
        self, multipliers: Mapping[str, Mapping[str, Any]], predictor_state: Any = None
    ) -> None:
        """Load the master multipliers' ``state_dict`` (by key) and, when given, the
        master predictor's weights (``predictor.net.state_dict()``) into the copies."""
        self.copies.sync(multipliers, predictor_state)

    def pop_scored(self) -> ScoredPairs:
        """The (views, truth) pairs scored since the last call, for co-training (emptied)."""
        return self.copies.pop_scored()

    def get_lambda(self, channel: str | None = None) -> float:
        """The lambda this stack's copy of the multiplier of ``channel`` holds
        (``None``: the total cost's, key ``"cost"``)."""
        return self.copies.multipliers[multiplier_key(channel)].value


def _scoring_layer(stack: Any, cls: type) -> Any:
    layer = find_layer(stack, cls)
    if layer is None:
        raise ValueError(f"co-training needs a {cls.__name__} in the stack")
    return layer


class TrainingHooks(gym.Wrapper, StackHooks):
    """Outermost wrapper of a per-env training stack: :class:`StackHooks` for one env.

    Args:
        env: The wrapped env.
        multipliers: This env's copies of the multipliers (the ones its constraint
            wrapper reads), by key.
        predictor: This env's copy of the predictor (or ``None``).
        collect_scored: Keep scored (views, truth) pairs for co-training (needs a
            ``PredictabilityReward`` in the stack).
        max_scored: Views kept between two :meth:`pop_scored` calls, at most.
    """

    def __init__(
        self,
        env: gym.Env,
        multipliers: Mapping[str, Multiplier] | None = None,
        predictor: Any = None,
        collect_scored: bool = False,
        max_scored: int = 8192,
    ) -> None:
        super().__init__(env)
        self.copies = HookCopies(multipliers, predictor, max_scored)
        self.collect_scored = collect_scored
        if collect_scored:
            _scoring_layer(env, PredictabilityReward).tracker.on_scored = self.copies.on_scored

    def snapshot(self) -> bytes:
        return cloudpickle.dumps((self.env, self.copies))

    def restore(self, blob: bytes) -> None:
        self.env, self.copies = cloudpickle.loads(blob)


class BatchedHooks(VecEnvWrapper, StackHooks):
    """Outermost wrapper of the batched stack: :class:`StackHooks` for all its worlds.

    ``env_method("get_lambda", channel)`` answers as a VecEnv of ``LagrangianReward``
    envs does (one entry per world); other names go to the base VecEnv.

    Args:
        venv: The wrapped VecEnv.
        multipliers, predictor, collect_scored, max_scored: As :class:`TrainingHooks`
            (co-training needs a ``PredictabilityVecWrapper`` in the stack).
    """

    def __init__(
        self,
        venv: VecEnv,
        multipliers: Mapping[str, Multiplier],
        predictor: Any,
        collect_scored: bool = False,
        max_scored: int = 8192,
    ) -> None:
        super().__init__(venv)
        self.copies = HookCopies(multipliers, predictor, max_scored)
        self.collect_scored = collect_scored
        if collect_scored:
            _scoring_layer(venv, PredictabilityVecWrapper).set_on_scored(self.copies.on_scored)

    def reset(self) -> np.ndarray:
        return self.venv.reset()

    def step_wait(self):
        return self.venv.step_wait()

    def snapshot(self) -> bytes:
        # one pickle: the layers below keep sharing the copies (the constraint layer's
        # multipliers, the trackers' hook) after a restore
        return _pickle_stack((self.venv, self.copies))

    def restore(self, blob: bytes) -> None:
        self.venv, self.copies = _unpickle_stack(blob)

    def env_method(
        self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any
    ) -> list[Any]:
        if method_name == "get_lambda":
            return [self.get_lambda(*args, **kwargs)] * len(self._get_indices(indices))
        return self.venv.env_method(method_name, *args, indices=indices, **kwargs)


def _pickle_stack(obj: tuple[VecEnv, HookCopies]) -> bytes:
    """Pickle a VecEnv stack and its copies in one pickle (shared objects stay shared)."""
    buf = io.BytesIO()
    _StackPickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buf.getvalue()


def _unpickle_stack(blob: bytes) -> tuple[VecEnv, HookCopies]:
    """The inverse of :func:`_pickle_stack`."""
    return cloudpickle.loads(blob)


class _StackPickler(cloudpickle.Pickler):
    """cloudpickle, with SB3's ``VecEnvWrapper`` s pickled as class + instance state.

    Plain pickling fails on them twice over: ``class_attributes`` caches the class's
    members (an ABC's ``_abc_impl`` among them, which does not pickle), and on load
    ``VecEnvWrapper.__getattr__`` recurses while the instance has no ``venv`` yet. The
    state is set after the instance is created and memoised, so cycles are fine.
    """

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, VecEnvWrapper):
            state = {k: v for k, v in vars(obj).items() if k != "class_attributes"}
            return _new_vec_wrapper, (type(obj),), state, None, None, _set_vec_wrapper_state
        return super().reducer_override(obj)


def _new_vec_wrapper(cls: type) -> Any:
    return object.__new__(cls)


def _set_vec_wrapper_state(obj: Any, state: dict[str, Any]) -> None:
    obj.__dict__.update(state)
    obj.class_attributes = dict(inspect.getmembers(type(obj)))  # as VecEnvWrapper builds it


class VecHooks:
    """The :class:`StackHooks` operations over every hook layer of a training VecEnv,
    one entry per env index (``VecNormalize`` and other wrappers on top are skipped).

    - batched stack: its :class:`BatchedHooks`, called directly; its state lives in one
      place, so :meth:`snapshot` puts the blob in entry 0 and ``b""`` in the others;
    - ``DummyVecEnv``: each env's :class:`TrainingHooks`, called directly;
    - ``SubprocVecEnv``: each worker's :class:`TrainingHooks`, through
      ``env_method`` (the one place the operations are named as strings).

    Args:
        venv: The training VecEnv.
    """

    def __init__(self, venv: VecEnv) -> None:
        self.num_envs = venv.num_envs
        self.remote: SubprocVecEnv | None = None
        self.local: list[StackHooks] = []
        in_stack = find_layer(venv, StackHooks)  # the batched stack's BatchedHooks
        base = venv.unwrapped
        if in_stack is not None:
            self.local = [in_stack]
        elif isinstance(base, SubprocVecEnv):
            self.remote = base
        else:
            envs = getattr(base, "envs", None)
            hooks = [find_layer(env, StackHooks) for env in envs or ()]
            if envs is None or any(h is None for h in hooks):
                raise TypeError(
                    f"venv: expected a training stack (batched, or envs wrapped in "
                    f"TrainingHooks), got {type(base).__name__}"
                )
            self.local = hooks

    def snapshot(self) -> list[bytes]:
        """One snapshot per env index (see :meth:`StackHooks.snapshot`)."""
        if self.remote is not None:
            return self.remote.env_method("snapshot")
        blobs = [h.snapshot() for h in self.local]
        return blobs + [b""] * (self.num_envs - len(blobs))

    def restore(self, blobs: Sequence[bytes]) -> None:
        """Restore the stacks from :meth:`snapshot`'s list."""
        if len(blobs) != self.num_envs:
            raise ValueError(f"blobs: expected {self.num_envs} snapshots, got {len(blobs)}")
        if self.remote is not None:
            for i, blob in enumerate(blobs):
                self.remote.env_method("restore", blob, indices=[i])
            return
        # one hook layer per env, or one for all worlds (its blob first)
        for hooks, blob in zip(self.local, blobs, strict=False):
            hooks.restore(blob)

    def sync(
        self, multipliers: Mapping[str, Mapping[str, Any]], predictor_state: Any = None
    ) -> None:
        """:meth:`StackHooks.sync` on every stack."""
        if self.remote is not None:
            self.remote.env_method("sync", multipliers, predictor_state)
            return
        for hooks in self.local:
            hooks.sync(multipliers, predictor_state)

    def pop_scored(self) -> ScoredPairs:
        """Every stack's scored pairs since the last call, env index order (emptied)."""
        if self.remote is not None:
            per_env = self.remote.env_method("pop_scored")
        else:
            per_env = [hooks.pop_scored() for hooks in self.local]
        return [pair for pairs in per_env for pair in pairs]

    def get_lambda(self, channel: str | None = None) -> list[float]:
        """Each env index's lambda for ``channel`` (see :meth:`StackHooks.get_lambda`)."""
        if self.remote is not None:
            return self.remote.env_method("get_lambda", channel)
        values = [hooks.get_lambda(channel) for hooks in self.local]
        return values * (self.num_envs // len(values))
