"""Constraint logic: turn a cost signal into training signal, domain-agnostic.

Three ways to trade reward against cost, all reading the conventions of
:mod:`bystander.envs.predictability` (``info["cost"]`` / ``info["costs"][channel]``):

- :class:`ShapedReward`: a static penalty, ``r - w * c``.
- :class:`LagrangianReward`: ``(r - lambda * c) / (1 + lambda)`` with lambda from a
  multiplier object that the training loop updates once per rollout from the mean
  episode cost (:class:`LagrangeMultiplier`, log-lambda gradient ascent as in Safe
  RLHF; :class:`PIDLagrangeMultiplier`, Stooke et al. 2020).
- Several cost channels at once: pass dicts ``channel -> weight`` / ``channel ->
  multiplier``; each channel keeps its own budget and lambda. The normalised reward
  is then ``(r - sum_i lambda_i c_i) / (1 + sum_i lambda_i)``.

The formulas are also exported as pure functions (:func:`shaped_reward`,
:func:`lagrangian_reward`, :func:`combine_advantages`) so that a trainer without an
env (the LLM trainer) reuses them. They work on Python floats, NumPy arrays and
torch tensors alike (plain arithmetic only).

Reward components: both wrappers keep the env's ``info["rewards"]`` and add
``"penalty"`` = (new reward - env reward), i.e. the negative amount they took away,
so the components still sum to the reward the agent receives whenever the env's did.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from bystander.envs.contract import step_arrays

__all__ = [
    "LagrangeMultiplier",
    "LagrangianReward",
    "LagrangianRule",
    "LagrangianVecReward",  # noqa: F822 - built lazily (SB3 imports torch)
    "Multiplier",
    "PIDLagrangeMultiplier",
    "ShapedReward",
    "ShapedVecReward",  # noqa: F822 - built lazily
    "ShapingRule",
    "COST_NORMALIZATIONS",
    "combine_advantages",
    "episode_cost_for_budget",
    "lagrangian_reward",
    "make_multiplier",
    "multiplier_key",
    "shaped_reward",
]


# --------------------------------------------------------------------------- formulas


def shaped_reward(reward: Any, cost: Any, weight: float) -> Any:
    """Static reward shaping: ``reward - weight * cost`` (scalars, arrays or tensors)."""
    return reward - weight * cost


def lagrangian_reward(reward: Any, cost: Any, lam: float) -> Any:
    """Normalised Lagrangian reward ``(reward - lam * cost) / (1 + lam)``.

    The ``1 + lam`` normalisation (Safe RLHF) keeps the reward scale bounded as
    lambda grows. ``lam`` must be >= 0.
    """
    if lam < 0:
        raise ValueError(f"lagrangian_reward: lam must be >= 0, got {lam}")
    return (reward - lam * cost) / (1.0 + lam)


def combine_advantages(a_r: Any, a_c: Any, lam: float) -> Any:
    """Safe RLHF advantage mix ``(A_r - lam * A_c) / (1 + lam)`` (same shapes in, out)."""
    return lagrangian_reward(a_r, a_c, lam)


# ------------------------------------------------------------------------ multipliers


def _check_cost(value: Any, name: str = "mean_episode_cost") -> float:
    try:
        x = float(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected a real number, got {value!r}") from exc
    if not math.isfinite(x):
        raise ValueError(f"{name}: expected a finite number, got {x}")
    return x


def _check_nonneg(value: Any, name: str) -> float:
    x = _check_cost(value, name)
    if x < 0:
        raise ValueError(f"{name}: expected >= 0, got {x}")
    return x


class Multiplier:
    """Common interface of Lagrange multipliers (see subclasses).

    Attributes:
        budget: The cost budget ``d`` (same unit as the episode cost), >= 0.
        value: The current lambda (>= 0, <= ``max`` when set).
    """

    budget: float

    @property
    def value(self) -> float:
        raise NotImplementedError

    def update(self, mean_episode_cost: float) -> float:
        """Take one step from the mean episode cost of a rollout; return the new lambda."""
        raise NotImplementedError

    def set_value(self, value: float) -> None:
        """Overwrite lambda: only for syncing a replica (e.g. a SubprocVecEnv worker's copy)
        with the multiplier that the training loop updates."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(value={self.value:.6g}, budget={self.budget:.6g})"


class _CostWindow:
    """Mean of the last ``window`` episode costs passed to ``update``."""

    def __init__(self, window: int) -> None:
        if not isinstance(window, int) or isinstance(window, bool) or window < 1:
            raise ValueError(f"window: expected an int >= 1, got {window!r}")
        self.costs: deque[float] = deque(maxlen=window)

    def push(self, cost: float) -> float:
        self.costs.append(cost)
        return sum(self.costs) / len(self.costs)


def _check_floor(floor: float | None, init: float) -> float | None:
    """A log-lambda floor: ``None`` (or 0: no floor) or a number in (0, ``init``]."""
    if floor is None:
        return None
    floor = _check_nonneg(floor, "min")
    if floor > init:
        raise ValueError(f"min: expected a lambda floor <= init ({init}), got {floor}")
    return floor if floor > 0 else None


class LagrangeMultiplier(Multiplier):
    """Log-lambda gradient ascent as in Safe RLHF (Dai et al. 2023).

    Each :meth:`update` with episode cost ``J_C`` (averaged over the last ``window``
    values passed) does::

        log_lambda <- log_lambda + lr * exp(log_lambda) * (J_C - budget)
        log_lambda <- clip(log_lambda, log(min), log(max))   # each bound when set

    and ``value = exp(log_lambda)``. The first ``delay`` updates only record the cost
    (lambda does not move), as Safe RLHF's ``lambda_update_delay_steps``.

    The floor ``min`` is there because the step on ``log_lambda`` is proportional to
    lambda itself: after a phase where the cost sits below the budget (e.g. an ego
    that first learns to stand still), lambda decays towards 0 and then climbs back
    by only ``lr * lambda * (J_C - budget)`` per update, so the constraint stalls
    while the cost is above the budget. With a floor, the log-step when lambda is
    at the floor is at least ``lr * min * (J_C - budget)``: choose ``min`` so that this
    is a useful step (e.g. ``lr * min * typical excess`` ~ 0.02-0.1). ``None`` (or 0)
    keeps the plain Safe RLHF update.

    Args:
        budget: Cost budget ``d`` >= 0 (unit of the episode cost).
        lr: Step size > 0.
        init: Initial lambda > 0 (log-parametrised, so strictly positive).
        max: Upper clamp on lambda (>= ``init``), or ``None`` for none.
        delay: Number of initial updates that leave lambda unchanged (>= 0).
        window: Number of recent episode costs averaged into ``J_C`` (>= 1).
        min: Lower clamp on lambda (0 <= ``min`` <= ``init``), or ``None`` / 0 for none.
    """

    def __init__(
        self,
        budget: float,
        lr: float = 0.05,
        init: float = 1.0,
        max: float | None = None,  # noqa: A002 - the documented argument name
        delay: int = 0,
        window: int = 1,
        min: float | None = None,  # noqa: A002 - the documented argument name
    ) -> None:
        self.budget = _check_nonneg(budget, "budget")
        self.lr = _check_cost(lr, "lr")
        if self.lr <= 0:
            raise ValueError(f"lr: expected > 0, got {self.lr}")
        init = _check_cost(init, "init")
        if init <= 0:
            raise ValueError(f"init: expected > 0 (lambda is log-parametrised), got {init}")
        if max is not None:
            max = _check_cost(max, "max")
            if max < init:
                raise ValueError(f"max: expected >= init ({init}), got {max}")
        self.min = _check_floor(min, init)
        if not isinstance(delay, int) or isinstance(delay, bool) or delay < 0:
            raise ValueError(f"delay: expected an int >= 0, got {delay!r}")
        self.max = max
        self.delay = delay
        self.window = window
        self._costs = _CostWindow(window)
        self.log_lambda = math.log(init)
        self.num_updates = 0

    @property
    def value(self) -> float:
        return math.exp(self.log_lambda)

    def update(self, mean_episode_cost: float) -> float:
        j_c = self._costs.push(_check_cost(mean_episode_cost))
        self.num_updates += 1
        if self.num_updates > self.delay:
            self.log_lambda += self.lr * math.exp(self.log_lambda) * (j_c - self.budget)
            if self.max is not None:
                self.log_lambda = min(self.log_lambda, math.log(self.max))
            if self.min is not None:
                self.log_lambda = max(self.log_lambda, math.log(self.min))
        return self.value

    def set_value(self, value: float) -> None:
        value = _check_cost(value, "value")
        if value <= 0:
            raise ValueError(f"value: expected > 0 for a log-parametrised multiplier, got {value}")
        self.log_lambda = math.log(value)

    def state_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "lr": self.lr,
            "max": self.max,
            "min": self.min,
            "delay": self.delay,
            "window": self.window,
            "log_lambda": self.log_lambda,
            "num_updates": self.num_updates,
            "costs": list(self._costs.costs),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.budget = _check_nonneg(state["budget"], "budget")
        self.lr = float(state["lr"])
        self.max = None if state["max"] is None else float(state["max"])
        floor = state.get("min")  # absent in checkpoints from before the floor existed
        self.min = None if floor is None else float(floor)
        self.delay = int(state["delay"])
        self.window = int(state["window"])
        self._costs = _CostWindow(self.window)
        self._costs.costs.extend(float(c) for c in state["costs"])
        self.log_lambda = float(state["log_lambda"])
        self.num_updates = int(state["num_updates"])


class PIDLagrangeMultiplier(Multiplier):
    """PID Lagrangian multiplier (Stooke, Achiam & Abbeel 2020, Algorithm 2).

    Each :meth:`update` with episode cost ``J_C`` (averaged over the last ``window``
    values passed) does, after ``delay`` recording-only updates::

        delta   = J_C - budget
        I       = max(0, I + ki * delta)                       # integral, clamped at 0
        delta_p = alpha_p * delta_p + (1 - alpha_p) * delta    # EMA of the violation
        cost_d  = alpha_d * cost_d + (1 - alpha_d) * J_C       # EMA of the cost
        D       = max(0, cost_d - cost_d[d_delay updates ago]) # rise of the cost
        lambda  = clip(kp * delta_p + I + kd * D, 0, max)

    ``delta_p``, ``cost_d`` start at 0, and ``I`` starts at ``init`` so that lambda
    starts at ``init`` (as in the authors' rlpyt code). ``alpha_p = alpha_d = 0``
    gives the plain (unsmoothed) PID of the paper's Algorithm 2.

    Args:
        budget: Cost budget ``d`` >= 0.
        kp, ki, kd: PID gains >= 0.
        alpha_p, alpha_d: EMA factors in [0, 1).
        d_delay: How many updates back the derivative compares to (>= 1).
        init: Initial lambda >= 0.
        max: Upper clamp on lambda (>= ``init``) or ``None``.
        delay: Number of initial updates that leave lambda unchanged (>= 0).
        window: Number of recent episode costs averaged into ``J_C`` (>= 1).
    """

    def __init__(
        self,
        budget: float,
        kp: float = 0.1,
        ki: float = 0.01,
        kd: float = 0.0,
        *,
        alpha_p: float = 0.0,
        alpha_d: float = 0.0,
        d_delay: int = 1,
        init: float = 0.0,
        max: float | None = None,  # noqa: A002 - the documented argument name
        delay: int = 0,
        window: int = 1,
    ) -> None:
        self.budget = _check_nonneg(budget, "budget")
        self.kp = _check_nonneg(kp, "kp")
        self.ki = _check_nonneg(ki, "ki")
        self.kd = _check_nonneg(kd, "kd")
        for name, a in (("alpha_p", alpha_p), ("alpha_d", alpha_d)):
            a = _check_cost(a, name)
            if not 0.0 <= a < 1.0:
                raise ValueError(f"{name}: expected a value in [0, 1), got {a}")
        self.alpha_p = float(alpha_p)
        self.alpha_d = float(alpha_d)
        if not isinstance(d_delay, int) or isinstance(d_delay, bool) or d_delay < 1:
            raise ValueError(f"d_delay: expected an int >= 1, got {d_delay!r}")
        init = _check_nonneg(init, "init")
        if max is not None:
            max = _check_cost(max, "max")
            if max < init:
                raise ValueError(f"max: expected >= init ({init}), got {max}")
        if not isinstance(delay, int) or isinstance(delay, bool) or delay < 0:
            raise ValueError(f"delay: expected an int >= 0, got {delay!r}")
        self.d_delay = d_delay
        self.max = max
        self.delay = delay
        self.window = window
        self._costs = _CostWindow(window)
        self.integral = init
        self.delta_p = 0.0
        self.cost_d = 0.0
        self._cost_d_hist: deque[float] = deque([0.0] * d_delay, maxlen=d_delay)
        self._value = init
        self.num_updates = 0

    @property
    def value(self) -> float:
        return self._value

    def update(self, mean_episode_cost: float) -> float:
        j_c = self._costs.push(_check_cost(mean_episode_cost))
        self.num_updates += 1
        if self.num_updates <= self.delay:
            return self._value
        delta = j_c - self.budget
        self.integral = max(0.0, self.integral + self.ki * delta)
        self.delta_p = self.alpha_p * self.delta_p + (1.0 - self.alpha_p) * delta
        self.cost_d = self.alpha_d * self.cost_d + (1.0 - self.alpha_d) * j_c
        derivative = max(0.0, self.cost_d - self._cost_d_hist[0])
        self._cost_d_hist.append(self.cost_d)
        lam = max(0.0, self.kp * self.delta_p + self.integral + self.kd * derivative)
        if self.max is not None:
            lam = min(lam, self.max)
        self._value = lam
        return lam

    def set_value(self, value: float) -> None:
        self._value = _check_nonneg(value, "value")

    def state_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "kp": self.kp,
            "ki": self.ki,
            "kd": self.kd,
            "alpha_p": self.alpha_p,
            "alpha_d": self.alpha_d,
            "d_delay": self.d_delay,
            "max": self.max,
            "delay": self.delay,
            "window": self.window,
            "integral": self.integral,
            "delta_p": self.delta_p,
            "cost_d": self.cost_d,
            "cost_d_hist": list(self._cost_d_hist),
            "value": self._value,
            "num_updates": self.num_updates,
            "costs": list(self._costs.costs),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.budget = _check_nonneg(state["budget"], "budget")
        for key in ("kp", "ki", "kd", "alpha_p", "alpha_d", "integral", "delta_p", "cost_d"):
            setattr(self, key, float(state[key]))
        self.d_delay = int(state["d_delay"])
        self.max = None if state["max"] is None else float(state["max"])
        self.delay = int(state["delay"])
        self.window = int(state["window"])
        self._costs = _CostWindow(self.window)
        self._costs.costs.extend(float(c) for c in state["costs"])
        self._cost_d_hist = deque((float(c) for c in state["cost_d_hist"]), maxlen=self.d_delay)
        self._value = float(state["value"])
        self.num_updates = int(state["num_updates"])


def make_multiplier(
    mode: str,
    budget: float,
    *,
    lr: float = 0.05,
    init: float = 1.0,
    max: float | None = None,  # noqa: A002 - the multipliers' argument name
    kp: float = 0.1,
    ki: float = 0.01,
    kd: float = 0.0,
    delay: int = 0,
    window: int = 1,
    min: float | None = None,  # noqa: A002 - the multipliers' argument name
) -> Multiplier | None:
    """The multiplier for a constraint mode, as both training loops build it.

    ``"lagrangian"``: :class:`LagrangeMultiplier` (``lr``, and ``min``, its lambda
    floor against the stall of log-lambda ascent); ``"pid"``:
    :class:`PIDLagrangeMultiplier` (``kp``, ``ki``, ``kd``; its additive update does
    not stall, so ``min`` must be ``None`` or 0 there); ``"none"`` / ``"shaping"``:
    ``None`` (no multiplier). Other modes raise a ValueError naming ``mode``.
    """
    if mode == "lagrangian":
        return LagrangeMultiplier(
            budget=budget, lr=lr, init=init, max=max, delay=delay, window=window, min=min
        )
    if mode == "pid":
        if min:
            raise ValueError(
                f"min (lambda_min): expected None or 0 for mode 'pid' (the floor is for "
                f"log-lambda ascent, mode 'lagrangian'), got {min}"
            )
        return PIDLagrangeMultiplier(
            budget=budget, kp=kp, ki=ki, kd=kd, init=init, max=max, delay=delay, window=window
        )
    if mode in ("none", "shaping"):
        return None
    raise ValueError(f"mode: expected one of none, shaping, lagrangian, pid, got {mode!r}")


COST_NORMALIZATIONS = ("sum", "per_step")
"""How an episode's cost is put in the budget's unit before a multiplier sees it:
``"sum"`` (the episode cost as summed by the env, cost units per episode) or
``"per_step"`` (that sum divided by the episode length, cost units per step)."""


def multiplier_key(channel: str | None) -> str:
    """Key of a multiplier: its cost channel, or ``"cost"`` for the total cost."""
    return "cost" if channel is None else channel


def episode_cost_for_budget(cost: float, length: float | None, normalization: str = "sum") -> float:
    """One finished episode's cost in the unit of the budget it is compared with.

    The envs sum the per-step cost over an episode (``info["episode_cost"]``), so a
    budget on that sum depends on episode length, and an agent can meet or miss it by
    making episodes shorter or longer. ``"per_step"`` divides by the episode's length
    (env steps; SB3's ``Monitor``/``VecMonitor`` put it in ``info["episode"]["l"]``),
    which makes the budget a cost rate (e.g. metres of observer ADE per step).

    Args:
        cost: The episode's summed cost (cost units), finite.
        length: Episode length in env steps (>= 1); only read for ``"per_step"``.
        normalization: One of :data:`COST_NORMALIZATIONS`.

    Returns:
        ``cost`` (``"sum"``) or ``cost / length`` (``"per_step"``), a float.

    Raises:
        ValueError: unknown ``normalization``; ``"per_step"`` without a length >= 1.
    """
    if normalization not in COST_NORMALIZATIONS:
        raise ValueError(
            f"cost_normalization: expected one of {COST_NORMALIZATIONS}, got {normalization!r}"
        )
    x = _check_cost(cost, "episode_cost")
    if normalization == "sum":
        return x
    if length is None:
        raise ValueError(
            "cost_normalization='per_step': the finished episode has no length; expected "
            'info["episode"]["l"] from an SB3 Monitor/VecMonitor in the env stack'
        )
    n = _check_cost(length, "episode length")
    if n < 1:
        raise ValueError(f"episode length: expected >= 1 env step, got {length!r}")
    return x / n


# --------------------------------------------------------------------------- wrappers


def _read_cost(info: Mapping[str, Any], channel: str | None, wrapper: str) -> float:
    if channel is None:
        if "cost" not in info:
            raise ValueError(
                f'{wrapper}: info["cost"] is missing; wrap an env that reports costs '
                "(e.g. inside PredictabilityReward) or name a channel"
            )
        return _check_cost(info["cost"], 'info["cost"]')
    costs = info.get("costs")
    if not isinstance(costs, Mapping) or channel not in costs:
        have = sorted(costs) if isinstance(costs, Mapping) else None
        raise ValueError(
            f'{wrapper}: info["costs"][{channel!r}] is missing (channels present: {have})'
        )
    return _check_cost(costs[channel], f'info["costs"][{channel!r}]')


def _read_cost_array(arrays: Mapping[str, Any], channel: str | None, wrapper: str) -> np.ndarray:
    """Per-world costs ``(N,)`` of one step from a VecEnv's ``step_arrays``."""
    if channel is None:
        if "cost" not in arrays:
            raise ValueError(f'{wrapper}: step_arrays["cost"] is missing; name a channel')
        values, name = arrays["cost"], 'step_arrays["cost"]'
    else:
        costs = arrays.get("costs")
        if not isinstance(costs, Mapping) or channel not in costs:
            have = sorted(costs) if isinstance(costs, Mapping) else None
            raise ValueError(
                f'{wrapper}: step_arrays["costs"][{channel!r}] is missing (channels present: '
                f"{have})"
            )
        values, name = costs[channel], f'step_arrays["costs"][{channel!r}]'
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"{name}: expected finite costs, got {values[~np.isfinite(values)][:5]}")
    return values


