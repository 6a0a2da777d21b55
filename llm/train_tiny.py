"""Train the shipped tiny models: the policy, the training observer and the held-out observer.

    nice -n 10 python -m bystander.llm.train_tiny --out llm/weights

Each model is a GPT-2 built from its :class:`~bystander.llm.models.TinyConfig`
(:data:`~bystander.llm.models.TINY_POLICY`, ``TINY_SLM``, ``TINY_SLM_HELDOUT``) with
the byte-level tokenizer, trained on generated problems (data seed ``1000 + seed``)
with worked solutions in a mix of reasoning templates. One thread, so the result is
the same given the seeds. Written to ``OUT/<name>/`` (``config.json``,
``model.safetensors``), then ``OUT/manifest.json`` (the command, the configs, the data
seeds, the SHA-256 of every file, the training loss and time, the held-out
evaluation) and ``OUT/README.md``. :func:`bystander.llm.shipped.load_shipped` checks
the checksums on load.

The held-out evaluation: greedy accuracy of the policy on ``--eval-tasks`` problems
of seed ``10_000`` (the tasks ``bystander llm`` evaluates on by default), beside the
trivial heuristics (sum of the numbers, most common answer of the training data).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from bystander.atomic import atomic_open
from bystander.checkpointing import sha256_file
from bystander.envs.text_tasks import format_prompt, generate_tasks, heuristic_accuracy
from bystander.envs.text_tokens import byte_tokenizer
from bystander.llm.measures import answer_accuracy, complete, template_entropy
from bystander.llm.models import (
    TINY_POLICY,
    TINY_SLM,
    TINY_SLM_HELDOUT,
    TinyConfig,
    pretrain,
    pretraining_pairs,
    tiny_model,
)

__all__ = ["SHIPPED", "evaluate_policy", "main", "train_one"]

SHIPPED: dict[str, TinyConfig] = {
    "tiny-policy": TINY_POLICY,
    "tiny-slm": TINY_SLM,
    "tiny-slm-heldout": TINY_SLM_HELDOUT,
}
"""Name -> config of each shipped model."""

EVAL_SEED = 10_000
"""Seed of the held-out tasks (``bystander llm``'s default evaluation tasks, seed 0)."""


def train_one(
    cfg: TinyConfig,
    log_every: int = 100,
    eval_every: int = 0,
    *,
    init_from: str | os.PathLike[str] | None = None,
    stage: int = 0,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build and pretrain one model from ``cfg``; returns it and its training record.

    Args:
        log_every: Print the loss every this many steps (0: never).
        eval_every: Print the greedy held-out accuracy on 200 tasks every this many
            steps (0: never); it draws no random numbers, so training is unchanged.
        init_from: Continue from this saved model folder instead of a fresh init.
        stage: Training stage (0: from scratch); stage ``k`` draws fresh data (data
            seed ``1000 + seed + 100 k``) and batches (seed ``seed + 100 k``).
    """
    from transformers import GPT2LMHeadModel

    tok = byte_tokenizer()
    if init_from is not None:
        model = GPT2LMHeadModel.from_pretrained(init_from)
    else:
        model = tiny_model(cfg, tok)
    data_seed = 1000 + cfg.seed + 100 * stage
    cfg = replace(cfg, seed=cfg.seed + 100 * stage)
    tasks = generate_tasks(cfg.num_tasks, seed=data_seed, difficulty=cfg.difficulty)
    pairs = pretraining_pairs(tasks, cfg.template_weights, seed=cfg.seed)
    t0 = time.perf_counter()

    curve = []
    heldout = generate_tasks(200, seed=EVAL_SEED, difficulty=cfg.difficulty)
    heldout_prompts = [format_prompt(t.question) for t in heldout]

    def report(step: int, loss: float) -> None:
        if log_every and (step % log_every == 0 or step == cfg.steps):
            print(f"  step {step}/{cfg.steps} loss {loss:.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
        if eval_every and step % eval_every == 0:
            model.eval()
            acc = answer_accuracy(complete(model, tok, heldout_prompts), heldout)
            model.train()
            curve.append({"step": step, "greedy_accuracy_200": acc})
            print(f"  step {step}: greedy accuracy {acc:.3f} (200 held-out tasks)", flush=True)

    losses = pretrain(model, tok, pairs, cfg, callback=report)
    tail = losses[-50:] or [float("nan")]
    record = {
        "config": asdict(cfg),
        "stage": stage,
        "data_seed": data_seed,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "final_loss_mean_last_50": float(sum(tail) / len(tail)),
        "train_seconds": round(time.perf_counter() - t0, 1),
        **({"accuracy_curve": curve} if curve else {}),
    }
    return model, record


def evaluate_policy(
    model: torch.nn.Module, cfg: TinyConfig, n: int, seed: int = EVAL_SEED
) -> dict[str, Any]:
    """Greedy accuracy and template use of ``model`` on ``n`` held-out tasks, with the
    heuristics on the same tasks (most common answer taken from the training data)."""
    tok = byte_tokenizer()
    tasks = generate_tasks(n, seed=seed, difficulty=cfg.difficulty)
    train = generate_tasks(cfg.num_tasks, seed=1000 + cfg.seed, difficulty=cfg.difficulty)
    seen = {t.question for t in train}
    prompts = [format_prompt(t.question) for t in tasks]
    texts = complete(model, tok, prompts, greedy=True)
    bits, counts = template_entropy(texts, tasks)
    unseen = [i for i, t in enumerate(tasks) if t.question not in seen]
    sampled = complete(model, tok, prompts, greedy=False, seed=seed)
    s_bits, s_counts = template_entropy(sampled, tasks)
    return {
        "tasks": n,
        "task_seed": seed,
        "difficulty": cfg.difficulty,
        "greedy_accuracy": answer_accuracy(texts, tasks),
        "greedy_template_counts": counts,
        "greedy_template_entropy_bits": bits,
        "heuristics": heuristic_accuracy(tasks, reference=train),
        "questions_also_in_training_data": len(tasks) - len(unseen),
        "greedy_accuracy_unseen_questions": answer_accuracy(
            [texts[i] for i in unseen], [tasks[i] for i in unseen]
        ),
        "sampled_accuracy": answer_accuracy(sampled, tasks),
        "sampled_template_counts": s_counts,
        "sampled_template_entropy_bits": s_bits,
    }


def _save(model: torch.nn.Module, out: Path, name: str) -> list[Path]:
    """Save ``model`` as ``out/name`` (config + safetensors), replacing it whole."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out))
    model.config._name_or_path = ""  # no machine-specific path in the shipped config
    model.save_pretrained(tmp, safe_serialization=True)
    extra = [p for p in tmp.iterdir() if p.name not in ("config.json", "model.safetensors")]
    for p in extra:  # e.g. generation_config.json: defaults, not needed
        p.unlink()
    dest = out / name
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return [dest / "config.json", dest / "model.safetensors"]


def _readme(manifest: dict[str, Any]) -> str:
    lines = [
        "# Shipped tiny models",
        "",
        "Made by the project's own script (one thread, deterministic given the seeds); "
        "nothing here was downloaded. Regenerate with these commands, in this order:",
        "",
        "```bash",
        *manifest["commands"],
        "```",
        "",
        "| model | layers x width | parameters | data seed | steps | train s |",
        "|---|---|---|---|---|---|",
    ]
    for name, rec in manifest["models"].items():
        for r in [*rec.get("previous_stages", []), rec]:
            c = r["config"]
            lines.append(
                f"| {name} (stage {r.get('stage', 0)}) | {c['n_layer']} x {c['n_embd']} | "
                f"{r['parameters']:,} | {r['data_seed']} | {c['steps']} | {r['train_seconds']} |"
            )
    lines += ["", "SHA-256 (checked by `bystander.llm.shipped.load_shipped` on every load):", ""]
    lines += [f"- `{path}`: `{digest}`" for path, digest in manifest["sha256"].items()]
    ev = manifest.get("evaluation")
    if ev:
        h = ev["heuristics"]
        lines += [
            "",
            f"Held-out evaluation ({ev['tasks']} generated tasks, seed {ev['task_seed']}, "
            f"difficulty {ev['difficulty']}): greedy accuracy {ev['greedy_accuracy']:.3f}; "
            f"heuristics: sum of the numbers {h['sum']:.3f}, most common answer "
            f"{h['most_common']:.3f}, last number {h['last_number']:.3f}. Templates of "
            f"the greedy completions: {ev['greedy_template_counts']}.",
        ]
    lines += ["", "`manifest.json` holds the full configs, losses and timings.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m bystander.llm.train_tiny --out DIR [--only NAME] [--steps N]``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(Path(__file__).parent / "weights"))
    p.add_argument("--only", action="append", choices=sorted(SHIPPED),
                   help="train only these models (repeatable); the manifest keeps the others")  # fmt: skip
    p.add_argument("--steps", type=int, default=None, help="override every model's steps")
    p.add_argument("--eval-tasks", type=int, default=1000)
    p.add_argument("--eval-every", type=int, default=0,
                   help="print the policy's held-out accuracy every N steps")  # fmt: skip
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--init-from",
        default=None,
        help="continue training the (single, --only) model from this folder",
    )
    p.add_argument(
        "--stage",
        type=int,
        default=0,
        help="stage number of a continued training (fresh data and batch seeds)",
    )
    p.add_argument("--lr", type=float, default=None, help="override the peak learning rate")
    p.add_argument(
        "--evaluate-only",
        action="store_true",
        help="print the held-out evaluation of OUT/tiny-policy; train nothing",
    )
    p.add_argument("--readme-only", action="store_true",
                   help="rewrite OUT/README.md from OUT/manifest.json; train nothing")  # fmt: skip
    a = p.parse_args(argv)
    if a.evaluate_only:
        from bystander.llm.shipped import load_shipped

        torch.set_num_threads(a.threads)
        model, _ = load_shipped("tiny-policy", root=a.out)
        print(json.dumps(evaluate_policy(model, SHIPPED["tiny-policy"], a.eval_tasks), indent=1))
        return 0
    if a.readme_only:
        manifest = json.loads((Path(a.out) / "manifest.json").read_text(encoding="utf-8"))
        with atomic_open(Path(a.out) / "README.md", "w", encoding="utf-8") as fh:
            fh.write(_readme(manifest))
        return 0
    torch.set_num_threads(a.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    out = Path(a.out)
    manifest_path = out / "manifest.json"
    manifest: dict[str, Any] = {"models": {}, "sha256": {}}
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    command = "python -m bystander.llm.train_tiny " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    names = a.only or list(SHIPPED)
    if a.init_from is not None and len(names) != 1:
        raise ValueError("--init-from: expected exactly one model (--only NAME)")
    earlier = manifest.get("commands") or ([manifest["command"]] if "command" in manifest else [])
    manifest["commands"] = [*earlier, command]
    for name in names:
        cfg = SHIPPED[name] if a.steps is None else replace(SHIPPED[name], steps=a.steps)
        cfg = cfg if a.lr is None else replace(cfg, lr=a.lr)
        print(f"{name}: {asdict(cfg)}", flush=True)
        model, record = train_one(
            cfg,
            eval_every=a.eval_every if name == "tiny-policy" else 0,
            init_from=a.init_from,
            stage=a.stage,
        )
        record["command"] = command
        if a.init_from is not None:
            previous = manifest["models"].get(name, {})
            record["previous_stages"] = [
                *previous.get("previous_stages", []),
                {k: v for k, v in previous.items() if k != "previous_stages"},
            ]
        if name == "tiny-policy":
            manifest["evaluation"] = evaluate_policy(model, cfg, a.eval_tasks)
            print(json.dumps(manifest["evaluation"], indent=1), flush=True)
        for path in _save(model, out, name):
            manifest["sha256"][f"{name}/{path.name}"] = sha256_file(path)
        manifest["models"][name] = record
    if manifest_path.is_file():  # another run may have written other models meanwhile
        latest = json.loads(manifest_path.read_text(encoding="utf-8"))
        for key in ("models", "sha256"):
            manifest[key] = {**latest.get(key, {}), **manifest[key]}
        earlier = [c for c in latest.get("commands", []) if c not in manifest["commands"]]
        manifest["commands"] = [*earlier, *manifest["commands"]]
        if "evaluation" in latest and "tiny-policy" not in names:
            manifest["evaluation"] = latest["evaluation"]
    manifest.pop("command", None)
    manifest["torch"] = torch.__version__
    with atomic_open(manifest_path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    with atomic_open(out / "README.md", "w", encoding="utf-8") as fh:
        fh.write(_readme(manifest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
