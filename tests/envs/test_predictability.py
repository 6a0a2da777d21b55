"""PredictabilityReward / tracker / parallel and vec shells on toy envs (no cars)."""

from __future__ import annotations

import itertools
import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.wrappers import RecordEpisodeStatistics, TimeLimit
from toy_env import (
    HoldPredictor,
    LinearPredictor,
    ReplayEnv,
    ToyObserver,
    ToyParallelEnv,
    ToyPointEnv,
    ToyTokenEnv,
    UnigramPredictor,
    erratic_action,
    line_steps,
    register_toy_envs,
    smooth_action,
)

from bystander.envs.contract import EGO_STEP_KEY, FRAMES, EgoStep, Views
from bystander.envs.predictability import PredictabilityParallelWrapper, PredictabilityReward
from bystander.envs.scoring import ScoredReplay
from bystander.envs.tracker import PredictabilityTracker, run_requests


def run_episode(env: gym.Env, policy, max_steps: int = 1000) -> list[dict]:
    env.reset(seed=0)
    infos = []
    for k in range(max_steps):
        _, _, term, trunc, info = env.step(policy(k))
        infos.append(info)
        if term or trunc:
            break
    return infos


class RecordingPredictor(HoldPredictor):
    """Hold predictor that keeps every views / truth it was given."""

    def __init__(self, horizon: int = 2, history: int | None = 2) -> None:
        super().__init__(horizon, history)
        self.views: list[Views] = []
        self.truths: list[np.ndarray] = []

    def predict(self, views: Views) -> np.ndarray:
        self.views.append(views)
        return super().predict(views)

    def error(self, predictions, truth, views):
        self.truths.append(np.asarray(truth))
        return super().error(predictions, truth, views)


# ------------------------------------------------------------------ exact figures


def test_horizon_elapses_exactly_hand_made_trajectory():
    # ego x: 0 (reset), 1, 3, 6, 10; hold predictor, horizon 2
    env = PredictabilityReward(
        ReplayEnv(line_steps([[0], [1], [3], [6], [10]])), HoldPredictor(2, 1)
    )
    env.reset()
    figures = [env.step(0)[4] for _ in range(4)]
    # the last step scores the prediction made at x=3 and drops the one made at x=6
    assert [f["observers_scored"] for f in figures] == [0, 1, 1, 1]
    assert figures[0]["predictability"] == 0.0
    assert figures[1]["predictability"] == pytest.approx(-(1 + 3) / 2)  # made at x=0
    assert figures[2]["predictability"] == pytest.approx(-(2 + 5) / 2)  # made at x=1
    assert figures[2]["costs"]["predictability"] == pytest.approx(3.5)
    assert figures[2]["cost"] == pytest.approx(3.5)
    assert figures[2]["prediction_error_by_type"] == {"o": pytest.approx(3.5)}
    end = figures[3]
    assert end["predictability"] == pytest.approx(-(3 + 7) / 2)
    assert end["episode_cost"] == pytest.approx(2.0 + 3.5 + 5.0)
    assert end["episode_costs"] == {"predictability": pytest.approx(10.5)}
    assert end["episode_prediction_error"] == pytest.approx(3.5)
    assert end["episode_observers_scored"] == 3
    assert end["episode_prediction_error_by_type"] == {"o": pytest.approx(3.5)}
    assert env.tracker._pending == []
    assert "episode_cost" not in figures[2]


