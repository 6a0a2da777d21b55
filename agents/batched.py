"""Batched training stack: N intersection worlds stepped in one simulator call.

``train.vec_env = "batched"`` trains on :class:`IntersectionVecEnv`, an SB3 ``VecEnv``
over one :class:`~bystander.envs.intersection.sim.IntersectionSim` with
``n_worlds = train.n_envs``: one numpy step for all worlds instead of one Python env
per world. The wrappers are the vectorised equivalents of the per-env stack in
:mod:`bystander.agents.training`, built on the same shared code:

    IntersectionVecEnv            (bystander.envs.intersection.vec_env) obs (N, F);
                                  info per world as the Gymnasium view's
    PredictabilityVecWrapper      (bystander.envs.vector) ONE predictor call
                                  per step for all worlds and observers
    VecMonitor                    episode stats of the task reward
    ShapedVecReward /             the constraint module's VecEnv shells: the same
    LagrangianVecReward           rules as ShapedReward / LagrangianReward
    BatchedHooks                  snapshot / restore / sync / co-training pairs, the
                                  same ``env_method`` names as ``TrainingHooks``

World ``i`` is seeded ``train.seed + i`` and has its own random stream, exactly like
rank ``i`` of the per-env stack, so both stacks give the same episodes. Evaluation and
rendering use the Gymnasium env with per-episode seeds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cloudpickle
import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecMonitor

from bystander.agents.training import HookCopies
from bystander.envs.constraints import LagrangianVecReward, Multiplier, ShapedVecReward
from bystander.envs.intersection.vec_env import IntersectionVecEnv
from bystander.envs.vector import PredictabilityVecWrapper


class BatchedHooks(VecEnvWrapper):
    """Outermost wrapper: the ``TrainingHooks`` methods for the batched stack.

    ``env_method(name, ...)`` for ``bystander_snapshot`` / ``bystander_restore`` /
    ``bystander_sync`` / ``bystander_pop_scored`` / ``get_lambda`` returns one entry
    per world, like a vec env of ``TrainingHooks`` envs (the state lives in one place,
    so the snapshot is in entry 0 and the others are empty).
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
            _predictability_layer(venv).set_on_scored(self.copies.on_scored)

    def reset(self) -> np.ndarray:
        return self.venv.reset()

    def step_wait(self):
        return self.venv.step_wait()

    def _layers(self) -> list[Any]:
        """This wrapper and every layer below it, outermost first."""
        out, v = [], self
        while True:
            out.append(v)
            if not isinstance(v, VecEnvWrapper):
                return out
            v = v.venv

    def env_method(
        self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any
    ) -> list[Any]:
        n = len(self._get_indices(indices))
        if method_name == "bystander_snapshot":
            # Layer states, not the layers: some wrapper classes are built at run time
            # and cannot be pickled by reference. One pickle keeps shared objects shared
            # (the trackers' hook is a method of the copies, pickled with them).
            blob = cloudpickle.dumps([_layer_state(layer) for layer in self._layers()])
            return [blob] + [b""] * (n - 1)
        if method_name == "bystander_restore":
            if args and args[0]:
                states = cloudpickle.loads(args[0])
                layers = self._layers()
                if len(states) != len(layers):
                    raise ValueError(
                        f"snapshot has {len(states)} layers, this vec env has {len(layers)}"
                    )
                for layer, state in zip(layers, states, strict=True):
                    layer.__dict__.update(state)
            return [None] * n
        if method_name == "bystander_sync":
            self.copies.sync(*args)
            return [None] * n
        if method_name == "bystander_pop_scored":
            return [self.copies.pop_scored()] + [[] for _ in range(n - 1)]
        if method_name == "get_lambda":
            key = args[0] if args else kwargs.get("channel")
            key = "cost" if key is None else key
            return [self.copies.multipliers[key].value] * n
        return self.venv.env_method(method_name, *args, indices=indices, **kwargs)


_NOT_STATE = ("venv", "class_attributes")


def _layer_state(layer: Any) -> dict[str, Any]:
    return {k: v for k, v in layer.__dict__.items() if k not in _NOT_STATE}


def _predictability_layer(venv: VecEnv) -> Any:
    v = venv
    while True:
        if isinstance(v, PredictabilityVecWrapper):
            return v
        if not hasattr(v, "venv"):
            raise ValueError("co-training needs a PredictabilityVecWrapper in the vec env stack")
        v = v.venv


def build_batched_vec_env(
    cfg: Any, predictor: Any, multipliers: Mapping[str, Multiplier]
) -> VecEnv:
    """The batched stack of the module docstring for ``cfg`` (``train.vec_env='batched'``)."""
    if cfg.env.id != "bystander/Intersection-v0":
        raise ValueError(
            f"train.vec_env: 'batched' is for bystander/Intersection-v0, got env.id={cfg.env.id!r}"
        )
    if cfg.review.enabled:
        raise ValueError("train.vec_env: 'batched' does not support review.enabled; use 'dummy'")
    if cfg.env.max_episode_steps is not None:
        raise ValueError(
            "env.max_episode_steps: not supported with train.vec_env='batched'; set env.config.max_cycles"
        )
    copies = cloudpickle.loads(cloudpickle.dumps((predictor, dict(multipliers))))
    pred_copy, mult_copy = copies
    # lean infos: per-step values travel as arrays (step_arrays), info dicts at episode end
    venv: VecEnv = IntersectionVecEnv(
        cfg.train.n_envs, cfg.env.config, seed=cfg.train.seed, info_mode="lean"
    )
    if pred_copy is not None:
        venv = PredictabilityVecWrapper(venv, pred_copy)
    venv = VecMonitor(venv)
    c = cfg.constraint
    if c.mode == "shaping":
        venv = ShapedVecReward(venv, c.weight, channel=c.channel)
    elif c.mode in ("lagrangian", "pid"):
        key = "cost" if c.channel is None else c.channel
        venv = LagrangianVecReward(venv, mult_copy[key], channel=c.channel)
    hooks = BatchedHooks(
        venv,
        mult_copy,
        pred_copy,
        collect_scored=cfg.predictor.kind == "cotrained",
        max_scored=cfg.predictor.buffer_size,
    )
    hooks.seed(cfg.train.seed)
    return hooks
