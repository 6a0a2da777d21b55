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


def test_a_kill_between_the_two_renames_of_a_checkpoint_replace_is_undone(tmp_path):
    from bystander.checkpointing import read_checkpoint_dir, write_checkpoint_dir

    final = tmp_path / "checkpoint"
    with write_checkpoint_dir(final, {"format": 1, "step": 1}) as d:
        (d / "state.bin").write_bytes(b"one")
    # what a kill after "move the old one aside" and before "move the new one in" leaves
    aside = tmp_path / ".old-killed"
    aside.mkdir()
    final.rename(aside / final.name)
    (tmp_path / ".tmp-killed").mkdir()
    assert read_checkpoint_dir(final, format_version=1, required=("state.bin",))["step"] == 1
    assert (final / "state.bin").read_bytes() == b"one"
    final.rename(aside / final.name)  # and the next write puts it back before cleaning up
    with write_checkpoint_dir(final, {"format": 1, "step": 2}) as d:
        (d / "state.bin").write_bytes(b"two")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    assert read_checkpoint_dir(final, format_version=1, required=("state.bin",))["step"] == 2


def test_a_forked_child_does_not_keep_the_run_dir_locked(tmp_path):
    import os
    import signal

    from bystander.atomic import RunDirBusyError, RunDirLock

    lock = RunDirLock(tmp_path / "run")
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child (e.g. a SubprocVecEnv worker) lives on
        import time

        os.write(ready_w, b"1")  # the at-fork hooks have run when fork() returns
        time.sleep(30)
        os._exit(0)
    assert os.read(ready_r, 1) == b"1"
    try:
        with pytest.raises(RunDirBusyError):
            RunDirLock(tmp_path / "run")  # the parent still holds it
        lock.release()  # the parent ends (as a kill -9 would close its descriptor)
        RunDirLock(tmp_path / "run").release()  # free although the child lives
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
