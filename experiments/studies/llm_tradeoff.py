"""Study 6: task accuracy against SLM predictability (LLM, tiny models).

GRPO (:class:`bystander.llm.grpo.GRPOTrainer`, through
:func:`bystander.llm.cli.llm_train`) trains the tiny policy on generated arithmetic
tasks while a tiny SLM observer scores its chain of thought; each point of the
preset is one training configuration: no constraint, shaping weights, Lagrangian
budgets, one observer view at a time (prefix, mask, window, no prompt: which views
matter), and a minimum-length guard (the short-output hack: a per-token cost can
still be lowered by writing little). Every policy is evaluated on the same held-out
prompts: accuracy, the observers' cost in nats/token (lower = more predictable) and
the completion length (tokens), before and after training.

    python experiments/studies/llm_tradeoff.py --preset small
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import studylib as sl  # noqa: E402

from bystander.sweeps import Trial, aggregate, markdown_table, write_csv  # noqa: E402

NAME = "llm_tradeoff"
TITLE = "Study 6: accuracy vs SLM predictability (LLM, tiny models)"
TRIAL_FN = "studylib:llm_trial"
METRICS = ("accuracy", "predictability_cost", "length_mean", "reward", "before_accuracy",
           "before_predictability_cost", "before_length_mean", "lambda",
           "heldout_nats_per_token", "heldout_completion_accuracy", "template_entropy_bits",
           "kl", "short_fraction", "before_heldout_nats_per_token",
           "before_heldout_completion_accuracy", "before_template_entropy_bits",
           "completions")  # fmt: skip
DEFAULT_VIEWS = "prefix:0.5,mask:0.7,full"


def build_trials(preset: dict[str, Any]) -> list[Trial]:
    """Points of ``llm_tradeoff.points`` x seeds (each point: a name and GRPO fields,
    optionally ``eval_every``: held-out evaluations every N GRPO steps on
    ``llm_tradeoff.eval_every_prompts`` prompts x 2 samples, for budget tracking).

    ``llm_tradeoff.policy`` / ``observers`` name the models (default the built-in
    ``tiny-policy`` / ``tiny-slm``; any local path or hub id ``load_causal_lm`` takes).
    """
    s = sl.section(preset, NAME)
    points = s.get("points")
    if not isinstance(points, list) or not points:
        raise ValueError("preset llm_tradeoff.points: expected a non-empty list")
    trials = []
    for seed in sl.seeds(preset, NAME):
        for pt in points:
            if not isinstance(pt, dict) or "name" not in pt:
                raise ValueError(f"preset llm_tradeoff.points: expected {{name, grpo}}, got {pt!r}")
            grpo = {"views": DEFAULT_VIEWS, **dict(s.get("grpo", {})), **dict(pt.get("grpo", {}))}
            ov = {"steps": int(s["steps"]), "num_tasks": int(s.get("num_tasks", 128)),
                  "eval_prompts": int(s.get("eval_prompts", 16)), "grpo": grpo,
                  "policy": s.get("policy", "tiny-policy"),
                  "observers": list(s.get("observers", ["tiny-slm"])),
                  "heldout_observer": s.get("heldout_observer", "tiny-slm-heldout")}  # fmt: skip
            if pt.get("eval_every"):  # held-out evaluations during training (issue 12)
                ov["eval_every"] = int(pt["eval_every"])
                ov["eval_every_prompts"] = int(s.get("eval_every_prompts", 100))
            mode = dict(grpo.get("constraint", {})).get("mode", "none")
            point = {"name": pt["name"], "constraint": mode, "views": grpo["views"],
                     "min_length": int(grpo.get("min_length", 0))}  # fmt: skip
            trials.append(Trial(NAME, point, ov, seed))
    return trials


def report(records: list[dict[str, Any]], preset: dict[str, Any], results_dir: Path) -> dict:
    rows = aggregate(records, metrics=list(METRICS))
    names = [p["name"] for p in sl.section(preset, NAME)["points"]]
    rows.sort(key=lambda r: names.index(r["name"]) if r["name"] in names else 99)
    write_csv(rows, results_dir / "results.csv")
    curves = [{"name": r["trial"]["point"]["name"], "seed": r["trial"]["seed"],
               **r["metrics"].get("curve", {})} for r in records]  # fmt: skip
    (results_dir / "curves.json").write_text(json.dumps(curves), encoding="utf-8")

    p = sl.plt()
    fig, axes = p.subplots(1, 2, figsize=(10, 4))
    default_view = [r for r in rows if r["views"] == DEFAULT_VIEWS]
    other = [r for r in rows if r["views"] != DEFAULT_VIEWS]
    sl.errorbar(axes[0], default_view, "predictability_cost", "accuracy", annotate="name",
                label="all views (constraint sweep)", fmt="o")  # fmt: skip
    sl.errorbar(axes[0], other, "predictability_cost", "accuracy", annotate="name",
                label="single view", fmt="s")  # fmt: skip
    axes[0].set_xlabel("observers' cost [nats/token] (lower = more predictable)")
    axes[0].set_ylabel("held-out accuracy")
    axes[0].set_title("accuracy vs predictability")
    sl.errorbar(axes[1], rows, "length_mean", "predictability_cost", annotate="name", fmt="o")
    axes[1].set_xlabel("completion length [tokens]")
    axes[1].set_ylabel("cost [nats/token]")
    axes[1].set_title("the length hack")
    for ax in axes:
        ax.grid(alpha=0.3)
    sl.legend(axes[0], fontsize=7)
    sl.save(fig, results_dir / "llm_tradeoff.png")

    cols = [("point", "name"), ("constraint", "constraint"), ("views", "views"),
            ("min length", "min_length"), ("seeds", "n_seeds"), ("accuracy", "accuracy"),
            ("cost [nats/token]", "predictability_cost"), ("length [tokens]", "length_mean"),
            ("held-out observer [nats/token]", "heldout_nats_per_token"),
            ("held-out completion accuracy", "heldout_completion_accuracy"),
            ("template entropy [bits]", "template_entropy_bits"), ("KL", "kl"),
            ("accuracy before", "before_accuracy"),
            ("cost before", "before_predictability_cost"), ("lambda", "lambda")]  # fmt: skip
    ci = ("accuracy", "predictability_cost", "length_mean", "before_accuracy",
          "before_predictability_cost", "lambda", "heldout_nats_per_token",
          "heldout_completion_accuracy", "template_entropy_bits", "kl")  # fmt: skip
    sections = [
        "![llm trade-off](llm_tradeoff.png)", "",
        "Held-out prompts, the same for every point; cost = the SLM observers' negative "
        "log-likelihood of the completion in nats/token, combined over views (mean). "
        "Before = the pretrained tiny policy before GRPO (same seed).", "",
        markdown_table(rows, cols, ci=ci, digits=3),
    ]  # fmt: skip
    tax = legibility_tax(rows)
    if tax:
        sections += ["", "## Legibility tax", "", _tax_text(tax), "",
                     "Point means over seeds; whether a difference is beyond noise: the "
                     "95 % intervals of the table above.", "",
                     markdown_table(tax, [
                         ("point", "name"), ("accuracy lost", "accuracy_lost"),
                         ("held-out observer gain [nats/token]", "heldout_gain"),
                         ("training observer gain [nats/token]", "train_gain"),
                         ("tax [accuracy per nat/token]", "tax"),
                         ("held-out share of the gain", "heldout_share"),
                         ("GRPO accuracy gain kept", "gain_kept")], digits=3)]  # fmt: skip
    summary = _summary(records, rows, preset)
    summary["legibility_tax"] = tax
    summary["budget_tracking"] = budget_summary(records)
    if summary["budget_tracking"]["runs"]:
        sections += ["", "## Budget tracking (held-out, during training)", "",
                     _tracking_text(summary["budget_tracking"])]  # fmt: skip
    sl.write_page(results_dir, TITLE, NAME, preset, sections)
    sl.atomic_write_json(results_dir / "summary.json", summary)
    return {"points": [{k: r.get(k) for k in ("name", "accuracy", "predictability_cost",
                                               "length_mean")} for r in rows]}  # fmt: skip


def legibility_tax(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per constrained point (all views), against the unconstrained one (``none``): the
    accuracy lost, the held-out and training observers' gains in nats/token (lower cost =
    gain), the tax (accuracy lost per nat/token of held-out gain), the held-out
    observer's share of the training observer's gain, and the share of GRPO's accuracy
    gain (``none`` minus the start) that the point kept (Prover-Verifier Games report
    about half for their legibility-trained prover); NaN when GRPO's own gain is not
    beyond noise (``none``'s 95 % interval reaches down to the start)."""
    ref = next((r for r in rows if r["name"] == "none" and r["views"] == DEFAULT_VIEWS), None)
    if ref is None:
        return []
    out = []
    for r in rows:
        if r is ref or r["views"] != DEFAULT_VIEWS or r["constraint"] == "none":
            continue
        lost = ref["accuracy"] - r["accuracy"]
        held = ref["heldout_nats_per_token"] - r["heldout_nats_per_token"]
        train = ref["predictability_cost"] - r["predictability_cost"]
        grpo_gain = ref["accuracy"] - ref["before_accuracy"]
        # GRPO's gain must be beyond noise (the unconstrained accuracy's 95 % interval
        # above the start), else the share "kept" divides by noise
        real_gain = (
            grpo_gain > 0 and ref.get("accuracy_lo", ref["accuracy"]) > ref["before_accuracy"]
        )
        out.append({
            "name": r["name"], "accuracy_lost": lost, "heldout_gain": held, "train_gain": train,
            "tax": lost / held if held > 0 else math.nan,
            "heldout_share": held / train if train > 0 else math.nan,
            "gain_kept": (r["accuracy"] - ref["before_accuracy"]) / grpo_gain
            if real_gain else math.nan,
        })  # fmt: skip
    return out


