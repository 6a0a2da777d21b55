"""The research scenario (issue #11, item 4), measured: route choice, time limit, observers.

Reads the ``env.config`` of a run config (default ``experiments/configs/research_grid.yaml``)
and prints, for that map and traffic:

1. **Route choice.** For every entry / exit pair a car may be sent on (reachable, not a
   U-turn: the simulator's own rule), the routes on the lane graph (entry link ->
   connectors -> links -> exit link, no U-turns) whose length to the goal point is
   within ``--slack`` (default 10 %) of the shortest; the fraction of pairs with at
   least 2 such routes, and the mean number of routes per pair.
2. **Time limit.** The longest shortest route over all pairs [m], the time it takes at
   ``--speed`` (default 9 m/s, a typical scripted speed), and the episode limit
   ``max_cycles * dt`` [s].
3. **Observers.** ``--episodes`` held-out episodes (seeds 10 000, 10 001, ...) of the
   scripted shortest-route driver ``speed:<--speed>`` on the batched simulator: the
   fraction of the ego's steps on which at least 2 road users see it (range, field of
   view, no building in the sight line), the mean number that see it, the success
   rate and the longest successful episode [s].

Usage::

    python experiments/benchmarks/research_grid.py
    python experiments/benchmarks/research_grid.py --config experiments/configs/default.yaml
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np

from bystander.agents.scripted import scripted_driver
from bystander.config import load_config
from bystander.envs.intersection.config import IntersectionConfig
from bystander.envs.intersection.road import RoadNetwork
from bystander.envs.intersection.vec_env import IntersectionVecEnv

__all__ = ["route_choice", "observer_coverage", "main"]

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO / "experiments" / "configs" / "research_grid.yaml"


def _routes_within(road: RoadNetwork, entry: int, exit_k: int, bound: float) -> list[float]:
    """Lengths [m] of the lane routes from link ``entry`` to exit ``exit_k``'s goal point
    no longer than ``bound`` (depth-first search, pruned by the shortest remaining
    distance ``dist_to_goal``)."""
    goal_seg = int(road.exits[exit_k])
    out: list[float] = []
    stack: list[tuple[int, float]] = [(entry, 0.0)]
    while stack:
        seg, done = stack.pop()
        if seg == goal_seg:
            out.append(done + float(road.dist_to_goal[exit_k, seg]))
            continue
        for nxt in {int(s) for s in road.succ[seg] if s >= 0}:
            if done + road.length[seg] + road.dist_to_goal[exit_k, nxt] <= bound + 1e-6:
                stack.append((nxt, done + float(road.length[seg])))
    return out


def route_choice(config: IntersectionConfig, slack: float = 0.10) -> dict[str, float]:
    """Route-choice figures of ``config``'s map (see the module doc, item 1).

    Returns:
        ``pairs``, ``pairs_with_alternatives`` (>= 2 routes within ``slack``), their
        ``fraction``, ``mean_routes`` per pair, ``longest_shortest_m`` [m].
    """
    road = RoadNetwork(config)
    meta = road.meta
    counts: list[int] = []
    longest = 0.0
    for entry in road.entries.tolist():
        for k, ex in enumerate(road.exits.tolist()):
            shortest = float(road.dist_to_goal[k, entry])
            if not math.isfinite(shortest) or meta[ex][1:] == meta[entry][1:]:
                continue  # unreachable or a U-turn: never a destination
            longest = max(longest, shortest)
            counts.append(len(_routes_within(road, entry, k, (1.0 + slack) * shortest)))
    arr = np.array(counts)
    return {
        "pairs": float(len(arr)),
        "pairs_with_alternatives": float((arr >= 2).sum()),
        "fraction": float((arr >= 2).mean()) if len(arr) else math.nan,
        "mean_routes": float(arr.mean()) if len(arr) else math.nan,
        "longest_shortest_m": longest,
    }


def observer_coverage(
    config: dict[str, Any], driver: str, episodes: int, seed: int = 10_000
) -> dict[str, float]:
    """Scripted ``driver`` on ``episodes`` worlds (world ``i`` seeded ``seed + i``), one
    episode each: observer coverage of the ego's steps (module doc, item 3)."""
    venv = IntersectionVecEnv(episodes, config, seed=seed, info_mode="lean")
    policy = scripted_driver(driver, config)
    dt = float(venv.sim.config.dt)
    open_ = np.ones(episodes, bool)
    seen_counts: list[np.ndarray] = []
    success = np.zeros(episodes, bool)
    steps = np.zeros(episodes, np.int64)
    try:
        obs = venv.reset()
        while open_.any():
            actions, _ = policy.predict(obs)
            obs, _, dones, _ = venv.step(actions)
            steps += open_
            # observers of the ego after the step (a finished world is already reset:
            # its step's observers are not counted)
            seen = venv.sim.visibility()[:, 0, :].sum(axis=1)
            live = open_ & ~np.asarray(dones)
            seen_counts.append(seen[live])
            arrived = np.asarray(venv.step_arrays["arrived"], bool)
            success |= open_ & arrived
            open_ &= ~np.asarray(dones)
    finally:
        venv.close()
    seen = np.concatenate(seen_counts)
    return {
        "episodes": float(episodes),
        "steps": float(len(seen)),
        "at_least_2_seen": float((seen >= 2).mean()),
        "mean_seen": float(seen.mean()),
        "success": float(success.mean()),
        "longest_success_s": float(steps[success].max() * dt) if success.any() else math.nan,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="run config YAML")
    p.add_argument("--slack", type=float, default=0.10, help="route length slack (0.10: 10 %%)")
    p.add_argument("--speed", type=float, default=9.0, help="typical speed [m/s]")
    p.add_argument("--episodes", type=int, default=200, help="scripted episodes")
    args = p.parse_args(argv)
    env_cfg = dict(load_config(args.config).env.config)
    config = IntersectionConfig.from_dict(env_cfg)
    rc = route_choice(config, args.slack)
    limit_s = config.max_cycles * config.dt
    drive_s = rc["longest_shortest_m"] / args.speed
    cov = observer_coverage(env_cfg, f"speed:{args.speed:g}", args.episodes)
    print(
        f"research scenario: {args.config.relative_to(REPO) if args.config.is_relative_to(REPO) else args.config}"
    )
    print(f"  grid {config.grid}, block {config.block_length:g} m, arm {config.arm_length:g} m, "
          f"max_cycles {config.max_cycles} (dt {config.dt:g} s)")  # fmt: skip
    print(f"route choice: {rc['pairs_with_alternatives']:.0f} of {rc['pairs']:.0f} entry/exit "
          f"pairs ({rc['fraction']:.0%}) have >= 2 routes within {args.slack:.0%} of the "
          f"shortest; {rc['mean_routes']:.2f} routes per pair on average")  # fmt: skip
    print(f"time limit: longest shortest route {rc['longest_shortest_m']:.0f} m = "
          f"{drive_s:.1f} s at {args.speed:g} m/s; episode limit {limit_s:.1f} s "
          f"({limit_s / drive_s:.2f}x)")  # fmt: skip
    print(f"observers (scripted speed:{args.speed:g}, {args.episodes} episodes, "
          f"{cov['steps']:.0f} ego steps): >= 2 observers see the ego on "
          f"{cov['at_least_2_seen']:.0%} of steps, {cov['mean_seen']:.2f} on average; "
          f"success {cov['success']:.0%}, longest success {cov['longest_success_s']:.1f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
