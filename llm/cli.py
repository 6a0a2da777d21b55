"""``bystander llm train|evaluate``: the text domain's command line.

Mounted by :mod:`bystander.cli` through :func:`build_parser` (``bystander llm ...``);
also runnable alone: ``python -m bystander.llm.cli train --steps 20``.

Constraint flags are generated from the shared
:class:`~bystander.envs.constraint_config.ConstraintConfig`, as on the driving side:
``--constraint none|shaping|lagrangian|pid``, ``--weight``, ``--budget``,
``--lambda-lr``, ``--lambda-init``, ``--lambda-max``, ``--lambda-min``,
``--kp/--ki/--kd`` (config ``grpo.constraint.<field>``). Observer flags:
``--predictor frozen|cotrained``, ``--seed``,
``--run-dir``, ``--resume``. Text-only: ``--policy`` and ``--observer`` (hub id,
local path, or the built-in ``tiny-policy``/``tiny-slm``; ``--observer`` repeats),
``--views``, ``--combine``, ``--review-threshold``/``--review-mode``, GRPO sizes.

A run directory holds ``config.json``, ``log.jsonl`` (one line per step),
``checkpoint/`` (verified, exact resume), ``policy/`` (``save_pretrained``),
``eval_before.json`` / ``eval_after.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from bystander.atomic import abandon_run_dir, atomic_open, claim_run_dir
from bystander.dataconfig import add_flags, config_flags
from bystander.envs.constraint_config import ConstraintConfig
from bystander.envs.scoring import COMBINE
from bystander.llm.grpo_config import text_constraint

__all__ = ["build_parser", "build_trainer", "llm_evaluate", "llm_train", "main"]

_NOT_FLAGS = ("constraint.cost_normalization",)
"""Constraint flags the text trainer does not offer (its cost is already nats/token)."""


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--policy", default="tiny-policy", help="policy: hub id, local path or tiny-policy"
    )
    p.add_argument(
        "--observer",
        action="append",
        default=None,
        help="observer SLM: hub id, local path or tiny-slm (repeatable; default tiny-slm)",
    )
    p.add_argument(
        "--heldout-observer",
        default="tiny-slm-heldout",
        help="held-out observer for evaluation only, never the reward ('none': no such "
        "observer; default the shipped tiny-slm-heldout)",
    )
    p.add_argument(
        "--views",
        default="prefix:0.5,mask:0.7,full",
        help="observer views, e.g. prefix:0.5,mask:0.7,window:16,full-noprompt",
    )
    p.add_argument("--combine", choices=COMBINE, default="mean", help="combine observers")
    add_flags(
        p.add_argument_group("constraint (the shared ConstraintConfig; nats/token)"),
        ConstraintConfig,
        "constraint",
        defaults=text_constraint(),
        exclude=_NOT_FLAGS,
    )
    p.add_argument(
        "--predictor",
        choices=("frozen", "cotrained"),
        default="frozen",
        help="frozen observers, or co-trained on the policy's outputs (NLL)",
    )
    p.add_argument("--review-threshold", type=float, default=None, help="review gate (nats/token)")
    p.add_argument("--review-mode", choices=("withhold", "flag"), default="withhold")
    p.add_argument("--min-length", type=int, default=0, help="minimum-length guard (tokens)")
    p.add_argument("--length-penalty", type=float, default=0.5, help="penalty under --min-length")
    p.add_argument("--steps", type=int, default=20, help="GRPO steps (total, also on --resume)")
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--prompts-per-step", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--beta", type=float, default=0.04, help="KL coefficient")
    p.add_argument("--tasks", default="generated", help="GSM8K-format JSONL path, or 'generated'")
    p.add_argument("--num-tasks", type=int, default=512, help="generated training tasks")
    p.add_argument(
        "--eval-prompts", type=int, default=32, help="held-out prompts for evaluation (0: skip)"
    )
    p.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help="held-out evaluation every N GRPO steps during training, to RUN_DIR/heldout.csv "
        "(0: off)",
    )
    p.add_argument(
        "--eval-every-prompts",
        type=int,
        default=100,
        help="held-out prompts of each --eval-every evaluation (x 2 samples)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--run-dir", default=None, help="default runs/<timestamp>-llm")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a run exactly")
    p.add_argument("--checkpoint-every", type=int, default=5)
    p.add_argument("--tensorboard", action="store_true")


def build_parser(subparsers: Any | None = None) -> argparse.ArgumentParser:
    """Add ``llm train`` / ``llm evaluate`` to ``subparsers`` (or build a standalone parser)."""
    if subparsers is None:
        parser = argparse.ArgumentParser(prog="bystander llm", description=__doc__.split("\n")[0])
        sub = parser.add_subparsers(dest="llm_command")
    else:
        parser = subparsers.add_parser("llm", help="the text domain: GRPO with SLM observers")
        sub = parser.add_subparsers(dest="llm_command")
    t = sub.add_parser("train", help="train a policy with GRPO under a predictability constraint")
    _train_args(t)
    t.set_defaults(func=_cmd_train)
    e = sub.add_parser("evaluate", help="accuracy and SLM nats/token of a run's policy")
    e.add_argument("run_dir", nargs="?", default=None, metavar="RUN_DIR")
    e.add_argument("--policy", default=None, help="evaluate this model instead of RUN_DIR/policy")
    e.add_argument("--observer", action="append", default=None)
    e.add_argument("--views", default=None)
    e.add_argument("--heldout-observer", default=None, help="held-out observer ('none': off)")
    e.add_argument("--eval-prompts", type=int, default=64)
    e.add_argument("--samples", type=int, default=2, help="completions per prompt")
    e.add_argument("--seed", type=int, default=1234)
    e.add_argument("--device", default="cpu")
    e.set_defaults(func=_cmd_evaluate)
    parser.set_defaults(func=lambda args: (parser.print_help(), 0)[1])
    return parser


def _config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "policy": args.policy,
        "observers": args.observer or ["tiny-slm"],
        "heldout_observer": None if args.heldout_observer == "none" else args.heldout_observer,
        "tasks": args.tasks,
        "num_tasks": args.num_tasks,
        "eval_prompts": args.eval_prompts,
        "eval_every": args.eval_every,
        "eval_every_prompts": args.eval_every_prompts,
        "device": args.device,
        "grpo": {
            "group_size": args.group_size,
            "prompts_per_step": args.prompts_per_step,
            "max_new_tokens": args.max_new_tokens,
            "temperature": args.temperature,
            "lr": args.lr,
            "beta": args.beta,
            "views": args.views,
            "combine": args.combine,
            "constraint": _constraint_from_args(args),
            "review_threshold": args.review_threshold,
            "review_mode": args.review_mode,
            "min_length": args.min_length,
            "length_penalty": args.length_penalty,
            "co_train": args.predictor == "cotrained",
            "seed": args.seed,
            "tensorboard": args.tensorboard,
        },
    }


def _constraint_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The whole ``grpo.constraint`` section: the text defaults, the flags on top."""
    given = {
        fl.key.removeprefix("constraint."): getattr(args, fl.dest)
        for fl in config_flags(ConstraintConfig, "constraint", _NOT_FLAGS)
    }
    return asdict(replace(text_constraint(), **given))


