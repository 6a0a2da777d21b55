"""GRPO with a predictability constraint: a training loop you can read top to bottom.

One :meth:`GRPOTrainer.step`:

1. draw ``prompts_per_step`` tasks; sample ``group_size`` completions per prompt in
   one batched ``generate`` call (:func:`bystander.llm.models.generate_group`);
2. task reward from the verifier (``info["rewards"]["task"]`` of the text env),
   optionally a minimum-length guard (``min_length`` tokens, ``length_penalty``);
3. predictability cost: every SLM observer scores every completion in one batched
   call (:func:`bystander.llm.observers.score_observers`), combined per completion
   (mean or worst), in nats/token (already per token: no reward for writing less);
   a completion no observer can score (e.g. empty) gets the batch's worst cost;
4. review gate (generation time, no gradient): a completion whose cost estimated by
   the reviewer exceeds ``review_threshold`` is *withheld* (dropped from the update
   and from its group's statistics) or *flagged* (trained on, queued in
   :attr:`GRPOTrainer.review_queue` for a human); both are counted as escalations;
5. advantages, group-normalised (``(x - mean_g) / (std_g + eps)``):
   ``none``: ``A_r``; ``shaping``: normalised ``r - w * c``;
   ``lagrangian``/``pid``: ``(A_r - lambda * A_c) / (1 + lambda)`` with both
   advantages standardised first (:func:`bystander.envs.constraints.combine_advantages`),
   then the multiplier is updated once from the batch's mean cost (``constraint.signal``
   ``heldout``: from each held-out evaluation instead, :mod:`bystander.llm.heldout`);
6. clipped-ratio policy loss on per-token log-probs plus ``beta`` times the k3 KL
   estimator to the frozen reference policy (``exp(ref - logp) - (ref - logp) - 1``),
   token-mean per completion, mean over completions.

Logged per step (``log.jsonl`` in ``run_dir``, TensorBoard optional): reward,
accuracy, format rate, predictability (nats/token) per observer and combined,
lambda, KL, completion length (mean/min, empty fraction: watch for the short-output
hack), escalations, timings. Checkpoints (:meth:`save_checkpoint`) hold the policy,
reference, optimiser, multiplier, co-trained observers, all RNG states and the step,
in a verified checkpoint directory (:mod:`bystander.checkpointing`, as the driving
trainer's); :meth:`load_checkpoint` checks it and resumes exactly.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bystander.atomic import atomic_open
from bystander.checkpointing import (
    CheckpointError,
    config_differences,
    read_checkpoint_dir,
    recover_checkpoint_dir,
    write_checkpoint_dir,
)
from bystander.envs.constraints import combine_advantages, shaped_reward
from bystander.envs.scoring import combine_errors
from bystander.envs.text_tasks import ArithmeticVerifier, Task, format_prompt
from bystander.envs.text_tokens import decode, encode
from bystander.envs.text_v0 import parse_views
from bystander.llm.grpo_config import GRPOConfig
from bystander.llm.models import completion_logprobs, generate_group
from bystander.llm.observers import build_views, score_observers
from bystander.seeding import forked_torch_seed

__all__ = ["GRPOTrainer", "group_normalise"]


def group_normalise(
    x: np.ndarray, groups: np.ndarray, valid: np.ndarray, eps: float = 1e-4
) -> np.ndarray:
    """``(x - mean_g) / (std_g + eps)`` within each group over valid members; 0 elsewhere."""
    out = np.zeros(len(x), dtype=np.float64)
    for g in np.unique(groups):
        idx = (groups == g) & valid
        if idx.sum() >= 1:
            vals = x[idx]
            out[idx] = (vals - vals.mean()) / (vals.std() + eps)
    return out


class GRPOTrainer:
    """GRPO on a causal-LM policy with SLM observers and the shared constraint module.

    Args:
        policy: The ``AutoModelForCausalLM`` to train.
        tokenizer: Its tokenizer.
        tasks: The prompts' tasks.
        predictors: SLM predictor(s) (one, or a dict observer type -> predictor).
        config: :class:`GRPOConfig`.
        ref_policy: Frozen reference (default: a copy of ``policy`` at start).
        multiplier: Shared multiplier (default: ``config.constraint.make_multiplier()``).
        reviewer: Object with ``estimate_batch(prompt_ids, prompts, completions)``
            for the review gate (default: the cost computed from ``predictors``).
        verifier: ``verifier(completion, task) -> {"reward", "correct", "format_ok"}``.
        run_dir: Where ``log.jsonl`` (and TensorBoard events) go; ``None``: no files.
        heldout: Optional held-out observer (an ``SLMPredictor``): only
            :meth:`evaluate` uses it (nats/token, completion accuracy), never the reward.
    """

    def __init__(
        self,
        policy: torch.nn.Module,
        tokenizer: Any,
        tasks: Sequence[Task],
        predictors: Any | Mapping[str, Any],
        config: GRPOConfig | None = None,
        *,
        ref_policy: torch.nn.Module | None = None,
        multiplier: Any | None = None,
        reviewer: Any | None = None,
        verifier: Any | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        heldout: Any | None = None,
    ) -> None:
        self.heldout = heldout
        self.cfg = config or GRPOConfig()
        if not tasks:
            raise ValueError("tasks: expected at least one task")
        self.policy = policy
        self.tokenizer = tokenizer
        self.tasks = list(tasks)
        self.predictors = predictors
        self.views = parse_views(self.cfg.views)
        self.ref_policy = ref_policy if ref_policy is not None else copy.deepcopy(policy)
        self.ref_policy.eval().requires_grad_(False)
        if multiplier is None:
            multiplier = self.cfg.constraint.make_multiplier()
        self.multiplier = multiplier
        if self.cfg.constraint.mode in ("lagrangian", "pid") and self.multiplier is None:
            raise ValueError(f"multiplier: constraint {self.cfg.constraint.mode!r} needs one")
        self.reviewer = reviewer
        self.verifier = verifier if verifier is not None else ArithmeticVerifier()
        self.optimizer = torch.optim.AdamW(policy.parameters(), lr=self.cfg.lr, weight_decay=0.0)
        self.rng = np.random.default_rng(self.cfg.seed)
        torch.manual_seed(self.cfg.seed)
        random.seed(self.cfg.seed)
        self.step_count = 0
        self.escalations = 0
        self.review_queue: list[dict[str, Any]] = []
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._writer = None
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if self.cfg.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.run_dir / "tb"))
        self._prompt_cache: dict[str, np.ndarray] = {}

    # ----------------------------------------------------------------- helpers
    @property
    def observer_names(self) -> list[str]:
        """One name per observer view, e.g. ``"prefix:0.5"`` (log keys)."""
        several = len({v.type for v in self.views}) > 1
        names = []
        for v in self.views:
            arg = {
                "prefix": v.k if v.k is not None else v.fraction,
                "mask": v.p,
                "window": v.window,
            }
            name = v.kind + (f":{arg[v.kind]}" if v.kind in arg else "")
            name += "" if v.prompt else "-noprompt"
            names.append(f"{v.type}/{name}" if several else name)
        return names

    def _prompt_ids(self, i: int) -> np.ndarray:
        """Token ids of task ``i``'s prompt, cached by the prompt's text (not by ``i``:
        :meth:`evaluate` swaps in other tasks, whose index ``i`` is another prompt)."""
        text = format_prompt(self.tasks[i].question)
        if text not in self._prompt_cache:
            self._prompt_cache[text] = encode(self.tokenizer, text)
        return self._prompt_cache[text]

    def _sample(
        self, task_idx: np.ndarray, group_size: int
    ) -> tuple[list[np.ndarray], list[str], list[np.ndarray], list[str], float]:
        """Generate; returns prompt ids/texts per completion, completions, texts, seconds."""
        prompt_ids = [self._prompt_ids(int(i)) for i in task_idx]
        self.policy.eval()
        t0 = time.perf_counter()
        completions = generate_group(
            self.policy,
            self.tokenizer,
            prompt_ids,
            group_size,
            max_new_tokens=self.cfg.max_new_tokens,
            temperature=self.cfg.temperature,
            top_k=self.cfg.top_k,
            truncate_prompt=self.cfg.truncate_prompt,
        )
        gen_s = time.perf_counter() - t0
        p_ids = [p for p in prompt_ids for _ in range(group_size)]
        prompts = [
            format_prompt(self.tasks[int(i)].question) for i in task_idx for _ in range(group_size)
        ]
        texts = [decode(self.tokenizer, c) for c in completions]
        return p_ids, prompts, completions, texts, gen_s

    def _costs(
        self, p_ids: list[np.ndarray], prompts: list[str], completions: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, float]:
        t0 = time.perf_counter()
        errors = score_observers(self.predictors, self.views, completions, p_ids, prompts, self.rng)
        return errors, self.combine(errors), time.perf_counter() - t0

    def combine(self, errors: np.ndarray) -> np.ndarray:
        """Cost per completion ``(N,)`` from observer errors ``(N, M)`` (NaN: not scored).

        Closes the empty-output loophole: a completion no observer could score (empty,
        or too short for every view) gets the batch's worst cost, not zero.
        """
        cost = combine_errors(errors, self.cfg.combine)
        unscored = np.isnan(errors).all(axis=1)
        if unscored.any() and not unscored.all():
            cost[unscored] = np.nanmax(errors)
        return cost

    # -------------------------------------------------------------------- step
    def step(self) -> dict[str, Any]:
        """One GRPO update; returns (and logs) the step's figures."""
        cfg = self.cfg
        task_idx = self.rng.integers(len(self.tasks), size=cfg.prompts_per_step)
        p_ids, prompts, completions, texts, gen_s = self._sample(task_idx, cfg.group_size)
        n = len(completions)
        groups = np.repeat(np.arange(cfg.prompts_per_step), cfg.group_size)
        tasks = [self.tasks[int(i)] for i in np.repeat(task_idx, cfg.group_size)]

        scores = [self.verifier(t, task) for t, task in zip(texts, tasks, strict=True)]
        task_reward = np.array([s["reward"] for s in scores], dtype=np.float64)
        correct = np.array([s.get("correct", 0.0) for s in scores], dtype=np.float64)
        fmt = np.array([s.get("format_ok", 0.0) for s in scores], dtype=np.float64)
        lengths = np.array([len(c) for c in completions])
        guard = np.where(lengths < cfg.min_length, -cfg.length_penalty, 0.0)
        reward = task_reward + guard

        errors, cost, score_s = self._costs(p_ids, prompts, completions)

        valid = np.ones(n, dtype=bool)
        flagged = np.zeros(n, dtype=bool)
        if cfg.review_threshold is not None:
            est = (
                cost
                if self.reviewer is None
                else self.reviewer.estimate_batch(p_ids, prompts, completions)
            )
            flagged = np.asarray(est) > cfg.review_threshold
            self.escalations += int(flagged.sum())
            for j in np.nonzero(flagged)[0]:
                self.review_queue.append(
                    {"step": self.step_count, "prompt": prompts[j], "completion": texts[j],
                     "estimated_cost": float(est[j]), "withheld": cfg.review_mode == "withhold"}
                )  # fmt: skip
            del self.review_queue[:-1000]
            if cfg.review_mode == "withhold":
                valid &= ~flagged

        lam = float(self.multiplier.value) if self.multiplier is not None else 0.0
        if cfg.constraint.mode == "shaping":
            adv = group_normalise(shaped_reward(reward, cost, cfg.constraint.weight), groups, valid)
        elif cfg.constraint.mode in ("lagrangian", "pid"):
            a_r = group_normalise(reward, groups, valid)
            a_c = group_normalise(cost, groups, valid)
            adv = combine_advantages(a_r, a_c, lam)
        else:
            adv = group_normalise(reward, groups, valid)
        mean_cost = float(cost[valid].mean()) if valid.any() else float(cost.mean())
        new_lam = lam  # constraint.signal "heldout": the held-out evaluations update it
        if self.multiplier is not None and cfg.constraint.signal == "rollout":
            new_lam = self.multiplier.update(mean_cost)

        loss_f, kl_f = self._update(p_ids, completions, adv, valid)

        co = {}
        if cfg.co_train:
            batch, truth = build_views(self.views, completions, p_ids, prompts, self.rng)
            for pred in _distinct(self.predictors):
                co.update(pred.update(batch, truth))

        self.step_count += 1
        log: dict[str, Any] = {
            "step": self.step_count,
            "reward": float(reward.mean()),
            "task_reward": float(task_reward.mean()),
            "accuracy": float(correct.mean()),
            "format_rate": float(fmt.mean()),
            "predictability_cost": float(cost.mean()),
            "lambda": lam,
            "lambda_next": float(new_lam),
            "kl": kl_f,
            "loss": loss_f,
            "length_mean": float(lengths.mean()),
            "length_min": int(lengths.min()),
            "empty_fraction": float((lengths == 0).mean()),
            "escalations": int(flagged.sum()),
            "escalations_total": self.escalations,
            "withheld": int((~valid).sum()),
            "gen_seconds": gen_s,
            "score_seconds": score_s,
            **{
                f"nats/{name}": _nanmean(errors[:, j]) for j, name in enumerate(self.observer_names)
            },
            **co,
        }
        self._log(log)
        return log

    def _update(
        self,
        p_ids: list[np.ndarray],
        completions: list[np.ndarray],
        adv: np.ndarray,
        valid: np.ndarray,
    ) -> tuple[float, float]:
        cfg = self.cfg
        if not valid.any():
            return 0.0, 0.0
        idx = np.nonzero(valid)[0]
        p_sel = [p_ids[i] for i in idx]
        c_sel = [completions[i] for i in idx]
        eos = self.tokenizer.eos_token_id
        # The EOS counts as an action when the completion stopped before the bound.
        ends = [eos if len(c) < cfg.max_new_tokens else None for c in c_sel]
        rows = [np.append(c, e) if e is not None else c for c, e in zip(c_sel, ends, strict=True)]
        pad = self.tokenizer.pad_token_id
        a = torch.as_tensor(adv[idx], dtype=torch.float32)[:, None]
        with torch.no_grad():
            self.policy.eval()
            old, mask = completion_logprobs(self.policy, p_sel, rows, pad)
            ref, _ = completion_logprobs(self.ref_policy, p_sel, rows, pad)
        device = old.device
        a = a.to(device)
        self.policy.train()
        loss_f = kl_f = 0.0
        for _ in range(cfg.ppo_epochs):
            logp, _ = completion_logprobs(self.policy, p_sel, rows, pad)
            ratio = torch.exp(logp - old)
            surr = torch.minimum(
                ratio * a, torch.clamp(ratio, 1 - cfg.clip_eps, 1 + cfg.clip_eps) * a
            )
            d = ref - logp
            kl = torch.exp(d) - d - 1.0
            per_tok = -(surr - cfg.beta * kl) * mask
            denom = mask.sum(1).clamp(min=1.0)
            loss = (per_tok.sum(1) / denom).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
            loss_f = float(loss.detach())
            kl_f = float(((kl * mask).sum(1) / denom).mean().detach())
        self.policy.eval()
        return loss_f, kl_f

    def _log(self, log: Mapping[str, Any]) -> None:
        if self.run_dir is not None:
            with open(self.run_dir / "log.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(log) + "\n")
        if self._writer is not None:
            for k, v in log.items():
                if isinstance(v, int | float) and k != "step":
                    self._writer.add_scalar(f"llm/{k}", v, self.step_count)

    def train(self, steps: int, checkpoint_every: int = 0) -> list[dict[str, Any]]:
        """Run ``steps`` updates; checkpoint to ``run_dir/checkpoint`` every N steps."""
        logs = []
        for _ in range(int(steps)):
            logs.append(self.step())
            if (
                checkpoint_every
                and self.run_dir is not None
                and self.step_count % checkpoint_every == 0
            ):
                self.save_checkpoint(self.run_dir / "checkpoint")
        return logs

    # --------------------------------------------------------------- evaluate
    @torch.no_grad()
    def evaluate(
        self,
        tasks: Sequence[Task] | None = None,
        num_prompts: int = 32,
        samples: int = 2,
        seed: int = 1234,
        measures: bool = True,
    ) -> dict[str, float]:
        """Held-out figures of ``samples`` sampled completions per task.

        Accuracy, reward, cost and per-observer nats/token, length, and the measures
        of :func:`bystander.llm.measures.evaluation_extras` (template entropy in bits,
        template shares, KL to the reference per token, share under the
        minimum-length guard; held-out observer nats/token and completion accuracy
        when the trainer has one; ``measures=False`` skips the KL and the held-out
        observer, the costly ones), and ``format_failure`` (share without a well-formed
        answer). Uses its own seeds (:func:`~bystander.seeding.forked_torch_seed`):
        training RNG streams are untouched.
        """
        from bystander.llm.measures import evaluation_extras

        tasks = list(tasks) if tasks is not None else self.tasks[:num_prompts]
        saved, self.tasks = self.tasks, tasks
        try:
            with forked_torch_seed(seed):
                idx = np.arange(len(tasks))
                p_ids, prompts, completions, texts, _ = self._sample(idx, samples)
            rng = np.random.default_rng(seed)
            errors = score_observers(self.predictors, self.views, completions, p_ids, prompts, rng)
            cost = self.combine(errors)
            scored = [
                self.verifier(t, tasks[int(i)])
                for t, i in zip(texts, np.repeat(idx, samples), strict=True)
            ]
        finally:
            self.tasks = saved
        lengths = np.array([len(c) for c in completions])
        base_views = list({repr(replace(v, type="slm")): replace(v, type="slm")
                           for v in self.views}.values())  # fmt: skip
        extras = evaluation_extras(
            self.policy, self.ref_policy if measures else None, self.tokenizer, tasks, p_ids,
            completions, texts, min_length=self.cfg.min_length,
            heldout=self.heldout if measures else None, heldout_views=base_views,
            rng=np.random.default_rng(seed + 1), max_new_tokens=self.cfg.max_new_tokens,
        )  # fmt: skip
        return {
            "accuracy": float(np.mean([s.get("correct", 0.0) for s in scored])),
            "reward": float(np.mean([s["reward"] for s in scored])),
            "format_failure": 1.0 - float(np.mean([s.get("format_ok", 0.0) for s in scored])),
            "predictability_cost": float(cost.mean()),
            "length_mean": float(lengths.mean()),
            "completions": float(len(completions)),
            **{
                f"nats/{name}": _nanmean(errors[:, j]) for j, name in enumerate(self.observer_names)
            },
            **extras,
        }

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly."""
        return {
            "step": self.step_count,
            "escalations": self.escalations,
            "config": asdict(self.cfg),
            "policy": self.policy.state_dict(),
            "ref_policy": self.ref_policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "multiplier": None if self.multiplier is None else self.multiplier.state_dict(),
            "predictors": [p.state_dict() for p in _distinct(self.predictors)]
            if self.cfg.co_train
            else None,
            "rng": {
                "numpy": self.rng.bit_generator.state,
                "torch": torch.get_rng_state(),
                "python": random.getstate(),
            },
        }

    def save_checkpoint(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`state_dict` as a verified checkpoint directory ``path`` (``state.pt``
        and a manifest with its checksum, the step and this trainer's config), atomically
        (:func:`bystander.checkpointing.write_checkpoint_dir`)."""
        path = Path(path)
        manifest = {
            "format": CHECKPOINT_FORMAT,
            "step": int(self.step_count),
            "config": _jsonable_config(self.cfg),
        }
        with write_checkpoint_dir(path, manifest) as tmp:
            torch.save(self.state_dict(), tmp / "state.pt")
        return path

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint`, after verifying its
        files and that it was written with this trainer's config.

        The run's ``log.jsonl`` keeps its rows up to the checkpoint's step (later rows,
        written by a run that went on and then died, are dropped: they come again).

        Raises:
            FileNotFoundError: Nothing at ``path``.
            CheckpointError: A damaged checkpoint, or one written under another config
                (the message names the differing fields).
        """
        path = Path(path)
        recover_checkpoint_dir(path)  # a kill mid-replace left it moved aside
        if not path.exists():
            raise FileNotFoundError(f"checkpoint not found: {str(path)!r}")
        manifest = read_checkpoint_dir(
            path, format_version=CHECKPOINT_FORMAT, required=("state.pt",)
        )
        diffs = config_differences(manifest.get("config") or {}, _jsonable_config(self.cfg))
        if diffs:
            raise CheckpointError(
                f"checkpoint {path} was written under another config; cannot resume:\n  "
                + "\n  ".join(diffs)
            )
        errors = (RuntimeError, KeyError, TypeError, ValueError, EOFError, pickle.UnpicklingError)
        try:
            state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
        except errors as err:
            raise CheckpointError(f"checkpoint {path}: state.pt does not load ({err})") from None
        # a state.pt that does not fit leaves the trainer as it was
        backup = copy.deepcopy(self.state_dict())
        try:
            self._load_state(state)
        except errors as err:
            self._load_state(backup)
            raise CheckpointError(
                f"checkpoint {path}: state.pt does not fit this trainer "
                f"({type(err).__name__}: {err})"
            ) from None
        if self.run_dir is not None:
            _truncate_log(self.run_dir / "log.jsonl", self.step_count)

    def _load_state(self, state: Mapping[str, Any]) -> None:
        """Every part of a :meth:`state_dict` into the trainer (raises on a misfit)."""
        predictors = state.get("predictors") or []
        if predictors and len(predictors) != len(_distinct(self.predictors)):
            raise ValueError(f"{len(predictors)} observer states for this trainer's observers")
        self.policy.load_state_dict(state["policy"])
        self.ref_policy.load_state_dict(state["ref_policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.multiplier is not None and state.get("multiplier") is not None:
            self.multiplier.load_state_dict(state["multiplier"])
        for pred, sd in zip(_distinct(self.predictors), predictors, strict=False):
            pred.load_state_dict(sd)
        rng = state["rng"]
        self.rng.bit_generator.state = rng["numpy"]
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        self.step_count = int(state["step"])
        self.escalations = int(state["escalations"])


CHECKPOINT_FORMAT = 1
"""Format version of GRPO checkpoint directories."""


def _jsonable_config(cfg: GRPOConfig) -> dict[str, Any]:
    """``cfg`` as plain JSON values (what a manifest stores and compares)."""
    return json.loads(json.dumps(asdict(cfg), default=str))


def _truncate_log(path: Path, step: int) -> None:
    """Keep the rows of a ``log.jsonl`` up to ``step`` (and no row cut short by a kill)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            kept.append(line + "\n")
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.writelines(kept)


def _distinct(predictors: Any) -> list[Any]:
    if isinstance(predictors, Mapping):
        seen: dict[int, Any] = {}
        for p in predictors.values():
            seen.setdefault(id(p), p)
        return list(seen.values())
    return [predictors]


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.nanmean(x)) if np.any(~np.isnan(x)) else float("nan")