def test_several_states_per_step_and_long_episode_ring_buffer():
    # two states per step: x_t = t; predictions at t = 0, 2, 4, ... due 3 states later
    xs = [[0.0]] + [[2.0 * k - 1, 2.0 * k] for k in range(1, 6)]
    env = PredictabilityReward(ReplayEnv(line_steps(xs)), HoldPredictor(3, 1))
    env.reset()
    infos = [env.step(0)[4] for _ in range(5)]
    assert [i["observers_scored"] for i in infos[:4]] == [0, 1, 1, 1]
    for info in infos[1:4]:
        assert info["costs"]["predictability"] == pytest.approx(2.0)  # (1 + 2 + 3) / 3

    # 300 steps with history 4 (the buffer trims): errors match a brute-force reference
    rng = np.random.default_rng(0)
    xs = np.cumsum(rng.normal(size=301))
    env = PredictabilityReward(ReplayEnv(line_steps([[x] for x in xs])), LinearPredictor(3, 4))
    env.reset()
    got = [env.step(0)[4]["costs"]["predictability"] for _ in range(299)]
    tracker = env.tracker
    assert tracker._states.shape[0] < 64  # the ring buffer did not grow with the episode
    for k in range(3, 299):
        t = k - 3  # prediction time
        hist = xs[max(0, t - 3) : t + 1]
        vel = hist[-1] - hist[-2] if len(hist) > 1 else 0.0
        pred = hist[-1] + vel * np.arange(1, 4)
        assert got[k - 1] == pytest.approx(np.abs(pred - xs[t + 1 : t + 4]).mean()), k


def test_frame_transform_with_moving_rotated_observer():
    # observer faces +y and moves along x; truth must use the pose at prediction time
    poses = [[[0.0, 0.0, math.pi / 2]], [[4.0, 0.0, math.pi / 2]], [[8.0, 0.0, math.pi / 2]]]
    pred = RecordingPredictor(horizon=2, history=2)
    env = PredictabilityReward(ReplayEnv(line_steps([[1], [2], [3]], poses=poses)), pred)
    env.reset()
    info = env.step(0)[4]
    # first view at reset: ego (1, 0) seen from (0, 0) facing +y -> (0, -1); left-padded
    v0 = pred.views[0]
    np.testing.assert_allclose(v0.states[0, -1], [0.0, -1.0], atol=1e-12)
    np.testing.assert_array_equal(v0.mask, [[False, True]])
    np.testing.assert_allclose(v0.states[0, 0], v0.states[0, -1])  # padding repeats first state
    # second view: ego (1,0),(2,0) seen from (4, 0) -> (0, 3), (0, 2)
    np.testing.assert_allclose(pred.views[1].states[0], [[0.0, 3.0], [0.0, 2.0]], atol=1e-12)
    assert info["observers_scored"] == 0
    info = env.step(0)[4]
    # prediction made at reset (pose 0): truth (2,0),(3,0) -> (0,-2),(0,-3); hold (0,-1)
    np.testing.assert_allclose(pred.truths[0][0], [[0.0, -2.0], [0.0, -3.0]], atol=1e-12)
    assert info["costs"]["predictability"] == pytest.approx(1.5)
    assert pred.views[0].dt == 1.0


def test_unseen_ego_earns_nothing_and_partial_visibility():
    # two observers; id 1 never sees the ego; id 0 sees it only at reset
    steps = line_steps(
        [[0], [1], [2], [3]],
        visible=[[True, False], [False, False], [False, False], [False, False]],
        ids=[[0, 1]] * 4,
    )
    env = PredictabilityReward(ReplayEnv(steps), HoldPredictor(1, 1))
    env.reset()
    first = env.step(0)[4]
    assert first["observers_scored"] == 1  # only the one that saw the ego at prediction time
    assert first["predictability"] == pytest.approx(-1.0)
    for _ in range(2):
        info = env.step(0)[4]
        assert info["observers_scored"] == 0
        assert info["predictability"] == 0.0
        assert info["costs"]["predictability"] == 0.0
        assert info["prediction_error_by_type"] == {}

    # observers on the toy plane that never look at the ego
    away = [ToyObserver("post", x=-5.0, y=0.0, heading=math.pi, fov=1.0)]
    infos = run_episode(PredictabilityReward(ToyPointEnv(away), LinearPredictor()), smooth_action)
    assert all(i["predictability"] == 0.0 and i["observers_scored"] == 0 for i in infos)
    assert infos[-1]["episode_prediction_error"] == 0.0


