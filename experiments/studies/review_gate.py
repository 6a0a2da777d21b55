"""Study 5: the review gate (driving).

An unconstrained ego is trained once per seed, then evaluated on the same held-out
episodes without a gate and behind :class:`bystander.envs.review.ReviewGate` at each
threshold (``veto`` mode by default: an action whose estimated cost, observers'
surprise [m] plus collision risk, exceeds the threshold is replaced by the
reviewer's cheapest safe fallback; no gradient, decision time only). Reported per
threshold: the escalation rate (gated steps / steps), utility (success, time to
destination) and predictability (observers' ADE). The gate is then compared with
training-time constraints at equal predictability: the success the shaping sweep of
Study 1 (same preset) reaches at the gate's ADE, interpolated along that sweep.

    python experiments/studies/review_gate.py --preset small
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import studylib as sl  # noqa: E402

from bystander.sweeps import Trial, aggregate, markdown_table, write_csv  # noqa: E402

NAME = "review_gate"
TITLE = "Study 5: the review gate (driving)"
TRIAL_FN = "studylib:driving_trial"
KEYS = ("success", "time_to_destination_s", "ade", "escalation_rate", "cost_predictability",
        "collision")  # fmt: skip


def _label(t: float) -> str:
    return f"thr{float(t):g}"


def build_trials(preset: dict[str, Any]) -> list[Trial]:
    """One unconstrained ego per seed, evaluated behind the gate at every threshold."""
    s = sl.section(preset, NAME)
    mode = s.get("mode", "veto")
    if mode not in ("veto", "escalate"):
        raise ValueError(f"preset review_gate.mode: expected veto|escalate, got {mode!r}")
    trials = []
    for seed in sl.seeds(preset, NAME):
        ov = sl.driving_overrides(preset, ["constraint.mode=none"], NAME)
        ov["eval_extra"] = {
            _label(t): ["review.enabled=true", f"review.threshold={float(t)}",
                        f"review.mode={mode}", "train.vec_env=dummy"]
            for t in s["thresholds"]
        }  # fmt: skip
        trials.append(Trial(NAME, {"ego": "unconstrained", "mode": mode}, ov, seed))
    return trials


def _rows(records: list[dict[str, Any]], thresholds: list[float]) -> list[dict[str, Any]]:
    """Per threshold (and ``inf`` = no gate): records reshaped, then aggregated (rates:
    Wilson interval over the pooled evaluation episodes)."""
    flat = []
    for r in records:
        m = r["metrics"]
        for t in [math.inf, *thresholds]:
            prefix = "" if t == math.inf else f"{_label(t)}_"
            if f"{prefix}success" not in m:
                continue
            metrics = {k: m.get(f"{prefix}{k}", math.nan) for k in KEYS}
            steps = m.get(f"{prefix}steps", math.nan)
            esc = m.get(f"{prefix}escalations", math.nan)
            if prefix:
                metrics["escalation_rate"] = esc / steps if steps and sl.finite(steps) else math.nan
            flat.append({"status": "ok", "metrics": metrics,
                         "trial": {"point": {"threshold": t},
                                   "overrides": r["trial"]["overrides"]}})  # fmt: skip
    rows = aggregate(flat, metrics=list(KEYS))
    sl.pool_rate_ci(rows, flat)
    return rows


def _shaping_rows(results_dir: Path) -> list[dict[str, Any]]:
    path = results_dir.parent / "frontier" / "results.csv"
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["sweep"] == "shaping"]
    return [{"value": float(r["value"]), "ade": float(r["ade"] or "nan"),
             "success": float(r["success"] or "nan")} for r in rows]  # fmt: skip


def report(records: list[dict[str, Any]], preset: dict[str, Any], results_dir: Path) -> dict:
    thresholds = [float(t) for t in sl.section(preset, NAME)["thresholds"]]
    rows = _rows(records, thresholds)
    shaping = _shaping_rows(results_dir)
    for r in rows:
        r["gate"] = "no gate" if r["threshold"] == math.inf else f"{r['threshold']:g}"
        r["shaping_success_at_same_ade"] = (
            sl.interp_at(shaping, "ade", "success", r["ade"]) if shaping else math.nan
        )
    write_csv(rows, results_dir / "results.csv")

    p = sl.plt()
    fig, axes = p.subplots(1, 2, figsize=(10, 4))
    gated = [dict(r, threshold=r["threshold"]) for r in rows if r["threshold"] != math.inf]
    sl.errorbar(axes[0], gated, "threshold", "escalation_rate", label="escalation rate", fmt="o-")
    sl.errorbar(axes[0], gated, "threshold", "success", label="success", fmt="s-")
    base = next((r for r in rows if r["threshold"] == math.inf), None)
    if base is not None and sl.finite(base.get("success")):
        axes[0].axhline(base["success"], color="C1", ls=":", label="success, no gate")
    axes[0].set_xscale("log")
    axes[0].set_xticks(thresholds, [f"{t:g}" for t in thresholds])
    axes[0].minorticks_off()
    axes[0].set_ylim(-0.05, 1.05)
    axes[0].set_xlabel("review threshold (estimated cost)")
    axes[0].set_ylabel("rate")
    axes[0].set_title("escalations and utility vs threshold")
    sl.errorbar(axes[1], rows, "ade", "success", annotate="gate", label="review gate", fmt="o")
    if shaping:
        sh = sorted((r for r in shaping if sl.finite(r["ade"])), key=lambda r: r["ade"])
        axes[1].plot([r["ade"] for r in sh], [r["success"] for r in sh], "k--", marker="x",
                     label="training-time shaping (Study 1)")  # fmt: skip
    sl.limit_x(axes[1], rows + shaping, "ade")
    axes[1].set_ylim(-0.05, 1.05)
    axes[1].set_xlabel("observers' mean ADE [m]")
    axes[1].set_ylabel("success rate")
    axes[1].set_title("gate vs training-time constraint")
    for ax in axes:
        ax.grid(alpha=0.3)
        sl.legend(ax, fontsize=7)
    sl.save(fig, results_dir / "review_gate.png")

    cols = [("threshold", "gate"), ("seeds", "n_seeds"), ("escalation rate", "escalation_rate"),
            ("success", "success"), ("time to dest. [s]", "time_to_destination_s"),
            ("ADE [m]", "ade"), ("collision", "collision"),
            ("shaping success at same ADE", "shaping_success_at_same_ade")]  # fmt: skip
    ci = ("escalation_rate", "success", "time_to_destination_s", "ade", "collision")
    sections = [
        "![review gate](review_gate.png)", "",
        f"Gate mode `{sl.section(preset, NAME).get('mode', 'veto')}`; the same trained "
        "(unconstrained) egos behind every threshold. Shaping success at same ADE: Study 1's "
        "shaping sweep interpolated at this row's ADE (n/a: outside its range or Study 1 not "
        "run with this preset).", "",
        markdown_table(rows, cols, ci=ci, digits=3),
    ]  # fmt: skip
    sl.write_page(results_dir, TITLE, NAME, preset, sections)
    return {"by_threshold": [{k: r.get(k) for k in ("gate", "escalation_rate", "success", "ade",
                                                     "shaping_success_at_same_ade")}
                             for r in rows]}  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(sl.main(sys.modules[__name__]))
