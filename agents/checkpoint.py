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

Atomicity: everything is written into a hidden temporary directory next to the
target, fsynced, then moved into place with one ``os.replace``; ``RUN_DIR/checkpoints/
latest`` (a one-line text file naming the newest checkpoint) is replaced the same way
afterwards. A crash mid-write leaves at most a stray ``.tmp-*`` directory, never a
checkpoint that loads wrong. Loading re-hashes every file against the manifest and
compares the config's structural fields with the current run; any difference raises
:class:`CheckpointError` with the file or field at fault.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bystander.atomic import atomic_open
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
MANIFEST = "manifest.json"
REQUIRED_FILES = ("model.zip", "config.yaml", "multipliers.json", "rng.pkl", "state.pkl")
"""Files every checkpoint holds (the manifest must list them)."""
LATEST = "latest"

COMPATIBILITY_KEYS: tuple[str, ...] = (
    "env.id",
    "env.config",
    "env.max_episode_steps",
    "train.algo",
    "train.n_envs",
    "train.policy",
    "train.net_arch",
    "train.normalize",
    "predictor.kind",
    "predictor.horizon",
    "predictor.history",
    "constraint.mode",
    "constraint.channel",
)
"""Config fields that must match between a checkpoint and the run that resumes it."""


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not fit the run that loads it."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    # Leftovers of writes a kill interrupted (the run directory's lock makes this
    # process the only writer, so none of them is in progress).
    for stale in [*directory.glob(".tmp-*"), *directory.glob(".old-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=directory, prefix=".tmp-"))
    try:
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
        predictor_names: dict[str, str] = {}
        for key, pred in (predictors or {}).items():
            name = f"predictor_{key}.pt"
            pred.save(tmp / name)
            predictor_names[key] = name
        with open(tmp / "rng.pkl", "wb") as f:
            pickle.dump(capture_rng(), f, protocol=pickle.HIGHEST_PROTOCOL)
        with open(tmp / "state.pkl", "wb") as f:
            pickle.dump(
                {"step": int(step), **dict(state or {})}, f, protocol=pickle.HIGHEST_PROTOCOL
            )
        save_config(config, tmp / "config.yaml")

        files = {}
        for p in sorted(tmp.iterdir()):
            if p.is_file():
                files[p.name] = {"sha256": _sha256(p), "bytes": p.stat().st_size}
        manifest = {
            "format": FORMAT_VERSION,
            "step": int(step),
            "algo": config.train.algo,
            "config_fingerprint": config.fingerprint(COMPATIBILITY_KEYS),
            "predictors": predictor_names,
            "files": files,
        }
        with open(tmp / MANIFEST, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        for p in tmp.iterdir():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(tmp)
        if final.exists():
            # Same step written twice: move the old one aside first (os.replace cannot
            # overwrite a non-empty directory), then drop it.
            old = Path(tempfile.mkdtemp(dir=directory, prefix=".old-"))
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
    mpath = ckpt / MANIFEST
    if not mpath.is_file():
        raise CheckpointError(
            f"checkpoint {ckpt} is incomplete or corrupt: {MANIFEST} is missing "
            "(was the write interrupted?)"
        )
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"checkpoint {ckpt} is corrupt: {MANIFEST} is not valid JSON ({e})"
        ) from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        raise CheckpointError(
            f"checkpoint {ckpt}: unsupported format {got!r}, expected {FORMAT_VERSION}"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(meta, dict)
        and isinstance(meta.get("bytes"), int)
        and isinstance(meta.get("sha256"), str)
        and isinstance(name, str)
        and name == Path(name).name
        for name, meta in files.items()
    ):
        raise CheckpointError(
            f"checkpoint {ckpt} is corrupt: {MANIFEST} 'files' must map file names to "
            "{'bytes': int, 'sha256': str}"
        )
    missing = [n for n in REQUIRED_FILES if n not in files]
    if missing or not isinstance(manifest.get("step"), int):
        what = f"no entry for {missing}" if missing else "no int 'step'"
        raise CheckpointError(f"checkpoint {ckpt} is corrupt: {MANIFEST} has {what}")
    for name, meta in files.items():
        fp = ckpt / name
        if not fp.is_file():
            raise CheckpointError(f"checkpoint {ckpt} is corrupt: file {name} is missing")
        size = fp.stat().st_size
        if size != meta["bytes"]:
            raise CheckpointError(
                f"checkpoint {ckpt} is corrupt: file {name} has {size} bytes, "
                f"manifest says {meta['bytes']}"
            )
        digest = _sha256(fp)
        if digest != meta["sha256"]:
            raise CheckpointError(
                f"checkpoint {ckpt} is corrupt: checksum of {name} is {digest[:12]}..., "
                f"manifest says {meta['sha256'][:12]}..."
            )
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
    a, b = stored.to_dict(), current.to_dict()
    diffs = []
    for key in COMPATIBILITY_KEYS:
        va, vb = _dig(a, key), _dig(b, key)
        if va != vb:
            diffs.append(f"{key}: checkpoint has {va!r}, this run has {vb!r}")
    if diffs:
        raise CheckpointError(
            f"{where} does not match this run's config; cannot resume:\n  " + "\n  ".join(diffs)
        )


def _dig(d: dict[str, Any], key: str) -> Any:
    for p in key.split("."):
        d = d[p]
    return d


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint directories of a run, oldest first."""
    ckpts = Path(run_dir) / "checkpoints"
    return sorted(ckpts.glob("step_*")) if ckpts.is_dir() else []
