"""Atomic file writes and run-directory locks, for both trainers.

- :func:`atomic_open`: a crash mid-write never leaves a half-written file behind. Every
  writer of checkpoints, weights, datasets, configs and results goes through it, so
  there is one mechanism to get right.
- :class:`RunDirLock`: one writer per run directory; a second process refuses and names
  the holder.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["RunDirBusyError", "RunDirLock", "abandon_run_dir", "atomic_open", "claim_run_dir"]


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success move it onto ``path``.

    The temporary file is flushed and fsynced, then renamed with ``os.replace`` (atomic
    on POSIX), so readers see either the old file or the new one, never a part. On an
    exception the temporary file is removed and ``path`` is left untouched.

    Args:
        path: Destination file; its parent folders are created.
        mode: ``"wb"`` or ``"w"`` (text; pass ``encoding=...`` through ``kwargs``).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode: expected 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


_HELD: weakref.WeakSet[RunDirLock] = weakref.WeakSet()
"""Locks this process holds (their descriptors are closed in forked children)."""


def _close_inherited_locks() -> None:
    """In a forked child (e.g. a SubprocVecEnv worker): drop the copies of the parent's
    lock descriptors, so that a worker outliving a killed trainer holds no lock (an
    ``flock`` lasts while any descriptor of it is open). The parent keeps its lock."""
    for lock in list(_HELD):
        if lock._fd is not None:
            os.close(lock._fd)
            lock._fd = None


os.register_at_fork(after_in_child=_close_inherited_locks)


class RunDirBusyError(RuntimeError):
    """Another process holds the lock of a run directory."""


class RunDirLock:
    """An exclusive lock on a run directory, so that two processes never write one run.

    The lock is an ``flock`` on ``RUN_DIR/.lock``: the operating system drops it when the
    holding process ends, however it ends (``kill -9`` included), so a stale lock never
    blocks a resume. The file names its holder (pid, host, command, start time) for the
    error message of the next process that tries.

    Use as a context manager or call :meth:`release`; the lock is re-entrant within one
    object only (a second :class:`RunDirLock` on the same directory refuses, also in the
    same process).

    Raises:
        RunDirBusyError: The directory is locked by another holder; the message names it.
    """

    FILE = ".lock"

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self._fd: int | None = None
        self.path = Path(run_dir) / self.FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode("utf-8", errors="replace").strip()
            os.close(fd)
            raise RunDirBusyError(
                f"run directory {str(self.path.parent)!r} is in use by another process "
                f"({holder or 'holder unknown'}); wait for it to finish or choose another "
                "run directory"
            ) from None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join(sys.argv)[:300],
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode("utf-8"), 0)
        self._fd = fd
        _HELD.add(self)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> RunDirLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def claim_run_dir(
    run_dir: str | os.PathLike[str] | None, runs_dir: str | os.PathLike[str], name: str
) -> tuple[Path, RunDirLock, bool]:
    """The run directory a trainer writes, locked for it.

    Args:
        run_dir: The directory asked for, or ``None`` for a new
            ``<runs_dir>/<YYYYmmdd-HHMMSS>-<name>`` (``-1``, ``-2``... when taken).
        runs_dir: Parent of new run directories.
        name: Run name in a new directory's name.

    Returns:
        ``(path, lock, created)``: ``created`` says whether this call made the directory
        (:func:`abandon_run_dir` removes it again for a run rejected before it starts).

    Raises:
        RunDirBusyError: Another process holds the directory.
    """
    if run_dir is not None:
        path = Path(run_dir)
        created = not path.exists()
    else:
        root = Path(runs_dir)
        root.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path, i = root / f"{stamp}-{name}", 1
        while True:
            try:
                path.mkdir()  # atomic: two processes never claim the same new directory
                break
            except FileExistsError:
                path, i = root / f"{stamp}-{name}-{i}", i + 1
        created = True
    return path, RunDirLock(path), created


def abandon_run_dir(path: str | os.PathLike[str], lock: RunDirLock, created: bool) -> None:
    """Release a run rejected before it wrote anything of value, and remove its directory
    when :func:`claim_run_dir` created it (nothing half-made is left behind)."""
    if created:  # while still locked: nobody can claim it in between
        shutil.rmtree(path, ignore_errors=True)
    lock.release()
