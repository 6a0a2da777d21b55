"""Study 1: the utility-predictability trade-off frontier in driving.

Sweeps the shaping weight (``r - w * cost``) and, separately, the Lagrangian budget
(Safe RLHF log-lambda ascent), several seeds each. Every trained ego is evaluated
on the same held-out episodes: utility = success rate, time to destination [s] and
task return; predictability = the observers' mean ADE [m] (constant-velocity
predictor, the cost the ego pays). The page shows both sweeps in the (ADE, success)
plane with 95 % CIs over seeds and the Pareto frontier, and the *alignment tax*:
the success rate lost relative to the unconstrained ego (weight 0) at three
predictability levels (ADE targets interpolated along the frontier).

    python experiments/studies/frontier.py --preset small --workers 2
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import studylib as sl  # noqa: E402

from bystander.sweeps import Trial, aggregate, markdown_table, pareto_front, write_csv  # noqa: E402

NAME = "frontier"
TITLE = "Study 1: utility-predictability frontier (driving)"
TRIAL_FN = "studylib:driving_trial"
TAX_FRACTIONS = (0.25, 0.5, 1.0)
"""Where the alignment tax is read: fractions of the way from the unconstrained ego's
ADE down to the most predictable ego's."""
METRICS = ("success", "time_to_destination_s", "task_return", "ade", "cost_predictability",
           "collision", "lambda", "final_cost", "final_cost_per_step")  # fmt: skip


def _budget_unit(preset: dict[str, Any]) -> str:
    """The Lagrangian budgets' ``constraint.cost_normalization`` (preset
    ``frontier.cost_normalization``, default ``sum``), checked."""
    from bystander.envs.constraints import COST_NORMALIZATIONS

    norm = sl.section(preset, NAME).get("cost_normalization", "sum")
    if norm not in COST_NORMALIZATIONS:
        raise ValueError(
            f"preset frontier.cost_normalization: expected one of {COST_NORMALIZATIONS}, "
            f"got {norm!r}"
        )
    return norm


def build_trials(preset: dict[str, Any]) -> list[Trial]:
    """Shaping weights x seeds and Lagrangian budgets x seeds.

    The budget points use ``frontier.cost_normalization`` (``sum``: metres per episode,
    ``per_step``: metres per env step) and the multiplier settings
    ``frontier.lagrangian_set`` (config overrides, e.g. ``constraint.lambda_lr=5.0``).
    """
    s = sl.section(preset, NAME)
    norm = _budget_unit(preset)
    lag_set = [str(x) for x in s.get("lagrangian_set", [])]
    trials = []
    for seed in sl.seeds(preset, NAME):
        for w in s["weights"]:
            mode = "none" if float(w) == 0.0 else "shaping"
            extra = [f"constraint.mode={mode}", f"constraint.weight={float(w)}"]
            trials.append(Trial(NAME, {"sweep": "shaping", "value": float(w)},
                                sl.driving_overrides(preset, extra), seed))  # fmt: skip
        for b in s.get("budgets", []):
            extra = ["constraint.mode=lagrangian", f"constraint.budget={float(b)}",
                     f"constraint.cost_normalization={norm}", *lag_set]  # fmt: skip
            trials.append(Trial(NAME, {"sweep": "lagrangian", "value": float(b)},
                                sl.driving_overrides(preset, extra), seed))  # fmt: skip
    return trials


def alignment_tax(rows: list[dict[str, Any]], baseline: dict[str, Any] | None,
                  levels: list[float]) -> list[dict[str, float]]:  # fmt: skip
    """Success lost against the unconstrained ego at ADE targets ``levels`` [m].

    The success reachable at a target ADE is read off the Pareto frontier of all
    points (linear interpolation); the tax is ``baseline success - that success``
    (positive: predictability costs utility). Targets outside the frontier's ADE
    range give NaN.
    """
    front = pareto_front(rows, maximize="success", minimize="ade")
    out = []
    for level in levels:
        succ = sl.interp_at(front, "ade", "success", level)
        # A target above the frontier's largest ADE is met by its least predictable point.
        if front and not math.isfinite(succ) and level >= front[-1]["ade"]:
            succ = front[-1]["success"]
        base = baseline["success"] if baseline else math.nan
        out.append({"ade_target": level, "success_at_target": succ, "baseline_success": base,
                    "tax": base - succ if math.isfinite(succ) else math.nan})  # fmt: skip
    return out


