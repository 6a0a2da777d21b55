"""Steady-state throughput, resets included: ours vs EnvPool and highway-env, one table.

Every row runs a random policy for a warm-up of one ``max_cycles`` episode length (the
worlds' episodes drift out of phase; compilation and caches settle), then times at least
``--episodes`` episode lengths per world (``max_cycles`` steps; most episodes end earlier
by arrival or crash, so every world goes through several resets) and at least
``--seconds`` of wall time. It prints steps per second (world-steps for batched rows)
and simulated seconds per second (steps/s x the simulated time of one step: ``dt =
0.1`` s for ours, ``1 / policy_frequency`` = 1 s for highway-env's ``intersection-v0``
and EnvPool's C++ port ``Intersection-v0``), and the ratios in simulated time.

Rows (``threads``: numba threads for ours, EnvPool's ``num_threads``):

- ``sim``: the simulator core (:class:`~bystander.envs.intersection.sim.IntersectionSim`
  step + reset of the finished worlds);
- ``vec+cv``: the training stack's env: :class:`IntersectionVecEnv` (lean infos) under
  ``PredictabilityVecWrapper`` with the constant-velocity predictor;
- ``gym vector``: ``gymnasium.make_vec("bystander/Intersection-v0", num_envs=N,
  vectorization_mode="vector_entry_point")``;
- ``single env``: ``gymnasium.make("bystander/Intersection-v0")``, one step per call;
- EnvPool ``Intersection-v0`` and highway-env ``intersection-v0`` when installed
  (``pip install -e .[bench]``; measuring only, never a dependency of the library).

Usage::

    python experiments/benchmarks/steady_state.py [--worlds 1024] [--threads 1 2]
        [--episodes 3] [--seconds 3] [--repeats 1] [--quick]

Goals (issue 15): ``vec+cv`` at N = 1024 on 2 threads >= 10x EnvPool in simulated
seconds per second; the single env >= 50x highway-env in simulated time.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import gymnasium as gym  # noqa: E402
import numba  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import bystander.envs  # noqa: E402, F401 - registers the env ids
from bystander.envs.intersection.config import IntersectionConfig  # noqa: E402

OUR_DT = IntersectionConfig().dt
MAX_CYCLES = IntersectionConfig().max_cycles


@dataclass
class Row:
    """One measured row: ``rate`` steps/s (world-steps for batched envs)."""

    name: str
    worlds: int
    threads: int
    rate: float
    dt: float
    episodes: float  # completed episodes per world while timed

    @property
    def sim_rate(self) -> float:
        """Simulated seconds per wall second."""
        return self.rate * self.dt


def _timed(step: Callable[[], int], n: int, warmup: int, min_steps: int, seconds: float):
    """Run ``step`` (returns episodes ended) ``warmup`` times, then time it at least
    ``min_steps`` times and ``seconds`` of wall time; returns (steps/s, episodes/world)."""
    for _ in range(warmup):
        step()
    ended, k = 0, 0
    t0 = time.perf_counter()
    while k < min_steps or time.perf_counter() - t0 < seconds:
        ended += step()
        k += 1
    return k * n / (time.perf_counter() - t0), ended / n


def ours(kind: str, n: int, threads: int, episodes: float, seconds: float) -> Row:
    """A bystander row: ``kind`` in ``sim``, ``vec+cv``, ``gym vector``, ``single env``."""
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    rng = np.random.default_rng(0)
    if kind == "sim":
        from bystander.envs.intersection.sim import IntersectionSim

        sim = IntersectionSim(IntersectionConfig(), n_worlds=n, seed=0)
        sim.reset()

        def step() -> int:
            out = sim.step(rng.integers(0, 6, size=(n, 1)))
            done = np.flatnonzero(out.terminated[:, 0] | out.truncated)
            if len(done):
                sim.reset(worlds=done)
            return len(done)

    elif kind == "vec+cv":
        from bystander.agents.predictors import ConstantVelocityPredictor
        from bystander.envs.intersection.vec_env import IntersectionVecEnv
        from bystander.envs.vector import PredictabilityVecWrapper

        venv = PredictabilityVecWrapper(
            IntersectionVecEnv(n, seed=0, info_mode="lean"), ConstantVelocityPredictor()
        )
        venv.reset()

        def step() -> int:
            return int(venv.step(rng.integers(0, 6, size=n))[2].sum())

    elif kind == "gym vector":
        envs = gym.make_vec(
            "bystander/Intersection-v0", num_envs=n, vectorization_mode="vector_entry_point"
        )
        envs.reset(seed=0)

        def step() -> int:
            _, _, term, trunc, _ = envs.step(rng.integers(0, 6, size=n))
            return int((term | trunc).sum())

    else:  # single env
        env = gym.make("bystander/Intersection-v0")
        env.reset(seed=0)

        def step() -> int:
            _, _, term, trunc, _ = env.step(int(rng.integers(6)))
            if term or trunc:
                env.reset()
            return int(term or trunc)

    rate, eps = _timed(step, n, MAX_CYCLES, int(episodes * MAX_CYCLES), seconds)
    return Row(f"bystander {kind}", n, threads, rate, OUR_DT, eps)


def envpool_row(n: int, threads: int, episodes: float, seconds: float) -> Row | None:
    """EnvPool's ``Intersection-v0`` (auto-reset inside), or None when not installed."""
    try:
        import envpool
    except ImportError:
        return None
    env = envpool.make("Intersection-v0", env_type="gymnasium", num_envs=n, num_threads=threads)
    cfg = envpool.make_spec("Intersection-v0").config
    env.reset()
    rng = np.random.default_rng(0)
    n_actions = env.action_space.n

    def step() -> int:
        _, _, term, trunc, _ = env.step(rng.integers(0, n_actions, size=n))
        return int((term | trunc).sum())

    length = cfg.max_episode_steps
    rate, eps = _timed(step, n, length, int(episodes * length), seconds)
    env.close()
    return Row("EnvPool Intersection-v0", n, threads, rate, 1.0 / cfg.policy_frequency, eps)


