"""The driving training stack: one ordered list of layers, one builder.

Each entry of :data:`LAYERS` gives a layer's single-env form (one Gymnasium env) and
its VecEnv form (the batched simulator); :func:`build_stack` applies the entries a
config asks for, inner to outer::

    base       gymnasium.make(env.id, config=env.config) [+ TimeLimit]
               | IntersectionVecEnv(train.n_envs worlds, lean infos)
    predictability  PredictabilityReward | PredictabilityVecWrapper   (a predictor)
    review gate     ReviewGate | (none: refused)                     review.enabled
    monitor         Monitor | VecMonitor                   SB3 stats of the *task* reward
    constraint      ShapedReward | ShapedVecReward,                 constraint.mode
                    LagrangianReward | LagrangianVecReward
    hooks           TrainingHooks | BatchedHooks        the copies synced by the trainer

The monitor sits below the constraint layer so ``rollout/ep_rew_mean`` is the task
return in every constraint mode (comparable across runs). The two forms of each layer
share their rules (the wrappers' modules), so world ``i`` of the batched stack seeded
``seed`` behaves as rank ``i`` of the per-env stack seeded ``seed + i``.

Built on it:

- :func:`make_env`: one env (evaluation, rendering, per-env training stacks);
- :func:`build_vec_env`: the training VecEnv (``train.vec_env``): a ``DummyVecEnv`` or
  ``SubprocVecEnv`` of :func:`make_env` envs, or :func:`build_batched_vec_env`,
  optionally under ``VecNormalize``;
- :func:`make_intersection_vec_env`: the batched env with the predictability and
  monitor layers only, without a run config (benchmarks, SB3 users).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cloudpickle
import gymnasium as gym
import torch
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    SubprocVecEnv,
    VecEnv,
    VecMonitor,
    VecNormalize,
)

import bystander.envs  # noqa: F401  (registers the Gymnasium ids)
from bystander.agents.hooks import BatchedHooks, TrainingHooks
from bystander.config import COTRAINED_KINDS, RunConfig, resolved_hyperparams
from bystander.envs.constraints import (
    LagrangianReward,
    Multiplier,
    ShapedReward,
    multiplier_key,
)
from bystander.envs.intersection.config import IntersectionConfig
from bystander.envs.intersection.vec_env import IntersectionVecEnv
from bystander.envs.predictability import PredictabilityReward
from bystander.envs.review import ReviewGate
from bystander.envs.vector import (
    ConditionedLagrangianVecReward,
    LagrangianVecReward,
    PredictabilityVecWrapper,
    ShapedVecReward,
)

if TYPE_CHECKING:  # pragma: no cover
    from bystander.config import ReviewSection
    from bystander.envs.constraint_config import ConstraintConfig

__all__ = [
    "LAYERS",
    "Layer",
    "StackSpec",
    "build_batched_vec_env",
    "build_stack",
    "build_vec_env",
    "constraint_layer",
    "make_env",
    "make_intersection_vec_env",
    "wrap_stack",
]

_MAX_SCORED_PER_ENV = 8192
"""Views each per-env stack keeps between two co-training updates, at most (the batched
stack keeps ``predictor.buffer_size``)."""


@dataclass
class StackSpec:
    """What the layers of one stack are built from; a layer whose input is left at its
    default is left out.

    Attributes:
        predictor: The predictability layer's predictor, or a dict observer type ->
            predictor (``None``: no predictability layer).
        channel: Cost channel the predictability layer writes.
        on_scored: The predictability trackers' co-training hook (``None``: none).
        review: The review section (a gate when ``review.enabled``; ``None``: none).
        monitor: Add SB3's ``Monitor`` / ``VecMonitor``.
        constraint: The constraint section (``None``: no constraint layer).
        multipliers: The stack's multiplier copies by key (read by the constraint layer,
            synced through the hooks).
        hooks: Add the hooks layer (the stack's predictor and multiplier copies).
        collect_scored: The hooks keep scored (views, truth) pairs for co-training.
        max_scored: Views the hooks keep between two collections, at most.
    """

    predictor: Any = None
    channel: str = "predictability"
    on_scored: Callable | None = None
    review: ReviewSection | None = None
    monitor: bool = True
    constraint: ConstraintConfig | None = None
    multipliers: Mapping[str, Multiplier] = field(default_factory=dict)
    hooks: bool = False
    collect_scored: bool = False
    max_scored: int = _MAX_SCORED_PER_ENV


def constraint_layer(
    env: Any, constraint: ConstraintConfig, multipliers: Mapping[str, Multiplier], vector: bool
) -> Any:
    """``env`` (a Gymnasium env, or a VecEnv when ``vector``) under the constraint
    wrapper of ``constraint.mode``: ``shaping`` -> ``Shaped(Vec)Reward``,
    ``lagrangian`` / ``pid`` -> ``Lagrangian(Vec)Reward`` reading
    ``multipliers[multiplier_key(constraint.channel)]``, with the budget as progress
    credit for ``per_metre`` budgets (the reward in the budget's unit, see
    :class:`~bystander.envs.constraints.LagrangianRule`; times ``1 +
    constraint.credit_margin``); unchanged for ``none``. ``constraint.conditioned``: the
    VecEnv form is :class:`~bystander.envs.vector.ConditionedLagrangianVecReward`; a
    single env (evaluation, rendering) keeps the plain wrapper at the multiplier's lambda,
    which the policy is shown by :func:`~bystander.agents.conditioning.policy_observations`."""
    c = constraint
    if c.mode == "shaping":
        return (ShapedVecReward if vector else ShapedReward)(env, c.weight, channel=c.channel)
    if c.mode in ("lagrangian", "pid"):
        key = multiplier_key(c.channel)
        if key not in multipliers:
            raise ValueError(f"constraint.mode={c.mode!r} needs a multiplier for {key!r}")
        credit = None  # per_metre: the budget, plus the margin (a fraction of it)
        if c.cost_normalization == "per_metre":
            credit = c.budget * (1.0 + c.credit_margin)
        if c.conditioned and vector:  # (training envs: build_vec_env refuses the others)
            assert c.lambda_max is not None  # (validated)
            return ConditionedLagrangianVecReward(
                env, multipliers[key], c.lambda_min, c.lambda_max, c.channel, credit
            )
        wrapper = LagrangianVecReward if vector else LagrangianReward
        return wrapper(env, multipliers[key], channel=c.channel, progress_credit=credit)
    return env


def _review_gate(env: gym.Env, s: StackSpec) -> gym.Env:
    from bystander.agents.reviewers import build_driving_reviewer

    assert s.review is not None
    reviewer, fallback = build_driving_reviewer(env, s.predictor)
    return ReviewGate(env, reviewer, s.review.threshold, fallback, mode=s.review.mode)


@dataclass(frozen=True)
class Layer:
    """One layer of the driving stack.

    Attributes:
        name: What the layer is.
        wanted: Whether a stack of this spec gets the layer.
        single: Its single-env form, ``(env, spec) -> env``.
        vector: Its VecEnv form, ``(venv, spec) -> venv`` (``None``: there is none).
        refusal: The error of a VecEnv stack that wants a layer without a VecEnv form.
    """

    name: str
    wanted: Callable[[StackSpec], bool]
    single: Callable[[gym.Env, StackSpec], gym.Env]
    vector: Callable[[VecEnv, StackSpec], VecEnv] | None
    refusal: str = ""


LAYERS: tuple[Layer, ...] = (
    Layer(
        "predictability",
        wanted=lambda s: s.predictor is not None,
        single=lambda env, s: PredictabilityReward(
            env, s.predictor, channel=s.channel, on_scored=s.on_scored
        ),
        vector=lambda venv, s: PredictabilityVecWrapper(
            venv, s.predictor, channel=s.channel, on_scored=s.on_scored
        ),
    ),
    Layer(
        "review gate",
        wanted=lambda s: s.review is not None and s.review.enabled,
        single=_review_gate,
        vector=None,
        refusal="train.vec_env: 'batched' does not support review.enabled; use 'dummy'",
    ),
    Layer(
        "monitor",
        wanted=lambda s: s.monitor,
        single=lambda env, s: Monitor(env),
        vector=lambda venv, s: VecMonitor(venv),
    ),
    Layer(
        "constraint",
        wanted=lambda s: s.constraint is not None,
        single=lambda env, s: constraint_layer(env, s.constraint, s.multipliers, vector=False),
        vector=lambda venv, s: constraint_layer(venv, s.constraint, s.multipliers, vector=True),
    ),
    Layer(
        "hooks",
        wanted=lambda s: s.hooks,
        single=lambda env, s: TrainingHooks(
            env, s.multipliers, s.predictor, s.collect_scored, s.max_scored
        ),
        vector=lambda venv, s: BatchedHooks(
            venv, s.multipliers, s.predictor, s.collect_scored, s.max_scored
        ),
    ),
)
"""The driving stack's layers, inner to outer (see the module docstring)."""


def _check_forms(spec: StackSpec, vector: bool) -> None:
    """Refuse a VecEnv stack that wants a layer with no VecEnv form."""
    for layer in LAYERS:
        if vector and layer.vector is None and layer.wanted(spec):
            raise ValueError(layer.refusal)


def wrap_stack(env: Any, spec: StackSpec, *, vector: bool) -> Any:
    """``env`` (a Gymnasium env, or a VecEnv when ``vector``) under the layers of
    :data:`LAYERS` that ``spec`` asks for, in order."""
    _check_forms(spec, vector)
    for layer in LAYERS:
        if layer.wanted(spec):
            form = layer.vector if vector else layer.single
            assert form is not None
            env = form(env, spec)
    return env


def build_stack(
    cfg: RunConfig,
    predictor: Any,
    multipliers: Mapping[str, Multiplier] | None,
    *,
    vector: bool,
    render_mode: str | None = None,
    collect_scored: bool = False,
    training: bool = False,
) -> Any:
    """The driving stack of ``cfg``, every layer of the module docstring it asks for.

    Args:
        cfg: Run config (``env``, ``constraint``, ``review`` sections; ``train`` and
            ``predictor.buffer_size`` for the VecEnv form).
        predictor: The stack's predictor copy (``None``: no predictability layer).
        multipliers: The stack's multiplier copies by key for ``lagrangian`` / ``pid``.
        vector: Build the VecEnv form on :class:`IntersectionVecEnv` (``train.n_envs``
            worlds, world ``i`` seeded ``train.seed + i``) instead of one Gymnasium env.
        render_mode: Passed to ``gymnasium.make`` (single env).
        collect_scored: The hooks keep scored (views, truth) pairs for co-training.
        training: A training env: ``env.train_config`` (``env.config`` with
            ``env.train_overrides``) instead of ``env.config``.

    Returns:
        A :class:`~bystander.agents.hooks.TrainingHooks` env, or a
        :class:`~bystander.agents.hooks.BatchedHooks` VecEnv when ``vector``.
    """
    spec = StackSpec(
        predictor=predictor,
        review=cfg.review,
        constraint=cfg.constraint,
        multipliers=dict(multipliers or {}),
        hooks=True,
        collect_scored=collect_scored,
        max_scored=cfg.predictor.buffer_size if vector else _MAX_SCORED_PER_ENV,
    )
    env_config = cfg.env.train_config if training else cfg.env.config
    if not vector:
        kwargs: dict[str, Any] = {}
        if env_config:
            kwargs["config"] = dict(env_config)
        if render_mode is not None:
            kwargs["render_mode"] = render_mode
        env: gym.Env = gym.make(cfg.env.id, **kwargs)
        if cfg.env.max_episode_steps is not None:
            env = gym.wrappers.TimeLimit(env, max_episode_steps=cfg.env.max_episode_steps)
        return wrap_stack(env, spec, vector=False)
    if cfg.env.id != "bystander/Intersection-v0":
        raise ValueError(
            f"train.vec_env: 'batched' is for bystander/Intersection-v0, got env.id={cfg.env.id!r}"
        )
    _check_forms(spec, vector=True)
    if cfg.env.max_episode_steps is not None:
        raise ValueError(
            "env.max_episode_steps: not supported with train.vec_env='batched'; set env.config.max_cycles"
        )
    # lean infos: per-step values travel as arrays (step_arrays), info dicts at episode end
    venv: VecEnv = IntersectionVecEnv(
        cfg.train.n_envs, env_config, seed=cfg.train.seed, info_mode="lean"
    )
    hooks = wrap_stack(venv, spec, vector=True)
    hooks.seed(cfg.train.seed)
    return hooks


def make_env(
    cfg: RunConfig,
    *,
    predictor: Any = None,
    multipliers: Mapping[str, Multiplier] | None = None,
    render_mode: str | None = None,
    collect_scored: bool = False,
    training: bool = False,
) -> TrainingHooks:
    """One env with the full stack of the module docstring (:func:`build_stack`).

    Args:
        cfg: Run config (``env``, ``predictor``, ``constraint``, ``review`` sections).
        predictor: Predictor for all observer types (``None``: no predictability wrapper).
        multipliers: Multipliers by key for ``lagrangian``/``pid`` (this env reads them).
        render_mode: Passed to ``gymnasium.make``.
        collect_scored: Keep scored (views, truth) pairs for co-training.
        training: A training env (``env.train_overrides`` applied).
    """
    return build_stack(
        cfg,
        predictor,
        multipliers,
        vector=False,
        render_mode=render_mode,
        collect_scored=collect_scored,
        training=training,
    )


def build_batched_vec_env(
    cfg: RunConfig,
    predictor: Any,
    multipliers: Mapping[str, Multiplier],
    *,
    training: bool = True,
) -> VecEnv:
    """The VecEnv form of the stack for ``cfg`` (``train.vec_env='batched'``), on its own
    copies of ``predictor`` and ``multipliers``; ``training=False``: on ``env.config``
    without ``env.train_overrides``."""
    pred_copy, mult_copy = cloudpickle.loads(cloudpickle.dumps((predictor, dict(multipliers))))
    collect = cfg.predictor.kind in COTRAINED_KINDS
    return build_stack(
        cfg, pred_copy, mult_copy, vector=True, collect_scored=collect, training=training
    )


class _EnvFactory:
    """Picklable thunk for ``SubprocVecEnv``: builds the predictor/multiplier copies
    from their pickled state in the worker."""

    def __init__(self, cfg: RunConfig, payload: bytes, collect_scored: bool) -> None:
        self.cfg = cfg
        self.payload = payload
        self.collect_scored = collect_scored

    def __call__(self) -> gym.Env:
        torch.set_num_threads(1)
        predictor, multipliers = cloudpickle.loads(self.payload)
        return make_env(
            self.cfg,
            predictor=predictor,
            multipliers=multipliers,
            collect_scored=self.collect_scored,
            training=True,
        )


def build_vec_env(
    cfg: RunConfig,
    predictor: Any,
    multipliers: Mapping[str, Multiplier],
    *,
    n_envs: int | None = None,
    vec_env: str | None = None,
) -> VecEnv:
    """``train.n_envs`` envs in a ``DummyVecEnv``/``SubprocVecEnv``, seeded ``seed + rank``
    (or the batched simulator for ``batched``, :func:`build_batched_vec_env`).

    Each env gets its own copy of ``predictor`` and ``multipliers`` (also in
    DummyVecEnv, so both kinds behave the same); ``VecNormalize`` on top when
    ``train.normalize``.
    """
    n = n_envs or cfg.train.n_envs
    kind = vec_env or cfg.train.vec_env
    if cfg.constraint.conditioned and kind != "batched":
        raise ValueError(
            f"constraint.conditioned: needs train.vec_env 'batched' (the driving env's "
            f"batched simulator), got {kind!r}"
        )
    if cfg.constraint.conditioned and cfg.n_controlled != 1:
        raise ValueError(
            "constraint.conditioned: needs env.config.n_controlled 1 (each car slot "
            "would draw its own lambda, while evaluation shows every car one), got "
            f"{cfg.n_controlled}"
        )
    venv: VecEnv
    if kind == "batched":
        if n != cfg.train.n_envs:
            raise ValueError("n_envs: the batched vec env uses train.n_envs")
        venv = build_batched_vec_env(cfg, predictor, multipliers)
    else:
        payload = cloudpickle.dumps((predictor, dict(multipliers)))
        collect = cfg.predictor.kind in COTRAINED_KINDS
        fns = [_EnvFactory(cfg, payload, collect) for _ in range(n)]
        if kind == "subproc":
            venv = SubprocVecEnv(fns, start_method="fork" if os.name == "posix" else None)
        else:
            venv = DummyVecEnv(fns)
        venv.seed(cfg.train.seed)
    if cfg.train.normalize:
        venv = VecNormalize(venv, gamma=resolved_hyperparams(cfg.train).get("gamma", 0.99))
    return venv


def make_intersection_vec_env(
    n_envs: int,
    config: Mapping[str, Any] | IntersectionConfig | None = None,
    seed: int | None = None,
    *,
    predictors: Any = None,
    channel: str = "predictability",
    on_scored: Callable | None = None,
    monitor: bool = True,
    wrappers: Iterable[Callable[[VecEnv], VecEnv]] = (),
    render_mode: str | None = None,
    info_mode: str = "lean",
) -> VecEnv:
    """The batched env with the stack's predictability and monitor layers, innermost
    first:

    ``IntersectionVecEnv`` -> ``PredictabilityVecWrapper(predictors)`` (when
    ``predictors`` is given: one predictor call per step for all worlds) -> ``VecMonitor``
    (episode return / length of the task reward, when ``monitor``) -> each of
    ``wrappers`` in order (e.g. a constraint wrapper,
    ``lambda v: LagrangianVecReward(v, multiplier)``).

    Args:
        n_envs: Number of worlds.
        config: Env config overrides.
        seed: World ``i`` is seeded ``seed + i`` (same episodes as ``n_envs`` single envs
            seeded that way).
        predictors: ``None`` (no predictability scoring), a ``Predictor`` or a dict
            observer type -> predictor (as ``PredictabilityReward``).
        channel, on_scored: Passed to ``PredictabilityVecWrapper``.
        monitor: Add ``VecMonitor``.
        wrappers: Callables ``venv -> venv`` applied last, in order.
        render_mode: As :class:`IntersectionVecEnv`.
        info_mode: As :class:`IntersectionVecEnv`; default ``"lean"`` (info dicts at
            episode end only, per-step values in ``step_arrays``), the fast choice for
            training.
    """
    venv: VecEnv = IntersectionVecEnv(
        n_envs, config, seed=seed, render_mode=render_mode, info_mode=info_mode
    )
    spec = StackSpec(predictor=predictors, channel=channel, on_scored=on_scored, monitor=monitor)
    venv = wrap_stack(venv, spec, vector=True)
    for wrap in wrappers:
        if not callable(wrap):
            raise TypeError(f"wrappers: expected callables venv -> venv, got {wrap!r}")
        venv = wrap(venv)
    return venv
