"""IntersectionVecEnv: SB3 VecEnv contract and exact equivalence with the single env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import bystander.envs  # noqa: F401 - registers bystander/Intersection-v0
from bystander.agents.predictors import ConstantVelocityPredictor
from bystander.agents.stack import make_intersection_vec_env
from bystander.envs.contract import EGO_STEP_KEY, EgoStep, step_arrays
from bystander.envs.intersection.vec_env import IntersectionVecEnv
from bystander.envs.predictability import PredictabilityReward
from bystander.envs.vector import PredictabilityVecWrapper

# max_cycles 40 with these seeds gives both time-outs and terminations within 120 steps
CONFIG = {"max_cycles": 40}
SEED, N, STEPS = 3, 4, 120


def _actions(steps: int = STEPS, n: int = N) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 6, size=n) for _ in range(steps)]


def _strip(info: dict) -> dict:
    return {
        k: v for k, v in info.items() if k not in ("terminal_observation", "TimeLimit.truncated")
    }


def _mixed_actions(action_type: str, steps: int = STEPS, n: int = N) -> list[np.ndarray]:
    """Discrete: random meta-actions. Continuous: random (accel, steer) scaled per world
    from 0 (drives straight: time-outs) to 1 (erratic: leaves the road: terminations)."""
    if action_type != "continuous":  # discrete, or target_speed (7 default levels)
        return _actions(steps, n)
    rng = np.random.default_rng(1)
    scale = np.linspace(0.0, 1.0, n)[:, None] ** 2
    return [rng.uniform(-1, 1, size=(n, 2)) * scale for _ in range(steps)]


STARTS = {"start_target_speeds": [0.0, 3.0, 6.0, 9.0, 12.0]}


@pytest.mark.parametrize(
    "action_type, extra",
    [("discrete", {}), ("continuous", {}), ("discrete", STARTS), ("target_speed", {})],
)
def test_world_i_equals_single_env_seeded_seed_plus_i_through_auto_resets(action_type, extra):
    config = {**CONFIG, "action_type": action_type, **extra}
    venv = IntersectionVecEnv(N, config, seed=SEED)
    singles = [gym.make("bystander/Intersection-v0", config=config).unwrapped for _ in range(N)]
    obs = venv.reset()
    for i, env in enumerate(singles):
        o, info = env.reset(seed=SEED + i)
        np.testing.assert_array_equal(obs[i], o)
        assert venv.reset_infos[i] == info
    kinds = {"terminated": 0, "truncated": 0}
    for a in _mixed_actions(action_type):
        obs, rewards, dones, infos = venv.step(a)
        assert obs.dtype == np.float32 and rewards.dtype == np.float32 and dones.dtype == bool
        for i, env in enumerate(singles):
            o, r, term, trunc, info = env.step(a[i] if action_type == "continuous" else int(a[i]))
            assert bool(dones[i]) == (term or trunc)
            assert _strip(infos[i]) == info
            assert rewards[i] == np.float32(r)
            if dones[i]:
                kinds["truncated" if trunc and not term else "terminated"] += 1
                np.testing.assert_array_equal(infos[i]["terminal_observation"], o)
                assert infos[i]["TimeLimit.truncated"] is (trunc and not term)
                assert infos[i]["episode_cost"] == info["episode_cost"]
                o, reset_info = env.reset()  # unseeded: continues the seed chain
                assert venv.reset_infos[i] == reset_info
                assert reset_info[EGO_STEP_KEY].episode_start
            else:
                assert "terminal_observation" not in infos[i]
                assert "TimeLimit.truncated" not in infos[i]
            np.testing.assert_array_equal(obs[i], o)
    # the run exercised auto-resets (continuous: both ways an episode ends)
    assert kinds["truncated"] >= 1, kinds
    if action_type == "continuous":
        assert kinds["terminated"] >= 1, kinds


def test_start_target_speeds_are_drawn_last_and_leave_the_traffic_unchanged():
    """Several start speeds: each world's ego starts at one of them (the observation's
    target-speed feature says which); the traffic of a seed is the fixed start's."""
    fixed = IntersectionVecEnv(64, CONFIG, seed=SEED)
    drawn = IntersectionVecEnv(64, {**CONFIG, **STARTS}, seed=SEED)
    o_fixed, o_drawn = fixed.reset(), drawn.reset()
    sim_f, sim_d = fixed.sim, drawn.sim
    for name in ("x", "y", "v", "kind", "dest", "turn"):
        np.testing.assert_array_equal(getattr(sim_f, name), getattr(sim_d, name))
    assert set(sim_f.target_v[:, 0]) == {6.0}
    assert set(sim_d.target_v[:, 0]) == set(STARTS["start_target_speeds"])
    feature = o_drawn[:, 6] * 12.0  # target speed / ego_max_speed
    np.testing.assert_allclose(feature, sim_d.target_v[:, 0], atol=1e-5)
    np.testing.assert_array_equal(np.delete(o_fixed, 6, axis=1), np.delete(o_drawn, 6, axis=1))


