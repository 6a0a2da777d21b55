"""SB3 training of driving egos: objects, algorithm, train loop, resume.

Read top to bottom:

1. :func:`build_predictor` / :func:`build_multipliers` turn config sections into the
   shared objects (predictors from :mod:`bystander.agents`, multipliers from
   :mod:`bystander.envs.constraints`).
2. :func:`~bystander.agents.stack.build_vec_env` (:mod:`bystander.agents.stack`, the one
   builder of the driving wrapper stack) gives the training VecEnv of ``train.n_envs``
   worlds, seeded ``seed + rank``, optionally under ``VecNormalize``.
3. :func:`~bystander.agents.models.build_model`: the SB3 algorithm with the resolved
   hyperparameters (and the calm-prior policy of ``train.entropy_prior``).
4. :class:`Trainer`: builds or resumes the algorithm, runs ``model.learn`` in chunks of
   whole rollouts (so checkpoints and the wall-time limit fall on rollout boundaries,
   which is what makes resume exact), writes checkpoints, and returns a summary.

The main process owns the *master* multipliers and predictors; every stack (in this
process or a subprocess) holds a copy, synced by the callbacks through
:class:`~bystander.agents.hooks.VecHooks` after each update, so DummyVecEnv,
SubprocVecEnv and the batched stack behave the same.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import random
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import (
    CSVOutputFormat,
    Logger,
    TensorBoardOutputFormat,
    configure,
)
from stable_baselines3.common.vec_env import VecNormalize

from bystander.agents import checkpoint as ckpt_mod
from bystander.agents.callbacks import build_callbacks
from bystander.agents.heldout import HeldOutEvaluation
from bystander.agents.hooks import VecHooks
from bystander.agents.models import ALGO_CLASSES, build_model
from bystander.agents.stack import build_vec_env
from bystander.atomic import abandon_run_dir, atomic_open, claim_run_dir
from bystander.config import COTRAINED_KINDS, RunConfig, resolved_hyperparams, save_config
from bystander.envs.constraints import Multiplier, multiplier_key

__all__ = [
    "ALGO_CLASSES",
    "ContinuedCSV",
    "TrainResult",
    "Trainer",
    "build_model",
    "build_multipliers",
    "build_predictor",
    "load_obs_normalizer",
    "load_trained_predictor",
    "load_policy",
    "seed_everything",
    "train",
]

# --------------------------------------------------------------------------- objects


def build_predictor(cfg: RunConfig) -> Any | None:
    """The bystanders' predictor from ``cfg.predictor`` (``None`` for kind ``none``).

    ``frozen`` loads a :class:`~bystander.agents.learned.LearnedPredictor` from
    ``predictor.path`` and freezes it; ``cotrained`` builds a fresh one (seeded with
    ``train.seed``), or loads ``path`` when given, and leaves it trainable. ``map`` /
    ``map_cotrained``: the same with a :class:`~bystander.agents.map_predictor.MapPredictor`
    on the run's map (``env.config``); a fresh ``map`` one is habit-blind.
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
    if p.kind in ("map", "map_cotrained"):
        from bystander.agents.map_predictor import MapPredictor

        pred = _learned_from_file(cfg, MapPredictor) or MapPredictor(
            cfg.env.config, horizon=p.horizon, history=p.history, lr=p.lr, seed=cfg.train.seed
        )
        return pred.freeze() if p.kind == "map" else pred.unfreeze()
    from bystander.agents.learned import LearnedPredictor

    pred = _learned_from_file(cfg, LearnedPredictor) or LearnedPredictor(
        horizon=p.horizon, history=p.history, lr=p.lr, seed=cfg.train.seed
    )
    return pred.freeze() if p.kind == "frozen" else pred.unfreeze()


def _learned_from_file(cfg: RunConfig, cls: Any) -> Any:
    """The predictor of class ``cls`` saved at ``predictor.path`` (None when no path is
    set), checked against the config's horizon and history."""
    p = cfg.predictor
    if not p.path:
        return None
    if not Path(p.path).is_file():
        raise FileNotFoundError(f"predictor.path: no such file {p.path}")
    pred = cls.from_file(p.path)
    if (pred.horizon, pred.history) != (p.horizon, p.history):
        raise ValueError(
            f"predictor.horizon/history: the file {p.path} has horizon={pred.horizon}, "
            f"history={pred.history}; config says {p.horizon}, {p.history}"
        )
    return pred


def load_trained_predictor(cfg: RunConfig, path: str | Path) -> Any:
    """The co-trained predictor a run saved at ``path`` (``predictor.pt``), frozen."""
    if cfg.predictor.kind == "map_cotrained":
        from bystander.agents.map_predictor import MapPredictor

        return MapPredictor.from_file(path).freeze()
    from bystander.agents.learned import LearnedPredictor

    return LearnedPredictor.from_file(path).freeze()