def _tax_text(tax: list[dict[str, Any]]) -> str:
    """The page's plain reading of :func:`legibility_tax` (computed, not written by hand)."""
    lines = []
    for t in tax:
        if not (sl.finite(t["heldout_gain"]) and t["heldout_gain"] > 0):
            lines.append(f"- {t['name']}: no gain for the held-out observer "
                         f"({t['heldout_gain']:+.3f} nats/token), so no tax to state.")  # fmt: skip
            continue
        kept = t["gain_kept"]
        pvg = ("no share of GRPO's accuracy gain to state (unconstrained GRPO did not raise "
               "accuracy beyond noise)" if not sl.finite(kept)
               else f"{kept:.2f} of GRPO's accuracy gain kept, "
               f"{'more' if kept > 0.5 else 'less'} than Prover-Verifier Games' ~0.5")  # fmt: skip
        share = t["heldout_share"]
        lines.append(
            f"- {t['name']}: loses {t['accuracy_lost']:.3f} accuracy for "
            f"{t['heldout_gain']:.3f} nats/token of held-out gain (tax {t['tax']:.2f}); the "
            f"held-out observer gets {share:.2f} of the training observer's gain; {pvg}."
            if sl.finite(share) else
            f"- {t['name']}: loses {t['accuracy_lost']:.3f} accuracy for {t['heldout_gain']:.3f} "
            f"nats/token of held-out gain (tax {t['tax']:.2f}); the training observer did "
            f"not gain; {pvg}."
        )  # fmt: skip
    return "\n".join(lines)


