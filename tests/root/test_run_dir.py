"""A run directory: one writer at a time, a metrics log that survives resumes, nothing
left behind by a rejected run, final files written atomically."""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bystander.atomic import RunDirBusyError, RunDirLock
from bystander.cli import main

TINY = ["--n-envs", "4", "--set", "train.hyperparams.n_steps=64",
        "--set", "train.hyperparams.batch_size=64", "--set", "train.tensorboard=false",
        "--no-evaluate"]  # fmt: skip


def _steps(run_dir: Path) -> list[int]:
    with open(run_dir / "logs" / "progress.csv", newline="") as f:
        return [int(float(r["time/total_timesteps"])) for r in csv.DictReader(f)]


def test_resume_keeps_every_row_of_the_metrics_log(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "--timesteps", "1024", "--run-dir", str(run), *TINY]) == 0
    before = _steps(run)
    assert before[0] == 256 and before[-1] == 1024
    assert main(["train", "--resume", str(run), "--timesteps", "2048", *TINY]) == 0
    after = _steps(run)
    assert after[: len(before)] == before  # nothing before the resume is lost
    assert after == list(range(256, 2048 + 1, 256))  # every rollout once, in order


def test_resume_drops_rows_written_after_the_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "--timesteps", "1024", "--run-dir", str(run), *TINY]) == 0
    log = run / "logs" / "progress.csv"
    lines = log.read_text().splitlines()
    # a run that went on past its last checkpoint, then died mid-row
    log.write_text("\n".join([*lines, lines[-1].replace("1024", "1280"), lines[-1][:7]]) + "\n")
    ckpt = sorted((run / "checkpoints").glob("step_*"))[-1]
    assert ckpt.name.endswith("1024")
    assert main(["train", "--resume", str(ckpt), "--timesteps", "1536", *TINY]) == 0
    assert _steps(run) == list(range(256, 1536 + 1, 256))


def test_a_second_writer_is_refused_naming_the_holder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from bystander.atomic import RunDirLock
            lock = RunDirLock({str(run)!r})
            print("held", flush=True)
            sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirBusyError, match=rf"in use by .*\"pid\": {holder.pid}"):
            RunDirLock(run)
        assert main(["train", "--timesteps", "256", "--run-dir", str(run), *TINY]) == 2
        assert not (run / "config.yaml").exists()  # the refused run wrote nothing
    finally:
        holder.communicate("")
    # the holder is gone, so is its lock (however it ended)
    with RunDirLock(run) as lock:
        assert lock.held


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c",
         f"from bystander.atomic import RunDirLock; l = RunDirLock({str(run)!r}); "
         "print('held', flush=True); import time; time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "held"
    proc.kill()
    proc.wait()
    RunDirLock(run).release()


def test_a_rejected_run_leaves_no_run_directory(tmp_path: Path) -> None:
    run = tmp_path / "never"
    rc = main(["train", "--run-dir", str(run), "--set", "env.config.dt=100", *TINY])
    assert rc == 2 and not run.exists()


def test_a_truncated_model_is_refused_with_its_path(tmp_path: Path) -> None:
    from bystander.agents.training import load_policy

    run = tmp_path / "run"
    assert main(["train", "--timesteps", "256", "--run-dir", str(run), *TINY]) == 0
    model = run / "model.zip"
    model.write_bytes(model.read_bytes()[:500])
    with pytest.raises(ValueError, match=r"model\.zip.*not a loadable"):
        load_policy(run)


@pytest.mark.parametrize(
    "cmd",
    [["render", "{run}", "--out", "{blocker}/ep.gif", "--max-steps", "3"],
     ["evaluate", "{run}", "--csv-dir", "{blocker}/csv", "--episodes", "1"]],
    ids=["render-out", "evaluate-csv-dir"],
)  # fmt: skip
def test_an_output_path_under_a_regular_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cmd: list[str]
) -> None:
    run = tmp_path / "run"
    assert main(["train", "--timesteps", "256", "--run-dir", str(run), *TINY]) == 0
    blocker = tmp_path / "file"
    blocker.write_text("x")
    capsys.readouterr()
    rc = main([c.format(run=run, blocker=blocker) for c in cmd])
    err = capsys.readouterr().err
    assert rc == 2 and f"bystander {cmd[0]}: error:" in err and str(blocker) in err


def test_a_run_rejected_in_a_new_default_directory_leaves_nothing(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    rc = main(["train", "--set", f"runs_dir={runs}", "--predictor", "frozen",
               "--predictor-path", str(tmp_path / "missing.pt"), *TINY])  # fmt: skip
    assert rc == 2 and list(runs.iterdir()) == []


def test_two_new_default_directories_in_one_second_do_not_collide(tmp_path: Path) -> None:
    from bystander.atomic import claim_run_dir

    a, lock_a, _ = claim_run_dir(None, tmp_path, "x")
    b, lock_b, _ = claim_run_dir(None, tmp_path, "x")
    assert a != b and a.is_dir() and b.is_dir()
    lock_a.release()
    lock_b.release()
