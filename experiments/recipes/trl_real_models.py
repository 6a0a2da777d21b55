"""Recipe: GRPO on real models through TRL, with SLM observers under a predictability constraint.

For users with weights and a GPU, e.g. a 0.5B instruct policy and 135M-class observers
on GSM8K-format JSONL (nothing here downloads by itself; hub ids load from the local
Hugging Face cache or the network as ``from_pretrained`` does):

    python experiments/recipes/trl_real_models.py \\
        --policy Qwen/Qwen2.5-0.5B-Instruct \\
        --observer HuggingFaceTB/SmolLM2-135M-Instruct \\
        --heldout-observer HuggingFaceTB/SmolLM-135M \\
        --tasks gsm8k_train.jsonl --eval-tasks gsm8k_test.jsonl \\
        --constraint lagrangian --budget 1.5 --steps 200 --group-size 8 \\
        --use-vllm --lora-r 16 --bf16 --out runs/trl-qwen

The policy is trained by TRL's ``GRPOTrainer`` with two rewards: the task verifier
(:class:`bystander.llm.trl_adapter.TaskReward`) and minus the observers' nats/token
(:class:`~bystander.llm.trl_adapter.PredictabilityReward`), aggregated with
``multi_objective_aggregation="normalize_then_sum"`` and weighted by the shared
multiplier (:class:`~bystander.llm.trl_adapter.ConstraintCallback`), the same
``(A_r - lambda A_c)`` trade-off as the built-in trainer. The held-out observer is
never a reward: it is scored only in the evaluation written to ``OUT/eval.json``
(:func:`bystander.llm.measures.evaluation_extras` figures plus accuracy).

Options: ``--use-vllm`` (TRL's vLLM generation, needs ``vllm``), ``--lora-r R`` (PEFT
LoRA adapters, needs ``peft``), ``--bf16``, ``--device``. On CPU with small models it
runs as written (the test suite does so with randomly initialised Qwen2- and
Llama-style models built from configs and a tokenizer built locally).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main", "run"]


def build_parser() -> argparse.ArgumentParser:
    """The recipe's flags (see the module docstring)."""
    p = argparse.ArgumentParser(description="GRPO on real models through TRL")
    p.add_argument("--policy", required=True, help="policy: hub id or local path")
    p.add_argument("--observer", action="append", required=True, help="training observer(s)")
    p.add_argument("--heldout-observer", default=None, help="evaluation-only observer")
    p.add_argument("--tasks", default="generated", help="GSM8K-format JSONL or 'generated'")
    p.add_argument("--eval-tasks", default=None, help="JSONL of held-out tasks (default: "
                   "generated with another seed, or the last --eval-prompts of --tasks)")  # fmt: skip
    p.add_argument("--num-tasks", type=int, default=512)
    p.add_argument("--eval-prompts", type=int, default=64)
    p.add_argument("--views", default="prefix:0.5,mask:0.7,full")
    p.add_argument("--constraint", choices=["none", "shaping", "lagrangian"], default="lagrangian")
    p.add_argument("--weight", type=float, default=0.5, help="shaping weight")
    p.add_argument("--budget", type=float, default=1.5, help="Lagrangian budget [nats/token]")
    p.add_argument("--lambda-lr", type=float, default=0.05)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8, help="completions per device step")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--beta", type=float, default=0.04, help="KL coefficient")
    p.add_argument("--use-vllm", action="store_true")
    p.add_argument("--lora-r", type=int, default=0, help="LoRA rank (0: full fine-tuning)")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--device", default="auto", help="'cpu' forces CPU; 'auto' lets TRL choose")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder (TRL's output_dir)")
    return p


