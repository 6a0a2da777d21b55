"""Policies and observers: loading any causal LM, and the tiny built-in pair.

- :func:`load_causal_lm` loads an ``AutoModelForCausalLM`` and its tokenizer by hub
  id or local path (real ``from_pretrained``), or the tiny models shipped with the
  package by name (``"tiny-policy"``, ``"tiny-slm"``, ``"tiny-slm-heldout"``;
  :mod:`bystander.llm.shipped`). A missing local path raises ``FileNotFoundError``
  naming it; a hub id that cannot be reached (offline, no cache) raises ``OSError``
  naming it, before anything reaches torch.
- :func:`tiny_pair` gives a small GPT-2 policy and a smaller GPT-2 SLM built from
  configs with the byte-level ``ByT5Tokenizer`` (no files): the shipped weights for
  the shipped configs; any other config is pretrained on the project's generated
  worked chains of thought and cached under ``$BYSTANDER_CACHE`` (default
  ``~/.cache/bystander``) keyed by a hash of the config. Nothing is downloaded.
- :func:`generate_group` samples ``G`` completions for each prompt in one batched
  ``generate`` call; :func:`completion_logprobs` gives per-token log-probabilities.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bystander.envs.text_tasks import TEMPLATES, Task, format_prompt, generate_tasks
from bystander.envs.text_tokens import byte_tokenizer, encode
from bystander.llm.shipped import SHIPPED_NAMES, load_shipped

__all__ = [
    "TINY_POLICY",
    "TINY_SLM",
    "TINY_SLM_HELDOUT",
    "TinyConfig",
    "cache_dir",
    "cached_path",
    "completion_logprobs",
    "generate_group",
    "load_causal_lm",
    "pretrain",
    "pretraining_pairs",
    "pretraining_texts",
    "tiny_model",
    "tiny_pair",
]

_CACHE_VERSION = 3


@dataclass(frozen=True)
class TinyConfig:
    """A tiny GPT-2 and its pretraining budget.

    Attributes:
        n_layer, n_embd, n_head: GPT-2 size.
        n_positions: Context length in tokens (bytes).
        steps: Pretraining optimiser steps; ``batch_size`` sequences each.
        lr: AdamW peak learning rate (20 warm-up steps, then linear decay to 10 %).
        num_tasks: Generated problems used as pretraining text.
        mask_noise: Fraction of pretraining sequences whose inputs get random
            placeholder tokens (so an observer can read a masked view).
        seed: Seed for init, data and batches.
        difficulty: Level of the generated problems (``generate_tasks(difficulty=)``).
        template_weights: Sampling weight of each reasoning template of
            :data:`bystander.envs.text_tasks.TEMPLATES` in the pretraining text
            (renormalised over the templates a task has).
        completion_loss: Train on the completion's tokens only (the prompt is read,
            not predicted); ``False``: every token.
    """

    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 384
    steps: int = 300
    batch_size: int = 16
    lr: float = 3e-3
    num_tasks: int = 2000
    mask_noise: float = 0.0
    seed: int = 0
    difficulty: int = 2
    template_weights: tuple[float, ...] = (0.4, 0.2, 0.2, 0.2)
    completion_loss: bool = True

    def __post_init__(self) -> None:
        if len(self.template_weights) != len(TEMPLATES) or min(self.template_weights) < 0:
            raise ValueError(
                f"template_weights: expected {len(TEMPLATES)} weights >= 0 (one per "
                f"template of {TEMPLATES}), got {self.template_weights!r}"
            )
        if sum(self.template_weights) <= 0:
            raise ValueError("template_weights: expected a positive sum")


TINY_POLICY = TinyConfig(
    n_layer=3, n_embd=128, n_head=4, n_positions=256, steps=3000, batch_size=32,
    num_tasks=60_000, seed=0, template_weights=(0.55, 0.15, 0.15, 0.15),
)  # fmt: skip
"""The shipped tiny policy: GPT-2, 3 layers x 128, ~0.68 M parameters."""

TINY_SLM = TinyConfig(
    n_layer=1, n_embd=64, n_head=2, n_positions=256, steps=1000, batch_size=32,
    num_tasks=30_000, mask_noise=0.3, seed=1,
)  # fmt: skip
"""The shipped training observer: GPT-2, 1 layer x 64, trained with placeholder noise."""

TINY_SLM_HELDOUT = TinyConfig(
    n_layer=2, n_embd=64, n_head=2, n_positions=256, steps=1000, batch_size=32,
    num_tasks=30_000, mask_noise=0.3, seed=2,
)  # fmt: skip
"""The shipped held-out observer: GPT-2, 2 layers x 64, another seed and data; never
used for reward, only to check that legibility carries over to an unseen reader."""


_SHIPPED_CONFIGS = {
    TINY_POLICY: "tiny-policy",
    TINY_SLM: "tiny-slm",
    TINY_SLM_HELDOUT: "tiny-slm-heldout",
}


def cache_dir() -> Path:
    """``$BYSTANDER_CACHE`` or ``~/.cache/bystander``."""
    return Path(os.environ.get("BYSTANDER_CACHE", Path.home() / ".cache" / "bystander"))


def pretraining_texts(tasks: Sequence[Task], eos: str = "") -> list[str]:
    """``prompt + " " + worked solution`` per task, the policy's output format."""
    return [format_prompt(t.question) + " " + t.solution + eos for t in tasks]


