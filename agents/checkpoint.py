"""Atomic, complete, verified training checkpoints.

A checkpoint is a directory ``RUN_DIR/checkpoints/step_<N>/`` holding everything needed
to continue a run exactly where it stopped:

=====================  ==================================================================
``model.zip``          SB3 ``model.save``: policy weights, optimizer state, step counter,
                       the last observation and episode-start flags, episode buffers.
``replay_buffer.pkl``  Off-policy algorithms only (SAC, DQN).
``vecnormalize.pkl``   ``VecNormalize`` statistics (when the run normalises).
``envs.pkl``           One snapshot per env index (``StackHooks.snapshot``): the
                       simulator mid-episode, the trackers, env RNGs, the env's
                       multiplier and predictor copies.
``multipliers.json``   ``state_dict()`` of each constraint multiplier, by channel.
``predictor_<k>.*``    Weights and optimizer of each learned predictor (its own ``save``).
``rng.pkl``            Python ``random``, NumPy global and torch RNG states.
``state.pkl``          Step counter and training-loop state (callbacks' buffers, RNGs).
``config.yaml``        The run config that wrote it.
``manifest.json``      Format version, step, SHA-256 and size of every file above,
                       config fingerprint. Written last.
=====================  ==================================================================

Writing and verifying go through :mod:`bystander.checkpointing` (the mechanism the
GRPO trainer uses too): an atomic directory move, the manifest written last, every file
re-hashed on load. ``RUN_DIR/checkpoints/latest`` (a one-line text file naming the
newest checkpoint) is replaced atomically afterwards. Loading also compares the config's
structural fields with the current run; any difference raises :class:`CheckpointError`
with the file or field at fault.
"""

from __future__ import annotations

import json
import pickle
import random
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bystander.atomic import atomic_open
from bystander.checkpointing import (
    MANIFEST,
    CheckpointError,
    config_differences,
    read_checkpoint_dir,
    recover_checkpoint_dir,
    write_checkpoint_dir,
)
from bystander.config import RunConfig, config_from_dict, save_config
from bystander.dataconfig import read_yaml

__all__ = [
    "COMPATIBILITY_KEYS",
    "FORMAT_VERSION",
    "LATEST",
    "MANIFEST",
    "REQUIRED_FILES",
    "Checkpoint",
    "CheckpointError",
    "capture_rng",
    "check_compatible",
    "find_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "restore_rng",
    "save_checkpoint",
]

FORMAT_VERSION = 1
REQUIRED_FILES = ("model.zip", "config.yaml", "multipliers.json", "rng.pkl", "state.pkl")
"""Files every checkpoint holds (the manifest must list them)."""
LATEST = "latest"

COMPATIBILITY_KEYS: tuple[str, ...] = (
    "env.id",
    "env.config",
    "env.train_overrides",
    "env.max_episode_steps",
    "train.algo",
    "train.n_envs",
    "train.policy",
    "train.net_arch",
    "train.entropy_prior",
    "train.exploration_hold",
    "train.normalize",
    "predictor.kind",
    "predictor.horizon",
    "predictor.history",
    "constraint.mode",
    "constraint.channel",
    "constraint.conditioned",
    "constraint.lambda_step",
    "constraint.search_episodes",
)
"""Config fields that must match between a checkpoint and the run that resumes it."""


