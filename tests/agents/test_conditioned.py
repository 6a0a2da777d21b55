"""A lambda-conditioned ego (``constraint.conditioned``): lambdas drawn per world and
episode, shown to the policy, the reward at each world's own lambda, and the
multiplier's lambda everywhere outside training."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

from bystander.agents.conditioning import append_lambda, policy_observations
from bystander.agents.evaluation import evaluate_run
from bystander.agents.stack import build_vec_env
from bystander.agents.training import build_multipliers, build_predictor
from bystander.cli import main
from bystander.config import load_config
from bystander.envs.constraint_config import ConstraintConfig
from bystander.envs.constraints import LagrangianRule, draw_lambdas, lambda_feature
from bystander.envs.contract import find_layer, step_arrays
from bystander.envs.multipliers import LagrangeMultiplier
from bystander.envs.vector import ConditionedLagrangianVecReward

CONDITIONED = ["constraint.mode=lagrangian", "constraint.channel=predictability",
               "constraint.cost_normalization=per_metre", "constraint.budget=0.3",
               "constraint.lambda_step=relative", "constraint.signal=heldout",
               "constraint.lambda_init=0.5", "constraint.lambda_min=0.1",
               "constraint.lambda_max=3.0", "constraint.conditioned=true", "eval.every=512"]  # fmt: skip


def test_draws_stay_in_range_log_uniform() -> None:
    lam = draw_lambdas(np.random.default_rng(0), 20000, 0.1, 3.0)
    assert lam.min() >= 0.1 and lam.max() <= 3.0
    assert np.mean(np.log(lam)) == pytest.approx(np.log(np.sqrt(0.3)), abs=0.02)
    assert np.mean(lam < 1.0) == pytest.approx(np.log(10) / np.log(30), abs=0.01)
    assert lambda_feature(np.array([0.1, 1.0, 3.0])) == pytest.approx(np.log([0.1, 1, 3]))
    assert append_lambda(np.zeros((2, 3), np.float32), 1.0).tolist() == [[0, 0, 0, 0]] * 2
    assert append_lambda(np.ones(3, np.float32), np.e).tolist() == pytest.approx([1, 1, 1, 1])


@pytest.mark.parametrize(
    ("override", "field"),
    [("constraint.mode=shaping", "constraint.mode"), ("constraint.signal=rollout", "constraint.signal"),
     ("constraint.lambda_min=0", "constraint.lambda_min"),
     ("constraint.lambda_max=null", "constraint.lambda_max"),
     ("constraint.conditioned=1", "constraint.conditioned")],
)  # fmt: skip
def test_bad_settings_name_the_field(override: str, field: str) -> None:
    with pytest.raises((TypeError, ValueError), match=field.replace(".", r"\.")):
        load_config(overrides=[*CONDITIONED, override])


def test_only_the_batched_driving_trainer_takes_it() -> None:
    cfg = load_config(overrides=[*CONDITIONED, "train.vec_env=dummy", "train.n_envs=2"])
    with pytest.raises(ValueError, match="constraint.conditioned: needs train.vec_env"):
        build_vec_env(cfg, None, build_multipliers(cfg))
    cars = load_config(overrides=[*CONDITIONED, "env.config.n_controlled=2"])
    with pytest.raises(ValueError, match="needs env.config.n_controlled 1"):
        build_vec_env(cars, None, build_multipliers(cars))
    from bystander.llm.grpo_config import GRPOConfig

    c = ConstraintConfig(mode="lagrangian", budget=1.0, signal="heldout", lambda_min=0.1,
                         lambda_init=0.5, lambda_max=2.0, conditioned=True)  # fmt: skip
    with pytest.raises(ValueError, match="constraint.conditioned: expected false"):
        GRPOConfig(constraint=c)


def _stack(seed: int) -> tuple[object, ConditionedLagrangianVecReward]:
    cfg = load_config(overrides=[*CONDITIONED, "train.n_envs=6", f"train.seed={seed}",
                                 "env.config.max_cycles=40"])  # fmt: skip
    venv = build_vec_env(cfg, build_predictor(cfg), build_multipliers(cfg))
    return venv, find_layer(venv, ConditionedLagrangianVecReward)


def test_each_world_is_rewarded_and_observed_at_its_own_lambda() -> None:
    venv, layer = _stack(3)
    base = layer.venv.observation_space.shape[0]
    assert venv.observation_space.shape == (base + 1,)
    assert venv.observation_space.low[-1] == pytest.approx(np.log(0.1))
    assert venv.observation_space.high[-1] == pytest.approx(np.log(3.0))
    obs = venv.reset()
    assert obs[:, -1] == pytest.approx(lambda_feature(layer.lambdas))
    assert len(set(layer.lambdas.round(9))) == 6  # every world its own
    rule = LagrangianRule(LagrangeMultiplier(0.3, init=0.5), "predictability", 0.3)
    rng = np.random.default_rng(0)
    ends = 0
    for _ in range(45):
        lam = layer.lambdas.copy()
        inner = layer.venv.step(rng.integers(0, 6, 6))  # the layer below: its rewards
        arrays = step_arrays(layer.venv)
        expected, _ = rule.apply_arrays(np.asarray(inner[1], np.float64), arrays, lam=lam)
        obs, rewards, dones, infos = _finish(layer, inner)
        assert rewards == pytest.approx(expected.astype(np.float32), rel=1e-6, abs=1e-7)
        for i in np.flatnonzero(dones):
            ends += 1
            term = infos[i]["terminal_observation"]
            assert term[-1] == pytest.approx(lambda_feature(lam[i]), abs=1e-7)
            assert layer.lambdas[i] != lam[i]  # a new draw for the new episode
        kept = ~np.asarray(dones)
        assert np.array_equal(layer.lambdas[kept], lam[kept])
        assert obs[:, -1] == pytest.approx(lambda_feature(layer.lambdas))
    assert ends >= 6
    venv.close()


def _finish(layer: ConditionedLagrangianVecReward, inner: tuple) -> tuple:
    """The layer's ``step_wait`` on a step its inner env has already taken."""
    layer.venv.step_wait = lambda: inner  # type: ignore[method-assign]
    try:
        return layer.step_wait()
    finally:
        del layer.venv.step_wait