def test_a_simulator_pickled_before_start_target_speeds_still_resets():
    """Checkpoints pickle the env stack: a simulator from before the option has no
    ``_start_v`` and starts at 6 m/s."""
    import pickle

    venv = IntersectionVecEnv(4, CONFIG, seed=SEED)
    venv.reset()
    del venv.sim.__dict__["_start_v"]  # as in an older pickle
    sim = pickle.loads(pickle.dumps(venv.sim))
    sim.reset(seed=SEED)
    assert set(sim.target_v[:, 0]) == {6.0}


@pytest.mark.parametrize("starts", [[], [13.0], [-1.0], [float("nan")], [True], "6", [0.0] * 65])
def test_bad_start_target_speeds_name_the_field(starts):
    with pytest.raises(ValueError, match=r"^config\.start_target_speeds: expected 1-64 speeds"):
        IntersectionVecEnv(1, {"start_target_speeds": starts})


def test_time_limit_flag_on_timeouts_only():
    venv = IntersectionVecEnv(3, {"max_cycles": 6}, seed=0)
    venv.reset()
    for t in range(6):
        _, _, dones, infos = venv.step(np.full(3, 1))  # KEEP
        if t < 5:
            assert not dones.any()
            assert all("TimeLimit.truncated" not in i for i in infos)
    assert dones.all()
    for info in infos:
        assert info["TimeLimit.truncated"] is (not (info["crashed"] or info["arrived"]))
        assert "episode_costs" in info and "terminal_observation" in info
    # auto-reset: the new episodes start at t = 0
    assert venv.get_attr("t") == [0, 0, 0]


def test_seeding_is_per_world_and_reproducible():
    acts = [np.full(3, a[0]) for a in _actions(30, 1)]  # same action in every world

    def run(venv: IntersectionVecEnv) -> np.ndarray:
        out = [venv.reset()]
        out += [venv.step(a)[0] for a in acts]
        return np.stack(out)

    a = run(IntersectionVecEnv(3, CONFIG, seed=7))
    b = run(IntersectionVecEnv(3, CONFIG, seed=7))
    np.testing.assert_array_equal(a, b)
    c = run(IntersectionVecEnv(3, CONFIG, seed=8))
    assert not np.array_equal(a, c)
    # world i does not depend on the other worlds: world 1 of seed 7 == world 0 of seed 8
    np.testing.assert_array_equal(a[:, 1], c[:, 0])
    # seed() applies at the next reset only, then the chain continues
    venv = IntersectionVecEnv(3, CONFIG)
    assert venv.seed(7) == [7, 8, 9]
    np.testing.assert_array_equal(run(venv), a)
    assert venv.get_attr("episode_seed") != IntersectionVecEnv(3, CONFIG, seed=7).get_attr(
        "episode_seed"
    )
    # one seed per world: any seeds, repeats allowed (common seeds)
    venv = IntersectionVecEnv(3, CONFIG, seed=0)
    assert venv.seed([9, 7, 7]) == [9, 7, 7]
    d = run(venv)
    np.testing.assert_array_equal(d[:, 1], a[:, 0])  # world 1 on 7 == world 0 of seed 7
    np.testing.assert_array_equal(d[:, 2], a[:, 0])
    np.testing.assert_array_equal(d[:, 0], a[:, 2])  # world 0 on 9 == world 2 of seed 7
    for bad in ([1, 2], [1, 2, -1], [1, 2, True]):
        with pytest.raises(ValueError, match="seed: expected 3 ints >= 0"):
            venv.seed(bad)


