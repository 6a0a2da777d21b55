"""Adapter for TRL's ``GRPOTrainer`` (optional extra: ``pip install bystander[trl]``).

- :class:`TaskReward`: a TRL reward function (``prompts, completions,
  completion_ids, **kwargs -> list[float]``) computing the task reward with the
  project's verifier; it reads the dataset's ``answer`` column.
- :class:`PredictabilityReward`: a TRL reward function returning minus the SLM
  observers' cost (nats/token) of each completion, scored with
  :func:`bystander.llm.observers.score_observers` (same views, same combining as the
  env and the built-in trainer). It records the batch's costs for the callback.
- :class:`ConstraintCallback`: a ``transformers.TrainerCallback`` that, once per
  optimisation step, updates the shared multiplier from the mean cost recorded since
  the last update, and sets TRL's ``reward_weights`` to ``[1/(1+lambda),
  lambda/(1+lambda)]``: the combined reward is then ``(r - lambda*c)/(1+lambda)``
  (Safe RLHF's normalised Lagrangian). Shaping: fixed weights ``[1, w]``. With
  ``signal="heldout"`` (``constraint.signal``) TRL's own evaluations are the updates
  instead: each ``on_evaluate`` reads the held-out cost TRL logged for the cost reward
  (``eval_rewards/predictability/mean``, minus the cost) and the training steps leave
  lambda alone, as in the built-in trainer.

- :func:`align_positions`: makes TRL score left-padded rows at the positions they were
  generated at (absolute-position models such as the built-in GPT-2 tiny models).
- :func:`trl_tokenizer`: the tokenizer to pass as TRL's ``processing_class``: TRL
  tokenises prompts with the tokenizer's special tokens, and a byte-level tokenizer
  would end every prompt with ``</s>``; this copy adds none.

Parity with :class:`bystander.llm.grpo.GRPOTrainer`: build TRL's ``GRPOConfig`` with
``multi_objective_aggregation="normalize_then_sum"``, so that each reward is
standardised within its group before the weighted sum; the weights
``[1/(1+lambda), lambda/(1+lambda)]`` then give ``A_r - lambda A_c`` up to a positive
scale, the built-in trainer's trade-off. The scale differs: the built-in trainer divides
by ``1 + lambda``, TRL 1.16 re-standardises the summed advantage over the batch, which
changes the step size, not the direction. :func:`attach_constraint` refuses a
Lagrangian on a trainer that sums first (TRL's default), where lambda would weigh raw
rewards of different scales instead.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bystander.envs.constraint_config import SIGNALS
from bystander.envs.scoring import combine_errors
from bystander.envs.text_tasks import ArithmeticVerifier, Task
from bystander.envs.text_tokens import encode
from bystander.envs.text_v0 import ObserverView, parse_views
from bystander.llm.observers import score_observers

__all__ = [
    "ConstraintCallback",
    "PredictabilityReward",
    "TaskReward",
    "align_positions",
    "attach_constraint",
    "tasks_dataset",
    "trl_tokenizer",
]


def _text(x: Any) -> str:
    """TRL passes plain strings, or chat messages (lists of {"role", "content"})."""
    if isinstance(x, str):
        return x
    if isinstance(x, Sequence) and x and isinstance(x[-1], Mapping):
        return "".join(str(m.get("content", "")) for m in x)
    raise TypeError(f"completion: expected str or chat messages, got {type(x).__name__}")


class TaskReward:
    """TRL reward function: the verifier's reward against the ``answer`` column."""

    __name__ = "task_reward"

    def __init__(self, verifier: Any | None = None) -> None:
        self.verifier = verifier if verifier is not None else ArithmeticVerifier()

    def __call__(
        self,
        prompts: list[Any],
        completions: list[Any],
        completion_ids: list[list[int]],
        **kwargs: Any,
    ) -> list[float]:
        answers = kwargs.get("answer")
        if answers is None:
            raise ValueError("TaskReward: the dataset needs an 'answer' column")
        out = []
        for c, a in zip(completions, answers, strict=True):
            out.append(float(self.verifier(_text(c), Task("", str(a), ""))["reward"]))
        return out


