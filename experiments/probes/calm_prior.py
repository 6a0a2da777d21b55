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

Not a library feature: the policy class lives in this script, so the saved model loads
only where it is importable (``load_policy`` after importing this module).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.policies import ActorCriticPolicy

import bystander.agents.training as training
from bystander.config import load_config

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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--prior", default=",".join(map(str, DEFAULT_PRIOR)))
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    prior = np.array([float(x) for x in args.prior.split(",")])
    if prior.shape != (6,) or (prior <= 0).any() or abs(prior.sum() - 1) > 1e-6:
        raise ValueError(f"--prior: expected 6 positive probabilities summing to 1, got {prior}")
    CalmPriorPolicy.prior = tuple(prior.tolist())
    cfg = load_config(overrides=args.sets)

    def build_model(cfg: Any, venv: Any) -> Any:
        hp = training.resolved_hyperparams(cfg.train)
        return training.ALGO_CLASSES[cfg.train.algo](CalmPriorPolicy, venv, seed=cfg.train.seed, device=cfg.train.device,
                           policy_kwargs={"net_arch": list(cfg.train.net_arch)}, verbose=0,
                           **hp)  # fmt: skip

    training.build_model = build_model
    result = training.train(cfg, run_dir=args.run_dir)
    print(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
