"""Lagrange multipliers: lambda as a plain object that a training loop updates.

- :class:`LagrangeMultiplier`: log-lambda gradient ascent as in Safe RLHF, with the
  optional lambda floor (its docstring is the one place that explains the floor).
- :class:`PIDLagrangeMultiplier`: the PID Lagrangian of Stooke et al. 2020.

Both take the mean episode cost of a rollout in :meth:`Multiplier.update`, once per
rollout (driving) or per GRPO step (text); nothing else mutates lambda except
:meth:`Multiplier.set_value` on a replica and, for a lambda-conditioned policy
(``lambda_step="search"``), :meth:`LagrangeMultiplier.solve` on a measured cost curve.
``state_dict`` / ``load_state_dict`` make checkpoints exact. :meth:`bystander.envs.constraint_config.ConstraintConfig.make_multiplier`
builds the one a config asks for. Pure Python: no NumPy, gym or torch.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "LAMBDA_STEPS",
    "LagrangeMultiplier",
    "Multiplier",
    "PIDLagrangeMultiplier",
    "budget_crossing",
    "check_finite",
    "check_nonneg",
    "nonincreasing_fit",
]


LAMBDA_STEPS = ("scaled", "relative", "search")
"""The log-lambda steps of :class:`LagrangeMultiplier` (config ``constraint.lambda_step``)."""


def check_finite(value: Any, name: str = "mean_episode_cost") -> float:
    """``float(value)``, or a TypeError / ValueError naming ``name`` if it is not a finite real."""
    try:
        x = float(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected a real number, got {value!r}") from exc
    if not math.isfinite(x):
        raise ValueError(f"{name}: expected a finite number, got {x}")
    return x


def check_nonneg(value: Any, name: str) -> float:
    """:func:`check_finite`, and a ValueError naming ``name`` if the value is < 0."""
    x = check_finite(value, name)
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


def nonincreasing_fit(values: Sequence[float]) -> list[float]:
    """The least-squares non-increasing fit of ``values`` (pool adjacent violators).

    A noisy cost curve measured at increasing lambdas should fall; where neighbours
    disagree, they are pooled into their mean. Same length as ``values``.
    """
    means: list[float] = []
    counts: list[int] = []
    for v in values:
        means.append(check_finite(v, "costs"))
        counts.append(1)
        while len(means) > 1 and means[-2] < means[-1]:  # a rise: pool the two blocks
            m2, c2 = means.pop(), counts.pop()
            m1, c1 = means.pop(), counts.pop()
            means.append((m1 * c1 + m2 * c2) / (c1 + c2))
            counts.append(c1 + c2)
    return [m for m, c in zip(means, counts, strict=True) for _ in range(c)]


def budget_crossing(lambdas: Sequence[float], costs: Sequence[float], budget: float) -> float:
    """The lambda at which a cost curve meets ``budget``.

    Args:
        lambdas: Increasing lambdas > 0, ``(P,)`` with ``P >= 2``.
        costs: The cost measured at each, ``(P,)``, in the budget's unit.
        budget: The budget.

    Returns:
        Where :func:`nonincreasing_fit` of ``costs``, linear in ``log lambda`` between
        the points, equals ``budget``: ``lambdas[0]`` when even it costs no more than the
        budget (more lambda only gives up return), ``lambdas[-1]`` when even it costs
        more (the most the range offers).
    """
    lams = [check_finite(x, "lambdas") for x in lambdas]
    if len(lams) < 2 or len(lams) != len(costs):
        raise ValueError(
            f"lambdas, costs: expected two equal-length sequences of >= 2, got "
            f"{len(lams)} and {len(costs)}"
        )
    if lams[0] <= 0 or any(b <= a for a, b in zip(lams, lams[1:], strict=False)):
        raise ValueError(f"lambdas: expected increasing numbers > 0, got {lams}")
    fit = nonincreasing_fit(costs)
    if fit[0] <= budget:
        return lams[0]
    if fit[-1] > budget:
        return lams[-1]
    k = next(i for i, c in enumerate(fit) if c <= budget)  # fit[k - 1] > budget >= fit[k]
    t = (fit[k - 1] - budget) / (fit[k - 1] - fit[k])
    lo, hi = math.log(lams[k - 1]), math.log(lams[k])
    return math.exp(lo + t * (hi - lo))


def _check_floor(floor: float | None, init: float) -> float | None:
    """A log-lambda floor: ``None`` (or 0: no floor) or a number in (0, ``init``]."""
    if floor is None:
        return None
    floor = check_nonneg(floor, "min")
    if floor > init:
        raise ValueError(f"min: expected a lambda floor <= init ({init}), got {floor}")
    return floor if floor > 0 else None


class LagrangeMultiplier(Multiplier):
    """Log-lambda gradient ascent as in Safe RLHF (Dai et al. 2023).

    Each :meth:`update` with episode cost ``J_C`` (averaged over the last ``window``
    values passed) does, with ``step="scaled"`` (the default, Safe RLHF's update)::

        log_lambda <- log_lambda + lr * exp(log_lambda) * (J_C - budget)
        log_lambda <- clip(log_lambda, log(min), log(max))   # each bound when set

    and with ``step="relative"``::

        log_lambda <- log_lambda + lr * (J_C - budget) / budget

    The scaled step is the gradient of ``lambda (J_C - budget)`` in ``log_lambda``: it
    shrinks with lambda and with the cost's unit, so a multiplier whose useful range
    spans decades (the driving egos of Study 2 need lambda from about 0.01 to 0.3) moves
    by a few per cent per update at its low end. The relative step moves lambda by the
    same factor for the same relative excess at every lambda and in every cost unit
    (``lr`` 0.5: 20 % over budget multiplies lambda by ``e^0.1``); it needs a budget
    > 0. An integral controller on ``log lambda``.

    With ``step="search"`` (a lambda-conditioned policy only, see
    :class:`~bystander.envs.vector.ConditionedLagrangianVecReward`) lambda is not
    stepped from one cost: :meth:`solve` takes the policy's cost measured at a grid of
    lambdas, averages the last ``window`` such curves and sets lambda where their
    :func:`nonincreasing_fit` meets the budget (:func:`budget_crossing`). For a policy
    that answers every lambda, this is the minimum of the dual function
    ``max_pi L(pi, lambda)`` found by a line search instead of by gradient steps, so
    lambda cannot lag or overshoot the curve. :meth:`update` then refuses a cost, and
    ``delay`` and ``window`` count curves.

    In every case ``value = exp(log_lambda)``. The first ``delay`` updates only record
    the cost (lambda does not move), as Safe RLHF's ``lambda_update_delay_steps``.

    The lambda floor ``min`` (config field ``lambda_min``; this is the one place that
    explains it): the step on ``log_lambda`` is proportional to lambda itself. After a
    phase where the cost sits below the budget (e.g. an ego that first learns to stand
    still), lambda decays towards 0 and then climbs back by only
    ``lr * lambda * (J_C - budget)`` per update, so the constraint stalls while the cost
    is above the budget. With a floor, the log-step when lambda is at the floor is at
    least ``lr * min * (J_C - budget)``: choose ``min`` so that this is a useful step
    (``lr * min * typical excess`` ~ 0.02-0.1; e.g. 0.05 with lr 5 and per-step budgets
    in metres). ``None`` (or 0, the config default) keeps the plain Safe RLHF update,
    since a useful floor depends on ``lr`` and the cost's scale.
    :class:`PIDLagrangeMultiplier` has no floor: its additive update does not stall.

    Args:
        budget: Cost budget ``d`` >= 0 (unit of the episode cost).
        lr: Step size > 0.
        init: Initial lambda > 0 (log-parametrised, so strictly positive).
        max: Upper clamp on lambda (>= ``init``), or ``None`` for none.
        delay: Number of initial updates that leave lambda unchanged (>= 0).
        window: Number of recent episode costs averaged into ``J_C`` (>= 1).
        min: Lower clamp on lambda (0 <= ``min`` <= ``init``), or ``None`` / 0 for none.
        step: ``"scaled"``, ``"relative"`` or ``"search"`` (:data:`LAMBDA_STEPS`, see
            above).
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
        step: str = "scaled",
    ) -> None:
        self.budget = check_nonneg(budget, "budget")
        if step not in LAMBDA_STEPS:
            raise ValueError(f"step: expected one of {LAMBDA_STEPS}, got {step!r}")
        if step == "relative" and self.budget <= 0:
            raise ValueError(f"budget: expected > 0 with step='relative', got {self.budget}")
        self.step = step
        self.lr = check_finite(lr, "lr")
        if self.lr <= 0:
            raise ValueError(f"lr: expected > 0, got {self.lr}")
        init = check_finite(init, "init")
        if init <= 0:
            raise ValueError(f"init: expected > 0 (lambda is log-parametrised), got {init}")
        if max is not None:
            max = check_finite(max, "max")
            if max < init:
                raise ValueError(f"max: expected >= init ({init}), got {max}")
        self.min = _check_floor(min, init)
        if not isinstance(delay, int) or isinstance(delay, bool) or delay < 0:
            raise ValueError(f"delay: expected an int >= 0, got {delay!r}")
        self.max = max
        self.delay = delay
        self.window = window
        self._costs = _CostWindow(window)
        self._curves: deque[list[float]] = deque(maxlen=window)
        self._grid: list[float] = []  # the lambdas of the curves in the window
        self.log_lambda = math.log(init)
        self.num_updates = 0

    @property
    def value(self) -> float:
        return math.exp(self.log_lambda)

    def update(self, mean_episode_cost: float) -> float:
        if self.step == "search":
            raise ValueError(
                "step: 'search' moves lambda with solve(lambdas, costs) on a cost curve, "
                "not with update(cost)"
            )
        j_c = self._costs.push(check_finite(mean_episode_cost))
        self.num_updates += 1
        if self.num_updates > self.delay:
            if self.step == "relative":
                self.log_lambda += self.lr * (j_c - self.budget) / self.budget
            else:
                self.log_lambda += self.lr * math.exp(self.log_lambda) * (j_c - self.budget)
            self._clamp()
        return self.value

    def solve(self, lambdas: Sequence[float], costs: Sequence[float]) -> float:
        """``step="search"``: one update from the policy's cost curve.

        Args:
            lambdas: Increasing lambdas > 0 the cost was measured at, ``(P,)``. The
                window averages curves point by point, so a call on another grid than
                the window's (e.g. a resume with a new ``lambda_max``) starts a new
                window.
            costs: The mean cost at each, in the budget's unit, ``(P,)``.

        Returns:
            The new lambda: :func:`budget_crossing` of the mean of the last ``window``
            curves, clamped to ``[min, max]``; unchanged during the first ``delay``
            calls.
        """
        if self.step != "search":
            raise ValueError(f"step: 'search' to solve on a cost curve, got {self.step!r}")
        grid = [check_finite(x, "lambdas") for x in lambdas]
        curve = [check_finite(c, "costs") for c in costs]
        if len(grid) != len(curve):
            raise ValueError(
                f"lambdas, costs: expected equal lengths, got {len(grid)} and {len(curve)}"
            )
        if grid != self._grid:
            self._curves.clear()
            self._grid = grid
        self._curves.append(curve)
        self.num_updates += 1
        if self.num_updates > self.delay:
            mean = [sum(col) / len(self._curves) for col in zip(*self._curves, strict=True)]
            self.log_lambda = math.log(budget_crossing(grid, mean, self.budget))
            self._clamp()
        return self.value

    def _clamp(self) -> None:
        if self.max is not None:
            self.log_lambda = min(self.log_lambda, math.log(self.max))
        if self.min is not None:
            self.log_lambda = max(self.log_lambda, math.log(self.min))

    def set_value(self, value: float) -> None:
        value = check_finite(value, "value")
        if value <= 0:
            raise ValueError(f"value: expected > 0 for a log-parametrised multiplier, got {value}")
        self.log_lambda = math.log(value)

    def state_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "lr": self.lr,
            "max": self.max,
            "min": self.min,
            "step": self.step,
            "delay": self.delay,
            "window": self.window,
            "log_lambda": self.log_lambda,
            "num_updates": self.num_updates,
            "costs": list(self._costs.costs),
            "curves": [list(c) for c in self._curves],
            "grid": list(self._grid),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.budget = check_nonneg(state["budget"], "budget")
        self.lr = float(state["lr"])
        self.max = None if state["max"] is None else float(state["max"])
        floor = state.get("min")  # absent in checkpoints from before the floor existed
        self.min = None if floor is None else float(floor)
        self.step = str(state.get("step", "scaled"))  # absent before the relative step
        self.delay = int(state["delay"])
        self.window = int(state["window"])
        self._costs = _CostWindow(self.window)
        self._costs.costs.extend(float(c) for c in state["costs"])
        self._curves = deque(  # absent before the search step
            ([float(c) for c in curve] for curve in state.get("curves", [])),
            maxlen=self.window,
        )
        self._grid = [float(x) for x in state.get("grid", [])]
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
        self.budget = check_nonneg(budget, "budget")
        self.kp = check_nonneg(kp, "kp")
        self.ki = check_nonneg(ki, "ki")
        self.kd = check_nonneg(kd, "kd")
        for name, a in (("alpha_p", alpha_p), ("alpha_d", alpha_d)):
            a = check_finite(a, name)
            if not 0.0 <= a < 1.0:
                raise ValueError(f"{name}: expected a value in [0, 1), got {a}")
        self.alpha_p = float(alpha_p)
        self.alpha_d = float(alpha_d)
        if not isinstance(d_delay, int) or isinstance(d_delay, bool) or d_delay < 1:
            raise ValueError(f"d_delay: expected an int >= 1, got {d_delay!r}")
        init = check_nonneg(init, "init")
        if max is not None:
            max = check_finite(max, "max")
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
        j_c = self._costs.push(check_finite(mean_episode_cost))
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
        self._value = check_nonneg(value, "value")

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
        self.budget = check_nonneg(state["budget"], "budget")
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
