"""Wall time from process start to a held-out evaluation at 90 % success.

    python experiments/benchmarks/time_to_success.py [--every 65536] [--episodes 50]
        [--target 0.9] [--max-steps 3000000] [--set key=value ...]

Trains the default ego (``bystander train``'s built-in defaults, PPO on the batched
simulator) and, every ``--every`` env steps, evaluates it greedily on the default
held-out seeds (``eval.seed``, ``--episodes`` episodes, all at once on the batched
simulator). Prints one line per evaluation and then::

    time to 90 % success: <seconds> s (<steps> steps)

counting from the start of this process (imports included). Prints
``time to 90 % success: not reached ...`` when ``--max-steps`` runs out.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()  # before the heavy imports: they count

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--every", type=int, default=65536, help="env steps between evaluations")
    p.add_argument("--episodes", type=int, default=50, help="held-out episodes per evaluation")
    p.add_argument("--target", type=float, default=0.9, help="success rate to reach")
    p.add_argument("--max-steps", type=int, default=3_000_000)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)

    from bystander.agents.training import Trainer
    from bystander.config import load_config

    run_dir = tempfile.mkdtemp(prefix="time-to-success-")
    cfg = load_config(
        overrides=[
            f"eval.every={args.every}",
            f"eval.heldout_episodes={args.episodes}",
            "train.tensorboard=false",
            *args.overrides,
        ]
    )
    trainer = Trainer(cfg, run_dir=os.path.join(run_dir, "run"))
    try:
        steps = 0
        while steps < args.max_steps:
            trainer.train(total_timesteps=steps + args.every)
            steps = int(trainer.model.num_timesteps)
            row = trainer.heldout.rows[-1]
            wall = time.perf_counter() - T0
            print(
                f"{steps:>9d} steps  {wall:6.1f} s  held-out success {row['success']:.2f}  "
                f"cost/step {row.get('cost_predictability_per_step', float('nan')):.3f}",
                flush=True,
            )
            if row["success"] >= args.target:
                print(f"time to {args.target:.0%} success: {wall:.1f} s ({steps} steps)")
                return 0
    finally:
        trainer.close()
    print(f"time to {args.target:.0%} success: not reached in {args.max_steps} steps")
    return 1


if __name__ == "__main__":
    sys.exit(main())