def highway_row(episodes: float, seconds: float) -> Row | None:
    """highway-env's ``intersection-v0`` (one env), or None when not installed."""
    try:
        import highway_env  # noqa: F401
    except ImportError:
        return None
    env = gym.make("intersection-v0")
    env.reset(seed=0)
    env.action_space.seed(0)
    cfg = env.unwrapped.config

    def step() -> int:
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            env.reset()
        return int(term or trunc)

    length = int(cfg["duration"] * cfg["policy_frequency"])
    rate, eps = _timed(step, 1, 2, int(episodes * length), seconds)
    return Row("highway-env intersection-v0", 1, 1, rate, 1.0 / cfg["policy_frequency"], eps)


def measure(
    worlds: int, threads: list[int], episodes: float, seconds: float, repeats: int
) -> list[Row]:
    """Every row, best of ``repeats`` (rows of one repeat run one after the other)."""
    plan: list[Callable[[], Row | None]] = []
    for t in threads:
        plan += [
            lambda t=t: ours("sim", worlds, t, episodes, seconds),
            lambda t=t: ours("vec+cv", worlds, t, episodes, seconds),
        ]
    top = max(threads)
    for n in sorted({64, worlds}):
        plan.append(lambda n=n: ours("gym vector", n, top, episodes, seconds))
    plan.append(lambda: ours("single env", 1, 1, episodes, seconds))
    for n in sorted({64, worlds}):
        plan.append(lambda n=n: envpool_row(n, top, episodes, seconds))
    plan.append(lambda: highway_row(episodes, seconds))
    best: dict[tuple, Row] = {}
    for _ in range(repeats):
        for make in plan:
            row = make()
            if row is None:
                continue
            key = (row.name, row.worlds, row.threads)
            if key not in best or row.rate > best[key].rate:
                best[key] = row
    return list(best.values())


def table(rows: list[Row], worlds: int) -> str:
    """Markdown table with ratios in simulated time, and the goals of issue 15."""
    pool = [r for r in rows if r.name.startswith("EnvPool")]
    ep = max(pool, key=lambda r: r.sim_rate) if pool else None
    hw = next((r for r in rows if r.name.startswith("highway")), None)
    lines = [
        "| env | N | threads | steps/s | sim s / step | simulated s / s | episodes / world timed"
        " | vs EnvPool | vs highway-env |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        vs_ep = f"{r.sim_rate / ep.sim_rate:.1f}x" if ep else "-"
        vs_hw = f"{r.sim_rate / hw.sim_rate:.0f}x" if hw else "-"
        lines.append(
            f"| {r.name} | {r.worlds} | {r.threads} | {r.rate:,.0f} | {r.dt:g} | "
            f"{r.sim_rate:,.0f} | {r.episodes:.1f} | {vs_ep} | {vs_hw} |"
        )
    lines.append("")
    if ep is None:
        lines.append("EnvPool not installed (`pip install -e .[bench]`): no EnvPool ratio.")
    else:
        lines.append(
            f"EnvPool reference: its best row, N = {ep.worlds}, {ep.threads} threads "
            f"({ep.sim_rate:,.0f} simulated s / s)."
        )
        cv = [r for r in rows if r.name == "bystander vec+cv" and r.worlds == worlds]
        if cv:
            r = max(cv, key=lambda r: r.threads)
            ratio = r.sim_rate / ep.sim_rate
            lines.append(
                f"Goal: vec+cv, N = {worlds}, {r.threads} threads >= 10x EnvPool in simulated "
                f"time: {ratio:.1f}x -> {'met' if ratio >= 10 else 'MISSED'}."
            )
    single = next((r for r in rows if r.name == "bystander single env"), None)
    if hw is None:
        lines.append("highway-env not installed (`pip install -e .[bench]`).")
    elif single:
        ratio = single.sim_rate / hw.sim_rate
        lines.append(
            f"Goal: single env >= 50x highway-env in simulated time: {ratio:.0f}x -> "
            f"{'met' if ratio >= 50 else 'MISSED'}."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--worlds", type=int, default=1024, help="N of the batched rows")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--episodes", type=float, default=3.0, help="timed max_cycles per world")
    ap.add_argument("--seconds", type=float, default=3.0, help="least timed wall time per row")
    ap.add_argument("--repeats", type=int, default=1, help="repeats (best kept)")
    ap.add_argument("--quick", action="store_true", help="N = 256, 1 episode, 1 s: a smoke run")
    args = ap.parse_args(argv)
    if args.quick:
        args.worlds, args.episodes, args.seconds = 256, 1.0, 1.0
    torch.set_num_threads(1)
    rows = measure(args.worlds, args.threads, args.episodes, args.seconds, args.repeats)
    out = (
        f"### Steady state, resets included (warm-up 1 episode length, then >= {args.episodes:g} "
        f"episode lengths per world and >= {args.seconds:g} s per row; numba layer "
        f"{numba.threading_layer()}, torch 1 thread)\n\n" + table(rows, args.worlds)
    )
    print(out)
    return out


if __name__ == "__main__":
    main()
