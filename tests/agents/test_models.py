"""The calm-prior policy (``train.entropy_prior``) and the training-only env overrides
(``env.train_overrides``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.distributions import Categorical, kl_divergence

from bystander.agents.heldout import evaluate_batched
from bystander.agents.models import KLPriorCategorical, KLPriorPolicy, build_model
from bystander.agents.stack import build_vec_env, make_env
from bystander.agents.training import Trainer, load_policy
from bystander.config import load_config

PRIOR = [0.05, 0.45, 0.05, 0.15, 0.15, 0.15]
STARTS = "env.train_overrides={start_target_speeds: [0, 3, 6, 9, 12]}"
SMALL = [
    "train.n_envs=8",
    "train.hyperparams.n_steps=16",
    "train.hyperparams.batch_size=64",
    "train.hyperparams.n_epochs=1",
    "train.tensorboard=false",
]


def test_kl_prior_entropy_is_minus_the_kl_to_the_prior() -> None:
    logits = torch.randn(32, 6, generator=torch.Generator().manual_seed(0))
    dist = KLPriorCategorical(6, PRIOR).proba_distribution(action_logits=logits)
    expected = -kl_divergence(Categorical(logits=logits), Categorical(probs=torch.tensor(PRIOR)))
    torch.testing.assert_close(dist.entropy(), expected)
    # at the prior itself the "entropy" is 0, its largest value
    at_prior = KLPriorCategorical(6, PRIOR).proba_distribution(torch.log(torch.tensor([PRIOR])))
    assert abs(float(at_prior.entropy())) < 1e-6


def test_a_uniform_prior_gives_ppos_own_updates() -> None:
    """-KL(pi || uniform) = H(pi) - log n: the same gradient, so the same PPO update."""
    params = []
    for prior in (None, [1 / 6] * 6):
        sets = SMALL + ([] if prior is None else [f"train.entropy_prior={prior}"])
        cfg = load_config(overrides=sets)
        venv = build_vec_env(cfg, None, {})
        try:
            model = build_model(cfg, venv)
            model.learn(cfg.train.n_envs * 16)
        finally:
            venv.close()
        params.append(torch.nn.utils.parameters_to_vector(model.policy.parameters()))
    torch.testing.assert_close(params[0], params[1], atol=1e-5, rtol=1e-5)


def test_entropy_prior_trains_saves_and_loads(tmp_path: Path) -> None:
    cfg = load_config(
        overrides=[*SMALL, f"train.entropy_prior={PRIOR}", "train.total_timesteps=256"]
    )
    trainer = Trainer(cfg, run_dir=tmp_path / "run")
    try:
        trainer.train()
        obs = trainer.venv.reset()
        want, _ = trainer.model.predict(obs, deterministic=True)
    finally:
        trainer.close()
    model, loaded_cfg = load_policy(tmp_path / "run")
    assert isinstance(model.policy, KLPriorPolicy) and model.policy.prior == PRIOR
    assert isinstance(model.policy.action_dist, KLPriorCategorical)
    assert loaded_cfg.train.entropy_prior == PRIOR
    got, _ = model.predict(obs, deterministic=True)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["train.entropy_prior=[0.5, 0.5]"], r"train\.entropy_prior: expected 6 positive"),
        (
            ["train.entropy_prior=[0.5, 0.5]", "env.config.action_type=continuous"],
            r"train\.entropy_prior: expected null for a Box action space",
        ),
    ],
)
def test_a_prior_that_does_not_fit_the_actions_is_refused(overrides, match) -> None:
    cfg = load_config(overrides=SMALL + overrides)
    venv = build_vec_env(cfg, None, {})
    try:
        with pytest.raises(ValueError, match=match):
            build_model(cfg, venv)
    finally:
        venv.close()


@pytest.mark.parametrize("prior", ["[0.5, 0.6]", "[1.0, 0.0]", "[-0.5, 1.5]", "0.5", "[a, b]"])
def test_bad_priors_are_refused_by_the_config(prior: str) -> None:
    with pytest.raises((ValueError, TypeError), match=r"train\.entropy_prior"):
        load_config(overrides=[f"train.entropy_prior={prior}"])
    with pytest.raises(ValueError, match=r"train\.entropy_prior: expected null, or \(PPO only\)"):
        load_config(overrides=["train.entropy_prior=[0.5, 0.5]", "train.algo=dqn"])
    with pytest.raises(
        ValueError, match=r"train\.policy: expected 'MlpPolicy' with train\.entropy"
    ):
        load_config(overrides=[f"train.entropy_prior={PRIOR}", "train.policy=CnnPolicy"])


def test_an_explicit_policy_class_must_carry_the_prior() -> None:
    from stable_baselines3.common.policies import ActorCriticPolicy

    cfg = load_config(overrides=[*SMALL, f"train.entropy_prior={PRIOR}"])
    venv = build_vec_env(cfg, None, {})
    try:
        with pytest.raises(ValueError, match=r"policy: expected a KLPriorPolicy subclass"):
            build_model(cfg, venv, policy=ActorCriticPolicy)

        class Marked(KLPriorPolicy):
            pass

        assert isinstance(build_model(cfg, venv, policy=Marked).policy, Marked)
    finally:
        venv.close()


def _start_targets(obs: np.ndarray) -> set[float]:
    return {round(float(v) * 12.0, 3) for v in obs[:, 6]}  # target speed / ego_max_speed


def test_train_overrides_reach_the_training_envs_only() -> None:
    cfg = load_config(overrides=[*SMALL, "train.n_envs=64", STARTS, "eval.every=1024"])
    assert cfg.env.train_config["start_target_speeds"] == [0, 3, 6, 9, 12]
    assert "start_target_speeds" not in cfg.env.config
    train_env = build_vec_env(cfg, None, {})
    try:
        assert _start_targets(train_env.reset()) == {0.0, 3.0, 6.0, 9.0, 12.0}
    finally:
        train_env.close()

    class FirstObs:  # the held-out evaluation's policy: records the first observation
        first: np.ndarray | None = None

        def predict(self, obs: np.ndarray, deterministic: bool = True):
            self.first = obs if self.first is None else self.first
            return np.ones(len(obs), dtype=np.int64), None

    policy = FirstObs()
    evaluate_batched(policy, cfg, episodes=32, max_steps=3)
    assert _start_targets(policy.first) == {6.0}
    single = make_env(cfg)  # bystander evaluate / render: the task's own start
    obs, _ = single.reset(seed=0)
    assert round(float(obs[6]) * 12.0, 3) == 6.0
    cfg_d = load_config(overrides=[*SMALL, "train.n_envs=16", STARTS, "train.vec_env=dummy"])
    venv = build_vec_env(cfg_d, None, {})  # one Gymnasium env per world
    try:
        assert len(_start_targets(venv.reset())) > 1
    finally:
        venv.close()


@pytest.mark.parametrize(
    "override, match",
    [
        ("env.train_overrides={n_nearest: 4}", r"env\.train_overrides: expected keys among"),
        ("env.train_overrides={grid: [2, 2]}", r"env\.train_overrides: expected keys among"),
        ("env.train_overrides={ego_max_speed: 9}", r"env\.train_overrides: expected keys among"),
        ("env.train_overrides={bogus: 1}", r"env\.train_overrides: expected keys among"),
        ("env.train_overrides=3", r"env\.train_overrides: expected a mapping"),
        (
            "env.train_overrides={start_target_speeds: [13]}",
            r"env\.train_overrides\.start_target_speeds: expected 1-64 speeds",
        ),
    ],
)
def test_bad_train_overrides_name_the_field(override: str, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        load_config(overrides=[override])
