"""Pretrain the learned driving predictor and compare it with constant velocity.

Collects (view, truth) pairs from ``bystander/Intersection-v0`` episodes with scripted
traffic (the ego driven by a scripted policy, every other road user by the simulator),
trains :class:`bystander.agents.learned.LearnedPredictor` on the training episodes,
and evaluates it, constant velocity and constant turn rate on *held-out episodes*
(other seeds): ADE / FDE [m] and miss rate (FDE > 2 m), overall and per observer
type, and the learned model's improvement over constant velocity.

    python experiments/pretrain_predictor.py                   # ~2 min on one core
    python experiments/pretrain_predictor.py --train-episodes 20 --epochs 5   # quick

The trained weights (frozen) are saved to ``--out`` (default
``runs/predictors/learned.pt``); load with ``LearnedPredictor.from_file(path)``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bystander.agents.learned import LearnedPredictor
from bystander.agents.metrics import improvement
from bystander.agents.predictors import ConstantTurnRatePredictor, ConstantVelocityPredictor
from bystander.agents.rollouts import POLICIES, TrajectoryDataset, collect_intersection, evaluate


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-episodes", type=int, default=80)
    p.add_argument("--test-episodes", type=int, default=30)
    p.add_argument("--policy", choices=sorted(POLICIES), default="random_meta")
    p.add_argument("--horizon", type=int, default=10, help="prediction steps (dt 0.1 s)")
    p.add_argument("--history", type=int, default=8, help="view length in steps")
    p.add_argument("--arch", choices=("mlp", "gru"), default="mlp")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--modes", type=int, default=1, help="K > 1: multi-modal, scored by minADE_K")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (small nets: 1 is fastest)"
    )
    p.add_argument("--out", type=Path, default=Path("runs/predictors/learned.pt"))
    p.add_argument("--data", type=Path, default=None, help="cache the datasets here (.npz pair)")
    return p


def _data(args: argparse.Namespace) -> tuple[TrajectoryDataset, TrajectoryDataset]:
    kw = {"policy": args.policy, "history": args.history, "horizon": args.horizon}
    paths = None
    if args.data is not None:
        paths = (args.data.with_suffix(".train.npz"), args.data.with_suffix(".test.npz"))
        if all(p.exists() for p in paths):
            return TrajectoryDataset.load(paths[0]), TrajectoryDataset.load(paths[1])
    # Held-out episodes use disjoint seeds (1_000_000 + ...).
    train = collect_intersection(args.train_episodes, seed=args.seed, **kw)
    test = collect_intersection(args.test_episodes, seed=1_000_000 + args.seed, **kw)
    if paths is not None:
        train.save(paths[0])
        test.save(paths[1])
    return train, test


def _row(name: str, m: dict) -> str:
    return f"{name:<12} {m['ade']:7.3f} {m['fde']:7.3f} {m['miss_rate']:9.3f} {m['n']:7d}"


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    train, test = _data(args)
    t1 = time.perf_counter()
    print(
        f"data: {len(train)} train pairs ({args.train_episodes} episodes), {len(test)} held-out "
        f"pairs ({args.test_episodes} episodes), policy {args.policy}, {t1 - t0:.1f} s"
    )
    model = LearnedPredictor(
        args.horizon,
        args.history,
        arch=args.arch,
        hidden=args.hidden,
        lr=args.lr,
        seed=args.seed,
        modes=args.modes,
    )
    log = model.fit(train.views(), train.truth, epochs=args.epochs, batch_size=args.batch_size)
    model.freeze()
    t2 = time.perf_counter()
    print(f"train: {args.epochs} epochs, final train ADE {log[-1]['loss']:.3f} m, {t2 - t1:.1f} s")
    path = model.save(args.out)
    print(f"saved frozen predictor to {path}")

    predictors = {
        "const_vel": ConstantVelocityPredictor(args.horizon, args.history),
        "const_turn": ConstantTurnRatePredictor(args.horizon, args.history),
        "learned": model,
    }
    results = {name: evaluate(p, test) for name, p in predictors.items()}
    types = sorted({t for r in results.values() for t in r["by_type"]})
    k = f" (learned: minADE/minFDE over K={args.modes} modes)" if args.modes > 1 else ""
    print(f"\nheld-out ADE/FDE in metres over {args.horizon} steps (dt {test.dt} s){k}")
    for scope in ["all", *types]:
        print(f"\n[{scope}]\n{'predictor':<12} {'ADE':>7} {'FDE':>7} {'miss@2m':>9} {'n':>7}")
        for name, r in results.items():
            print(_row(name, r if scope == "all" else r["by_type"][scope]))
        base = results["const_vel"] if scope == "all" else results["const_vel"]["by_type"][scope]
        mine = results["learned"] if scope == "all" else results["learned"]["by_type"][scope]
        gain = improvement(base, mine)
        print(
            f"learned vs const_vel: ADE {100 * gain['ade']:+.1f} %, FDE {100 * gain['fde']:+.1f} % "
            "(positive = lower error)"
        )
    results["improvement"] = improvement(results["const_vel"], results["learned"])
    return results


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
