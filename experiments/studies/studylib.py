"""Shared pieces of the studies: presets, the driving and LLM trial functions, plots,
results pages and the command line every study script uses.

A study module defines ``NAME``, ``TITLE``, ``build_trials(preset) -> list[Trial]``,
``TRIAL_FN`` (``"module:function"`` of its trial function), optionally
``prepare(preset, results_dir)`` (one-off work before the sweep, e.g. pretraining a
predictor) and ``report(records, preset, results_dir) -> dict`` (writes the CSV,
PNG and ``README.md`` page, returns the headline numbers). :func:`main` runs one:

    python experiments/studies/frontier.py --preset small --backend local --workers 2
    python experiments/studies/run.py all --preset smoke

Results go to ``experiments/results/<preset>/<study>/`` (``--out`` to change):
``trials/*.json`` (one record per trial, the resume state), ``runs/`` (training
runs; not meant for git), ``results.csv`` (per point, mean and 95 % CI over seeds),
``*.png`` and ``README.md``; ``headline.json`` has the numbers of the summary table.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bystander.sweeps import (
    BACKENDS,
    Trial,
    atomic_write_json,
    load_results,
    read_csv_floats,
    run_sweep,
)

STUDIES_DIR = Path(__file__).resolve().parent
REPO = STUDIES_DIR.parent.parent
PRESETS_DIR = STUDIES_DIR / "presets"
PRESETS = ("smoke", "small", "medium", "full")
DEFAULT_OUT = REPO / "experiments" / "results"

# ---------------------------------------------------------------------------- presets


def load_preset(name_or_path: str | Path) -> dict[str, Any]:
    """A preset: one of :data:`PRESETS` (``presets/<name>.yaml``) or a YAML path.

    A preset may name ``base: other.yaml`` (relative to itself); sections are merged
    one level deep (study section keys override the base's). Its ``name`` (the results
    folder) is its own ``name:`` or file stem, never the base's.
    """
    p = Path(name_or_path)
    if not p.suffix:
        if str(name_or_path) not in PRESETS:
            raise ValueError(
                f"preset: expected one of {PRESETS} or a YAML path, got {name_or_path!r}"
            )
        p = PRESETS_DIR / f"{name_or_path}.yaml"
    if not p.is_file():
        raise FileNotFoundError(f"preset: no such file {p}")
    data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    name = data.get("name", p.stem)
    base = data.pop("base", None)
    if base:
        merged = load_preset(p.parent / base)
        for k, v in data.items():
            if isinstance(v, dict) and isinstance(merged.get(k), dict):
                merged[k] = {**merged[k], **v}
            else:
                merged[k] = v
        data = merged
    data["name"] = name
    return data


def section(preset: dict[str, Any], name: str) -> dict[str, Any]:
    """The preset's section ``name`` (a dict), or a clear error."""
    s = preset.get(name)
    if not isinstance(s, dict):
        raise ValueError(f"preset {preset.get('name')!r}: expected a mapping under {name!r}")
    return s


def seeds(preset: dict[str, Any], study: str) -> list[int]:
    """Seeds of ``study``: its own ``seeds`` list, else the preset's ``seeds``."""
    s = section(preset, study).get("seeds", preset.get("seeds", [0]))
    if not isinstance(s, list) or not s or not all(isinstance(x, int) for x in s):
        raise ValueError(f"preset {study}.seeds: expected a non-empty list of ints, got {s!r}")
    return s


# ------------------------------------------------------------------------ driving trial


def driving_overrides(
    preset: dict[str, Any], extra: list[str], study: str | None = None
) -> dict[str, Any]:
    """Overrides of a driving trial: the preset's ``driving`` training budget + ``extra``.

    A study section may override ``timesteps`` and ``eval_episodes`` of ``driving``.

    Returns ``{"set": [...train config overrides...], "eval_set": [...],
    "eval_episodes": n}`` (the trial's ``overrides`` field).
    """
    d = dict(section(preset, "driving"))
    if study is not None:
        own = section(preset, study)
        d.update({k: own[k] for k in ("timesteps", "eval_episodes") if k in own})
    base = [
        f"train.total_timesteps={int(d['timesteps'])}",
        f"train.n_envs={int(d.get('n_envs', 4))}",
        f"train.hyperparams.n_steps={int(d.get('n_steps', 128))}",
        f"train.hyperparams.batch_size={int(d.get('batch_size', 128))}",
        "train.tensorboard=false",
        f"train.vec_env={d.get('vec_env', 'batched')}",
    ]
    base += [str(x) for x in d.get("set", [])]
    return {
        "set": base + list(extra),
        "eval_set": [],
        "eval_episodes": int(d.get("eval_episodes", 10)),
    }