def _tasks(source: str, n: int, seed: int) -> list[Any]:
    from bystander.envs.text_tasks import generate_tasks, load_gsm8k_jsonl

    return generate_tasks(n, seed=seed) if source == "generated" else load_gsm8k_jsonl(source)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train and evaluate; returns (and writes to ``OUT/eval.json``) the evaluation."""
    import numpy as np
    import torch
    from trl import GRPOConfig, GRPOTrainer

    from bystander.envs.constraints import LagrangeMultiplier
    from bystander.envs.text_tasks import format_prompt
    from bystander.envs.text_tokens import encode
    from bystander.envs.text_v0 import parse_views
    from bystander.llm.measures import answer_accuracy, complete, evaluation_extras
    from bystander.llm.models import load_causal_lm
    from bystander.llm.observers import SLMPredictor
    from bystander.llm.trl_adapter import (
        ConstraintCallback,
        PredictabilityReward,
        TaskReward,
        align_positions,
        attach_constraint,
        tasks_dataset,
        trl_tokenizer,
    )

    torch.manual_seed(args.seed)
    device = "cpu" if args.device == "cpu" else None
    policy, tok = load_causal_lm(args.policy)
    observers = [load_causal_lm(o) for o in args.observer]
    predictors = {f"slm{i}": SLMPredictor(m.to(device or "cpu"), t, policy_tokenizer=tok)
                  for i, (m, t) in enumerate(observers)}  # fmt: skip
    base = parse_views(args.views)
    from dataclasses import replace

    views = [replace(v, type=k) for k in predictors for v in base]
    train = _tasks(args.tasks, args.num_tasks, args.seed)
    if args.eval_tasks:
        heldout = _tasks(args.eval_tasks, args.eval_prompts, 10_000 + args.seed)
    elif args.tasks == "generated":
        heldout = _tasks("generated", args.eval_prompts, 10_000 + args.seed)
    else:
        train, heldout = train[: -args.eval_prompts], train[-args.eval_prompts :]
    heldout = heldout[: args.eval_prompts]
    if not train:
        raise ValueError("--tasks: no training tasks left after holding out --eval-prompts")
    if args.lora_r:
        from peft import LoraConfig, get_peft_model

        policy = get_peft_model(policy, LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r,
                                                   target_modules="all-linear",
                                                   task_type="CAUSAL_LM"))  # fmt: skip
    cost = PredictabilityReward(predictors, tok, views=views, seed=args.seed)
    config = GRPOConfig(
        output_dir=args.out, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        num_generations=args.group_size, max_completion_length=args.max_new_tokens,
        learning_rate=args.lr, beta=args.beta, seed=args.seed, logging_steps=1,
        save_strategy="no", report_to="none", use_cpu=args.device == "cpu", bf16=args.bf16,
        use_vllm=args.use_vllm, multi_objective_aggregation="normalize_then_sum",
    )  # fmt: skip
    trainer = GRPOTrainer(model=policy, reward_funcs=[TaskReward(), cost], args=config,
                          train_dataset=tasks_dataset(train),
                          processing_class=trl_tokenizer(tok))  # fmt: skip
    align_positions(trainer)  # left-padded rows scored where they were generated
    multiplier = None
    if args.constraint == "lagrangian":
        multiplier = LagrangeMultiplier(budget=args.budget, lr=args.lambda_lr)
        attach_constraint(trainer, ConstraintCallback(multiplier, cost))
    elif args.constraint == "shaping":
        trainer.reward_weights = torch.tensor([1.0, args.weight])
    else:
        trainer.reward_weights = torch.tensor([1.0, 0.0])
    ref = None if trainer.ref_model is None else trainer.ref_model
    trainer.train()
    model = trainer.model
    model.eval()
    prompts = [format_prompt(t.question) for t in heldout]
    texts = complete(model, tok, prompts, greedy=False, max_new_tokens=args.max_new_tokens,
                     batch_size=args.batch_size, seed=args.seed)  # fmt: skip
    p_ids = [encode(tok, p) for p in prompts]
    comps = [encode(tok, t) for t in texts]
    h = None
    if args.heldout_observer:
        hm, ht = load_causal_lm(args.heldout_observer)
        h = SLMPredictor(hm, ht, policy_tokenizer=tok)
    out: dict[str, Any] = {
        "accuracy": answer_accuracy(texts, heldout),
        "completions": len(texts),
        "lambda": None if multiplier is None else float(multiplier.value),
        **evaluation_extras(
            model,
            ref,
            tok,
            heldout,
            p_ids,
            comps,
            texts,
            heldout=h,
            heldout_views=base,
            rng=np.random.default_rng(args.seed),
            max_new_tokens=args.max_new_tokens,
        ),  # fmt: skip
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    from bystander.atomic import atomic_open

    with atomic_open(Path(args.out) / "eval.json", "w", encoding="utf-8") as fh:
        fh.write(json.dumps(out, indent=2))
    return out


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    out = run(build_parser().parse_args(argv))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
