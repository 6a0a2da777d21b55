"""The map-aware predictor against constant velocity on held-out scripted traffic.

Drives ``bystander/Intersection-v0`` on a 2x2 grid with scripted egos
(:mod:`bystander.agents.scripted`): ``speed:6`` / ``speed:9`` (shortest route) and
``habit:right:9`` (always turns right). From each episode's ego trajectory it takes
views every 5 steps: the last ``--history`` positions in a random observer frame
(pose 15 m around the ego, any heading, 25 % of the older entries unseen) and the true
future in the same frame. Episodes are split by seed into training (co-training only)
and held-out (every figure).

For each population and horizon (3 s, 5 s and "to the exit": the rest of the episode,
up to 30 s) it prints, in metres: constant velocity's ADE / FDE; the map-aware
predictor's most likely mode's ADE / FDE, minADE_K and the mixture NLL (nats per
trajectory) for the habit-blind frozen predictor and for one co-trained on the
population's training episodes (``--updates`` Adam steps on minibatches of 256 pairs
at 3 s); and the oracle (the hypothesis of the true route: the mode whose final
position is nearest the truth's). Then the step time of ``PredictabilityReward`` on the
same env with CV and with the frozen map predictor (3 s horizon), interleaved, best of
``--repeats``, and their ratio.

Usage::

    python experiments/benchmarks/map_predictor.py --episodes 40 --updates 200
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np

import bystander.envs  # noqa: F401 - registers the env ids
from bystander.agents.map_predictor import MapPredictor
from bystander.agents.metrics import displacement
from bystander.agents.predictors import ConstantVelocityPredictor
from bystander.agents.scripted import scripted_driver
from bystander.envs.contract import EGO_STEP_KEY, FRAMES, Views
from bystander.envs.predictability import PredictabilityReward

ENV_ID = "bystander/Intersection-v0"
CONFIG = {"grid": (2, 2), "max_cycles": 400}
POPULATIONS = {"shortest route (speed:6, speed:9)": ("speed:6", "speed:9"),
               "always right (habit:right:9)": ("habit:right:9",)}  # fmt: skip
EXIT_STEPS = 300


def trajectories(specs: tuple[str, ...], seeds: range) -> list[np.ndarray]:
    """Ego positions ``(T, 2)`` [m] of one episode per (seed, driver)."""
    env = gym.make(ENV_ID, config=CONFIG)
    out = []
    for seed in seeds:
        driver = scripted_driver(specs[seed % len(specs)], CONFIG)
        obs, info = env.reset(seed=seed)
        pos = [info[EGO_STEP_KEY].states[-1]]
        done = False
        while not done:
            obs, _, term, trunc, info = env.step(driver.predict(obs)[0])
            pos.append(info[EGO_STEP_KEY].states[-1])
            done = term or trunc
        out.append(np.asarray(pos, dtype=np.float64))
    env.close()
    return out


def samples(trajs: list[np.ndarray], history: int, horizon: int | None, seed: int):
    """Views (observer frames) and truths ``(B, H, 2)`` with valid-step mask ``(B, H)``."""
    rng = np.random.default_rng(seed)
    states, truth, valid = [], [], []
    h = EXIT_STEPS if horizon is None else horizon
    for traj in trajs:
        last = len(traj) - 1 - (10 if horizon is None else h)
        for t in range(history - 1, last + 1, 5):
            fut = traj[t + 1 : t + 1 + h]
            n = len(fut)
            states.append(traj[t - history + 1 : t + 1])
            truth.append(np.concatenate([fut, np.repeat(fut[-1:], h - n, axis=0)]))
            valid.append(np.arange(h) < n)
    states, truth, valid = np.asarray(states), np.asarray(truth), np.asarray(valid)
    b = len(states)
    poses = np.column_stack(
        [states[:, -1] + rng.normal(0, 15, (b, 2)), rng.uniform(-np.pi, np.pi, b)]
    )
    mask = rng.random((b, history)) > 0.25
    mask[:, -1] = True
    frame = FRAMES["rigid2d"]
    views = Views(
        states=frame.to_frame(states, poses),
        mask=mask,
        observer_types=np.array(["car"] * b, dtype=object),
        observer_ids=np.arange(b),
        dt=0.1,
        poses=poses,
    )
    return views, frame.to_frame(truth, poses), valid


def masked_ade_fde(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray):
    """ADE ``(B, K)`` and FDE ``(B, K)`` over each sample's valid steps (pred ``(B, K, H, 2)``)."""
    d = displacement(pred, truth)  # (B, K, H)
    n = valid.sum(axis=1)
    ade = (d * valid[:, None]).sum(-1) / n[:, None]
    fde = d[np.arange(len(d)), :, n - 1]
    return ade, fde


def evaluate(pred: MapPredictor, views: Views, truth: np.ndarray, valid: np.ndarray) -> dict:
    """Mean figures of ``pred`` (its current weights) on the held-out samples."""
    h = truth.shape[1]
    modes, logp = pred.predict_ranked(views, h)  # most likely first
    ade, fde = masked_ade_fde(modes, truth, valid)
    rows = np.arange(len(ade))
    top = np.zeros(len(ade), dtype=np.int64)
    oracle = np.argmin(np.where(np.isfinite(logp), fde, np.inf), axis=1)
    sig = pred._sigma(h, views.dt)
    d2 = ((modes - truth[:, None]) ** 2).sum(-1)
    ll = ((-0.5 * d2 / sig**2 - np.log(2 * np.pi * sig**2)) * valid[:, None]).sum(-1)
    joint = logp + ll
    mx = joint.max(axis=1)
    nll = -(mx + np.log(np.exp(joint - mx[:, None]).sum(axis=1)))
    return {
        "ade": ade[rows, top].mean(),
        "fde": fde[rows, top].mean(),
        "min_ade": np.where(np.isfinite(logp), ade, np.inf).min(axis=1).mean(),
        "nll": nll.mean(),
        "oracle_ade": ade[rows, oracle].mean(),
        "oracle_fde": fde[rows, oracle].mean(),
    }


