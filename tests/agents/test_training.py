"""SB3 training on the intersection: learning happens, constraint modes, algorithms, sync."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from bystander.agents.evaluation import evaluate_policy
from bystander.agents.stack import build_vec_env, make_env
from bystander.agents.training import Trainer
from bystander.cli import main
from bystander.config import load_config

FAST = [
    "train.vec_env=dummy",
    "train.tensorboard=false",
    "train.n_envs=2",
    "train.hyperparams.n_steps=64",
    "train.hyperparams.batch_size=64",
    "train.hyperparams.n_epochs=2",
    "env.config.max_cycles=80",
]

# Quiet roads (no scripted traffic): the ego must learn to keep moving and to take
# the turn its route needs (a wrong turn leaves the map), which a random policy
# rarely does.
EASY_ENV = [
    "env.config.n_cars=0",
    "env.config.car_rate=0.0",
    "env.config.n_cyclists=0",
    "env.config.cyclist_rate=0.0",
    "env.config.n_pedestrians=1",
    "env.config.pedestrian_rate=0.0",
]


class RandomPolicy:
    """The scripted random baseline: uniform actions from a seeded action space."""

    def __init__(self, space, seed: int = 0) -> None:
        self.space = space
        self.space.seed(seed)

    def predict(self, obs, deterministic: bool = True):
        return self.space.sample(), None


@pytest.mark.slow
def test_ppo_learns_beyond_random_baseline(tmp_path: Path) -> None:
    cfg = load_config(
        overrides=[
            f"runs_dir={tmp_path}",
            "train.tensorboard=false",
            "train.vec_env=batched",
            "train.seed=0",
            "train.total_timesteps=8192",
            "train.n_envs=8",
            "train.hyperparams.n_steps=64",
            "train.hyperparams.batch_size=128",
            "train.hyperparams.n_epochs=8",
            "train.hyperparams.learning_rate=0.001",
            *EASY_ENV,
        ]
    )
    trainer = Trainer(cfg)
    try:
        result = trainer.train()
        space = trainer.venv.action_space
    finally:
        trainer.close()
    assert result.steps == 8192
    kw = {"episodes": 12, "seed": 777}
    learned = evaluate_policy(trainer.model, cfg, **kw)
    random = evaluate_policy(RandomPolicy(space), cfg, **kw)
    assert learned.metric("task_return") > random.metric("task_return") + 0.5
    assert learned.metric("success") > random.metric("success")
    # the run directory holds everything a user needs
    for name in ("config.yaml", "model.zip", "train_summary.json", "checkpoints/latest"):
        assert (result.run_dir / name).exists(), name


@pytest.mark.parametrize("mode", ["shaping", "pid"])
def test_constraint_modes_penalise_the_reward(mode: str, tmp_path: Path) -> None:
    cfg = load_config(
        overrides=[
            *FAST,
            f"runs_dir={tmp_path}",
            f"constraint.mode={mode}",
            "train.total_timesteps=128",
        ]
    )
    trainer = Trainer(cfg)
    try:
        trainer.train()
        env = make_env(cfg, predictor=trainer.predictor, multipliers=trainer.multipliers)
        env.reset(seed=3)
        penalties = []
        for _ in range(40):
            _, _, term, trunc, info = env.step(1)
            penalties.append(info["rewards"]["penalty"])
            if term or trunc:
                break
        assert min(penalties) <= 0.0
        if mode == "pid":
            assert "predictability" in info["lambdas"]
    finally:
        trainer.close()


def test_subprocess_envs_get_the_updated_lambda(tmp_path: Path) -> None:
    cfg = load_config(
        overrides=[
            *FAST,
            f"runs_dir={tmp_path}",
            "train.vec_env=subproc",
            "constraint.mode=lagrangian",
            "constraint.budget=0.0",
            "constraint.lambda_init=0.1",
            "constraint.lambda_max=5.0",
            "constraint.delay=0",
            "constraint.lambda_lr=0.05",
            "train.total_timesteps=384",
            "env.config.max_cycles=40",
        ]
    )
    trainer = Trainer(cfg)
    try:
        trainer.train()
        lam = trainer.multipliers["predictability"].value
        assert lam > 0.1  # budget 0: any cost pushes lambda up
        assert trainer.venv.env_method("get_lambda", "predictability") == [pytest.approx(lam)] * 2
    finally:
        trainer.close()


def test_cotrained_predictor_is_updated_and_synced(tmp_path: Path) -> None:
    cfg = load_config(
        overrides=[
            *FAST,
            f"runs_dir={tmp_path}",
            "predictor.kind=cotrained",
            "predictor.batch_size=64",
            "predictor.buffer_size=512",
            "train.total_timesteps=256",
        ]
    )
    trainer = Trainer(cfg)
    try:
        before = {k: v.clone() for k, v in trainer.predictor.net.state_dict().items()}
        trainer.train()
        after = trainer.predictor.net.state_dict()
        assert trainer.predictor.updates > 0
        assert any(not torch.equal(before[k], after[k]) for k in before)
        # every env's predictor copy holds the master weights
        for env in trainer.venv.envs:
            copy = env.get_wrapper_attr("copies").predictor.net.state_dict()
            assert all(torch.equal(copy[k], after[k]) for k in after)
        assert (trainer.run_dir / "predictor.pt").is_file()
    finally:
        trainer.close()


def test_cotrained_predictor_is_updated_on_the_batched_env(tmp_path: Path) -> None:
    cfg = load_config(
        overrides=[
            *FAST,
            f"runs_dir={tmp_path}",
            "train.vec_env=batched",
            "predictor.kind=cotrained",
            "predictor.batch_size=64",
            "predictor.buffer_size=512",
            "train.total_timesteps=256",
        ]
    )
    trainer = Trainer(cfg)
    try:
        before = {k: v.clone() for k, v in trainer.predictor.net.state_dict().items()}
        trainer.train()
        after = trainer.predictor.net.state_dict()
        assert trainer.predictor.updates > 0
        assert any(not torch.equal(before[k], after[k]) for k in before)
        hooks = trainer.venv
        while "copies" not in vars(hooks):
            hooks = hooks.venv
        copy = hooks.copies.predictor.net.state_dict()  # the batched env's predictor copy
        assert all(torch.equal(copy[k], after[k]) for k in after)
    finally:
        trainer.close()


@pytest.mark.parametrize(
    ("algo", "extra"),
    [
        ("dqn", ["train.hyperparams.learning_starts=32", "train.hyperparams.buffer_size=1000"]),
        (
            "sac",
            [
                "env.config.action_type=continuous",
                "train.n_envs=1",
                "train.hyperparams.learning_starts=32",
                "train.hyperparams.buffer_size=1000",
                "train.hyperparams.batch_size=32",
            ],
        ),
    ],
)
def test_dqn_and_sac_train(algo: str, extra: list[str], tmp_path: Path) -> None:
    cfg = load_config(
        overrides=[
            "train.tensorboard=false",
            "train.n_envs=2",
            f"runs_dir={tmp_path}",
            f"train.algo={algo}",
            "train.total_timesteps=96",
            "env.config.max_cycles=40",
            *extra,
        ]
    )
    trainer = Trainer(cfg)
    try:
        result = trainer.train()
        assert result.steps >= 96
        assert (result.checkpoint / "replay_buffer.pkl").is_file()
    finally:
        trainer.close()


def test_vec_env_is_seeded_and_reproducible(tmp_path: Path) -> None:
    cfg = load_config(overrides=[*FAST, f"runs_dir={tmp_path}"])
    obs = []
    for _ in range(2):
        venv = build_vec_env(cfg, None, {})
        o = venv.reset()
        for _ in range(5):
            o, _, _, _ = venv.step(np.array([1, 2]))
        obs.append(o)
        venv.close()
    assert np.array_equal(obs[0], obs[1])


def test_batch_size_must_divide_the_rollout(tmp_path: Path) -> None:
    cfg = load_config(overrides=[*FAST, f"runs_dir={tmp_path}", "train.hyperparams.batch_size=48"])
    with pytest.raises(ValueError, match="train.hyperparams.batch_size"):
        Trainer(cfg)


def test_batched_training_resumes_exactly_and_syncs(tmp_path: Path) -> None:
    cfg = load_config(
        overrides=[
            *FAST,
            f"runs_dir={tmp_path}",
            "train.vec_env=batched",
            "train.n_envs=4",
            "constraint.mode=lagrangian",
            "constraint.budget=0.0",
            "constraint.lambda_init=0.1",
            "constraint.lambda_max=5.0",
            "constraint.delay=0",
            "train.total_timesteps=768",
            "train.checkpoint_every=256",
        ]
    )
    a = Trainer(cfg, run_dir=tmp_path / "a")
    try:
        a.train()
    finally:
        a.close()
    first = sorted((tmp_path / "a" / "checkpoints").glob("step_*"))[0]
    b = Trainer(cfg, run_dir=tmp_path / "b", resume=first)
    try:
        b.train()
    finally:
        b.close()
    pa, pb = a.model.policy.state_dict(), b.model.policy.state_dict()
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    lam = a.multipliers["predictability"].value
    assert lam > 0.1 and b.multipliers["predictability"].value == lam
    assert a.venv.env_method("get_lambda", "predictability") == [lam] * 4


def test_review_gate_in_the_training_stack(tmp_path: Path) -> None:
    cfg = load_config(
        overrides=[
            *FAST,
            f"runs_dir={tmp_path}",
            "review.enabled=true",
            "review.threshold=0.0",
            "train.total_timesteps=128",
        ]
    )
    env = make_env(cfg, predictor=None)
    env.reset(seed=1)
    _, _, _, _, info = env.step(2)
    assert isinstance(info["escalated"], bool) and info["review_cost"] >= 0.0
    assert env.get_wrapper_attr("escalations") == int(info["escalated"])
    with pytest.raises(ValueError, match="batched"):
        Trainer(load_config(overrides=[f"runs_dir={tmp_path}", "review.enabled=true"]))


@pytest.mark.parametrize("vec_env", ["dummy", "batched"])
def test_per_step_cost_normalization_divides_by_the_monitor_length(
    vec_env: str, tmp_path: Path
) -> None:
    """Both stacks: the multiplier sees mean(episode cost / Monitor length) of the rollout."""
    cfg = load_config(
        overrides=[
            *FAST,
            f"runs_dir={tmp_path}",
            f"train.vec_env={vec_env}",
            "constraint.mode=lagrangian",
            "constraint.cost_normalization=per_step",
            "constraint.budget=0.0",
            "env.config.max_cycles=30",
            "train.total_timesteps=128",  # one rollout of 2 envs x 64 steps
        ]
    )
    trainer = Trainer(cfg)
    try:
        trainer.train()
    finally:
        trainer.close()
    metrics = trainer.callbacks[0]
    episodes = list(metrics.episodes)
    assert len(episodes) >= 4 and all(ep["length"] <= 30 for ep in episodes)
    per_step = [ep["cost_predictability"] / ep["length"] for ep in episodes]
    assert [ep["cost_predictability_per_step"] for ep in episodes] == per_step
    seen = trainer.multipliers["predictability"].state_dict()["costs"]
    assert seen == [pytest.approx(float(np.mean(per_step)))]
    summed = float(np.mean([ep["cost_predictability"] for ep in episodes]))
    assert summed > 2 * seen[0] > 0  # the summed cost would be a different number


def test_per_step_cost_normalization_needs_the_episode_length() -> None:
    from types import SimpleNamespace

    from bystander.agents.callbacks import MultiplierCallback
    from bystander.envs.constraints import LagrangeMultiplier

    cfg = load_config(
        overrides=["constraint.mode=lagrangian", "constraint.cost_normalization=per_step"]
    )
    trainer = SimpleNamespace(cfg=cfg, multipliers={"predictability": LagrangeMultiplier(0.1)})
    cb = MultiplierCallback(trainer)  # type: ignore[arg-type]
    cb.locals = {
        "dones": np.array([False, True]),
        "infos": [{}, {"episode_costs": {"predictability": 6.0}, "episode": {"l": 20, "r": 0.0}}],
    }
    cb._on_step()
    assert cb.costs["predictability"] == [pytest.approx(0.3)]
    cb.locals["infos"][1].pop("episode")  # no Monitor in the stack
    with pytest.raises(ValueError, match=r'info\["episode"\]\["l"\]'):
        cb._on_step()


def test_linear_learning_rate_falls_over_the_whole_run_across_chunks(tmp_path: Path) -> None:
    """``train.lr_schedule=linear``: the rate each PPO update used is lr0 * (1 - step / total),
    with ``step`` the run's env steps, although the trainer learns in chunks (checkpoints
    every 512 steps) and SB3's own progress restarts at each chunk."""
    run = tmp_path / "run"
    args = ["train", "--timesteps", "2048", "--run-dir", str(run), "--n-envs", "4",
            "--set", "train.lr_schedule=linear", "--set", "train.checkpoint_every=512",
            "--set", "train.hyperparams.learning_rate=0.002",
            "--set", "train.hyperparams.n_steps=64", "--set", "train.hyperparams.batch_size=64",
            "--set", "train.tensorboard=false", "--no-evaluate"]  # fmt: skip
    assert main(args) == 0
    with open(run / "logs" / "progress.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/learning_rate")]
    got = [(int(float(r["time/total_timesteps"])), float(r["train/learning_rate"])) for r in rows]
    # SB3 writes an update's figures with the next rollout's row: the row at step s
    # carries the rate of the update after the rollout that ended at s - 256
    assert [s for s, _ in got] == [256 * k for k in range(2, 9)]
    for step, lr in got:
        assert lr == pytest.approx(0.002 * (1 - (step - 256) / 2048), abs=1e-12), step
    with pytest.raises(ValueError, match="train.lr_schedule"):
        load_config(overrides=["train.lr_schedule=cosine"])
    with pytest.raises(ValueError, match="train.lr_schedule"):
        load_config(overrides=["train.lr_schedule=linear", "train.algo=sac"])