def test_draws_repeat_with_the_seed() -> None:
    runs = []
    for _ in range(2):
        venv, layer = _stack(7)
        venv.reset()
        seen = [layer.lambdas.copy()]
        for _ in range(45):
            venv.step(np.ones(6, np.int64))
            seen.append(layer.lambdas.copy())
        runs.append(np.array(seen))
        venv.close()
    assert np.array_equal(runs[0], runs[1])
    other, layer = _stack(8)
    assert not np.array_equal(layer.lambdas, runs[0][0])
    other.close()


def test_heldout_and_evaluate_show_the_policy_the_multipliers_lambda(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Training, held-out evaluation, ``bystander evaluate`` and a resume: the figures
    logged during training equal ``evaluate_run`` on the checkpoint (lambda held by the
    multiplier's delay), and both show the policy the multiplier's lambda; so does the
    ``lambda_curve`` probe."""
    run = tmp_path / "run"
    sets = [*CONDITIONED, "constraint.delay=10", "eval.heldout_episodes=6",
            "train.hyperparams.n_steps=64", "train.hyperparams.batch_size=64",
            "train.tensorboard=false"]  # fmt: skip
    args = ["train", "--timesteps", "1024", "--run-dir", str(run), "--n-envs", "4",
            "--eval-every", "512", "--no-evaluate"] + [a for s in sets for a in ("--set", s)]  # fmt: skip
    assert main(args) == 0
    with open(run / "logs" / "heldout.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(float(r["step"])) for r in rows] == [512, 1024]
    final = evaluate_run(run, episodes=6).summary
    for key in ("success", "collision", "stand_still_fraction", "cost_predictability_per_metre"):
        assert float(rows[-1][key]) == pytest.approx(final[key]["mean"], rel=1e-9), key
    cfg = load_config(run / "config.yaml")
    multipliers = build_multipliers(cfg)
    observe = policy_observations(cfg, multipliers)
    assert observe is not None
    assert observe(np.zeros((1, 3), np.float32))[0, -1] == pytest.approx(lambda_feature(0.5))
    multipliers["predictability"].set_value(2.0)  # read at each call
    assert observe(np.zeros((1, 3), np.float32))[0, -1] == pytest.approx(lambda_feature(2.0))
    assert policy_observations(load_config(), {}) is None
    # the probe of the curve: at the final lambda (0.5), evaluate's figures again
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments" / "probes"))
    import lambda_curve

    capsys.readouterr()
    assert lambda_curve.main([str(run), "--lams", "0.5,3", "--episodes", "6"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["lambda", "success", "cost", "[m/m]", "stand-still"]
    rows = {line.split()[0]: line.split()[1:] for line in out[2:]}
    assert float(rows["0.5"][0]) == pytest.approx(final["success"]["mean"], abs=0.005)
    assert float(rows["0.5"][1]) == pytest.approx(
        final["cost_predictability_per_metre"]["mean"], abs=5e-4
    )
    assert "3" in rows
    assert main(["train", "--resume", str(run), "--timesteps", "1536", *args[5:]]) == 0
    with open(run / "logs" / "heldout.csv", newline="") as f:
        assert [int(float(r["step"])) for r in csv.DictReader(f)] == [512, 1024, 1536]


def test_evaluation_shows_the_final_lambda_and_a_resume_keeps_the_draws(
    tmp_path: Path, straight_and_resumed
) -> None:
    """A run whose lambda moved: ``load_run`` shows the policy the checkpoint's final
    lambda (not ``lambda_init``); a resume from the first checkpoint trains to the same
    parameters and the same lambdas per world as the straight run (SB3's ``load``
    seeds the restored stack again; the draws must not restart)."""
    from bystander.agents.evaluation import load_run

    sets = [*CONDITIONED, "constraint.delay=0", "constraint.lambda_lr=2.0",
            "eval.heldout_episodes=4", "train.n_envs=4", "train.hyperparams.n_steps=32",
            "train.hyperparams.batch_size=64", "train.tensorboard=false",
            "env.config.max_cycles=40", "train.total_timesteps=384",
            "train.checkpoint_every=128", "eval.every=128", f"runs_dir={tmp_path}"]  # fmt: skip
    with straight_and_resumed(load_config(overrides=sets), tmp_path) as runs:
        layers = [find_layer(t.venv, ConditionedLagrangianVecReward) for t in runs]
        assert np.array_equal(layers[0].lambdas, layers[1].lambdas)
        final = runs[0].multipliers["predictability"].value
    assert final != pytest.approx(0.5)  # lambda moved
    *_, multipliers, observe = load_run(tmp_path / "straight")
    assert multipliers["predictability"].value == pytest.approx(final)
    assert observe(np.zeros((2, 5), np.float32))[:, -1] == pytest.approx([np.log(final)] * 2)


def test_search_sets_lambda_where_the_measured_curve_meets_the_budget(
    tmp_path: Path, straight_and_resumed
) -> None:
    """``constraint.lambda_step: search``: each held-out evaluation is preceded by a
    search whose lambda is the crossing of the window's mean curve (after the delay);
    its figures are the single env's episodes on the documented tuning seeds at each
    grid lambda (the same seeds for every lambda of a search); the searches survive a resume; the run ends at the last one's lambda."""
    from bystander.agents.conditioning import fixed_lambda_observations
    from bystander.agents.evaluation import evaluate_policy, load_run
    from bystander.agents.heldout import SEARCH_SEED_OFFSET
    from bystander.agents.training import load_obs_normalizer
    from bystander.envs.multipliers import budget_crossing

    sets = [*CONDITIONED, "constraint.lambda_step=search", "constraint.delay=1",
            "constraint.budget=0.2",
            "constraint.window=2", "constraint.search_points=3",
            "constraint.search_episodes=2", "eval.heldout_episodes=4", "train.n_envs=4",
            "train.hyperparams.n_steps=32", "train.hyperparams.batch_size=64",
            "train.tensorboard=false", "env.config.max_cycles=40",
            "train.total_timesteps=384", "train.checkpoint_every=128", "eval.every=128",
            f"runs_dir={tmp_path}"]  # fmt: skip
    with straight_and_resumed(load_config(overrides=sets), tmp_path) as runs:
        assert runs[0].heldout.searches == runs[1].heldout.searches
        final = runs[0].multipliers["predictability"].value
    with open(tmp_path / "straight" / "logs" / "lambda_search.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(float(r["step"])) for r in rows] == [128, 256, 384]
    grid = np.geomspace(0.1, 3.0, 3)
    curves = np.array([[float(r[f"cost@{x:.4g}"]) for x in grid] for r in rows])
    lams = [float(r["lambda"]) for r in rows]
    assert lams[0] == pytest.approx(0.5)  # the delay
    for k in (1, 2):
        expected = budget_crossing(grid.tolist(), curves[k - 1 : k + 1].mean(0).tolist(), 0.2)
        assert lams[k] == pytest.approx(float(np.clip(expected, 0.1, 3.0)), rel=1e-12)
    assert final == pytest.approx(lams[-1], rel=1e-12)
    assert 0.1 < lams[-1] < 3.0  # a crossing inside the grid, not a clamp
    # the last (third) search, replayed on the single env: every grid lambda plays the
    # same 2 tuning seeds, eval.seed + SEARCH_SEED_OFFSET + 2 * 2 + m (new ones each search)
    model, cfg, _, multipliers, _ = load_run(tmp_path / "straight")
    assert multipliers["predictability"].value == pytest.approx(lams[-1])
    normalize = load_obs_normalizer(tmp_path / "straight")
    for j, lam in enumerate(grid):
        costs = [
            evaluate_policy(
                model,
                cfg,
                episodes=1,
                seed=cfg.eval.seed + SEARCH_SEED_OFFSET + 4 + m,
                obs_normalizer=fixed_lambda_observations(lam, normalize),
            ).episodes[0]["cost_predictability_per_metre"]  # fmt: skip
            for m in range(2)
        ]
        assert np.mean(costs) == pytest.approx(curves[-1][j], rel=1e-9), lam
