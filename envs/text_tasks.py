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
    "DIFFICULTIES",
    "TEMPLATES",
    "ArithmeticVerifier",
    "Task",
    "check_equations",
    "extract_answer",
    "format_prompt",
    "generate_tasks",
    "heuristic_accuracy",
    "load_gsm8k_jsonl",
    "load_tasks",
    "normalise_number",
    "solutions_for",
    "task_template",
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
        template: The reasoning template ``solution`` follows (generated tasks: one of
            :data:`TEMPLATES`; ``None`` for loaded data).
        solutions: ``(template, solution)`` for every valid template of the task
            (generated tasks; empty for loaded data).
        difficulty: The generator's level (:data:`DIFFICULTIES`), ``None`` for loaded data.
    """

    question: str
    answer: str
    solution: str
    template: str | None = None
    solutions: tuple[tuple[str, str], ...] = ()
    difficulty: int | None = None


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

TEMPLATES = ("steps", "words", "reordered", "expression")
"""Reasoning templates of generated tasks, each a verifiable chain of thought:

- ``steps``: one equation per sentence of the question, in order, with intermediate
  results (``"7 + 5 = 12. 12 - 3 = 9."``);
- ``words``: the same order and results in words (``"Start with 7. Add 5: 12. Take
  away 3: 9."``);
- ``reordered``: another order of the steps, the gains of each run of additions and
  subtractions before its losses (offered only when its first step differs from
  ``steps``, so that a reader tells the two apart from the first equation);
- ``expression``: one expression, no intermediate results (``"7 + 5 - 3 = 9."``;
  offered only when it differs from ``steps``, i.e. with two steps or more).
"""

DIFFICULTIES = {
    1: {"ops": (1, 2), "start": 10, "operand": 10, "cap": 30, "mul": ()},
    2: {"ops": (2, 2), "start": 10, "operand": 9, "cap": 20, "mul": (2, 3)},
    3: {"ops": (3, 4), "start": 50, "operand": 50, "cap": 999, "mul": (2, 3, 4, 5)},
}
"""Difficulty levels of :func:`generate_tasks`: number of operations (inclusive range),
largest start and operand, largest running total, multipliers (none: no products)."""

_GAIN = ("{o} gives {n} {b} more.", "{n} finds {b} more.", "{n} buys {b} more.")
_LOSS = ("{n} gives away {b}.", "{n} loses {b}.", "{n} sells {b}.")
_TIMES = {2: "doubles", 3: "triples", 4: "is multiplied by 4", 5: "is multiplied by 5"}
_SYMBOL = {"add": "+", "sub": "-", "mul": "*"}
_WORD = {"add": "Add {b}", "sub": "Take away {b}", "mul": "Times {b}"}


def _ops(rng: np.random.Generator, level: dict, start: int) -> list[tuple[str, int]]:
    """Operations ``(kind, operand)`` keeping every running total in ``[1, cap]``."""
    ops, total = [], start
    lo, hi = level["ops"]
    for _ in range(int(rng.integers(lo, hi + 1))):
        kinds = []
        if total < level["cap"]:
            kinds.append("add")
        if total > 1:
            kinds.append("sub")
        muls = [m for m in level["mul"] if total * m <= level["cap"]]
        if muls:
            kinds.append("mul")
        p = np.array([{"add": 0.4, "sub": 0.4, "mul": 0.2}[k] for k in kinds])
        kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
        if kind == "add":
            b = int(rng.integers(1, min(level["operand"], level["cap"] - total) + 1))
        elif kind == "sub":
            b = int(rng.integers(1, min(level["operand"], total - 1) + 1))
        else:
            b = int(muls[int(rng.integers(len(muls)))])
        ops.append((kind, b))
        total = _apply(total, kind, b)
    return ops


def _apply(total: int, kind: str, b: int) -> int:
    return total + b if kind == "add" else total - b if kind == "sub" else total * b


def _reorder(ops: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Gains before losses within each run of additions and subtractions (products stay)."""
    out: list[tuple[str, int]] = []
    run: list[tuple[str, int]] = []
    for op in [*ops, ("mul", 0)]:
        if op[0] == "mul":
            out += [o for o in run if o[0] == "add"] + [o for o in run if o[0] == "sub"]
            run = []
            if op[1]:
                out.append(op)
        else:
            run.append(op)
    return out


def _chain(start: int, ops: list[tuple[str, int]]) -> str:
    parts, total = [], start
    for kind, b in ops:
        new = _apply(total, kind, b)
        parts.append(f"{total} {_SYMBOL[kind]} {b} = {new}.")
        total = new
    return " ".join(parts)


def solutions_for(start: int, ops: Sequence[tuple[str, int]]) -> dict[str, str]:
    """Every template's worked solution (ending ``"\\n#### <answer>"``) of a problem.

    Args:
        start: The starting count.
        ops: ``(kind, operand)`` per step, ``kind`` in ``"add"``, ``"sub"``, ``"mul"``.

    Returns:
        ``{template: solution}`` in :data:`TEMPLATES` order (``reordered`` only when its
        first step differs from ``steps``; ``expression`` only with two steps or more).
    """
    ops = list(ops)
    total = start
    for kind, b in ops:
        total = _apply(total, kind, b)
    words, expr, run, additive = [f"Start with {start}."], str(start), start, False
    for kind, b in ops:
        run = _apply(run, kind, b)
        words.append(_WORD[kind].format(b=b) + f": {run}.")
        if kind == "mul" and additive:
            expr = f"({expr})"
        expr = f"{expr} {_SYMBOL[kind]} {b}"
        additive = kind != "mul"
    end = f"\n{ANSWER_MARK} {total}"
    out = {"steps": _chain(start, ops) + end, "words": " ".join(words) + end}
    reordered = _reorder(ops)
    if reordered[0] != ops[0]:  # told apart from ``steps`` by its first equation
        out["reordered"] = _chain(start, reordered) + end
    expression = f"{expr} = {total}." + end
    if expression != out["steps"]:
        out["expression"] = expression
    return out


def _problem(rng: np.random.Generator, level: dict, template: str) -> Task:
    name = _NAMES[rng.integers(len(_NAMES))]
    other = _NAMES[rng.integers(len(_NAMES))]
    item = _ITEMS[rng.integers(len(_ITEMS))]
    start = int(rng.integers(2, level["start"] + 1))
    ops = _ops(rng, level, start)
    sentences = [f"{name} has {start} {item}."]
    for kind, b in ops:
        if kind == "mul":
            sentences.append(f"The number of {item} {_TIMES[b]}.")
        else:
            forms = _GAIN if kind == "add" else _LOSS
            sentences.append(forms[int(rng.integers(len(forms)))].format(o=other, n=name, b=b))
    question = " ".join(sentences) + f" How many {item} now?"
    sols = solutions_for(start, ops)
    pick = rng.integers(1 << 30)  # drawn always, so the stream does not depend on template
    if template == "mixed":
        chosen = list(sols)[int(pick) % len(sols)]
    else:
        chosen = template if template in sols else "steps"
    answer = sols["steps"].rsplit(" ", 1)[1]
    return Task(question, answer, sols[chosen], template=chosen,
                solutions=tuple(sols.items()), difficulty=level["id"])  # fmt: skip


def generate_tasks(
    n: int,
    seed: int = 0,
    max_value: int | None = None,
    *,
    difficulty: int = 2,
    template: str = "steps",
) -> list[Task]:
    """Generate ``n`` arithmetic word problems, each with every template's worked solution.

    Args:
        n: Number of problems (>= 1).
        seed: Seed; the same arguments give the same list, and the first ``k``
            problems do not depend on ``n`` (nor on ``template``).
        max_value: Largest start and operand (>= 2; default: the level's, see
            :data:`DIFFICULTIES`).
        difficulty: 1 (1-2 additions/subtractions, numbers up to 10), 2 (2 steps,
            doubling/tripling too, operands up to 9, totals up to 20) or 3
            (3-4 steps, numbers up to 50, totals up to 999); see :data:`DIFFICULTIES`.
        template: Which solution fills :attr:`Task.solution`: one of
            :data:`TEMPLATES` (falls back to ``steps`` where the task lacks it) or
            ``"mixed"`` (one of the task's templates, uniformly, seeded).
    """
    if not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty: expected one of {sorted(DIFFICULTIES)}, got {difficulty!r}")
    if template not in (*TEMPLATES, "mixed"):
        raise ValueError(f"template: expected one of {[*TEMPLATES, 'mixed']}, got {template!r}")
    level = {**DIFFICULTIES[difficulty], "id": difficulty}
    if max_value is not None:
        if max_value < 2:
            raise ValueError(f"max_value: expected >= 2, got {max_value!r}")
        level.update(start=int(max_value), operand=int(max_value))
    rng = np.random.default_rng(seed)
    return [_problem(rng, level, template) for _ in range(int(n))]


def task_template(text: str, task: Task) -> str | None:
    """Which of ``task``'s templates ``text`` follows exactly (whitespace-insensitive).

    Returns:
        The template name, ``None`` if ``text`` matches none (or ``task`` carries no
        templates, e.g. loaded from JSONL).
    """
    norm = " ".join(text.split())
    for name, sol in task.solutions:
        if " ".join(sol.split()) == norm:
            return name
    return None


_EQUATION = re.compile(r"(\(*-?\d[\d ()+\-*]*?)\s*=\s*(-?\d+)")


_WORD_START = re.compile(r"Start with (\d+)\.")
_WORD_STEP = re.compile(r"(Add|Take away|Times) (\d+): (\d+)\.")


def check_equations(text: str) -> tuple[int, int]:
    """``(correct, total)``: the claims of a chain of thought in ``text`` that hold.

    Claims are equations ``"<expression> = <number>"`` (integers, ``+ - *`` and
    parentheses, evaluated exactly, no ``eval``; one that does not parse counts as
    wrong) and the ``words`` template's steps (``"Start with 7. Add 5: 12."``: each
    ``"<verb> <b>: <result>."`` applied to the previous result).
    """
    good = total = 0
    for lhs, rhs in _EQUATION.findall(text):
        total += 1
        value = _evaluate(lhs.strip())
        good += int(value is not None and value == int(rhs))
    start = _WORD_START.search(text)
    if start is not None:
        run = int(start.group(1))
        for verb, b, result in _WORD_STEP.findall(text[start.end() :]):
            kind = {"Add": "add", "Take away": "sub", "Times": "mul"}[verb]
            run_next = _apply(run, kind, int(b))
            total += 1
            good += int(run_next == int(result))
            run = int(result)
    return good, total


def _evaluate(expr: str) -> int | None:
    """Value of an integer expression with ``+ - *`` and parentheses, or ``None``."""
    tokens = re.findall(r"\d+|[()+\-*]", expr)
    if "".join(tokens) != expr.replace(" ", ""):
        return None
    pos = 0

    def atom() -> int | None:
        nonlocal pos
        if pos < len(tokens) and tokens[pos] == "(":
            pos += 1
            v = summ()
            if v is None or pos >= len(tokens) or tokens[pos] != ")":
                return None
            pos += 1
            return v
        if pos < len(tokens) and tokens[pos].isdigit():
            pos += 1
            return int(tokens[pos - 1])
        return None

    def prod() -> int | None:
        nonlocal pos
        v = atom()
        while v is not None and pos < len(tokens) and tokens[pos] == "*":
            pos += 1
            w = atom()
            v = None if w is None else v * w
        return v

    def summ() -> int | None:
        nonlocal pos
        v = prod()
        while v is not None and pos < len(tokens) and tokens[pos] in "+-":
            sign = tokens[pos]
            pos += 1
            w = prod()
            v = None if w is None else (v + w if sign == "+" else v - w)
        return v

    value = summ()
    return value if pos == len(tokens) else None


def heuristic_accuracy(
    tasks: Sequence[Task], reference: Sequence[Task] | None = None
) -> dict[str, float]:
    """Accuracy of trivial answers on ``tasks`` (the floor a policy must clear).

    - ``sum``: the sum of the numbers in the question;
    - ``most_common``: the most common answer of ``reference`` (default: ``tasks``
      themselves, an optimistic floor);
    - ``last_number``: the last number in the question.

    Returns:
        ``{heuristic: accuracy}`` plus ``"best"`` (the largest) and ``"n"``.
    """
    if not tasks:
        raise ValueError("tasks: expected at least one task")
    ref = list(reference) if reference is not None else list(tasks)
    answers = [t.answer for t in ref]
    common = max(sorted(set(answers)), key=answers.count)
    hits = {"sum": 0, "most_common": 0, "last_number": 0}
    for t in tasks:
        nums = [Decimal(x.replace(",", "")) for x in _NUMBER.findall(t.question)]
        hits["sum"] += int(bool(nums) and normalise_number(str(sum(nums))) == t.answer)
        hits["most_common"] += int(t.answer == common)
        hits["last_number"] += int(bool(nums) and normalise_number(str(nums[-1])) == t.answer)
    out = {k: v / len(tasks) for k, v in hits.items()}
    return {**out, "best": max(out.values()), "n": float(len(tasks))}


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