def build_multipliers(cfg: RunConfig) -> dict[str, Multiplier]:
    """Multipliers by cost channel for ``lagrangian`` / ``pid`` modes (else empty)."""
    c = cfg.constraint
    m = c.make_multiplier()
    return {} if m is None else {multiplier_key(c.channel): m}


# --------------------------------------------------------------------------- trainer


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
        run_dir: Where to write; a new ``<runs_dir>/<stamp>-<name>`` when ``None``
            (:func:`bystander.atomic.claim_run_dir`).
        resume: A run directory or checkpoint to continue from. Its structural config
            must match ``cfg`` (see :data:`~bystander.agents.checkpoint.COMPATIBILITY_KEYS`);
            the run continues in ``resume``'s run directory unless ``run_dir`` is given.
        callbacks: Extra SB3 callbacks.

    Attributes:
        predictor, multipliers: The master objects (the stacks hold copies).
        venv: The training VecEnv (:func:`~bystander.agents.stack.build_vec_env`).
        hooks: Its :class:`~bystander.agents.hooks.VecHooks`: snapshot / restore of the
            stacks, sync of their copies, the scored pairs for co-training.
    """

    def __init__(
        self,
        cfg: RunConfig,
        run_dir: str | Path | None = None,
        resume: str | Path | None = None,
        callbacks: list[Any] | None = None,
    ) -> None:
        self.cfg = cfg.validate()
        if cfg.train.torch_threads:
            torch.set_num_threads(cfg.train.torch_threads)
        checkpoint = None
        if resume is not None:
            checkpoint = ckpt_mod.load_checkpoint(resume, config=cfg)
            if run_dir is None:
                run_dir = checkpoint.path.parent.parent
        # one writer per run directory: a second process refuses, naming the holder
        self.run_dir, self.lock, created = claim_run_dir(run_dir, cfg.runs_dir, cfg.name)
        try:
            self._build(checkpoint, callbacks)
        except BaseException:
            abandon_run_dir(self.run_dir, self.lock, created)  # nothing half-made is left
            raise

    def _build(self, checkpoint: ckpt_mod.Checkpoint | None, callbacks: list[Any] | None) -> None:
        cfg = self.cfg
        save_config(cfg, self.run_dir / "config.yaml")
        seed_everything(cfg.train.seed)

        self.predictor = build_predictor(cfg)
        self.multipliers = build_multipliers(cfg)
        if checkpoint is not None:
            self._restore_objects(checkpoint)
        self.venv = build_vec_env(cfg, self.predictor, self.multipliers)
        self.hooks = VecHooks(self.venv)
        cls = ALGO_CLASSES[cfg.train.algo]
        self.callback_state: dict[str, Any] = {}
        if checkpoint is None:
            self.model = build_model(cfg, self.venv)
        else:
            self.model = self._load_model(cls, checkpoint)
        self.model.set_logger(self._make_logger(None if checkpoint is None else checkpoint.step))
        self.callbacks = build_callbacks(self) + list(callbacks or [])
        self.heldout: HeldOutEvaluation | None = None
        if cfg.eval.every:
            self.heldout = HeldOutEvaluation(self, cfg.eval.every, cfg.eval.heldout_episodes)
            if checkpoint is not None and "HeldOutEvaluation" in checkpoint.state:
                self.heldout.load_state_dict(checkpoint.state["HeldOutEvaluation"])
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
            self.hooks.restore(checkpoint.env_snapshots)
        model = cls.load(checkpoint.model_path, env=self.venv, device=self.cfg.train.device)
        rb = checkpoint.file("replay_buffer.pkl")
        if rb is not None:
            model.load_replay_buffer(rb)
        for k, v in (checkpoint.state.get("sb3") or {}).items():
            setattr(model, k, v)
        for k, v in (checkpoint.state.get("policy") or {}).items():  # HeldNoisePolicy's
            if hasattr(model.policy, k):
                setattr(model.policy, k, v)
        self.callback_state = checkpoint.state
        return model

    # ---------------------------------------------------------------- helpers

    def _make_logger(self, resumed_step: int | None) -> Logger:
        """SB3's logger: ``logs/progress.csv`` (and TensorBoard). On resume the CSV is
        continued, not rewritten: its rows up to ``resumed_step`` are kept."""
        folder = self.run_dir / "logs"
        if resumed_step is None:
            tb = ["tensorboard"] if self.cfg.train.tensorboard else []
            return configure(str(folder), ["csv", *tb])
        formats: list[Any] = [ContinuedCSV(folder / "progress.csv", resumed_step)]
        if self.cfg.train.tensorboard:
            formats.append(TensorBoardOutputFormat(str(folder)))
        return Logger(str(folder), formats)

    def sync_multipliers(self) -> None:
        """Push the master multipliers' state into every env's copy (after an update)."""
        self.hooks.sync({k: m.state_dict() for k, m in self.multipliers.items()}, None)

    def _sync_envs(self) -> None:
        state = {k: m.state_dict() for k, m in self.multipliers.items()}
        pstate = None
        if self.cfg.predictor.kind in COTRAINED_KINDS and self.predictor is not None:
            pstate = self.predictor.net.state_dict()
        if state or pstate is not None:
            self.hooks.sync(state, pstate)

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
        snapshots = self.hooks.snapshot()
        preds = {}
        if self.cfg.predictor.kind in COTRAINED_KINDS and self.predictor is not None:
            preds["main"] = self.predictor
        # SB3's model.save leaves out the rollout position; without it learn() would
        # reset the envs on resume.
        state: dict[str, Any] = {
            "sb3": {
                k: getattr(self.model, k, None)
                for k in ("_last_obs", "_last_episode_starts", "_last_original_obs")
            },
            "policy": {"held_noise": getattr(self.model.policy, "held_noise", None)},
        }
        for cb in [*self.callbacks, self.heldout]:
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
        # SB3 builds valid distributions: checking their arguments on every policy call
        # cost about 10 % of each PPO update (measured); off while training, then restored
        validate = torch.distributions.Distribution._validate_args
        torch.distributions.Distribution.set_default_validate_args(False)
        try:
            while self.model.num_timesteps < total:
                remaining = total - self.model.num_timesteps
                chunk = min(remaining, chunk_rollouts * rollout)
                for boundary in (next_ckpt, self.heldout and self.heldout.next_at):
                    if boundary:  # chunks end on checkpoint and evaluation steps
                        chunk = min(chunk, max(boundary - self.model.num_timesteps, 1))
                chunk = max(rollout, -(-chunk // rollout) * rollout)
                self.model.learn(chunk, callback=self.callbacks, reset_num_timesteps=False)
                if progress is not None:
                    progress.update(int(self.model.num_timesteps))
                if self.heldout is not None and self.heldout.due(self.model.num_timesteps):
                    self.heldout.evaluate(int(self.model.num_timesteps))
                if next_ckpt is not None and self.model.num_timesteps >= next_ckpt:
                    last_ckpt = self.save_checkpoint()
                    next_ckpt = (self.model.num_timesteps // every + 1) * every
                if limit_s is not None and time.perf_counter() - t0 >= limit_s:
                    break
        finally:
            torch.distributions.Distribution.set_default_validate_args(validate)
            if progress is not None:
                progress.close()
        wall = time.perf_counter() - t0
        if last_ckpt is None or not last_ckpt.name.endswith(f"{self.model.num_timesteps:09d}"):
            last_ckpt = self.save_checkpoint()
        with atomic_open(self.run_dir / "model.zip") as f:
            self.model.save(f)
        if isinstance(self.venv, VecNormalize):
            self.venv.save(str(self.run_dir / "vecnormalize.pkl"))
        if self.cfg.predictor.kind in COTRAINED_KINDS and self.predictor is not None:
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
        with atomic_open(self.run_dir / "train_summary.json", "w", encoding="utf-8") as f:
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
        """Close the vec env (subprocesses) and release the run directory."""
        try:
            self.venv.close()
        finally:
            self.lock.release()


class ContinuedCSV(CSVOutputFormat):
    """SB3's CSV log continued across a resume instead of reopened for writing.

    The existing file's rows up to ``until_step`` (``time/total_timesteps``) are kept;
    later rows (written after the checkpoint by a run that then died) and a row cut
    short by a kill are dropped, since the resumed run writes those steps again. The
    kept part is rewritten atomically; new rows are appended with SB3's own writer.

    Args:
        path: ``logs/progress.csv``.
        until_step: The resumed checkpoint's step.
    """

    def __init__(self, path: str | Path, until_step: int) -> None:
        path = Path(path)
        header: list[str] = []
        rows: list[list[str]] = []
        if path.is_file():
            with open(path, newline="", encoding="utf-8", errors="replace") as f:
                reader = csv.reader(f)
                header = next(reader, [])
                col = header.index("time/total_timesteps") if header else -1
                for row in reader:
                    if len(row) != len(header) or col < 0:
                        continue  # cut short by a kill, or no step to judge it by
                    try:
                        step = float(row[col])
                    except ValueError:
                        continue
                    if step <= until_step:
                        rows.append(row)
        with atomic_open(path, "w", newline="", encoding="utf-8") as f:
            if header:
                writer = csv.writer(f, lineterminator="\n")
                writer.writerow(header)
                writer.writerows(rows)
        self.file = open(path, "r+", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self.file.seek(0, os.SEEK_END)
        self.keys = list(header)
        self.separator = ","
        self.quotechar = '"'


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
    try:
        model = cls.load(model_path, device=device)
    except (AssertionError, EOFError, KeyError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(
            f"{model_path}: not a loadable {cfg.train.algo.upper()} model "
            f"({type(err).__name__}: {err}); retrain, or resume from a checkpoint"
        ) from None
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