class PredictabilityReward:
    """TRL reward function: ``-cost`` (nats/token) of each completion under the SLM observers.

    Args:
        predictors: SLM predictor(s), as the shared wrapper takes them.
        tokenizer: The policy's tokenizer (``completion_ids`` are in its vocabulary).
        views: Observer views (:func:`parse_views` syntax).
        combine: ``"mean"`` or ``"worst"``.
        seed: Seed of the mask views.
    """

    __name__ = "predictability"

    def __init__(
        self,
        predictors: Any,
        tokenizer: Any,
        views: str | Sequence[ObserverView] = "prefix:0.5,mask:0.7,full",
        combine: str = "mean",
        seed: int = 0,
    ) -> None:
        self.predictors = predictors
        self.tokenizer = tokenizer
        self.views = parse_views(views)
        self.combine = combine
        self.rng = np.random.default_rng(seed)
        self.pending_costs: list[float] = []
        self.last_errors: np.ndarray | None = None

    def __call__(
        self,
        prompts: list[Any],
        completions: list[Any],
        completion_ids: list[list[int]],
        **kwargs: Any,
    ) -> list[float]:
        import torch

        texts = [_text(p) for p in prompts]
        p_ids = [encode(self.tokenizer, t) for t in texts]
        comps = [np.asarray(c, dtype=np.int64) for c in completion_ids]
        eos = self.tokenizer.eos_token_id
        comps = [c[: np.argmax(c == eos)] if (c == eos).any() else c for c in comps]
        with torch.no_grad():
            errors = score_observers(self.predictors, self.views, comps, p_ids, texts, self.rng)
        cost = combine_errors(errors, self.combine)
        self.last_errors = errors
        self.pending_costs.extend(cost.tolist())
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            log_metric("predictability_cost", float(cost.mean()))
        return (-cost).tolist()


def _callback_base() -> type:
    from transformers import TrainerCallback

    return TrainerCallback


class ConstraintCallback(_callback_base()):  # type: ignore[misc]
    """Updates the shared multiplier once per step and sets TRL's reward weights.

    Args:
        multiplier: A :mod:`bystander.envs.constraints` multiplier, or ``None`` for
            fixed weights.
        cost_reward: The :class:`PredictabilityReward` whose costs it reads.
        shaping_weight: With no multiplier, the fixed weight of the cost reward.
        cost_index: Position of the cost reward among the trainer's reward functions.
        signal: ``"rollout"`` (each step's completions) or ``"heldout"`` (TRL's
            evaluations: needs ``eval_strategy`` and an ``eval_dataset``).
    """

    def __init__(
        self,
        multiplier: Any | None,
        cost_reward: PredictabilityReward,
        shaping_weight: float = 0.0,
        cost_index: int = 1,
        signal: str = "rollout",
    ) -> None:
        if signal not in SIGNALS:
            raise ValueError(f"signal: expected one of {SIGNALS}, got {signal!r}")
        self.signal = signal
        self.multiplier = multiplier
        self.cost_reward = cost_reward
        self.shaping_weight = float(shaping_weight)
        self.cost_index = int(cost_index)
        self.trainer: Any = None
        self.history: list[dict[str, float]] = []

    def weights(self) -> list[float]:
        """``[task weight, cost weight]`` for the current lambda."""
        if self.multiplier is None:
            return [1.0, self.shaping_weight]
        lam = float(self.multiplier.value)
        return [1.0 / (1.0 + lam), lam / (1.0 + lam)]

    def apply(self) -> None:
        """Write :meth:`weights` into the attached trainer's ``reward_weights``."""
        if self.trainer is None:
            return
        import torch

        w = self.trainer.reward_weights.clone()
        task_w, cost_w = self.weights()
        w[:] = task_w
        w[self.cost_index] = cost_w
        self.trainer.reward_weights = w.to(torch.float32)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        costs = self.cost_reward.pending_costs
        if costs and self.multiplier is not None and self.signal == "rollout":
            mean = float(np.mean(costs))
            lam = self.multiplier.update(mean)
            self.history.append(
                {"step": float(state.global_step), "mean_cost": mean, "lambda": lam}
            )
        costs.clear()
        self.apply()
        return control

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: Mapping[str, float] | None = None,
        **kwargs: Any,
    ) -> Any:  # fmt: skip
        """An evaluation's completions never feed a training update; with
        ``signal="heldout"`` its mean cost is the multiplier's update."""
        self.cost_reward.pending_costs.clear()
        if self.multiplier is None or self.signal != "heldout":
            return control
        key = f"eval_rewards/{self.cost_reward.__name__}/mean"
        if not metrics or metrics.get(key) is None:
            raise ValueError(
                f"metrics: expected TRL's held-out cost {key!r} in the evaluation's metrics "
                f"(is {self.cost_reward.__name__!r} one of the trainer's reward functions?)"
            )
        mean = -float(metrics[key])
        lam = self.multiplier.update(mean)
        self.history.append(
            {"step": float(state.global_step), "mean_cost": mean, "lambda": lam, "heldout": 1.0}
        )
        self.apply()
        return control