def test_despawned_observer_prediction_dropped_and_reset_clears():
    # observer 1 leaves at report 2, before its reset-time prediction (horizon 2) is due
    steps = line_steps([[0], [1], [2], [3], [4]], ids=[[0, 1], [0, 1], [0], [0], [0]])
    env = PredictabilityReward(ReplayEnv(steps), HoldPredictor(2, 1))
    env.reset()
    infos = [env.step(0)[4] for _ in range(4)]
    # without the drop, observer 1's predictions made at x=0 and x=1 would count: [0, 2, 2, 1]
    assert [i["observers_scored"] for i in infos] == [0, 1, 1, 1]
    # after reset, nothing is pending from the old episode
    env.reset()
    assert env.step(0)[4]["observers_scored"] == 0
    assert env.tracker.episode_costs == {"predictability": 0.0}


def test_erratic_ego_less_predictable_than_smooth_on_toy_plane():
    for predictor in (LinearPredictor(3, 4), LinearPredictor(5, 2)):
        figs = {}
        for policy in (smooth_action, erratic_action):
            infos = run_episode(PredictabilityReward(ToyPointEnv(), predictor), policy)
            figs[policy.__name__] = infos[-1]
        smooth, erratic = figs["smooth_action"], figs["erratic_action"]
        assert smooth["episode_observers_scored"] > 20
        assert erratic["episode_prediction_error"] > 5 * smooth["episode_prediction_error"]
        for kind in ("post", "walker"):
            assert (
                erratic["episode_prediction_error_by_type"][kind]
                > smooth["episode_prediction_error_by_type"][kind]
            )


def test_per_type_predictors_and_env_cost_channels_kept():
    hold, lin = HoldPredictor(2, 2), LinearPredictor(2, 2)
    env = PredictabilityReward(ToyPointEnv(max_steps=6), {"walker": hold, "*": lin}, channel="pred")
    infos = run_episode(env, erratic_action)
    assert hold.predict_calls == lin.predict_calls == 6  # reset + 5 (not at the final step)
    # boundary channel of the env is kept, cost is the sum of the channels
    for info in infos:
        assert set(info["costs"]) == {"boundary", "pred"}
        assert info["cost"] == pytest.approx(sum(info["costs"].values()))
    total = sum(i["cost"] for i in infos)
    assert infos[-1]["episode_cost"] == pytest.approx(total)
    assert infos[-1]["episode_costs"]["pred"] == pytest.approx(
        sum(i["costs"]["pred"] for i in infos)
    )
    # types without any predictor are not scored
    only = PredictabilityReward(ToyPointEnv(max_steps=6), {"walker": HoldPredictor(2, 2)})
    infos = run_episode(only, erratic_action)
    assert {t for i in infos for t in i["prediction_error_by_type"]} == {"walker"}
    skip = PredictabilityReward(
        ToyPointEnv(max_steps=6), {"walker": None, "*": HoldPredictor(2, 2)}
    )
    infos = run_episode(skip, erratic_action)
    assert {t for i in infos for t in i["prediction_error_by_type"]} == {"post"}


def test_text_like_horizon_none_scored_once_at_episode_end():
    pred = UnigramPredictor(vocab=8)
    seen = []
    env = PredictabilityReward(
        ToyTokenEnv(chunk=3, n_steps=4), pred, on_scored=lambda p, v, t, pr, e: seen.append((v, t))
    )
    env.reset()
    infos = [env.step(np.array([1, 1, 2]))[4] for _ in range(4)]
    assert [i["observers_scored"] for i in infos] == [0, 0, 0, 2]  # observer 2 saw nothing
    assert pred.score_calls == 1
    full = -(8 * math.log(9 / 20) + 4 * math.log(5 / 20)) / 12
    half = -(8 * math.log(5 / 14) + 4 * math.log(3 / 14)) / 12
    assert infos[-1]["predictability"] == pytest.approx(-(full + half) / 2)
    views, truth = seen[0]
    assert truth.shape == (2, 12) and truth.dtype == np.int64
    np.testing.assert_array_equal(views.observer_ids, [0, 1])
    np.testing.assert_array_equal(views.mask[1], np.arange(12) % 2 == 0)
    np.testing.assert_array_equal(views.context[0]["prompt_ids"], [1, 2, 3])
    assert infos[-1]["episode_prediction_error_by_type"]["slm"] == pytest.approx((full + half) / 2)