def test_predictability_wrapper_batched_equals_single_envs():
    cv = ConstantVelocityPredictor(horizon=5, history=4)
    venv = PredictabilityVecWrapper(IntersectionVecEnv(2, CONFIG, seed=SEED), cv)
    singles = [
        PredictabilityReward(gym.make("bystander/Intersection-v0", config=CONFIG).unwrapped, cv)
        for _ in range(2)
    ]
    venv.reset()
    for i, env in enumerate(singles):
        env.reset(seed=SEED + i)
    scored = 0
    keys = ("predictability", "observers_scored", "cost", "costs", "prediction_error_by_type")
    for a in _actions(60, 2):
        _, _, dones, infos = venv.step(a)
        for i, env in enumerate(singles):
            _, _, term, trunc, info = env.step(int(a[i]))
            for k in keys:
                assert infos[i][k] == info[k], (k, infos[i][k], info[k])
            scored += info["observers_scored"]
            if term or trunc:
                assert infos[i]["episode_cost"] == pytest.approx(info["episode_cost"])
                env.reset()
    assert scored > 0


def test_get_set_attr_and_env_method():
    venv = IntersectionVecEnv(3, CONFIG, seed=0)
    venv.reset()
    assert venv.get_attr("dt") == [0.1, 0.1, 0.1]
    assert venv.get_attr("config", [1])[0].max_cycles == 40
    seeds = venv.get_attr("episode_seed")
    assert len(set(seeds)) == 3
    assert venv.get_attr("sim_world", [2, 0]) == [2, 0]
    with pytest.raises(AttributeError):
        venv.get_attr("no_such_attribute")
    views = venv.env_method("observer_view", indices=[0, 2])
    for w, view in zip([0, 2], views, strict=True):
        ego = venv.reset_infos[w][EGO_STEP_KEY]
        np.testing.assert_array_equal(view["ids"], ego.observer_ids)
        np.testing.assert_array_equal(view["poses"], ego.observer_frames)
    with pytest.raises(AttributeError, match="no method"):
        venv.env_method("no_such_method")
    with pytest.raises(ValueError, match="cover all"):
        venv.set_attr("render_world", 1, indices=[0])
    with pytest.raises(ValueError, match="read-only"):
        venv.set_attr("episode_seed", 1)
    venv.set_attr("config", {"max_cycles": 3})
    venv.reset()
    for _ in range(3):
        _, _, dones, _ = venv.step(np.zeros(3, dtype=np.int64))
    assert dones.all()


def test_render_chosen_world():
    venv = IntersectionVecEnv(2, CONFIG, seed=0, render_mode="rgb_array")
    venv.reset()
    venv.step(np.array([2, 2]))
    frame0 = venv.render()
    assert frame0.dtype == np.uint8 and frame0.ndim == 3 and frame0.shape[2] == 3
    venv.set_attr("render_world", 1)
    frame1 = venv.render()
    assert frame1.shape == frame0.shape and not np.array_equal(frame0, frame1)
    np.testing.assert_array_equal(venv.env_method("render_frame", indices=[1])[0], frame1)
    assert len(venv.get_images()) == 2
    with pytest.raises(ValueError, match="render_world"):
        venv.set_attr("render_world", 5)
    venv.close()


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="n_worlds"):
        IntersectionVecEnv(0)
    with pytest.raises(TypeError, match="n_worlds"):
        IntersectionVecEnv(2.0)
    with pytest.raises(ValueError, match="n_controlled: expected 1"):
        IntersectionVecEnv(2).set_attr("config", {"n_controlled": 2, "max_agents": 8})
    with pytest.raises(ValueError, match="render_mode"):
        IntersectionVecEnv(2, render_mode="video")
    venv = IntersectionVecEnv(2, seed=0)
    with pytest.raises(RuntimeError, match="before reset"):
        venv.step(np.array([1, 1]))
    venv.reset()
    with pytest.raises(ValueError, match=r"actions: expected shape \(2,\)"):
        venv.step(np.array([1, 1, 1]))
    with pytest.raises(ValueError, match=r"actions: expected ints in \[0, 6\)"):
        venv.step(np.array([1, 6]))
    cont = IntersectionVecEnv(2, {"action_type": "continuous"}, seed=0)
    cont.reset()
    with pytest.raises(ValueError, match=r"actions: expected shape \(2, 2\)"):
        cont.step(np.zeros(2))
    obs, *_ = cont.step(np.array([[0.5, 0.0], [2.0, -2.0]]))  # clipped to [-1, 1]
    assert obs.shape == (2, cont.observation_space.shape[0])


