"""SB3 VecEnv shells of the constraint rules: :class:`ShapedVecReward` and
:class:`LagrangianVecReward`.

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
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from bystander.envs.constraints import LagrangianRule, ShapingRule, add_penalty
from bystander.envs.contract import step_arrays
from bystander.envs.multipliers import Multiplier

__all__ = ["LagrangianVecReward", "ShapedVecReward"]


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
                add_penalty(info, float(penalty[i]))
                if "lambdas" in extra:
                    info["lambdas"] = dict(extra["lambdas"])
                out[i] = info
        return obs, new_rewards.astype(np.float32), dones, out


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
