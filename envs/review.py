"""Decision-time oversight: an independent reviewer vets each action before it runs.

:class:`ReviewGate` asks a *reviewer* for the estimated cost of the proposed action
(for driving: roll the ego forward and ask the observers' predictors how surprised
they would be, and/or the collision risk). Nothing is learnt from it and no gradient
flows through it (the reviewer runs under ``torch.no_grad()``). Above ``threshold``:

``mode="veto"``
    The action is replaced by ``fallback`` (a fixed action, or a callable
    ``fallback(env, action) -> action``) and the step runs with it. The fallback is
    trusted: it is not reviewed.

``mode="escalate"``
    The step is NOT executed: the episode pauses for "human review". ``step`` returns
    (a copy of) the previous observation, reward ``0.0``, ``terminated = truncated = False`` and an
    info with ``info["escalated"] = True`` and ``info["awaiting_review"] = True``. The
    proposed action is kept in :attr:`ReviewGate.pending_action`. Then either

    - the human calls :meth:`ReviewGate.approve` (optionally with a replacement
      action): that action runs unreviewed and its real step result is returned; or
    - the agent calls ``step`` again with a new proposal, which is reviewed afresh
      (an approved proposal runs and clears the pending one).

    A paused step re-reports the last ``EgoStep`` with zero new states (so a
    :class:`~bystander.envs.predictability.PredictabilityReward` outside the gate scores
    nothing), zero for every cost channel and reward component the env reported on
    its last step, and keeps ``TimeLimit``-style counters outside the gate ticking.

Every step's info carries ``info["escalated"]`` (bool: the reviewer flagged this
proposal, whether vetoed or paused), ``info["review_cost"]`` (the estimate, float)
and ``info["awaiting_review"]`` (bool). :attr:`ReviewGate.escalations` counts the
flagged proposals over the gate's lifetime (never reset).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from bystander.envs.contract import EGO_STEP_KEY, EgoStep

__all__ = ["ReviewGate"]

Reviewer = Callable[[gym.Env, Any], float]


def _no_grad() -> contextlib.AbstractContextManager:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return contextlib.nullcontext()
    return torch.no_grad()


class ReviewGate(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Veto or escalate actions whose reviewed cost exceeds a threshold (see module doc).

    Args:
        env: The env whose actions are reviewed.
        reviewer: ``reviewer(env, action) -> float`` estimated cost, or an object with
            ``estimate(env, action) -> float``. It receives the wrapped (inner) env and
            must not change its state.
        threshold: Estimated cost above which (strictly) the action is flagged.
        fallback: ``mode="veto"`` only: the replacement action, or
            ``fallback(env, action) -> action``.
        mode: ``"veto"`` or ``"escalate"``.
    """

    def __init__(
        self,
        env: gym.Env,
        reviewer: Reviewer | Any,
        threshold: float,
        fallback: Any = None,
        mode: str = "veto",
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self, reviewer=reviewer, threshold=threshold, fallback=fallback, mode=mode
        )
        gym.Wrapper.__init__(self, env)
        if callable(getattr(reviewer, "estimate", None)):
            self._estimate: Reviewer = reviewer.estimate
        elif callable(reviewer):
            self._estimate = reviewer
        else:
            raise TypeError(
                "reviewer: expected a callable reviewer(env, action) -> float or an object "
                f"with estimate(env, action), got {type(reviewer).__name__}"
            )
        self.reviewer = reviewer
        try:
            threshold = float(threshold)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"threshold: expected a real number, got {threshold!r}") from exc
        if math.isnan(threshold):
            raise ValueError("threshold: expected a number, got nan")
        self.threshold = threshold
        if mode not in ("veto", "escalate"):
            raise ValueError(f"mode: expected 'veto' or 'escalate', got {mode!r}")
        self.mode = mode
        if mode == "veto":
            if fallback is None:
                raise ValueError("fallback: required in mode 'veto' (an action or a callable)")
            if not callable(fallback) and not env.action_space.contains(
                _as_action(fallback, env.action_space)
            ):
                raise ValueError(
                    f"fallback: expected an action in {env.action_space}, got {fallback!r}"
                )
        self.fallback = fallback
        self.escalations = 0
        self.pending_action: Any = None
        self._pending_cost = 0.0
        self._last_obs: Any = None
        self._last_info: dict[str, Any] = {}

    @property
    def awaiting_review(self) -> bool:
        """True while an escalated action waits for :meth:`approve` or a new proposal."""
        return self.pending_action is not None

    def review(self, action: Any) -> float:
        """The reviewer's estimated cost of ``action`` in the current state (no gradient)."""
        with _no_grad():
            cost = self._estimate(self.env, action)
        try:
            cost = float(cost)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"reviewer: expected a float cost estimate, got {type(cost).__name__}"
            ) from exc
        if math.isnan(cost):
            raise ValueError("reviewer: returned a nan cost estimate")
        return cost

    def _check_action(self, action: Any, name: str) -> None:
        """Refuse an action outside the action space before the reviewer judges it (an
        invalid action must not be "repaired" by the fallback, nor blamed on the
        reviewer)."""
        space = self.env.action_space
        try:
            ok = bool(space.contains(_as_action(action, space)))
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise ValueError(f"{name}: expected an action in {space}, got {action!r}")

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self.pending_action = None
        self._last_obs, self._last_info = obs, info
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        self._check_action(action, "action")
        cost = self.review(action)
        flagged = cost > self.threshold
        if flagged:
            self.escalations += 1
            if self.mode == "escalate":
                self.pending_action, self._pending_cost = action, cost
                return self._paused(cost)
            action = self.fallback(self.env, action) if callable(self.fallback) else self.fallback
        self.pending_action = None
        return self._execute(action, flagged, cost)

    def approve(self, action: Any = None) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """The human's verdict on an escalated step: run ``action`` (default: the pending
        one) without review and return its step result (``info["escalated"] = False``,
        ``info["review_cost"]`` = the estimate that caused the escalation)."""
        if self.pending_action is None:
            raise ValueError("approve: no action is awaiting review")
        if action is None:
            action = self.pending_action
        else:
            self._check_action(action, "approve: action")
        self.pending_action = None
        return self._execute(action, False, self._pending_cost)

    def _execute(
        self, action: Any, flagged: bool, cost: float
    ) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._last_obs, self._last_info = obs, info
        info = dict(info)
        info["escalated"] = flagged
        info["awaiting_review"] = False
        info["review_cost"] = cost
        return obs, reward, terminated, truncated, info

    def _paused(self, cost: float) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        last = self._last_info
        info: dict[str, Any] = {
            "escalated": True,
            "awaiting_review": True,
            "review_cost": cost,
        }
        if isinstance(last.get("costs"), Mapping):
            info["costs"] = {k: 0.0 for k in last["costs"]}
        if "cost" in last:
            info["cost"] = 0.0
        if isinstance(last.get("rewards"), Mapping):
            info["rewards"] = {k: 0.0 for k in last["rewards"]}
        ego = last.get(EGO_STEP_KEY)
        if isinstance(ego, EgoStep):
            states = np.asarray(ego.states)
            info[EGO_STEP_KEY] = replace(
                ego,
                states=states[:0],
                visible=np.zeros((len(np.asarray(ego.observer_ids)), 0), dtype=bool),
                episode_start=False,
            )
        # a copy: callers may keep and modify what a step returns
        return copy.deepcopy(self._last_obs), 0.0, False, False, info


def _as_action(action: Any, space: gym.Space) -> Any:
    if isinstance(space, gym.spaces.Box):
        return np.asarray(action, dtype=space.dtype)
    if isinstance(space, gym.spaces.Discrete):
        return np.int64(action)
    return action
