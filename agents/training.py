"""SB3 training of driving egos: env stack, vectorised env, algorithm, train loop, resume.

Read top to bottom:

1. :func:`build_predictor` / :func:`build_multipliers` turn config sections into the
   shared objects (predictors from :mod:`bystander.agents`, multipliers from
   :mod:`bystander.envs.constraints`).
2. :func:`make_env` builds one fully wrapped env. Wrappers, inner to outer::

       gymnasium.make(env.id, config=env.config)
       [TimeLimit]                 env.max_episode_steps
       PredictabilityReward        info["predictability"], info["costs"]["predictability"]
       [ReviewGate]                review.enabled
       Monitor                     SB3 episode stats of the *task* reward
       [ShapedReward | LagrangianReward]   constraint.mode
       TrainingHooks               snapshot/restore, lambda and predictor sync

   Monitor sits below the constraint wrapper so ``rollout/ep_rew_mean`` is the task
   return in every constraint mode (comparable across runs).
3. :func:`build_vec_env`: ``DummyVecEnv`` or ``SubprocVecEnv`` (``train.vec_env``) of
   ``train.n_envs`` such envs, seeded ``seed + rank``, optionally ``VecNormalize``.
4. :class:`Trainer`: builds or resumes the algorithm, runs ``model.learn`` in chunks of
   whole rollouts (so checkpoints and the wall-time limit fall on rollout boundaries,
   which is what makes resume exact), writes checkpoints, and returns a summary.

The main process owns the *master* multipliers and predictors; every env (in this
process or a subprocess) holds a copy, synced by the callbacks through
``VecEnv.env_method("bystander_sync", ...)`` after each update, so DummyVecEnv and
SubprocVecEnv behave the same.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import cloudpickle
import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import DQN, PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import configure
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecNormalize

import bystander.envs  # noqa: F401  (registers the Gymnasium ids)
from bystander.agents import checkpoint as ckpt_mod
from bystander.config import RunConfig, resolved_hyperparams, save_config
from bystander.envs.constraints import (
    LagrangianReward,
    Multiplier,
    ShapedReward,
    make_multiplier,
)
from bystander.envs.scoring import ScoredReplay

ALGO_CLASSES: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC, "dqn": DQN}


# --------------------------------------------------------------------------- objects


def build_predictor(cfg: RunConfig) -> Any | None:
    """The bystanders' predictor from ``cfg.predictor`` (``None`` for kind ``none``).

    ``frozen`` loads a :class:`~bystander.agents.learned.LearnedPredictor` from
    ``predictor.path`` and freezes it; ``cotrained`` builds a fresh one (seeded with
    ``train.seed``), or loads ``path`` when given, and leaves it trainable.
    """
    p = cfg.predictor
    if p.kind == "none":
        return None
    if p.kind == "constant_velocity":
        from bystander.agents.predictors import ConstantVelocityPredictor

        return ConstantVelocityPredictor(horizon=p.horizon, history=p.history)
    if p.kind == "constant_turn_rate":
        from bystander.agents.predictors import ConstantTurnRatePredictor

        return ConstantTurnRatePredictor(horizon=p.horizon, history=p.history)
    from bystander.agents.learned import LearnedPredictor

    if p.path:
        if not Path(p.path).is_file():
            raise FileNotFoundError(f"predictor.path: no such file {p.path}")
        pred = LearnedPredictor.from_file(p.path)
        if (pred.horizon, pred.history) != (p.horizon, p.history):
            raise ValueError(
                f"predictor.horizon/history: the file {p.path} has horizon={pred.horizon}, "
                f"history={pred.history}; config says {p.horizon}, {p.history}"
            )
    else:
        pred = LearnedPredictor(horizon=p.horizon, history=p.history, lr=p.lr, seed=cfg.train.seed)
    if p.kind == "frozen":
        pred.freeze()
    else:
        pred.unfreeze()
    return pred


def multiplier_key(channel: str | None) -> str:
    """Key of a multiplier: its cost channel, or ``"cost"`` for the total cost."""
    return "cost" if channel is None else channel


def build_multipliers(cfg: RunConfig) -> dict[str, Multiplier]:
    """Multipliers by cost channel for ``lagrangian`` / ``pid`` modes (else empty)."""
    c = cfg.constraint
    m = make_multiplier(
        c.mode,
        c.budget,
        lr=c.lr,
        init=c.lambda_init,
        max=c.lambda_max,
        min=c.lambda_min,
        kp=c.kp,
        ki=c.ki,
        kd=c.kd,
        delay=c.delay,
        window=c.window,
    )
    return {} if m is None else {multiplier_key(c.channel): m}


# ----------------------------------------------------------------------- env stack


class HookCopies:
    """One process's copies of the master multipliers and predictor, and the scored
    (views, truth) pairs it keeps for co-training: the state behind both hook wrappers
    (:class:`TrainingHooks` per env, :class:`~bystander.agents.batched.BatchedHooks`
    for the batched stack).

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


