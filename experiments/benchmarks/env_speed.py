"""Single-env steps/s of ``bystander/Intersection-v0`` with a random policy, side by side
with highway-env's ``intersection-v0`` when highway-env is importable (and the ratio).

Usage::

    python experiments/benchmarks/env_speed.py [--seconds 10] [--config '{"action_type": "continuous"}']
        [--worlds 1024]

Both envs run in this process, one after the other, each for ``--seconds`` of wall time
(episodes reset when they end; the reset time counts). ``--worlds N`` also times the
simulator core stepping N worlds per call (world-steps/s), the shape a batched VecEnv uses.
Install highway-env for the comparison without touching pygame-ce:
``pip install --no-deps highway-env``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

import bystander.envs  # noqa: E402, F401


def steps_per_second(env: gym.Env, seconds: float, seed: int = 0) -> tuple[float, int]:
    """Random-policy steps/s of one env over ``seconds`` of wall time; returns (rate, steps)."""
    env.action_space.seed(seed)
    env.reset(seed=seed)
    steps = 0
    start = time.perf_counter()
    while True:
        for _ in range(10):
            _, _, term, trunc, _ = env.step(env.action_space.sample())
            steps += 1
            if term or trunc:
                env.reset()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return steps / elapsed, steps


def world_steps_per_second(config: dict, n_worlds: int, seconds: float) -> float:
    from bystander.envs.intersection.config import IntersectionConfig
    from bystander.envs.intersection.sim import IntersectionSim

    cfg = IntersectionConfig.from_dict(config)
    sim = IntersectionSim(cfg, n_worlds=n_worlds, seed=0)
    sim.reset(seed=0)
    rng = np.random.default_rng(0)
    steps = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        if cfg.action_type == "discrete":
            actions = rng.integers(0, 6, size=(n_worlds, cfg.n_controlled))
        else:
            actions = rng.uniform(-1, 1, size=(n_worlds, cfg.n_controlled, 2))
        out = sim.step(actions)
        done = out.terminated.any(1) | out.truncated
        if done.any():
            sim.reset(worlds=np.nonzero(done)[0])
        steps += 1
    return steps * n_worlds / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="wall time per env [s]")
    parser.add_argument("--config", type=json.loads, default={}, help="JSON config overrides")
    parser.add_argument("--worlds", type=int, default=0, help="also time N worlds per sim call")
    args = parser.parse_args()

    ours_env = gym.make("bystander/Intersection-v0", config=args.config)
    ours, n = steps_per_second(ours_env, args.seconds)
    print(f"bystander/Intersection-v0   {ours:10.1f} steps/s  ({n} steps, config={args.config})")
    try:
        import highway_env  # noqa: F401
    except ImportError:
        print("highway-env not installed: `pip install --no-deps highway-env` to compare")
    else:
        theirs, n = steps_per_second(gym.make("intersection-v0"), args.seconds)
        print(f"highway-env intersection-v0 {theirs:10.1f} steps/s  ({n} steps)")
        print(f"ratio (ours / highway-env)  {ours / theirs:10.1f}x")
    if args.worlds > 0:
        rate = world_steps_per_second(args.config, args.worlds, args.seconds)
        print(f"IntersectionSim, {args.worlds} worlds per call: {rate:10.1f} world-steps/s")


if __name__ == "__main__":
    main()
