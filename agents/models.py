"""The SB3 algorithm of a run (:func:`build_model`) and the policy with a calm prior.

PPO's entropy bonus ``ent_coef * H(pi)`` pulls the policy toward the uniform
distribution over the actions. On the driving meta-actions that means a target-speed
change at a third of the steps, and the observers charge every such change (README,
"What the ego pays for its own exploration"). ``train.entropy_prior`` replaces the bonus
by ``-ent_coef * KL(pi || p0)`` toward a calm prior ``p0`` (e.g. SLOWER and FASTER 5 %
each, KEEP 45 %, each turn 15 %): the policy keeps exploring every action, rarely, and
never freezes into a deterministic one. With a uniform ``p0`` it is PPO's own bonus
shifted by the constant ``log(n)``, so the gradient is the same.
"""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3 import DQN, PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.distributions import CategoricalDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import VecEnv

from bystander.config import RunConfig, resolved_hyperparams
from bystander.dataconfig import is_distribution

__all__ = ["ALGO_CLASSES", "HeldNoisePolicy", "KLPriorCategorical", "KLPriorPolicy", "build_model"]

ALGO_CLASSES: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC, "dqn": DQN}


class KLPriorCategorical(CategoricalDistribution):
    """A categorical distribution whose :meth:`entropy` is ``-KL(pi || prior)`` [nats].

    Args:
        action_dim: Number of actions ``n``.
        prior: ``(n,)`` probabilities, each > 0.
    """

    def __init__(self, action_dim: int, prior: list[float]) -> None:
        super().__init__(action_dim)
        self.log_prior = torch.log(torch.as_tensor(prior, dtype=torch.float32))

    def entropy(self) -> torch.Tensor:
        """``-sum_a pi(a) (log pi(a) - log prior(a))``, shape ``(batch,)``."""
        logits = self.distribution.logits  # normalised log-probabilities
        log_prior = self.log_prior.to(device=logits.device, dtype=logits.dtype)
        return -(self.distribution.probs * (logits - log_prior)).sum(-1)


