"""Measures of a text policy beyond an observer's nats/token.

- :func:`complete`: batched completions (greedy or sampled) of tasks' prompts, as text.
- :func:`answer_accuracy`: fraction of completions whose final answer is right.
- :func:`template_entropy`: which reasoning template each completion follows
  (:func:`bystander.envs.text_tasks.task_template`; ``"other"`` when none) and the
  entropy of that distribution in bits: 0 when the policy always writes one template,
  ``log2(#templates + 1)`` at most.
- :func:`completion_accuracy`: the behavioural legibility measure: an observer is
  shown the prompt and the first ``fraction`` of each completion (policy tokens) and
  continues it greedily; the fraction of continuations whose final answer is right.
  With the held-out observer (never used for reward) it tells whether a legible chain
  of thought is legible to a reader the policy was not trained against.
- :func:`evaluation_extras`: all of these plus KL to the reference and the share of
  completions under the minimum-length guard, for the GRPO evaluation.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from bystander.envs.text_tasks import Task, extract_answer, format_prompt, task_template
from bystander.envs.text_tokens import decode, encode
from bystander.llm.models import generate_group
from bystander.seeding import forked_torch_seed

__all__ = [
    "answer_accuracy",
    "complete",
    "completion_accuracy",
    "evaluation_extras",
    "template_entropy",
]


@torch.no_grad()
def complete(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    greedy: bool = True,
    samples: int = 1,
    max_new_tokens: int = 96,
    batch_size: int = 64,
    seed: int = 0,
) -> list[str]:
    """Completions of ``prompts`` as text, ``samples`` per prompt (prompt-major).

    Sampling (``greedy=False``, temperature 1) uses its own seed
    (:func:`~bystander.seeding.forked_torch_seed`); the caller's RNG streams, CUDA ones
    included, are untouched.

    Returns:
        ``len(prompts) * samples`` strings (EOS and padding removed).
    """
    if samples < 1:
        raise ValueError(f"samples: expected >= 1, got {samples}")
    ids = [encode(tokenizer, p) for p in prompts]
    out: list[str] = []
    with forked_torch_seed(seed):
        step = max(1, batch_size // samples)
        for i in range(0, len(ids), step):
            done = generate_group(
                model,
                tokenizer,
                ids[i : i + step],
                samples,
                max_new_tokens=max_new_tokens,
                greedy=greedy,
                truncate_prompt="left",
            )
            out += [decode(tokenizer, c) for c in done]
    return out


def answer_accuracy(texts: Sequence[str], tasks: Sequence[Task]) -> float:
    """Fraction of ``texts`` whose extracted final answer equals its task's answer.

    ``texts`` may hold ``k`` completions per task (prompt-major, ``len(texts) = k *
    len(tasks)``).
    """
    k = _per_task(texts, tasks)
    hits = [extract_answer(t)[0] == tasks[i // k].answer for i, t in enumerate(texts)]
    return float(np.mean(hits))


def template_entropy(texts: Sequence[str], tasks: Sequence[Task]) -> tuple[float, dict[str, int]]:
    """Entropy in bits of the templates ``texts`` follow, and the count of each.

    A completion that follows none of its task's templates exactly counts as
    ``"other"`` (one category). ``texts`` may hold ``k`` completions per task.
    """
    k = _per_task(texts, tasks)
    counts = Counter(task_template(t, tasks[i // k]) or "other" for i, t in enumerate(texts))
    n = sum(counts.values())
    bits = -sum(c / n * math.log2(c / n) for c in counts.values() if c)
    return float(max(bits, 0.0)), dict(sorted(counts.items()))


@torch.no_grad()
def completion_accuracy(
    observer: torch.nn.Module,
    observer_tokenizer: Any,
    policy_tokenizer: Any,
    completions: Sequence[np.ndarray],
    tasks: Sequence[Task],
    *,
    fraction: float = 0.5,
    max_new_tokens: int = 96,
    batch_size: int = 64,
) -> float:
    """How often ``observer``, shown the first ``fraction`` of a chain of thought,
    completes it (greedy) to the right final answer.

    Args:
        completions: Policy token ids ``(T,)`` per completion; ``k`` per task,
            prompt-major.
        fraction: Share of each completion's policy tokens shown (``[0, 1)``); the
            cut is ``floor(fraction * T)`` tokens.

    Returns:
        The fraction in ``[0, 1]`` (the answer is extracted from the observer's
        continuation joined to the shown part).
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction: expected in [0, 1), got {fraction}")
    k = _per_task(completions, tasks)
    shown = [decode(policy_tokenizer, np.asarray(c)[: int(fraction * len(c))]) for c in completions]
    prompts = [format_prompt(tasks[i // k].question) + s for i, s in enumerate(shown)]
    cont = complete(
        observer,
        observer_tokenizer,
        prompts,
        greedy=True,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    hits = [
        extract_answer(s + c)[0] == tasks[i // k].answer
        for i, (s, c) in enumerate(zip(shown, cont, strict=True))
    ]
    return float(np.mean(hits))


def _per_task(items: Sequence[Any], tasks: Sequence[Task]) -> int:
    if not tasks or len(items) % len(tasks):
        raise ValueError(
            f"completions: expected a positive multiple of len(tasks)={len(tasks)}, "
            f"got {len(items)}"
        )
    return len(items) // len(tasks)


@torch.no_grad()
def evaluation_extras(
    policy: torch.nn.Module,
    ref_policy: torch.nn.Module | None,
    tokenizer: Any,
    tasks: Sequence[Task],
    prompt_ids: Sequence[np.ndarray],
    completions: Sequence[np.ndarray],
    texts: Sequence[str],
    *,
    min_length: int = 0,
    heldout: Any | None = None,
    heldout_views: Sequence[Any] = (),
    rng: np.random.Generator | None = None,
    fraction: float = 0.5,
    max_new_tokens: int = 96,
) -> dict[str, float]:
    """The measures :meth:`bystander.llm.grpo.GRPOTrainer.evaluate` adds to accuracy and cost.

    Args:
        tasks: One task per prompt; ``completions``/``texts`` hold ``k`` per task.
        prompt_ids: Policy token ids of each completion's prompt (one per completion).
        min_length: The minimum-length guard in tokens (``short_fraction`` counts
            completions under it; 0: none are).
        heldout: Optional held-out observer (an :class:`~bystander.llm.observers.SLMPredictor`,
            never used for reward): its nats/token on ``heldout_views`` and its
            completion accuracy from the first ``fraction`` of each completion.

    Returns:
        ``template_entropy_bits``, ``template/<name>`` (fraction of completions per
        template, ``other`` included), ``kl`` (k3 estimate of KL(policy || reference)
        per token, mean over completions; NaN without a reference), ``short_fraction``,
        and with ``heldout``: ``heldout_nats_per_token`` (mean over views and
        completions it scores) and ``heldout_completion_accuracy``.
    """
    from bystander.llm.models import completion_logprobs
    from bystander.llm.observers import score_observers

    bits, counts = template_entropy(texts, tasks)
    n = len(texts)
    out: dict[str, float] = {"template_entropy_bits": bits}
    out.update({f"template/{k}": v / n for k, v in counts.items()})
    lengths = np.array([len(c) for c in completions])
    out["short_fraction"] = float((lengths < min_length).mean())
    out["kl"] = float("nan")
    if ref_policy is not None:
        pad = tokenizer.pad_token_id
        kls = []
        for i in range(0, n, 64):
            p, c = list(prompt_ids[i : i + 64]), list(completions[i : i + 64])
            logp, mask = completion_logprobs(policy, p, c, pad)
            ref, _ = completion_logprobs(ref_policy, p, c, pad)
            d = ref - logp
            k3 = (torch.exp(d) - d - 1.0) * mask
            kls += (k3.sum(1) / mask.sum(1).clamp(min=1.0)).tolist()
        out["kl"] = float(np.mean(kls))
    if heldout is not None:
        k = _per_task(texts, tasks)
        prompts = [format_prompt(tasks[i // k].question) for i in range(n)]
        rng = rng if rng is not None else np.random.default_rng(0)
        err = score_observers(heldout, heldout_views, completions, prompt_ids, prompts, rng)
        out["heldout_nats_per_token"] = (
            float(np.nanmean(err)) if np.any(~np.isnan(err)) else float("nan")
        )
        out["heldout_completion_accuracy"] = completion_accuracy(
            heldout.model,
            heldout.tokenizer,
            tokenizer,
            completions,
            tasks,
            fraction=fraction,
            max_new_tokens=max_new_tokens,
        )
    return out
