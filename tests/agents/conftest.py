"""Fixtures shared by the agent tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

from bystander.agents import checkpoint as ck
from bystander.agents.training import Trainer


@contextmanager
def _straight_and_resumed(cfg: Any, tmp_path: Path) -> Iterator[tuple[Trainer, Trainer]]:
    """Train ``cfg`` straight through and again resumed from its first checkpoint,
    check both end with equal policy parameters, and yield both trainers (closed after)."""
    straight = Trainer(cfg, run_dir=tmp_path / "straight")
    resumed = None
    try:
        straight.train()
        first = ck.list_checkpoints(tmp_path / "straight")[0]
        resumed = Trainer(cfg, run_dir=tmp_path / "resumed", resume=first)
        resumed.train()
        a, b = straight.model.policy.state_dict(), resumed.model.policy.state_dict()
        for k in a:
            assert torch.equal(a[k], b[k]), k
        yield straight, resumed
    finally:
        straight.close()
        if resumed is not None:
            resumed.close()


@pytest.fixture
def straight_and_resumed() -> Callable[..., Any]:
    """:func:`_straight_and_resumed`: ``with straight_and_resumed(cfg, tmp_path) as (a, b)``."""
    return _straight_and_resumed
