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

Where the rest lives: the multiplier classes in :mod:`bystander.envs.multipliers`
(re-exported here, the constraint module's face); the one config schema of both
domains in :mod:`bystander.envs.constraint_config`; the SB3 VecEnv twins
``ShapedVecReward`` / ``LagrangianVecReward`` in :mod:`bystander.envs.vector.constraints`
(they import SB3, this module does not).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from bystander.envs.multipliers import (
    LagrangeMultiplier,
    Multiplier,
    PIDLagrangeMultiplier,
    check_finite,
    check_nonneg,
)

__all__ = [
    "COST_NORMALIZATIONS",
    "cost_column",
    "MIN_PROGRESS_M",
    "LagrangeMultiplier",
    "LagrangianReward",
    "LagrangianRule",
    "Multiplier",
    "PIDLagrangeMultiplier",
    "ShapedReward",
    "ShapingRule",
    "add_penalty",
    "append_lambda",
    "combine_advantages",
    "draw_lambdas",
    "episode_cost_for_budget",
    "lagrangian_reward",
    "lambda_feature",
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


COST_NORMALIZATIONS = ("sum", "per_step", "per_metre")
"""How an episode's cost is put in the budget's unit before a multiplier sees it:
``"sum"`` (the episode cost as summed by the env, cost units per episode),
``"per_step"`` (that sum divided by the episode length, cost units per step) or
``"per_metre"`` (divided by the metres of route the episode gained,
``info["episode_progress"]``, at least :data:`MIN_PROGRESS_M`: cost units per metre).
Waiting and standing still lower a per-step cost without making the ego any easier
to predict on its way; per metre, an ego that waits pays the same and one that never
moves pays its whole cost."""


def cost_column(channel: str, normalization: str) -> str:
    """The key of a cost channel's episode figure in ``normalization``'s unit, in the
    evaluation rows and summaries (``bystander.agents.evaluation``) and the held-out CSV:
    ``cost_<channel>`` (``"sum"``), ``cost_<channel>_per_step`` or
    ``cost_<channel>_per_metre``."""
    if normalization not in COST_NORMALIZATIONS:
        raise ValueError(
            f"cost_normalization: expected one of {COST_NORMALIZATIONS}, got {normalization!r}"
        )
    return f"cost_{channel}" if normalization == "sum" else f"cost_{channel}_{normalization}"


MIN_PROGRESS_M = 1.0
"""Floor of an episode's progress in ``per_metre`` [m]: an ego that stays put is
charged its whole episode cost per metre."""


def lambda_feature(lam: Any) -> Any:
    """The observation feature of a lambda-conditioned policy (``constraint.conditioned``):
    ``log(lambda)``, which spreads the decades a multiplier ranges over evenly."""
    return np.log(lam)


def append_lambda(obs: Any, lam: Any) -> np.ndarray:
    """``obs`` (``(..., F)``) with :func:`lambda_feature` of ``lam`` (a scalar, or one
    lambda per row, shape ``obs.shape[:-1]``) as feature ``F``: ``(..., F + 1)``, the
    dtype of ``obs``. The one place a conditioned policy's observation is built."""
    obs = np.asarray(obs)
    feature = np.broadcast_to(lambda_feature(np.asarray(lam, np.float64)), obs.shape[:-1])
    return np.concatenate([obs, feature[..., None].astype(obs.dtype)], axis=-1)


def draw_lambdas(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    """``n`` lambdas log-uniform in ``[low, high]`` (``0 < low <= high``): every decade
    of the multiplier's range gets the same share of episodes. float64 ``(n,)``."""
    return np.exp(rng.uniform(math.log(low), math.log(high), n))


def multiplier_key(channel: str | None) -> str:
    """Key of a multiplier: its cost channel, or ``"cost"`` for the total cost."""
    return "cost" if channel is None else channel


def episode_cost_for_budget(
    cost: float,
    length: float | None,
    normalization: str = "sum",
    progress: float | None = None,
) -> float:
    """One finished episode's cost in the unit of the budget it is compared with.

    The envs sum the per-step cost over an episode (``info["episode_cost"]``), so a
    budget on that sum depends on episode length, and an agent can meet or miss it by
    making episodes shorter or longer. ``"per_step"`` divides by the episode's length
    (env steps; SB3's ``Monitor``/``VecMonitor`` put it in ``info["episode"]["l"]``),
    which makes the budget a cost rate (e.g. metres of observer ADE per step), and which
    waiting or standing still can game. ``"per_metre"`` divides by the metres of route
    gained (``info["episode_progress"]``, floored at :data:`MIN_PROGRESS_M`), which they
    cannot.

    Args:
        cost: The episode's summed cost (cost units), finite.
        length: Episode length in env steps (>= 1); only read for ``"per_step"``.
        normalization: One of :data:`COST_NORMALIZATIONS`.
        progress: Metres of route gained (>= 0); only read for ``"per_metre"``.

    Returns:
        ``cost``, ``cost / length`` or ``cost / max(progress, MIN_PROGRESS_M)``.

    Raises:
        ValueError: unknown ``normalization``; a missing or invalid length or progress.
    """
    if normalization not in COST_NORMALIZATIONS:
        raise ValueError(
            f"cost_normalization: expected one of {COST_NORMALIZATIONS}, got {normalization!r}"
        )
    x = check_finite(cost, "episode_cost")
    if normalization == "sum":
        return x
    if normalization == "per_metre":
        if progress is None:
            raise ValueError(
                "cost_normalization='per_metre': the finished episode has no progress; "
                'expected info["episode_progress"] [m] from the env at episode end'
            )
        p = check_finite(progress, "episode progress")
        if p < 0:
            raise ValueError(f"episode progress: expected >= 0 m, got {progress!r}")
        return x / max(p, MIN_PROGRESS_M)
    if length is None:
        raise ValueError(
            "cost_normalization='per_step': the finished episode has no length; expected "
            'info["episode"]["l"] from an SB3 Monitor/VecMonitor in the env stack'
        )
    n = check_finite(length, "episode length")
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
        return check_finite(info["cost"], 'info["cost"]')
    costs = info.get("costs")
    if not isinstance(costs, Mapping) or channel not in costs:
        have = sorted(costs) if isinstance(costs, Mapping) else None
        raise ValueError(
            f'{wrapper}: info["costs"][{channel!r}] is missing (channels present: {have})'
        )
    return check_finite(costs[channel], f'info["costs"][{channel!r}]')


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


def add_penalty(info: dict[str, Any], penalty: float) -> None:
    """Add ``penalty`` to ``info["rewards"]["penalty"]`` (a new ``rewards`` dict, in place)."""
    rewards = dict(info.get("rewards") or {})
    rewards["penalty"] = rewards.get("penalty", 0.0) + penalty
    info["rewards"] = rewards


class ShapingRule:
    """The shaping formula on one step: ``reward - sum_i w_i c_i``.

    Shared by :class:`ShapedReward` (Gymnasium) and :class:`~bystander.envs.vector.ShapedVecReward` (SB3
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
                str(k): check_nonneg(w, f"weight[{k!r}]") for k, w in weight.items()
            }
            if not self.weights:
                raise ValueError("weight: expected a non-empty dict channel -> weight")
        else:
            self.weights = {channel: check_nonneg(weight, "weight")}

    def apply(self, reward: float, info: Mapping[str, Any]) -> tuple[float, dict[str, Any]]:
        """(new reward, a copy of ``info`` with ``rewards["penalty"]`` added)."""
        penalty = -sum(w * _read_cost(info, ch, "ShapedReward") for ch, w in self.weights.items())
        info = dict(info)
        add_penalty(info, penalty)
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
    :class:`LagrangianReward` (Gymnasium) and :class:`~bystander.envs.vector.LagrangianVecReward` (SB3 VecEnv).

    With ``progress_credit`` ``d`` (a ``per_metre`` budget, cost units per metre), the
    step's cost is counted as ``c - d * progress`` (``info["progress"]``, metres of route
    gained by the step): the episode sums then satisfy ``C - d P <= 0`` exactly when
    ``C / P <= d``, so the reward the policy is trained on has the budget's unit, and
    waiting or standing (no progress) earns no credit against the cost.

    The credit may exceed the budget (``constraint.credit_margin``: ``d (1 + margin)``):
    then moving beats standing by ``lambda d margin`` per metre. With the plain credit
    standing is neutral, and a stochastic training policy pays more per metre than its
    greedy twin (its exploration surprises the observers), so under a large lambda every
    metre looked like a penalty and the ego learned to stop. In the undiscounted sum the
    extra credit is the route left at the episode's end charged at the credit (up to a
    constant per episode); with a discount it also pays for speed (metres credited
    sooner), which weakens lambda's lever on the cruise speed: keep it small.

    Args:
        multiplier: A multiplier, or a dict ``channel -> multiplier``.
        channel: With a single multiplier: ``None`` = ``info["cost"]``, a string =
            ``info["costs"][channel]``.
        progress_credit: ``None``, or the per-metre budget ``d`` >= 0 (single
            multiplier only).
    """

    def __init__(
        self,
        multiplier: Multiplier | Mapping[str, Multiplier],
        channel: str | None = None,
        progress_credit: float | None = None,
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
        if progress_credit is not None:
            progress_credit = check_nonneg(progress_credit, "progress_credit")
            if len(self.multipliers) != 1:
                raise ValueError("progress_credit: expected a single multiplier, got a dict")
        self.progress_credit = progress_credit

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

    def _lambdas(self, lam: Any) -> dict[str | None, Any]:
        """Each channel's lambda: the multipliers', or ``lam`` (a single multiplier's
        per-world lambdas, ``constraint.conditioned``) when given."""
        if lam is None:
            return {ch: m.value for ch, m in self.multipliers.items()}
        if len(self.multipliers) != 1:
            raise ValueError("lam: expected a single multiplier, got a dict")
        return {next(iter(self.multipliers)): lam}

    def apply(
        self, reward: float, info: Mapping[str, Any], lam: float | None = None
    ) -> tuple[float, dict[str, Any]]:
        """(new reward, a copy of ``info`` with ``rewards["penalty"]`` and ``lambdas``, the
        multipliers' values); with ``lam``, the reward at that lambda instead of the
        multiplier's."""
        lams = self._lambdas(lam)
        weighted = sum(lam * _read_cost(info, ch, "LagrangianReward") for ch, lam in lams.items())
        if self.progress_credit is not None:
            progress = check_finite(info.get("progress", math.nan), 'info["progress"]')
            weighted -= sum(lams.values()) * self.progress_credit * progress
        new_reward = (float(reward) - weighted) / (1.0 + sum(lams.values()))
        info = dict(info)
        add_penalty(info, new_reward - float(reward))
        info["lambdas"] = {multiplier_key(ch): m.value for ch, m in self.multipliers.items()}
        return new_reward, info

    def apply_arrays(
        self, rewards: np.ndarray, arrays: Mapping[str, Any], lam: np.ndarray | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """As :meth:`ShapingRule.apply_arrays`; also returns ``"lambdas"`` (the
        multipliers' values). ``lam``: per-world lambdas ``(N,)`` of a single multiplier
        instead of its value."""
        lams = self._lambdas(lam)
        weighted = sum(
            lam * _read_cost_array(arrays, ch, "LagrangianVecReward") for ch, lam in lams.items()
        )
        if self.progress_credit is not None:
            progress = np.asarray(arrays.get("progress", np.nan), dtype=np.float64)
            if not np.isfinite(progress).all():
                raise ValueError('LagrangianVecReward: step_arrays["progress"] is missing')
            weighted = weighted - sum(lams.values()) * self.progress_credit * progress
        new = (rewards - weighted) / (1.0 + sum(lams.values()))
        lambdas = {multiplier_key(ch): m.value for ch, m in self.multipliers.items()}
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
        progress_credit: float | None = None,
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self, multiplier=multiplier, channel=channel, progress_credit=progress_credit
        )
        gym.Wrapper.__init__(self, env)
        self.rule = LagrangianRule(multiplier, channel, progress_credit)
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
