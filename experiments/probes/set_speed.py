"""Probe (issue 12): a continuous set speed with state-dependent exploration (gSDE).

    python experiments/probes/set_speed.py RUN_DIR [--set KEY=VALUE ...]

The discrete egos lock into one of the cruise modes the target-speed steps make (3, 6,
9, 12 m/s; README, "What the ego pays for its own exploration"). Here the policy's
action is one number ``a`` in [-1, 1], a set speed ``(a + 1) / 2 * ego_max_speed`` [m/s],
squashed by tanh in the policy (SB3's ``squash_output`` with gSDE: a linear Gaussian
policy clipped to the box left the box within 65k steps, at 12 m/s, where every sample
maps to the same speed and no gradient is left), and
the turns follow the navigation (the env's default when no turn is chosen): speed is a
continuous knob, and PPO can explore it with gSDE (``train.hyperparams.use_sde=true``),
whose noise is a function of the state held for ``sde_sample_freq`` steps (-1: one
rollout) instead of fresh noise at every step.

The set speed is reached through the env's meta-actions: each step presses SLOWER or
FASTER when the target speed is more than half a ``speed_step`` away from it, else
KEEP, so run it with a fine ``env.config.speed_step`` (for example 0.5 m/s: the target
moves at 5 m/s per second, faster than the car can follow). The wrapper sits under the
trainer's VecEnv stack and under its held-out evaluations. Trains ``bystander train``'s
run (``--set`` overrides on the defaults) into RUN_DIR.

Not a library feature: the action mapping lives in this script.
"""

from __future__ import annotations

import argparse
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

import bystander.agents.heldout as heldout
import bystander.agents.training as training
from bystander.config import load_config
from bystander.envs.intersection.sim import META_ACTIONS

SLOWER, KEEP, FASTER = (META_ACTIONS.index(a) for a in ("SLOWER", "KEEP", "FASTER"))
TARGET_FEATURE = 6  # observation feature: target speed / ego_max_speed


def meta_from_set_speed(actions: Any, obs: np.ndarray, max_speed: float, step: float) -> np.ndarray:
    """Meta-actions ``(N,)`` that move each car's target speed toward its set speed."""
    a = np.clip(np.asarray(actions, float).reshape(len(obs)), -1.0, 1.0)
    want = (a + 1.0) / 2.0 * max_speed
    target = obs[:, TARGET_FEATURE] * max_speed
    meta = np.full(len(obs), KEEP, dtype=np.int64)
    meta[want > target + step / 2] = FASTER
    meta[want < target - step / 2] = SLOWER
    return meta


class SetSpeedActions(VecEnvWrapper):
    """``Box(-1, 1, (1,))`` set-speed actions over a meta-action VecEnv."""

    def __init__(self, venv: VecEnv, max_speed: float, step: float) -> None:
        super().__init__(venv, action_space=gym.spaces.Box(-1.0, 1.0, (1,), dtype=np.float32))
        self.max_speed, self.step_ = max_speed, step
        self._obs: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        self._obs = self.venv.reset()
        return self._obs

    def step_async(self, actions: np.ndarray) -> None:
        assert self._obs is not None, "step before reset"
        self.venv.step_async(meta_from_set_speed(actions, self._obs, self.max_speed, self.step_))

    def step_wait(self):  # noqa: ANN201 - SB3's VecEnvStepReturn
        obs, rewards, dones, infos = self.venv.step_wait()
        self._obs = obs
        return obs, rewards, dones, infos


class SetSpeedPolicy:
    """A set-speed policy seen as a meta-action one (for the held-out evaluations)."""

    def __init__(self, policy: Any, max_speed: float, step: float) -> None:
        self.policy, self.max_speed, self.step = policy, max_speed, step

    def predict(self, obs: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:  # fmt: skip
        actions, _ = self.policy.predict(obs, deterministic=deterministic)
        return meta_from_set_speed(actions, obs, self.max_speed, self.step), None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    cfg = load_config(overrides=args.sets)
    max_speed = float(cfg.env.config.get("ego_max_speed", 12.0))
    step = float(cfg.env.config.get("speed_step", 3.0))
    build_vec_env, evaluate_batched = training.build_vec_env, heldout.evaluate_batched

    def wrapped_vec_env(*a: Any, **kw: Any) -> VecEnv:
        return SetSpeedActions(build_vec_env(*a, **kw), max_speed, step)

    def wrapped_evaluate(policy: Any, *a: Any, **kw: Any) -> Any:
        return evaluate_batched(SetSpeedPolicy(policy, max_speed, step), *a, **kw)

    build_model = training.build_model

    def squashed_model(cfg: Any, venv: VecEnv) -> Any:
        use_sde = bool(training.resolved_hyperparams(cfg.train).get("use_sde"))
        return build_model(cfg, venv, policy_kwargs={"squash_output": use_sde})

    training.build_vec_env, heldout.evaluate_batched = wrapped_vec_env, wrapped_evaluate
    training.build_model = squashed_model
    print(training.train(cfg, run_dir=args.run_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
