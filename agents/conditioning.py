"""What a lambda-conditioned policy (``constraint.conditioned``) is shown outside training.

In training, :class:`~bystander.envs.vector.ConditionedLagrangianVecReward` appends each
world's own lambda to its observations. Everywhere else (held-out evaluations,
``bystander evaluate``, rendering, the demo) the env has no such layer, and the policy
is shown the multiplier's current lambda: :func:`policy_observations` builds the
function applied to observations before ``policy.predict``, composed with the run's
``VecNormalize`` statistics when it has them (which saw the feature in training, so it
is appended first). A lambda search (``constraint.lambda_step: search``) shows each
world a lambda of its own: :func:`fixed_lambda_observations`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from bystander.envs.constraints import append_lambda, multiplier_key
from bystander.envs.multipliers import Multiplier

__all__ = [
    "append_lambda",
    "fixed_lambda_observations",
    "policy_observations",
    "run_observations",
]

ObsFn = Callable[[np.ndarray], np.ndarray]


def policy_observations(
    cfg: Any, multipliers: Mapping[str, Multiplier], normalize: ObsFn | None = None
) -> ObsFn | None:
    """The observation function of a run's policy outside training.

    Args:
        cfg: The run config (``constraint``).
        multipliers: The run's multipliers by key (their lambda is read at each call, so
            a held-out evaluation during training sees the current one).
        normalize: The run's ``VecNormalize.normalize_obs``, if any.

    Returns:
        ``normalize`` unchanged unless ``constraint.conditioned``; then a function that
        appends the multiplier's lambda, then normalises.

    Raises:
        ValueError: A conditioned run without its multiplier.
    """
    c = cfg.constraint
    if not c.conditioned:
        return normalize
    key = multiplier_key(c.channel)
    if key not in multipliers:
        raise ValueError(f"constraint.conditioned: the run has no multiplier for {key!r}")
    multiplier = multipliers[key]
    return _observer(lambda: multiplier.value, normalize)


def fixed_lambda_observations(lambdas: Any, normalize: ObsFn | None = None) -> ObsFn:
    """The observation function of worlds that each show a fixed lambda of their own.

    Args:
        lambdas: One lambda > 0 per world, ``(N,)`` (or a scalar for all).
        normalize: The run's ``VecNormalize.normalize_obs``, if any.

    Returns:
        ``obs (N, F) -> (N, F + 1)``: world ``i``'s lambda appended, then normalised.
    """
    lam = np.asarray(lambdas, np.float64)
    return _observer(lambda: lam, normalize)


def _observer(lam: Callable[[], Any], normalize: ObsFn | None) -> ObsFn:
    def observe(obs: np.ndarray) -> np.ndarray:
        obs = append_lambda(obs, lam())
        return normalize(obs) if normalize is not None else obs

    return observe


def run_observations(run_dir: Any, cfg: Any, multipliers: Mapping[str, Multiplier]) -> ObsFn | None:
    """:func:`policy_observations` of the run saved in ``run_dir`` (its
    ``vecnormalize.pkl`` when there is one; ``multipliers`` loaded from its checkpoint)."""
    from bystander.agents.training import load_obs_normalizer

    return policy_observations(cfg, multipliers, load_obs_normalizer(run_dir))
