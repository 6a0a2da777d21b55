"""The tiny models shipped with the package, loaded with their checksums verified.

``llm/weights/`` (installed as package data of ``bystander.llm``) holds one folder per
model (``config.json``, ``model.safetensors``), a ``manifest.json`` with the SHA-256
of every file, the command that made them (:mod:`bystander.llm.train_tiny`) and the
data seeds, and a README. :func:`load_shipped` refuses a file whose checksum differs,
naming it, so a damaged or hand-edited weight file is never used silently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from bystander.checkpointing import sha256_file
from bystander.envs.text_tokens import byte_tokenizer

__all__ = ["SHIPPED_NAMES", "ShippedWeightsError", "load_shipped", "shipped_dir", "verify_shipped"]

SHIPPED_NAMES = ("tiny-policy", "tiny-slm", "tiny-slm-heldout")
"""Names of the shipped models (``load_causal_lm`` takes them too)."""

_REGENERATE = "python -m bystander.llm.train_tiny --out llm/weights"


class ShippedWeightsError(ValueError):
    """A shipped weight file is missing from the manifest or its checksum differs."""


def shipped_dir() -> Path:
    """The folder of the shipped weights (``<package>/weights``)."""
    return Path(__file__).resolve().parent / "weights"


def verify_shipped(name: str, root: str | Path | None = None) -> dict[str, Any]:
    """Check every file of the shipped model ``name`` against ``manifest.json``.

    Returns:
        The model's manifest record (config, data seed, training time...).

    Raises:
        ValueError: ``name`` is not one of :data:`SHIPPED_NAMES`.
        FileNotFoundError: The manifest or a weight file is missing.
        ShippedWeightsError: A file's SHA-256 differs from the manifest's.
    """
    if name not in SHIPPED_NAMES:
        raise ValueError(f"name: expected one of {list(SHIPPED_NAMES)}, got {name!r}")
    root = Path(root) if root is not None else shipped_dir()
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"shipped weights: no manifest at {str(manifest_path)!r} (regenerate: {_REGENERATE})"
        )
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    files = {k: v for k, v in manifest.get("sha256", {}).items() if k.startswith(name + "/")}
    if name not in manifest.get("models", {}) or not files:
        raise ShippedWeightsError(f"shipped weights: {name!r} is not in {str(manifest_path)!r}")
    for rel, expected in sorted(files.items()):
        path = root / rel
        if not path.is_file():
            raise FileNotFoundError(
                f"shipped weights: missing file {str(path)!r} (regenerate: {_REGENERATE})"
            )
        got = sha256_file(path)
        if got != expected:
            raise ShippedWeightsError(
                f"shipped weights: {str(path)!r} has SHA-256 {got}, expected {expected} "
                f"(manifest.json); the file is damaged or was changed (regenerate: "
                f"{_REGENERATE})"
            )
    return manifest["models"][name]


def load_shipped(
    name: str, *, device: str | torch.device = "cpu", root: str | Path | None = None
) -> tuple[torch.nn.Module, Any]:
    """``(model, byte tokenizer)`` of the shipped model ``name``, checksums verified.

    The model's ``name_or_path`` is its real folder, so clients that rebuild a model
    from that path (TRL's reference model) find it.

    Raises:
        See :func:`verify_shipped`.
    """
    from transformers import GPT2LMHeadModel

    verify_shipped(name, root)
    folder = (Path(root) if root is not None else shipped_dir()) / name
    model = GPT2LMHeadModel.from_pretrained(folder)
    model.config._name_or_path = model.name_or_path = str(folder)
    model.eval()
    return model.to(device), byte_tokenizer()
