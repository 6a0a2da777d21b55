"""Several controlled cars: the PettingZoo env's ``finished_agents="inactive"`` option,
the batched VecEnv with one slot per car per world, and SuperSuit's SB3 recipe."""

from __future__ import annotations

import numpy as np
import pytest

from bystander.agents.predictors import ConstantVelocityPredictor
from bystander.envs import intersection_v0
from bystander.envs.contract import step_arrays
from bystander.envs.intersection.vec_env import IntersectionVecEnv
from bystander.envs.intersection.vec_slots import OUTCOMES
from bystander.envs.predictability import PredictabilityParallelWrapper
from bystander.envs.vector import PredictabilityVecWrapper

C, N, SEED = 3, 2, 11
CONFIG = {"n_controlled": C, "max_cycles": 60, "action_type": "continuous"}


def _actions(rng: np.random.Generator, scale: np.ndarray) -> np.ndarray:
    """``(N * C, 2)`` continuous actions, straight for some slots, erratic for others."""
    return (rng.uniform(-1, 1, size=(N * C, 2)) * scale).astype(np.float32)


def test_inactive_agents_stay_until_the_episode_ends() -> None:
    env = intersection_v0.parallel_env(finished_agents="inactive", **CONFIG)
    rng = np.random.default_rng(0)
    seen_inactive = seen_end = 0
    for episode in range(6):
        env.reset(seed=episode)
        finished: set[str] = set()
        for t in range(1, 61):
            assert env.agents == env.possible_agents
            acts = {a: rng.uniform(-1, 1, 2).astype(np.float32) for a in env.agents}
            obs, rew, terms, truncs, infos = env.step(acts)
            assert sorted(obs) == sorted(env.possible_agents)
            for a in env.possible_agents:
                if a in finished:
                    seen_inactive += 1
                    assert infos[a] == {"active": False} or terms[a] or truncs[a]
                    assert not np.any(obs[a]) and rew[a] == 0.0
                elif infos[a].get("finished"):
                    assert infos[a]["active"] and "episode_cost" in infos[a]
                    finished.add(a)
            if any(terms.values()) or any(truncs.values()):
                seen_end += 1
                assert env.agents == []
                for a in env.possible_agents:
                    assert terms[a] == (a in finished) and truncs[a] == (a not in finished)
                    assert infos[a].get("TimeLimit.truncated", False) == truncs[a]
                assert len(finished) == C or t == 60
                break
            assert not any(terms.values()) and not any(truncs.values())
    assert seen_inactive > 0 and seen_end == 6
    with pytest.raises(ValueError, match="finished_agents: expected one of"):
        intersection_v0.parallel_env(finished_agents="drop")


def test_slots_equal_the_pettingzoo_env_with_inactive_agents() -> None:
    """Slot ``w * C + c`` plays car ``c`` of a PettingZoo env seeded ``seed + w``."""
    venv = IntersectionVecEnv(N, CONFIG, seed=SEED)
    assert venv.num_envs == N * C
    envs = [intersection_v0.parallel_env(finished_agents="inactive", **CONFIG) for _ in range(N)]
    obs = venv.reset()
    for w, env in enumerate(envs):
        o, _ = env.reset(seed=SEED + w)
        for c in range(C):
            np.testing.assert_array_equal(obs[w * C + c], o[f"car_{c}"])
    rng = np.random.default_rng(1)
    scale = np.linspace(0.0, 1.0, N * C)[:, None] ** 2
    ends = {"terminal": 0, "truncated": 0, "inactive": 0}
    for _ in range(150):
        acts = _actions(rng, scale)
        obs, rewards, dones, infos = venv.step(acts)
        for w, env in enumerate(envs):
            d = {f"car_{c}": acts[w * C + c] for c in range(C)}
            o, r, terms, truncs, inf = env.step(d)
            for c in range(C):
                k, a = w * C + c, f"car_{c}"
                assert rewards[k] == pytest.approx(r[a], rel=1e-6, abs=1e-9)
                assert dones[k] == (terms[a] or truncs[a])
                ends["inactive"] += not infos[k]["active"]
                if dones[k]:
                    info = infos[k]
                    np.testing.assert_array_equal(info["terminal_observation"], o[a])
                    assert info["TimeLimit.truncated"] == truncs[a]
                    ends["truncated" if truncs[a] else "terminal"] += 1
                    assert info["episode_outcome"] in OUTCOMES
                else:
                    np.testing.assert_array_equal(obs[k], o[a])
            if not env.agents:  # the VecEnv auto-reset; unseeded: the same seed chain
                o, _ = env.reset()
                for c in range(C):
                    np.testing.assert_array_equal(obs[w * C + c], o[f"car_{c}"])
    assert ends["terminal"] and ends["truncated"] and ends["inactive"], ends