def report(records: list[dict[str, Any]], preset: dict[str, Any], results_dir: Path) -> dict:
    rows = aggregate(records, metrics=list(METRICS))
    sl.pool_rate_ci(rows, records)
    rows.sort(key=lambda r: (r["sweep"], r["value"]))
    write_csv(rows, results_dir / "results.csv")
    base = next((r for r in rows if r["sweep"] == "shaping" and r["value"] == 0.0), None)
    front = pareto_front(rows, maximize="success", minimize="ade")
    for r in rows:
        r["pareto"] = "yes" if r in front else ""
    # predictability levels: a quarter, half and all of the way from the baseline's ADE
    # down to the most predictable point's (written as lo + (1 - f) * span so that f = 1
    # is exactly that point's ADE, not a rounding error below the frontier's range)
    ades = [r["ade"] for r in rows if sl.finite(r.get("ade"))]
    levels: list[float] = []
    if base is not None and ades and sl.finite(base.get("ade")):
        lo = min(ades)
        levels = [lo + (1.0 - f) * (base["ade"] - lo) for f in TAX_FRACTIONS]
    tax = alignment_tax(rows, base, levels)
    write_csv(tax, results_dir / "alignment_tax.csv")

    p = sl.plt()
    fig, axes = p.subplots(1, 2, figsize=(10, 4))
    for sweep, marker in (("shaping", "o"), ("lagrangian", "s")):
        sub = [r for r in rows if r["sweep"] == sweep]
        sl.errorbar(axes[0], sub, "ade", "success", label=f"{sweep} (label: "
                    f"{'weight' if sweep == 'shaping' else 'budget'})", annotate="value",
                    fmt=marker)  # fmt: skip
        sl.errorbar(axes[1], sub, "ade", "time_to_destination_s", label=sweep,
                    annotate="value", fmt=marker)  # fmt: skip
    if front:
        axes[0].plot([r["ade"] for r in front], [r["success"] for r in front], "k--", lw=1,
                     label="Pareto frontier")  # fmt: skip
    for ax in axes:
        sl.limit_x(ax, rows, "ade")
    axes[0].set_ylim(-0.05, 1.05)
    axes[0].set_xlabel("observers' mean ADE [m] (lower = more predictable)")
    axes[0].set_ylabel("success rate")
    axes[0].set_title("utility vs predictability")
    axes[1].set_xlabel("observers' mean ADE [m]")
    axes[1].set_ylabel("time to destination [s] (successful episodes)")
    axes[1].set_title("time cost of predictability")
    for ax in axes:
        ax.grid(alpha=0.3)
        sl.legend(ax, fontsize=7)
    sl.save(fig, results_dir / "frontier.png")

    cols = [("sweep", "sweep"), ("weight / budget", "value"), ("seeds", "n_seeds"),
            ("success", "success"), ("time to dest. [s]", "time_to_destination_s"),
            ("task return", "task_return"), ("ADE [m]", "ade"),
            ("episode pred. cost", "cost_predictability"), ("collision", "collision"),
            ("Pareto", "pareto")]  # fmt: skip
    ci = ("success", "time_to_destination_s", "task_return", "ade", "cost_predictability",
          "collision")  # fmt: skip
    tax_rows = [{k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in t.items()} for t in tax]
    sections = [
        "![frontier](frontier.png)", "",
        "Each point: one weight (shaping) or budget (Lagrangian), mean over seeds; bars: "
        "success 95 % Wilson interval over the pooled evaluation episodes, other metrics "
        "+-1 standard error over seeds (the table gives 95 % intervals); the same held-out "
        "evaluation episodes for every ego. Weight 0 is "
        "the unconstrained ego. Lagrangian budgets are in "
        + ("metres of observer ADE per env step (`constraint.cost_normalization=per_step`)"
           if _budget_unit(preset) == "per_step" else "metres of observer ADE summed over "
           "an episode")
        + ".", "",
        markdown_table(rows, cols, ci=ci), "",
        "## Alignment tax", "",
        "Success lost against the unconstrained ego at three predictability levels (ADE "
        "targets a quarter and half of the way from the unconstrained ego's ADE to the "
        "most predictable ego's, and at it), read off the Pareto frontier.", "",
        markdown_table(tax_rows, [("ADE target [m]", "ade_target"),
                                  ("success at target", "success_at_target"),
                                  ("unconstrained success", "baseline_success"),
                                  ("tax", "tax")]),
    ]  # fmt: skip
    sl.write_page(results_dir, TITLE, NAME, preset, sections)
    return {
        "baseline_success": base["success"] if base else math.nan,
        "baseline_ade": base["ade"] if base else math.nan,
        "alignment_tax": tax,
        "pareto_points": len(front),
    }


if __name__ == "__main__":
    raise SystemExit(sl.main(sys.modules[__name__]))
