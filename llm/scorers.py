"""Learned task scorers: a reward model or a cost model (``AutoModelForSequenceClassification``).

:class:`SequenceClassifierScorer` has the text env's scorer signature
``scorer(completion, task) -> {"reward": float}``: it scores ``prompt + completion``
with a sequence classifier's first logit, as in RLHF reward models. Used as
``TextEnv(scorer=...)`` it replaces the verifier; as ``TextEnv(cost_model=...)`` its
value goes to ``info["costs"]["cost_model"]`` (Safe RLHF's decoupled cost model).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from bystander.envs.text_tasks import Task, format_prompt

__all__ = ["SequenceClassifierScorer"]


class SequenceClassifierScorer:
    """Score ``prompt + completion`` with a sequence classifier's logit ``[0]``.

    Args:
        model: An ``AutoModelForSequenceClassification`` (``num_labels >= 1``), or a
            hub id / local path to load one.
        tokenizer: Its tokenizer (loaded with the model when a path is given).
        max_length: Inputs longer than this many tokens keep their last tokens.
    """

    def __init__(self, model: Any, tokenizer: Any | None = None, max_length: int = 512) -> None:
        if isinstance(model, str | os.PathLike):
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            path = os.fspath(model)
            if (path.startswith((".", "/", "~")) or os.path.exists(path)) and not os.path.isdir(
                os.path.expanduser(path)
            ):
                raise FileNotFoundError(f"reward/cost model path not found: {path!r}")
            try:
                loaded = AutoModelForSequenceClassification.from_pretrained(
                    os.path.expanduser(path)
                )
                tokenizer = tokenizer or AutoTokenizer.from_pretrained(os.path.expanduser(path))
            except OSError as exc:
                raise OSError(f"could not load sequence classifier {path!r}: {exc}") from exc
            model = loaded
        if tokenizer is None:
            raise ValueError("tokenizer: required when model is a module")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        if getattr(self.model.config, "pad_token_id", None) is None:
            self.model.config.pad_token_id = tokenizer.pad_token_id

    @torch.no_grad()
    def score_texts(self, texts: list[str]) -> torch.Tensor:
        """Logit ``[0]`` for each text, shape ``(N,)``."""
        enc = [
            self.tokenizer(t, add_special_tokens=False)["input_ids"][-self.max_length :]
            for t in texts
        ]
        n = max(max(len(e) for e in enc), 1)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(enc), n), pad, dtype=torch.long)
        att = torch.zeros((len(enc), n), dtype=torch.long)
        for j, e in enumerate(enc):
            ids[j, : len(e)] = torch.as_tensor(e, dtype=torch.long)
            att[j, : len(e)] = 1
        device = next(self.model.parameters()).device
        logits = self.model(input_ids=ids.to(device), attention_mask=att.to(device)).logits
        return logits[:, 0].float().cpu()

    def __call__(self, completion: str, task: Task) -> dict[str, float]:
        if not isinstance(completion, str):
            raise TypeError(f"completion: expected str, got {type(completion).__name__}")
        text = format_prompt(task.question) + completion
        return {"reward": float(self.score_texts([text])[0])}
