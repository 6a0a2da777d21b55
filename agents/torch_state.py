"""Saving, loading and freezing the torch-backed predictors (one mechanism for all).

:class:`TorchPredictorState` is mixed into
:class:`~bystander.agents.learned.LearnedPredictor` and
:class:`~bystander.agents.map_predictor.MapPredictor`. A file holds a format header
(:attr:`TorchPredictorState.FORMAT`, :attr:`TorchPredictorState.FORMAT_VERSION`), the
predictor's ``config()`` (constructor arguments), the weights of ``net``, the state of
``optimizer``, the ``frozen`` flag and the ``updates`` counter. Files are written
atomically; a foreign, corrupt or mismatched file is refused with a ``ValueError``
naming what is wrong.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import torch

from bystander.atomic import atomic_open

__all__ = ["TorchPredictorState"]

T = TypeVar("T", bound="TorchPredictorState")


class TorchPredictorState:
    """Mixin: :meth:`save`, :meth:`load`, :meth:`from_file`, :meth:`freeze`,
    :meth:`unfreeze` for a predictor with ``net`` (``nn.Module``), ``optimizer``,
    ``frozen``, ``updates`` and ``config() -> dict`` (its constructor arguments)."""

    FORMAT = "bystander.TorchPredictor"
    """Format header of the files (each subclass names its own)."""
    FORMAT_VERSION = 1

    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    frozen: bool
    updates: int

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write header, weights and optimizer state to ``path`` atomically (temp file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": self.FORMAT,
            "version": self.FORMAT_VERSION,
            "config": self.config(),
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "frozen": self.frozen,
            "updates": self.updates,
        }
        with atomic_open(path) as fh:
            torch.save(payload, fh)
        return path

    @classmethod
    def _read(cls, path: str | os.PathLike[str]) -> dict[str, Any]:
        fmt = cls.FORMAT
        try:
            payload = torch.load(Path(path), map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as exc:  # a corrupt or foreign file
            raise ValueError(f"path: {path} is not a {fmt} file ({exc})") from exc
        if not isinstance(payload, dict) or payload.get("format") != fmt:
            raise ValueError(f"path: {path} is not a {fmt} file (missing format header)")
        if payload.get("version") != cls.FORMAT_VERSION:
            raise ValueError(
                f"path: {path} has format version {payload.get('version')}, "
                f"expected {cls.FORMAT_VERSION}"
            )
        return payload

    def load(self: T, path: str | os.PathLike[str]) -> T:
        """Load weights, optimizer state and frozen flag saved by :meth:`save` into this model.

        Raises:
            ValueError: the file is not a saved predictor of this kind, or its config
                differs from this model's (the differing fields are named).
        """
        payload = self._read(path)
        mine, theirs = self.config(), dict(payload["config"])
        diff = {k: (theirs.get(k), mine.get(k)) for k in mine if theirs.get(k) != mine.get(k)}
        if diff:
            detail = ", ".join(
                f"{k}: file has {a!r}, model has {b!r}" for k, (a, b) in diff.items()
            )
            raise ValueError(f"config mismatch loading {path}: {detail}")
        self.net.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.updates = int(payload["updates"])
        self.freeze() if payload["frozen"] else self.unfreeze()
        return self

    @classmethod
    def from_file(cls: type[T], path: str | os.PathLike[str]) -> T:
        """Build a predictor with the configuration stored in ``path`` and load it."""
        return cls(**cls._read(path)["config"]).load(path)

    def freeze(self: T) -> T:
        """Stop learning: ``update`` returns ``{}``; parameters need no gradient."""
        self.frozen = True
        self.net.requires_grad_(False)
        return self

    def unfreeze(self: T) -> T:
        """Resume learning via ``update``."""
        self.frozen = False
        self.net.requires_grad_(True)
        return self
