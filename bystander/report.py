"""Markdown report of a comparison run and the utility-vs-predictability plot.

:func:`write_report` takes one :class:`EgoEntry` per trained ego (its evaluation
summary, training figures, rendered episode) and writes ``report.md`` plus
``utility_vs_predictability.png`` into a run directory. The plot puts each ego at
(mean ADE of the observers' predictions [m], success rate) with 95 % CI bars: up and
to the left is better (useful and predictable).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bystander.agents.evaluation import EvalResult
from bystander.envs.constraints import cost_column

__all__ = ["EgoEntry", "plot_heldout_cost", "plot_utility_vs_predictability", "write_report"]


@dataclass
class EgoEntry:
    """One trained ego in a report.

    Attributes:
        label: Short name (``unconstrained``, ``lagrangian``...).
        run_dir: Its training run directory.
        evaluation: Its :class:`EvalResult`.
        train: Training figures (steps, wall_s, steps_per_s, lambdas...).
        gif: Rendered episode, if any.
        description: One line on how it was trained.
        scripted: A scripted baseline (no run directory; drawn as the scripted frontier).
    """

    label: str
    run_dir: Path
    evaluation: EvalResult
    train: dict[str, Any] = field(default_factory=dict)
    gif: Path | None = None
    description: str = ""
    scripted: bool = False


def _fmt(s: dict[str, float] | None, digits: int = 2, pct: bool = False) -> str:
    if not s or not math.isfinite(s.get("mean", math.nan)):
        return "n/a"
    k = 100.0 if pct else 1.0
    unit = "%" if pct else ""
    m, lo, hi = s["mean"] * k, s["ci_low"] * k, s["ci_high"] * k
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{m:.{digits}f}{unit}"
    return f"{m:.{digits}f}{unit} [{lo:.{digits}f}, {hi:.{digits}f}]"


def plot_utility_vs_predictability(entries: list[EgoEntry], path: str | Path) -> Path:
    """Scatter of success rate vs mean ADE (95 % CI bars), one point per ego."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=110)
    frontier = [
        (e.evaluation.summary["ade"]["mean"], e.evaluation.summary["success"]["mean"], e.label)
        for e in entries
        if e.scripted
        and e.label.startswith(("scripted speed:", "scripted stop"))
        and "ade" in e.evaluation.summary
        and "success" in e.evaluation.summary
        and math.isfinite(e.evaluation.summary["ade"]["mean"])
    ]
    if frontier:
        xs, ys, names = zip(*sorted(frontier), strict=True)
        ax.plot(xs, ys, "s--", color="0.55", label="scripted drivers")
        for x, y, name in zip(xs, ys, names, strict=True):
            ax.annotate(name.removeprefix("scripted "), (x, y), textcoords="offset points",
                        xytext=(4, -10), fontsize=7, color="0.4")  # fmt: skip
    habits = [(e.evaluation.summary.get("ade", {}).get("mean", math.nan),
               e.evaluation.summary.get("success", {}).get("mean", math.nan), e.label)
              for e in entries if e.scripted and e.label.startswith("scripted route:")]  # fmt: skip
    for x, y, name in habits:  # route habits: beside the speed-only frontier, not on it
        if math.isfinite(x) and math.isfinite(y):
            ax.plot(x, y, "D", color="0.35", ms=5)
            ax.annotate(name.removeprefix("scripted "), (x, y), textcoords="offset points",
                        xytext=(4, 4), fontsize=7, color="0.3")  # fmt: skip
    for e in (e for e in entries if not e.scripted):
        s = e.evaluation.summary
        ade, succ = s.get("ade"), s.get("success")
        if not ade or not succ or not math.isfinite(ade["mean"]):
            continue
        xerr = [[ade["mean"] - ade["ci_low"]], [ade["ci_high"] - ade["mean"]]]
        yerr = [[succ["mean"] - succ["ci_low"]], [succ["ci_high"] - succ["mean"]]]
        xerr = [[0.0 if not math.isfinite(v[0]) else v[0]] for v in xerr]
        ax.errorbar(
            ade["mean"], succ["mean"], xerr=xerr, yerr=yerr, fmt="o", capsize=4, label=e.label
        )
        ax.annotate(e.label, (ade["mean"], succ["mean"]), textcoords="offset points", xytext=(6, 6))
    ax.set_xlabel("observers' mean ADE [m] (lower = more predictable)")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("utility vs predictability")
    ax.grid(alpha=0.3)
    if entries:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def _heldout_rows(run_dir: Path) -> list[dict[str, float]]:
    """``RUN_DIR/logs/heldout.csv`` as floats (empty when the run logged none)."""
    from bystander.sweeps import read_csv_floats

    return read_csv_floats(Path(run_dir) / "logs" / "heldout.csv")


