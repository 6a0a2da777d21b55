"""Tasks for the text domain: arithmetic word problems with worked chains of thought.

Two sources, one :class:`Task` type:

- :func:`generate_tasks`: a seeded generator of arithmetic word problems (any number,
  reproducible), each with a worked chain of thought ending in ``#### <answer>``,
  exactly the GSM8K answer format.
- :func:`load_gsm8k_jsonl`: JSONL files in GSM8K's format (one object per line with
  ``"question"`` and ``"answer"``, the answer ending in ``#### <number>``), so users
  can bring the real data set.

And the built-in verifier (:class:`ArithmeticVerifier`), in the style of the GRPO
GSM8K recipes: the final answer is extracted from ``#### <number>`` (strict format)
or, failing that, from the last number in the text (soft format); the reward is
``correct_reward`` for a right answer plus ``format_reward`` when the strict format
is used.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import numpy as np

__all__ = [
    "ANSWER_MARK",
    "ArithmeticVerifier",
    "Task",
    "extract_answer",
    "format_prompt",
    "generate_tasks",
    "load_gsm8k_jsonl",
    "load_tasks",
    "normalise_number",
]

MAX_EXPONENT = 4000
"""Largest decimal exponent :func:`normalise_number` accepts (either sign)."""

ANSWER_MARK = "####"
"""Marker before the final answer (GSM8K convention)."""

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_STRICT = re.compile(r"####\s*(-?[\d,]+(?:\.\d+)?)")


@dataclass(frozen=True)
class Task:
    """One word problem.

    Attributes:
        question: The problem text.
        answer: The final answer, normalised (see :func:`normalise_number`), e.g. ``"42"``.
        solution: A worked chain of thought ending in ``#### <answer>`` (GSM8K format).
    """

    question: str
    answer: str
    solution: str


def normalise_number(text: str) -> str:
    """Canonical string of a number: commas dropped, ``"7.0"`` -> ``"7"``, ``"-0"`` -> ``"0"``.

    Exact at any number of digits (decimal arithmetic, no float round trip), so two
    answers are equal exactly when their values are.

    Raises:
        ValueError: ``text`` is not a finite number, or its magnitude is outside
            ``1e-{MAX_EXPONENT}`` .. ``1e{MAX_EXPONENT}`` (nonzero).
    """
    cleaned = text.replace(",", "").strip()
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite():
        raise ValueError(f"normalise_number: expected a finite number, got {text!r}")
    if value.is_zero():
        return "0"
    if abs(value.adjusted()) > MAX_EXPONENT:
        raise ValueError(
            f"normalise_number: expected a magnitude within 1e-{MAX_EXPONENT}..1e{MAX_EXPONENT}, "
            f"got {text[:40]!r}{'...' if len(text) > 40 else ''}"
        )
    digits = format(value, "f")  # exact: no context precision is applied
    if "." in digits:
        digits = digits.rstrip("0").rstrip(".")
    return digits


def format_prompt(question: str) -> str:
    """The prompt the policy sees for ``question``: ``"Q: <question>\\nA:"``."""
    return f"Q: {question}\nA:"


def extract_answer(text: str) -> tuple[str | None, bool]:
    """Extract the final answer from a completion.

    Returns:
        ``(answer, strict)``: the normalised answer (``None`` if the text holds no
        number) and whether it came from the strict ``#### <number>`` format (the
        first such mark wins); otherwise the last number in the text is used.
    """
    m = _STRICT.search(text)
    if m:
        try:
            return normalise_number(m.group(1)), True
        except ValueError:  # e.g. more than MAX_EXPONENT digits: no answer, format kept
            return None, True
    numbers = _NUMBER.findall(text)
    if not numbers:
        return None, False
    try:
        return normalise_number(numbers[-1]), False
    except ValueError:
        return None, False


class ArithmeticVerifier:
    """Rule-based reward for arithmetic word problems (GRPO GSM8K recipe style).

    ``reward = correct_reward * [answer == task.answer] + format_reward * [strict format]``.

    Args:
        correct_reward: Reward for a correct final answer.
        format_reward: Reward for using the strict ``#### <number>`` format.
    """

    def __init__(self, correct_reward: float = 1.0, format_reward: float = 0.1) -> None:
        self.correct_reward = float(correct_reward)
        self.format_reward = float(format_reward)

    def __call__(self, completion: str, task: Task) -> dict[str, float]:
        """Score ``completion`` for ``task``.

        Returns:
            ``{"reward", "correct" (0/1), "format_ok" (0/1)}``.
        """
        if not isinstance(completion, str):
            raise TypeError(f"completion: expected str, got {type(completion).__name__}")
        answer, strict = extract_answer(completion)
        correct = float(answer is not None and answer == task.answer)
        reward = self.correct_reward * correct + self.format_reward * float(strict)
        return {"reward": reward, "correct": correct, "format_ok": float(strict)}


_NAMES = ["Ada", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kim", "Lea"]
_ITEMS = ["apples", "marbles", "books", "coins", "stickers", "pens", "shells", "cards"]


def _problem(rng: np.random.Generator, max_value: int) -> Task:
    """One problem of 2 to 3 steps with a worked chain of thought."""
    name = _NAMES[rng.integers(len(_NAMES))]
    other = _NAMES[rng.integers(len(_NAMES))]
    item = _ITEMS[rng.integers(len(_ITEMS))]
    a = int(rng.integers(2, max_value + 1))
    sentences = [f"{name} has {a} {item}."]
    steps = [f"{name} starts with {a} {item}."]
    total = a
    for _ in range(int(rng.integers(1, 3))):
        kind = int(rng.integers(4))
        if kind == 0:
            b = int(rng.integers(1, max_value + 1))
            sentences.append(f"{other} gives {name} {b} more.")
            steps.append(f"{total} + {b} = {total + b}.")
            total += b
        elif kind == 1 and total > 1:
            b = int(rng.integers(1, total))
            sentences.append(f"{name} gives away {b}.")
            steps.append(f"{total} - {b} = {total - b}.")
            total -= b
        elif kind == 2:
            b = int(rng.integers(2, 4))
            sentences.append(f"Then the number of {item} is multiplied by {b}.")
            steps.append(f"{total} * {b} = {total * b}.")
            total *= b
        else:
            b = int(rng.integers(1, max_value + 1))
            sentences.append(f"{name} finds {b} more {item}.")
            steps.append(f"{total} + {b} = {total + b}.")
            total += b
    question = " ".join(sentences) + f" How many {item} does {name} have now?"
    solution = " ".join(steps) + f"\n{ANSWER_MARK} {total}"
    return Task(question=question, answer=str(total), solution=solution)


def generate_tasks(n: int, seed: int = 0, max_value: int = 20) -> list[Task]:
    """Generate ``n`` arithmetic word problems with worked chains of thought.

    Args:
        n: Number of problems (>= 1).
        seed: Seed; the same ``(n, seed, max_value)`` gives the same list, and the
            first ``k`` problems do not depend on ``n``.
        max_value: Largest operand (>= 2).
    """
    if not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    if max_value < 2:
        raise ValueError(f"max_value: expected >= 2, got {max_value!r}")
    rng = np.random.default_rng(seed)
    return [_problem(rng, max_value) for _ in range(int(n))]


def load_gsm8k_jsonl(path: str | os.PathLike[str], limit: int | None = None) -> list[Task]:
    """Load GSM8K-format JSONL: one ``{"question": str, "answer": str}`` per line.

    The answer's final number follows ``####`` (GSM8K's calculator annotations such
    as ``<<3+4=7>>`` are kept in the solution text).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: A line is not JSON, lacks a field, or its answer has no ``####``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"GSM8K JSONL file not found: {path!r}")
    tasks: list[Task] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
            for key in ("question", "answer"):
                if not isinstance(row.get(key), str):
                    raise ValueError(f"{path}:{lineno}: field {key!r} missing or not a string")
            m = _STRICT.search(row["answer"])
            if m is None:
                raise ValueError(f"{path}:{lineno}: field 'answer' has no '#### <number>'")
            tasks.append(
                Task(
                    question=row["question"].strip(),
                    answer=normalise_number(m.group(1)),
                    solution=row["answer"].strip(),
                )
            )
            if limit is not None and len(tasks) >= limit:
                break
    if not tasks:
        raise ValueError(f"{path}: no tasks found")
    return tasks


def load_tasks(
    source: str | os.PathLike[str] | Sequence[Task] | None, n: int = 256, seed: int = 0
) -> list[Task]:
    """Tasks from a JSONL path, a list of :class:`Task`, or (``None``/``"generated"``) the generator."""
    if source is None or (isinstance(source, str) and source == "generated"):
        return generate_tasks(n, seed=seed)
    if isinstance(source, str | os.PathLike):
        return load_gsm8k_jsonl(source)
    tasks = list(source)
    if not tasks or not all(isinstance(t, Task) for t in tasks):
        raise TypeError("tasks: expected a non-empty sequence of Task, a JSONL path or None")
    return tasks
