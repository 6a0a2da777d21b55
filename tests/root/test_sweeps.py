"""Sweep machinery: trials, atomic per-trial records, resume, backends, aggregation."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from bystander.sweeps import (
    Trial,
    aggregate,
    atomic_write_json,
    is_done,
    load_results,
    markdown_table,
    pareto_front,
    run_sweep,
    trial_path,
    write_csv,
)

HERE = str(Path(__file__).resolve().parent)


# Trial functions used by the spawned workers (imported as "test_sweeps:...").
def square_trial(trial: Trial, trial_dir: Path) -> dict:
    """Metric = x^2 + seed; appends one line to ``<results>/calls.log`` per call."""
    with open(trial_dir.parent.parent / "calls.log", "a", encoding="utf-8") as f:
        f.write(trial.trial_id + "\n")
    if trial.overrides.get("fail_flag") and Path(trial.overrides["fail_flag"]).exists():
        raise RuntimeError("interrupted")
    x = float(trial.point["x"])
    return {"y": x * x + trial.seed, "curve": [1.0, 2.0]}


def _trials(n: int = 4, seeds: tuple[int, ...] = (0,), **ov) -> list[Trial]:
    return [Trial("toy", {"x": float(i)}, dict(ov), s) for s in seeds for i in range(n)]


def _calls(root: Path) -> list[str]:
    p = root / "calls.log"
    return p.read_text().split() if p.is_file() else []


def test_trial_id_is_stable_distinct_and_validated():
    a = Trial("s", {"w": 0.1, "mode": "shaping"}, ["constraint.weight=0.1"], 0)
    b = Trial("s", {"w": 0.1, "mode": "shaping"}, ["constraint.weight=0.1"], 0)
    c = Trial("s", {"w": 0.1, "mode": "shaping"}, ["constraint.weight=0.1"], 1)
    d = Trial("s", {"w": 0.1, "mode": "shaping"}, ["constraint.weight=0.2"], 0)
    assert a.trial_id == b.trial_id
    assert len({a.trial_id, c.trial_id, d.trial_id}) == 3
    assert a.trial_id.startswith("w=0.1_mode=shaping_s0_")
    assert Trial.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    with pytest.raises(ValueError, match="study"):
        Trial("", {}, [], 0)
    with pytest.raises(TypeError, match="point"):
        Trial("s", [1], [], 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="seed"):
        Trial("s", {}, [], 1.5)  # type: ignore[arg-type]


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="backend"):
        run_sweep(_trials(1), square_trial, tmp_path, backend="slurm")
    with pytest.raises(ValueError, match="workers"):
        run_sweep(_trials(1), square_trial, tmp_path, workers=0)
    with pytest.raises(TypeError, match="module:function"):
        run_sweep(_trials(1), square_trial, tmp_path, backend="local", workers=2)
    with pytest.raises(ValueError, match="duplicate"):
        run_sweep(_trials(1) * 2, square_trial, tmp_path, backend="serial")


def test_serial_sweep_writes_records_and_resumes_without_rerunning(tmp_path):
    trials = _trials(4)
    # "interrupted" after two trials: only two run now
    recs = run_sweep(trials, square_trial, tmp_path, backend="serial", max_trials=2, log=None)
    assert [r["status"] for r in recs] == ["ok", "ok", "pending", "pending"]
    assert len(_calls(tmp_path)) == 2
    assert all(is_done(tmp_path, t) for t in trials[:2])
    assert not is_done(tmp_path, trials[2])
    rec = json.loads(trial_path(tmp_path, trials[1]).read_text())
    assert rec["metrics"]["y"] == 1.0 and rec["trial"]["point"] == {"x": 1.0}
    # rerun: the two finished trials are not run again
    recs = run_sweep(trials, square_trial, tmp_path, backend="serial", log=None)
    assert [r["status"] for r in recs] == ["ok"] * 4
    calls = _calls(tmp_path)
    assert len(calls) == 4 and len(set(calls)) == 4
    assert [r["metrics"]["y"] for r in recs] == [0.0, 1.0, 4.0, 9.0]
    # nothing left: a third call runs nothing; rerun=True runs everything again
    run_sweep(trials, square_trial, tmp_path, backend="serial", log=None)
    assert len(_calls(tmp_path)) == 4
    run_sweep(trials, square_trial, tmp_path, backend="serial", rerun=True, log=None)
    assert len(_calls(tmp_path)) == 8
    assert not list((tmp_path / "trials").glob(".tmp-*"))


def test_failed_trials_are_recorded_and_retried(tmp_path):
    flag = tmp_path / "fail"
    flag.write_text("x")
    trials = _trials(2, fail_flag=str(flag))
    recs = run_sweep(trials, square_trial, tmp_path, backend="serial", log=None)
    assert [r["status"] for r in recs] == ["error", "error"]
    assert "RuntimeError: interrupted" in recs[0]["error"] and "Traceback" in recs[0]["traceback"]
    assert load_results(tmp_path) == []
    flag.unlink()
    recs = run_sweep(trials, square_trial, tmp_path, backend="serial", log=None)
    assert [r["status"] for r in recs] == ["ok", "ok"]
    assert len(load_results(tmp_path)) == 2


def test_local_process_pool_backend_resumes(tmp_path):
    trials = _trials(3)
    # one trial finished before (e.g. an earlier, interrupted sweep)
    run_sweep(trials[:1], square_trial, tmp_path, backend="serial", log=None)
    recs = run_sweep(trials, "test_sweeps:square_trial", tmp_path, backend="local", workers=2,
                     sys_path=[HERE], log=None)  # fmt: skip
    assert [r["status"] for r in recs] == ["ok"] * 3
    assert [r["metrics"]["y"] for r in recs] == [0.0, 1.0, 4.0]
    calls = _calls(tmp_path)
    assert sorted(calls) == sorted(t.trial_id for t in trials)  # the first ran once only


@pytest.mark.slow
def test_ray_tune_backend_two_trials(tmp_path):
    pytest.importorskip("ray")
    pytest.importorskip("ray.tune")
    import ray

    trials = _trials(2)
    try:
        recs = run_sweep(trials, "test_sweeps:square_trial", tmp_path, backend="ray",
                         workers=2, sys_path=[HERE], log=None)  # fmt: skip
    finally:
        ray.shutdown()
    assert [r["status"] for r in recs] == ["ok", "ok"]
    assert [r["metrics"]["y"] for r in recs] == [0.0, 1.0]
    assert all(is_done(tmp_path, t) for t in trials)


def test_aggregate_mean_and_ci_over_seeds():
    recs = [
        {"status": "ok", "trial": {"point": {"w": 0.1}, "seed": s},
         "metrics": {"y": v, "z": 1.0, "curve": [1, 2]}}
        for s, v in enumerate([1.0, 2.0, 3.0])
    ] + [{"status": "ok", "trial": {"point": {"w": 0.5}, "seed": 0}, "metrics": {"y": 7.0}},
         {"status": "error", "trial": {"point": {"w": 0.9}, "seed": 0}, "metrics": {}}]  # fmt: skip
    rows = aggregate(recs)
    assert [r["w"] for r in rows] == [0.1, 0.5]
    r = rows[0]
    assert r["n_seeds"] == 3 and r["y"] == pytest.approx(2.0)
    half = 4.303 * 1.0 / math.sqrt(3)  # t(2) * sd / sqrt(n)
    assert r["y_lo"] == pytest.approx(2.0 - half) and r["y_hi"] == pytest.approx(2.0 + half)
    assert "curve" not in r  # lists are not aggregated
    assert rows[1]["y"] == 7.0 and math.isnan(rows[1]["y_lo"]) and math.isnan(rows[1]["z"])
    grouped = aggregate(recs, metrics=["y"], group_by=[])
    assert len(grouped) == 1 and grouped[0]["n_seeds"] == 4


def test_pareto_front():
    rows = [{"name": n, "s": s, "a": a} for n, s, a in
            [("A", 0.9, 0.5), ("B", 0.8, 0.3), ("C", 0.7, 0.4), ("D", 0.5, 0.1),
             ("E", 0.9, 0.6), ("F", float("nan"), 0.0)]]  # fmt: skip
    front = pareto_front(rows, maximize="s", minimize="a")
    assert [r["name"] for r in front] == ["D", "B", "A"]


def test_write_csv_markdown_and_atomic_json(tmp_path):
    rows = [{"w": 0.1, "y": 2.0, "y_lo": 1.0, "y_hi": 3.0, "n": 2},
            {"w": 0.5, "y": float("nan"), "extra": [1, 2]}]  # fmt: skip
    p = write_csv(rows, tmp_path / "r.csv")
    lines = p.read_text().splitlines()
    assert lines[0] == "w,y,y_lo,y_hi,n,extra" and len(lines) == 3
    md = markdown_table(rows, [("weight", "w"), ("y", "y")], ci=("y",))
    assert "| 0.10 | 2.00 [1.00, 3.00] |" in md and "| 0.50 | n/a |" in md
    atomic_write_json(tmp_path / "a" / "x.json", {"v": np.float32(1.5), "a": np.arange(2)})
    assert json.loads((tmp_path / "a" / "x.json").read_text()) == {"v": 1.5, "a": [0, 1]}
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "a" / "y.json", {"v": object()})
    assert not (tmp_path / "a" / "y.json").exists()
    assert not list((tmp_path / "a").glob(".tmp-*"))


if HERE not in sys.path:  # so that spawned workers (and this module) import "test_sweeps"
    sys.path.insert(0, HERE)