def _add_penalty(info: dict[str, Any], penalty: float) -> None:
    rewards = dict(info.get("rewards") or {})
    rewards["penalty"] = rewards.get("penalty", 0.0) + penalty
    info["rewards"] = rewards


class ShapingRule:
    """The shaping formula on one step: ``reward - sum_i w_i c_i``.

    Shared by :class:`ShapedReward` (Gymnasium) and :class:`ShapedVecReward` (SB3
    VecEnv), so both apply the same arithmetic and write the same ``info`` keys.

    Args:
        weight: Penalty weight >= 0, or a dict ``channel -> weight`` (several channels).
        channel: Which cost to read when ``weight`` is a float: ``None`` =
            ``info["cost"]`` (the sum of all channels), a string = ``info["costs"][channel]``.
    """

    def __init__(self, weight: float | Mapping[str, float], channel: str | None = None) -> None:
        if isinstance(weight, Mapping):
            if channel is not None:
                raise ValueError("channel: must be None when weight is a dict channel -> weight")
            self.weights: dict[str | None, float] = {
                str(k): _check_nonneg(w, f"weight[{k!r}]") for k, w in weight.items()
            }
            if not self.weights:
                raise ValueError("weight: expected a non-empty dict channel -> weight")
        else:
            self.weights = {channel: _check_nonneg(weight, "weight")}

    def apply(self, reward: float, info: Mapping[str, Any]) -> tuple[float, dict[str, Any]]:
        """(new reward, a copy of ``info`` with ``rewards["penalty"]`` added)."""
        penalty = -sum(w * _read_cost(info, ch, "ShapedReward") for ch, w in self.weights.items())
        info = dict(info)
        _add_penalty(info, penalty)
        return float(reward) + penalty, info

    def apply_arrays(
        self, rewards: np.ndarray, arrays: Mapping[str, Any]
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """The rule for ``N`` worlds at once: ``rewards`` ``(N,)``, costs from a VecEnv's
        ``step_arrays``; returns new rewards ``(N,)`` and the info values each world
        gets (``"penalty"`` ``(N,)``)."""
        penalty = -sum(
            w * _read_cost_array(arrays, ch, "ShapedVecReward") for ch, w in self.weights.items()
        )
        penalty = np.broadcast_to(np.asarray(penalty, dtype=np.float64), rewards.shape)
        return rewards + penalty, {"penalty": penalty}


class LagrangianRule:
    """The normalised Lagrangian formula on one step, with lambda from multipliers.

    ``(reward - sum_i lambda_i c_i) / (1 + sum_i lambda_i)``. Shared by
    :class:`LagrangianReward` (Gymnasium) and :class:`LagrangianVecReward` (SB3 VecEnv).

    Args:
        multiplier: A multiplier, or a dict ``channel -> multiplier``.
        channel: With a single multiplier: ``None`` = ``info["cost"]``, a string =
            ``info["costs"][channel]``.
    """

    def __init__(
        self, multiplier: Multiplier | Mapping[str, Multiplier], channel: str | None = None
    ) -> None:
        if isinstance(multiplier, Mapping):
            if channel is not None:
                raise ValueError("channel: must be None when multiplier is a dict")
            if not multiplier:
                raise ValueError("multiplier: expected a non-empty dict channel -> multiplier")
            self.multipliers: dict[str | None, Multiplier] = {
                str(k): m for k, m in multiplier.items()
            }
        else:
            self.multipliers = {channel: multiplier}
        for key, m in self.multipliers.items():
            if not isinstance(m, Multiplier):
                raise TypeError(
                    f"multiplier[{key!r}]: expected a Multiplier (LagrangeMultiplier or "
                    f"PIDLagrangeMultiplier), got {type(m).__name__}"
                )

    def _key(self, channel: str | None) -> str | None:
        if channel not in self.multipliers:
            raise ValueError(f"channel: expected one of {list(self.multipliers)}, got {channel!r}")
        return channel

    def set_lambda(self, value: float, channel: str | None = None) -> None:
        """Sync this copy of a multiplier to ``value`` (replicas in worker processes)."""
        self.multipliers[self._key(channel)].set_value(value)

    def get_lambda(self, channel: str | None = None) -> float:
        """The lambda currently used for ``channel``."""
        return self.multipliers[self._key(channel)].value

    def apply(self, reward: float, info: Mapping[str, Any]) -> tuple[float, dict[str, Any]]:
        """(new reward, a copy of ``info`` with ``rewards["penalty"]`` and ``lambdas``)."""
        lams = {ch: m.value for ch, m in self.multipliers.items()}
        weighted = sum(lam * _read_cost(info, ch, "LagrangianReward") for ch, lam in lams.items())
        new_reward = (float(reward) - weighted) / (1.0 + sum(lams.values()))
        info = dict(info)
        _add_penalty(info, new_reward - float(reward))
        info["lambdas"] = {multiplier_key(ch): lam for ch, lam in lams.items()}
        return new_reward, info

    def apply_arrays(
        self, rewards: np.ndarray, arrays: Mapping[str, Any]
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """As :meth:`ShapingRule.apply_arrays`; also returns ``"lambdas"``."""
        lams = {ch: m.value for ch, m in self.multipliers.items()}
        weighted = sum(
            lam * _read_cost_array(arrays, ch, "LagrangianVecReward") for ch, lam in lams.items()
        )
        new = (rewards - weighted) / (1.0 + sum(lams.values()))
        lambdas = {multiplier_key(ch): lam for ch, lam in lams.items()}
        return new, {"penalty": new - rewards, "lambdas": lambdas}


class ShapedReward(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Static trade-off: ``reward - weight * cost`` (see :class:`ShapingRule`).

    Args:
        env: Env whose ``info`` carries ``"cost"`` / ``"costs"``.
        weight: Penalty weight >= 0, or a dict ``channel -> weight`` (several channels).
        channel: Which cost to read when ``weight`` is a float: ``None`` =
            ``info["cost"]`` (the sum of all channels), a string = ``info["costs"][channel]``.

    Adds ``info["rewards"]["penalty"] = -sum_i w_i c_i`` (keeps the env's components).
    """

    def __init__(
        self, env: gym.Env, weight: float | Mapping[str, float], channel: str | None = None
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, weight=weight, channel=channel)
        gym.Wrapper.__init__(self, env)
        self.rule = ShapingRule(weight, channel)
        self.weights = self.rule.weights

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        reward, info = self.rule.apply(reward, info)
        return obs, reward, terminated, truncated, info


class LagrangianReward(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Normalised Lagrangian reward ``(reward - lambda * cost) / (1 + lambda)``.

    lambda comes from a :class:`Multiplier` (which holds the budget); the training loop
    calls ``multiplier.update(mean_episode_cost)`` once per rollout and nothing else
    mutates lambda. With several channels, pass a dict ``channel -> multiplier``; the
    reward is ``(r - sum_i lambda_i c_i) / (1 + sum_i lambda_i)`` (:class:`LagrangianRule`).

    Args:
        env: Env whose ``info`` carries ``"cost"`` / ``"costs"``.
        multiplier: A multiplier, or a dict ``channel -> multiplier``.
        channel: With a single multiplier: ``None`` = ``info["cost"]``, a string =
            ``info["costs"][channel]``.

    Adds ``info["rewards"]["penalty"]`` (new reward - env reward) and
    ``info["lambdas"]`` (channel key -> lambda used; key ``"cost"`` for ``channel=None``).
    """

    def __init__(
        self,
        env: gym.Env,
        multiplier: Multiplier | Mapping[str, Multiplier],
        channel: str | None = None,
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, multiplier=multiplier, channel=channel)
        gym.Wrapper.__init__(self, env)
        self.rule = LagrangianRule(multiplier, channel)
        self.multipliers = self.rule.multipliers

    def set_lambda(self, value: float, channel: str | None = None) -> None:
        """Sync this env's copy of a multiplier to ``value`` (e.g. via SB3's
        ``VecEnv.env_method("set_lambda", value, channel)`` into SubprocVecEnv workers)."""
        self.rule.set_lambda(value, channel)

    def get_lambda(self, channel: str | None = None) -> float:
        """The lambda currently used for ``channel``."""
        return self.rule.get_lambda(channel)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        reward, info = self.rule.apply(reward, info)
        return obs, reward, terminated, truncated, info


def _make_vec_classes() -> tuple[type, type]:
    """SB3 VecEnv shells over the same rules (built lazily: SB3 imports torch)."""
    from stable_baselines3.common.vec_env import VecEnvWrapper

    class _RuleVecWrapper(VecEnvWrapper):
        rule: Any

        def reset(self) -> Any:
            return self.venv.reset()

        def step_wait(self) -> Any:
            """Apply the rule: on the base env's ``step_arrays`` when it has them (all
            worlds in a few array operations; info dicts that are not empty get the
            same keys as the per-world rule), else per world on the infos."""
            obs, rewards, dones, infos = self.venv.step_wait()
            arrays = step_arrays(self.venv)
            if not arrays:
                new = np.empty(len(infos), dtype=np.float32)
                out = []
                for i, info in enumerate(infos):
                    new[i], info = self.rule.apply(float(rewards[i]), info)
                    out.append(info)
                return obs, new, dones, out
            base = np.asarray(rewards, dtype=np.float64)
            new_rewards, extra = self.rule.apply_arrays(base, arrays)
            penalty = extra["penalty"]
            step_rewards = dict(arrays.get("rewards") or {})
            step_rewards["penalty"] = step_rewards.get("penalty", 0.0) + penalty
            self.step_arrays = {**arrays, "rewards": step_rewards, **extra}
            out = list(infos)
            for i, info in enumerate(infos):
                if info:  # lean infos: only the worlds whose episode ended
                    info = dict(info)
                    _add_penalty(info, float(penalty[i]))
                    if "lambdas" in extra:
                        info["lambdas"] = dict(extra["lambdas"])
                    out[i] = info
            return obs, new_rewards.astype(np.float32), dones, out

    class ShapedVecReward(_RuleVecWrapper):
        """:class:`ShapedReward` for an SB3 VecEnv (same rule, same ``info`` keys)."""

        def __init__(
            self, venv: Any, weight: float | Mapping[str, float], channel: str | None = None
        ) -> None:
            super().__init__(venv)
            self.rule = ShapingRule(weight, channel)

    class LagrangianVecReward(_RuleVecWrapper):
        """:class:`LagrangianReward` for an SB3 VecEnv (same rule, same ``info`` keys).

        The multipliers live in this process: the training loop's ``update`` is seen by
        every world at the next step, no syncing needed.
        """

        def __init__(
            self,
            venv: Any,
            multiplier: Multiplier | Mapping[str, Multiplier],
            channel: str | None = None,
        ) -> None:
            super().__init__(venv)
            self.rule = LagrangianRule(multiplier, channel)

        def set_lambda(self, value: float, channel: str | None = None) -> None:
            self.rule.set_lambda(value, channel)

        def get_lambda(self, channel: str | None = None) -> float:
            return self.rule.get_lambda(channel)

    return ShapedVecReward, LagrangianVecReward


_VEC_CLASSES: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    if name in ("ShapedVecReward", "LagrangianVecReward"):
        if not _VEC_CLASSES:
            shaped, lagrangian = _make_vec_classes()
            _VEC_CLASSES.update(ShapedVecReward=shaped, LagrangianVecReward=lagrangian)
        return _VEC_CLASSES[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
