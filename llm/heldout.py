"""Held-out evaluation during GRPO training: the text twin of
:class:`bystander.agents.heldout.HeldOutEvaluation` (issue 12).

Every ``every`` GRPO steps, :meth:`GRPOTrainer.evaluate
<bystander.llm.grpo.GRPOTrainer.evaluate>` runs on the same fixed held-out prompts
with the same sampling seed, so two rows differ only by the policy. Budgets are judged
on these rows, never on the training batches. Each evaluation is one row of
``RUN_DIR/heldout.csv`` (rewritten atomically; a resume keeps the rows up to its
checkpoint) and, when the trainer logs to TensorBoard, scalars ``heldout/<metric>``.

With ``constraint.signal: heldout`` each evaluation is also the multiplier's one update
(from its ``predictability_cost``), and the GRPO steps leave lambda alone; the row's
``lambda`` is the value the evaluated policy was trained under (before that update).

The completions are sampled (the policy's own temperature), not greedy: the cost a text
budget bounds is the expected cost of what the policy writes when sampled, and a
fixed seed makes the draw repeatable. ``format_failure`` (share of completions without
a well-formed answer) is the text counterpart of the driving ego's stand-still
fraction: the way a policy gives up on the task to lower its cost.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bystander.sweeps import read_csv_floats, write_csv

__all__ = ["HELDOUT_TEXT_METRICS", "TextHeldOutEvaluation"]

HELDOUT_TEXT_METRICS = ("accuracy", "predictability_cost", "format_failure", "length_mean",
                        "short_fraction", "template_entropy_bits")  # fmt: skip
"""The columns of ``heldout.csv`` besides ``step``, ``lambda`` and ``completions``."""


class TextHeldOutEvaluation:
    """Periodic held-out evaluation of a :class:`~bystander.llm.grpo.GRPOTrainer`.

    Args:
        trainer: The trainer (policy, observers, multiplier, ``run_dir``).
        tasks: The fixed held-out tasks (the same ones ``bystander llm evaluate
            --eval-prompts len(tasks)`` uses for the run's seed).
        every: GRPO steps between evaluations (>= 1).
        samples: Completions per task (``len(tasks) * samples`` per evaluation).
        seed: Sampling seed of every evaluation.
    """

    def __init__(
        self, trainer: Any, tasks: list[Any], every: int, samples: int = 2, seed: int = 1234
    ) -> None:
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"eval_every: expected an int >= 1 (GRPO steps), got {every!r}")
        if not tasks:
            raise ValueError("eval_every_prompts: expected >= 1 held-out prompt, got none")
        self.trainer = trainer
        self.tasks = list(tasks)
        self.every = every
        self.samples = int(samples)
        self.seed = int(seed)
        self.rows: list[dict[str, float]] = []

    @property
    def path(self) -> Path | None:
        run_dir = self.trainer.run_dir
        return None if run_dir is None else Path(run_dir) / "heldout.csv"

    def due(self, step: int) -> bool:
        """Whether an evaluation is due after GRPO step ``step``."""
        return step % self.every == 0 and (not self.rows or self.rows[-1]["step"] < step)

    def evaluate(self) -> dict[str, float]:
        """Evaluate the current policy now; record, write and return the row."""
        tr = self.trainer
        out = tr.evaluate(self.tasks, samples=self.samples, seed=self.seed, measures=False)
        lam = tr.multiplier.value if tr.multiplier is not None else math.nan
        row = {"step": float(tr.step_count), "lambda": float(lam),
               "completions": out["completions"],
               **{k: float(out[k]) for k in HELDOUT_TEXT_METRICS}}  # fmt: skip
        if tr.multiplier is not None and tr.cfg.constraint.signal == "heldout":
            tr.multiplier.update(row["predictability_cost"])
        self.rows.append(row)
        if self.path is not None:
            write_csv(self.rows, self.path)
        writer = getattr(tr, "_writer", None)
        if writer is not None:
            for k, v in row.items():
                if k != "step":
                    writer.add_scalar(f"heldout/{k}", v, tr.step_count)
        return row

    def resume(self, step: int) -> None:
        """Keep the rows of ``heldout.csv`` up to GRPO step ``step`` (a resumed run's
        checkpoint); later rows belong to steps that will be trained again."""
        if self.path is None or not self.path.is_file():
            return
        self.rows = [r for r in read_csv_floats(self.path) if r["step"] <= step]
        write_csv(self.rows, self.path)
