"""An SLM panel as an independent reviewer: the estimated predictability cost of a completion.

:class:`SLMReviewer` scores completions with SLM observers (no gradient) and
combines the observers (mean or worst) into one cost in nats/token. It serves both:

- the text env's decision-time gate, :class:`bystander.envs.review.ReviewGate`
  (``estimate(env, action) -> float``: the action is a completion for the env's
  current prompt);
- the GRPO trainer's generation-time gate (:meth:`estimate_batch`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from bystander.envs.scoring import combine_errors
from bystander.envs.text_v0 import ObserverView, parse_views
from bystander.llm.observers import score_observers

__all__ = ["SLMReviewer"]


class SLMReviewer:
    """Estimated cost (nats/token) of completions under a panel of SLM observers.

    Args:
        predictors: One :class:`~bystander.llm.observers.SLMPredictor` for all views,
            or a dict observer type -> predictor (``"*"`` = default).
        views: The reviewer's observer views (see :func:`parse_views`).
        combine: ``"mean"`` or ``"worst"`` over observers.
        seed: Seed of the mask views' randomness (reviews are reproducible).
    """

    def __init__(
        self,
        predictors: Any | Mapping[str, Any],
        views: str | Sequence[ObserverView] = "full",
        combine: str = "mean",
        seed: int = 0,
    ) -> None:
        self.predictors = predictors
        self.views = parse_views(views)
        self.combine = combine
        combine_errors(np.zeros((1, 1)), combine)  # validates the mode
        self.rng = np.random.default_rng(seed)

    @torch.no_grad()
    def estimate_batch(
        self,
        prompt_ids: Sequence[np.ndarray],
        prompts: Sequence[str],
        completions: Sequence[np.ndarray],
    ) -> np.ndarray:
        """Cost per completion, ``(N,)`` nats/token (0.0 when no observer scores it)."""
        errors = score_observers(
            self.predictors, self.views, completions, prompt_ids, prompts, self.rng
        )
        return combine_errors(errors, self.combine)

    @torch.no_grad()
    def estimate(self, env: Any, action: Any) -> float:
        """Cost of ``action`` (a completion) for the text env's current prompt."""
        base = env.unwrapped
        ids, _ = base.completion_ids(action)
        ids = ids[: base.max_completion_tokens]
        return float(self.estimate_batch([base.prompt_ids], [base.prompt], [ids])[0])

    def __call__(self, env: Any, action: Any) -> float:
        return self.estimate(env, action)