def gumbel(shape: tuple[int, ...]) -> torch.Tensor:
    """Standard Gumbel noise of ``shape`` from torch's global generator."""
    u = torch.rand(shape).clamp_(1e-10, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


class HeldNoisePolicy(ActorCriticPolicy):
    """SB3's actor-critic policy (``MlpPolicy``) whose rollout samples hold their noise.

    PPO samples a fresh action at every step, so an exploratory action lasts one step.
    On the driving env a cruise speed pays off only when it is kept for seconds, and a
    one-step excursion only costs (the observers charge the wobble), so per-step
    exploration never shows PPO a slower cruise (README "Exploration that holds").
    Here each env's rollout action is ``argmax(logits + g)`` (the Gumbel-max trick) with
    a Gumbel vector ``g`` that the env keeps for a geometric number of steps of mean
    ``noise_hold``. A fresh ``g`` makes the action a draw from ``pi(.|s)``; a held one
    repeats an explored action while the policy stays close, like gSDE's held noise for
    continuous actions. Averaged over the noise each step's action is still distributed
    as ``pi(.|s)`` and its log-probability is PPO's, but given the history it is not:
    the noise that chose the last actions (and so the state) tends to choose the same
    again, so PPO's ratios carry the same kind of bias as with gSDE. The noise is not
    redrawn at episode ends (the policy does not see them): a hold may span two
    episodes. Greedy and ``predict`` sampling are unchanged; ``noise_hold <= 1`` is
    PPO's own sampling.

    The noise comes from torch's global generator (seeded with the run) and
    :attr:`held_noise` ``(n_envs, n_actions)`` is saved in checkpoints, so a resumed run
    continues the same draws.

    Args:
        observation_space, action_space, lr_schedule: As ``ActorCriticPolicy``
            (``action_space`` must be ``Discrete(n)``).
        noise_hold: Mean steps the noise is held (>= 0; ``train.exploration_hold``).
        **kwargs: ``ActorCriticPolicy``'s (``net_arch``...).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Any,
        *,
        noise_hold: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if noise_hold > 1 and not isinstance(action_space, spaces.Discrete):
            raise ValueError(
                f"train.exploration_hold: expected 0 or 1 for a {type(action_space).__name__} "
                "action space (held Gumbel noise needs discrete actions)"
            )
        self.noise_hold = float(noise_hold)
        self.held_noise: torch.Tensor | None = None
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "noise_hold": self.noise_hold}

    def forward(
        self, obs: torch.Tensor, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SB3's rollout step (actions, values, log-probabilities), with held noise."""
        if deterministic or self.noise_hold <= 1:
            return super().forward(obs, deterministic)
        features = self.extract_features(obs)
        if self.share_features_extractor:
            latent_pi, latent_vf = self.mlp_extractor(features)
        else:
            pi_features, vf_features = features
            latent_pi = self.mlp_extractor.forward_actor(pi_features)
            latent_vf = self.mlp_extractor.forward_critic(vf_features)
        values = self.value_net(latent_vf)
        distribution = self._get_action_dist_from_latent(latent_pi)
        logits = distribution.distribution.logits
        g = self.held_noise
        if g is None or g.shape != logits.shape:  # first step (or another env count)
            g = gumbel(tuple(logits.shape))
        else:
            redraw = torch.rand(len(g)) < 1.0 / self.noise_hold
            g = torch.where(redraw[:, None], gumbel(tuple(g.shape)), g)
        self.held_noise = g
        actions = torch.argmax(logits + g.to(logits.device), dim=1)
        return actions, values, distribution.log_prob(actions)


class KLPriorPolicy(HeldNoisePolicy):
    """SB3's actor-critic policy (``MlpPolicy``) with :class:`KLPriorCategorical` as its
    action distribution, so PPO's ``ent_coef`` weighs ``-KL(pi || prior)``. Saved and
    loaded like any SB3 policy (``prior`` is a constructor argument).

    Args:
        observation_space, action_space, lr_schedule: As ``ActorCriticPolicy``
            (``action_space`` must be ``Discrete(n)``).
        prior: ``(n,)`` positive probabilities summing to 1.
        **kwargs: ``ActorCriticPolicy``'s (``net_arch``...).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Any,
        *,
        prior: list[float],
        **kwargs: Any,
    ) -> None:
        check_prior(prior, action_space)
        self.prior = [float(p) for p in prior]
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)
        self.action_dist = KLPriorCategorical(int(action_space.n), self.prior)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "prior": self.prior}


def check_prior(prior: Any, action_space: spaces.Space, path: str = "train.entropy_prior") -> None:
    """Raise ``ValueError`` naming ``path`` unless ``prior`` is ``n`` positive
    probabilities summing to 1 (within 1e-6) for the ``Discrete(n)`` ``action_space``."""
    if not isinstance(action_space, spaces.Discrete):
        raise ValueError(
            f"{path}: expected null for a {type(action_space).__name__} action space "
            "(a prior needs discrete actions)"
        )
    n = int(action_space.n)
    if not is_distribution(prior, n):
        raise ValueError(f"{path}: expected {n} positive probabilities summing to 1, got {prior!r}")


def build_model(
    cfg: RunConfig,
    venv: VecEnv,
    *,
    policy: Any = None,
    policy_kwargs: dict[str, Any] | None = None,
) -> BaseAlgorithm:
    """A fresh SB3 algorithm (``train.algo``) with ``resolved_hyperparams``.

    Args:
        cfg: Run config (``train`` section). ``train.exploration_hold`` > 1 selects
            :class:`HeldNoisePolicy`, ``train.entropy_prior`` :class:`KLPriorPolicy`
            (which holds noise too) with that prior.
        venv: The training VecEnv.
        policy: An SB3 policy class or name in place of ``train.policy``.
        policy_kwargs: Extra ``policy_kwargs`` besides ``net_arch`` (``train.net_arch``).
    """
    cls = ALGO_CLASSES[cfg.train.algo]
    hp = resolved_hyperparams(cfg.train)
    if cfg.train.algo == "ppo":
        rollout = hp.get("n_steps", 2048) * venv.num_envs
        if rollout % hp.get("batch_size", 64) != 0 and rollout > 1:
            # SB3 warns and drops a truncated minibatch; be explicit instead.
            raise ValueError(
                f"train.hyperparams.batch_size: expected a divisor of n_steps * n_envs "
                f"({rollout}), got {hp.get('batch_size', 64)}"
            )
    kwargs: dict[str, Any] = {"net_arch": list(cfg.train.net_arch), **(policy_kwargs or {})}
    if cfg.train.exploration_hold > 1:
        policy = HeldNoisePolicy if policy is None else policy
        if not (isinstance(policy, type) and issubclass(policy, HeldNoisePolicy)):
            raise ValueError(
                f"policy: expected a HeldNoisePolicy subclass with train.exploration_hold, "
                f"got {policy!r}"
            )
        kwargs["noise_hold"] = float(cfg.train.exploration_hold)
    prior = cfg.train.entropy_prior
    if prior is not None:
        check_prior(prior, venv.action_space)
        policy = KLPriorPolicy if policy in (None, HeldNoisePolicy) else policy
        if not (isinstance(policy, type) and issubclass(policy, KLPriorPolicy)):
            raise ValueError(
                f"policy: expected a KLPriorPolicy subclass with train.entropy_prior, got {policy!r}"
            )
        kwargs["prior"] = list(prior)
    return cls(
        cfg.train.policy if policy is None else policy,
        venv,
        seed=cfg.train.seed,
        device=cfg.train.device,
        policy_kwargs=kwargs,
        verbose=0,
        **hp,
    )