def plot_heldout_cost(
    entries: list[EgoEntry], path: str | Path, channel: str = "predictability"
) -> Path | None:
    """Held-out cost of each trained ego over training, in its budget's unit, with the
    budget of constrained egos drawn as a dashed line; the stand-still fraction below.
    ``None`` when no ego logged held-out evaluations (``eval.every``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [(e, _heldout_rows(e.run_dir)) for e in entries if not e.scripted]
    series = [(e, rows) for e, rows in series if rows]
    if not series:
        return None
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(5.5, 5.0), dpi=110, sharex=True)
    # one unit for every ego: the constrained egos' budget unit (held-out logs have
    # per-step and per-metre costs; "sum" budgets are drawn per step)
    cons = [e.train.get("constraint") or {} for e, _ in series]
    unit = next((c.get("cost_normalization") for c in cons
                 if c.get("mode") in ("lagrangian", "pid")), "per_step")  # fmt: skip
    unit = unit if unit == "per_metre" else "per_step"
    col = cost_column(channel, unit)
    for k, (e, rows) in enumerate(series):
        con = e.train.get("constraint") or {}
        steps = [r["step"] for r in rows]
        color = f"C{k}"
        ax.plot(steps, [r.get(col, math.nan) for r in rows], "o-", color=color, label=e.label)
        same_unit = con.get("cost_normalization") == unit
        if con.get("mode") in ("lagrangian", "pid") and same_unit:
            ax.axhline(con["budget"], ls="--", color=color, lw=1, label=f"{e.label} budget")
        ax2.plot(steps, [r.get("stand_still_fraction", math.nan) for r in rows], "o-", color=color)
    ax.set_ylabel(f"held-out cost [m {unit.replace('_', ' ')}]")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax2.set_ylabel("stand-still fraction")
    ax2.set_xlabel("env steps [thousands]")
    ax2.xaxis.set_major_formatter(lambda x, _pos: f"{x / 1000:.0f}")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(
    run_dir: str | Path,
    entries: list[EgoEntry],
    *,
    title: str = "bystander demo",
    notes: list[str] | None = None,
    extra_sections: list[tuple[str, str]] | None = None,
) -> Path:
    """Write ``report.md`` (and the plot) into ``run_dir``; returns the report path.

    Args:
        run_dir: Output directory.
        entries: The egos compared.
        title: Report title.
        notes: Lines added under the title (e.g. wall time, machine).
        extra_sections: ``(heading, markdown)`` pairs appended (e.g. the text env).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    plot = plot_utility_vs_predictability(entries, run_dir / "utility_vs_predictability.png")
    lines = [f"# {title}", ""]
    for n in notes or []:
        lines.append(f"- {n}")
    if notes:
        lines.append("")
    lines += [
        "## Results",
        "",
        "Means over seeded evaluation episodes with 95% confidence intervals "
        "(Wilson for rates, Student t otherwise). ADE/FDE: the observers' prediction "
        "errors in metres (lower = more predictable). `scripted` rows: drivers with no "
        "training on the same seeds and observers; a trained ego that only matches a "
        "slower scripted driver has not shown predictability.",
        "",
        "| ego | success | collision | time to dest. [s] | task return | ADE [m] | FDE [m] | predictability cost / episode | cost / step [m] | cost / metre [m/m] | escalations |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cost(unit: str) -> str:
        return cost_column("predictability", unit)

    for e in entries:
        s = e.evaluation.summary
        lines.append(
            f"| {e.label} | {_fmt(s.get('success'), 1, pct=True)} | {_fmt(s.get('collision'), 1, pct=True)} "
            f"| {_fmt(s.get('time_to_destination_s'), 1)} | {_fmt(s.get('task_return'))} "
            f"| {_fmt(s.get('ade'))} | {_fmt(s.get('fde'))} | {_fmt(s.get(cost('sum')))} "
            f"| {_fmt(s.get(cost('per_step')), 3)} "
            f"| {_fmt(s.get(cost('per_metre')), 3)} | {_fmt(s.get('escalations'), 1)} |"
        )
    lines += ["", "### ADE per observer type [m]", ""]
    types = sorted({k[4:] for e in entries for k in e.evaluation.summary if k.startswith("ade_")})
    if types:
        lines.append("| ego | " + " | ".join(types) + " |")
        lines.append("|---|" + "---|" * len(types))
        for e in entries:
            s = e.evaluation.summary
            lines.append(
                f"| {e.label} | " + " | ".join(_fmt(s.get(f"ade_{t}")) for t in types) + " |"
            )
    lines += ["", f"![utility vs predictability]({plot.name})", ""]
    heldout = plot_heldout_cost(entries, run_dir / "heldout_cost.png")
    if heldout is not None:
        lines += [
            "## Held-out cost over training",
            "",
            "Greedy evaluations on fixed held-out seeds during training (`eval.every`), in "
            "the unit of each ego's budget; the dashed line is a constrained ego's budget. "
            "A budget is held when the curve settles on or under its line without the "
            "stand-still fraction rising.",
            "",
            f"![held-out cost over training]({heldout.name})",
            "",
        ]
    lines += ["## Egos", ""]
    for e in (e for e in entries if not e.scripted):
        lines.append(f"### {e.label}")
        lines.append("")
        if e.description:
            lines.append(e.description)
            lines.append("")
        t = e.train
        if t:
            lam = t.get("lambdas") or {}
            lam_txt = ", ".join(f"lambda[{k}] = {v:.3f}" for k, v in lam.items())
            lines.append(
                f"- trained {int(t.get('steps', 0))} env steps in {t.get('wall_s', 0):.0f} s "
                f"({t.get('steps_per_s', 0):.0f} steps/s){'; ' + lam_txt if lam_txt else ''}"
            )
        try:
            rel = Path(e.run_dir).resolve().relative_to(run_dir.resolve())
        except ValueError:
            rel = Path(e.run_dir)
        lines.append(f"- run directory: `{rel}` (config.yaml, checkpoints/, logs/ for TensorBoard)")
        if e.gif is not None:
            try:
                gif_rel = Path(e.gif).resolve().relative_to(run_dir.resolve())
            except ValueError:
                gif_rel = Path(e.gif)
            lines += ["", f"![{e.label} episode]({gif_rel})"]
        lines.append("")
    for heading, body in extra_sections or []:
        lines += [f"## {heading}", "", body.rstrip(), ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