SUMMARY_FIELDS = {"accuracy": "accuracy", "train_observer_nats_per_token": "predictability_cost",
                  "heldout_observer_nats_per_token": "heldout_nats_per_token",
                  "heldout_completion_accuracy": "heldout_completion_accuracy",
                  "template_entropy_bits": "template_entropy_bits",
                  "length_tokens": "length_mean", "kl": "kl"}  # fmt: skip
"""summary.json field -> evaluation metric (each a mean over seeds with its 95 % CI)."""


def _summary(records: list[dict[str, Any]], rows: list[dict[str, Any]], preset: dict) -> dict:
    """The fields issue 13 names: start and heuristic accuracy, and per point each measure."""
    from bystander.envs.text_tasks import generate_tasks, heuristic_accuracy

    s = sl.section(preset, NAME)
    n_eval, seeds = int(s.get("eval_prompts", 16)), sl.seeds(preset, NAME)
    held = [t for seed in seeds for t in generate_tasks(n_eval, seed=10_000 + seed)]
    # the start is the same policy at every point of a seed: one record per seed
    first = {r["trial"]["seed"]: r for r in reversed(records) if r.get("status") == "ok"}
    one = list(first.values())
    start = aggregate(one, metrics=["before_accuracy"], group_by=[])[0] if one else {}

    def ci(row: dict[str, Any], key: str) -> dict[str, float]:
        return {"mean": row.get(key), "lo": row.get(f"{key}_lo"), "hi": row.get(f"{key}_hi")}

    return {
        "start_accuracy": {**ci(start, "before_accuracy"), "n_seeds": start.get("n_seeds", 0)},
        "heuristic_accuracy": {**heuristic_accuracy(held), "n": len(held)},
        "points": [
            {"name": r["name"], "constraint": r["constraint"], "seeds": r["n_seeds"],
             "completions": r.get("completions", float("nan")) * r["n_seeds"],
             **{f: ci(r, m) for f, m in SUMMARY_FIELDS.items()}}
            for r in rows
        ],
    }  # fmt: skip


