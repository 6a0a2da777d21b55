"""SB3 VecEnv twins of the shared wrappers (mirroring Gymnasium's ``wrappers/vector``).

Each module here imports Stable-Baselines3 (and so torch) at its top; the single-env and
PettingZoo wrappers in :mod:`bystander.envs` never do, so code that only needs those
does not pay for SB3.
"""

from __future__ import annotations

from .constraints import ConditionedLagrangianVecReward, LagrangianVecReward, ShapedVecReward
from .predictability import PredictabilityVecWrapper

__all__ = [
    "ConditionedLagrangianVecReward",
    "LagrangianVecReward",
    "PredictabilityVecWrapper",
    "ShapedVecReward",
]
