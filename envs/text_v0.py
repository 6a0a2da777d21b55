"""``bystander/Text-v0``: a turn-level text environment (prompt in, completion out).

One episode is one turn. ``reset`` returns the prompt (an arithmetic word problem,
:func:`bystander.envs.text_tasks.format_prompt`); ``step(completion)`` scores the
completion with the task scorer and terminates. The ego's trajectory is the
completion's tokens (policy tokenizer) and the observers are small language models,
each with its own partial *view* of the completion (:class:`ObserverView`).

Views and the EgoStep (the semantics the SLM predictor implements)
------------------------------------------------------------------
For a completion ``x_1..x_T`` each observer ``m`` has two masks of shape ``(T,)``:

- ``visible[m]`` (``EgoStep.visible``): tokens the observer *read*: its evidence.
- ``scored[m]`` (``context["observer_views"][id]["scored"]``): tokens it is scored on.

The observer's error is ``-(1/|S|) sum_{t in S} log p_SLM(x_t | c_t)`` nats/token over
scored tokens ``S``, where the context ``c_t`` is the prompt (unless the view has
``prompt=False``) followed by ``x~_1..x~_{t-1}``, with ``x~_s = x_s`` when ``s`` is
visible or scored, and a placeholder token (the SLM tokenizer's unk) otherwise; a
``window`` view keeps only the last ``window`` tokens of ``c_t``.

==========  ======================  ======================  =============================
kind        visible                 scored                  meaning
==========  ======================  ======================  =============================
full        all                     all                     ordinary per-token NLL
prefix      first k                 the rest (t >= k)       exactly -log p(rest | prefix)
                                                            / (T - k) (chain rule)
mask        each token w.p. ``p``   the visible ones        a distracted reader: unseen
                                                            tokens are placeholders
window      all                     all                     short memory: last ``window``
                                                            tokens only
==========  ======================  ======================  =============================

``prefix`` takes ``k`` tokens or ``ceil(fraction * T)``, clamped to ``T - 1`` so that
at least one token is scored (a one-token completion gives ``k = 0``: nothing read,
so the wrappers do not score that observer). ``prompt=False`` is the "without the
prompt" view (combine with any kind). An empty completion has ``T = 0``: nobody saw
anything and nothing is scored.

Edge cases (documented handling)
--------------------------------
- Actions: a ``str``; ``bytes`` (decoded as UTF-8 with ``errors="replace"``); or a
  1-D integer array of policy token ids (decoded with ``errors="replace"``, the ids
  kept as they are: no re-encoding round trip).
- Empty completion: valid; scored by the verifier (reward 0 unless it gives any),
  ``T = 0``.
- Overlong completion (more than ``max_completion_tokens`` tokens): truncated to the
  first ``max_completion_tokens`` tokens, ``info["completion_truncated"] = True``.
- Text beyond ``max_completion_chars`` characters is outside the action space; ``step``
  still accepts it (then truncates by tokens as above).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from bystander.envs.contract import EGO_STEP_KEY, EgoStep
from bystander.envs.text_tasks import (
    ArithmeticVerifier,
    Task,
    extract_answer,
    format_prompt,
    load_tasks,
)
from bystander.envs.text_tokens import byte_tokenizer, decode, encode

__all__ = ["ObserverView", "TextEnv", "UnicodeText", "parse_views", "view_masks"]

VIEW_KINDS = ("full", "prefix", "mask", "window")

# Characters that gymnasium's sampler draws from; ``contains`` accepts any text.
_SAMPLE_CHARSET = (
    "".join(chr(c) for c in range(32, 127)) + "\n\t\u00e9\u00fc\u00b0\u00d7\u00f7\u2212\ufffd"
)


class UnicodeText(spaces.Text):
    """A ``gymnasium.spaces.Text`` that accepts any Unicode string of the right length.

    Models write arbitrary characters (and U+FFFD for invalid bytes), so membership
    only checks the type and length ``min_length <= len(x) <= max_length`` (and
    rejects lone surrogates, which cannot be encoded). ``sample`` draws from printable
    ASCII plus a few common symbols.
    """

    def __init__(self, max_length: int, min_length: int = 0, seed: int | None = None) -> None:
        super().__init__(
            max_length=max_length, min_length=min_length, charset=_SAMPLE_CHARSET, seed=seed
        )

    def contains(self, x: Any) -> bool:
        if not isinstance(x, str) or not self.min_length <= len(x) <= self.max_length:
            return False
        try:
            x.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True

    def __repr__(self) -> str:
        return f"UnicodeText({self.min_length}, {self.max_length})"


@dataclass(frozen=True)
class ObserverView:
    """One SLM observer's view of the completion (see the module docstring).

    Attributes:
        kind: ``"full"``, ``"prefix"``, ``"mask"`` or ``"window"``.
        k: Prefix length in tokens (``prefix``; or use ``fraction``).
        fraction: Prefix length as a fraction of the completion (``prefix``), in [0, 1].
        p: Probability of keeping each token (``mask``), in [0, 1].
        window: Context length in tokens (``window``; optional on other kinds).
        prompt: Whether the observer reads the prompt.
        type: Observer type name (``EgoStep.observer_types``), e.g. ``"slm"``.
    """

    kind: str = "full"
    k: int | None = None
    fraction: float | None = None
    p: float = 0.5
    window: int | None = None
    prompt: bool = True
    type: str = "slm"

    def __post_init__(self) -> None:
        if self.kind not in VIEW_KINDS:
            raise ValueError(f"ObserverView.kind: expected one of {VIEW_KINDS}, got {self.kind!r}")
        if self.kind == "prefix":
            if (self.k is None) == (self.fraction is None):
                raise ValueError("ObserverView: a prefix view needs exactly one of k or fraction")
            if self.k is not None and self.k < 0:
                raise ValueError(f"ObserverView.k: expected >= 0, got {self.k}")
            if self.fraction is not None and not 0.0 <= self.fraction <= 1.0:
                raise ValueError(f"ObserverView.fraction: expected in [0, 1], got {self.fraction}")
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"ObserverView.p: expected in [0, 1], got {self.p}")
        if self.kind == "window" and self.window is None:
            raise ValueError("ObserverView: a window view needs window=<tokens>")
        if self.window is not None and self.window < 1:
            raise ValueError(f"ObserverView.window: expected >= 1, got {self.window}")


def parse_views(spec: str | Sequence[ObserverView | Mapping[str, Any] | str]) -> list[ObserverView]:
    """Views from a compact string, dicts, or :class:`ObserverView` objects.

    String syntax (comma-separated, one item per observer): ``full``, ``prefix:0.5``
    (fraction, if it has a dot) or ``prefix:16`` (tokens), ``mask:0.7``, ``window:8``;
    a ``-noprompt`` suffix drops the prompt, e.g. ``"prefix:0.5,mask:0.7,full-noprompt"``.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    views: list[ObserverView] = []
    for item in items:
        if isinstance(item, ObserverView):
            views.append(item)
        elif isinstance(item, Mapping):
            views.append(ObserverView(**item))
        elif isinstance(item, str):
            text = item.strip()
            prompt = not text.endswith("-noprompt")
            text = text.removesuffix("-noprompt")
            kind, _, arg = text.partition(":")
            kwargs: dict[str, Any] = {"kind": kind, "prompt": prompt}
            try:
                if kind == "prefix":
                    kwargs.update({"fraction": float(arg)} if "." in arg else {"k": int(arg)})
                elif kind == "mask" and arg:
                    kwargs["p"] = float(arg)
                elif kind == "window":
                    kwargs["window"] = int(arg)
            except ValueError as exc:
                raise ValueError(f"views: cannot parse {item!r} ({exc})") from exc
            views.append(ObserverView(**kwargs))
        else:
            raise TypeError(f"views: expected str, dict or ObserverView items, got {item!r}")
    if not views:
        raise ValueError("views: expected at least one observer view")
    return views