class TrainingHooks(gym.Wrapper):
    """Outermost wrapper: what the training loop needs from an env in any process.

    Methods are reached through ``VecEnv.env_method``:

    - ``bystander_snapshot() -> bytes``: the whole wrapped env (simulator mid-episode,
      trackers, RNGs, the env's multiplier and predictor copies), cloudpickled.
    - ``bystander_restore(blob)``: the inverse (identity between the env and its
      multiplier / predictor copies survives, they are pickled together).
    - ``bystander_sync(multipliers, predictor_state)``: load the master multipliers'
      ``state_dict`` and, when given, the master predictor's weights into the copies.
    - ``bystander_pop_scored() -> list``: (views, truth) pairs the predictability
      tracker scored since the last call (co-training), emptied by the call.

    Args:
        env: The wrapped env.
        multipliers: This env's copies of the multipliers (the ones its constraint
            wrapper reads), by key.
        predictor: This env's copy of the predictor (or ``None``).
        collect_scored: Keep scored (views, truth) pairs for co-training.
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
            _tracker_of(env).tracker.on_scored = self.copies.on_scored

    def bystander_snapshot(self) -> bytes:
        # one pickle: the env's wrappers and the copies keep sharing the same objects
        return cloudpickle.dumps((self.env, self.copies))

    def bystander_restore(self, blob: bytes) -> None:
        self.env, self.copies = cloudpickle.loads(blob)

    def bystander_sync(
        self, multipliers: Mapping[str, Mapping[str, Any]], predictor_state: Any = None
    ) -> None:
        self.copies.sync(multipliers, predictor_state)

    def bystander_pop_scored(self) -> list[tuple[Any, np.ndarray]]:
        return self.copies.pop_scored()


def _tracker_of(env: gym.Env) -> Any:
    """The ``PredictabilityReward`` layer of a wrapper stack (for its scored-pairs hook)."""
    from bystander.envs.predictability import PredictabilityReward

    e = env
    while True:
        if isinstance(e, PredictabilityReward):
            return e
        if not hasattr(e, "env"):
            raise ValueError("co-training needs a PredictabilityReward in the env stack")
        e = e.env


def make_env(
    cfg: RunConfig,
    *,
    predictor: Any = None,
    multipliers: Mapping[str, Multiplier] | None = None,
    render_mode: str | None = None,
    collect_scored: bool = False,
) -> TrainingHooks:
    """One env with the full wrapper stack of the module docstring.

    Args:
        cfg: Run config (``env``, ``predictor``, ``constraint``, ``review`` sections).
        predictor: Predictor for all observer types (``None``: no predictability wrapper).
        multipliers: Multipliers by key for ``lagrangian``/``pid`` (this env reads them).
        render_mode: Passed to ``gymnasium.make``.
        collect_scored: Keep scored (views, truth) pairs for co-training.
    """
    kwargs: dict[str, Any] = {}
    if cfg.env.config:
        kwargs["config"] = dict(cfg.env.config)
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    env: gym.Env = gym.make(cfg.env.id, **kwargs)
    if cfg.env.max_episode_steps is not None:
        env = gym.wrappers.TimeLimit(env, max_episode_steps=cfg.env.max_episode_steps)
    if predictor is not None:
        from bystander.envs.predictability import PredictabilityReward

        env = PredictabilityReward(env, predictor)
    if cfg.review.enabled:
        env = _review_gate(env, cfg, predictor)
    env = Monitor(env)
    c = cfg.constraint
    multipliers = dict(multipliers or {})
    if c.mode == "shaping":
        env = ShapedReward(env, weight=c.weight, channel=c.channel)
    elif c.mode in ("lagrangian", "pid"):
        key = multiplier_key(c.channel)
        if key not in multipliers:
            raise ValueError(f"constraint.mode={c.mode!r} needs a multiplier for {key!r}")
        env = LagrangianReward(env, multipliers[key], channel=c.channel)
    return TrainingHooks(env, multipliers, predictor, collect_scored=collect_scored)


def _review_gate(env: gym.Env, cfg: RunConfig, predictor: Any) -> gym.Env:
    from bystander.agents.reviewers import build_driving_reviewer
    from bystander.envs.review import ReviewGate

    reviewer, fallback = build_driving_reviewer(env, predictor)
    return ReviewGate(env, reviewer, cfg.review.threshold, fallback, mode=cfg.review.mode)


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
    (or the batched simulator for ``batched``, see :mod:`bystander.agents.batched`).

    Each env gets its own copy of ``predictor`` and ``multipliers`` (also in
    DummyVecEnv, so both kinds behave the same); ``VecNormalize`` on top when
    ``train.normalize``.
    """
    n = n_envs or cfg.train.n_envs
    kind = vec_env or cfg.train.vec_env
    if kind == "batched":
        from bystander.agents.batched import build_batched_vec_env

        if n != cfg.train.n_envs:
            raise ValueError("n_envs: the batched vec env uses train.n_envs")
        venv = build_batched_vec_env(cfg, predictor, multipliers)
        if cfg.train.normalize:
            venv = VecNormalize(venv, gamma=resolved_hyperparams(cfg.train).get("gamma", 0.99))
        return venv
    payload = cloudpickle.dumps((predictor, dict(multipliers)))
    collect = cfg.predictor.kind == "cotrained"
    fns = [_EnvFactory(cfg, payload, collect) for _ in range(n)]
    venv: VecEnv
    if kind == "subproc":
        venv = SubprocVecEnv(fns, start_method="fork" if os.name == "posix" else None)
    else:
        venv = DummyVecEnv(fns)
    venv.seed(cfg.train.seed)
    if cfg.train.normalize:
        venv = VecNormalize(venv, gamma=resolved_hyperparams(cfg.train).get("gamma", 0.99))
    return venv


