"""Probe (issue 12): the per-metre Lagrangian return a policy earns at a fixed lambda.

    python experiments/probes/lagrangian_return.py --lam 1.0 [--run RUN_DIR]
        [--driver speed:6 --driver speed:6@0.3 ...] [--episodes 256] [--set KEY=VALUE ...]

Plays ``--episodes`` held-out worlds at once (seeds ``eval.seed`` on, the batched
training stack with the constraint layer, so the reward is exactly what PPO is trained
on) for each policy: the run's policy greedy (``model``) and sampled (``model~``) when
``--run`` is given, and each ``--driver`` (a scripted driver spec of ``bystander
evaluate --scripted``, optionally ``@EPS``: the driver's action replaced by a uniformly
random one with probability ``EPS`` at each step, a stand-in for a stochastic policy's
exploration; or ``@A=P,B=Q``: replaced by action ``A`` with probability ``P``, by ``B``
with ``Q`` (action indices; e.g. ``speed:3@0=0.01`` presses SLOWER at 1 % of the steps,
a trained policy's own noise)). Prints per policy the mean episode return, undiscounted and discounted
with the run's ``gamma``, the cost per metre (episode sums), success and episode length.

Lambda is fixed with ``constraint.lambda_init = lambda_min = lambda_max = --lam``; the
config is the run's (``--run``) or the defaults, then ``--set`` overrides; the
constraint must be ``lagrangian`` with ``per_metre`` costs (set them for the defaults).
If the run's policy earns less than a scripted driver, the training objective prefers
the driver and the trainer failed to find it; if more, the driver is not what the
reward asks for.

Not a library feature; one process.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bystander.agents.scripted import scripted_driver
from bystander.agents.stack import build_batched_vec_env
from bystander.agents.training import build_multipliers, build_predictor, load_policy
from bystander.config import RunConfig, load_config
from bystander.envs.contract import step_arrays


def _config(run: str | None, lam: float, episodes: int, sets: list[str]) -> RunConfig:
    base = load_config(Path(run) / "config.yaml").to_dict() if run else None
    fixed = [f"constraint.lambda_{k}={lam}" for k in ("init", "min", "max")]
    cfg = load_config(base=base, overrides=[*sets, f"train.n_envs={episodes}", *fixed])
    cfg = load_config(base=cfg.to_dict(), overrides=[f"train.seed={cfg.eval.seed}"])
    c = cfg.constraint
    if c.mode != "lagrangian" or c.cost_normalization != "per_metre":
        raise ValueError(
            "constraint: expected mode=lagrangian and cost_normalization=per_metre "
            f"(--set them), got mode={c.mode!r}, cost_normalization={c.cost_normalization!r}"
        )
    return cfg


def play(cfg: RunConfig, act, gamma: float) -> dict[str, float]:  # noqa: ANN001 - callable
    """Mean return (undiscounted, discounted), cost per metre, success and length over
    the first episode of every world."""
    venv = build_batched_vec_env(cfg, build_predictor(cfg), build_multipliers(cfg), training=False)
    n = venv.num_envs
    ret, disc, cost, prog = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    steps, done, success = np.zeros(n, int), np.zeros(n, bool), np.zeros(n)
    obs = venv.reset()
    try:
        while not done.all():
            obs, rewards, dones, infos = venv.step(act(obs))
            arrays = step_arrays(venv)
            live = ~done
            ret += np.where(live, rewards, 0.0)
            disc += np.where(live, gamma**steps * rewards, 0.0)
            cost += np.where(live, np.asarray(arrays["costs"]["predictability"], float), 0.0)
            prog += np.where(live, np.asarray(arrays["progress"], float), 0.0)
            steps += live
            for i in np.flatnonzero(np.asarray(dones) & live):
                done[i] = True
                success[i] = float(bool(infos[i].get("arrived", False)))
    finally:
        venv.close()
    return {
        "return": float(ret.mean()),
        "discounted": float(disc.mean()),
        "cost_per_metre": float(cost.sum() / max(prog.sum(), 1e-9)),
        "success": float(success.mean()),
        "length": float(steps.mean()),
    }


def _noise(spec: str, arg: str, n_actions: int) -> np.ndarray:
    """``(n_actions,)`` replacement probabilities of an ``@A=P,B=Q`` part."""
    p = np.zeros(n_actions)
    try:
        for item in arg.split(","):
            a, _, q = item.partition("=")
            p[int(a)] += float(q)
    except (ValueError, IndexError):
        p[:] = np.nan
    if not (np.all(p >= 0) and p.sum() <= 1.0 + 1e-9):
        raise ValueError(
            f"--driver {spec!r}: expected @A=P,... with action indices below {n_actions} "
            f"and probabilities summing to at most 1, got {arg!r}"
        )
    return p


def _driver_policy(spec: str, cfg: RunConfig, n_actions: int, seed: int):  # noqa: ANN202
    name, _, arg = spec.partition("@")
    driver = scripted_driver(name, cfg.env.config)
    rng = np.random.default_rng(seed)
    if "=" in arg:  # chosen actions at chosen rates
        cum = np.cumsum(_noise(spec, arg, n_actions))

        def act(obs: np.ndarray) -> np.ndarray:
            a = driver.predict(obs, deterministic=True)[0]
            pick = np.searchsorted(cum, rng.random(len(a)), side="right")
            return np.where(pick < n_actions, pick, a)

        return act
    eps = float(arg) if arg else 0.0
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"--driver {spec!r}: expected @EPS in [0, 1], got {arg!r}")

    def act_uniform(obs: np.ndarray) -> np.ndarray:
        a = driver.predict(obs, deterministic=True)[0]
        noisy = rng.random(len(a)) < eps
        return np.where(noisy, rng.integers(0, n_actions, len(a)), a)

    return act_uniform


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lam", type=float, required=True, help="the fixed lambda")
    p.add_argument("--run", default=None, help="a run directory (its config and policy)")
    p.add_argument("--driver", action="append", default=[], help="scripted driver[@EPS]")
    p.add_argument("--episodes", type=int, default=256)
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    cfg = _config(args.run, args.lam, args.episodes, args.sets)
    gamma = float(cfg.train.hyperparams.get("gamma", 0.99))
    policies = []
    if args.run:
        model, _ = load_policy(args.run)
        policies += [("model", lambda o: model.predict(o, deterministic=True)[0])]
        policies += [("model~", lambda o: model.predict(o, deterministic=False)[0])]
    import gymnasium as gym

    n_actions = gym.make(cfg.env.id, config=cfg.env.config).action_space.n
    policies += [(d, _driver_policy(d, cfg, n_actions, cfg.eval.seed)) for d in args.driver]
    print(f"lambda {args.lam:g}, budget {cfg.constraint.budget:g} m/m, credit margin "
          f"{cfg.constraint.credit_margin:g}, gamma {gamma:g}, {args.episodes} episodes")  # fmt: skip
    print(
        f"{'policy':16s} {'return':>8s} {'disc.':>8s} {'cost m/m':>9s} {'success':>8s} {'steps':>6s}"
    )
    for name, act in policies:
        r = play(cfg, act, gamma)
        print(f"{name:16s} {r['return']:8.3f} {r['discounted']:8.3f} {r['cost_per_metre']:9.3f} "
              f"{r['success']:8.2f} {r['length']:6.0f}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
