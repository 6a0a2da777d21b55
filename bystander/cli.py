"""The ``bystander`` command line.

::

    bystander train     [-c CONFIG] [--set KEY=VALUE ...] [flags]   train an ego with SB3
    bystander train     --resume RUN_DIR [--set train.total_timesteps=N]
    bystander evaluate  RUN_DIR [--episodes N] [--seed S]          seeded episodes, CIs, CSV
    bystander render    RUN_DIR [--out FILE.gif] [--human]          episode with predictions
    bystander demo      [--quick]                                   the main job
    bystander config    [-c CONFIG] [--set KEY=VALUE ...]            print a resolved config
    bystander llm ...                                                the text domain (if installed)

Config precedence: built-in defaults < ``-c`` YAML file < flags < ``--set`` overrides.
Every subcommand has ``--help``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from bystander.atomic import RunDirBusyError
from bystander.config import RunConfig
from bystander.dataconfig import add_flags, config_flags, flag_overrides

__all__ = ["build_parser", "main"]


def _set_arg(p: argparse.ArgumentParser, help: str) -> None:  # noqa: A002 - argparse's name
    """The repeatable ``--set KEY=VALUE`` config override (into ``args.overrides``)."""
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help
    )


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c", "--config", help="YAML config file (e.g. experiments/configs/lagrangian.yaml)"
    )
    _set_arg(p, "override a config field by dotted path, e.g. --set train.n_envs=4 (repeatable)")


def _train_flags(p: argparse.ArgumentParser) -> None:
    """The shortcuts: one per :class:`~bystander.config.RunConfig` field whose metadata
    names a ``flag`` (the constraint ones from
    :class:`~bystander.envs.constraint_config.ConstraintConfig`)."""
    g = p.add_argument_group("shortcuts (each is a --set override)")
    add_flags(g, RunConfig)
    g.add_argument(
        "--agents",
        type=int,
        metavar="K",
        help="controlled cars per world, one shared policy (env.config.n_controlled; "
        "needs train.vec_env=batched)",
    )


def _flag_overrides(args: argparse.Namespace) -> list[str]:
    out = flag_overrides(args, config_flags(RunConfig))
    if getattr(args, "agents", None) is not None:
        out.append(f"env.config.n_controlled={args.agents}")
    return out


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``bystander`` command (all subcommands)."""
    parser = argparse.ArgumentParser(
        prog="bystander",
        description="Train agents that stay predictable to the weaker agents around them.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train a driving ego with SB3",
        description="Train a driving ego with SB3 (PPO by default).",
    )
    _config_args(p)
    _train_flags(p)
    p.add_argument("--run-dir", help="run directory (default runs/<timestamp>-<name>)")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a run from its latest checkpoint (or a checkpoint dir)",
    )
    p.add_argument(
        "--evaluate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="evaluate after training (eval.episodes)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate",
        help="evaluate a trained ego",
        description="Run N seeded episodes; print rates, ADE/FDE, costs with 95% CIs; write CSVs.",
    )
    p.add_argument(
        "run_dir", metavar="RUN_DIR", nargs="?", help="the run (optional with --scripted)"
    )
    p.add_argument(
        "--scripted",
        action="append",
        metavar="DRIVER",
        help="evaluate a scripted driver instead, on the run's env and observers (or the "
        "defaults with --set): speed:<m/s>, stop, habit:<turn>[:<m/s>], "
        "route:<habit>[:<m/s>] (shortest, straight-first, no-left, always-right), frontier "
        "(speeds 3, 6, 9, 12 and stop) or routes (the four route habits); repeatable",
    )
    p.add_argument("--episodes", type=int, help="episodes (default eval.episodes)")
    p.add_argument("--seed", type=int, help="first episode seed (default eval.seed)")
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of greedy")
    p.add_argument(
        "--csv-dir", help="where to write eval_episodes.csv / eval_summary.csv (default RUN_DIR)"
    )
    _set_arg(p, "override the run's config (e.g. env.config...)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "render",
        help="render an episode with the predictions overlaid",
        description="Write a GIF/MP4 of one episode (or open a window) with each observer's predicted trajectory and a HUD.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", help="output file .gif or .mp4 (default RUN_DIR/episode.gif)")
    p.add_argument("--seed", type=int, help="episode seed (default render.seed)")
    p.add_argument(
        "--max-steps", type=_positive_int, help="frames at most (default render.max_steps)"
    )
    p.add_argument("--human", action="store_true", help="open a window instead of writing a file")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser(
        "demo",
        help="the main job: train, evaluate, render, report",
        description="Train an unconstrained and a Lagrangian-constrained ego, evaluate and render both, run the text env, write a report.",
    )
    p.add_argument(
        "--quick", action="store_true", help="much smaller budget (~1 min), for smoke tests"
    )
    p.add_argument("--run-dir", help="run directory (default runs/<timestamp>-demo)")
    p.add_argument(
        "--jobs", type=int, default=None, help="parallel training processes (default: min(2, CPUs))"
    )
    p.add_argument("--no-llm", action="store_true", help="skip the text-environment part")
    _set_arg(p, "override both egos' configs")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "config",
        help="print a resolved config",
        description="Print the config that train would use, as YAML.",
    )
    _config_args(p)
    _train_flags(p)
    p.set_defaults(func=cmd_config)

    _mount_llm(sub)
    return parser