def budget_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The driving study's ``summary.json`` fields for the text runs with held-out
    evaluations (issue 12): per run (point, seed) ``budget``, ``eval_costs`` ([GRPO step,
    nats/token] at each evaluation), ``within_10pct_last_quarter``,
    ``last_quarter_cost``, ``format_failure`` (max over evaluations: the text
    counterpart of the stand-still fraction, see :mod:`bystander.llm.heldout`) and
    ``success`` (accuracy at the last evaluation); unconstrained runs (``none``) are the
    references (no budget); shaping runs are listed, not references. ``goal`` per constraint mode: every run within +-10 % in the last
    quarter, and format failure never more than 5 points above the references' max.
    ``reference_within_10pct_last_quarter`` per run: the same share for the unconstrained
    runs at that budget (near 1: the band does not tell a constraint from none)."""
    from bystander.llm.grpo_config import text_constraint

    runs = []
    for r in sorted(records, key=lambda x: (x["trial"]["point"]["name"], x["trial"]["seed"])):
        h = (r.get("metrics") or {}).get("heldout") or {}
        if r.get("status") != "ok" or not h.get("step"):
            continue
        point = r["trial"]["point"]
        c = dict(r["trial"]["overrides"]["grpo"].get("constraint", {}))
        run = {"point": point["name"], "mode": point["constraint"], "seed": r["trial"]["seed"],
               "eval_costs": [[int(st), v] for st, v in zip(h["step"], h["predictability_cost"],
                                                           strict=True)],
               "format_failure": max(h["format_failure"]), "success": h["accuracy"][-1],
               "lambda": h["lambda"][-1]}  # fmt: skip
        if point["constraint"] in ("lagrangian", "pid"):
            run["budget"] = float(c.get("budget", text_constraint().budget))
            run.update(sl.budget_tracking(h["step"], h["predictability_cost"], run["budget"]))
        runs.append(run)
    limit, goal = sl.tracking_goal(runs, "none", "format_failure", "no_give_up_phase")
    refs = [r for r in runs if r["mode"] == "none"]
    for run in runs:  # is the band informative: would the unconstrained policy be in it?
        if "budget" in run and refs:
            run["reference_within_10pct_last_quarter"] = float(np.mean([sl.budget_tracking(
                [st for st, _ in q["eval_costs"]], [c for _, c in q["eval_costs"]],
                run["budget"])["within_10pct_last_quarter"] for q in refs]))  # fmt: skip
    return {"cost_unit": "nats/token", "format_failure_limit": limit, "runs": runs, "goal": goal}


def _tracking_text(t: dict[str, Any]) -> str:
    """The page's budget-tracking section: one line per run, then the goal per mode."""
    lines = []
    for r in t["runs"]:
        costs = ", ".join(f"{c:.3f}" for _, c in r["eval_costs"])
        head = (f"- {r['point']} seed {r['seed']}: budget {r['budget']:g}, within +-10 % in "
                f"{r['within_10pct_last_quarter']:.2f} of the last quarter's evaluations "
                f"(mean {r['last_quarter_cost']:.3f}; unconstrained runs: "
                f"{r.get('reference_within_10pct_last_quarter', math.nan):.2f})" if "budget" in r
                else f"- {r['point']} seed {r['seed']} ({'reference' if r['mode'] == 'none' else 'no budget'})")  # fmt: skip
        lines.append(f"{head}; held-out cost {costs}; format failure max "
                     f"{r['format_failure']:.3f}; final accuracy {r['success']:.3f}")  # fmt: skip
    for mode, g in t["goal"].items():
        lines.append(f"- **{mode}**: {g['runs_within_10pct']} of {g['runs']} runs within +-10 % "
                     f"at every last-quarter evaluation; no give-up phase: "
                     f"{g['no_give_up_phase']}")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(sl.main(sys.modules[__name__]))
