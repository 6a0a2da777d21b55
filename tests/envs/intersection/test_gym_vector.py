"""The Gymnasium clients' ways in: the native vector env (``make_vec`` with the vector
entry point), the other ``make_vec`` modes, and PettingZoo's registry."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import bystander.envs  # noqa: F401 - registers the ids
from bystander.envs.intersection.gym_vector import IntersectionVectorEnv

CONFIG = {"max_cycles": 40, "action_type": "continuous"}
SEED, N = 3, 4


def test_make_vec_vector_entry_point_gives_the_native_env() -> None:
    envs = gym.make_vec("bystander/Intersection-v0", num_envs=8,
                        vectorization_mode="vector_entry_point", config={"n_cars": 2})  # fmt: skip
    assert isinstance(envs, IntersectionVectorEnv) and envs.num_envs == 8
    assert envs.config.n_cars == 2
    assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    obs, _ = envs.reset(seed=0)
    assert envs.observation_space.contains(obs)
    envs.close()


def test_world_i_equals_a_single_env_seeded_seed_plus_i_through_auto_resets() -> None:
    envs = IntersectionVectorEnv(N, CONFIG)
    singles = [gym.make("bystander/Intersection-v0", config=CONFIG).unwrapped for _ in range(N)]
    obs, _ = envs.reset(seed=SEED)
    for i, env in enumerate(singles):
        np.testing.assert_array_equal(obs[i], env.reset(seed=SEED + i)[0])
    rng = np.random.default_rng(1)
    scale = np.linspace(0.0, 1.0, N)[:, None] ** 2  # straight (time-outs) to erratic (crashes)
    ends = {"terminated": 0, "truncated": 0}
    for _ in range(120):
        actions = (rng.uniform(-1, 1, size=(N, 2)) * scale).astype(np.float32)
        obs, rewards, terminated, truncated, infos = envs.step(actions)
        for i, env in enumerate(singles):
            o, r, term, trunc, info = env.step(actions[i])
            assert (terminated[i], truncated[i]) == (term, trunc and not term)
            assert rewards[i] == pytest.approx(r, rel=1e-6)
            assert infos["cost"][i] == info["cost"] and infos["_cost"][i]
            if term or trunc:
                ends["terminated" if term else "truncated"] += 1
                assert infos["_final_obs"][i]
                np.testing.assert_array_equal(infos["final_obs"][i], o)
                fin = infos["final_info"]
                assert fin["_episode_cost"][i] and fin["episode_cost"][i] == info["episode_cost"]
                o, _ = env.reset()  # unseeded: continues the seed chain
            np.testing.assert_array_equal(obs[i], o)
    assert ends["terminated"] >= 1 and ends["truncated"] >= 1, ends


def test_bad_seed_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="n_controlled: expected 1"):
        IntersectionVectorEnv(2, {"n_controlled": 2})
    envs = IntersectionVectorEnv(2)
    with pytest.raises(TypeError, match="seed: expected an int"):
        envs.reset(seed=[1, 2])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_make_vec_sync_and_async_modes(mode: str) -> None:
    envs = gym.make_vec("bystander/Intersection-v0", num_envs=2, vectorization_mode=mode)
    envs.reset(seed=0)
    for _ in range(5):
        obs, *_ = envs.step(envs.action_space.sample())
    assert obs.shape == (2, 103)
    envs.close()


def test_pettingzoo_registry_builds_the_intersection() -> None:
    pettingzoo = pytest.importorskip("pettingzoo")
    if not hasattr(pettingzoo, "make"):
        pytest.skip("this PettingZoo has no registry")
    env = pettingzoo.make("parallel", "bystander/Intersection-v0", n_controlled=2)
    obs, _ = env.reset(seed=0)
    assert sorted(obs) == ["car_0", "car_1"]
    aec = pettingzoo.make("aec", "bystander/Intersection-v0")
    aec.reset(seed=0)
    assert aec.agent_selection == "car_0"


def test_predictability_and_constraint_layers_give_the_sb3_paths_figures() -> None:
    from bystander.agents.predictors import ConstantVelocityPredictor
    from bystander.agents.stack import make_intersection_vec_env
    from bystander.envs.constraints import LagrangeMultiplier
    from bystander.envs.contract import step_arrays
    from bystander.envs.vector import LagrangianVecReward

    def layers():
        lam = LagrangeMultiplier(budget=0.1, init=0.5)
        pred = ConstantVelocityPredictor(horizon=10, history=8)
        return pred, [lambda v: LagrangianVecReward(v, lam, channel="predictability")]

    pred, wraps = layers()
    envs = IntersectionVectorEnv(N, {"max_cycles": 30}, predictors=pred, wrappers=wraps)
    pred, wraps = layers()
    sb3 = make_intersection_vec_env(N, {"max_cycles": 30}, seed=SEED, predictors=pred,
                                    monitor=False, wrappers=wraps)  # fmt: skip
    obs, _ = envs.reset(seed=SEED)
    np.testing.assert_array_equal(obs, sb3.reset())
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(70):
        a = rng.integers(0, 6, size=N)
        obs, r, term, trunc, infos = envs.step(a)
        obs2, r2, dones, infos2 = sb3.step(a)
        arrays = step_arrays(sb3)
        np.testing.assert_array_equal(obs, obs2)
        np.testing.assert_allclose(r, r2, rtol=1e-6)
        np.testing.assert_array_equal(infos["predictability"], arrays["predictability"])
        np.testing.assert_array_equal(infos["costs"]["predictability"],
                                      arrays["costs"]["predictability"])  # fmt: skip
        for i in np.flatnonzero(dones):
            ended += 1
            fin = infos["final_info"]
            assert fin["episode_prediction_error"][i] == infos2[i]["episode_prediction_error"]
            assert fin["episode_cost"][i] == infos2[i]["episode_cost"]
        for key in ("lambdas", "costs", "rewards"):  # nested values: (N,) arrays, masked
            for k, v in infos[key].items():
                assert k.startswith("_") or (v.shape == (N,) and infos[key][f"_{k}"].all())
    assert ended >= N
