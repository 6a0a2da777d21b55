"""Study 2: shaping against Lagrangian; PID against plain gradient ascent on lambda.

Trains the Lagrangian ego (Safe RLHF log-lambda gradient ascent) and the
PID-Lagrangian ego (Stooke et al. 2020) at three budgets on the predictability
channel and plots the cost the multiplier sees and lambda over training against each
budget. The preset's ``lagrangian.cost_normalization`` (default ``per_step``) sets
the budget's unit: ``per_step`` = metres of observers' mean prediction error per env
step (episode cost / episode length; a step no observer scored counts 0), so the
budget does not depend on episode length; ``sum`` = metres summed over an episode.
Reports the final cost (mean of the last quarter of rollouts) against the budget,
the overshoot after the cost first reaches the budget (relative to the budget) and
lambda's reversals (oscillation). Shaping's side of the comparison is Study 1's
weight sweep: the page lists, per budget, which shaping weight's final training
cost (same unit) came closest (when Study 1's results of the same preset have it).

    python experiments/studies/lagrangian.py --preset small
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import studylib as sl  # noqa: E402

from bystander.sweeps import Trial, aggregate, markdown_table, write_csv  # noqa: E402

NAME = "lagrangian"
TITLE = "Study 2: does the Lagrangian hold the cost at its budget? (driving)"
TRIAL_FN = "studylib:driving_trial"
METRICS = ("final_cost", "final_lambda", "cost_overshoot", "lambda_reversals", "success",
           "ade", "cost_predictability")  # fmt: skip


def _variants(preset: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    """The preset's ``lagrangian.modes`` as ``(label, mode, extra overrides)``.

    An entry is a mode (``lagrangian`` or ``pid``; label = mode) or a mapping
    ``{name: label, mode: lagrangian|pid, set: [overrides]}``, e.g. the log-lambda
    ascent with and without ``constraint.lambda_min`` side by side.
    """
    out = []
    for m in sl.section(preset, NAME).get("modes", ["lagrangian", "pid"]):
        name, mode, extra = (m, m, []) if isinstance(m, str) else (
            m.get("name"), m.get("mode"), [str(x) for x in m.get("set", [])])  # fmt: skip
        if mode not in ("lagrangian", "pid") or not isinstance(name, str) or not name:
            raise ValueError(
                "preset lagrangian.modes: expected lagrangian|pid or {name, mode: "
                f"lagrangian|pid, set: [...]}}, got {m!r}"
            )
        out.append((name, mode, extra))
    if len({n for n, _, _ in out}) != len(out):
        raise ValueError(f"preset lagrangian.modes: expected distinct names, got {out!r}")
    return out


def budgets(preset: dict[str, Any]) -> list[float]:
    """The preset's budgets: ``lagrangian.budgets`` (absolute, in the cost unit) or
    ``budget_fractions`` of ``reference_cost`` (the unconstrained ego's held-out cost in
    that unit, measured by this study's ``reference`` trials; see the preset)."""
    s = sl.section(preset, NAME)
    if "budget_fractions" in s:
        ref = s.get("reference_cost")
        if not sl.finite(ref) or float(ref) <= 0:
            raise ValueError(
                f"preset lagrangian.reference_cost: expected a cost > 0 with budget_fractions, got {ref!r}"
            )
        return [round(float(f) * float(ref), 4) for f in s["budget_fractions"]]
    return [float(b) for b in s["budgets"]]


def _heldout_overrides(preset: dict[str, Any]) -> list[str]:
    """Held-out evaluation during training (``eval_every`` env steps, ``heldout_episodes``
    each), when the preset asks for it: budgets are judged on these."""
    s = sl.section(preset, NAME)
    if not s.get("eval_every"):
        return []
    return [f"eval.every={int(s['eval_every'])}",
            f"eval.heldout_episodes={int(s.get('heldout_episodes', 100))}"]  # fmt: skip


def build_trials(preset: dict[str, Any]) -> list[Trial]:
    """Modes (``lagrangian``, ``pid`` or named variants) x budgets x seeds, and with
    ``reference: true`` one unconstrained ego per seed (mode ``unconstrained``)."""
    s = sl.section(preset, NAME)
    norm = _normalization(preset)
    held = _heldout_overrides(preset)
    trials = []
    for seed in sl.seeds(preset, NAME):
        if s.get("reference"):
            extra = ["constraint.mode=none", f"constraint.cost_normalization={norm}", *held]
            trials.append(Trial(NAME, {"mode": "unconstrained", "budget": 0.0},
                                sl.driving_overrides(preset, extra, NAME), seed))  # fmt: skip
        for name, mode, own in _variants(preset):
            for b in budgets(preset):
                extra = [f"constraint.mode={mode}", f"constraint.budget={float(b)}",
                         f"constraint.cost_normalization={norm}", *held]  # fmt: skip
                extra += [str(x) for x in s.get("set", [])] + own
                trials.append(Trial(NAME, {"mode": name, "budget": float(b)},
                                    sl.driving_overrides(preset, extra, NAME), seed))  # fmt: skip
    return trials


def heldout_summary(records: list[dict[str, Any]], norm: str) -> dict[str, Any]:
    """``summary.json``: per run (mode, budget, seed) the held-out cost at each evaluation
    point (in the budget's unit), ``within_10pct_last_quarter``, ``stand_still_fraction``
    (max over evaluation points) and ``success`` (last evaluation); per mode whether it
    met the goal: every budget and seed within +-10 % in the last quarter, and a
    stand-still fraction never more than 5 points above the unconstrained ego's."""
    col = f"cost_predictability_{'per_metre' if norm == 'per_metre' else 'per_step'}"
    runs = []
    for r in sorted(records, key=lambda x: (x["trial"]["point"]["mode"],
                                            x["trial"]["point"]["budget"], x["trial"]["seed"])):  # fmt: skip
        h = r["metrics"].get("heldout") or {}
        if col not in h:
            continue
        point, steps = r["trial"]["point"], h["step"]
        run = {"mode": point["mode"], "budget": point["budget"], "seed": r["trial"]["seed"],
               "eval_costs": [[int(st), c] for st, c in zip(steps, h[col], strict=True)],
               "stand_still_fraction": max(h["stand_still_fraction"]),
               "success": h["success"][-1]}  # fmt: skip
        if point["mode"] == "unconstrained":
            run["reference_cost_last_quarter"] = sl.budget_tracking(
                steps, h[col], 1.0)["last_quarter_cost"]  # fmt: skip
        else:
            run.update(sl.budget_tracking(steps, h[col], point["budget"]))
        runs.append(run)
    limit, goal = sl.tracking_goal(runs, "unconstrained", "stand_still_fraction",
                                   "no_stand_still_phase")  # fmt: skip
    return {"cost_unit": UNITS[norm], "column": col, "stand_still_limit": limit,
            "runs": runs, "goal": goal}  # fmt: skip


def _normalization(preset: dict[str, Any]) -> str:
    """The preset's ``lagrangian.cost_normalization`` (default ``per_step``), checked."""
    from bystander.envs.constraints import COST_NORMALIZATIONS

    norm = sl.section(preset, NAME).get("cost_normalization", "per_step")
    if norm not in COST_NORMALIZATIONS:
        raise ValueError(
            f"preset lagrangian.cost_normalization: expected one of {COST_NORMALIZATIONS}, "
            f"got {norm!r}"
        )
    return norm


UNITS = {"per_step": "m per step", "sum": "m per episode", "per_metre": "m per metre of route"}


def _shaping_match(results_dir: Path, budgets: list[float], norm: str) -> list[dict[str, Any]]:
    """Per budget, Study 1's shaping weight whose final *training* cost in the budget's
    unit (``final_cost_per_step`` or the summed ``final_cost``) came closest to it."""
    path = results_dir.parent / "frontier" / "results.csv"
    if not path.is_file():
        return []
    import csv

    col = "final_cost_per_step" if norm == "per_step" else "final_cost"
    with open(path, encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["sweep"] == "shaping"]
    cand = [r for r in rows if sl.finite(r.get(col))]
    out = []
    for b in budgets:
        if not cand:
            break
        best = min(cand, key=lambda r: abs(float(r[col]) - b))
        out.append({"budget": b, "closest_weight": float(best["value"]),
                    "its_cost": float(best[col]), "weights_tried": len(cand)})  # fmt: skip
    return out


def _smooth(x: list[float], k: int) -> list[float]:
    """Trailing mean over ``k`` values (NaN skipped), same length as ``x``."""
    out = []
    for i in range(len(x)):
        w = [v for v in x[max(0, i - k + 1) : i + 1] if math.isfinite(v)]
        out.append(sum(w) / len(w) if w else math.nan)
    return out


def report(records: list[dict[str, Any]], preset: dict[str, Any], results_dir: Path) -> dict:
    norm = _normalization(preset)
    unit = UNITS[norm]
    rows = aggregate(records, metrics=list(METRICS))
    sl.pool_rate_ci(rows, records)
    rows.sort(key=lambda r: (r["mode"], r["budget"]))
    for r in rows:
        r["cost_minus_budget"] = r["final_cost"] - r["budget"]
        # per seed: a mean over seeds can sit at the budget with one ego stopped (far
        # under) and one stalled multiplier (far over)
        own = [x["metrics"].get("final_cost", math.nan)
               for x in sorted(records, key=lambda x: x["trial"]["seed"])
               if x["trial"]["point"] == {"mode": r["mode"], "budget": r["budget"]}]  # fmt: skip
        own = [float(c) for c in own if sl.finite(c)]
        r["worst_excess"] = max(own) - r["budget"] if own else math.nan
        r["final_cost_per_seed"] = " / ".join(f"{c:.2f}" for c in own)
    write_csv(rows, results_dir / "results.csv")
    # curves: one JSON with every trial's per-rollout cost and lambda
    curves = [{"mode": r["trial"]["point"]["mode"], "budget": r["trial"]["point"]["budget"],
               "seed": r["trial"]["seed"], **r["metrics"].get("curve", {})} for r in records]  # fmt: skip
    (results_dir / "curves.json").write_text(json.dumps(curves), encoding="utf-8")

    p = sl.plt()
    modes = sorted({c["mode"] for c in curves})
    fig, axes = p.subplots(2, max(1, len(modes)), figsize=(5 * max(1, len(modes)), 6.5),
                           squeeze=False)  # fmt: skip
    levels = sorted({c["budget"] for c in curves})
    colors = {b: f"C{i}" for i, b in enumerate(levels)}
    for j, mode in enumerate(modes):
        for c in (c for c in curves if c["mode"] == mode):
            steps = c.get("steps", [])
            cost = c.get("constraint_cost") or c.get("cost_predictability") or []
            lam = c.get("lambda", [])
            col = colors[c["budget"]]
            if steps and cost:
                # raw per-rollout cost faint, a 5-rollout trailing mean on top
                axes[0, j].plot(steps[: len(cost)], cost, color=col, alpha=0.2, lw=0.8)
                axes[0, j].plot(steps[: len(cost)], _smooth(cost, 5), color=col, alpha=0.9,
                                label=f"budget {c['budget']:g} (seed {c['seed']})")  # fmt: skip
            if steps and lam:
                axes[1, j].plot(steps[: len(lam)], lam, color=col, alpha=0.8)
        for b in levels:
            axes[0, j].axhline(b, color=colors[b], ls="--", lw=1)
        axes[0, j].set_title(f"{mode}: cost seen by the multiplier (dashed: budget)")
        axes[0, j].set_ylabel(f"predictability cost [{unit}]")
        axes[1, j].set_title(f"{mode}: lambda")
        axes[1, j].set_xlabel("env steps")
        axes[1, j].set_ylabel("lambda")
        sl.legend(axes[0, j], fontsize=7)
        for ax in axes[:, j]:
            ax.grid(alpha=0.3)
    sl.save(fig, results_dir / "cost_lambda.png")

    match = _shaping_match(results_dir, levels, norm)
    cols = [("mode", "mode"), (f"budget [{unit}]", "budget"), ("seeds", "n_seeds"),
            ("final cost", "final_cost"), ("per seed (by seed)", "final_cost_per_seed"),
            ("final cost - budget", "cost_minus_budget"),
            ("worst seed - budget", "worst_excess"),
            ("final lambda", "final_lambda"), ("overshoot / budget", "cost_overshoot"),
            ("lambda reversals", "lambda_reversals"), ("success", "success"),
            ("eval ADE [m]", "ade")]  # fmt: skip
    ci = ("final_cost", "final_lambda", "cost_overshoot", "lambda_reversals", "success", "ade")
    sections = [
        "![cost and lambda](cost_lambda.png)", "",
        f"Cost unit: {unit} (`constraint.cost_normalization={norm}`"
        + ("; an episode's summed observer ADE divided by its length in env steps, "
           "steps that no observer scored counting 0). " if norm == "per_step" else "). ")
        + "Final cost: mean over the last quarter of rollouts of the rollout's mean "
        "cost of its finished training episodes, the number lambda is driven by "
        "(per seed, and the worst seed's excess over the budget: a mean over seeds can "
        "sit at the budget with one ego stopped and one multiplier stalled). "
        "Overshoot: after the cost first reaches the budget, the largest excess "
        "over it, relative to the budget (n/a: never reached). Lambda reversals: fraction "
        "of consecutive lambda moves that change direction (oscillation).", "",
        markdown_table(rows, cols, ci=ci), "",
    ]  # fmt: skip
    if match:
        sections += ["## Shaping needs a sweep", "",
                     f"Study 1 tried {match[0]['weights_tried']} shaping weights; the one "
                     f"whose final training cost [{unit}] came closest to each budget:", "",
                     markdown_table(match, [("budget", "budget"),
                                            ("closest shaping weight", "closest_weight"),
                                            ("its final training cost", "its_cost")]), ""]  # fmt: skip
    summary = heldout_summary(records, norm)
    if summary["runs"]:
        sl.atomic_write_json(results_dir / "summary.json", summary)
        goal_rows = [{"mode": m, **g} for m, g in summary["goal"].items()]
        sections += [
            "## Held-out cost against the budget", "",
            "Greedy evaluations on fixed held-out seeds during training (`eval.every`); "
            "`summary.json` has every run's curve. Goal per mode: every budget and seed "
            "within +-10 % of its budget at every evaluation point of the last quarter of "
            "training, and a stand-still fraction never more than 5 points above the "
            "unconstrained ego's (limit "
            f"{summary['stand_still_limit']:.2f}).", "",
            markdown_table(goal_rows, [("mode", "mode"), ("runs", "runs"),
                                       ("runs within +-10 %", "runs_within_10pct"),
                                       ("all within", "all_within_10pct"),
                                       ("no stand-still phase", "no_stand_still_phase")]), "",
            markdown_table(summary["runs"], [
                ("mode", "mode"), ("budget", "budget"), ("seed", "seed"),
                ("last-quarter cost", "last_quarter_cost"),
                ("within +-10 % (last quarter)", "within_10pct_last_quarter"),
                ("max stand-still", "stand_still_fraction"), ("success", "success")]), "",
        ]  # fmt: skip
    sl.write_page(results_dir, TITLE, NAME, preset, sections)
    return {
        "heldout_goal": summary["goal"],
        "final_cost_vs_budget": [
            {
                "mode": r["mode"],
                "budget": r["budget"],
                "final_cost": r["final_cost"],
                "final_cost_per_seed": r["final_cost_per_seed"],
                "worst_excess": r["worst_excess"],
                "final_lambda": r["final_lambda"],
                "overshoot": r["cost_overshoot"],
                "lambda_reversals": r["lambda_reversals"],
            }
            for r in rows
        ],  # fmt: skip
        "shaping_match": match,
        "cost_unit": unit,
    }


if __name__ == "__main__":
    raise SystemExit(sl.main(sys.modules[__name__]))
