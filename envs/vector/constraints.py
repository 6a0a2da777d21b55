"""SB3 VecEnv shells of the constraint rules: :class:`ShapedVecReward`,
:class:`LagrangianVecReward` and its lambda-conditioned form
:class:`ConditionedLagrangianVecReward`.

They apply the same :class:`~bystander.envs.constraints.ShapingRule` /
:class:`~bystander.envs.constraints.LagrangianRule` as the Gymnasium wrappers
:class:`~bystander.envs.constraints.ShapedReward` /
:class:`~bystander.envs.constraints.LagrangianReward` and write the same ``info`` keys,
on all worlds at once when the base VecEnv publishes ``step_arrays``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from bystander.envs.constraints import (
    LagrangianRule,
    ShapingRule,
    add_penalty,
    append_lambda,
    draw_lambdas,
    lambda_feature,
)
from bystander.envs.contract import step_arrays
from bystander.envs.multipliers import Multiplier

__all__ = ["ConditionedLagrangianVecReward", "LagrangianVecReward", "ShapedVecReward"]


class _RuleVecWrapper(VecEnvWrapper):
    """A VecEnv wrapper that applies ``self.rule`` to every step's rewards."""

    rule: ShapingRule | LagrangianRule

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
                new[i], info = self._apply_one(i, float(rewards[i]), info)
                out.append(info)
            return obs, new, dones, out
        base = np.asarray(rewards, dtype=np.float64)
        new_rewards, extra = self._apply_all(base, arrays)
        penalty = extra["penalty"]
        step_rewards = dict(arrays.get("rewards") or {})
        step_rewards["penalty"] = step_rewards.get("penalty", 0.0) + penalty
        self.step_arrays = {**arrays, "rewards": step_rewards, **extra}
        out = list(infos)
        for i, info in enumerate(infos):
            if info:  # lean infos: only the worlds whose episode ended
                info = dict(info)
                add_penalty(info, float(penalty[i]))
                if "lambdas" in extra:
                    info["lambdas"] = dict(extra["lambdas"])
                out[i] = info
        return obs, new_rewards.astype(np.float32), dones, out

    def _apply_one(self, i: int, reward: float, info: Any) -> tuple[float, dict[str, Any]]:
        """The rule on world ``i``'s step (info path)."""
        return self.rule.apply(reward, info)

    def _apply_all(
        self, rewards: np.ndarray, arrays: Mapping[str, Any]
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """The rule on every world's step (``step_arrays`` path)."""
        return self.rule.apply_arrays(rewards, arrays)


class ShapedVecReward(_RuleVecWrapper):
    """:class:`~bystander.envs.constraints.ShapedReward` for an SB3 VecEnv (same rule,
    same ``info`` keys).

    Args:
        venv: VecEnv whose infos (or ``step_arrays``) carry ``"cost"`` / ``"costs"``.
        weight: Penalty weight >= 0, or a dict ``channel -> weight``.
        channel: With a float weight: ``None`` = the total cost, a string = that channel.
    """

    def __init__(
        self, venv: VecEnv, weight: float | Mapping[str, float], channel: str | None = None
    ) -> None:
        super().__init__(venv)
        self.rule = ShapingRule(weight, channel)


class LagrangianVecReward(_RuleVecWrapper):
    """:class:`~bystander.envs.constraints.LagrangianReward` for an SB3 VecEnv (same
    rule, same ``info`` keys).

    The multipliers live in this process: the training loop's ``update`` is seen by
    every world at the next step, no syncing needed.

    Args:
        venv: VecEnv whose infos (or ``step_arrays``) carry ``"cost"`` / ``"costs"``.
        multiplier: A multiplier, or a dict ``channel -> multiplier``.
        channel: With a single multiplier: ``None`` = the total cost, a string = that channel.
    """

    def __init__(
        self,
        venv: VecEnv,
        multiplier: Multiplier | Mapping[str, Multiplier],
        channel: str | None = None,
        progress_credit: float | None = None,
    ) -> None:
        super().__init__(venv)
        self.rule = LagrangianRule(multiplier, channel, progress_credit)

    def set_lambda(self, value: float, channel: str | None = None) -> None:
        """Sync this copy of a multiplier to ``value``."""
        self.rule.set_lambda(value, channel)

    def get_lambda(self, channel: str | None = None) -> float:
        """The lambda currently used for ``channel``."""
        return self.rule.get_lambda(channel)


class ConditionedLagrangianVecReward(LagrangianVecReward):
    """A lambda-conditioned :class:`LagrangianVecReward` (``constraint.conditioned``).

    Each world draws its own lambda at every episode start
    (:func:`~bystander.envs.constraints.draw_lambdas`: log-uniform in ``[low, high]``),
    is rewarded with the Lagrangian at that
    lambda, and shows :func:`~bystander.envs.constraints.lambda_feature` of it as one
    more observation feature, the last (``terminal_observation`` too). One policy so
    learns the whole trade-off, and the multiplier (updated on held-out evaluations,
    where the policy sees the multiplier's lambda) only chooses the operating point:
    the ego answers a new lambda at once instead of after relearning.

    The draws come from a NumPy generator seeded by :meth:`seed` (the stack seeds it
    with ``train.seed``), so runs repeat. ``info["lambdas"]`` and the logs keep the
    multiplier's value; a world's own lambda is in :attr:`lambdas`.

    Args:
        venv: VecEnv with a ``Box`` observation space of shape ``(F,)`` (becomes
            ``(F + 1,)``), whose ``step_arrays`` or infos carry the cost.
        multiplier: The single multiplier (its lambda is the deployed one).
        low, high: Range of the drawn lambdas, ``0 < low <= high`` (``constraint.lambda_min``
            / ``lambda_max``).
        channel, progress_credit: As :class:`LagrangianVecReward`.
    """

    def __init__(
        self,
        venv: VecEnv,
        multiplier: Multiplier,
        low: float,
        high: float,
        channel: str | None = None,
        progress_credit: float | None = None,
    ) -> None:
        space = venv.observation_space
        if not isinstance(space, spaces.Box) or len(space.shape) != 1:
            raise ValueError(
                "constraint.conditioned: expected a flat Box observation (env.config."
                f"observation: vector), got {space}"
            )
        if not (isinstance(multiplier, Multiplier) and 0 < low <= high):
            raise ValueError(
                f"ConditionedLagrangianVecReward: expected one Multiplier and 0 < low <= "
                f"high, got {type(multiplier).__name__}, low={low!r}, high={high!r}"
            )
        super().__init__(venv, multiplier, channel, progress_credit)
        self.observation_space = spaces.Box(
            np.append(space.low, lambda_feature(low)).astype(space.dtype),
            np.append(space.high, lambda_feature(high)).astype(space.dtype),
            dtype=space.dtype,
        )
        self.low, self.high = float(low), float(high)
        self.rng = np.random.default_rng()
        self.lambdas = draw_lambdas(self.rng, self.num_envs, self.low, self.high)
        self._seed: int | None = None

    def seed(self, seed: int | None = None) -> Any:
        """Seed the lambda draws from the next :meth:`reset` on, as SB3's VecEnvs seed
        their next reset (so a resumed run, whose restored stack SB3's ``load`` seeds
        again, keeps the draws it had); then seed the wrapped env."""
        self._seed = seed
        return self.venv.seed(seed)

    def reset(self) -> Any:
        """Every world starts an episode: new lambdas (from a fresh generator when
        :meth:`seed` was called since the last reset)."""
        if self._seed is not None:
            self.rng, self._seed = np.random.default_rng(self._seed), None
        self.lambdas = draw_lambdas(self.rng, self.num_envs, self.low, self.high)
        return append_lambda(self.venv.reset(), self.lambdas)

    def _apply_one(self, i: int, reward: float, info: Any) -> tuple[float, dict[str, Any]]:
        return self.rule.apply(reward, info, lam=float(self.lambdas[i]))

    def _apply_all(
        self, rewards: np.ndarray, arrays: Mapping[str, Any]
    ) -> tuple[np.ndarray, dict[str, Any]]:
        return self.rule.apply_arrays(rewards, arrays, lam=self.lambdas)

    def step_wait(self) -> Any:
        """The Lagrangian at each world's lambda; a finished episode's lambda stays on
        its ``terminal_observation``, then its world draws a new one."""
        obs, rewards, dones, infos = super().step_wait()
        done = np.flatnonzero(dones)
        for i in done:
            last = infos[i].get("terminal_observation") if infos[i] else None
            if last is not None:
                infos[i] = dict(infos[i])
                infos[i]["terminal_observation"] = append_lambda(last, self.lambdas[i])
        if len(done):
            self.lambdas[done] = draw_lambdas(self.rng, len(done), self.low, self.high)
        return append_lambda(obs, self.lambdas), rewards, dones, infos
