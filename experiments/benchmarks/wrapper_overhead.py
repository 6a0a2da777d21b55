"""Step-time overhead of the predictability wrappers on the intersection.

Runs the bare ``bystander/Intersection-v0`` env and the same env wrapped in
:class:`~bystander.envs.predictability.PredictabilityReward` (constant-velocity and
learned predictors) with the same seeds and the same scripted actions, interleaving
the variants within one process, and prints the mean step time of each relative to
the bare env (targets: 1.3x with constant velocity, 2x with the learned predictor).
Each figure is the best (minimum) of ``--repeats`` interleaved runs, which is the
least disturbed by other processes on a shared machine.
With ``--worlds N > 1`` it also times SB3 ``DummyVecEnv`` of N envs, bare vs wrapped
with :class:`~bystander.envs.vector.PredictabilityVecWrapper` (one predictor
call per step for all worlds).

Usage::

    python experiments/benchmarks/wrapper_overhead.py --steps 600 --repeats 3 --worlds 8
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np

import bystander.envs  # noqa: F401 - registers the env ids
from bystander.agents.learned import LearnedPredictor
from bystander.agents.predictors import ConstantVelocityPredictor
from bystander.envs.predictability import PredictabilityReward

ENV_ID = "bystander/Intersection-v0"


def policy(k: int) -> int:
    """Stop-and-go: FASTER for 10 steps, SLOWER for 10 (discrete actions 2 / 0)."""
    return 2 if (k // 10) % 2 == 0 else 0


def time_single(make: Callable[[], gym.Env], steps: int, seed: int) -> float:
    """Mean seconds per ``step`` over ``steps`` steps (resets excluded)."""
    env = make()
    env.reset(seed=seed)
    total, episode, k = 0.0, 0, 0
    for _ in range(steps):
        action = policy(k)
        t0 = time.perf_counter()
        _, _, term, trunc, _ = env.step(action)
        total += time.perf_counter() - t0
        k += 1
        if term or trunc:
            episode += 1
            env.reset(seed=seed + episode)
            k = 0
    env.close()
    return total / steps


def time_vec(wrap: Callable | None, n: int, steps: int, seed: int) -> float:
    """Mean seconds per vectorised ``step`` of ``n`` worlds (auto-resets included)."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    venv = DummyVecEnv([lambda: gym.make(ENV_ID) for _ in range(n)])
    venv.seed(seed)
    if wrap is not None:
        venv = wrap(venv)
    venv.reset()
    t0 = time.perf_counter()
    for k in range(steps):
        venv.step(np.full(n, policy(k)))
    elapsed = time.perf_counter() - t0
    venv.close()
    return elapsed / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600, help="steps per timing run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats")
    parser.add_argument("--worlds", type=int, default=8, help="vectorised worlds (1: skip)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass

    variants: dict[str, Callable[[], gym.Env]] = {
        "bare": lambda: gym.make(ENV_ID),
        "constant velocity": lambda: PredictabilityReward(
            gym.make(ENV_ID), ConstantVelocityPredictor()
        ),
        "learned (mlp)": lambda: PredictabilityReward(gym.make(ENV_ID), LearnedPredictor(seed=0)),
        "learned (gru)": lambda: PredictabilityReward(
            gym.make(ENV_ID), LearnedPredictor(arch="gru", seed=0)
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.repeats):
        for name, make in variants.items():
            times[name].append(time_single(make, args.steps, args.seed + 1000 * r))
    bare = min(times["bare"])
    print(f"single env, {args.steps} steps, best of {args.repeats} interleaved repeats:")
    for name, ts in times.items():
        t = min(ts)
        print(f"  {name:20s} {1e3 * t:8.3f} ms/step   {t / bare:5.2f}x bare")

    if args.worlds > 1:
        from bystander.envs.vector import PredictabilityVecWrapper

        vec = {
            "bare": None,
            "constant velocity": lambda v: PredictabilityVecWrapper(v, ConstantVelocityPredictor()),
            "learned (mlp)": lambda v: PredictabilityVecWrapper(v, LearnedPredictor(seed=0)),
        }
        vtimes: dict[str, list[float]] = {name: [] for name in vec}
        for r in range(args.repeats):
            for name, wrap in vec.items():
                vtimes[name].append(
                    time_vec(wrap, args.worlds, args.steps // 2, args.seed + 1000 * r)
                )
        vbare = min(vtimes["bare"])
        print(
            f"DummyVecEnv x {args.worlds} worlds, {args.steps // 2} steps, best of {args.repeats}:"
        )
        for name, ts in vtimes.items():
            t = min(ts)
            print(f"  {name:20s} {1e3 * t:8.3f} ms/step   {t / vbare:5.2f}x bare")


if __name__ == "__main__":
    main()
