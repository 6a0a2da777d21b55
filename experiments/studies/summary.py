"""Write ``experiments/results/SUMMARY.md``: the headline numbers of every study run
with a preset, each linked to its results page and the command that produced it.

    python experiments/studies/summary.py --preset small
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import studylib as sl  # noqa: E402


def _n(v: Any, d: int = 2) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f"{f:.{d}f}" if math.isfinite(f) else "n/a"


def _load(root: Path, study: str) -> dict[str, Any] | None:
    p = root / study / "headline.json"
    return json.loads(p.read_text()) if p.is_file() else None


def build(preset_name: str, root: Path, rel: str) -> str:
    """Markdown of the summary (``rel``: the results root relative to the summary file)."""
    lines = [f"# Headline numbers (preset `{preset_name}`)", ""]
    lines += [
        "Each number links to its study's results page; the command under each table "
        "reproduces it (trials resume: rerunning skips finished ones). Means over seeds; "
        "the pages give 95 % CIs and the raw per-trial JSON.",
        "",
    ]
    h = _load(root, "frontier")
    if h:
        link = f"{rel}/frontier/README.md"
        lines += ["## 1. Alignment tax (driving)", "",
                  f"Unconstrained ego: success [{_n(h['baseline_success'])}]({link}), observers' "
                  f"ADE [{_n(h['baseline_ade'], 3)} m]({link}).", "",
                  "| predictability level (ADE target) | success there | tax (success lost) |",
                  "|---|---|---|"]  # fmt: skip
        for t in h["alignment_tax"]:
            lines.append(f"| {_n(t['ade_target'], 3)} m | [{_n(t['success_at_target'])}]({link}) "
                         f"| [{_n(t['tax'])}]({link}) |")  # fmt: skip
        lines += ["", f"`{h['command']}` ({h['trials_done']}/{h['trials']} trials)", ""]
    h = _load(root, "lagrangian")
    if h:
        link = f"{rel}/lagrangian/README.md"
        unit = h.get("cost_unit", "m per episode")
        lines += ["## 2. Lagrangian: final episode cost against budget (driving)", "",
                  "Final cost: the training rollouts' cost the multiplier saw (last quarter); "
                  "budgets are judged on the held-out line under the table.", "",
                  f"| multiplier | budget [{unit}] | final cost | per seed | worst seed - budget "
                  "| final lambda | overshoot | lambda reversals |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        d = 2 if unit == "m per step" else 1
        for r in h["final_cost_vs_budget"]:
            if r["mode"] == "unconstrained":  # the reference ego: no budget, no lambda
                continue
            lines.append(f"| {r['mode']} | {_n(r['budget'], d)} | [{_n(r['final_cost'])}]({link}) "
                         f"| {r.get('final_cost_per_seed', 'n/a')} "
                         f"| {_n(r.get('worst_excess', math.nan))} "
                         f"| {_n(r['final_lambda'], 3)} | {_n(r['overshoot'])} "
                         f"| {_n(r['lambda_reversals'])} |")  # fmt: skip
        for mode, g in (h.get("heldout_goal") or {}).items():
            lines += ["", f"Held-out ({mode}): [{g['runs_within_10pct']} of {g['runs']} runs]"
                      f"({link}) within +-10 % of their budget at every last-quarter "
                      f"evaluation; no stand-still phase: {'yes' if g['no_stand_still_phase'] else 'no'}."]  # fmt: skip
        lines += ["", f"`{h['command']}` ({h['trials_done']}/{h['trials']} trials)", ""]
    h = _load(root, "cotraining")
    if h:
        link = f"{rel}/cotraining/README.md"
        lines += ["## 3. Fixed vs co-trained observers (driving)", "",
                  "| observers' predictor | success | ADE, own predictor [m] | ADE, const. velocity [m] "
                  "| train-error trend [m/1k steps] |", "|---|---|---|---|---|"]  # fmt: skip
        for r in h["by_predictor"]:
            lines.append(f"| {r['predictor']} | [{_n(r['success'])}]({link}) "
                         f"| [{_n(r['ade'], 3)}]({link}) | [{_n(r['cv_ade'], 3)}]({link}) "
                         f"| {_n(r['train_error_trend'], 4)} |")  # fmt: skip
        lines += ["", f"`{h['command']}` ({h['trials_done']}/{h['trials']} trials)", ""]
    h = _load(root, "partial_observation")
    if h:
        link = f"{rel}/partial_observation/README.md"
        lines += ["## 4. Partial observation (driving)", "",
                  "| setting | success | ADE [m] | episode cost | most constraining type |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for r in h["settings"]:
            top = h["most_constraining_type"].get(r["setting"])
            lines.append(f"| {r['setting']} | [{_n(r['success'])}]({link}) | {_n(r['ade'], 3)} "
                         f"| {_n(r['cost_predictability'])} | {top} |")  # fmt: skip
        lines += ["", f"`{h['command']}` ({h['trials_done']}/{h['trials']} trials)", ""]
    h = _load(root, "review_gate")
    if h:
        link = f"{rel}/review_gate/README.md"
        lines += ["## 5. Review gate (driving)", "",
                  "| threshold | escalation rate | success | ADE [m] | shaping success at same ADE |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for r in h["by_threshold"]:
            lines.append(f"| {r['gate']} | [{_n(r['escalation_rate'], 3)}]({link}) "
                         f"| [{_n(r['success'])}]({link}) | {_n(r['ade'], 3)} "
                         f"| {_n(r['shaping_success_at_same_ade'])} |")  # fmt: skip
        lines += ["", f"`{h['command']}` ({h['trials_done']}/{h['trials']} trials)", ""]
    h = _load(root, "llm_tradeoff")
    if h:
        link = f"{rel}/llm_tradeoff/README.md"
        lines += ["## 6. LLM: accuracy vs SLM predictability (tiny models)", "",
                  "| point | accuracy | cost [nats/token] | length [tokens] |", "|---|---|---|---|"]  # fmt: skip
        for r in h["points"]:
            lines.append(f"| {r['name']} | [{_n(r['accuracy'])}]({link}) "
                         f"| [{_n(r['predictability_cost'], 3)}]({link}) | {_n(r['length_mean'], 1)} |")  # fmt: skip
        lines += ["", f"`{h['command']}` ({h['trials_done']}/{h['trials']} trials)", ""]
    h = _load(root, "multi_agent")
    if h:
        link = f"{rel}/multi_agent/README.md"
        lines += ["## 7. Several controlled cars (driving)", "",
                  "| point | cars | success per car | collision per car | ADE [m] | cost / step [m] "
                  "| stand-still |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in h["points"]:
            lines.append(f"| {r['point']} | {r['cars']} | [{_n(r['success'])}]({link}) "
                         f"| {_n(r['collision'])} | {_n(r['ade'])} "
                         f"| {_n(r['cost_predictability_per_step'], 3)} "
                         f"| {_n(r['stand_still_fraction'])} |")  # fmt: skip
        lines += ["", f"`{h['command']}` ({h['trials_done']}/{h['trials']} trials)", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--out", type=Path, default=None, help="results root of the preset")
    p.add_argument("--summary", type=Path, default=sl.DEFAULT_OUT / "SUMMARY.md")
    args = p.parse_args(argv)
    root = args.out if args.out is not None else sl.DEFAULT_OUT / args.preset
    import os

    rel = os.path.relpath(root, args.summary.parent)
    text = build(args.preset, root, rel)
    notes = root / "NOTES.md"  # hand-written reading of the numbers, if any
    if notes.is_file():
        text += "\n" + notes.read_text(encoding="utf-8")
    args.summary.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
