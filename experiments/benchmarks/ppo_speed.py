"""SB3 PPO training throughput on the batched intersection env vs CartPole-v1, same run.

Both learners use the same SB3 ``PPO("MlpPolicy")`` hyperparameters (the project's PPO
defaults, :data:`bystander.hyperparams.ALGO_DEFAULTS`), the same number of envs (default:
the training default ``train.n_envs``), one torch thread and ``VecMonitor``. The
intersection runs as :func:`~bystander.agents.stack.make_intersection_vec_env`
builds it for training, on the training env config
(:data:`bystander.config.DEFAULT_ENV_CONFIG`): ``IntersectionVecEnv`` (N worlds in one
simulator call, lean infos) + the constant-velocity predictability wrapper (array
path) + ``VecMonitor``; CartPole as SB3's
``DummyVecEnv`` of N ``CartPole-v1``. Runs are interleaved (``--rounds``) and the median
of each is reported. Setup (model construction) is excluded; a short warm-up learn
runs first.

The full ``bystander train`` path (config, constraint wrappers, callbacks) is timed by
``train_speed.py``; this script isolates env + learner.

Usage::

    python experiments/benchmarks/ppo_speed.py [--steps 16384] [--n-envs 16] [--rounds 3]

Target (issue 6): PPO on the batched env >= 0.8x its throughput on CartPole.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym  # noqa: E402
import torch  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor  # noqa: E402

from bystander.agents.stack import make_intersection_vec_env  # noqa: E402
from bystander.config import DEFAULT_ENV_CONFIG, TrainSection  # noqa: E402
from bystander.hyperparams import ALGO_DEFAULTS  # noqa: E402

TARGET = 0.8


def make_env(kind: str, n_envs: int, seed: int) -> VecEnv:
    """``"intersection"`` (batched + cv predictability) or ``"cartpole"`` (DummyVecEnv)."""
    if kind == "intersection":
        from bystander.agents.predictors import ConstantVelocityPredictor

        return make_intersection_vec_env(
            n_envs, DEFAULT_ENV_CONFIG, seed=seed, predictors=ConstantVelocityPredictor()
        )
    if kind == "cartpole":
        venv = DummyVecEnv([lambda: gym.make("CartPole-v1")] * n_envs)
        venv.seed(seed)
        return VecMonitor(venv)
    raise ValueError(f"kind: expected 'intersection' or 'cartpole', got {kind!r}")


def measure(kind: str, steps: int, n_envs: int, hyper: dict, seed: int = 0) -> float:
    """Env steps/s of ``PPO.learn(steps)`` (model construction and a warm-up excluded)."""
    model = PPO("MlpPolicy", make_env(kind, n_envs, seed), seed=seed, device="cpu", **hyper)
    model.learn(hyper["n_steps"] * n_envs)  # warm-up: first rollout + update
    t0 = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    rate = steps / (time.perf_counter() - t0)
    model.get_env().close()
    return rate


def ratio_table(
    title: str, labels: tuple[str, str, str], ours: list[float], cart: list[float], target: float
) -> str:
    """Markdown section: medians of our and CartPole's env-steps/s, their ratio and the
    verdict against ``target``. ``labels``: (first column, our row, CartPole's row)."""
    o, c = statistics.median(ours), statistics.median(cart)
    ratio = o / c
    return "\n".join(
        [
            f"### {title}",
            "",
            f"| {labels[0]} | PPO env-steps/s | ratio to CartPole |",
            "|---|---|---|",
            f"| {labels[1]} | {o:,.0f} | {ratio:.2f}x |",
            f"| {labels[2]} | {c:,.0f} | 1.00x |",
            "",
            f"Target >= {target}x: {'met' if ratio >= target else 'MISSED'} ({ratio:.2f}x).",
        ]
    )


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=16384, help="env steps per measurement")
    ap.add_argument(
        "--n-envs", type=int, default=TrainSection().n_envs, help="envs (worlds) per learner"
    )
    ap.add_argument("--rounds", type=int, default=3, help="interleaved measurements of each")
    ap.add_argument("--n-steps", type=int, default=None, help="PPO n_steps (default: project's)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    hyper = dict(ALGO_DEFAULTS["ppo"])
    if args.n_steps is not None:
        hyper["n_steps"] = args.n_steps
    ours, cart = [], []
    for _ in range(args.rounds):
        ours.append(measure("intersection", args.steps, args.n_envs, hyper))
        cart.append(measure("cartpole", args.steps, args.n_envs, hyper))
    out = ratio_table(
        f"SB3 PPO training throughput ({args.n_envs} envs, {args.steps} steps x "
        f"{args.rounds} rounds, median; hyperparameters {hyper})",
        ("env", "bystander batched intersection + cv predictability", "CartPole-v1 (DummyVecEnv)"),
        ours,
        cart,
        TARGET,
    )
    print(out)
    return out


if __name__ == "__main__":
    main()
