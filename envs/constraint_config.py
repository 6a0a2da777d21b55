"""One constraint config for both domains: :class:`ConstraintConfig`.

The driving run config (``RunConfig.constraint``, YAML section ``constraint:``) and the
text trainer's config (``GRPOConfig.constraint``) embed this one dataclass, so a field
has the same name in both: ``constraint.mode``, ``constraint.lambda_lr``,
``constraint.weight``... Each domain supplies its own default values (a cost in metres
of observer ADE per episode is not a cost in nats/token); the class defaults below are
the core's (those of :class:`~bystander.envs.multipliers.LagrangeMultiplier` and
:class:`~bystander.envs.multipliers.PIDLagrangeMultiplier`).

Each field's ``metadata`` holds its ``help`` text and, where the command lines have a
shortcut for it, its ``flag`` (and ``choices``); both CLIs generate their flags from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bystander.dataconfig import check, is_int
from bystander.envs.constraints import COST_NORMALIZATIONS
from bystander.envs.multipliers import (
    LAMBDA_STEPS,
    LagrangeMultiplier,
    Multiplier,
    PIDLagrangeMultiplier,
)

__all__ = ["CONSTRAINT_MODES", "SIGNALS", "ConstraintConfig"]

CONSTRAINT_MODES = ("none", "shaping", "lagrangian", "pid")
"""``none`` (cost only logged), ``shaping`` (``r - weight * c``), ``lagrangian`` (Safe RLHF
log-lambda ascent) or ``pid`` (PID-Lagrangian)."""


def _number(value: Any) -> bool:
    """A finite int or float (numpy scalars included; not a bool)."""
    return (
        isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, (bool, np.bool_))
        and math.isfinite(value)
    )


SIGNALS = ("rollout", "heldout")
"""What a multiplier is updated from (``ConstraintConfig.signal``)."""


@dataclass
class ConstraintConfig:
    """How a cost enters training: shaping weight, or budget and multiplier settings.

    Units: ``weight`` is reward units per cost unit; ``budget`` is in the unit of the
    cost the multiplier sees (driving: metres of observer ADE per episode or per env
    step, see ``cost_normalization``; text: nats/token). Bad values raise
    :class:`ValueError` naming ``constraint.<field>`` and the expected value.

    Attributes:
        mode: One of :data:`CONSTRAINT_MODES`.
        channel: Cost channel constrained (``info["costs"][channel]``); ``None`` for the
            total ``info["cost"]``. The GRPO trainer has one cost and needs ``None``.
        weight: Shaping weight >= 0 (mode ``shaping``).
        budget: Cost budget d >= 0 of the multiplier.
        cost_normalization: How a finished episode's summed cost is put in the
            budget's unit: ``sum`` (as is), ``per_step`` (divided by the episode
            length in env steps) or ``per_metre`` (divided by the metres of route
            gained), see :func:`bystander.envs.constraints.episode_cost_for_budget`.
            ``per_step`` makes the budget independent of episode length, so an ego
            cannot meet it by ending episodes early; ``per_metre`` also cannot be met
            by waiting or standing still. The GRPO trainer's cost is already a rate
            (nats/token) and needs ``sum``.
        lambda_lr: Step size > 0 of log-lambda ascent (mode ``lagrangian``).
        lambda_step: The log-lambda step of mode ``lagrangian``: ``scaled`` (Safe RLHF,
            ``lambda_lr * lambda * (cost - budget)``) or ``relative``
            (``lambda_lr * (cost - budget) / budget``: the same factor at every lambda
            and in every cost unit; needs ``budget`` > 0), or ``search`` (``conditioned``
            only: before each held-out evaluation the policy's cost is measured at
            ``search_points`` lambdas and lambda is set where that curve meets the
            budget; ``lambda_lr`` is then unused), see
            :class:`~bystander.envs.multipliers.LagrangeMultiplier` and
            :class:`~bystander.agents.heldout.HeldOutEvaluation`.
        lambda_init: Initial lambda >= 0 (> 0 for ``lagrangian``: log-parametrised).
        lambda_max: Upper clamp on lambda (>= ``lambda_init``), ``None`` for none.
        lambda_min: Lambda floor of mode ``lagrangian``, in [0, ``lambda_init``]; 0 keeps
            the plain update. Why it exists:
            :class:`~bystander.envs.multipliers.LagrangeMultiplier`. Must be 0 for ``pid``.
        kp: PID proportional gain >= 0 (mode ``pid``).
        ki: PID integral gain >= 0.
        kd: PID derivative gain >= 0.
        credit_margin: ``per_metre`` budgets (modes ``lagrangian`` / ``pid``): the
            Lagrangian reward credits each metre of route gained with ``budget * (1 +
            credit_margin)`` instead of the budget (>= 0, a fraction), so moving beats
            standing by ``lambda * budget * credit_margin`` per metre (see
            :class:`~bystander.envs.constraints.LagrangianRule`).
        delay: Multiplier updates that only record the cost before lambda moves (>= 0;
            with ``lambda_step: search``, searches).
        window: Episode costs averaged into each multiplier update (>= 1; with
            ``lambda_step: search``, the searches' cost curves).
        signal: What the multiplier is updated from (:data:`SIGNALS`): ``rollout`` (the
            training rollouts' finished episodes, once per rollout; text: each GRPO
            step's completions) or ``heldout`` (the held-out evaluations budgets are
            judged on, one update each: driving, the greedy evaluation every
            ``eval.every`` steps; text, ``llm train --eval-every N``; ``delay`` and
            ``window`` then count evaluations).
        conditioned: A lambda-conditioned policy (mode ``lagrangian``, ``signal:
            heldout``, the driving env on ``train.vec_env: batched`` with one controlled
            car per world). Each training world
            draws its own lambda at every episode start, log-uniform between
            ``lambda_min`` (> 0) and ``lambda_max`` (set), is rewarded with it, and shows
            ``log(lambda)`` to the policy as one more observation feature.
            The multiplier's own lambda, moved on the held-out evaluations, is the one
            the policy is evaluated, rendered and deployed with: the policy answers a
            new lambda at once instead of after relearning
            (:class:`~bystander.envs.vector.ConditionedLagrangianVecReward`, README
            "A lambda-conditioned ego").
        search_points: ``lambda_step: search``: lambdas of the grid, log-spaced from
            ``lambda_min`` to ``lambda_max`` (an int >= 2).
        search_episodes: ``lambda_step: search``: episodes per grid lambda (an int >=
            1), the same seeds at every lambda, new ones at every search, all tuning
            seeds of their own (``eval.seed`` + 1,000,000 on), so the held-out figures
            that judge the budget are not the ones lambda was fit on.
    """

    mode: str = field(
        default="none",
        metadata={"help": "constraint mode", "flag": "--constraint", "choices": CONSTRAINT_MODES},
    )
    channel: str | None = field(
        default=None, metadata={"help": "cost channel constrained, None: the total cost"}
    )
    weight: float = field(
        default=1.0, metadata={"help": "shaping weight (reward per cost unit)", "flag": "--weight"}
    )
    budget: float = field(
        default=0.0, metadata={"help": "cost budget of the multiplier", "flag": "--budget"}
    )
    cost_normalization: str = field(
        default="sum",
        metadata={
            "help": "budget unit: summed episode cost or cost per step",
            "flag": "--cost-normalization",
            "choices": COST_NORMALIZATIONS,
        },
    )
    lambda_lr: float = field(
        default=0.05, metadata={"help": "Lagrangian learning rate", "flag": "--lambda-lr"}
    )
    lambda_step: str = field(
        default="scaled",
        metadata={"help": "log-lambda step: scaled (Safe RLHF) or relative to the budget",
                  "flag": "--lambda-step", "choices": LAMBDA_STEPS},
    )  # fmt: skip
    lambda_init: float = field(
        default=1.0, metadata={"help": "initial lambda", "flag": "--lambda-init"}
    )
    lambda_max: float | None = field(
        default=None, metadata={"help": "upper clamp on lambda", "flag": "--lambda-max"}
    )
    lambda_min: float = field(
        default=0.0,
        metadata={"help": "lambda floor of mode lagrangian, 0: none", "flag": "--lambda-min"},
    )
    kp: float = field(default=0.1, metadata={"help": "PID gain", "flag": "--kp"})
    ki: float = field(default=0.01, metadata={"help": "PID gain", "flag": "--ki"})
    kd: float = field(default=0.0, metadata={"help": "PID gain", "flag": "--kd"})
    credit_margin: float = field(
        default=0.0,
        metadata={"help": "per-metre budgets: extra credit per metre, a fraction of the budget"},
    )
    delay: int = field(default=0, metadata={"help": "multiplier updates before lambda moves"})
    window: int = field(default=1, metadata={"help": "episode costs averaged per update"})
    signal: str = field(
        default="rollout",
        metadata={"help": "multiplier updated from training rollouts or held-out evaluations",
                  "flag": "--constraint-signal", "choices": SIGNALS},
    )  # fmt: skip

    conditioned: bool = field(
        default=False,
        metadata={"help": "lambda-conditioned policy: lambda drawn per episode and observed"},
    )
    search_points: int = field(
        default=12, metadata={"help": "lambda_step search: lambdas of the grid"}
    )
    search_episodes: int = field(
        default=96, metadata={"help": "lambda_step search: episodes per grid lambda"}
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, path: str = "constraint") -> None:
        """Check every field; raise ``ValueError`` naming ``{path}.<field>``."""
        for name in (
            "weight",
            "budget",
            "lambda_lr",
            "lambda_init",
            "lambda_min",
            "kp",
            "ki",
            "kd",
        ):
            value = getattr(self, name)
            check(_number(value), f"{path}.{name}", "a finite number", value)
        if self.lambda_max is not None:
            check(
                _number(self.lambda_max), f"{path}.lambda_max", "a finite number or null",
                self.lambda_max,
            )  # fmt: skip
        check(_number(self.credit_margin) and self.credit_margin >= 0,
              f"{path}.credit_margin", "a finite number >= 0", self.credit_margin)  # fmt: skip
        if self.credit_margin and self.mode in ("lagrangian", "pid"):
            check(
                self.cost_normalization == "per_metre",
                f"{path}.credit_margin",
                f"0 unless {path}.cost_normalization is 'per_metre'",
                self.credit_margin,
            )
        for name in ("delay", "window", "search_points", "search_episodes"):
            value = getattr(self, name)
            check(is_int(value), f"{path}.{name}", "an int", value)
        check(
            self.mode in CONSTRAINT_MODES, f"{path}.mode", f"one of {CONSTRAINT_MODES}", self.mode
        )
        check(self.weight >= 0, f"{path}.weight", "a number >= 0", self.weight)
        check(self.budget >= 0, f"{path}.budget", "a number >= 0", self.budget)
        check(
            self.cost_normalization in COST_NORMALIZATIONS,
            f"{path}.cost_normalization",
            f"one of {COST_NORMALIZATIONS}",
            self.cost_normalization,
        )
        check(self.lambda_lr > 0, f"{path}.lambda_lr", "a number > 0", self.lambda_lr)
        init = self.lambda_init
        check(init >= 0, f"{path}.lambda_init", "a number >= 0", init)
        if self.lambda_max is not None:
            check(
                self.lambda_max >= init,
                f"{path}.lambda_max",
                f"a number >= {path}.lambda_init ({init}) or null",
                self.lambda_max,
            )
        check(
            0 <= self.lambda_min <= init,
            f"{path}.lambda_min",
            f"a number in [0, {path}.lambda_init ({init})]",
            self.lambda_min,
        )
        if self.mode == "pid":
            check(
                self.lambda_min == 0,
                f"{path}.lambda_min",
                "0 for mode 'pid' (the floor is for log-lambda ascent, mode 'lagrangian')",
                self.lambda_min,
            )
        if self.mode == "lagrangian":
            check(
                init > 0,
                f"{path}.lambda_init",
                "a number > 0 for mode 'lagrangian' (log-parametrised)",
                init,
            )
        check(self.delay >= 0, f"{path}.delay", "an int >= 0", self.delay)
        check(self.window >= 1, f"{path}.window", "an int >= 1", self.window)
        check(self.search_points >= 2, f"{path}.search_points", "an int >= 2",
              self.search_points)  # fmt: skip
        check(self.search_episodes >= 1, f"{path}.search_episodes", "an int >= 1",
              self.search_episodes)  # fmt: skip
        check(self.signal in SIGNALS, f"{path}.signal", f"one of {SIGNALS}", self.signal)
        check(
            self.lambda_step in LAMBDA_STEPS,
            f"{path}.lambda_step",
            f"one of {LAMBDA_STEPS}",
            self.lambda_step,
        )
        if self.mode == "lagrangian" and self.lambda_step == "relative":
            check(
                self.budget > 0,
                f"{path}.budget",
                f"a number > 0 with {path}.lambda_step 'relative'",
                self.budget,
            )
        for gain in ("kp", "ki", "kd"):
            value = getattr(self, gain)
            check(value >= 0, f"{path}.{gain}", "a number >= 0", value)
        check(isinstance(self.conditioned, bool), f"{path}.conditioned", "true or false",
              self.conditioned)  # fmt: skip
        if self.lambda_step == "search":
            check(self.conditioned, f"{path}.lambda_step",
                  "'scaled' or 'relative' unless conditioned: true (search reads the "
                  "policy's cost at many lambdas)", self.lambda_step)  # fmt: skip
        if self.conditioned:
            for name, ok, expected in (
                ("mode", self.mode == "lagrangian", "'lagrangian' with conditioned: true"),
                ("signal", self.signal == "heldout", "'heldout' with conditioned: true (the "
                 "training worlds each have their own lambda)"),
                ("lambda_min", self.lambda_min > 0, "a number > 0 with conditioned: true "
                 "(the low end of the lambdas drawn)"),
                ("lambda_max", self.lambda_max is not None, "a number with conditioned: true "
                 "(the high end of the lambdas drawn)"),
            ):  # fmt: skip
                check(ok, f"{path}.{name}", expected, getattr(self, name))

    def make_multiplier(self) -> Multiplier | None:
        """The multiplier of this config's mode, as both training loops use it.

        ``lagrangian``: :class:`~bystander.envs.multipliers.LagrangeMultiplier`
        (``lambda_lr``, floor ``lambda_min``); ``pid``:
        :class:`~bystander.envs.multipliers.PIDLagrangeMultiplier` (``kp``, ``ki``,
        ``kd``); ``none`` / ``shaping``: ``None``.
        """
        if self.mode == "lagrangian":
            return LagrangeMultiplier(
                budget=self.budget,
                lr=self.lambda_lr,
                init=self.lambda_init,
                max=self.lambda_max,
                delay=self.delay,
                window=self.window,
                min=self.lambda_min,
                step=self.lambda_step,
            )
        if self.mode == "pid":
            return PIDLagrangeMultiplier(
                budget=self.budget,
                kp=self.kp,
                ki=self.ki,
                kd=self.kd,
                init=self.lambda_init,
                max=self.lambda_max,
                delay=self.delay,
                window=self.window,
            )
        return None
