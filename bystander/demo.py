"""The main job (``bystander demo``): two egos, evaluated, rendered, compared in a report.

1. Train two PPO egos on the built-in defaults (:class:`~bystander.config.RunConfig`)
   with :data:`DEMO_SETTINGS` (speed levels 2-12 m/s, the learner of Study 2):
   ``unconstrained`` (task reward only) and ``lagrangian`` (a lambda-conditioned ego
   under a per-metre predictability budget, lambda found by search on held-out
   evaluations; ``experiments/configs/conditioned.yaml``). Both see the same observers
   and constant-velocity predictors, so their ADE is comparable. With 2+ CPUs they
   train in parallel processes (one core each).
2. Evaluate both on the same seeded episodes (success, collisions, time to
   destination, ADE/FDE per observer type, costs, 95 % CIs; CSVs).
3. Render one episode of each with the prediction overlay (GIF).
4. Run the text environment with the same wrappers, when the LLM side provides
   ``bystander.llm.demo.run_text_demo`` (GRPO with the tiny models, at its quick
   budget so that the whole demo fits in ~10 minutes; in a third process beside the
   two trainings).
5. Write ``report.md`` with the figures and the utility-vs-predictability plot, and
   print the run directory.

Budgets: the full demo is sized for ~10 minutes on a 2-core CPU machine (training
stops at ``train.total_timesteps`` or ``train.max_minutes``, whichever comes first);
``--quick`` is a ~1 minute smoke run.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from bystander.config import RunConfig, load_config

__all__ = [
    "DEMO_SETTINGS",
    "EGOS",
    "FULL",
    "QUICK",
    "demo_configs",
    "run_demo",
    "text_demo_available",
]

DEMO_SETTINGS: list[str] = [
    # experiments/configs/conditioned.yaml's env, learner and held-out evaluations (a
    # test keeps them equal): absolute speed levels, turns from the navigation
    "env.config.action_type=target_speed",
    "env.config.speed_levels=[2, 4, 6, 8, 10, 12]",
    "env.train_overrides.start_target_speeds=[0, 3, 6, 9, 12]",
    "train.n_envs=16",
    "train.lr_schedule=linear",
    "train.hyperparams.n_steps=128",
    "train.hyperparams.batch_size=512",
    "train.hyperparams.gamma=0.998",
    "train.hyperparams.gae_lambda=0.99",
    "eval.every=32768",
    "eval.heldout_episodes=300",
]
"""What both egos share over the built-in defaults: one world, one learner, comparable
figures."""

EGOS: dict[str, tuple[list[str], str]] = {
    "unconstrained": (
        ["name=unconstrained", "constraint.mode=none"],
        "PPO on the task reward only (progress, arrival, collision, time).",
    ),
    "lagrangian": (
        [
            "name=lagrangian",
            # the constraint of experiments/configs/conditioned.yaml (a test keeps them equal)
            "train.exploration_hold=30",
            "constraint.mode=lagrangian",
            "constraint.channel=predictability",
            "constraint.cost_normalization=per_metre",
            "constraint.budget=0.3241",
            "constraint.credit_margin=0.3",
            "constraint.signal=heldout",
            "constraint.conditioned=true",
            "constraint.lambda_step=search",
            "constraint.search_episodes=256",
            "constraint.lambda_init=0.3",
            "constraint.lambda_min=0.01",
            "constraint.lambda_max=10.0",
            "constraint.delay=2",
            "constraint.window=2",
        ],
        "A lambda-conditioned PPO ego: every training world draws its own lambda in "
        "[0.01, 10] per episode, is rewarded with r - lambda * c (c = the observers' "
        "prediction error per metre of route, constant-velocity predictors) and sees "
        "lambda; exploration noise held for 3 s. Before each held-out evaluation lambda is "
        "set where the policy's measured cost curve meets the 0.3241 m/m budget (70 % of "
        "the unconstrained ego's held-out cost).",
    ),
}
"""The two egos: config overrides over the built-in defaults, and a description."""

FULL: list[str] = [
    "train.total_timesteps=1000000",
    "train.max_minutes=4",
    "eval.episodes=50",
]
"""Budget of the full demo (the training budget itself is the defaults')."""

QUICK: list[str] = [
    "train.total_timesteps=4096",
    "train.n_envs=4",
    "train.hyperparams.n_steps=128",
    "train.hyperparams.batch_size=128",
    "train.max_minutes=0.75",
    "eval.episodes=5",
    "eval.every=2048",
    "eval.heldout_episodes=8",
    "constraint.search_points=4",
    "constraint.search_episodes=2",
    "constraint.delay=0",  # two evaluations: lambda moves at both
    "render.max_steps=60",
    "render.every=3",
]
"""Budget of ``--quick``."""


def demo_configs(quick: bool = False, overrides: list[str] | None = None) -> dict[str, RunConfig]:
    """The two egos' configs (built-in defaults + :data:`DEMO_SETTINGS` + :data:`EGOS` +
    budget + ``overrides``)."""
    budget = QUICK if quick else FULL
    return {
        label: load_config(overrides=[*DEMO_SETTINGS, *ego, *budget, *(overrides or [])])
        for label, (ego, _) in EGOS.items()
    }


def _train_eval_render(label: str, cfg: RunConfig, run_dir: str) -> dict[str, Any]:
    """Child process: train, evaluate, render one ego. Returns plain data."""
    import torch

    torch.set_num_threads(1)
    from bystander.agents.evaluation import evaluate_run, render_run
    from bystander.agents.training import Trainer

    out: dict[str, Any] = {"label": label, "run_dir": run_dir}
    trainer = Trainer(cfg, run_dir=run_dir)
    try:
        result = trainer.train()
    finally:
        trainer.close()
    out["train"] = {
        "steps": result.steps,
        "wall_s": result.wall_s,
        "steps_per_s": result.steps_per_s,
        "lambdas": result.lambdas,
        "stats": result.stats,
        # held-out cost is judged in the budget's unit (report: cost against budget)
        "constraint": {
            "mode": cfg.constraint.mode,
            "budget": cfg.constraint.budget,
            "cost_normalization": cfg.constraint.cost_normalization,
        },
    }
    t0 = time.perf_counter()
    ev = evaluate_run(run_dir)
    out["eval_s"] = time.perf_counter() - t0
    out["episodes"] = ev.episodes
    try:
        gif = render_run(run_dir, out=Path(run_dir) / "episode.gif")
        out["gif"] = str(gif)
    except Exception as e:  # rendering is illustration; a failure must not lose the results
        out["gif"] = None
        out["render_error"] = f"{type(e).__name__}: {e}"
    return out


def text_demo_available() -> bool:
    """Whether the LLM side provides ``bystander.llm.demo.run_text_demo``."""
    try:
        from bystander.llm.demo import run_text_demo  # noqa: F401
    except ImportError:
        return False
    return True


def _text_demo(run_dir: str, quick: bool) -> tuple[str, str, float]:
    """Child process: the text-environment part; ``(title, markdown, seconds)``."""
    import torch

    torch.set_num_threads(1)
    from bystander.llm.demo import run_text_demo

    t0 = time.perf_counter()
    try:
        result = run_text_demo(Path(run_dir), quick=quick)
    except Exception as e:
        return (
            "Text environment",
            f"The text-environment demo failed: `{type(e).__name__}: {e}`",
            time.perf_counter() - t0,
        )
    if isinstance(result, tuple) and len(result) == 2:
        return (str(result[0]), str(result[1]), time.perf_counter() - t0)
    return ("Text environment", str(result), time.perf_counter() - t0)


def _scripted_frontier(cfg: RunConfig) -> list[Any]:
    """Constant-speed drivers and a stopped car, evaluated on ``cfg``'s env, observers
    and evaluation seeds (all episodes at once): the env's ``speed_levels`` on a
    ``target_speed`` env (the speeds its egos can choose), else
    :data:`~bystander.agents.scripted.SCRIPTED_SPEEDS`; on a grid (``env.config.grid``
    with more than one intersection) of an env whose egos choose their turns, also the
    route habits (:data:`~bystander.agents.scripted.ROUTE_HABITS`, 9 m/s)."""
    from bystander.agents.heldout import evaluate_batched
    from bystander.agents.scripted import ROUTE_HABITS, SCRIPTED_SPEEDS, scripted_driver
    from bystander.agents.training import build_predictor
    from bystander.envs.intersection.config import IntersectionConfig
    from bystander.report import EgoEntry

    predictor = build_predictor(cfg) if cfg.predictor.kind != "none" else None
    levels = cfg.env.config.get("action_type") == "target_speed"  # turns not chosen
    speeds = (
        IntersectionConfig.from_dict(cfg.env.config).speed_levels if levels else SCRIPTED_SPEEDS
    )
    specs = [f"speed:{v:g}" for v in speeds] + ["stop"]
    rows, cols = cfg.env.config.get("grid", (1, 1))
    if rows * cols > 1 and not levels:
        specs += [f"route:{h}" for h in ROUTE_HABITS]
    out = []
    for spec in specs:
        ev = evaluate_batched(scripted_driver(spec, cfg.env.config), cfg, predictor=predictor)
        desc = "scripted driver (no training): " + (
            "brakes to a standstill"
            if spec == "stop"
            else f"route habit {spec[6:]}, 9 m/s"
            if spec.startswith("route:")
            else f"holds {spec[6:]} m/s, shortest route"
        )
        out.append(EgoEntry(f"scripted {spec}", Path("."), ev, description=desc, scripted=True))
    return out


def run_demo(
    quick: bool = False,
    run_dir: str | Path | None = None,
    jobs: int | None = None,
    llm: bool = True,
    overrides: list[str] | None = None,
) -> Path:
    """Run the main job; returns (and prints) the run directory. See the module docstring."""
    from bystander.agents.evaluation import EvalResult, summarize
    from bystander.report import EgoEntry, write_report

    t_start = time.perf_counter()
    cfgs = demo_configs(quick, overrides)
    if run_dir is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = (
            Path(next(iter(cfgs.values())).runs_dir) / f"{stamp}-demo{'-quick' if quick else ''}"
        )
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cpus = os.cpu_count() or 1
    jobs = jobs if jobs is not None else min(len(cfgs), max(1, cpus))
    if jobs < 1:
        raise ValueError(f"jobs: expected an int >= 1, got {jobs}")
    if jobs == 1:
        # One core: the two trainings share the wall-time budget.
        for cfg in cfgs.values():
            if cfg.train.max_minutes is not None:
                cfg.train.max_minutes = cfg.train.max_minutes / len(cfgs)
    print(f"bystander demo: training {', '.join(cfgs)} with {jobs} process(es) into {run_dir}")

    results: dict[str, dict[str, Any]] = {}
    tasks = [(label, cfg, str(run_dir / label)) for label, cfg in cfgs.items()]
    with_text = llm and not quick and text_demo_available()  # --quick: driving only
    text: tuple[str, str, float] | None = None
    if jobs == 1:
        for t in tasks:
            results[t[0]] = _train_eval_render(*t)
        if with_text:
            text = _text_demo(str(run_dir / "text"), True)
    else:
        # The text demo (tiny models, its quick budget) runs beside the two trainings;
        # they are wall-time limited, so the three share the cores.
        workers = jobs + (1 if with_text else 0)
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            text_future = (
                pool.submit(_text_demo, str(run_dir / "text"), True) if with_text else None
            )
            futures = {t[0]: pool.submit(_train_eval_render, *t) for t in tasks}
            for label, fut in futures.items():
                results[label] = fut.result()
            if text_future is not None:
                text = text_future.result()

    entries = []
    for label, r in results.items():
        ev = EvalResult(episodes=r["episodes"], summary=summarize(r["episodes"]))
        entries.append(
            EgoEntry(
                label=label,
                run_dir=Path(r["run_dir"]),
                evaluation=ev,
                train=r["train"],
                gif=Path(r["gif"]) if r.get("gif") else None,
                description=EGOS[label][1],
            )
        )
        s = ev.summary
        print(
            f"  {label:14s} success {s['success']['mean']:.0%}  collision "
            f"{s['collision']['mean']:.0%}  ADE {s.get('ade', {}).get('mean', float('nan')):.3f} m  "
            f"({r['train']['steps']} steps, {r['train']['steps_per_s']:.0f} steps/s)"
        )
    # The scripted speed-only frontier on the same env, observers and seeds: a trained
    # ego that only matches a slower scripted driver has not shown predictability.
    base_cfg = cfgs["unconstrained"] if "unconstrained" in cfgs else next(iter(cfgs.values()))
    scripted = _scripted_frontier(base_cfg)
    for e in scripted:
        s = e.evaluation.summary
        print(
            f"  {e.label:14s} success {s['success']['mean']:.0%}  collision "
            f"{s['collision']['mean']:.0%}  ADE {s.get('ade', {}).get('mean', float('nan')):.3f} m"
        )
    extra: list[tuple[str, str]] = []
    if text is not None:
        extra.append((text[0], text[1]))
        print(f"  text environment done in {text[2]:.0f} s")
    elif llm and quick:
        extra.append(("Text environment", "Skipped in `--quick` mode."))
    elif llm:
        extra.append(
            (
                "Text environment",
                "Not run: `bystander.llm.demo.run_text_demo` is not available in this install.",
            )
        )
    wall = time.perf_counter() - t_start
    notes = [
        f"mode: {'quick' if quick else 'full'}; {jobs} training process(es) on {cpus} CPU(s)",
        f"total wall time: {wall / 60:.1f} min",
        "both egos: built-in defaults with the demo's settings (speed levels 2-12 m/s, the "
        "learner of `experiments/configs/conditioned.yaml`); each ego's config is saved in "
        "its run directory",
    ]
    for label, r in results.items():
        if r.get("render_error"):
            notes.append(f"render of {label} failed: {r['render_error']}")
    report = write_report(
        run_dir, entries + scripted, title="bystander demo", notes=notes, extra_sections=extra
    )
    with open(run_dir / "demo_summary.json", "w", encoding="utf-8") as f:
        json.dump(
            {
                "wall_s": wall,
                "quick": quick,
                "egos": {
                    e.label: {
                        "success": e.evaluation.metric("success"),
                        "collision": e.evaluation.metric("collision"),
                        "ade": e.evaluation.metric("ade"),
                        "fde": e.evaluation.metric("fde"),
                        "train": results[e.label]["train"],
                    }
                    for e in entries
                },
                "scripted": {
                    e.label: {k: e.evaluation.metric(k) for k in ("success", "collision", "ade")}
                    for e in scripted
                },
            },
            f,
            indent=1,
            default=float,
        )
    print(f"report: {report}")
    print(f"demo finished in {wall / 60:.1f} min; run directory: {run_dir}")
    return run_dir
