"""Probe (issue 12): PPO regularised toward a calm prior instead of the uniform one.

    python experiments/probes/calm_prior.py RUN_DIR [--prior P0,...,P5] [--set KEY=VALUE ...]

PPO's entropy bonus ``ent_coef * H(pi)`` pulls the policy toward the uniform
distribution over the six meta-actions, which changes the target speed at a third of
the steps; the observers charge every such change (README, "What the ego pays for its
own exploration"). Here the bonus is replaced by ``-ent_coef * KL(pi || p0)`` with a
calm prior ``p0`` (default: SLOWER and FASTER 2 % each, KEEP 48 %, each turn 16 %): the
policy keeps exploring speed changes, rarely, and never freezes into a deterministic
policy. Trains ``bystander train``'s run (``--set`` overrides on the defaults) into
RUN_DIR, with the held-out evaluations and the multiplier of the config.

The README's runs (seed 0; add ``--prior 0.05,0.45,0.05,0.15,0.15,0.15`` for the 5 %
prior)::

    # lambda fixed at 1 from the start, 700k steps
    python experiments/probes/calm_prior.py runs/calm-l1 --set train.total_timesteps=700000 \
        --set eval.every=65536 --set eval.heldout_episodes=100 --set constraint.mode=lagrangian \
        --set constraint.cost_normalization=per_metre --set constraint.budget=0.2315 \
        --set constraint.credit_margin=0.3 --set constraint.lambda_init=1 \
        --set constraint.lambda_min=1 --set constraint.lambda_max=1 \
        --set train.hyperparams.gamma=0.998
    # probe 8's schedule at 0.2315, 1M steps
    python experiments/probes/calm_prior.py runs/calm-p8 --set train.total_timesteps=1000000 \
        --set eval.every=32768 --set eval.heldout_episodes=100 --set constraint.mode=lagrangian \
        --set constraint.cost_normalization=per_metre --set constraint.budget=0.2315 \
        --set constraint.signal=heldout --set constraint.lambda_step=relative \
        --set constraint.lambda_init=0.05 --set constraint.lambda_min=0.002 \
        --set constraint.lambda_lr=0.5 --set constraint.lambda_max=1.0 --set constraint.delay=6 \
        --set constraint.window=2 --set constraint.credit_margin=0.3 \
        --set train.hyperparams.gamma=0.998
    # unconstrained, 1M steps
    python experiments/probes/calm_prior.py runs/calm-ref --set train.total_timesteps=1000000 \
        --set eval.every=65536 --set eval.heldout_episodes=100 \
        --set constraint.cost_normalization=per_metre

``--random-start-target``: every training episode starts with a target speed drawn
uniformly from 0, ``speed_step``, ..., ``ego_max_speed`` (the env starts every episode at
6 m/s; the held-out evaluations keep that start). The ego then sees every cruise mode
from the first step, without paying the observers for the speed changes that would
reach it: exploration of modes by the start state rather than by the actions.

Not a library feature: the policy class lives in this script, so the saved model loads
only where it is importable (``load_policy`` after importing this module).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

import bystander.agents.training as training
from bystander.config import load_config
from bystander.envs.contract import find_layer
from bystander.envs.intersection.vec_env import IntersectionVecEnv

TARGET_FEATURE = 6  # observation feature: target speed / ego_max_speed

DEFAULT_PRIOR = (0.02, 0.48, 0.02, 0.16, 0.16, 0.16)


class CalmPriorPolicy(ActorCriticPolicy):
    """An ``MlpPolicy`` whose "entropy" is ``-KL(pi || prior)`` (what PPO's ``ent_coef``
    then weighs). ``prior``: ``(n_actions,)`` probabilities, set on the class."""

    prior: tuple[float, ...] = DEFAULT_PRIOR

    def evaluate_actions(self, obs: Any, actions: torch.Tensor):  # noqa: ANN201 - SB3's
        values, log_prob, _ = super().evaluate_actions(obs, actions)
        probs = self.get_distribution(obs).distribution.probs
        log_prior = torch.log(torch.as_tensor(self.prior, dtype=probs.dtype))
        neg_kl = -(probs * (torch.log(probs.clamp_min(1e-12)) - log_prior)).sum(-1)
        return values, log_prob, neg_kl


class RandomStartTarget(VecEnvWrapper):
    """Each new episode's target speed drawn from the cruise levels (one controlled car
    per world); the first observation's target-speed feature is rewritten to match."""

    def __init__(self, venv: VecEnv, seed: int) -> None:
        super().__init__(venv)
        self.sim = find_layer(venv, IntersectionVecEnv).sim
        cfg = self.sim.config
        n = int(np.floor(cfg.ego_max_speed / cfg.speed_step + 1e-9))
        self.levels = np.arange(n + 1) * cfg.speed_step
        self.rng = np.random.default_rng(seed)

    def _start(self, obs: np.ndarray, worlds: np.ndarray) -> np.ndarray:
        target = self.rng.choice(self.levels, len(worlds))
        self.sim.target_v[worlds, 0] = target
        obs = obs.copy()
        obs[worlds, TARGET_FEATURE] = target / self.sim.config.ego_max_speed
        return obs

    def reset(self) -> np.ndarray:
        obs = self.venv.reset()
        return self._start(obs, np.arange(self.num_envs))

    def step_wait(self):  # noqa: ANN201 - SB3's VecEnvStepReturn
        obs, rewards, dones, infos = self.venv.step_wait()
        return self._start(obs, np.flatnonzero(dones)), rewards, dones, infos


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--prior", default=",".join(map(str, DEFAULT_PRIOR)))
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--random-start-target", action="store_true")
    args = p.parse_args(argv)
    prior = np.array([float(x) for x in args.prior.split(",")])
    if prior.shape != (6,) or (prior <= 0).any() or abs(prior.sum() - 1) > 1e-6:
        raise ValueError(f"--prior: expected 6 positive probabilities summing to 1, got {prior}")
    CalmPriorPolicy.prior = tuple(prior.tolist())
    cfg = load_config(overrides=args.sets)

    build = training.build_model

    def build_model(cfg: Any, venv: Any) -> Any:
        return build(cfg, venv, policy=CalmPriorPolicy)

    training.build_model = build_model
    if args.random_start_target:
        build_vec_env = training.build_vec_env

        def wrapped_vec_env(cfg: Any, *a: Any, **kw: Any) -> VecEnv:
            return RandomStartTarget(build_vec_env(cfg, *a, **kw), cfg.train.seed)

        training.build_vec_env = wrapped_vec_env
    result = training.train(cfg, run_dir=args.run_dir)
    print(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