def test_mutual_predictability_scored_as_the_pettingzoo_wrapper_scores_it() -> None:
    """The array path over slots gives each car the cost the per-agent trackers give."""
    cfg = dict(CONFIG, action_type="discrete", max_cycles=40)
    pred = ConstantVelocityPredictor(horizon=10, history=8)
    venv = PredictabilityVecWrapper(IntersectionVecEnv(1, cfg, seed=SEED, info_mode="lean"), pred)
    env = PredictabilityParallelWrapper(
        intersection_v0.parallel_env(finished_agents="inactive", **cfg), pred
    )
    venv.reset()
    env.reset(seed=SEED)
    rng = np.random.default_rng(2)
    scored = 0
    for _ in range(40):
        acts = rng.integers(0, 6, size=C)
        _, _, dones, infos = venv.step(acts)
        _, _, terms, truncs, inf = env.step({f"car_{c}": int(acts[c]) for c in range(C)})
        arrays = step_arrays(venv)
        for c in range(C):
            a = f"car_{c}"
            if "costs" in inf[a]:
                want = inf[a]["costs"]["predictability"]
                got = arrays["costs"]["predictability"][c]
                assert got == pytest.approx(want, abs=1e-9)
                scored += want > 0
            else:
                assert arrays["costs"]["predictability"][c] == 0.0
        if dones.any():
            break
    assert scored > 0


def test_ppo_trains_on_the_multi_agent_vec_env() -> None:
    from stable_baselines3 import PPO

    venv = IntersectionVecEnv(4, {"n_controlled": 4, "max_cycles": 50}, seed=0, info_mode="lean")
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=256, n_epochs=1, seed=0, verbose=0)
    model.learn(2048)
    assert model.num_timesteps >= 2048


@pytest.mark.slow
def test_supersuit_sb3_recipe_trains_with_correct_truncation() -> None:
    """PettingZoo's SB3 tutorial recipe: fails with finished agents removed, trains with
    ``finished_agents="inactive"``, and SB3 sees time-limit ends as truncations."""
    ss = pytest.importorskip("supersuit")
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback

    def vec(mode: str):
        env = intersection_v0.parallel_env(
            n_controlled=4, max_cycles=60, finished_agents=mode, action_type="continuous"
        )
        env = ss.pettingzoo_env_to_vec_env_v1(env)
        return ss.concat_vec_envs_v1(env, 2, num_cpus=1, base_class="stable_baselines3")

    class Ends(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.truncated = self.terminated = 0

        def _on_step(self) -> bool:
            for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
                if done:
                    assert "terminal_observation" in info
                    if info.get("TimeLimit.truncated"):
                        self.truncated += 1
                    else:
                        self.terminated += 1
            return True

    ends = Ends()
    model = PPO("MlpPolicy", vec("inactive"), n_steps=128, batch_size=256, n_epochs=1, verbose=0)
    model.learn(4096, callback=ends)
    assert ends.truncated > 0, "time-limit ends must reach SB3 as truncations"
    with pytest.raises(AssertionError, match="black_death"):
        PPO("MlpPolicy", vec("remove"), n_steps=256, batch_size=256, verbose=0).learn(4096)
