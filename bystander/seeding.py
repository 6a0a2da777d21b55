"""Seeding a block of torch work without touching the caller's random streams."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["forked_torch_seed"]


@contextmanager
def forked_torch_seed(seed: int) -> Iterator[None]:
    """Seed torch for a block (``torch.manual_seed(seed)``) and restore every generator
    after it.

    ``torch.manual_seed`` reseeds the CPU generator *and* every CUDA device's, so the
    block forks all of them: ``torch.random.fork_rng(devices=[])`` restores only the CPU
    one, which would leave a CUDA run's sampling stream reseeded after each evaluation.
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
