"""Vector (SB3 ``VecEnv``) twins of the wrappers in :mod:`bystander.envs`.

Importing this package imports Stable-Baselines3 (and torch); the single-env and
PettingZoo wrappers in :mod:`bystander.envs` do not.
"""

from .predictability import PredictabilityVecWrapper

__all__ = ["PredictabilityVecWrapper"]
