"""Probe (issue 12): a lambda-conditioned ego's held-out answer to each lambda.

    python experiments/probes/lambda_curve.py RUN_DIR [--lams 0.01,0.1,1,10] [--episodes 100]

Loads a run trained with ``constraint.conditioned: true`` and plays its greedy policy on
the held-out seeds (``eval.seed``, as ``bystander evaluate``) once per lambda, the
policy shown that lambda as in training, all lambdas at once
(:func:`bystander.agents.heldout.evaluate_lambdas`, as the lambda search does). Prints success, cost per metre (the budget's
unit of a ``per_metre`` run) and stand-still fraction per lambda. A multiplier can hold
a budget where this curve crosses it; where the curve is flat over the multiplier's
range, no lambda reaches the budget.
"""

from __future__ import annotations

import argparse

import numpy as np

from bystander.agents.evaluation import load_run
from bystander.agents.heldout import evaluate_lambdas
from bystander.agents.training import build_predictor, load_obs_normalizer
from bystander.envs.constraints import multiplier_key


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--lams", default="0.01,0.03,0.1,0.3,1,3,10",
                    help="comma-separated lambdas")  # fmt: skip
    ap.add_argument("--episodes", type=int, default=100)
    args = ap.parse_args(argv)
    model, cfg, predictor, multipliers, _ = load_run(args.run_dir)
    if not cfg.constraint.conditioned:
        raise SystemExit(f"{args.run_dir}: constraint.conditioned is false; nothing to vary")
    if predictor is None and cfg.predictor.kind != "none":
        predictor = build_predictor(cfg)
    final = multipliers[multiplier_key(cfg.constraint.channel)].value
    key = f"cost_{cfg.constraint.channel}_per_metre"
    print(f"run {args.run_dir}: final lambda {final:.4g}, budget {cfg.constraint.budget:g}")
    print("lambda  success  cost [m/m]  stand-still")
    low, high = cfg.constraint.lambda_min, cfg.constraint.lambda_max
    lams = [float(x) for x in args.lams.split(",")]
    results = evaluate_lambdas(model, cfg, lams, cfg.eval.seed + np.arange(args.episodes),
                               predictor=predictor,
                               normalize=load_obs_normalizer(args.run_dir))  # fmt: skip
    for lam, r in zip(lams, results, strict=True):
        s = r.summary
        unseen = "" if low <= lam <= high else f"  (outside the trained [{low:g}, {high:g}])"
        print(f"{lam:6.3g}  {s['success']['mean']:7.2f}  {s[key]['mean']:10.3f}  "
              f"{s['stand_still_fraction']['mean']:11.3f}{unseen}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
