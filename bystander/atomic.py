"""Atomic file writes: a crash mid-write never leaves a half-written file behind.

Every writer of checkpoints, weights, datasets, configs and results goes through
:func:`atomic_open`, so there is one mechanism to get right.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open"]


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
