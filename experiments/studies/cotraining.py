"""Study 3: fixed against co-trained observers (driving).

The same shaping-constrained ego is trained against four kinds of bystander
predictor: ``constant_velocity`` (fixed, analytic), ``frozen`` (a learned predictor
pretrained on scripted traffic, never updated), ``cotrained`` (a learned predictor
from scratch, updated from every rollout: the GAN-like loop) and
``cotrained_pretrained`` (the pretrained one, then co-trained). Each ego is
evaluated against its own predictor (for co-trained runs, the predictor at the end
of training: the cost it actually pays) and against a common yardstick (constant
velocity), so "more predictable" is comparable across kinds. The training curves
of the observers' error show whether ego and predictor converge or chase each other.

    python experiments/studies/cotraining.py --preset small --workers 2
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import studylib as sl  # noqa: E402

from bystander.sweeps import Trial, aggregate, markdown_table, write_csv  # noqa: E402

NAME = "cotraining"
TITLE = "Study 3: fixed vs co-trained observers (driving)"
TRIAL_FN = "studylib:driving_trial"
KINDS = ("constant_velocity", "frozen", "cotrained", "cotrained_pretrained")
METRICS = ("success", "time_to_destination_s", "ade", "cv_ade", "cost_predictability",
           "cv_cost_predictability", "train_error_trend", "train_error_last")  # fmt: skip


def pretrained_path(results_dir: Path) -> Path:
    """Where :func:`prepare` writes the pretrained predictor."""
    return (results_dir / "pretrained_predictor.pt").resolve()


def prepare(preset: dict[str, Any], results_dir: Path) -> None:
    """Pretrain the learned predictor once (``experiments/pretrain_predictor.py``)."""
    kinds = sl.section(preset, NAME)["kinds"]
    path = pretrained_path(results_dir)
    if path.is_file() or not any(k in ("frozen", "cotrained_pretrained") for k in kinds):
        return
    sys.path.insert(0, str(sl.REPO / "experiments"))
    import pretrain_predictor

    p = sl.section(preset, NAME).get("pretrain", {})
    argv = ["--train-episodes", str(p.get("train_episodes", 20)),
            "--test-episodes", str(p.get("test_episodes", 5)),
            "--epochs", str(p.get("epochs", 5)), "--out", str(path)]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()) as out:
        res = pretrain_predictor.main(argv)
    (results_dir / "pretrain_log.txt").write_text(out.getvalue(), encoding="utf-8")
    (results_dir / "pretrain.json").write_text(json.dumps(res, default=float, indent=1))


def build_trials(preset: dict[str, Any]) -> list[Trial]:
    """Predictor kinds x seeds, shaping weight ``cotraining.weight``."""
    s = sl.section(preset, NAME)
    out_dir = sl.results_dir_for(NAME, preset, preset.get("_out"))
    path = pretrained_path(out_dir)
    trials = []
    for seed in sl.seeds(preset, NAME):
        for kind in s["kinds"]:
            if kind not in KINDS:
                raise ValueError(f"preset cotraining.kinds: expected one of {KINDS}, got {kind!r}")
            extra = ["constraint.mode=shaping", f"constraint.weight={float(s['weight'])}"]
            extra += [str(x) for x in s.get("set", [])]
            if kind == "constant_velocity":
                extra.append("predictor.kind=constant_velocity")
            elif kind == "frozen":
                extra += ["predictor.kind=frozen", f"predictor.path={path}"]
            elif kind == "cotrained":
                extra.append("predictor.kind=cotrained")
            else:
                extra += ["predictor.kind=cotrained", f"predictor.path={path}"]
            ov = sl.driving_overrides(preset, extra, NAME)
            ov["eval_extra"] = {"cv": ["predictor.kind=constant_velocity", "predictor.path=null"]}
            trials.append(Trial(NAME, {"predictor": kind}, ov, seed))
    return trials


def _trend(curve: dict[str, list[float]]) -> tuple[float, float]:
    """Slope of the observers' training error per 1000 env steps over the second half
    of training, and its last value."""
    e = np.asarray(curve.get("prediction_error") or [], float)
    s = np.asarray(curve.get("steps") or [], float)[: len(e)]
    ok = np.isfinite(e) & np.isfinite(s)
    e, s = e[ok], s[ok]
    if len(e) < 3:
        return float("nan"), float(e[-1]) if len(e) else float("nan")
    h = len(e) // 2
    slope = float(np.polyfit(s[h:] / 1000.0, e[h:], 1)[0]) if len(e) - h >= 2 else float("nan")
    return slope, float(e[-1])


def report(records: list[dict[str, Any]], preset: dict[str, Any], results_dir: Path) -> dict:
    for r in records:
        slope, last = _trend(r["metrics"].get("curve", {}))
        r["metrics"]["train_error_trend"] = slope
        r["metrics"]["train_error_last"] = last
    rows = aggregate(records, metrics=list(METRICS))
    sl.pool_rate_ci(rows, records)
    order = {k: i for i, k in enumerate(KINDS)}
    rows.sort(key=lambda r: order.get(r["predictor"], 99))
    write_csv(rows, results_dir / "results.csv")

    p = sl.plt()
    fig, axes = p.subplots(1, 2, figsize=(10, 4))
    for i, kind in enumerate(KINDS):
        sub = [r for r in rows if r["predictor"] == kind]
        sl.errorbar(axes[0], sub, "ade", "success", label=f"{kind} (own predictor)",
                    fmt="o", color=f"C{i}")  # fmt: skip
        sl.errorbar(axes[0], sub, "cv_ade", "success", label=f"{kind} (const. velocity)",
                    fmt="x", color=f"C{i}")  # fmt: skip
        for r in (r for r in records if r["trial"]["point"]["predictor"] == kind):
            c = r["metrics"].get("curve", {})
            if c.get("steps") and c.get("prediction_error"):
                axes[1].plot(c["steps"][: len(c["prediction_error"])], c["prediction_error"],
                             color=f"C{i}", alpha=0.8,
                             label=f"{kind} s{r['trial']['seed']}")  # fmt: skip
    sl.limit_x(axes[0], rows, "ade", "cv_ade")
    axes[0].set_ylim(-0.05, 1.05)
    axes[0].set_xlabel("observers' mean ADE [m]")
    axes[0].set_ylabel("success rate")
    axes[0].set_title("utility vs predictability by observer model")
    axes[1].set_xlabel("env steps")
    axes[1].set_ylabel("observers' prediction error in training [m]")
    axes[1].set_title("do ego and observers chase each other?")
    for ax in axes:
        ax.grid(alpha=0.3)
        sl.legend(ax, fontsize=6)
    sl.save(fig, results_dir / "cotraining.png")

    cols = [("predictor", "predictor"), ("seeds", "n_seeds"), ("success", "success"),
            ("time to dest. [s]", "time_to_destination_s"),
            ("ADE own predictor [m]", "ade"), ("ADE const. velocity [m]", "cv_ade"),
            ("episode cost (own)", "cost_predictability"),
            ("train error trend [m / 1k steps]", "train_error_trend"),
            ("train error, last rollout [m]", "train_error_last")]  # fmt: skip
    ci = tuple(k for _, k in cols[2:])
    sections = [
        "![cotraining](cotraining.png)", "",
        "ADE own predictor: the error of the predictor the ego trained against (for "
        "co-trained runs, as it was at the end of training). ADE const. velocity: the same "
        "ego scored by a constant-velocity predictor (a common yardstick). Train error "
        "trend: slope of the observers' error over the second half of training (negative: "
        "converging; positive or sign-changing across seeds: chasing).", "",
        markdown_table(rows, cols, ci=ci, digits=3),
    ]  # fmt: skip
    sl.write_page(results_dir, TITLE, NAME, preset, sections)
    return {"by_predictor": [{k: r.get(k) for k in ("predictor", "success", "ade", "cv_ade",
                                                     "train_error_trend")} for r in rows]}  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(sl.main(sys.modules[__name__]))
