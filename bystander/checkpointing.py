"""Verified checkpoint directories, one mechanism for both trainers.

A checkpoint is a directory of files plus ``manifest.json`` (format, step, the SHA-256
and size of every file, and whatever the trainer adds). :func:`write_checkpoint_dir`
writes it into a hidden temporary directory next to the target, fsyncs everything,
writes the manifest last and moves the directory into place with ``os.replace``, so a
kill at any moment leaves either the previous checkpoint or the new one, never a mix
(replacing a directory of the same name moves the old one aside first; a kill between
the two renames is undone by :func:`recover_checkpoint_dir` on the next read or write);
leftovers of interrupted writes are removed by the next write (the caller holds the run
directory's :class:`~bystander.atomic.RunDirLock`, so no other write is in progress).
:func:`read_checkpoint_dir` checks the manifest field by field and re-hashes every file
before anything in the checkpoint is read; every problem raises
:class:`CheckpointError` naming the checkpoint and the file or field at fault.

Used by the driving checkpoints (:mod:`bystander.agents.checkpoint`) and the GRPO
trainer (:meth:`bystander.llm.grpo.GRPOTrainer.save_checkpoint`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "MANIFEST",
    "CheckpointError",
    "config_differences",
    "read_checkpoint_dir",
    "recover_checkpoint_dir",
    "sha256_file",
    "write_checkpoint_dir",
]

MANIFEST = "manifest.json"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not fit the run that loads it."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes."""
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


@contextmanager
def write_checkpoint_dir(
    final: str | os.PathLike[str], manifest: Mapping[str, Any]
) -> Iterator[Path]:
    """Yield an empty temporary directory to write a checkpoint's files into; on a clean
    exit, add ``files`` (name -> ``{"sha256", "bytes"}``) to ``manifest``, write it as
    ``manifest.json`` and move the directory onto ``final`` atomically (replacing an
    older checkpoint of the same name). On an exception the temporary directory is
    removed and ``final`` is left as it was.

    Args:
        final: The checkpoint directory to create or replace.
        manifest: JSON-able fields of the manifest (``format`` and ``step`` at least).
    """
    final = Path(final)
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    for old in parent.glob(".old-*/*"):  # every checkpoint a kill left moved aside
        recover_checkpoint_dir(parent / old.name)
    for stale in [*parent.glob(".tmp-*"), *parent.glob(".old-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=".tmp-"))
    try:
        yield tmp
        files = {
            p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(tmp.iterdir())
            if p.is_file()
        }
        with open(tmp / MANIFEST, "w", encoding="utf-8") as f:
            json.dump({**manifest, "files": files}, f, indent=1)
        for p in tmp.iterdir():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(tmp)
        if final.exists():
            # os.replace cannot overwrite a non-empty directory: move the old one aside
            old = Path(tempfile.mkdtemp(dir=parent, prefix=".old-"))
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover_checkpoint_dir(final: str | os.PathLike[str]) -> None:
    """Put back a checkpoint that a kill left moved aside: replacing ``final`` moves the
    old directory to ``.old-*/<name>`` before the new one moves in, so between the two
    renames only the old one exists."""
    final = Path(final)
    if final.exists():
        return
    for old in sorted(final.parent.glob(f".old-*/{final.name}")):
        os.replace(old, final)
        return


def read_checkpoint_dir(
    ckpt: str | os.PathLike[str], *, format_version: int, required: Sequence[str]
) -> dict[str, Any]:
    """Verify a checkpoint directory and return its manifest.

    Checks, in order: the manifest exists and is a JSON object of the expected
    ``format``; ``files`` maps plain file names to ``{"bytes": int, "sha256": str}``
    and lists every ``required`` file; ``step`` is an int; every listed file exists with
    its size and checksum.

    Raises:
        CheckpointError: naming the checkpoint and the file or field at fault.
    """
    ckpt = Path(ckpt)
    recover_checkpoint_dir(ckpt)
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
    if not isinstance(manifest, dict) or manifest.get("format") != format_version:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        raise CheckpointError(
            f"checkpoint {ckpt}: unsupported format {got!r}, expected {format_version}"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(name, str)
        and name == Path(name).name
        and isinstance(meta, dict)
        and isinstance(meta.get("bytes"), int)
        and isinstance(meta.get("sha256"), str)
        for name, meta in files.items()
    ):
        raise CheckpointError(
            f"checkpoint {ckpt} is corrupt: {MANIFEST} 'files' must map file names to "
            "{'bytes': int, 'sha256': str}"
        )
    missing = [n for n in required if n not in files]
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
        digest = sha256_file(fp)
        if digest != meta["sha256"]:
            raise CheckpointError(
                f"checkpoint {ckpt} is corrupt: checksum of {name} is {digest[:12]}..., "
                f"manifest says {meta['sha256'][:12]}..."
            )
    return manifest


def config_differences(
    stored: Mapping[str, Any], current: Mapping[str, Any], keys: Sequence[str] | None = None
) -> list[str]:
    """``"key: checkpoint has A, this run has B"`` for each dotted ``key`` whose values
    differ (every leaf of either mapping when ``keys`` is None)."""
    if keys is None:
        keys = sorted(set(_leaves(stored)) | set(_leaves(current)))
    return [
        f"{key}: checkpoint has {a!r}, this run has {b!r}"
        for key in keys
        if (a := _dig(stored, key)) != (b := _dig(current, key))
    ]


def _leaves(d: Mapping[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        out += _leaves(v, key + ".") if isinstance(v, Mapping) and v else [key]
    return out


def _dig(d: Any, key: str) -> Any:
    for p in key.split("."):
        if not isinstance(d, Mapping) or p not in d:
            return None
        d = d[p]
    return d