def _curve(run_dir: Path) -> dict[str, list[float]]:
    """Per-rollout training curve from SB3's ``logs/progress.csv``: steps, episode cost,
    predictability cost (summed over the episode, and per env step), the cost the
    multiplier saw (``constraint_cost``, in ``constraint.budget``'s unit), lambda (if
    any), success rate."""
    path = run_dir / "logs" / "progress.csv"
    cols = {
        "steps": "time/total_timesteps",
        "cost": "episode/cost",
        "cost_predictability": "episode/cost_predictability",
        "cost_predictability_per_step": "episode/cost_predictability_per_step",
        "constraint_cost": "constraint/episode_cost_predictability",
        "lambda": "constraint/lambda_predictability",
        "success": "episode/success_rate",
        "prediction_error": "episode/prediction_error",
        "predictor_loss": "predictor/loss",
    }
    out: dict[str, list[float]] = {k: [] for k in cols}
    if not path.is_file():
        return out
    with open(path, encoding="utf-8") as f:
        for row in csv.DictReader(f):
            for k, c in cols.items():
                v = row.get(c, "")
                out[k].append(float(v) if v not in ("", None) else math.nan)
    return {k: v for k, v in out.items() if any(math.isfinite(x) for x in v)}


def constraint_dynamics(curve: dict[str, list[float]], budget: float) -> dict[str, float]:
    """Summary of a Lagrangian run's cost and lambda curves (one value per rollout).

    - ``final_cost``: mean episode cost over the last quarter of rollouts (the cost the
      multiplier saw, in the budget's unit; else the summed predictability cost).
    - ``final_cost_per_step``: the same for the predictability cost per env step
      (metres per step; any constraint mode, so shaping runs compare with per-step
      budgets).
    - ``final_lambda``: lambda after the last update.
    - ``cost_overshoot``: after the cost first falls to the budget, the largest
      excess over it, relative to the budget (NaN if it never gets there).
    - ``lambda_reversals``: fraction of consecutive lambda moves that change
      direction (0 monotone, 1 zig-zag every update): oscillation.
    """
    c = np.asarray(curve.get("constraint_cost") or curve.get("cost_predictability") or [], float)
    lam = np.asarray(curve.get("lambda") or [], float)
    c = c[np.isfinite(c)]
    lam = lam[np.isfinite(lam)]
    out = {"final_cost": math.nan, "final_lambda": math.nan, "cost_overshoot": math.nan,
           "lambda_reversals": math.nan, "final_cost_per_step": math.nan}  # fmt: skip
    ps = np.asarray(curve.get("cost_predictability_per_step") or [], float)
    ps = ps[np.isfinite(ps)]
    if len(ps):
        out["final_cost_per_step"] = float(ps[-max(1, len(ps) // 4) :].mean())
    if len(c):
        out["final_cost"] = float(c[-max(1, len(c) // 4) :].mean())
        below = np.flatnonzero(c <= budget)
        if len(below):
            out["cost_overshoot"] = float(max(0.0, (c[below[0] :] - budget).max()) / budget)
    if len(lam):
        out["final_lambda"] = float(lam[-1])
        d = np.diff(lam)
        d = d[np.abs(d) > 1e-12]
        if len(d) >= 2:
            out["lambda_reversals"] = float(np.mean(np.sign(d[1:]) != np.sign(d[:-1])))
    return out


def driving_trial(trial: Trial, trial_dir: Path) -> dict[str, Any]:
    """Train an ego with the driving trainer from the trial's overrides, then evaluate it.

    Returns the evaluation means (``success``, ``collision``, ``time_to_destination_s``,
    ``task_return``, ``episode_cost``, ``cost_predictability``, ``ade``, ``fde``,
    ``ade_<type>``, ``escalations``...), the same prefixed ``<label>_`` for each extra
    evaluation in ``overrides["eval_extra"]`` (label -> config overrides, e.g. a
    common constant-velocity yardstick), ``escalation_rate`` (per step), the
    training figures (``train_steps``, ``train_wall_s``, ``lambda``), the constraint
    dynamics (:func:`constraint_dynamics`) and the per-rollout ``curve`` (lists).
    """
    from bystander.agents.evaluation import evaluate_run
    from bystander.agents.training import train
    from bystander.config import load_config

    ov = trial.overrides
    sets = list(ov["set"]) + [f"train.seed={trial.seed}", f"name={trial.study}"]
    cfg = load_config(None, overrides=sets)
    run_dir = trial_dir / "run"
    res = train(cfg, run_dir=run_dir)
    ev = evaluate_run(run_dir, episodes=int(ov.get("eval_episodes", 10)),
                      overrides=list(ov.get("eval_set", [])) or None)  # fmt: skip
    m: dict[str, Any] = {k: v["mean"] for k, v in ev.summary.items()}
    for label, extra in (ov.get("eval_extra") or {}).items():
        ev2 = evaluate_run(run_dir, episodes=int(ov.get("eval_episodes", 10)),
                           overrides=list(extra), csv_dir=trial_dir / label)  # fmt: skip
        m.update({f"{label}_{k}": v["mean"] for k, v in ev2.summary.items()})
    steps = np.array([r["steps"] for r in ev.episodes], float)
    esc = np.array([r.get("escalations", 0.0) for r in ev.episodes], float)
    m["escalation_rate"] = float(esc.sum() / max(steps.sum(), 1.0))
    m["train_steps"] = float(res.steps)
    m["train_wall_s"] = float(res.wall_s)
    m["lambda"] = float(next(iter(res.lambdas.values()), math.nan))
    curve = _curve(run_dir)
    m.update(constraint_dynamics(curve, float(cfg.constraint.budget)))
    m["curve"] = curve
    heldout = heldout_curve(run_dir)
    if heldout:
        m["heldout"] = heldout
    return m


def heldout_curve(run_dir: Path) -> dict[str, list[float]]:
    """The held-out evaluations logged during training (``eval.every``;
    ``RUN_DIR/logs/heldout.csv``) as columns: ``step``, ``success``, ``collision``,
    ``stand_still_fraction``, ``progress_m`` and every ``cost_*_per_step`` /
    ``cost_*_per_metre``. Empty when the run logged none."""
    rows = read_csv_floats(run_dir / "logs" / "heldout.csv")
    keep = [k for k in (rows[0] if rows else {})
            if k in ("step", "success", "collision", "stand_still_fraction", "progress_m")
            or (k.startswith("cost_") and k.endswith(("_per_step", "_per_metre")))]  # fmt: skip
    return {k: [r[k] for r in rows] for k in keep}


def budget_tracking(
    steps: list[float], costs: list[float], budget: float, tolerance: float = 0.10
) -> dict[str, float]:
    """How well held-out costs track a budget: ``within_10pct_last_quarter`` (fraction of
    the evaluation points in the last quarter of training, by step, within
    ``+-tolerance * budget`` of it) and ``last_quarter_cost`` (their mean cost)."""
    pts = [(s, c) for s, c in zip(steps, costs, strict=True) if math.isfinite(c)]
    if not pts or budget <= 0:
        return {"within_10pct_last_quarter": math.nan, "last_quarter_cost": math.nan}
    end = max(s for s, _ in pts)
    last = [c for s, c in pts if s > 0.75 * end] or [pts[-1][1]]
    inside = [abs(c - budget) <= tolerance * budget for c in last]
    return {"within_10pct_last_quarter": float(np.mean(inside)),
            "last_quarter_cost": float(np.mean(last))}  # fmt: skip


def tracking_goal(
    runs: list[dict[str, Any]], reference_mode: str, give_up: str, goal_key: str
) -> tuple[float, dict[str, dict[str, Any]]]:
    """The budget-tracking goal of both domains' ``summary.json`` (issue 12).

    ``runs``: one dict per run with ``mode``; constrained runs carry
    :func:`budget_tracking`'s ``within_10pct_last_quarter``, every run ``give_up`` (its
    max share of giving up: driving ``stand_still_fraction``, text ``format_failure``).
    Returns the give-up limit (the ``reference_mode`` runs' max + 0.05; NaN without
    them) and per constrained mode: ``runs``, ``all_within_10pct``,
    ``runs_within_10pct`` and ``goal_key`` (no run above the limit)."""
    ref = [r[give_up] for r in runs if r["mode"] == reference_mode]
    limit = (max(ref) + 0.05) if ref else math.nan
    goal = {}
    for mode in sorted({r["mode"] for r in runs if "within_10pct_last_quarter" in r}):
        mine = [r for r in runs if r["mode"] == mode and "within_10pct_last_quarter" in r]
        goal[mode] = {
            "runs": len(mine),
            "all_within_10pct": all(r["within_10pct_last_quarter"] == 1.0 for r in mine),
            "runs_within_10pct": sum(r["within_10pct_last_quarter"] == 1.0 for r in mine),
            goal_key: bool(ref) and all(r[give_up] <= limit for r in mine),
        }
    return limit, goal


# ---------------------------------------------------------------------------- LLM trial


def llm_trial(trial: Trial, trial_dir: Path) -> dict[str, Any]:
    """GRPO on the tiny models (:func:`bystander.llm.cli.llm_train`), evaluated on
    held-out prompts.

    ``trial.overrides``: ``{"steps", "num_tasks", "eval_prompts", "grpo": {...}}``
    (``grpo`` = :class:`bystander.llm.grpo_config.GRPOConfig` fields), optionally
    ``eval_every`` / ``eval_every_prompts`` (held-out evaluations during training).
    Returns the held-out evaluation after training (``accuracy``, ``reward``,
    ``predictability_cost`` [nats/token], ``length_mean`` [tokens], ``nats/<view>``),
    the same before training (``before_*``), the last step's lambda, the per-step curve
    and, with ``eval_every``, ``heldout``: the columns of ``RUN_DIR/heldout.csv``.
    """
    from bystander.llm.cli import llm_train

    ov = trial.overrides
    grpo = dict(ov.get("grpo", {}))
    grpo["seed"] = trial.seed
    config = {
        "policy": ov.get("policy", "tiny-policy"),
        "observers": ov.get("observers", ["tiny-slm"]),
        "heldout_observer": ov.get("heldout_observer", "tiny-slm-heldout"),
        "tasks": "generated",
        "num_tasks": int(ov.get("num_tasks", 256)),
        "eval_prompts": int(ov.get("eval_prompts", 16)),
        "device": "cpu",
        "grpo": grpo,
        "steps": int(ov["steps"]),
        "run_dir": str(trial_dir / "run"),
        "checkpoint_every": 0,
        "eval_every": int(ov.get("eval_every", 0)),
        "eval_every_prompts": int(ov.get("eval_every_prompts", 100)),
    }
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        out = llm_train(config)
    m: dict[str, Any] = {}
    for k, v in (out.get("after") or {}).items():
        m[k] = float(v)
    for k, v in (out.get("before") or {}).items():
        m[f"before_{k}"] = float(v)
    last = out.get("last") or {}
    lam = last.get("lambda_next", last.get("lambda"))
    m["lambda"] = float(lam) if isinstance(lam, (int, float)) else math.nan
    curve: dict[str, list[float]] = {"step": [], "cost": [], "lambda": [], "accuracy": [],
                                     "length": []}  # fmt: skip
    log = Path(config["run_dir"]) / "log.jsonl"
    if log.is_file():
        for line in log.read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            curve["step"].append(float(d.get("step", len(curve["step"]) + 1)))
            curve["cost"].append(_f(d.get("predictability_cost")))
            curve["lambda"].append(_f(d.get("lambda")))
            curve["accuracy"].append(_f(d.get("accuracy")))
            curve["length"].append(_f(d.get("length_mean")))
    m["curve"] = curve
    held = read_csv_floats(Path(config["run_dir"]) / "heldout.csv")
    if held:  # eval_every: the held-out rows during training, as columns
        m["heldout"] = {k: [r[k] for r in held] for k in held[0]}
    return m


def _f(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


POOLED_RATES = ("success", "collision")
"""Rates whose interval :func:`pool_rate_ci` pools over evaluation episodes."""


def pool_rate_ci(
    rows: list[dict[str, Any]],
    records: list[dict[str, Any]],
    rates: tuple[str, ...] = POOLED_RATES,
) -> None:
    """Replace the over-seeds t-interval of each rate in ``rows`` (from
    :func:`~bystander.sweeps.aggregate`) by the 95 % Wilson interval over all
    evaluation episodes pooled across seeds (``overrides["eval_episodes"]`` per trial):
    with few seeds a t-interval over seed means is uninformative for a rate."""
    from bystander.stats import wilson_ci

    pooled: dict[str, list[float]] = {}
    for r in records:
        key = json.dumps(r["trial"]["point"], sort_keys=True, default=str)
        n = float(r["trial"]["overrides"].get("eval_episodes", 0))
        acc = pooled.setdefault(key, [0.0] * (1 + len(rates)))
        acc[0] += n
        for i, k in enumerate(rates):
            v = _f(r["metrics"].get(k))
            acc[1 + i] += v * n if math.isfinite(v) else 0.0
    for row in rows:
        point = {k: row[k] for k in row if not _is_stat(k, row, rates)}
        acc = pooled.get(json.dumps(point, sort_keys=True, default=str))
        if not acc or acc[0] <= 0:
            continue
        for i, k in enumerate(rates):
            if k in row:
                _, lo, hi = wilson_ci(int(round(acc[1 + i])), int(acc[0]))
                row[f"{k}_lo"], row[f"{k}_hi"] = lo, hi
        row["n_episodes"] = int(acc[0])


def _is_stat(key: str, row: dict[str, Any], rates: tuple[str, ...]) -> bool:
    """Whether ``key`` of an aggregated row is a statistic (not a point key)."""
    if key == "n_seeds":
        return True
    base = key[:-3] if key.endswith(("_lo", "_hi")) else key
    return f"{base}_lo" in row


# ------------------------------------------------------------------------------ plots


def plt():
    """matplotlib.pyplot on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def errorbar(ax: Any, rows: list[dict[str, Any]], x: str, y: str, label: str | None = None,
             annotate: str | None = None, **kw: Any) -> None:  # fmt: skip
    """Points (mean) with error bars in both directions from aggregated rows.

    Bars: rates with an episode-pooled interval (:func:`pool_rate_ci`, row has
    ``n_episodes``) show that 95 % Wilson interval; every other metric shows +-1
    standard error over seeds (the row's 95 % Student-t half-width / t), since a 95 %
    t-interval over two or three seeds spans the whole axis and hides the points. Bars
    of quantities that cannot be negative (every point >= 0) stop at 0.
    """
    from bystander.stats import t_critical_95

    pts = [r for r in rows if math.isfinite(_f(r.get(x))) and math.isfinite(_f(r.get(y)))]
    if not pts:
        return
    xs = np.array([r[x] for r in pts], float)
    ys = np.array([r[y] for r in pts], float)

    def err(key: str, centre: np.ndarray) -> np.ndarray:
        lo = np.array([_f(r.get(f"{key}_lo")) for r in pts])
        hi = np.array([_f(r.get(f"{key}_hi")) for r in pts])
        for i, r in enumerate(pts):
            if key in POOLED_RATES and "n_episodes" in r:
                continue  # a Wilson interval over the pooled episodes: keep it
            n = int(_f(r.get("n_seeds")) or 0)
            if n >= 2:
                half = (hi[i] - lo[i]) / 2.0 / t_critical_95(n - 1)
                lo[i], hi[i] = centre[i] - half, centre[i] + half
        if (centre >= 0).all():
            lo = np.maximum(lo, 0.0)
        e = np.vstack([centre - lo, hi - centre])
        return np.where(np.isfinite(e), np.maximum(e, 0), 0.0)

    ax.errorbar(xs, ys, xerr=err(x, xs), yerr=err(y, ys), fmt=kw.pop("fmt", "o"), capsize=3,
                label=label, **kw)  # fmt: skip
    if annotate:
        for r, xx, yy in zip(pts, xs, ys, strict=True):
            ax.annotate(f"{_fmt_val(r.get(annotate))}", (xx, yy), textcoords="offset points",
                        xytext=(5, 4), fontsize=7)  # fmt: skip


def _fmt_val(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def limit_x(ax: Any, rows: list[dict[str, Any]], *keys: str) -> None:
    """x axis from 0 to 1.3 x the largest finite mean of ``keys`` (CI bars of few
    seeds may extend beyond and are clipped)."""
    vals = [_f(r.get(k)) for r in rows for k in keys]
    vals = [v for v in vals if math.isfinite(v)]
    if vals and max(vals) > 0:
        ax.set_xlim(0.0, 1.3 * max(vals))


def legend(ax: Any, **kw: Any) -> None:
    """``ax.legend`` when something is labelled (no warning on empty plots)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)


def save(fig: Any, path: Path) -> Path:
    """Tight layout, save PNG, close."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt().close(fig)
    return path


# ------------------------------------------------------------------------------ pages


def command_line(study: str, preset: dict[str, Any]) -> str:
    """The command that reproduces a study with this preset."""
    return f"python experiments/studies/{study}.py --preset {shlex.quote(str(preset['name']))}"


def write_page(results_dir: Path, title: str, study: str, preset: dict[str, Any],
               sections: list[str]) -> Path:  # fmt: skip
    """``README.md`` of a study's results: title, reproduce command, sections."""
    lines = [f"# {title}", "", f"Preset `{preset['name']}`. Reproduce:", "",
             f"    {command_line(study, preset)}", "",
             "Plots: means over seeds; bars are +-1 standard error over seeds, or the 95 % "
             "Wilson interval over pooled evaluation episodes for success / collision rates. "
             "Tables: 95 % intervals.", ""]  # fmt: skip
    text = "\n".join(lines + sections) + "\n"
    path = results_dir / "README.md"
    path.write_text(text, encoding="utf-8")
    return path


def finite(v: Any) -> bool:
    """Whether ``v`` is a finite number."""
    return math.isfinite(_f(v))


def interp_at(rows: list[dict[str, Any]], x: str, y: str, at: float) -> float:
    """Linear interpolation of ``y`` at ``x = at`` along ``rows`` sorted by ``x``
    (NaN outside the range)."""
    pts = sorted((r[x], r[y]) for r in rows if finite(r.get(x)) and finite(r.get(y)))
    if len(pts) == 0 or at < pts[0][0] or at > pts[-1][0]:
        return math.nan
    xs, ys = zip(*pts, strict=True)
    return float(np.interp(at, xs, ys))


# -------------------------------------------------------------------------------- CLI


def build_parser(study: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=f"Run the {study} study (sweep, then report).")
    p.add_argument(
        "--preset", default="small", help="smoke | small | medium | full | a preset YAML path"
    )
    p.add_argument("--backend", choices=BACKENDS, default="local")
    p.add_argument("--workers", type=int, default=1, help="trials at once")
    p.add_argument("--ray-address", default=None, help="existing Ray cluster (default: local)")
    p.add_argument("--out", type=Path, default=None,
                   help="results root (default experiments/results/<preset>)")  # fmt: skip
    p.add_argument("--rerun", action="store_true", help="run finished trials again")
    p.add_argument("--max-trials", type=int, default=None, help="run at most N pending trials now")
    p.add_argument("--report-only", action="store_true", help="rebuild the page from records")
    return p


def results_dir_for(study: str, preset: dict[str, Any], out: Path | None) -> Path:
    root = Path(out) if out is not None else DEFAULT_OUT / str(preset["name"])
    return root / study


def run_study(module: Any, preset: dict[str, Any], *, backend: str = "local", workers: int = 1,
              ray_address: str | None = None, out: Path | None = None, rerun: bool = False,
              max_trials: int | None = None, report_only: bool = False,
              log: Any = print) -> dict[str, Any]:  # fmt: skip
    """Sweep ``module``'s trials (resuming), then write its report; returns the headline."""
    preset = dict(preset, _out=out)
    results_dir = results_dir_for(module.NAME, preset, out)
    results_dir.mkdir(parents=True, exist_ok=True)
    trials = module.build_trials(preset)
    if not report_only:
        if hasattr(module, "prepare"):
            module.prepare(preset, results_dir)
        records = run_sweep(trials, module.TRIAL_FN, results_dir, backend=backend,
                            workers=workers, ray_address=ray_address, sys_path=[str(STUDIES_DIR)],
                            rerun=rerun, max_trials=max_trials, log=log)  # fmt: skip
        failed = [r for r in records if r.get("status") == "error"]
        for r in failed[:3]:
            log(f"FAILED {r['trial_id']}: {r.get('error')}\n{r.get('traceback', '')[-1500:]}")
    ids = {t.trial_id for t in trials}
    records = [r for r in load_results(results_dir) if r["trial_id"] in ids]
    if not records:
        raise RuntimeError(f"{module.NAME}: no finished trials in {results_dir}")
    headline = module.report(records, preset, results_dir)
    headline = {"study": module.NAME, "preset": preset["name"],
                "command": command_line(module.NAME, preset),
                "trials_done": len(records), "trials": len(trials), **headline}  # fmt: skip
    atomic_write_json(results_dir / "headline.json", headline)
    return headline


def main(module: Any, argv: list[str] | None = None) -> int:
    """Command line of a study script."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    args = build_parser(module.NAME).parse_args(argv)
    preset = load_preset(args.preset)
    headline = run_study(module, preset, backend=args.backend, workers=args.workers,
                         ray_address=args.ray_address, out=args.out, rerun=args.rerun,
                         max_trials=args.max_trials, report_only=args.report_only)  # fmt: skip
    print(json.dumps(headline, indent=1, default=str))
    return 0


if str(STUDIES_DIR) not in sys.path:
    sys.path.insert(0, str(STUDIES_DIR))