def test_cotraining_replay_gets_scored_pairs():
    replay = ScoredReplay(capacity=100)
    pred = LinearPredictor(3, 4)
    infos = run_episode(
        PredictabilityReward(ToyPointEnv(max_steps=10), pred, on_scored=replay), erratic_action
    )
    n = sum(i["observers_scored"] for i in infos)
    batches = replay.drain()
    assert len(replay) == 0 and len(batches) == pred.error_calls
    assert sum(len(v) for _, v, _ in batches) == n
    for p, views, truth in batches:
        assert p is pred and truth.shape == (len(views), 3, 2)
        assert p.update(views, truth) == {}


# ----------------------------------------------------------- batched shells


def test_vec_wrapper_batches_all_worlds_into_one_call_and_matches_single():
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

    from bystander.envs.vector import PredictabilityVecWrapper

    n, steps = 3, 15
    pred = LinearPredictor(3, 4)
    venv = DummyVecEnv([lambda: ToyPointEnv(max_steps=6) for _ in range(n)])
    venv = VecMonitor(PredictabilityVecWrapper(venv, pred), info_keywords=("episode_cost",))
    venv.reset()
    vec_infos = []
    for k in range(steps):
        acts = np.stack([erratic_action(k + i) for i in range(n)])
        _, _, dones, infos = venv.step(acts)
        vec_infos.append(infos)
    assert pred.predict_calls == steps + 1  # one per step for all worlds (+ reset)
    assert pred.error_calls <= steps
    # each world equals the single-env wrapper on the same actions (across auto-resets)
    for i in range(n):
        single = PredictabilityReward(ToyPointEnv(max_steps=6), LinearPredictor(3, 4))
        single.reset()
        for k in range(steps):
            _, _, term, trunc, info = single.step(erratic_action(k + i))
            got = vec_infos[k][i]
            assert got["costs"]["predictability"] == pytest.approx(info["costs"]["predictability"])
            assert got["observers_scored"] == info["observers_scored"]
            if term or trunc:
                assert got["episode_cost"] == pytest.approx(info["episode_cost"])
                assert got["episode"]["episode_cost"] == pytest.approx(info["episode_cost"])
                single.reset()


def test_parallel_wrapper_one_call_for_all_agents():
    pred = LinearPredictor(3, 4)
    env = PredictabilityParallelWrapper(ToyParallelEnv(max_steps=8), pred)
    env.reset(seed=0)
    single = {
        a: PredictabilityReward(ToyPointEnv(max_steps=8), LinearPredictor(3, 4)) for a in "ab"
    }
    for s in single.values():
        s.reset(seed=0)
    for k in range(8):
        acts = {"a": smooth_action(k), "b": erratic_action(k)}
        _, _, terms, truncs, infos = env.step(acts)
        for a, s in single.items():
            ref = s.step(acts[a])[4]
            assert infos[a]["predictability"] == pytest.approx(ref["predictability"])
        if all(truncs.values()):
            break
    assert pred.predict_calls == 8  # reset + 7 steps, both agents in each call
    assert infos["b"]["episode_cost"] > infos["a"]["episode_cost"]
    assert isinstance(env, PredictabilityParallelWrapper)