def _mount_llm(sub: Any) -> None:
    """Mount ``bystander llm`` from :mod:`bystander.llm.cli` when it is importable."""
    try:
        from bystander.llm import cli as llm_cli
    except ImportError:
        return
    if hasattr(llm_cli, "build_parser"):
        try:
            llm_cli.build_parser(sub)
        except Exception as e:  # pragma: no cover - a broken plug-in must not break the CLI
            print(f"warning: bystander llm unavailable: {e}", file=sys.stderr)


def _positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {value}")
    return value


def _resolve(args: argparse.Namespace) -> Any:
    from bystander.config import load_config

    return load_config(args.config, overrides=_flag_overrides(args) + list(args.overrides))


def cmd_train(args: argparse.Namespace) -> int:
    from bystander.agents.evaluation import evaluate_run, format_summary
    from bystander.agents.training import Trainer

    if args.resume:
        from bystander.agents.checkpoint import load_checkpoint
        from bystander.config import load_config

        saved = load_checkpoint(args.resume).config.to_dict()  # verified before it is read
        cfg = load_config(
            args.config, overrides=_flag_overrides(args) + list(args.overrides), base=saved
        )
    else:
        cfg = _resolve(args)
    trainer = Trainer(cfg, run_dir=args.run_dir, resume=args.resume)
    try:
        print(f"run directory: {trainer.run_dir}")
        result = trainer.train()
    finally:
        trainer.close()
    print(
        f"trained {result.steps} steps in {result.wall_s:.1f} s ({result.steps_per_s:.0f} steps/s); "
        f"checkpoint {result.checkpoint}"
    )
    if args.evaluate:
        ev = evaluate_run(result.run_dir)
        print(format_summary(ev))
    print(f"run directory: {result.run_dir}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from bystander.agents.evaluation import evaluate_run, format_summary

    if args.scripted:
        return _evaluate_scripted(args)
    if args.run_dir is None:
        raise ValueError("RUN_DIR: expected a run directory (or --scripted DRIVER)")
    ev = evaluate_run(
        args.run_dir,
        episodes=args.episodes,
        seed=args.seed,
        deterministic=False if args.stochastic else None,
        csv_dir=args.csv_dir,
        overrides=args.overrides,
    )
    print(format_summary(ev))
    print(f"CSV written to {Path(args.csv_dir or args.run_dir)}")
    return 0


def _evaluate_scripted(args: argparse.Namespace) -> int:
    """``evaluate --scripted``: scripted drivers on the same seeds and observers."""
    from bystander.agents.evaluation import format_summary
    from bystander.agents.heldout import evaluate_batched
    from bystander.agents.scripted import ROUTE_HABITS, SCRIPTED_SPEEDS, scripted_driver
    from bystander.agents.training import build_predictor
    from bystander.config import load_config

    base = None
    if args.run_dir is not None:
        cfg_path = Path(args.run_dir) / "config.yaml"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"RUN_DIR: no config.yaml in {str(args.run_dir)!r}")
        base = load_config(cfg_path).to_dict()
    cfg = load_config(base=base, overrides=list(args.overrides))
    if (
        cfg.env.config.get("action_type", "discrete") == "continuous"
        or cfg.env.config.get("observation", "vector") != "vector"
    ):
        raise ValueError(
            "--scripted: the scripted drivers use meta-actions or speed levels and the vector "
            "observation (env.config.action_type=discrete, factored or target_speed, "
            "env.config.observation=vector)"
        )
    specs: list[str] = []
    for spec in args.scripted:
        if spec == "frontier":
            specs += [f"speed:{v:g}" for v in SCRIPTED_SPEEDS] + ["stop"]
        elif spec == "routes":
            specs += [f"route:{h}" for h in ROUTE_HABITS]
        else:
            specs.append(spec)
    drivers = [scripted_driver(s, cfg.env.config) for s in specs]
    predictor = build_predictor(cfg) if cfg.predictor.kind != "none" else None
    for spec, driver in zip(specs, drivers, strict=True):
        ev = evaluate_batched(
            driver, cfg, episodes=args.episodes, seed=args.seed, predictor=predictor
        )
        print(f"scripted {spec}:")
        print(format_summary(ev))
        if args.csv_dir:
            ev.write_csv(Path(args.csv_dir) / spec.replace(":", "-"))
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from bystander.agents.evaluation import render_run

    out = render_run(
        args.run_dir,
        out=None if args.human else (args.out or str(Path(args.run_dir) / "episode.gif")),
        seed=args.seed,
        max_steps=args.max_steps,
        human=args.human,
    )
    if out is not None:
        print(f"wrote {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from bystander.demo import run_demo

    run_demo(
        quick=args.quick,
        run_dir=args.run_dir,
        jobs=args.jobs,
        llm=not args.no_llm,
        overrides=args.overrides,
    )
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    print(yaml.safe_dump(_resolve(args).to_dict(), sort_keys=False), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bystander`` script; returns the exit status.

    Config errors (bad values, unknown keys, corrupt checkpoints, a run directory in use)
    print one clear line to stderr and exit with status 2 (``BYSTANDER_DEBUG=1`` re-raises them instead).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, OSError, RunDirBusyError) as e:
        if os.environ.get("BYSTANDER_DEBUG"):
            raise
        print(f"bystander {args.command}: error: {e}", file=sys.stderr)
        print("(set BYSTANDER_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