def _observer_panel(names: list[str], views: str, policy_tok: Any, device: str) -> tuple[Any, str]:
    """Predictors by type and the views string with one observer type per SLM."""
    from bystander.envs.text_v0 import parse_views
    from bystander.llm.models import load_causal_lm
    from bystander.llm.observers import SLMPredictor

    predictors = {}
    base = parse_views(views)
    out_views = []
    for i, name in enumerate(names):
        model, tok = load_causal_lm(name, device=device)
        kind = "slm" if len(names) == 1 else f"slm{i}"
        predictors[kind] = SLMPredictor(model, tok, policy_tokenizer=policy_tok)
        out_views += [replace(v, type=kind) for v in base]
    return predictors, out_views


def build_trainer(config: dict[str, Any], run_dir: str | Path | None) -> Any:
    """A :class:`~bystander.llm.grpo.GRPOTrainer` from a run config (see :func:`llm_train`)."""
    from bystander.envs.text_tasks import load_tasks
    from bystander.llm.grpo import GRPOTrainer
    from bystander.llm.grpo_config import GRPOConfig
    from bystander.llm.models import load_causal_lm

    known = {f.name for f in fields(GRPOConfig)}
    unknown = set(config["grpo"]) - known
    if unknown:
        raise ValueError(f"grpo config: unknown keys {sorted(unknown)}")
    policy, tok = load_causal_lm(config["policy"], device=config["device"])
    predictors, views = _observer_panel(
        config["observers"], config["grpo"]["views"], tok, config["device"]
    )
    cfg = GRPOConfig(**config["grpo"])
    tasks = load_tasks(config["tasks"], n=config["num_tasks"], seed=config["grpo"]["seed"])
    heldout = None
    if config.get("heldout_observer"):
        from bystander.llm.observers import SLMPredictor

        h_model, h_tok = load_causal_lm(config["heldout_observer"], device=config["device"])
        heldout = SLMPredictor(h_model, h_tok, policy_tokenizer=tok)
    trainer = GRPOTrainer(policy, tok, tasks, predictors, cfg, run_dir=run_dir, heldout=heldout)
    trainer.views = views
    return trainer