# -------------------------------------------------------- gymnasium conformance


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_check_env_and_registered_toys():
    register_toy_envs()
    check_env(PredictabilityReward(ToyPointEnv(), LinearPredictor()), skip_render_check=True)
    check_env(PredictabilityReward(ToyTokenEnv(), UnigramPredictor()), skip_render_check=True)
    env = PredictabilityReward(gym.make("bystander-test/ToyPoint-v0", max_steps=5), HoldPredictor())
    infos = run_episode(env, smooth_action)
    assert len(infos) == 5 and "episode_cost" in infos[-1]


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_composes_in_any_order(order):
    from stable_baselines3.common.monitor import Monitor

    makers = [
        lambda e: PredictabilityReward(e, LinearPredictor(2, 3)),
        lambda e: TimeLimit(e, max_episode_steps=7),
        # both write info["episode"] (RES asserts it is absent): give RES its own key
        lambda e: RecordEpisodeStatistics(e, stats_key="res_episode"),
        lambda e: Monitor(e, info_keywords=("episode_cost",) if monitor_reads_cost else ()),
    ]
    # the wrapper sees the TimeLimit's truncation only when it wraps it (gym.make's layout)
    pr_outside_limit = order.index(0) > order.index(1)
    sees_end = {
        key: order.index(i) > order.index(1) for key, i in (("res_episode", 2), ("episode", 3))
    }
    monitor_reads_cost = pr_outside_limit and order.index(0) < order.index(3)
    env: gym.Env = ToyPointEnv(max_steps=40)
    for i in order:
        env = makers[i](env)
    for episode in range(2):
        env.reset(seed=episode)
        rewards, costs = [], []
        for k in range(20):
            _, r, term, trunc, info = env.step(erratic_action(k))
            rewards.append(float(r))
            costs.append(info["cost"])
            assert info["cost"] == pytest.approx(sum(info["costs"].values()))
            if term or trunc:
                break
        assert len(rewards) == 7 and trunc
        for key, sees in sees_end.items():
            if sees:  # episode statistics from the wrappers that see the TimeLimit's end
                assert info[key]["r"] == pytest.approx(sum(rewards))
                assert info[key]["l"] == 7
        assert sum(costs) > 0
        if pr_outside_limit:
            assert info["episode_cost"] == pytest.approx(sum(costs))
        if monitor_reads_cost:
            assert info["episode"]["episode_cost"] == pytest.approx(sum(costs))


# ---------------------------------------------------------------------- bad inputs


class BrokenPredictor(HoldPredictor):
    def __init__(self, mode: str) -> None:
        super().__init__(2, 2)
        self.mode = mode

    def predict(self, views):
        out = super().predict(views)
        if self.mode == "shape":
            return out[:, :1]
        if self.mode == "nan":
            return out * np.nan
        return out

    def error(self, predictions, truth, views):
        err = super().error(predictions, truth, views)
        return err[:, None] if self.mode == "error_shape" else err


def test_bad_inputs_raise_clear_errors():
    for horizon in (0, -1, 1.5):
        with pytest.raises(ValueError, match="horizon"):
            PredictabilityReward(ToyPointEnv(), HoldPredictor(horizon, 2))
    with pytest.raises(ValueError, match="history"):
        PredictabilityReward(ToyPointEnv(), HoldPredictor(2, 0))
    with pytest.raises(TypeError, match="horizon"):
        PredictabilityReward(ToyPointEnv(), object())
    no_error = HoldPredictor()
    no_error.error = None
    with pytest.raises(TypeError, match="error"):
        PredictabilityReward(ToyPointEnv(), no_error)
    with pytest.raises(ValueError, match="predictors"):
        PredictabilityReward(ToyPointEnv(), {})
    with pytest.raises(ValueError, match="predictors"):
        PredictabilityReward(ToyPointEnv(), {"*": None})
    with pytest.raises(ValueError, match="dt"):
        PredictabilityTracker(HoldPredictor(), dt=0.0)
    for mode, method in (("shape", "predict"), ("nan", "predict"), ("error_shape", "error")):
        env = PredictabilityReward(ToyPointEnv(), BrokenPredictor(mode))
        with pytest.raises(ValueError, match=f"BrokenPredictor.{method}"):
            run_episode(env, smooth_action, max_steps=5)

    class NotPredictable(ToyPointEnv):
        def step(self, action):
            obs, r, te, tr, info = super().step(action)
            info.pop(EGO_STEP_KEY)
            return obs, r, te, tr, info

    env = PredictabilityReward(NotPredictable(), HoldPredictor())
    env.reset()
    with pytest.raises(ValueError, match="ego_step"):
        env.step(smooth_action(0))
    tracker = PredictabilityTracker(HoldPredictor())
    with pytest.raises(TypeError, match="EgoStep"):
        tracker.step({"states": [0.0]})
    tracker.step(line_steps([[0.0]])[0])
    bad = EgoStep(
        states=np.zeros((1, 3)),
        observer_ids=np.zeros(0, np.int64),
        observer_types=np.zeros(0, object),
        visible=np.zeros((0, 1), bool),
        observer_frames=np.zeros((0, 3)),
        frame="rigid2d",
    )
    with pytest.raises(ValueError, match="EgoStep.states"):
        tracker.step(bad)
    assert FRAMES["rigid2d"].pose_size == 3


