"""The code folders install under the ``bystander`` namespace, never as bare packages."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"envs": "bystander.envs", "agents": "bystander.agents", "llm": "bystander.llm"}


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_subpackage_is_listed_in_pyproject() -> None:
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = {"bystander"}
    for folder, name in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *rel)))
    assert found <= listed, f"add these to [tool.setuptools] packages: {sorted(found - listed)}"


@pytest.mark.parametrize("name", sorted(FOLDERS.values()))
def test_namespaced_import(name: str) -> None:
    module = importlib.import_module(name)
    folder = name.split(".")[-1]
    assert Path(module.__file__).parent == ROOT / folder


def test_bare_folder_names_are_not_installed() -> None:
    for bare in FOLDERS:
        if bare in sys.modules:
            continue
        spec = importlib.util.find_spec(bare)
        # Only the repository root on sys.path (pytest's rootdir) may expose them.
        assert spec is None or Path(spec.origin).parent.parent == ROOT, spec


def test_gym_ids_registered_on_import() -> None:
    import gymnasium

    import bystander.envs  # noqa: F401

    assert "bystander/Intersection-v0" in gymnasium.registry
    assert "bystander/Text-v0" in gymnasium.registry
