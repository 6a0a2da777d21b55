"""Held-out evaluation: the batched evaluator equals the single-env one episode by
episode, and the figures logged during training equal ``bystander evaluate`` on the
same checkpoint."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from bystander.agents.evaluation import evaluate_policy, evaluate_run
from bystander.agents.heldout import evaluate_batched
from bystander.agents.predictors import ConstantVelocityPredictor
from bystander.cli import main
from bystander.config import load_config

KEYS = ("success", "collision", "steps", "episode_cost", "cost_collision_per_step",
        "cost_predictability_per_step", "stand_still_fraction", "ade", "seed")  # fmt: skip


class Scripted:
    """A deterministic policy that mixes speeds and stops (so stand-still is exercised)."""

    def predict(self, obs, deterministic=True):
        obs = np.asarray(obs)
        batch = obs.ndim == 2
        o = obs if batch else obs[None]
        acts = np.where(o[:, 0] > 0.3, 0, np.where(o[:, 1] > 0.0, 2, 1)).astype(np.int64)
        return (acts if batch else acts[0]), None


def test_batched_evaluation_equals_the_single_env_one_episode_by_episode() -> None:
    cfg = load_config(overrides=["env.config.max_cycles=120"])
    pred = ConstantVelocityPredictor(horizon=10, history=8)
    single = evaluate_policy(Scripted(), cfg, episodes=12, seed=500, predictor=pred)
    batched = evaluate_batched(Scripted(), cfg, episodes=12, seed=500, predictor=pred)
    assert len(batched.episodes) == 12
    for a, b in zip(single.episodes, batched.episodes, strict=True):
        for k in KEYS:
            assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-12, nan_ok=True), k
    assert any(r["stand_still_fraction"] > 0 for r in batched.episodes)


def test_heldout_figures_during_training_equal_bystander_evaluate(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "--timesteps", "1024", "--run-dir", str(run), "--n-envs", "4",
            "--eval-every", "512", "--set", "eval.heldout_episodes=6",
            "--set", "train.hyperparams.n_steps=64", "--set", "train.hyperparams.batch_size=64",
            "--set", "train.tensorboard=false", "--no-evaluate"]  # fmt: skip
    assert main(args) == 0
    with open(run / "logs" / "heldout.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(float(r["step"])) for r in rows] == [512, 1024]
    final = evaluate_run(run, episodes=6).summary  # model.zip: the policy at step 1024
    for key in ("success", "collision", "stand_still_fraction", "cost_predictability_per_step"):
        assert float(rows[-1][key]) == pytest.approx(final[key]["mean"], rel=1e-9), key
    with open(run / "logs" / "progress.csv", newline="") as f:
        logged = [r for r in csv.DictReader(f) if r.get("heldout/success")]
    assert [int(float(r["time/total_timesteps"])) for r in logged] == [512, 1024]
    # a resume keeps the evaluations before it, in both logs
    assert main(["train", "--resume", str(run), "--timesteps", "1536", *args[5:]]) == 0
    with open(run / "logs" / "heldout.csv", newline="") as f:
        assert [int(float(r["step"])) for r in csv.DictReader(f)] == [512, 1024, 1536]
    with open(run / "logs" / "progress.csv", newline="") as f:
        logged = [r for r in csv.DictReader(f) if r.get("heldout/success")]
    assert [int(float(r["time/total_timesteps"])) for r in logged] == [512, 1024, 1536]


def test_agents_flag_trains_several_cars_and_evaluates_one_row_per_car(tmp_path: Path) -> None:
    """``bystander train --agents 3``: one slot per car per world, a shared policy; the
    evaluation has one row per car per episode, each car's outcome its own."""
    run = tmp_path / "run"
    args = ["train", "--agents", "3", "--timesteps", "768", "--run-dir", str(run),
            "--n-envs", "2", "--set", "train.hyperparams.n_steps=64",
            "--set", "train.hyperparams.batch_size=64", "--set", "train.tensorboard=false",
            "--set", "env.config.max_cycles=60", "--no-evaluate"]  # fmt: skip
    assert main(args) == 0
    ev = evaluate_run(run, episodes=4)
    assert len(ev.episodes) == 12
    assert [r["seed"] for r in ev.episodes] == [
        float(ev.episodes[0]["seed"] + k // 3) for k in range(12)
    ]
    for r in ev.episodes:
        assert 1 <= r["steps"] <= 60 and not (r["success"] and r["collision"])
    # the cars of one world share its seed but not their figures
    assert len({(r["steps"], r["progress_m"]) for r in ev.episodes[:3]}) > 1
    with pytest.raises(ValueError, match="train.vec_env: expected 'batched'"):
        load_config(overrides=["env.config.n_controlled=2", "train.vec_env=dummy"])


def test_signal_heldout_moves_lambda_once_per_heldout_evaluation(tmp_path: Path) -> None:
    """``constraint.signal: heldout``: the multiplier steps at each held-out evaluation,
    on its cost in the budget's unit, and not once per rollout."""
    import json

    from bystander.agents.checkpoint import find_checkpoint

    run = tmp_path / "run"
    args = ["train", "--timesteps", "1024", "--run-dir", str(run), "--n-envs", "4",
            "--eval-every", "512", "--set", "eval.heldout_episodes=4",
            "--set", "train.hyperparams.n_steps=64", "--set", "train.hyperparams.batch_size=64",
            "--set", "train.tensorboard=false", "--no-evaluate",
            "--constraint", "lagrangian", "--set", "constraint.channel=predictability",
            "--set", "constraint.cost_normalization=per_step", "--budget", "0.0",
            "--set", "constraint.signal=heldout", "--lambda-init", "0.5"]  # fmt: skip
    assert main(args) == 0
    state = json.loads((find_checkpoint(run) / "multipliers.json").read_text())
    (key,) = state
    assert state[key]["num_updates"] == 2  # two evaluations; 4 rollouts did not count
    with open(run / "logs" / "heldout.csv", newline="") as f:
        costs = [float(r["cost_predictability_per_step"]) for r in csv.DictReader(f)]
    assert state[key]["costs"] == pytest.approx(costs[-1:])  # window 1: the last one
    with pytest.raises(ValueError, match="constraint.signal"):
        load_config(overrides=["constraint.mode=lagrangian", "constraint.signal=heldout"])


def test_off_route_counts_episodes_that_leave_the_road_or_map_off_their_route() -> None:
    """An ego that always plans a left turn leaves its route on the seeds whose route
    goes elsewhere; the navigation driver never does. Both evaluation paths agree."""
    import numpy as np

    from bystander.agents.evaluation import evaluate_policy
    from bystander.agents.scripted import scripted_driver
    from bystander.config import load_config

    class AlwaysLeft:
        def predict(self, obs, deterministic=True):
            return np.full(np.shape(obs)[:-1] or (), 3, np.int64), None

    cfg = load_config()
    left = evaluate_batched(AlwaysLeft(), cfg, episodes=20).episodes
    off = [e["off_route"] for e in left]
    assert set(off) <= {0.0, 1.0} and sum(off) >= 5
    assert all(e["off_route"] + e["success"] + e["collision"] <= 1 for e in left)
    assert all(
        e["off_route"] == 0
        for e in evaluate_batched(scripted_driver("speed:6"), cfg, episodes=20).episodes
    )
    single = evaluate_policy(AlwaysLeft(), cfg, episodes=6).episodes
    assert [e["off_route"] for e in single] == off[:6]