def test_multimodal_predictions_accepted():
    class TwoModes(HoldPredictor):
        def predict(self, views):
            hold = super().predict(views)
            return np.stack([hold + 100.0, hold], axis=1)  # (B, K=2, H, D)

    env = PredictabilityReward(ReplayEnv(line_steps([[0], [1], [3], [6]])), TwoModes(2, 1))
    env.reset()
    infos = [env.step(0)[4] for _ in range(3)]
    assert infos[1]["costs"]["predictability"] == pytest.approx(2.0)  # best mode: hold


def test_latest_predictions_are_in_the_world_frame():
    # observer at (5, 5) facing -y: its frame is rotated, the world-frame path is not
    xs = [[0.0], [1.0], [3.0]]
    poses = [[[5.0, 5.0, -np.pi / 2]]] * 3
    env = PredictabilityReward(ReplayEnv(line_steps(xs, poses=poses)), HoldPredictor(2, 1))
    env.reset()
    assert env.tracker.latest_predictions()[0]["path"].shape == (2, 2)
    env.step(0)
    (latest,) = env.tracker.latest_predictions()
    assert latest["observer_id"] == 0 and latest["observer_type"] == "o"
    np.testing.assert_allclose(latest["path"], [[1.0, 0.0], [1.0, 0.0]], atol=1e-9)
    np.testing.assert_allclose(latest["pose"], [5.0, 5.0, -np.pi / 2])


@pytest.mark.parametrize(("combine", "cost"), [("mean", 1.5), ("worst", 2.0)])
def test_combine_mean_or_worst_observer(combine, cost):
    # ego x: 0, 1, 3, 6 seen by two observers of types a (hold) and b (linear), horizon 1
    import dataclasses

    steps = line_steps([[0.0], [1.0], [3.0], [6.0]], ids=[[0, 1]] * 4)
    steps = [
        dataclasses.replace(s, observer_types=np.array(["a", "b"], dtype=object)) for s in steps
    ]
    predictors = {"a": HoldPredictor(1, 2), "b": LinearPredictor(1, 2)}
    env = PredictabilityReward(ReplayEnv(steps), predictors, combine=combine)
    env.reset()
    env.step(0)
    info = env.step(0)[4]  # scores the predictions made at x=1: hold misses by 2, linear by 1
    assert info["prediction_error_by_type"] == {"a": pytest.approx(2.0), "b": pytest.approx(1.0)}
    assert info["costs"]["predictability"] == pytest.approx(cost)
    assert info["predictability"] == pytest.approx(-cost)
    with pytest.raises(ValueError, match="combine"):
        PredictabilityReward(ReplayEnv(steps), predictors, combine="median")


# ------------------------------------------------------------------ hot-path shortcuts


def _feed(tracker: PredictabilityTracker, steps: list[EgoStep]) -> list[tuple]:
    figs = [tracker.step(e) for e in steps]
    return [(f.observers_scored, f.error, f.error_by_type) for f in figs]


def test_observer_ids_buffer_reused_in_place_is_noticed():
    # an env that writes each step's observer ids into ONE array: the tracker must not
    # mistake the mutated buffer for "the same observers as last step"
    ids_per_step = [[0, 1], [0, 1], [0, 2], [0, 2], [1, 2], [1, 2]]
    fresh = line_steps([[k] for k in range(6)], ids=ids_per_step)
    buf = np.zeros(2, dtype=np.int64)
    expected = _feed(PredictabilityTracker(HoldPredictor(2, 3)), fresh)
    tracker = PredictabilityTracker(HoldPredictor(2, 3))
    got = []
    for e, ids in zip(fresh, ids_per_step, strict=True):
        buf[:] = ids
        reused = EgoStep(
            e.states,
            buf,
            e.observer_types,
            e.visible,
            e.observer_frames,
            e.frame,
            e.episode_start,
        )
        f = tracker.step(reused)
        got.append((f.observers_scored, f.error, f.error_by_type))
    assert got == expected
    # observer 1 left at report 2 (its predictions are dropped when due; a tracker fooled
    # by the reused buffer would score 2 at report 2), observer 2 replaced it
    assert [g[0] for g in got] == [0, 0, 1, 1, 1, 1]


