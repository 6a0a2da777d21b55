"""The package's shape, checked: imports point downward, modules stay readable.

- ``bystander.envs`` (the core and the environments) imports neither domain package
  (``bystander.agents``, ``bystander.llm``), and the core modules of ``envs/`` import
  no environment (``envs/intersection``, the text env).
- ``bystander.agents`` (driving) and ``bystander.llm`` (text) never import each other.
- No library module is over 600 lines (the simulator and its numba kernels: 900), and
  no class is defined inside a function (such classes cannot be pickled by reference).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"envs": "bystander.envs", "agents": "bystander.agents", "llm": "bystander.llm"}
LIBRARY = ["envs", "agents", "llm", "bystander"]
# modules of envs/ that belong to one domain (the rest of envs/ is the shared core)
DOMAIN_MODULES = ("intersection", "intersection_v0", "text_v0", "text_tasks", "text_tokens")
LONG_MODULES = {"envs/intersection/sim.py": 900, "envs/intersection/kernels.py": 900}


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _imports(path: Path) -> list[str]:
    """Every module named by an import statement in ``path`` (lazy ones included)."""
    out: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
            out.extend(f"{node.module}.{a.name}" for a in node.names)
    return out


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("envs", ("bystander.agents", "bystander.llm")),
        ("agents", ("bystander.llm",)),
        ("llm", ("bystander.agents",)),
    ],
)
def test_imports_point_downward(folder: str, forbidden: tuple[str, ...]) -> None:
    bad = [
        f"{_rel(p)} imports {name}"
        for p in _modules(folder)
        for name in _imports(p)
        if name.startswith(forbidden)
    ]
    assert bad == []


def test_the_core_imports_no_environment() -> None:
    domain = tuple(f"bystander.envs.{m}" for m in DOMAIN_MODULES)
    core = [
        p
        for p in _modules("envs")
        if p.relative_to(ROOT / "envs").parts[0].removesuffix(".py") not in DOMAIN_MODULES
    ]
    bad = [f"{_rel(p)} imports {n}" for p in core for n in _imports(p) if n.startswith(domain)]
    assert bad == []


def test_no_library_module_is_too_long() -> None:
    long = {}
    for folder in LIBRARY:
        for p in _modules(folder):
            n = len(p.read_text(encoding="utf-8").splitlines())
            if n > LONG_MODULES.get(_rel(p), 600):
                long[_rel(p)] = n
    assert long == {}


def test_no_class_is_defined_inside_a_function() -> None:
    bad = []
    for folder in LIBRARY:
        for p in _modules(folder):
            for fn in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
                if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    bad += [
                        f"{_rel(p)}:{c.lineno} {c.name} in {fn.name}"
                        for c in ast.walk(fn)
                        if isinstance(c, ast.ClassDef)
                    ]
    assert bad == []


def test_every_library_module_declares_its_public_names() -> None:
    missing = [
        _rel(p)
        for folder in LIBRARY
        for p in _modules(folder)
        if p.name != "__init__.py" and "__all__" not in p.read_text(encoding="utf-8")
    ]
    assert missing == []
