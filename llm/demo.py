"""The text part of ``bystander demo``: unconstrained vs. Lagrangian GRPO with the tiny models.

:func:`run_text_demo` (called by :mod:`bystander.demo`):

1. loads the shipped tiny policy, training SLM and held-out SLM
   (:mod:`bystander.llm.shipped`, checksums verified; nothing is pretrained);
2. trains two policies from the same start and seed: ``none`` (task reward only)
   and ``lagrangian`` (SLM predictability cost under a budget, Safe RLHF
   multiplier); the budget is 90 % of the starting policy's cost, so the
   constraint binds;
3. evaluates both before and after on the same held-out prompts (accuracy,
   nats/token per observer view, the held-out observer's nats/token and completion
   accuracy, template entropy, KL to the reference, length);
4. runs a few episodes of ``bystander/Text-v0`` through the shared
   ``PredictabilityReward`` + ``LagrangianReward`` wrappers with each trained policy;
5. returns a markdown section with the figures (also ``text_demo.json``).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run_text_demo"]


def _episodes(policy_dir: Path, slm: str, views: str, n: int, seed: int) -> dict[str, float]:
    """``n`` episodes of the text env through the shared wrappers; mean figures."""
    from bystander.envs.constraints import LagrangeMultiplier, LagrangianReward
    from bystander.envs.predictability import PredictabilityReward
    from bystander.envs.text_v0 import TextEnv
    from bystander.llm.models import generate_group, load_causal_lm
    from bystander.llm.observers import SLMPredictor
    from bystander.seeding import forked_torch_seed

    policy, tok = load_causal_lm(str(policy_dir))
    slm, slm_tok = load_causal_lm(slm)
    env = TextEnv(num_tasks=64, task_seed=20_000 + seed, views=views, tokenizer=tok)
    env = LagrangianReward(
        PredictabilityReward(env, SLMPredictor(slm, slm_tok, policy_tokenizer=tok)),
        LagrangeMultiplier(budget=1.0),
    )
    rows = []
    with forked_torch_seed(seed):
        for i in range(n):
            env.reset(seed=seed + i)
            ids = generate_group(policy, tok, [env.unwrapped.prompt_ids], 1, max_new_tokens=80)[0]
            _, reward, _, _, info = env.step(ids)
            rows.append((reward, info["predictability"], info["observers_scored"], info["correct"]))
    arr = np.array(rows, dtype=np.float64)
    return {
        "episodes": n,
        "reward": float(arr[:, 0].mean()),
        "predictability": float(arr[:, 1].mean()),
        "observers_scored": float(arr[:, 2].mean()),
        "accuracy": float(arr[:, 3].mean()),
    }


def run_text_demo(
    run_dir: str | Path, quick: bool = False, steps: int | None = None
) -> tuple[str, str]:
    """Run the text demo into ``run_dir``; returns ``(section title, markdown)``."""
    from transformers.utils import logging as hf_logging

    from bystander.llm.cli import llm_train
    from bystander.llm.grpo_config import GRPOConfig

    hf_logging.disable_progress_bar()  # the demo prints its own progress, one line a step
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if quick:
        steps = steps or 2
        sizes = {"group_size": 4, "prompts_per_step": 2, "max_new_tokens": 80}
        eval_prompts, episodes = 8, 2
    else:
        steps = steps or 20
        sizes = {"group_size": 8, "prompts_per_step": 4, "max_new_tokens": 80}
        eval_prompts, episodes = 32, 16
    views = "prefix:0.5,mask:0.7,full"
    base: dict[str, Any] = {
        "policy": "tiny-policy",
        "observers": ["tiny-slm"],
        "heldout_observer": "tiny-slm-heldout",
        "tasks": "generated",
        "num_tasks": 512,
        "eval_prompts": eval_prompts,
        "device": "cpu",
        "grpo": {**asdict(GRPOConfig()), **sizes, "views": views, "seed": 0},
    }
    base["grpo"].pop("extra", None)
    results: dict[str, Any] = {}
    budget = None
    for mode in ("none", "lagrangian"):
        cfg = json.loads(json.dumps(base))
        cfg["grpo"]["constraint"]["mode"] = mode
        if mode == "lagrangian":
            cfg["grpo"]["constraint"].update({"budget": budget, "lambda_lr": 0.2})
        out = llm_train(
            {**cfg, "run_dir": str(run_dir / mode), "steps": steps, "checkpoint_every": 0}
        )
        if budget is None:
            budget = round(0.9 * out["before"]["predictability_cost"], 3)
        log = [json.loads(x) for x in (run_dir / mode / "log.jsonl").read_text().splitlines()]
        results[mode] = {
            "before": out["before"],
            "after": out["after"],
            "final_lambda": log[-1]["lambda_next"],
            "mean_length_last": log[-1]["length_mean"],
            "wrapped_episodes": _episodes(
                run_dir / mode / "policy", "tiny-slm", views, episodes, 7
            ),
        }
    results["budget"] = budget
    results["steps"] = steps
    (run_dir / "text_demo.json").write_text(json.dumps(results, indent=2))
    return "Text environment (GRPO, tiny models)", _markdown(results, steps)


def _markdown(res: dict[str, Any], steps: int) -> str:
    obs = [k for k in res["none"]["before"] if k.startswith("nats/")]
    head = (
        "| run | | accuracy | cost (nats/token) | "
        + " | ".join(obs)
        + " | held-out observer (nats/token) | held-out completion acc. | template entropy "
        "(bits) | KL | length |"
    )
    lines = [
        f"{steps} GRPO steps from the same shipped tiny policy; Lagrangian budget "
        f"{res['budget']} nats/token (90 % of the starting cost). Held-out prompts, sampled "
        "completions; nats/token per SLM observer view.",
        "",
        head,
        "|" + "---|" * (9 + len(obs)),
    ]
    for mode in ("none", "lagrangian"):
        for when in ("before", "after"):
            e = res[mode][when]
            cells = [f"{e[k]:.3f}" for k in obs]
            lines.append(
                f"| {mode} | {when} | {e['accuracy']:.3f} | {e['predictability_cost']:.3f} | "
                + " | ".join(cells)
                + f" | {e.get('heldout_nats_per_token', float('nan')):.3f}"
                + f" | {e.get('heldout_completion_accuracy', float('nan')):.3f}"
                + f" | {e['template_entropy_bits']:.2f} | {e['kl']:.4f}"
                + f" | {e['length_mean']:.1f} |"
            )
    lines += ["", "Final lambda (lagrangian): " + f"{res['lagrangian']['final_lambda']:.3f}", ""]
    lines.append(
        "Episodes of `bystander/Text-v0` through `PredictabilityReward` + `LagrangianReward`:"
    )
    lines.append("")
    lines.append("| run | episodes | accuracy | predictability (-nats/token) | observers scored |")
    lines.append("|---|---|---|---|---|")
    for mode in ("none", "lagrangian"):
        w = res[mode]["wrapped_episodes"]
        lines.append(
            f"| {mode} | {w['episodes']} | {w['accuracy']:.3f} | {w['predictability']:.3f} | "
            f"{w['observers_scored']:.1f} |"
        )
    return "\n".join(lines)