def _heldout(config: dict[str, Any]) -> list[Any]:
    from bystander.envs.text_tasks import generate_tasks, load_tasks

    if config["tasks"] == "generated":
        return generate_tasks(max(1, config["eval_prompts"]), seed=10_000 + config["grpo"]["seed"])
    return load_tasks(config["tasks"])[-max(1, config["eval_prompts"]) :]


def _periodic_heldout(trainer: Any, config: dict[str, Any]) -> Any | None:
    """The run's :class:`~bystander.llm.heldout.TextHeldOutEvaluation` (``eval_every``
    GRPO steps; ``None`` when 0 or absent), on ``eval_every_prompts`` held-out tasks: the
    ones ``llm evaluate --eval-prompts <that many>`` uses (generated: the first of the
    run's held-out seed; a JSONL file: its last lines)."""
    every, n = config.get("eval_every") or 0, config.get("eval_every_prompts", 100)
    for name, value, low in (("eval_every", every, 0), ("eval_every_prompts", n, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    if not every:
        if trainer.multiplier is not None and trainer.cfg.constraint.signal == "heldout":
            raise ValueError(
                "constraint.signal: 'heldout' updates lambda from the held-out evaluations "
                "during training: give --eval-every N (GRPO steps, >= 1)"
            )
        return None
    from bystander.llm.heldout import TextHeldOutEvaluation

    return TextHeldOutEvaluation(trainer, _heldout({**config, "eval_prompts": n}), every)


def llm_train(args: argparse.Namespace | dict[str, Any]) -> dict[str, Any]:
    """Train (or resume) a run; returns ``{"run_dir", "before", "after", "last"}``.

    ``args``: parsed ``bystander llm train`` flags, or a run config dict (the
    content of ``config.json``) plus optional ``"run_dir"``, ``"steps"``,
    ``"resume"`` and ``"checkpoint_every"`` keys.
    """
    if isinstance(args, argparse.Namespace):
        opts = {"steps": args.steps, "resume": args.resume, "run_dir": args.run_dir,
                "checkpoint_every": args.checkpoint_every}  # fmt: skip
        config = _config_from_args(args)
    else:
        opts = {k: args.get(k) for k in ("steps", "resume", "run_dir", "checkpoint_every")}
        config = {k: v for k, v in args.items() if k not in opts}
    steps = int(opts["steps"] or 0)
    if opts["resume"]:
        run_dir = Path(opts["resume"])
        if not (run_dir / "config.json").is_file():
            raise FileNotFoundError(f"--resume: no config.json in {str(run_dir)!r}")
    else:
        run_dir = opts["run_dir"]
    # one writer per run directory: a second process refuses, naming the holder
    run_dir, lock, created = claim_run_dir(run_dir, "runs", "llm")
    try:
        return _train_locked(config, run_dir, opts, steps)
    except BaseException:
        if not (run_dir / "checkpoint").exists():  # rejected before its first checkpoint
            abandon_run_dir(run_dir, lock, created)
        raise
    finally:
        lock.release()


def _train_locked(
    config: dict[str, Any], run_dir: Path, opts: dict[str, Any], steps: int
) -> dict[str, Any]:
    if opts["resume"]:
        try:
            config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(
                f"{run_dir / 'config.json'}: not a valid JSON config ({err})"
            ) from None
    else:
        with atomic_open(run_dir / "config.json", "w", encoding="utf-8") as fh:
            fh.write(json.dumps(config, indent=2))
    trainer = build_trainer(config, run_dir)
    heldout = _heldout(config)
    periodic = _periodic_heldout(trainer, config)
    before = None
    if opts["resume"]:
        trainer.load_checkpoint(run_dir / "checkpoint")
        if periodic is not None:
            periodic.resume(trainer.step_count)
    else:
        # a fresh run owns the directory: no held-out rows of an earlier run may remain
        (run_dir / "heldout.csv").unlink(missing_ok=True)
        if config["eval_prompts"]:
            before = trainer.evaluate(heldout)
            with atomic_open(run_dir / "eval_before.json", "w", encoding="utf-8") as fh:
                fh.write(json.dumps(before, indent=2))
    every = int(opts["checkpoint_every"] or 0)
    last: dict[str, Any] = {}
    while trainer.step_count < steps:
        last = trainer.step()
        print(_fmt(last), flush=True)
        if periodic is not None and periodic.due(trainer.step_count):
            periodic.evaluate()
        if every and trainer.step_count % every == 0:
            trainer.save_checkpoint(run_dir / "checkpoint")
    trainer.save_checkpoint(run_dir / "checkpoint")
    trainer.policy.save_pretrained(run_dir / "policy")
    trainer.tokenizer.save_pretrained(run_dir / "policy")
    after = None
    if config["eval_prompts"]:
        after = trainer.evaluate(heldout)
        with atomic_open(run_dir / "eval_after.json", "w", encoding="utf-8") as fh:
            fh.write(json.dumps(after, indent=2))
    return {"run_dir": str(run_dir), "before": before, "after": after, "last": last}


def llm_evaluate(args: argparse.Namespace | dict[str, Any]) -> dict[str, float]:
    """Accuracy, reward, length and nats/token per observer of a run's (or any) policy."""
    a = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    run_dir = a.get("run_dir")
    if run_dir is not None:
        cfg_path = Path(run_dir) / "config.json"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"RUN_DIR: no config.json in {str(run_dir)!r}")
        config = json.loads(cfg_path.read_text())
        config["policy"] = a.get("policy") or str(Path(run_dir) / "policy")
    else:
        if not a.get("policy"):
            raise ValueError("evaluate: give RUN_DIR or --policy")
        from bystander.llm.grpo_config import GRPOConfig

        config = {"policy": a["policy"], "observers": ["tiny-slm"], "tasks": "generated",
                  "num_tasks": 16, "device": "cpu", "grpo": asdict(GRPOConfig())}  # fmt: skip
    if a.get("observer"):
        config["observers"] = a["observer"]
    if a.get("views"):
        config["grpo"]["views"] = a["views"]
    if a.get("heldout_observer"):
        h = a["heldout_observer"]
        config["heldout_observer"] = None if h == "none" else h
    else:
        config.setdefault("heldout_observer", "tiny-slm-heldout")
    config["device"] = a.get("device") or config.get("device", "cpu")
    config["eval_prompts"] = int(a.get("eval_prompts") or 64)
    trainer = build_trainer(config, None)
    return trainer.evaluate(
        _heldout(config), samples=int(a.get("samples") or 2), seed=int(a.get("seed") or 1234)
    )


def _fmt(log: dict[str, Any]) -> str:
    keys = [
        "step",
        "reward",
        "accuracy",
        "predictability_cost",
        "lambda",
        "kl",
        "length_mean",
        "escalations",
    ]
    return "  ".join(
        f"{k}={log[k]:.4g}" if isinstance(log[k], float) else f"{k}={log[k]}" for k in keys
    )


def _cmd_train(args: argparse.Namespace) -> int:
    out = llm_train(args)
    print(json.dumps({k: out[k] for k in ("run_dir", "before", "after")}, indent=2))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    print(json.dumps(llm_evaluate(args), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: ``python -m bystander.llm.cli train|evaluate ...``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