def pretraining_pairs(
    tasks: Sequence[Task], weights: Sequence[float], seed: int
) -> list[tuple[str, str]]:
    """``(prompt, " " + solution)`` per task, the solution's template drawn by ``weights``.

    Args:
        weights: One weight per template of :data:`TEMPLATES`, renormalised over
            the templates each task has (a task without templates, e.g. from JSONL,
            gives its own ``solution``).
        seed: Seed of the template draws.
    """
    rng = np.random.default_rng(seed)
    table = dict(zip(TEMPLATES, weights, strict=True))
    pairs = []
    for t in tasks:
        sols = dict(t.solutions) or {"own": t.solution}
        w = np.array([table.get(k, 1.0) for k in sols], dtype=np.float64)
        if w.sum() <= 0:
            w = np.ones(len(sols))
        pick = list(sols.values())[int(rng.choice(len(sols), p=w / w.sum()))]
        pairs.append((format_prompt(t.question), " " + pick))
    return pairs


def tiny_model(cfg: TinyConfig, tokenizer: Any | None = None) -> torch.nn.Module:
    """A randomly initialised ``GPT2LMHeadModel`` of size ``cfg`` (seeded)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = tokenizer if tokenizer is not None else byte_tokenizer()
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=cfg.n_positions,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        activation_function="gelu",  # exact GELU: one fused op, faster on CPU than gelu_new
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    torch.manual_seed(cfg.seed)
    return GPT2LMHeadModel(config)


def pretrain(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str] | Sequence[tuple[str, str]],
    cfg: TinyConfig,
    *,
    callback: Any | None = None,
) -> list[float]:
    """Next-token pretraining; returns the loss per step (nats/token).

    Args:
        texts: Whole texts, or ``(prompt, completion)`` pairs; an EOS is appended.
            With pairs and ``cfg.completion_loss`` the loss covers the completion
            and its EOS only.
        callback: Optional ``callback(step, loss)`` after each step (1-based).
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    seqs, starts = [], []
    for t in texts:
        prompt, completion = (t, "") if isinstance(t, str) else t
        p = encode(tokenizer, prompt)
        ids = np.append(np.concatenate([p, encode(tokenizer, completion)]), tokenizer.eos_token_id)
        seqs.append(torch.as_tensor(ids[: cfg.n_positions]))
        starts.append(len(p) if cfg.completion_loss and not isinstance(t, str) else 0)
    unk = tokenizer.unk_token_id
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * max(0.1, 1 - s / max(1, cfg.steps))
    )
    model.train()
    losses = []
    for step in range(cfg.steps):
        idx = torch.randint(len(seqs), (cfg.batch_size,), generator=gen)
        batch = [seqs[i] for i in idx]
        n = min(-(-max(len(s) for s in batch) // 16) * 16, cfg.n_positions)  # few shapes
        ids = torch.full((len(batch), n), tokenizer.pad_token_id, dtype=torch.long)
        att = torch.zeros((len(batch), n), dtype=torch.long)
        for j, s in enumerate(batch):
            ids[j, : len(s)] = s
            att[j, : len(s)] = 1
        labels = ids.masked_fill(att == 0, -100)
        for j, i in enumerate(idx.tolist()):
            labels[j, : starts[i]] = -100
        inputs = ids.clone()
        if cfg.mask_noise > 0:
            noisy = torch.rand(len(batch), 1, generator=gen) < cfg.mask_noise
            drop = torch.rand(ids.shape, generator=gen) < torch.rand(len(batch), 1, generator=gen)
            inputs = torch.where(noisy & drop & (att == 1), torch.full_like(ids, unk), ids)
        out = model(input_ids=inputs, attention_mask=att, labels=labels)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(out.loss.detach()))
        if callback is not None:
            callback(step + 1, losses[-1])
    model.eval()
    return losses


def cached_path(name: str, cfg: TinyConfig, root: str | os.PathLike[str] | None = None) -> Path:
    """Cache directory of the tiny model ``name`` (``"policy"``/``"slm"``) built from ``cfg``."""
    key = hashlib.sha256(
        json.dumps({"v": _CACHE_VERSION, "name": name, **asdict(cfg)}, sort_keys=True).encode()
    ).hexdigest()[:16]
    root = Path(root) if root is not None else cache_dir()
    return root / "tiny" / f"{name}-{key}"


def _cached(name: str, cfg: TinyConfig, root: Path | None, force: bool) -> tuple[Any, Any]:
    from transformers import GPT2LMHeadModel

    shipped = _SHIPPED_CONFIGS.get(cfg)
    if shipped is not None and not force:
        return load_shipped(shipped)
    path = cached_path(name, cfg, root)
    tokenizer = byte_tokenizer()
    if path.is_dir() and not force:
        model = GPT2LMHeadModel.from_pretrained(path)
        model.eval()
        return model, tokenizer
    model = tiny_model(cfg, tokenizer)
    texts = pretraining_pairs(
        generate_tasks(cfg.num_tasks, seed=1000 + cfg.seed, difficulty=cfg.difficulty),
        cfg.template_weights,
        seed=cfg.seed,
    )
    t0 = time.perf_counter()
    losses = pretrain(model, tokenizer, texts, cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=path.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "bystander_pretrain.json").write_text(
        json.dumps(
            {
                "config": asdict(cfg),
                "final_loss": losses[-1] if losses else None,
                "seconds": time.perf_counter() - t0,
            }
        )
    )
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    # as if loaded from the cache: clients that rebuild the model from its path (TRL's
    # reference model) find it there
    model.config._name_or_path = model.name_or_path = str(path)
    return model, tokenizer


def tiny_pair(
    policy_cfg: TinyConfig = TINY_POLICY,
    slm_cfg: TinyConfig = TINY_SLM,
    *,
    root: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> tuple[torch.nn.Module, torch.nn.Module, Any]:
    """The built-in ``(policy, slm, tokenizer)``.

    The shipped configs (:data:`TINY_POLICY`, :data:`TINY_SLM`, :data:`TINY_SLM_HELDOUT`)
    load the weights shipped with the package (checksums verified, never pretrained);
    any other config is pretrained once and cached under ``root``.

    Args:
        policy_cfg, slm_cfg: Sizes and pretraining budgets (the cache key).
        root: Cache root (default :func:`cache_dir`).
        force: Pretrain even a shipped config, and even if cached.
    """
    policy, tokenizer = _cached("policy", policy_cfg, root, force)
    slm, _ = _cached("slm", slm_cfg, root, force)
    return policy, slm, tokenizer


def load_causal_lm(
    name_or_path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    root: str | os.PathLike[str] | None = None,
) -> tuple[torch.nn.Module, Any]:
    """Load ``(model, tokenizer)``: a shipped tiny model, a local path or a hub id.

    ``"tiny-policy"``, ``"tiny-slm"`` and ``"tiny-slm-heldout"`` are the weights shipped
    with the package (:func:`bystander.llm.shipped.load_shipped`, checksums verified);
    ``root`` is unused (kept for callers of the cache era).

    A local directory without a tokenizer gets the byte-level tokenizer when the
    model's vocabulary has ByT5's size (384), else ``from_pretrained`` errors.

    Raises:
        FileNotFoundError: ``name_or_path`` looks like a path (absolute, ``./``,
            ``~``) or is an existing file but not a model directory.
        OSError: A hub id that cannot be loaded (offline and not cached, or unknown).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = os.fspath(name_or_path)
    if name in SHIPPED_NAMES:
        return load_shipped(name, device=device)
    expanded = os.path.expanduser(name)
    looks_like_path = (
        os.path.isabs(expanded) or name.startswith((".", "~")) or os.path.exists(expanded)
    )
    if looks_like_path:
        if not os.path.isdir(expanded):
            raise FileNotFoundError(f"model path not found (expected a directory): {name!r}")
        if not os.path.isfile(os.path.join(expanded, "config.json")):
            raise FileNotFoundError(f"model path has no config.json: {name!r}")
    try:
        model = AutoModelForCausalLM.from_pretrained(expanded)
    except OSError as exc:
        raise OSError(
            f"could not load causal LM {name!r}: not a local model directory and not "
            f"loadable from the Hugging Face Hub (offline or unknown id). Cause: {exc}"
        ) from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(expanded)
    except (OSError, ValueError, TypeError) as exc:
        if model.config.vocab_size == len(byte_tokenizer()):
            tokenizer = byte_tokenizer()
        else:
            raise OSError(f"could not load the tokenizer of {name!r}: {exc}") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model.to(device), tokenizer


def _left_pad(seqs: Sequence[np.ndarray], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad, dtype=torch.long)
    att = torch.zeros((len(seqs), n), dtype=torch.long)
    for j, s in enumerate(seqs):
        if len(s):
            ids[j, n - len(s) :] = torch.as_tensor(np.asarray(s, dtype=np.int64))
            att[j, n - len(s) :] = 1
    return ids, att


def max_context(model: torch.nn.Module) -> int:
    """The model's context length in tokens (``n_positions``/``max_position_embeddings``)."""
    cfg = model.config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(cfg, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return 1 << 30


@torch.no_grad()
def generate_group(
    policy: torch.nn.Module,
    tokenizer: Any,
    prompt_ids: Sequence[np.ndarray],
    group_size: int,
    *,
    max_new_tokens: int = 96,
    temperature: float = 1.0,
    top_k: int = 0,
    truncate_prompt: str = "error",
    greedy: bool = False,
) -> list[np.ndarray]:
    """Sample ``group_size`` completions per prompt in one batched ``generate`` call.

    Sampling draws from torch's global RNG (seed it with ``torch.manual_seed``).

    Args:
        prompt_ids: One ``(L,)`` int array of policy token ids per prompt.
        group_size: Completions per prompt (``G``).
        max_new_tokens: Completion length bound in tokens.
        temperature: Sampling temperature (> 0).
        top_k: Top-k filter (0: none).
        truncate_prompt: ``"error"`` raises ``ValueError`` when a prompt plus
            ``max_new_tokens`` exceeds the model's context; ``"left"`` keeps the
            prompt's last tokens.
        greedy: Greedy decoding instead of sampling (``temperature``/``top_k`` unused).

    Returns:
        ``len(prompt_ids) * group_size`` arrays (prompt-major), each ``(T,)`` int64
        without the EOS and padding. ``T`` may be 0 (an empty completion).
    """
    if group_size < 1:
        raise ValueError(f"group_size: expected >= 1, got {group_size}")
    if temperature <= 0:
        raise ValueError(f"temperature: expected > 0, got {temperature}")
    if truncate_prompt not in ("error", "left"):
        raise ValueError(f"truncate_prompt: expected 'error' or 'left', got {truncate_prompt!r}")
    ctx = max_context(policy)
    if max_new_tokens < 1 or max_new_tokens >= ctx:
        raise ValueError(f"max_new_tokens: expected in [1, {ctx}), got {max_new_tokens}")
    room = ctx - max_new_tokens
    prompts = []
    for i, p in enumerate(prompt_ids):
        p = np.asarray(p, dtype=np.int64)
        if len(p) == 0:
            raise ValueError(f"prompt_ids[{i}]: empty prompt")
        if len(p) > room:
            if truncate_prompt == "error":
                raise ValueError(
                    f"prompt_ids[{i}]: prompt of {len(p)} tokens plus max_new_tokens="
                    f"{max_new_tokens} exceeds the policy's context of {ctx} tokens "
                    "(shorten it or use truncate_prompt='left')"
                )
            p = p[-room:]
        prompts.extend([p] * group_size)
    ids, att = _left_pad(prompts, tokenizer.pad_token_id)
    device = next(policy.parameters()).device
    out = policy.generate(
        input_ids=ids.to(device),
        attention_mask=att.to(device),
        **(
            {"do_sample": False}
            if greedy
            else {
                "do_sample": True,
                "temperature": float(temperature),
                "top_k": int(top_k),
                "top_p": 1.0,
            }
        ),  # fmt: skip
        max_new_tokens=int(max_new_tokens),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    new = out[:, ids.shape[1] :].cpu().numpy()
    completions = []
    for row in new:
        stop = np.nonzero(row == tokenizer.eos_token_id)[0]
        completions.append(row[: stop[0]] if len(stop) else row)
    return [c.astype(np.int64) for c in completions]


def completion_logprobs(
    model: torch.nn.Module,
    prompt_ids: Sequence[np.ndarray],
    completion_ids: Sequence[np.ndarray],
    pad_id: int,
    eos_id: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probabilities of completions given prompts (differentiable).

    Each row is ``prompt + completion (+ eos if given)``, right-padded.

    Returns:
        ``(logp, mask)`` of shape ``(N, C)``: ``logp[i, t]`` = log p(token t of
        completion i | everything before), ``mask`` 1.0 on real completion tokens
        (including the EOS when ``eos_id`` is given).
    """
    rows, starts = [], []
    for p, c in zip(prompt_ids, completion_ids, strict=True):
        c = np.asarray(c, dtype=np.int64)
        if eos_id is not None:
            c = np.append(c, eos_id)
        rows.append(np.concatenate([np.asarray(p, dtype=np.int64), c]))
        starts.append((len(p), len(c)))
    n = max(len(r) for r in rows)
    device = next(model.parameters()).device
    ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    att = torch.zeros((len(rows), n), dtype=torch.long)
    for j, r in enumerate(rows):
        ids[j, : len(r)] = torch.as_tensor(r)
        att[j, : len(r)] = 1
    ids, att = ids.to(device), att.to(device)
    logits = model(input_ids=ids, attention_mask=att).logits[:, :-1].float()
    logp_all = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    c_max = max(max(c for _, c in starts), 1)
    logp = torch.zeros((len(rows), c_max), device=device)
    mask = torch.zeros((len(rows), c_max), device=device)
    for j, (s, c) in enumerate(starts):
        if c:
            logp[j, :c] = logp_all[j, s - 1 : s - 1 + c]
            mask[j, :c] = 1.0
    return logp, mask