def test_observer_leaving_and_returning_before_due_is_scored_without_history():
    # observer 1 is absent at report 1 only: present when its reset-time prediction is due
    steps = line_steps([[0], [1], [2], [3]], ids=[[0, 1], [0], [0, 1], [0, 1]])
    pred = RecordingPredictor(horizon=2, history=3)
    tracker = PredictabilityTracker(pred)
    figs = [tracker.step(e) for e in steps]
    assert [f.observers_scored for f in figs] == [0, 0, 2, 1]
    assert figs[2].error == pytest.approx(1.5)  # hold at x=0, truth x=1, 2
    # the view at report 2: observer 1 came back with no visibility history
    v = pred.views[2]
    np.testing.assert_array_equal(v.observer_ids, [0, 1])
    np.testing.assert_array_equal(v.mask, [[True, True, True], [False, False, True]])


def test_context_mutated_in_place_or_replaced_reaches_the_views():
    from types import MappingProxyType

    base = line_steps([[0], [1], [2]])

    def with_ctx(e: EgoStep, ctx) -> EgoStep:
        return EgoStep(
            e.states,
            e.observer_ids,
            e.observer_types,
            e.visible,
            e.observer_frames,
            e.frame,
            e.episode_start,
            ctx,
        )

    pred = RecordingPredictor(horizon=1, history=1)
    tracker = PredictabilityTracker(pred)
    ctx = {"dt": 0.5, "tag": "a"}
    tracker.step(with_ctx(base[0], ctx))
    ctx["tag"] = "b"  # a plain dict reused and changed by the env
    tracker.step(with_ctx(base[1], ctx))
    tracker.step(with_ctx(base[2], MappingProxyType({"tag": "c"})))
    assert [v.context[0]["tag"] for v in pred.views] == ["a", "b", "c"]
    assert all(v.dt == 0.5 for v in pred.views)
    assert pred.views[2].context[0] == {"dt": 0.5, "tag": "c"}


def test_batched_frame_transform_equals_per_stream():
    # two streams seen by rotated, moving observers: one run_requests call for both
    # must give the views, truths and figures of each stream run alone
    poses_a = [[[0.0, 1.0, 0.3]], [[0.5, 1.0, 0.6]], [[1.0, 1.5, 0.9]], [[1.0, 2.0, 1.2]]]
    poses_b = [[[3.0, -1.0, -2.0]], [[3.0, -0.5, -1.5]], [[2.0, 0.0, -1.0]], [[2.0, 1.0, 0.0]]]
    a = line_steps([[0], [1], [3], [6]], poses=poses_a)
    b = line_steps([[5], [4], [4], [2]], poses=poses_b)
    single = [RecordingPredictor(2, 2), RecordingPredictor(2, 2)]
    alone = [_feed(PredictabilityTracker(p), s) for p, s in zip(single, (a, b), strict=True)]
    shared = RecordingPredictor(2, 2)
    ta, tb = PredictabilityTracker(shared), PredictabilityTracker(shared)
    together: list[list[tuple]] = [[], []]
    for ea, eb in zip(a, b, strict=True):
        reqs = [ta.prepare(ea), tb.prepare(eb)]
        run_requests(reqs)
        for k, (t, r) in enumerate(zip((ta, tb), reqs, strict=True)):
            f = t.commit(r)
            together[k].append((f.observers_scored, f.error, f.error_by_type))
    assert together == alone
    assert sum(n for n, _, _ in alone[0] + alone[1]) == 4
    for k in range(len(shared.views)):  # one batched call per step: stream a then b
        both = np.concatenate([single[0].views[k].states, single[1].views[k].states])
        np.testing.assert_array_equal(shared.views[k].states, both)
    for k in range(len(shared.truths)):
        both = np.concatenate([single[0].truths[k], single[1].truths[k]])
        np.testing.assert_array_equal(shared.truths[k], both)