def test_dict_observation_and_terminal_observation():
    venv = IntersectionVecEnv(2, {"observation": "dict", "max_cycles": 2}, seed=0)
    obs = venv.reset()
    assert obs["vector"].shape == (2, *venv.observation_space["vector"].shape)
    assert obs["occupancy"].shape == (2, *venv.observation_space["occupancy"].shape)
    venv.step(np.array([1, 1]))
    obs, _, dones, infos = venv.step(np.array([1, 1]))
    assert dones.all()
    term = infos[0]["terminal_observation"]
    assert set(term) == {"vector", "occupancy"} and term["vector"].shape == obs["vector"][0].shape


def test_factory_stack_and_sb3_ppo_smoke():
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor

    seen = []

    def mark(venv):
        seen.append(venv)
        return venv

    venv = make_intersection_vec_env(
        4, {"max_cycles": 10}, seed=0, predictors=ConstantVelocityPredictor(), wrappers=[mark]
    )
    assert isinstance(venv, VecMonitor) and seen == [venv]
    assert isinstance(venv.venv, PredictabilityVecWrapper)
    model = PPO("MlpPolicy", venv, n_steps=16, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(64)
    assert len(model.ep_info_buffer) >= 4  # 16 steps per world, episodes of <= 10 steps
    _, _, dones, infos = venv.step(np.zeros(4, dtype=np.int64))
    # lean infos (the factory's default): per-step values as arrays, dicts at episode end
    arrays = step_arrays(venv)
    assert arrays["cost"].shape == (4,) and set(arrays["costs"]) == {"collision", "predictability"}
    np.testing.assert_allclose(arrays["cost"], sum(arrays["costs"].values()))
    for info, done in zip(infos, dones, strict=True):
        if done:
            assert isinstance(info[EGO_STEP_KEY], EgoStep) and "episode_cost" in info
        else:
            assert info == {}
    with pytest.raises(TypeError, match="wrappers"):
        make_intersection_vec_env(2, wrappers=[3])


def test_ppo_on_batched_stack_equals_ppo_on_dummy_vec_env_of_single_envs():
    """Same seeds, same hyperparameters: the batched path trains the exact same policy."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

    config = {"max_cycles": 30}
    cv = ConstantVelocityPredictor(horizon=5, history=4)

    def single():
        return PredictabilityReward(gym.make("bystander/Intersection-v0", config=config), cv)

    stacks = {
        "dummy": VecMonitor(DummyVecEnv([single] * 3)),
        "batched": make_intersection_vec_env(3, config, predictors=cv),
    }
    params, episodes = {}, {}
    for name, venv in stacks.items():
        model = PPO("MlpPolicy", venv, n_steps=32, batch_size=48, n_epochs=2, seed=0, device="cpu")
        model.learn(2 * 32 * 3)
        params[name] = torch.cat([p.detach().flatten() for p in model.policy.parameters()])
        episodes[name] = [(e["r"], e["l"]) for e in model.ep_info_buffer]
    assert len(episodes["dummy"]) >= 3
    assert episodes["batched"] == episodes["dummy"]
    assert torch.equal(params["batched"], params["dummy"])


def test_sim_per_world_streams_equal_single_world_sims():
    from bystander.envs.intersection.config import IntersectionConfig
    from bystander.envs.intersection.sim import IntersectionSim

    cfg = IntersectionConfig.from_dict({"max_cycles": 15})
    batch = IntersectionSim(cfg, n_worlds=3)
    batch.seed_worlds([11, 12, 13])
    batch.reset()
    singles = [IntersectionSim(cfg, n_worlds=1) for _ in range(3)]
    for s, sim in zip([11, 12, 13], singles, strict=True):
        sim.reset(seed=s)  # shared generator of an N = 1 sim
    rng = np.random.default_rng(0)
    for _ in range(15):
        a = rng.integers(0, 6, size=(3, 1))
        out = batch.step(a)
        for w, sim in enumerate(singles):
            one = sim.step(a[w : w + 1])
            np.testing.assert_array_equal(out.obs[w], one.obs[0])
            np.testing.assert_array_equal(batch.uid[w], sim.uid[0])
    assert out.truncated.all()
    batch.seed_worlds([5], worlds=[1])  # re-seed one world: the others keep their streams
    batch.reset(worlds=[1])
    sim = IntersectionSim(cfg, n_worlds=1)
    sim.reset(seed=5)
    np.testing.assert_array_equal(batch.last.obs[1], sim.last.obs[0])
    with pytest.raises(ValueError, match="seeds: expected 3"):
        batch.seed_worlds([1, 2])
