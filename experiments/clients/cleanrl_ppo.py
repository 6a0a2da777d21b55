"""Single-file PPO in CleanRL's style on the native Gymnasium vector env.

A Gymnasium 1.x client of ``bystander/Intersection-v0``'s vector entry point, written
the way CleanRL's ``ppo.py`` is (one file, read top to bottom, no framework): it checks
that a researcher's own training loop can use the batched simulator through
``gymnasium.make_vec`` alone, with Gymnasium's own vector wrappers.

    python experiments/clients/cleanrl_ppo.py --total-timesteps 200000 --num-envs 64

Differences from CleanRL's script, all for Gymnasium 1.x: the env is built by
``gym.make_vec(..., vectorization_mode="vector_entry_point")`` (same-step autoreset, as
the env's metadata declares); episode statistics come from
``gym.wrappers.vector.RecordEpisodeStatistics`` (``infos["episode"]`` with ``_episode``
masks); a truncated episode bootstraps from the value of ``infos["final_obs"]`` (CleanRL
treats truncation as termination). Prints one line per update: steps, steps/s, mean
episodic return and success rate of the episodes that ended.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

import bystander.envs  # noqa: F401 - registers bystander/Intersection-v0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env-id", default="bystander/Intersection-v0")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--total-timesteps", type=int, default=200_000)
    p.add_argument("--num-envs", type=int, default=64)
    p.add_argument("--num-steps", type=int, default=32, help="steps per env per rollout")
    p.add_argument("--learning-rate", type=float, default=3e-4)
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--gae-lambda", type=float, default=0.95)
    p.add_argument("--num-minibatches", type=int, default=4)
    p.add_argument("--update-epochs", type=int, default=4)
    p.add_argument("--clip-coef", type=float, default=0.2)
    p.add_argument("--ent-coef", type=float, default=0.01)
    p.add_argument("--vf-coef", type=float, default=0.5)
    p.add_argument("--max-grad-norm", type=float, default=0.5)
    p.add_argument("--max-cycles", type=int, default=None, help="env config max_cycles")
    args = p.parse_args(argv)
    args.batch_size = args.num_envs * args.num_steps
    args.minibatch_size = args.batch_size // args.num_minibatches
    return args


def layer_init(layer: nn.Linear, std: float = float(np.sqrt(2)), bias: float = 0.0) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


class Agent(nn.Module):
    """Separate actor and critic MLPs (64-64, tanh) over the flat observation."""

    def __init__(self, n_obs: int, n_actions: int) -> None:
        super().__init__()
        self.critic = nn.Sequential(
            layer_init(nn.Linear(n_obs, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 1), std=1.0),
        )  # fmt: skip
        self.actor = nn.Sequential(
            layer_init(nn.Linear(n_obs, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, n_actions), std=0.01),
        )  # fmt: skip

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x)

    def get_action_and_value(self, x: torch.Tensor, action: torch.Tensor | None = None):
        dist = Categorical(logits=self.actor(x))
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.critic(x)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train; returns the last update's figures (``steps``, ``return``, ``success``)."""
    args = parse_args(argv)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    config = {} if args.max_cycles is None else {"max_cycles": args.max_cycles}
    envs = gym.make_vec(args.env_id, num_envs=args.num_envs,
                        vectorization_mode="vector_entry_point", config=config)  # fmt: skip
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    assert isinstance(envs.single_action_space, gym.spaces.Discrete), "discrete actions only"
    n_obs = int(np.prod(envs.single_observation_space.shape))
    agent = Agent(n_obs, int(envs.single_action_space.n))
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)

    T, N = args.num_steps, args.num_envs
    obs = torch.zeros((T, N, n_obs))
    actions = torch.zeros((T, N), dtype=torch.long)
    logprobs, rewards, dones, values = (torch.zeros((T, N)) for _ in range(4))

    next_obs_np, _ = envs.reset(seed=args.seed)
    next_obs = torch.as_tensor(next_obs_np, dtype=torch.float32)
    next_done = torch.zeros(N)
    global_step, start = 0, time.time()
    last: dict[str, float] = {}
    for update in range(1, args.total_timesteps // args.batch_size + 1):
        frac = 1.0 - (update - 1.0) / (args.total_timesteps // args.batch_size)
        optimizer.param_groups[0]["lr"] = frac * args.learning_rate
        returns_seen, success_seen = [], []
        for step in range(T):
            global_step += N
            obs[step], dones[step] = next_obs, next_done
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_obs)
            values[step], actions[step], logprobs[step] = value.flatten(), action, logprob
            next_obs_np, reward, term, trunc, infos = envs.step(action.numpy())
            reward = torch.as_tensor(reward, dtype=torch.float32)
            if trunc.any():  # time limit: bootstrap from the episode's last observation
                idx = np.flatnonzero(trunc & ~term)
                if len(idx):
                    final = torch.as_tensor(np.stack(infos["final_obs"][idx]), dtype=torch.float32)
                    with torch.no_grad():
                        reward[idx] += args.gamma * agent.get_value(final).flatten()
            rewards[step] = reward
            next_obs = torch.as_tensor(next_obs_np, dtype=torch.float32)
            next_done = torch.as_tensor(term | trunc, dtype=torch.float32)
            if "episode" in infos:
                ended = infos["_episode"]
                returns_seen += infos["episode"]["r"][ended].tolist()
                success_seen += infos["final_info"]["arrived"][ended].tolist()

        with torch.no_grad():  # GAE; a done flag cuts the trace (same-step autoreset)
            next_value = agent.get_value(next_obs).flatten()
            advantages = torch.zeros_like(rewards)
            lastgaelam = torch.zeros(N)
            for t in reversed(range(T)):
                nonterminal = 1.0 - (next_done if t == T - 1 else dones[t + 1])
                nextvalues = next_value if t == T - 1 else values[t + 1]
                delta = rewards[t] + args.gamma * nextvalues * nonterminal - values[t]
                lastgaelam = delta + args.gamma * args.gae_lambda * nonterminal * lastgaelam
                advantages[t] = lastgaelam
            returns = advantages + values

        b_obs, b_actions = obs.reshape(-1, n_obs), actions.reshape(-1)
        b_logprobs, b_adv = logprobs.reshape(-1), advantages.reshape(-1)
        b_returns, b_values = returns.reshape(-1), values.reshape(-1)
        inds = np.arange(args.batch_size)
        for _ in range(args.update_epochs):
            np.random.shuffle(inds)
            for s in range(0, args.batch_size, args.minibatch_size):
                mb = inds[s : s + args.minibatch_size]
                _, newlogprob, entropy, newvalue = agent.get_action_and_value(
                    b_obs[mb], b_actions[mb]
                )
                ratio = (newlogprob - b_logprobs[mb]).exp()
                adv = (b_adv[mb] - b_adv[mb].mean()) / (b_adv[mb].std() + 1e-8)
                pg_loss = torch.max(-adv * ratio,
                                    -adv * ratio.clamp(1 - args.clip_coef, 1 + args.clip_coef)).mean()  # fmt: skip
                v_loss = 0.5 * ((newvalue.flatten() - b_returns[mb]) ** 2).mean()
                loss = pg_loss - args.ent_coef * entropy.mean() + args.vf_coef * v_loss
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()

        last = {
            "steps": float(global_step),
            "return": float(np.mean(returns_seen)) if returns_seen else float("nan"),
            "success": float(np.mean(success_seen)) if success_seen else float("nan"),
            "explained_variance": float(1 - (b_returns - b_values).var() / b_returns.var()),
        }
        print(f"step {global_step}  {global_step / (time.time() - start):.0f} steps/s  "
              f"return {last['return']:.2f}  success {last['success']:.2f} "
              f"({len(returns_seen)} episodes)", flush=True)  # fmt: skip
    envs.close()
    return last


if __name__ == "__main__":
    main()
