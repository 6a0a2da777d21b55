"""Probe (issue 12): does a lambda-conditioned PPO ego answer lambda with its cost?

    python experiments/probes/lambda_conditioned.py [STEPS] [SEED] [ENT_COEF] [GAMMA] [MARGIN] [PRIOR]

Trains the default ego (128 batched worlds, constant-velocity observers) on the
per-metre Lagrangian reward ``(r - lambda * (c - B * progress)) / (1 + lambda)`` with
``B`` = 0.3241 m/m (times ``1 + MARGIN`` as progress credit, ``constraint.credit_margin``;
default 0), PPO's ``ent_coef`` and ``gamma`` from the arguments (defaults: the training
defaults, 0.01 and 0.99; ``PRIOR``, six comma-separated probabilities: ``ent_coef`` weighs
``-KL(pi || PRIOR)`` instead of the entropy, ``train.entropy_prior``'s :class:`~bystander.agents.models.KLPriorPolicy`), where each world draws its own lambda, log-uniform in [0.01, 1], at
every episode start and sees ``log(lambda)`` as one more observation feature. Then
evaluates the greedy ego at fixed lambdas on 100 held-out episodes each and prints
success, held-out cost per metre and stand-still fraction per lambda. A multiplier could
only choose the operating point of such a policy if the cost fell smoothly with lambda.

Not a library feature: no checkpoints, no resume; one process, default seeds.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from bystander.agents.heldout import evaluate_batched
from bystander.agents.models import KLPriorPolicy
from bystander.agents.stack import build_vec_env
from bystander.agents.training import build_predictor, seed_everything
from bystander.config import load_config, resolved_hyperparams
from bystander.envs.contract import step_arrays

BUDGET, LAMBDA_MIN, LAMBDA_MAX = 0.3241, 0.01, 1.0
EVAL_LAMBDAS = (0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 1.0)


class LambdaConditioned(VecEnvWrapper):
    """Per-world lambda drawn at each episode start, appended to the observation as
    ``log(lambda)``; the reward is the per-metre Lagrangian with that lambda."""

    def __init__(self, venv: VecEnv, seed: int, margin: float = 0.0) -> None:
        space = venv.observation_space
        super().__init__(
            venv,
            observation_space=gym.spaces.Box(
                np.append(space.low, np.log(LAMBDA_MIN)).astype(np.float32),
                np.append(space.high, np.log(LAMBDA_MAX)).astype(np.float32),
            ),
        )
        self.rng = np.random.default_rng(seed)
        self.credit = BUDGET * (1.0 + margin)
        self.lam = self._draw(venv.num_envs)

    def _draw(self, n: int) -> np.ndarray:
        return np.exp(self.rng.uniform(np.log(LAMBDA_MIN), np.log(LAMBDA_MAX), n))

    @staticmethod
    def augment(obs: np.ndarray, lam: np.ndarray) -> np.ndarray:
        return np.concatenate([obs, np.log(lam)[:, None]], 1).astype(np.float32)

    def reset(self) -> np.ndarray:
        return self.augment(self.venv.reset(), self.lam)

    def step_wait(self):  # noqa: ANN201 - SB3's VecEnvStepReturn
        obs, rewards, dones, infos = self.venv.step_wait()
        arrays = step_arrays(self.venv)
        cost = np.asarray(arrays["costs"]["predictability"], float)
        progress = np.asarray(arrays["progress"], float)
        new = (np.asarray(rewards, float) - self.lam * (cost - self.credit * progress)) / (
            1 + self.lam
        )
        for i in np.nonzero(dones)[0]:  # the finished episode's lambda on its last observation
            if infos[i] and "terminal_observation" in infos[i]:
                infos[i] = dict(infos[i])
                last = np.asarray(infos[i]["terminal_observation"])
                infos[i]["terminal_observation"] = np.append(last, np.log(self.lam[i]))
        if dones.any():
            self.lam[dones] = self._draw(int(dones.sum()))
        return self.augment(obs, self.lam), new.astype(np.float32), dones, infos


def main(
    steps: int = 2_000_000,
    seed: int = 0,
    ent: float = 0.01,
    gamma: float = 0.99,
    margin: float = 0.0,
    prior: str | None = None,
) -> int:
    cfg = load_config(overrides=["train.tensorboard=false", f"train.seed={seed}",
                                 f"train.hyperparams.ent_coef={ent}",
                                 f"train.hyperparams.gamma={gamma}"])  # fmt: skip
    seed_everything(seed)
    venv = LambdaConditioned(build_vec_env(cfg, build_predictor(cfg), {}), seed, margin)
    policy: Any = "MlpPolicy"
    kwargs: dict[str, Any] = {"net_arch": list(cfg.train.net_arch)}
    if prior is not None:  # train.entropy_prior's policy
        policy, kwargs["prior"] = KLPriorPolicy, [float(x) for x in prior.split(",")]
    model = PPO(policy, venv, seed=seed, policy_kwargs=kwargs, verbose=0,
                **resolved_hyperparams(cfg.train))  # fmt: skip
    t0 = time.perf_counter()
    model.learn(steps)
    print(f"trained {steps} steps in {time.perf_counter() - t0:.0f} s", flush=True)
    print("lambda  success  cost [m/m]  stand-still")
    for lam in EVAL_LAMBDAS:

        def norm(o: np.ndarray, lam: float = lam) -> np.ndarray:
            return LambdaConditioned.augment(o, np.full(len(o), lam))

        s = evaluate_batched(model, cfg, episodes=100, predictor=build_predictor(cfg),
                             obs_normalizer=norm).summary  # fmt: skip
        print(f"{lam:6.2f}  {s['success']['mean']:7.2f}  "
              f"{s['cost_predictability_per_metre']['mean']:10.3f}  "
              f"{s['stand_still_fraction']['mean']:11.3f}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]] + [float(a) for a in sys.argv[3:6]]
    raise SystemExit(main(*args, *sys.argv[6:7]))  # type: ignore[arg-type]