def test_linear_entropy_bonus_falls_over_the_whole_run(tmp_path: Path) -> None:
    """``train.ent_schedule=linear``: PPO's ``ent_coef`` is ent0 * (1 - step / total) at
    each update, ``step`` the run's env steps (here half-way, then at the end)."""
    cfg = load_config(overrides=["train.ent_schedule=linear", "train.total_timesteps=2048",
                                 "train.n_envs=4", "train.hyperparams.n_steps=64",
                                 "train.hyperparams.batch_size=64",
                                 "train.hyperparams.ent_coef=0.02", "train.tensorboard=false"])  # fmt: skip
    trainer = Trainer(cfg, run_dir=tmp_path / "run")
    try:
        assert trainer.model.ent_coef == pytest.approx(0.02)
        trainer.train(total_timesteps=1024)
        assert trainer.model.ent_coef == pytest.approx(0.02 * (1 - 1024 / 2048))
        trainer.train()
        assert trainer.model.ent_coef == pytest.approx(0.0, abs=1e-12)
    finally:
        trainer.close()
    with pytest.raises(ValueError, match="train.ent_schedule"):
        load_config(overrides=["train.ent_schedule=linear", "train.algo=dqn"])


def test_build_model_takes_another_policy_class_and_extra_policy_kwargs() -> None:
    from stable_baselines3.common.policies import ActorCriticPolicy

    from bystander.agents.training import build_model

    class Marked(ActorCriticPolicy):
        pass

    cfg = load_config(overrides=["train.n_envs=4", "train.hyperparams.batch_size=64"])
    venv = build_vec_env(cfg, None, {})
    try:
        default = build_model(cfg, venv)
        model = build_model(cfg, venv, policy=Marked, policy_kwargs={"ortho_init": False})
    finally:
        venv.close()
    assert type(default.policy).__name__ == "ActorCriticPolicy" and default.policy.ortho_init
    assert isinstance(model.policy, Marked) and not model.policy.ortho_init
    assert model.policy.net_arch == default.policy.net_arch == list(cfg.train.net_arch)
