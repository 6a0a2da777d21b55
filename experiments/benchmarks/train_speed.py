"""Training throughput: SB3 PPO env-steps/s on the intersection vs CartPole-v1, same run.

Both use the same trainer (``bystander.agents.training.Trainer``) with the same
hyperparameters, number of envs, vec env kind and torch threads; the intersection
runs with its full training stack (predictability wrapper + constant-velocity
predictors, and the Lagrangian constraint wrapper with its per-rollout multiplier
update), CartPole with none. With ``train.vec_env=batched`` (the default) our envs
step in one vectorised simulator while CartPole uses SB3's DummyVecEnv. Runs are interleaved (``--rounds``) and the median of
each is reported, so that load on a shared machine hits both alike.

    python experiments/benchmarks/train_speed.py [--steps 16384] [--rounds 3]
        [--set KEY=VALUE ...]   # overrides applied to both runs (e.g. train.n_envs=4)

Target: intersection >= 0.7x CartPole's throughput.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ppo_speed import ratio_table  # noqa: E402

from bystander.agents.training import Trainer
from bystander.config import load_config, resolved_hyperparams

TARGET = 0.7


def measure(overrides: list[str], steps: int, runs_dir: str) -> float:
    """Env steps per second of ``Trainer.train`` for ``steps`` steps (setup excluded)."""
    cfg = load_config(
        overrides=[
            f"runs_dir={runs_dir}",
            f"train.total_timesteps={steps}",
            "train.tensorboard=false",
            "train.progress_bar=false",
            *overrides,
        ]
    )
    trainer = Trainer(cfg)
    try:
        return trainer.train().steps_per_s
    finally:
        trainer.close()


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=65536, help="env steps per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved measurements of each")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ours_cfg = ["constraint.mode=lagrangian", *args.overrides]
    cart_cfg = [
        "env.id=CartPole-v1",
        "env.config={}",
        "predictor.kind=none",
        "constraint.mode=none",
        "constraint.channel=null",
        *args.overrides,
        "train.vec_env=dummy",  # CartPole has no batched simulator: one env object per env
    ]
    cfg = load_config(overrides=ours_cfg)
    setup = (
        f"PPO, n_envs={cfg.train.n_envs} ({cfg.train.vec_env} for the intersection, dummy for "
        f"CartPole), hyperparameters {resolved_hyperparams(cfg.train)}, {args.steps} steps x "
        f"{args.rounds} rounds, median"
    )
    print(setup)
    ours, cart = [], []
    with tempfile.TemporaryDirectory() as tmp:
        measure(cart_cfg, 2048, tmp)  # warm-up (imports, first torch calls)
        for r in range(args.rounds):
            ours.append(measure(ours_cfg, args.steps, tmp))
            cart.append(measure(cart_cfg, args.steps, tmp))
            print(
                f"round {r + 1}: intersection {ours[-1]:7.0f} steps/s   CartPole-v1 {cart[-1]:7.0f} steps/s"
            )
    out = ratio_table(
        f"Full `bystander train` path vs CartPole-v1 ({setup})",
        (
            "run",
            "intersection, Lagrangian constraint, cv predictability",
            "CartPole-v1, no constraint",
        ),
        ours,
        cart,
        TARGET,
    )
    print(out)
    return out


if __name__ == "__main__":
    main()