def build_model(cfg: RunConfig, venv: VecEnv) -> BaseAlgorithm:
    """A fresh SB3 algorithm (``train.algo``) with ``resolved_hyperparams``."""
    cls = ALGO_CLASSES[cfg.train.algo]
    hp = resolved_hyperparams(cfg.train)
    if cfg.train.algo == "ppo":
        rollout = hp.get("n_steps", 2048) * venv.num_envs
        if rollout % hp.get("batch_size", 64) != 0 and rollout > 1:
            # SB3 warns and drops a truncated minibatch; be explicit instead.
            raise ValueError(
                f"train.hyperparams.batch_size: expected a divisor of n_steps * n_envs "
                f"({rollout}), got {hp.get('batch_size', 64)}"
            )
    net = list(cfg.train.net_arch)
    policy_kwargs: dict[str, Any] = {"net_arch": net}
    if cfg.train.algo == "sac":
        policy_kwargs = {"net_arch": net}
    return cls(
        cfg.train.policy,
        venv,
        seed=cfg.train.seed,
        device=cfg.train.device,
        policy_kwargs=policy_kwargs,
        verbose=0,
        **hp,
    )


# --------------------------------------------------------------------------- trainer


def new_run_dir(cfg: RunConfig, root: str | Path | None = None) -> Path:
    """``<runs_dir>/<YYYYmmdd-HHMMSS>-<name>`` (a suffix is added if it exists)."""
    root = Path(root if root is not None else cfg.runs_dir)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = root / f"{stamp}-{cfg.name}"
    i = 1
    while path.exists():
        path = root / f"{stamp}-{cfg.name}-{i}"
        i += 1
    path.mkdir(parents=True)
    return path


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch global RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrainResult:
    """What :meth:`Trainer.train` returns.

    Attributes:
        run_dir: The run directory.
        steps: Env steps trained in total (including before a resume).
        wall_s: Wall time of this call, seconds.
        steps_per_s: Env steps per second of this call.
        checkpoint: The final checkpoint directory.
        lambdas: Final lambda per multiplier key.
        stats: Last logged training statistics.
    """

    run_dir: Path
    steps: int
    wall_s: float
    steps_per_s: float
    checkpoint: Path | None
    lambdas: dict[str, float] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)


