"""SB3 hyperparameters of driving training: defaults per algorithm and their checks.

``train.hyperparams`` overrides :data:`ALGO_DEFAULTS` key by key
(:func:`bystander.config.resolved_hyperparams`); :func:`validate_hyperparams` checks
every key against the SB3 class's ``__init__`` and the common ones' ranges.
"""

from __future__ import annotations

from typing import Any

from bystander.dataconfig import check

__all__ = ["ALGO_DEFAULTS", "validate_hyperparams"]

ALGO_DEFAULTS: dict[str, dict[str, Any]] = {
    "ppo": {
        "n_steps": 16,  # x 128 worlds (train.n_envs): rollouts of 2048 env steps
        "batch_size": 512,
        "n_epochs": 4,
        "learning_rate": 1e-3,
        "gamma": 0.99,
        "gae_lambda": 0.95,
        "ent_coef": 0.01,
        "clip_range": 0.2,
    },
    "sac": {
        "learning_rate": 3e-4,
        "buffer_size": 100_000,
        "learning_starts": 1000,
        "batch_size": 256,
    },
    "dqn": {
        "learning_rate": 5e-4,
        "buffer_size": 50_000,
        "learning_starts": 1000,
        "batch_size": 64,
        "target_update_interval": 1000,
        "exploration_fraction": 0.3,
    },
}
"""Training defaults per algorithm; ``train.hyperparams`` overrides them key by key."""


# Arguments the training code sets itself; they may not come from ``train.hyperparams``.
_RESERVED_HYPERPARAMS = (
    "policy",
    "env",
    "seed",
    "device",
    "policy_kwargs",
    "tensorboard_log",
    "verbose",
    "_init_setup_model",
)


def validate_hyperparams(algo: str, hyperparams: dict[str, Any], path: str) -> None:
    """Check ``train.hyperparams`` against the SB3 class's ``__init__`` (imports SB3)."""
    import inspect

    from stable_baselines3 import DQN, PPO, SAC

    cls = {"ppo": PPO, "sac": SAC, "dqn": DQN}[algo]
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self", *_RESERVED_HYPERPARAMS}
    for k, v in hyperparams.items():
        if k not in allowed:
            raise ValueError(
                f"{path}.{k}: not an argument of {cls.__name__}; expected one of {sorted(allowed)}"
            )
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v != v:
            raise ValueError(f"{path}.{k}: expected a finite number, got {v!r}")
    for k in ("n_steps", "batch_size", "n_epochs"):
        if k in hyperparams:
            v = hyperparams[k]
            check(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                f"{path}.{k}",
                "an int >= 1",
                v,
            )
    if "learning_rate" in hyperparams:
        v = hyperparams["learning_rate"]
        check(
            isinstance(v, (int, float)) and v > 0,
            f"{path}.learning_rate",
            "a number > 0",
            v,
        )
    for k in ("gamma", "gae_lambda"):
        if k in hyperparams:
            v = hyperparams[k]
            check(
                isinstance(v, (int, float)) and 0 <= v <= 1,
                f"{path}.{k}",
                "a number in [0, 1]",
                v,
            )
