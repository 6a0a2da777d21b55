"""atomic_open: all or nothing."""

from __future__ import annotations

import pytest

from bystander.atomic import atomic_open


def test_writes_and_replaces(tmp_path) -> None:
    path = tmp_path / "sub" / "f.txt"
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write("one")
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write("two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["f.txt"]


def test_crash_mid_write_keeps_the_old_file(tmp_path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_open(path) as f:
        f.write(b"half")
        raise RuntimeError("crash")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_bad_mode() -> None:
    with pytest.raises(ValueError, match="mode"):
        atomic_open("x", "a").__enter__()
