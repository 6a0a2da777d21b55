"""Batched intersection env throughput: world-steps/s at N worlds, bare and with predictability.

For each ``N`` (default 1, 16, 64, 256, 1024) it times, side by side in one process
(the variants interleaved, best of ``--repeats`` to resist load on a shared machine):

- ``sim``: the simulator core alone (``IntersectionSim.step`` + reset of finished worlds),
- ``vec-full``: :class:`~bystander.envs.intersection.vec_env.IntersectionVecEnv` with
  ``info_mode="full"`` (every world's info dict with its ``EgoStep``, every step),
- ``vec``: the same with ``info_mode="lean"``, as the training stack builds it (SB3
  ``VecEnv``: observations, ``EgoBatch`` and per-step arrays, auto-reset, info dicts of
  finished episodes),
- ``vec+cv``: the lean env wrapped in ``PredictabilityVecWrapper`` with the
  constant-velocity predictor (array path: one ``BatchedTracker`` for all worlds, one
  predictor call per step),
- ``vec+learned``: the same with the learned (MLP) predictor, untrained weights
  (throughput does not depend on training).

Actions are uniform random meta-actions from a fixed seed. torch runs on one thread.
Prints a Markdown table: world-steps/s and the ratio to the bare vec env.

Usage::

    python experiments/benchmarks/batched_env.py [--worlds 1 16 64 256 1024] [--steps 20]
        [--repeats 3] [--config '{"n_cars": 10}'] [--gc-freeze] [--profile]

Target (issue 6): ``vec+cv`` >= 100,000 world-steps/s at N = 1024 on one core.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from collections.abc import Callable

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bystander.envs.intersection.config import IntersectionConfig  # noqa: E402
from bystander.envs.intersection.sim import IntersectionSim  # noqa: E402
from bystander.envs.intersection.vec_env import IntersectionVecEnv  # noqa: E402

VARIANTS = ("sim", "vec-full", "vec", "vec+cv", "vec+learned")
TARGET = 100_000.0


def _predictor(kind: str) -> object:
    if kind == "cv":
        from bystander.agents.predictors import ConstantVelocityPredictor

        return ConstantVelocityPredictor()
    from bystander.agents.learned import LearnedPredictor

    return LearnedPredictor(seed=0)


def make_stepper(variant: str, n: int, config: dict, seed: int = 0) -> Callable[[np.ndarray], None]:
    """A function ``step(actions (n,) int)`` advancing ``n`` worlds of ``variant`` once."""
    if variant == "sim":
        sim = IntersectionSim(IntersectionConfig.from_dict(config), n_worlds=n, seed=seed)
        sim.reset(seed=seed)

        def step_sim(actions: np.ndarray) -> None:
            out = sim.step(actions[:, None])
            done = out.terminated[:, 0] | out.truncated
            if done.any():
                sim.reset(worlds=np.flatnonzero(done))

        return step_sim
    info_mode = "full" if variant == "vec-full" else "lean"
    venv = IntersectionVecEnv(n, config, seed=seed, info_mode=info_mode)
    if variant.startswith("vec+"):
        from bystander.envs.vector import PredictabilityVecWrapper

        venv = PredictabilityVecWrapper(venv, _predictor(variant.split("+")[1]))
    venv.reset()

    def step_vec(actions: np.ndarray) -> None:
        venv.step(actions)

    return step_vec


def time_variant(
    variant: str, n: int, steps: int, config: dict, warmup: int = 5, gc_freeze: bool = False
) -> float:
    """World-steps/s of ``variant`` at ``n`` worlds over ``steps`` calls (after warm-up).

    ``gc_freeze``: move every object alive after the warm-up out of the cycle collector's
    reach (``gc.freeze()``) while timing: full collections then scan only new objects.
    With N = 1024 worlds, per-world info dicts trigger full collections of the whole heap
    (torch, SB3...) every few steps; this shows what a training script gains by freezing.
    """
    step = make_stepper(variant, n, config)
    rng = np.random.default_rng(0)
    actions = [rng.integers(0, 6, size=n) for _ in range(warmup + steps)]
    for a in actions[:warmup]:  # warm-up: trackers fill their history, caches settle
        step(a)
    if gc_freeze:
        gc.collect()
        gc.freeze()
    try:
        t0 = time.perf_counter()
        for a in actions[warmup:]:
            step(a)
        return steps * n / (time.perf_counter() - t0)
    finally:
        if gc_freeze:
            gc.unfreeze()


def run(
    worlds: list[int],
    steps: int,
    repeats: int,
    config: dict,
    variants: tuple[str, ...] = VARIANTS,
    gc_freeze: bool = False,
) -> dict[int, dict[str, float]]:
    """Best-of-``repeats`` world-steps/s per N and variant; variants interleaved per repeat.

    ``steps`` is scaled down for small N so every cell costs about the same time.
    """
    results: dict[int, dict[str, float]] = {}
    for n in worlds:
        k = max(steps, int(steps * 256 / n)) if n < 256 else steps
        best = {v: 0.0 for v in variants}
        for _ in range(repeats):
            for v in variants:
                best[v] = max(best[v], time_variant(v, n, k, config, gc_freeze=gc_freeze))
        results[n] = best
    return results


def table(results: dict[int, dict[str, float]]) -> str:
    """Markdown table: world-steps/s per variant, ratios to the bare vec env."""
    variants = list(next(iter(results.values())))
    head = "| N worlds | " + " | ".join(f"{v} [world-steps/s]" for v in variants)
    head += " | cv / vec | learned / vec |"
    lines = [head, "|" + "---|" * (len(variants) + 3)]
    for n, r in results.items():
        cells = " | ".join(f"{r[v]:,.0f}" for v in variants)
        base = r.get("vec", 0.0)
        ratio = [
            f"{r[v] / base:.2f}x" if base and v in r else "-" for v in ("vec+cv", "vec+learned")
        ]
        lines.append(f"| {n} | {cells} | {' | '.join(ratio)} |")
    if 1024 in results and "vec+cv" in results[1024]:
        got = results[1024]["vec+cv"]
        lines.append("")
        lines.append(
            f"Target: vec+cv >= {TARGET:,.0f} world-steps/s at N=1024: got {got:,.0f} "
            f"({got / TARGET:.2f}x of target) -> {'met' if got >= TARGET else 'MISSED'}"
        )
    return "\n".join(lines)


def profile_breakdown(n: int, steps: int, config: dict) -> str:
    """Markdown table: wall time per part of a ``vec+cv`` step at ``n`` worlds.

    Each part is wrapped with a timer for the measurement: the simulator step (and
    resets), the VecEnv's own work (observations, ``EgoBatch``, arrays, auto-reset), the
    tracker's array bookkeeping, the predictor calls and the wrapper's remaining work.
    """
    from bystander.agents.predictors import ConstantVelocityPredictor
    from bystander.envs.vector import PredictabilityVecWrapper

    spent: dict[str, float] = {}

    def timed(name: str, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0

        return wrapper

    cv = ConstantVelocityPredictor()
    base = IntersectionVecEnv(n, config, seed=0, info_mode="lean")
    venv = PredictabilityVecWrapper(base, cv)
    venv.reset()
    rng = np.random.default_rng(0)
    for _ in range(5):
        venv.step(rng.integers(0, 6, size=n))
    tracker = venv.backend.tracker
    base.sim.step = timed("sim", base.sim.step)
    base.sim.reset = timed("sim", base.sim.reset)
    base.step_wait = timed("vec", base.step_wait)
    cv.predict = timed("predictor", cv.predict)
    cv.error = timed("predictor", cv.error)
    tracker.step = timed("tracker", tracker.step)
    tracker.start = timed("tracker", tracker.start)
    t0 = time.perf_counter()
    for _ in range(steps):
        venv.step(rng.integers(0, 6, size=n))
    total = (time.perf_counter() - t0) / steps
    per = {k: v / steps for k, v in spent.items()}
    rows = {
        "simulator step + resets (all worlds)": per["sim"],
        "vec env: observations, EgoBatch, arrays, auto-reset": per["vec"] - per["sim"],
        "tracker: array bookkeeping (all worlds)": per["tracker"] - per["predictor"],
        "predictor calls (one predict + one error)": per["predictor"],
        "wrapper: step arrays, episode infos": total - per["vec"] - per["tracker"],
    }
    lines = [
        f"| part of a vec+cv step, N = {n} | ms/step | share |",
        "|---|---|---|",
        *[f"| {k} | {v * 1e3:.2f} | {v / total:.0%} |" for k, v in rows.items()],
        f"| total ({n / total:,.0f} world-steps/s) | {total * 1e3:.2f} | 100% |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--worlds", type=int, nargs="+", default=[1, 16, 64, 256, 1024])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per cell at N >= 256")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats (best kept)")
    ap.add_argument("--config", type=json.loads, default={}, help="JSON env config overrides")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--gc-freeze", action="store_true", help="gc.freeze() while timing")
    ap.add_argument(
        "--profile", action="store_true", help="also print where a vec+cv step's time goes"
    )
    args = ap.parse_args(argv)
    if any(n < 1 for n in args.worlds):
        raise ValueError(f"--worlds: expected ints >= 1, got {args.worlds}")
    torch.set_num_threads(1)
    res = run(
        args.worlds, args.steps, args.repeats, args.config, tuple(args.variants), args.gc_freeze
    )
    gcnote = ", gc.freeze() while timing" if args.gc_freeze else ""
    out = f"### Batched env throughput (one process, torch 1 thread{gcnote})\n\n" + table(res)
    if args.profile:
        for n in args.worlds:
            out += "\n\n" + profile_breakdown(n, args.steps, args.config)
    print(out)
    return out


if __name__ == "__main__":
    main()