def view_masks(
    view: ObserverView, length: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``(visible, scored)`` masks, each ``(length,)`` bool, for ``view`` on a completion."""
    t = int(length)
    ones = np.ones(t, dtype=bool)
    if view.kind in ("full", "window"):
        return ones, ones.copy()
    if view.kind == "prefix":
        k = view.k if view.k is not None else math.ceil(float(view.fraction) * t)
        k = max(0, min(int(k), t - 1))
        visible = np.arange(t) < k
        return visible, ~visible
    keep = rng.random(t) < view.p
    return keep, keep.copy()


class TextEnv(gym.Env):
    """Turn-level text environment: observation = prompt, action = completion.

    Args:
        tasks: A GSM8K-format JSONL path, a list of :class:`Task`, or ``None`` for
            ``num_tasks`` generated problems.
        num_tasks: Number of generated problems when ``tasks`` is ``None``.
        task_seed: Seed of the generator.
        views: Observer views (see :func:`parse_views`), one observer each.
        tokenizer: The policy tokenizer (default: byte-level ``ByT5Tokenizer``).
        scorer: ``scorer(completion, task) -> {"reward": float, ...}``; default
            :class:`ArithmeticVerifier`. A reward model fits here
            (:class:`bystander.llm.scorers.SequenceClassifierScorer`).
        cost_model: Optional ``cost_model(completion, task) -> {"reward": float}``:
            its value is written to ``info["costs"]["cost_model"]`` (Safe RLHF's
            decoupled cost).
        max_prompt_chars: Observation space length bound.
        max_completion_chars: Action space length bound.
        max_completion_tokens: Completions are truncated to this many tokens.

    ``reset(options={"task_index": i})`` picks a task; otherwise tasks are drawn with
    the env's seeded RNG. ``info`` after ``step``: ``ego_step``, ``rewards``
    (``{"task": r}``), ``costs``/``cost``, ``correct``, ``format_ok``, ``answer``,
    ``completion``, ``completion_tokens``, ``completion_truncated``, ``task_index``.
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self,
        tasks: str | Sequence[Task] | None = None,
        *,
        num_tasks: int = 256,
        task_seed: int = 0,
        views: str | Sequence[ObserverView | Mapping[str, Any] | str] = "prefix:0.5,mask:0.7,full",
        tokenizer: Any | None = None,
        scorer: Callable[[str, Task], Mapping[str, float]] | None = None,
        cost_model: Callable[[str, Task], Mapping[str, float]] | None = None,
        max_prompt_chars: int = 4096,
        max_completion_chars: int = 4096,
        max_completion_tokens: int = 512,
        render_mode: str | None = None,
    ) -> None:
        super().__init__()
        if max_completion_tokens < 1:
            raise ValueError(f"max_completion_tokens: expected >= 1, got {max_completion_tokens}")
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode: expected None or 'ansi', got {render_mode!r}")
        self.tasks = load_tasks(tasks, n=num_tasks, seed=task_seed)
        self.views = parse_views(views)
        self.tokenizer = tokenizer if tokenizer is not None else byte_tokenizer()
        self.scorer = scorer if scorer is not None else ArithmeticVerifier()
        self.cost_model = cost_model
        self.max_completion_tokens = int(max_completion_tokens)
        self.render_mode = render_mode
        longest = max(len(format_prompt(t.question)) for t in self.tasks)
        if longest > max_prompt_chars:
            raise ValueError(
                f"max_prompt_chars: a prompt has {longest} characters, more than {max_prompt_chars}"
            )
        self.observation_space = UnicodeText(max_length=max_prompt_chars)
        self.action_space = UnicodeText(max_length=max_completion_chars)
        self.observer_ids = np.arange(len(self.views), dtype=np.int64)
        self.observer_types = np.array([v.type for v in self.views], dtype=object)
        self._task_index = 0
        self._prompt = ""
        self._prompt_ids = np.zeros(0, dtype=np.int64)
        self._last: dict[str, Any] | None = None

    @property
    def prompt(self) -> str:
        """The current prompt (text)."""
        return self._prompt

    @property
    def prompt_ids(self) -> np.ndarray:
        """The current prompt's policy token ids, ``(L,)`` int64."""
        return self._prompt_ids

    @property
    def task(self) -> Task:
        """The current episode's task."""
        return self.tasks[self._task_index]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        if "task_index" in options:
            i = int(options["task_index"])
            if not 0 <= i < len(self.tasks):
                raise ValueError(
                    f"options['task_index']: expected in [0, {len(self.tasks)}), got {i}"
                )
            self._task_index = i
        else:
            self._task_index = int(self.np_random.integers(len(self.tasks)))
        self._prompt = format_prompt(self.task.question)
        self._prompt_ids = encode(self.tokenizer, self._prompt)
        self._last = None
        m = len(self.views)
        ego = EgoStep(
            states=np.zeros(0, dtype=np.int64),
            observer_ids=self.observer_ids,
            observer_types=self.observer_types,
            visible=np.zeros((m, 0), dtype=bool),
            episode_start=True,
            context=self._context(np.zeros(0, dtype=np.int64), "", np.zeros((m, 0), dtype=bool)),
        )
        return self._prompt, {EGO_STEP_KEY: ego, "task_index": self._task_index}

    def _context(self, ids: np.ndarray, completion: str, scored: np.ndarray) -> dict[str, Any]:
        return {
            "prompt": self._prompt,
            "prompt_ids": self._prompt_ids,
            "completion": completion,
            "completion_ids": ids,
            "observer_views": {
                int(oid): {"scored": scored[j], **asdict(v)}
                for j, (oid, v) in enumerate(zip(self.observer_ids, self.views, strict=True))
            },
        }

    def completion_ids(self, action: Any) -> tuple[np.ndarray, str]:
        """``(token ids (T,) int64, text)`` of an action (see the module docstring)."""
        if isinstance(action, bytes | bytearray):
            action = bytes(action).decode("utf-8", errors="replace")
        if isinstance(action, str):
            try:
                action.encode("utf-8")
            except UnicodeEncodeError as err:
                raise ValueError(
                    f"action: expected text that UTF-8 can encode, got a lone surrogate "
                    f"{action[err.start]!r} at character {err.start}"
                ) from None
            return encode(self.tokenizer, action), action
        arr = np.asarray(action)
        if arr.ndim == 1 and (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
            ids = arr.astype(np.int64)
            vocab = len(self.tokenizer)
            if ids.size and (ids.min() < 0 or ids.max() >= vocab):
                raise ValueError(
                    f"action: expected token ids in [0, {vocab}) (the tokenizer's vocabulary), "
                    f"got values in [{ids.min()}, {ids.max()}]"
                )
            return ids, decode(self.tokenizer, ids)
        raise TypeError(
            f"action: expected a str, bytes or a 1-D integer array of token ids, got "
            f"{type(action).__name__}"
        )

    def step(self, action: Any) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._last is not None or not self._prompt:
            raise RuntimeError("TextEnv.step: call reset() first (one turn per episode)")
        ids, completion = self.completion_ids(action)
        truncated_completion = len(ids) > self.max_completion_tokens
        if truncated_completion:
            ids = ids[: self.max_completion_tokens]
            completion = decode(self.tokenizer, ids)
        result = dict(self.scorer(completion, self.task))
        if "reward" not in result:
            raise ValueError("scorer: expected a mapping with a 'reward' entry")
        reward = float(result["reward"])
        costs: dict[str, float] = {}
        if self.cost_model is not None:
            costs["cost_model"] = float(self.cost_model(completion, self.task)["reward"])
        t = len(ids)
        visible = np.zeros((len(self.views), t), dtype=bool)
        scored = np.zeros((len(self.views), t), dtype=bool)
        for j, view in enumerate(self.views):
            visible[j], scored[j] = view_masks(view, t, self.np_random)
        ego = EgoStep(
            states=ids,
            observer_ids=self.observer_ids,
            observer_types=self.observer_types,
            visible=visible,
            context=self._context(ids, completion, scored),
        )
        answer, _ = extract_answer(completion)
        info: dict[str, Any] = {
            EGO_STEP_KEY: ego,
            "rewards": {"task": reward},
            "costs": costs,
            "cost": float(sum(costs.values())),
            "correct": bool(result.get("correct", 0.0)),
            "format_ok": bool(result.get("format_ok", 0.0)),
            "answer": answer,
            "completion": completion,
            "completion_tokens": t,
            "completion_truncated": truncated_completion,
            "task_index": self._task_index,
        }
        self._last = info
        return self._prompt, reward, True, False, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        out = self._prompt
        if self._last is not None:
            out += self._last["completion"] + f"\n[reward {self._last['rewards']['task']:.2f}]"
        return out