def capture_rng() -> dict[str, Any]:
    """States of Python's ``random``, NumPy's global RNG and torch's CPU RNG."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def restore_rng(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


@dataclass
class Checkpoint:
    """A verified checkpoint on disk (returned by :func:`load_checkpoint`).

    Attributes:
        path: The checkpoint directory.
        step: Env steps trained when it was written.
        config: The run config stored with it.
        manifest: The parsed manifest.
        multipliers: ``state_dict`` per cost channel.
        rng: RNG states (see :func:`capture_rng`).
        env_snapshots: One snapshot per env (bytes), or ``None``.
        state: Extra training-loop state.
    """

    path: Path
    step: int
    config: RunConfig
    manifest: dict[str, Any]
    multipliers: dict[str, dict[str, Any]] = field(default_factory=dict)
    rng: dict[str, Any] | None = None
    env_snapshots: list[bytes] | None = None
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def model_path(self) -> Path:
        return self.path / "model.zip"

    def file(self, name: str) -> Path | None:
        """Path of a stored file, or ``None`` when this checkpoint has none of that name."""
        return self.path / name if name in self.manifest["files"] else None

    def predictor_files(self) -> dict[str, Path]:
        """Learned-predictor weight files by key."""
        return {k: self.path / name for k, name in self.manifest.get("predictors", {}).items()}


def save_checkpoint(
    directory: str | Path,
    *,
    model: Any,
    config: RunConfig,
    step: int,
    multipliers: Mapping[str, Any] | None = None,
    predictors: Mapping[str, Any] | None = None,
    vec_normalize: Any = None,
    env_snapshots: list[bytes] | None = None,
    state: Mapping[str, Any] | None = None,
    keep: int | None = None,
) -> Path:
    """Write a complete checkpoint atomically into ``directory/step_<step>``.

    Args:
        directory: Parent folder (``RUN_DIR/checkpoints``).
        model: An SB3 algorithm (``save``, and ``save_replay_buffer`` for off-policy).
        config: The run config.
        step: Env steps trained (>= 0).
        multipliers: Constraint multipliers by cost channel (``state_dict()``).
        predictors: Learned predictors by key; each must have ``save(path)``.
        vec_normalize: A ``VecNormalize`` to store the statistics of, or ``None``.
        env_snapshots: Per-env snapshots (bytes), from
            :meth:`~bystander.agents.hooks.VecHooks.snapshot`.
        state: Picklable training-loop state (e.g. callbacks' ``state_dict``).
        keep: Keep only the newest ``keep`` checkpoints (``None``: keep all).

    Returns:
        The final checkpoint directory.
    """
    if step < 0:
        raise ValueError(f"step: expected an int >= 0, got {step}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step_{step:09d}"
    predictor_names = {key: f"predictor_{key}.pt" for key in (predictors or {})}
    manifest = {
        "format": FORMAT_VERSION,
        "step": int(step),
        "algo": config.train.algo,
        "config_fingerprint": config.fingerprint(COMPATIBILITY_KEYS),
        "predictors": predictor_names,
    }
    with write_checkpoint_dir(final, manifest) as tmp:
        model.save(tmp / "model.zip")
        if hasattr(model, "replay_buffer") and getattr(model, "replay_buffer", None) is not None:
            model.save_replay_buffer(tmp / "replay_buffer.pkl")
        if vec_normalize is not None:
            # VecNormalize's own pickle drops the running discounted returns; keep them
            # so that reward normalisation continues exactly.
            with open(tmp / "vecnormalize.pkl", "wb") as f:
                payload = {"vecnormalize": vec_normalize, "returns": vec_normalize.returns}
                pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
        if env_snapshots is not None:
            with open(tmp / "envs.pkl", "wb") as f:
                pickle.dump(list(env_snapshots), f, protocol=pickle.HIGHEST_PROTOCOL)
        with open(tmp / "multipliers.json", "w", encoding="utf-8") as f:
            json.dump(
                {k: _jsonable(m.state_dict()) for k, m in (multipliers or {}).items()}, f, indent=1
            )
        for key, pred in (predictors or {}).items():
            pred.save(tmp / predictor_names[key])
        with open(tmp / "rng.pkl", "wb") as f:
            pickle.dump(capture_rng(), f, protocol=pickle.HIGHEST_PROTOCOL)
        with open(tmp / "state.pkl", "wb") as f:
            pickle.dump(
                {"step": int(step), **dict(state or {})}, f, protocol=pickle.HIGHEST_PROTOCOL
            )
        save_config(config, tmp / "config.yaml")
    _write_latest(directory, final.name)
    if keep is not None and keep >= 1:
        for old_ckpt in sorted(directory.glob("step_*"))[:-keep]:
            if old_ckpt != final:
                shutil.rmtree(old_ckpt, ignore_errors=True)
    return final


def _write_latest(directory: Path, name: str) -> None:
    with atomic_open(directory / LATEST, "w") as f:
        f.write(name + "\n")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def find_checkpoint(path: str | Path) -> Path:
    """Resolve a run directory, a ``checkpoints`` folder or a checkpoint to a checkpoint dir.

    Raises:
        CheckpointError: when no checkpoint is there.
    """
    path = Path(path)
    if (path / MANIFEST).is_file() or path.name.startswith("step_"):
        return path
    ckpts = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    latest = ckpts / LATEST
    if latest.is_file():
        name = latest.read_text().strip()
        if name:
            recover_checkpoint_dir(ckpts / name)  # a kill mid-replace moved it aside
        if (ckpts / name).is_dir():
            return ckpts / name
    found = sorted(ckpts.glob("step_*")) if ckpts.is_dir() else []
    if not found:
        raise CheckpointError(f"no checkpoint found under {path} (expected {ckpts}/step_*)")
    return found[-1]


def load_checkpoint(path: str | Path, config: RunConfig | None = None) -> Checkpoint:
    """Verify and read a checkpoint (weights are loaded by the caller from ``model_path``).

    Args:
        path: A checkpoint directory, or a run directory (its latest checkpoint).
        config: The config of the run that wants to resume; its structural fields
            (:data:`COMPATIBILITY_KEYS`) must equal the checkpoint's.

    Raises:
        CheckpointError: missing manifest or file, size or checksum mismatch, unknown
            format, or an incompatible config (the message names the file or field).
    """
    ckpt = find_checkpoint(path)
    manifest = read_checkpoint_dir(ckpt, format_version=FORMAT_VERSION, required=REQUIRED_FILES)
    stored_cfg = config_from_dict(read_yaml(ckpt / "config.yaml"))
    if config is not None:
        check_compatible(stored_cfg, config, where=str(ckpt))
    with open(ckpt / "rng.pkl", "rb") as f:
        rng = pickle.load(f)
    snapshots = None
    if "envs.pkl" in manifest["files"]:
        with open(ckpt / "envs.pkl", "rb") as f:
            snapshots = pickle.load(f)
    multipliers = json.loads((ckpt / "multipliers.json").read_text())
    with open(ckpt / "state.pkl", "rb") as f:
        state = pickle.load(f)
    return Checkpoint(
        path=ckpt,
        step=int(manifest["step"]),
        config=stored_cfg,
        manifest=manifest,
        multipliers=multipliers,
        rng=rng,
        env_snapshots=snapshots,
        state=state,
    )


def check_compatible(stored: RunConfig, current: RunConfig, where: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` naming every structural field that differs."""
    diffs = config_differences(stored.to_dict(), current.to_dict(), COMPATIBILITY_KEYS)
    if diffs:
        raise CheckpointError(
            f"{where} does not match this run's config; cannot resume:\n  " + "\n  ".join(diffs)
        )


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint directories of a run, oldest first."""
    ckpts = Path(run_dir) / "checkpoints"
    return sorted(ckpts.glob("step_*")) if ckpts.is_dir() else []
