"""Held rollout noise (``train.exploration_hold``, :class:`HeldNoisePolicy`): averaged
over the noise each step's action is distributed as the policy says, an explored action
is kept for the hold's mean number of steps, and a resumed run continues the same
draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces

from bystander.agents.models import HeldNoisePolicy, KLPriorPolicy, build_model
from bystander.agents.stack import build_vec_env
from bystander.agents.training import Trainer, load_policy
from bystander.config import load_config

PROBS = torch.tensor([0.6, 0.25, 0.1, 0.05])


def _policy(hold: float) -> HeldNoisePolicy:
    """A policy whose logits are ``log(PROBS)`` whatever the observation."""
    policy = HeldNoisePolicy(spaces.Box(-1, 1, (3,)), spaces.Discrete(4), lambda _: 1e-3,
                             noise_hold=hold, net_arch=[8])  # fmt: skip
    with torch.no_grad():
        policy.action_net.weight.zero_()
        policy.action_net.bias.copy_(torch.log(PROBS))
    return policy


def _rollout(policy: HeldNoisePolicy, envs: int = 2000, steps: int = 60) -> np.ndarray:
    obs = torch.zeros(envs, 3)
    out = []
    with torch.no_grad():
        for _ in range(steps):
            actions, _, log_prob = policy(obs)
            torch.testing.assert_close(log_prob, torch.log(PROBS)[actions])
            out.append(actions.numpy())
    return np.array(out)  # (steps, envs)


@pytest.mark.parametrize("hold", [0.0, 10.0])
def test_each_step_is_distributed_as_the_policy_and_held_for_its_mean(hold: float) -> None:
    torch.manual_seed(0)
    a = _rollout(_policy(hold))
    freq = np.bincount(a.ravel(), minlength=4) / a.size
    assert freq == pytest.approx(PROBS.numpy(), abs=0.01)
    same = np.mean(a[1:] == a[:-1])
    iid = float((PROBS**2).sum())  # a fresh draw repeats with this probability
    expected = iid if hold <= 1 else (1 - 1 / hold) + iid / hold
    assert same == pytest.approx(expected, abs=0.01)
    greedy, _, _ = _policy(hold)(torch.zeros(5, 3), deterministic=True)
    assert greedy.tolist() == [0] * 5


def test_no_hold_is_ppos_own_sampling() -> None:
    from stable_baselines3.common.policies import ActorCriticPolicy

    torch.manual_seed(3)
    held = _policy(1.0)
    torch.manual_seed(3)
    plain = ActorCriticPolicy(spaces.Box(-1, 1, (3,)), spaces.Discrete(4), lambda _: 1e-3,
                              net_arch=[8])  # fmt: skip
    plain.load_state_dict(held.state_dict())
    for _ in range(3):
        state = torch.get_rng_state()
        a = held(torch.zeros(64, 3))[0]
        torch.set_rng_state(state)
        assert torch.equal(a, plain(torch.zeros(64, 3))[0])


@pytest.mark.parametrize(
    ("overrides", "match"),
    [(["train.exploration_hold=-1"], "train.exploration_hold: expected a finite number >= 0"),
     (["train.exploration_hold=4", "train.algo=dqn"], "train.exploration_hold: expected 0 or 1"),
     (["train.exploration_hold=4", "train.policy=CnnPolicy"], "train.exploration_hold")],
)  # fmt: skip
def test_bad_holds_name_the_field(overrides: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_config(overrides=overrides)


def test_continuous_actions_refuse_a_hold() -> None:
    with pytest.raises(ValueError, match="train.exploration_hold: expected 0 or 1 for a Box"):
        HeldNoisePolicy(spaces.Box(-1, 1, (3,)), spaces.Box(-1, 1, (2,)), lambda _: 1e-3,
                        noise_hold=5)  # fmt: skip


def test_the_hold_trains_saves_loads_and_combines_with_a_prior(tmp_path: Path) -> None:
    sets = ["train.n_envs=8", "train.hyperparams.n_steps=16", "train.hyperparams.batch_size=64",
            "train.tensorboard=false", "train.exploration_hold=20"]  # fmt: skip
    cfg = load_config(overrides=sets)
    venv = build_vec_env(cfg, None, {})
    try:
        model = build_model(cfg, venv)
        assert type(model.policy) is HeldNoisePolicy and model.policy.noise_hold == 20
        prior = load_config(overrides=[*sets, "train.entropy_prior=[0.5, 0.1, 0.1, 0.1, 0.1, 0.1]"])
        both = build_model(prior, venv)
        assert type(both.policy) is KLPriorPolicy and both.policy.noise_hold == 20
        with pytest.raises(ValueError, match="expected a HeldNoisePolicy subclass"):
            build_model(cfg, venv, policy="MlpPolicy")
    finally:
        venv.close()
    run = tmp_path / "run"
    trainer = Trainer(load_config(overrides=[*sets, "train.total_timesteps=256"]), run_dir=run)
    try:
        trainer.train()
        assert trainer.model.policy.held_noise.shape == (8, 6)
    finally:
        trainer.close()
    loaded, _ = load_policy(run)
    assert isinstance(loaded.policy, HeldNoisePolicy) and loaded.policy.noise_hold == 20


def test_a_resume_continues_the_same_held_draws(tmp_path: Path, straight_and_resumed) -> None:
    sets = ["train.vec_env=dummy", "train.n_envs=2", "train.hyperparams.n_steps=64",
            "train.hyperparams.batch_size=64", "train.hyperparams.n_epochs=2",
            "train.tensorboard=false", "env.config.max_cycles=60", "train.exploration_hold=30",
            "train.total_timesteps=384", "train.checkpoint_every=128"]  # fmt: skip
    cfg = load_config(overrides=[*sets, f"runs_dir={tmp_path}"])
    with straight_and_resumed(cfg, tmp_path) as (straight, resumed):
        assert torch.equal(straight.model.policy.held_noise, resumed.model.policy.held_noise)
