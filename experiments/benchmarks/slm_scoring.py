"""Time to score a group of completions with the SLM observers vs. time to generate it.

Same run, same completions: for each repeat, the policy samples ``--group-size``
completions for each of ``--prompts`` prompts in one batched ``generate`` call, then
the SLM panel (every view in ``--views``) scores all of them in one batched call.
Target: scoring <= 0.25x generation.

    python experiments/benchmarks/slm_scoring.py                 # built-in tiny pair
    python experiments/benchmarks/slm_scoring.py --untrained     # no pretraining wait
    python experiments/benchmarks/slm_scoring.py --policy PATH --observer PATH
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bystander.envs.text_tasks import format_prompt, generate_tasks
from bystander.envs.text_tokens import byte_tokenizer, encode
from bystander.envs.text_v0 import parse_views
from bystander.llm.models import (
    TINY_POLICY,
    TINY_SLM,
    generate_group,
    load_causal_lm,
    tiny_model,
)
from bystander.llm.observers import SLMPredictor, score_observers


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--policy", default="tiny-policy")
    p.add_argument("--observer", default="tiny-slm")
    p.add_argument(
        "--untrained", action="store_true", help="random tiny models of the default sizes"
    )
    p.add_argument("--views", default="prefix:0.5,mask:0.7,full")
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.untrained:
        tok = byte_tokenizer()
        policy, slm, slm_tok = tiny_model(TINY_POLICY, tok), tiny_model(TINY_SLM, tok), tok
    else:
        policy, tok = load_causal_lm(a.policy, device=a.device)
        slm, slm_tok = load_causal_lm(a.observer, device=a.device)
    policy.to(a.device).eval()
    slm.to(a.device).eval()
    pred = SLMPredictor(slm, slm_tok, policy_tokenizer=tok)
    views = parse_views(a.views)
    tasks = generate_tasks(a.prompts * a.repeats, seed=a.seed + 99)
    rng = np.random.default_rng(a.seed)
    torch.manual_seed(a.seed)
    rows = []
    for r in range(a.repeats + 1):  # the first repeat warms up and is not counted
        chunk = tasks[(r % a.repeats) * a.prompts : (r % a.repeats + 1) * a.prompts]
        prompts = [format_prompt(t.question) for t in chunk]
        p_ids = [encode(tok, s) for s in prompts]
        t0 = time.perf_counter()
        comps = generate_group(policy, tok, p_ids, a.group_size, max_new_tokens=a.max_new_tokens)
        t_gen = time.perf_counter() - t0
        rep_ids = [x for x in p_ids for _ in range(a.group_size)]
        rep_txt = [x for x in prompts for _ in range(a.group_size)]
        t0 = time.perf_counter()
        with torch.no_grad():
            score_observers(pred, views, comps, rep_ids, rep_txt, rng)
        t_score = time.perf_counter() - t0
        if r:
            rows.append((t_gen, t_score, float(np.mean([len(c) for c in comps]))))
    print(f"group: {a.prompts} prompts x {a.group_size} completions, views {a.views}, "
          f"{a.threads} thread(s), device {a.device}")  # fmt: skip
    print(f"{'repeat':>6} {'gen [s]':>9} {'score [s]':>10} {'ratio':>7} {'mean len':>9}")
    for i, (g, s, n) in enumerate(rows, start=1):
        print(f"{i:>6} {g:>9.3f} {s:>10.3f} {s / g:>7.3f} {n:>9.1f}")
    g_med = float(np.median([r[0] for r in rows]))
    s_med = float(np.median([r[1] for r in rows]))
    ratio = s_med / g_med
    print(f"median: generate {g_med:.3f} s, score {s_med:.3f} s, ratio {ratio:.3f} "
          f"(target <= 0.25: {'met' if ratio <= 0.25 else 'NOT met'})")  # fmt: skip


if __name__ == "__main__":
    main()
