"""The learned (torch) predictor: CV at init, training beats CV, save/load, freeze, equivariance."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from bystander.agents import metrics
from bystander.agents.learned import LearnedPredictor, subset
from bystander.agents.predictors import ConstantVelocityPredictor
from bystander.agents.rollouts import TrajectoryDataset, evaluate, synthetic_dataset
from bystander.envs.contract import FRAMES, Predictor, Views


@pytest.fixture(scope="module")
def data() -> tuple[TrajectoryDataset, TrajectoryDataset]:
    return synthetic_dataset(300, windows_per_track=8, seed=3).split_episodes(0.25, seed=0)


def test_protocol_and_validation():
    p = LearnedPredictor(horizon=5, history=4)
    assert isinstance(p, Predictor) and p.unit == "m"
    with pytest.raises(ValueError, match="horizon"):
        LearnedPredictor(horizon=0)
    with pytest.raises(ValueError, match="history"):
        LearnedPredictor(history=1)
    with pytest.raises(ValueError, match="arch"):
        LearnedPredictor(arch="transformer")
    with pytest.raises(ValueError, match="lr"):
        LearnedPredictor(lr=0.0)
    with pytest.raises(ValueError, match="truth"):
        p.update(synthetic_dataset(2, history=4, horizon=5).views(), np.zeros((8, 4, 2)))


def test_untrained_model_is_constant_velocity(data):
    _, test = data
    v = test.views()
    np.testing.assert_allclose(
        LearnedPredictor(seed=1).predict(v), ConstantVelocityPredictor().predict(v), atol=1e-12
    )


@pytest.mark.parametrize("arch", ["mlp", "gru"])
def test_training_beats_constant_velocity_on_held_out_tracks(data, arch):
    train, test = data
    p = LearnedPredictor(arch=arch, hidden=32, lr=3e-3, seed=0)
    log = p.fit(
        train.views(), train.truth, epochs=10, batch_size=64, val=(test.views(), test.truth)
    )
    assert log[-1]["loss"] < log[0]["loss"]
    cv, learned = evaluate(ConstantVelocityPredictor(), test), evaluate(p, test)
    assert learned["ade"] < 0.9 * cv["ade"], (learned["ade"], cv["ade"])
    assert learned["fde"] < cv["fde"]
    assert set(learned["by_type"]) == {"car", "pedestrian", "cyclist"}
    assert log[-1]["val_ade"] == pytest.approx(learned["ade"])


def test_deterministic_given_seed(data):
    train, test = data
    small = train.select(slice(0, 128))
    a, b = LearnedPredictor(seed=7), LearnedPredictor(seed=7)
    for p in (a, b):
        p.fit(small.views(), small.truth, epochs=2, batch_size=32)
    np.testing.assert_array_equal(a.predict(test.views()), b.predict(test.views()))
    c = LearnedPredictor(seed=8)
    c.fit(small.views(), small.truth, epochs=2, batch_size=32)
    assert not np.allclose(c.predict(test.views()), a.predict(test.views()))


def test_update_freeze_and_no_grad_predict(data):
    train, _ = data
    batch = train.select(slice(0, 64))
    p = LearnedPredictor(seed=0, lr=3e-3)
    losses = [p.update(batch.views(), batch.truth)["loss"] for _ in range(30)]
    assert losses[-1] < losses[0] and p.updates == 30
    p.freeze()
    before = [t.clone() for t in p.net.parameters()]
    assert p.update(batch.views(), batch.truth) == {}
    assert all(torch.equal(x, y) for x, y in zip(before, p.net.parameters(), strict=True))
    with pytest.raises(RuntimeError, match="frozen"):
        p.fit(batch.views(), batch.truth, epochs=1)
    p.unfreeze()
    assert "loss" in p.update(batch.views(), batch.truth)


def test_save_load_round_trip(tmp_path, data):
    train, test = data
    batch = train.select(slice(0, 64))
    p = LearnedPredictor(seed=0, hidden=16)
    for _ in range(3):
        p.update(batch.views(), batch.truth)
    path = p.save(tmp_path / "sub" / "pred.pt")
    assert os.listdir(path.parent) == ["pred.pt"]  # no temp file left behind
    q = LearnedPredictor.from_file(path)
    np.testing.assert_array_equal(p.predict(test.views()), q.predict(test.views()))
    assert q.updates == 3 and not q.frozen
    # Optimizer state travels too: the next step is identical.
    p.update(batch.views(), batch.truth)
    q.update(batch.views(), batch.truth)
    np.testing.assert_array_equal(p.predict(test.views()), q.predict(test.views()))
    p.freeze().save(path)
    assert LearnedPredictor(seed=0, hidden=16).load(path).frozen
    with pytest.raises(ValueError, match="hidden: file has 16, model has 64"):
        LearnedPredictor(seed=0).load(path)
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a bystander.LearnedPredictor"):
        LearnedPredictor.from_file(tmp_path / "junk.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="format header"):
        LearnedPredictor.from_file(tmp_path / "other.pt")


def test_history_length_is_adapted_and_model_is_frame_equivariant(data):
    train, test = data
    p = LearnedPredictor(seed=0)
    p.fit(train.views(), train.truth, epochs=1, batch_size=64)
    v = test.select(slice(0, 32)).views()
    # A longer view uses only its last `history` entries; a shorter one is padded as unseen.
    longer = Views(
        np.concatenate([np.full((32, 3, 2), 99.0), v.states], 1),
        np.concatenate([np.ones((32, 3), bool), v.mask], 1),
        v.observer_types,
        v.observer_ids,
        v.dt,
    )
    np.testing.assert_allclose(p.predict(longer), p.predict(v), atol=1e-12)
    shorter = Views(v.states[:, 3:], v.mask[:, 3:], v.observer_types, v.observer_ids, v.dt)
    padded = Views(v.states, v.mask & (np.arange(8) >= 3), v.observer_types, v.observer_ids, v.dt)
    np.testing.assert_allclose(p.predict(shorter), p.predict(padded), atol=1e-12)
    # Moving the observer (rotation + translation) moves the prediction with it.
    rng = np.random.default_rng(0)
    poses = np.column_stack([rng.normal(size=(32, 2)) * 10, rng.uniform(-np.pi, np.pi, 32)])
    rf = FRAMES["rigid2d"]
    moved = Views(rf.to_frame(v.states, poses), v.mask, v.observer_types, v.observer_ids, v.dt)
    # (A standing ego has no heading: its local frame falls back to the view's axes.)
    seen = np.where(v.mask[..., None], v.states, np.nan)
    moving = np.nanmax(seen, axis=1) - np.nanmin(seen, axis=1)
    moving = moving.max(axis=1) > 0.05
    assert moving.sum() > 20
    back = rf.from_frame(p.predict(moved), poses)
    np.testing.assert_allclose(back[moving], p.predict(v)[moving], atol=1e-5)
    assert len(subset(v, np.array([0, 2]))) == 2


def test_dataset_round_trip_split_and_validation(tmp_path):
    d = synthetic_dataset(10, windows_per_track=3, history=6, horizon=4, seed=1)
    assert (len(d), d.history, d.horizon) == (30, 6, 4)
    e = TrajectoryDataset.load(d.save(tmp_path / "d.npz"))
    for name in ("states", "mask", "truth", "observer_ids", "episode"):
        np.testing.assert_array_equal(getattr(d, name), getattr(e, name))
    assert list(e.observer_types) == list(d.observer_types) and e.dt == d.dt
    train, test = d.split_episodes(0.3, seed=0)
    assert len(train) + len(test) == len(d)
    assert not set(train.episode) & set(test.episode)
    both = TrajectoryDataset.concat([train, test])
    assert len(both) == len(d)
    again = TrajectoryDataset.from_batches([(d.views(), d.truth)])
    np.testing.assert_array_equal(again.states, d.states)
    with pytest.raises(ValueError, match="truth"):
        TrajectoryDataset(
            d.states, d.mask, d.truth[:3], d.observer_types, d.observer_ids, d.episode, 0.1
        )
    with pytest.raises(ValueError, match="held_out"):
        d.split_episodes(1.5)
    with pytest.raises(ValueError, match="horizon"):
        evaluate(ConstantVelocityPredictor(horizon=5), d)


def test_multi_modal_predictor_gives_k_modes_scored_by_min_ade(data):
    train, test = data
    k = LearnedPredictor(hidden=32, lr=3e-3, seed=0, modes=3)
    one = LearnedPredictor(hidden=32, lr=3e-3, seed=0)
    for p in (k, one):
        p.fit(train.views(), train.truth, epochs=5, batch_size=64)
    pred = k.predict(test.views())
    assert pred.shape == (len(test), 3, 10, 2)
    np.testing.assert_allclose(
        k.score(test.views(), test.truth), metrics.min_ade_k(pred, test.truth)
    )
    summary = evaluate(k, test)
    assert summary["min_ade_k"] == summary["ade"]
    assert summary["ade"] < evaluate(one, test)["ade"]
    assert summary["fde"] < evaluate(one, test)["fde"]
    # The modes really differ (winner-takes-all separated them).
    spread = np.linalg.norm(pred[:, 0, -1] - pred[:, 1, -1], axis=-1).mean()
    assert spread > 0.1
    with pytest.raises(ValueError, match="modes"):
        LearnedPredictor(modes=0)
