"""Environments and the shared predictability wrappers.

Importing this package registers the Gymnasium ids:

- ``bystander/Intersection-v0``: single-agent view of the intersection (one ego car,
  everything else scripted); see :mod:`bystander.envs.intersection`.
- ``bystander/Text-v0``: turn-level text environment (prompt in, completion out);
  see :mod:`bystander.envs.text_v0`.
"""

from __future__ import annotations

import gymnasium

from bystander.envs.contract import (
    EGO_STEP_KEY,
    FRAMES,
    EgoBatch,
    EgoStep,
    Predictor,
    Views,
    step_arrays,
)

__all__ = ["EGO_STEP_KEY", "FRAMES", "EgoBatch", "EgoStep", "Predictor", "Views", "step_arrays"]


def _register(env_id: str, entry_point: str, vector_entry_point: str | None = None) -> None:
    if env_id not in gymnasium.registry:
        gymnasium.register(
            id=env_id, entry_point=entry_point, vector_entry_point=vector_entry_point
        )


def _register_pettingzoo() -> None:
    """``pettingzoo.make("parallel", "bystander/Intersection-v0")`` (and ``"aec"``), where
    PettingZoo has a registry (1.27 and later)."""
    import pettingzoo

    if not hasattr(pettingzoo, "register"):
        return
    for kind, factory in (("parallel", "parallel_env"), ("aec", "env")):
        registry = getattr(pettingzoo, f"{kind}_registry", {})
        if "bystander/Intersection-v0" not in registry:
            pettingzoo.register(
                kind, "bystander/Intersection-v0", f"bystander.envs.intersection_v0:{factory}"
            )


_register(
    "bystander/Intersection-v0",
    "bystander.envs.intersection.gym_env:IntersectionEnv",
    vector_entry_point="bystander.envs.intersection.gym_vector:IntersectionVectorEnv",
)
_register("bystander/Text-v0", "bystander.envs.text_v0:TextEnv")
_register_pettingzoo()
