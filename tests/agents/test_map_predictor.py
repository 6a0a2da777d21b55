"""MapPredictor pinned on hand-made routes of a 2x2 grid (no env needed but where said)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import bystander.envs  # noqa: F401 - registers the env ids
from bystander.agents.map_predictor import MapPredictor
from bystander.agents.metrics import ade
from bystander.agents.scripted import RouteHabitDriver, scripted_driver
from bystander.config import load_config
from bystander.envs.contract import FRAMES, Views
from bystander.envs.intersection.config import IntersectionConfig
from bystander.envs.intersection.road import RoadNetwork
from bystander.envs.predictability import PredictabilityReward

GRID = {"grid": (2, 2), "max_cycles": 400}
DT = 0.1
HIST = 8


@pytest.fixture(scope="module")
def road() -> RoadNetwork:
    return RoadNetwork(IntersectionConfig.from_dict(GRID))


def route(road: RoadNetwork, entry: int, turns: list[int], speed: float = 9.0) -> np.ndarray:
    """Positions ``(T, 2)`` [m] every ``DT`` s at ``speed`` along the lanes from ``entry``,
    turning ``turns[i]`` at the ``i``-th intersection (straight after)."""
    seg, pts, i = entry, [], 0
    while seg >= 0:
        pts.append(road.points[seg, : road.n_points[seg], :2])
        if road.node[seg] < 0 and road.kind[seg] == 0:  # an exit link: off the map
            break
        t = turns[i] if i < len(turns) else 1
        if road.kind[seg] == 0:
            i += 1
        seg = road.succ[seg, t]
    path = np.concatenate(pts)
    d = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(path, axis=0).T))])
    s = np.arange(0.0, d[-1], speed * DT)
    return np.stack([np.interp(s, d, path[:, 0]), np.interp(s, d, path[:, 1])], axis=1)


def samples(traj: np.ndarray, horizon: int, times, seed: int = 0) -> tuple[Views, np.ndarray]:
    """Views at ``times`` (index of "now") in random observer frames, and their truths."""
    times = np.asarray(list(times))
    states = np.stack([traj[t - HIST + 1 : t + 1] for t in times])
    truth = np.stack([traj[t + 1 : t + 1 + horizon] for t in times])
    rng = np.random.default_rng(seed)
    poses = np.column_stack(
        [
            states[:, -1] + rng.normal(0, 15, (len(times), 2)),
            rng.uniform(-np.pi, np.pi, len(times)),
        ]
    )
    frame = FRAMES["rigid2d"]
    views = Views(
        states=frame.to_frame(states, poses),
        mask=np.ones((len(times), HIST), dtype=bool),
        observer_types=np.array(["car"] * len(times), dtype=object),
        observer_ids=np.arange(len(times)),
        dt=DT,
        poses=poses,
    )
    return views, frame.to_frame(truth, poses)


def approach_times(traj: np.ndarray, road: RoadNetwork, horizon: int) -> range:
    """Times on the entry link from which ``horizon`` steps reach the first intersection."""
    entry_len = road.length[road.entries[0]]
    reach = int(entry_len / (9.0 * DT))
    return range(max(HIST, reach - horizon + 5), min(reach - 2, len(traj) - horizon - 1))


def test_modes_cover_the_turn_options_at_an_approach(road: RoadNetwork) -> None:
    p = MapPredictor(GRID, horizon=30, history=HIST)
    entry = int(road.entries[0])
    for turn in range(3):
        traj = route(road, entry, [turn, 1])
        views, truth = samples(traj, 30, approach_times(traj, road, 30))
        modes, logp = p.predict_modes(views)
        assert modes.shape == (len(views), 9, 30, 2)
        # three distinct first turns are live; the true route is one of them
        assert (np.isfinite(logp).sum(axis=1) == 3).all()
        assert np.allclose(np.exp(logp).sum(axis=1), 1.0)
        assert ade(modes, truth).max() < 0.5
        best = np.argmin(((modes[:, :, -1] - truth[:, None, -1]) ** 2).sum(-1), axis=1)
        assert (best % 3 == turn).all()  # mode k turns digit_0(k) at the first intersection


def test_a_right_turn_habit_is_learned_by_cotraining(road: RoadNetwork) -> None:
    p = MapPredictor(GRID, horizon=30, history=HIST, lr=0.05)
    trajs = [route(road, int(e), [0, 0]) for e in road.entries]
    batches = [samples(t, 30, approach_times(t, road, 30), seed=i) for i, t in enumerate(trajs)]
    views = [b[0] for b in batches]
    test_views, test_truth = views[0], batches[0][1]

    def right_probability() -> float:
        _, logp = p.predict_modes(test_views)
        return float(np.exp(logp[:, [0, 3, 6]]).sum(axis=1).mean())  # first turn: right

    before_p, before_err = right_probability(), float(p.score(test_views, test_truth).mean())
    for _ in range(5):
        for v, truth in batches[1:]:  # other entries: the habit, not the place, is learned
            out = p.update(v, truth)
    assert out["n"] == len(batches[-1][0]) and np.isfinite(out["loss"])
    after_p, after_err = right_probability(), float(p.score(test_views, test_truth).mean())
    assert before_p < 0.5 < 0.8 < after_p
    assert after_err < 0.5 * before_err
    assert p.updates == 5 * (len(batches) - 1)


def test_world_frame_and_observer_frame_views_agree(road: RoadNetwork) -> None:
    p = MapPredictor(GRID, horizon=20, history=HIST)
    traj = route(road, int(road.entries[1]), [2, 0])
    views, _ = samples(traj, 20, range(HIST, len(traj) - 21, 7))
    world = Views(
        states=FRAMES["rigid2d"].from_frame(views.states, views.poses),
        mask=views.mask,
        observer_types=views.observer_types,
        observer_ids=views.observer_ids,
        dt=DT,
    )
    a = FRAMES["rigid2d"].to_frame(p.predict(world).reshape(len(views), -1, 2), views.poses)
    np.testing.assert_allclose(a.reshape(len(views), 9, 20, 2), p.predict(views), atol=1e-6)


def test_error_is_the_most_likely_modes_ade_or_min_ade(road: RoadNetwork) -> None:
    traj = route(road, int(road.entries[2]), [1, 1])
    views, truth = samples(traj, 30, range(HIST, len(traj) - 31, 5))
    top = MapPredictor(GRID, horizon=30, history=HIST)
    low = MapPredictor(GRID, horizon=30, history=HIST, error="min")
    preds = top.predict(views)
    np.testing.assert_allclose(top.error(preds, truth), ade(preds[:, :1], truth))
    np.testing.assert_allclose(low.error(preds, truth), ade(preds, truth))
    nll = top.nll(views, truth)
    assert nll.shape == (len(views),) and np.isfinite(nll).all()


class _Recording(MapPredictor):
    """Keeps the poses of every batch of views it is asked to predict."""

    def predict(self, views: Views) -> np.ndarray:
        self.seen_poses = [*getattr(self, "seen_poses", []), views.poses]
        return super().predict(views)


def test_frozen_map_predictor_under_the_predictability_wrapper() -> None:
    pred = _Recording(GRID, horizon=10, history=HIST).freeze()
    env = PredictabilityReward(gym.make("bystander/Intersection-v0", config=GRID), pred)
    driver = RouteHabitDriver("right", 9.0)
    obs, _ = env.reset(seed=3)
    costs = []
    for _ in range(60):
        obs, _, term, trunc, info = env.step(driver.predict(obs)[0])
        costs.append(info["cost"])
        if term or trunc:
            break
    assert np.isfinite(costs).all() and max(costs) > 0
    # the tracker hands over the observers' poses, one (x, y, heading) per view
    assert pred.seen_poses and all(p is not None and p.shape[1] == 3 for p in pred.seen_poses)
    assert pred.update(*samples(route(env.unwrapped.sim.road, 0, [0]), 10, [20])) == {}


def test_run_config_kinds_build_it(tmp_path) -> None:
    from bystander.agents.training import build_predictor, load_trained_predictor

    cfg = load_config(overrides=["predictor.kind=map", "predictor.horizon=30"])
    frozen = build_predictor(cfg)
    assert isinstance(frozen, MapPredictor) and frozen.frozen and frozen.horizon == 30
    cfg = load_config(overrides=["predictor.kind=map_cotrained", "predictor.lr=0.05"])
    live = build_predictor(cfg)
    assert isinstance(live, MapPredictor) and not live.frozen and live.lr == 0.05
    path = live.save(tmp_path / "predictor.pt")
    back = load_trained_predictor(cfg, path)
    assert back.frozen and back.config() == live.config()
    with pytest.raises(ValueError, match="config mismatch"):
        MapPredictor(GRID, horizon=10).load(path)


def test_bad_inputs_give_clear_errors(road: RoadNetwork) -> None:
    with pytest.raises(TypeError, match="env_config"):
        MapPredictor("grid")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="depth"):
        MapPredictor(GRID, depth=5)
    with pytest.raises(ValueError, match="error"):
        MapPredictor(GRID, error="mean")
    with pytest.raises(ValueError, match="sigma0"):
        MapPredictor(GRID, sigma0=0.0)
    p = MapPredictor(GRID, horizon=10, history=HIST)
    views, truth = samples(route(road, int(road.entries[0]), [0]), 10, [20, 30])
    with pytest.raises(TypeError, match="views"):
        p.predict(views.states)  # type: ignore[arg-type]
    bad = views.take(np.array([0, 1]))
    bad.poses = np.zeros((2, 2))
    with pytest.raises(ValueError, match="views.poses"):
        p.predict(bad)
    with pytest.raises(ValueError, match="truth"):
        p.update(views, truth[:, :5])
    with pytest.raises(ValueError, match="habit"):
        scripted_driver("habit:backwards")
    assert scripted_driver("habit:left:6").speed == 6.0


def test_map_cotrained_run_updates_syncs_and_saves_it(tmp_path) -> None:
    import torch

    from bystander.agents.training import Trainer, load_trained_predictor

    cfg = load_config(
        overrides=[
            "train.vec_env=batched",
            "train.tensorboard=false",
            "train.n_envs=2",
            "train.hyperparams.n_steps=64",
            "train.hyperparams.batch_size=64",
            "train.hyperparams.n_epochs=1",
            "env.config.max_cycles=80",
            f"runs_dir={tmp_path}",
            "predictor.kind=map_cotrained",
            "predictor.horizon=10",
            "predictor.lr=0.05",
            "predictor.batch_size=64",
            "predictor.buffer_size=512",
            "train.total_timesteps=256",
        ]
    )
    trainer = Trainer(cfg)
    try:
        before = trainer.predictor.net.weight.detach().clone()
        trainer.train()
        after = trainer.predictor.net.weight.detach()
        assert trainer.predictor.updates > 0 and not torch.equal(before, after)
        hooks = trainer.venv
        while "copies" not in vars(hooks):
            hooks = hooks.venv
        assert torch.equal(hooks.copies.predictor.net.weight, after)  # the env's copy
        saved = load_trained_predictor(cfg, trainer.run_dir / "predictor.pt")
        assert torch.equal(saved.net.weight, after) and saved.frozen
    finally:
        trainer.close()
