"""GRPO settings: :class:`GRPOConfig` (the trainer's knobs and its constraint).

In its own module, as TRL keeps ``GRPOConfig`` apart from ``GRPOTrainer``; the
constraint fields are the shared :class:`~bystander.envs.constraint_config.ConstraintConfig`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from bystander.envs.constraint_config import ConstraintConfig
from bystander.envs.scoring import COMBINE
from bystander.envs.text_v0 import parse_views

__all__ = ["GRPOConfig", "text_constraint"]


def text_constraint() -> ConstraintConfig:
    """The text domain's defaults of ``GRPOConfig.constraint`` (fields:
    :class:`~bystander.envs.constraint_config.ConstraintConfig`).

    The cost is the SLM observers' nats/token of a completion (already a rate, so one
    cost, no ``channel``, ``cost_normalization`` ``sum``): shaping weight 1 reward per
    nats/token, budget 1.5 nats/token; the multiplier is updated once per GRPO step.
    """
    return ConstraintConfig(
        weight=1.0, budget=1.5, lambda_lr=0.05, lambda_init=1.0, lambda_max=100.0, kp=0.1
    )


@dataclass
class GRPOConfig:
    """GRPO and constraint settings (units in brackets).

    ``constraint`` is the shared :class:`~bystander.envs.constraint_config.ConstraintConfig`
    (the same schema as the driving ``RunConfig.constraint``) with the text defaults
    (:func:`text_constraint`); a mapping of its fields (a JSON run config) is read over
    those defaults.
    """

    group_size: int = 8
    prompts_per_step: int = 4
    max_new_tokens: int = 96
    temperature: float = 1.0
    top_k: int = 0
    lr: float = 5e-4
    beta: float = 0.04
    clip_eps: float = 0.2
    ppo_epochs: int = 1
    max_grad_norm: float = 1.0
    views: str = "prefix:0.5,mask:0.7,full"
    combine: str = "mean"
    constraint: ConstraintConfig = field(default_factory=text_constraint)
    review_threshold: float | None = None  # [nats/token]
    review_mode: str = "withhold"
    min_length: int = 0  # [tokens]
    length_penalty: float = 0.5
    co_train: bool = False
    truncate_prompt: str = "error"
    seed: int = 0
    tensorboard: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.constraint, Mapping):
            self.constraint = _constraint_from(self.constraint)
        c = self.constraint
        if c.channel is not None or c.cost_normalization != "sum":
            raise ValueError(
                "constraint.channel / constraint.cost_normalization: expected None / 'sum' "
                "(the GRPO trainer has one cost, already a rate in nats/token), got "
                f"{c.channel!r} / {c.cost_normalization!r}"
            )
        if c.conditioned:
            raise ValueError(
                "constraint.conditioned: expected false (a lambda-conditioned policy is "
                "for the driving trainer; the GRPO trainer has one lambda per step)"
            )
        if self.review_mode not in ("withhold", "flag"):
            raise ValueError(
                f"review_mode: expected 'withhold' or 'flag', got {self.review_mode!r}"
            )
        if self.group_size < 2:
            raise ValueError(
                f"group_size: expected >= 2 (GRPO needs a group), got {self.group_size}"
            )
        if self.prompts_per_step < 1:
            raise ValueError(f"prompts_per_step: expected >= 1, got {self.prompts_per_step}")
        if self.combine not in COMBINE:
            raise ValueError(f"combine: expected one of {COMBINE}, got {self.combine!r}")
        parse_views(self.views)


def _constraint_from(values: Mapping[str, Any]) -> ConstraintConfig:
    """``values`` (field -> value) over :func:`text_constraint`; unknown keys refused."""
    known = {f.name for f in fields(ConstraintConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"constraint.{unknown[0]}: unknown config key; expected one of {sorted(known)}"
        )
    return replace(text_constraint(), **values)