def cotrain(pred: MapPredictor, trajs: list[np.ndarray], updates: int, seed: int) -> None:
    views, truth, _ = samples(trajs, int(pred.history), int(pred.horizon), seed)
    rng = np.random.default_rng(seed)
    for _ in range(updates):
        idx = rng.choice(len(views), size=min(256, len(views)), replace=False)
        pred.update(views.take(idx), truth[idx])


def time_wrapper(make, steps: int, seed: int, spec: str) -> float:
    """Mean seconds per ``step`` of the env made by ``make`` under the scripted ``spec``."""
    env = make()
    driver = scripted_driver(spec, CONFIG)
    obs, _ = env.reset(seed=seed)
    total, episode = 0.0, 0
    for _ in range(steps):
        action = driver.predict(obs)[0]
        t0 = time.perf_counter()
        obs, _, term, trunc, _ = env.step(action)
        total += time.perf_counter() - t0
        if term or trunc:
            episode += 1
            obs, _ = env.reset(seed=seed + episode)
    env.close()
    return total / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=40, help="held-out episodes per population")
    parser.add_argument("--train-episodes", type=int, default=40)
    parser.add_argument("--updates", type=int, default=200, help="co-training Adam steps")
    parser.add_argument("--history", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1000, help="wrapper timing steps")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    s = args.seed
    test_seeds = range(s + 10_000, s + 10_000 + args.episodes)
    train_seeds = range(s, s + args.train_episodes)
    for name, specs in POPULATIONS.items():
        test = trajectories(specs, test_seeds)
        blind = MapPredictor(CONFIG, horizon=30, history=args.history).freeze()
        learned = MapPredictor(CONFIG, horizon=30, history=args.history, lr=0.05, seed=s)
        cotrain(learned, trajectories(specs, train_seeds), args.updates, s)
        print(f"\n== {name}: {len(test)} held-out episodes; co-trained: {learned.updates} steps")
        print(
            f"{'horizon':>8} {'n':>6} {'CV ADE/FDE':>13} | {'predictor':>10} {'ADE/FDE':>13}"
            f" {'minADE_K':>8} {'NLL':>7} | {'oracle ADE/FDE':>14}"
        )
        for label, h in (("3 s", 30), ("5 s", 50), ("to exit", None)):
            views, truth, valid = samples(test, args.history, h, s + 1)
            cv = ConstantVelocityPredictor(horizon=truth.shape[1], history=args.history)
            c_ade, c_fde = masked_ade_fde(cv.predict(views)[:, None], truth, valid)
            for i, (tag, model) in enumerate((("blind", blind), ("cotrained", learned))):
                depth = 3 if h is None else 2
                m = MapPredictor(CONFIG, horizon=10, history=args.history, depth=depth)
                m.net.load_state_dict(model.net.state_dict())
                r = evaluate(m, views, truth, valid)
                left = (
                    f"{label:>8} {len(views):>6} {c_ade.mean():6.2f}/{c_fde.mean():6.2f}"
                    if i == 0
                    else " " * 28
                )
                print(
                    f"{left} | {tag:>10} {r['ade']:6.2f}/{r['fde']:6.2f} {r['min_ade']:8.2f}"
                    f" {r['nll']:7.1f} | {r['oracle_ade']:6.2f}/{r['oracle_fde']:6.2f}"
                )

    cv = lambda: PredictabilityReward(  # noqa: E731
        gym.make(ENV_ID, config=CONFIG), ConstantVelocityPredictor(horizon=30)
    )
    mp = lambda: PredictabilityReward(  # noqa: E731
        gym.make(ENV_ID, config=CONFIG), MapPredictor(CONFIG, horizon=30).freeze()
    )
    bare = lambda: gym.make(ENV_ID, config=CONFIG)  # noqa: E731
    times: dict[str, list[float]] = {"bare": [], "cv": [], "map": []}
    for r in range(args.repeats):
        for key, make in (("bare", bare), ("cv", cv), ("map", mp)):
            times[key].append(time_wrapper(make, args.steps, s + 1000 * r, "speed:9"))
    t = {k: min(v) for k, v in times.items()}
    print(f"\nPredictabilityReward, 3 s horizon, {args.steps} steps, best of {args.repeats}:")
    for k in ("bare", "cv", "map"):
        print(f"  {k:5s} {1e3 * t[k]:7.3f} ms/step")
    print(
        f"  map / cv step time: {t['map'] / t['cv']:.2f}x; wrapper overhead over bare: "
        f"cv {1e3 * (t['cv'] - t['bare']):.3f} ms, map {1e3 * (t['map'] - t['bare']):.3f} ms "
        f"({(t['map'] - t['bare']) / max(t['cv'] - t['bare'], 1e-12):.2f}x)"
    )


if __name__ == "__main__":
    main()