def attach_constraint(trainer: Any, callback: ConstraintCallback) -> ConstraintCallback:
    """Register ``callback`` on a TRL trainer and set the initial reward weights.

    Raises:
        ValueError: A multiplier on a trainer whose ``args.multi_objective_aggregation``
            is not ``"normalize_then_sum"`` (the Lagrangian would not mean what it means
            in the built-in trainer), or a held-out signal on a trainer that never
            evaluates.
    """
    aggregation = getattr(getattr(trainer, "args", None), "multi_objective_aggregation", None)
    if callback.multiplier is not None and aggregation != "normalize_then_sum":
        raise ValueError(
            "GRPOConfig.multi_objective_aggregation: expected 'normalize_then_sum' with a "
            f"Lagrange multiplier (each reward standardised before lambda weighs it), got "
            f"{aggregation!r}"
        )
    if callback.multiplier is not None and callback.signal == "heldout":
        strategy = str(getattr(getattr(trainer, "args", None), "eval_strategy", "no"))
        if strategy.lower().endswith("no") or getattr(trainer, "eval_dataset", None) is None:
            raise ValueError(
                "GRPOConfig.eval_strategy: expected 'steps' (or 'epoch') and an eval_dataset "
                f"with signal='heldout' (lambda moves at each evaluation), got {strategy!r}"
            )
    callback.trainer = trainer
    trainer.add_callback(callback)
    callback.apply()
    return callback


def align_positions(trainer: Any) -> Any:
    """Score left-padded sequences at the positions they were generated at.

    TRL 1.16 scores completions (policy, old policy and reference) with
    ``model(input_ids, attention_mask)`` and no ``position_ids``; a model with absolute
    position embeddings (GPT-2, the built-in tiny models) then numbers a left-padded
    row from its first pad, while ``generate`` numbered it from its first real token
    (``attention_mask.cumsum - 1``). Measured on the shipped tiny policy: a sampled
    20-token completion of log-probability -0.64 at generation scores -21.4 that way,
    so GRPO trains on, and the KL term compares, the wrong positions. This registers a
    forward pre-hook on ``trainer.model`` and ``trainer.ref_model`` (when there is one)
    that supplies ``position_ids = clip(attention_mask.cumsum(-1) - 1, 0)`` to any call
    with an attention mask, no ``position_ids`` and no cache; calls that bring their own
    (``generate``) are untouched. Rotary models (Qwen2, Llama) score the same either way.

    Returns ``trainer``.
    """
    for model in (getattr(trainer, "model", None), getattr(trainer, "ref_model", None)):
        if model is not None and not getattr(model, "_bystander_positions", False):
            model.register_forward_pre_hook(_mask_positions, with_kwargs=True)
            model._bystander_positions = True
    return trainer


def _mask_positions(module: Any, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict]:
    mask = kwargs.get("attention_mask")
    if (
        mask is None
        or kwargs.get("position_ids") is not None
        or kwargs.get("past_key_values") is not None
        or mask.dim() != 2
    ):
        return args, kwargs
    return args, {**kwargs, "position_ids": (mask.long().cumsum(-1) - 1).clamp(min=0)}


def trl_tokenizer(tokenizer: Any) -> Any:
    """A copy of ``tokenizer`` that adds no special tokens around a text (TRL tokenises
    prompts with the defaults: a byte-level tokenizer would append ``</s>``).

    For a Python ("slow") tokenizer such as the built-in byte tokenizer; a Rust-backed
    ("fast") tokenizer adds its special tokens in its backend, so it is returned as it
    is (those of instruct models add no EOS to a prompt)."""
    if getattr(tokenizer, "is_fast", False):
        return tokenizer
    out = copy.copy(tokenizer)
    out.build_inputs_with_special_tokens = _no_special_tokens
    return out


def _no_special_tokens(token_ids_0: list[int], token_ids_1: list[int] | None = None) -> list[int]:
    return list(token_ids_0) + list(token_ids_1 or [])


def tasks_dataset(tasks: Sequence[Task]) -> Any:
    """A ``datasets.Dataset`` with ``prompt`` and ``answer`` columns for TRL."""
    from datasets import Dataset

    from bystander.envs.text_tasks import format_prompt

    return Dataset.from_dict(
        {"prompt": [format_prompt(t.question) for t in tasks], "answer": [t.answer for t in tasks]}
    )