class Trainer:
    """Builds (or resumes) a run and trains it.

    Args:
        cfg: The run config (validated).
        run_dir: Where to write; created as :func:`new_run_dir` when ``None``.
        resume: A run directory or checkpoint to continue from. Its structural config
            must match ``cfg`` (see :data:`~bystander.agents.checkpoint.COMPATIBILITY_KEYS`);
            the run continues in ``resume``'s run directory unless ``run_dir`` is given.
        callbacks: Extra SB3 callbacks.
    """

    def __init__(
        self,
        cfg: RunConfig,
        run_dir: str | Path | None = None,
        resume: str | Path | None = None,
        callbacks: list[Any] | None = None,
    ) -> None:
        from bystander.agents.callbacks import build_callbacks

        self.cfg = cfg.validate()
        if cfg.train.torch_threads:
            torch.set_num_threads(cfg.train.torch_threads)
        checkpoint = None
        if resume is not None:
            checkpoint = ckpt_mod.load_checkpoint(resume, config=cfg)
            if run_dir is None:
                run_dir = checkpoint.path.parent.parent
        self.run_dir = Path(run_dir) if run_dir is not None else new_run_dir(cfg)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.run_dir / "config.yaml")
        seed_everything(cfg.train.seed)

        self.predictor = build_predictor(cfg)
        self.multipliers = build_multipliers(cfg)
        if checkpoint is not None:
            self._restore_objects(checkpoint)
        self.venv = build_vec_env(cfg, self.predictor, self.multipliers)
        cls = ALGO_CLASSES[cfg.train.algo]
        self.callback_state: dict[str, Any] = {}
        if checkpoint is None:
            self.model = build_model(cfg, self.venv)
        else:
            self.model = self._load_model(cls, checkpoint)
        self.model.set_logger(self._make_logger())
        self.callbacks = build_callbacks(self) + list(callbacks or [])
        if checkpoint is not None:
            self._sync_envs()
            if checkpoint.rng is not None:
                ckpt_mod.restore_rng(checkpoint.rng)
        self.resumed_from = checkpoint.path if checkpoint is not None else None

    # ---------------------------------------------------------------- resume

    def _restore_objects(self, checkpoint: ckpt_mod.Checkpoint) -> None:
        for key, state in checkpoint.multipliers.items():
            if key not in self.multipliers:
                raise ckpt_mod.CheckpointError(
                    f"checkpoint {checkpoint.path}: multiplier {key!r} unknown to this run"
                )
            self.multipliers[key].load_state_dict(state)
        files = checkpoint.predictor_files()
        if files:
            if self.predictor is None or not hasattr(self.predictor, "load"):
                raise ckpt_mod.CheckpointError(
                    f"checkpoint {checkpoint.path} holds predictor weights but this run's "
                    f"predictor ({self.cfg.predictor.kind}) has none"
                )
            self.predictor.load(files["main"])

    def _load_model(
        self, cls: type[BaseAlgorithm], checkpoint: ckpt_mod.Checkpoint
    ) -> BaseAlgorithm:
        vn_file = checkpoint.file("vecnormalize.pkl")
        if vn_file is not None:
            with open(vn_file, "rb") as f:
                d = pickle.load(f)
            vn: VecNormalize = d["vecnormalize"]
            vn.set_venv(self.venv.venv if isinstance(self.venv, VecNormalize) else self.venv)
            vn.returns = d["returns"]
            self.venv = vn
        if checkpoint.env_snapshots is not None:
            if len(checkpoint.env_snapshots) != self.venv.num_envs:
                raise ckpt_mod.CheckpointError(
                    f"checkpoint {checkpoint.path} has {len(checkpoint.env_snapshots)} env "
                    f"snapshots, this run has {self.venv.num_envs} envs"
                )
            for i, blob in enumerate(checkpoint.env_snapshots):
                self.venv.env_method("bystander_restore", blob, indices=[i])
        model = cls.load(checkpoint.model_path, env=self.venv, device=self.cfg.train.device)
        rb = checkpoint.file("replay_buffer.pkl")
        if rb is not None:
            model.load_replay_buffer(rb)
        for k, v in (checkpoint.state.get("sb3") or {}).items():
            setattr(model, k, v)
        self.callback_state = checkpoint.state
        return model

    # ---------------------------------------------------------------- helpers

    def _make_logger(self) -> Any:
        formats = ["csv"] + (["tensorboard"] if self.cfg.train.tensorboard else [])
        return configure(str(self.run_dir / "logs"), formats)

    def _sync_envs(self) -> None:
        state = {k: m.state_dict() for k, m in self.multipliers.items()}
        pstate = None
        if self.cfg.predictor.kind == "cotrained" and self.predictor is not None:
            pstate = self.predictor.net.state_dict()
        if state or pstate is not None:
            self.venv.env_method("bystander_sync", state, pstate)

    @property
    def rollout_size(self) -> int:
        """Env steps per rollout (``n_steps * n_envs`` for PPO, ``train_freq * n_envs`` else)."""
        hp = resolved_hyperparams(self.cfg.train)
        if self.cfg.train.algo == "ppo":
            return int(hp.get("n_steps", 2048)) * self.venv.num_envs
        freq = self.model.train_freq.frequency  # type: ignore[attr-defined]
        return int(freq) * self.venv.num_envs

    def save_checkpoint(self, keep: int | None = 3) -> Path:
        """Write a complete checkpoint of the current state (see :mod:`...checkpoint`)."""
        vn = self.venv if isinstance(self.venv, VecNormalize) else None
        snapshots = self.venv.env_method("bystander_snapshot")
        preds = {}
        if self.cfg.predictor.kind == "cotrained" and self.predictor is not None:
            preds["main"] = self.predictor
        # SB3's model.save leaves out the rollout position; without it learn() would
        # reset the envs on resume.
        state: dict[str, Any] = {
            "sb3": {
                k: getattr(self.model, k, None)
                for k in ("_last_obs", "_last_episode_starts", "_last_original_obs")
            }
        }
        for cb in self.callbacks:
            if hasattr(cb, "state_dict"):
                state[type(cb).__name__] = cb.state_dict()
        return ckpt_mod.save_checkpoint(
            self.run_dir / "checkpoints",
            model=self.model,
            config=self.cfg,
            step=int(self.model.num_timesteps),
            multipliers=self.multipliers,
            predictors=preds,
            vec_normalize=vn,
            env_snapshots=snapshots,
            state=state,
            keep=keep,
        )

    # ---------------------------------------------------------------- train

    def train(self, total_timesteps: int | None = None, chunk_rollouts: int = 8) -> TrainResult:
        """Train until ``total_timesteps`` env steps in total (default ``train.total_timesteps``).

        Runs ``model.learn`` in chunks of ``chunk_rollouts`` whole rollouts; checks the
        wall-time limit and writes checkpoints between chunks, i.e. on rollout
        boundaries. A final checkpoint is always written.
        """
        total = int(total_timesteps or self.cfg.train.total_timesteps)
        rollout = self.rollout_size
        every = self.cfg.train.checkpoint_every
        limit_s = None if self.cfg.train.max_minutes is None else 60.0 * self.cfg.train.max_minutes
        start_steps = int(self.model.num_timesteps)
        t0 = time.perf_counter()
        next_ckpt = (start_steps // every + 1) * every if every else None
        last_ckpt: Path | None = None
        progress = _Progress(total, start_steps) if self.cfg.train.progress_bar else None
        try:
            while self.model.num_timesteps < total:
                remaining = total - self.model.num_timesteps
                chunk = min(remaining, chunk_rollouts * rollout)
                if next_ckpt is not None:
                    chunk = min(chunk, max(next_ckpt - self.model.num_timesteps, 1))
                chunk = max(rollout, -(-chunk // rollout) * rollout)
                self.model.learn(chunk, callback=self.callbacks, reset_num_timesteps=False)
                if progress is not None:
                    progress.update(int(self.model.num_timesteps))
                if next_ckpt is not None and self.model.num_timesteps >= next_ckpt:
                    last_ckpt = self.save_checkpoint()
                    next_ckpt = (self.model.num_timesteps // every + 1) * every
                if limit_s is not None and time.perf_counter() - t0 >= limit_s:
                    break
        finally:
            if progress is not None:
                progress.close()
        wall = time.perf_counter() - t0
        if last_ckpt is None or not last_ckpt.name.endswith(f"{self.model.num_timesteps:09d}"):
            last_ckpt = self.save_checkpoint()
        self.model.save(self.run_dir / "model.zip")
        if isinstance(self.venv, VecNormalize):
            self.venv.save(str(self.run_dir / "vecnormalize.pkl"))
        if self.cfg.predictor.kind == "cotrained" and self.predictor is not None:
            self.predictor.save(self.run_dir / "predictor.pt")
        steps = int(self.model.num_timesteps)
        stats = {}
        for cb in self.callbacks:
            stats.update(getattr(cb, "last_stats", {}) or {})
        result = TrainResult(
            run_dir=self.run_dir,
            steps=steps,
            wall_s=wall,
            steps_per_s=(steps - start_steps) / wall if wall > 0 else float("nan"),
            checkpoint=last_ckpt,
            lambdas={k: m.value for k, m in self.multipliers.items()},
            stats=stats,
        )
        with open(self.run_dir / "train_summary.json", "w", encoding="utf-8") as f:
            json.dump(
                {
                    "steps": result.steps,
                    "wall_s": result.wall_s,
                    "steps_per_s": result.steps_per_s,
                    "checkpoint": str(result.checkpoint),
                    "lambdas": result.lambdas,
                    "stats": result.stats,
                    "hyperparams": resolved_hyperparams(self.cfg.train),
                },
                f,
                indent=1,
                default=float,
            )
        return result

    def close(self) -> None:
        """Close the vec env (subprocesses)."""
        self.venv.close()


class _Progress:
    """One tqdm bar across all ``learn`` chunks."""

    def __init__(self, total: int, start: int) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)
        self.last = start

    def update(self, n: int) -> None:
        self.bar.update(n - self.last)
        self.last = n

    def close(self) -> None:
        self.bar.close()


def train(
    cfg: RunConfig,
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
) -> TrainResult:
    """Train a run from ``cfg`` (or continue ``resume``); returns a :class:`TrainResult`."""
    trainer = Trainer(cfg, run_dir=run_dir, resume=resume)
    try:
        return trainer.train()
    finally:
        trainer.close()


def load_policy(run_dir: str | Path, device: str = "cpu") -> tuple[BaseAlgorithm, RunConfig]:
    """Load ``RUN_DIR/model.zip`` (or the latest checkpoint's) and the run's config."""
    from bystander.config import load_config

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    model_path = run_dir / "model.zip"
    if not model_path.is_file():
        ck = ckpt_mod.load_checkpoint(run_dir)
        model_path = ck.model_path
        cfg = ck.config
    else:
        if not cfg_path.is_file():
            raise FileNotFoundError(f"run directory {run_dir} has no config.yaml")
        cfg = load_config(cfg_path)
    cls = ALGO_CLASSES[cfg.train.algo]
    model = cls.load(model_path, device=device)
    return model, cfg


def load_obs_normalizer(run_dir: str | Path) -> Callable[[np.ndarray], np.ndarray] | None:
    """Observation normaliser of a run trained with ``VecNormalize`` (else ``None``)."""
    path = Path(run_dir) / "vecnormalize.pkl"
    if not path.is_file():
        return None
    with open(path, "rb") as f:
        vn: VecNormalize = pickle.load(io.BytesIO(f.read()))
    vn.training = False
    return vn.normalize_obs
