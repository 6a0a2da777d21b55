"""The shared contract: EgoStep validation and the frame transforms."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bystander.envs.contract import FRAMES, EgoStep, RigidFrame2D


def _step(**kw):
    base = dict(
        states=np.zeros((1, 2)),
        observer_ids=np.array([3, 4]),
        observer_types=np.array(["car", "pedestrian"], dtype=object),
        visible=np.array([[True], [False]]),
        observer_frames=np.zeros((2, 3)),
        frame="rigid2d",
    )
    base.update(kw)
    return EgoStep(**base)


def test_valid_step() -> None:
    step = _step()
    assert step.visible.shape == (2, 1)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("visible", np.ones((2, 2), bool)),
        ("observer_types", np.array(["car"])),
        ("observer_frames", np.zeros((2, 2))),
        ("observer_frames", None),
        ("frame", "polar"),
        ("states", np.zeros((1, 2, 2))),
    ],
)
def test_bad_step_names_field(field: str, value) -> None:
    with pytest.raises(ValueError, match=field if field != "states" else "EgoStep.states"):
        _step(**{field: value})


def test_identity_frame_allows_no_poses() -> None:
    step = EgoStep(
        states=np.arange(5),
        observer_ids=np.array([0]),
        observer_types=np.array(["slm"], dtype=object),
        visible=np.ones((1, 5), bool),
    )
    assert FRAMES[step.frame].to_frame(step.states, None) is step.states


def test_rigid_frame_known_values() -> None:
    frame = RigidFrame2D()
    pose = np.array([[1.0, 2.0, np.pi / 2]])  # at (1, 2), looking north
    world = np.array([[[1.0, 5.0], [0.0, 2.0]]])  # 3 m ahead; 1 m to its left (west)
    local = frame.to_frame(world, pose)
    np.testing.assert_allclose(local, [[[3.0, 0.0], [0.0, 1.0]]], atol=1e-12)


@given(
    st.floats(-50, 50),
    st.floats(-50, 50),
    st.floats(-np.pi, np.pi),
    st.lists(st.floats(-100, 100), min_size=4, max_size=4),
)
def test_rigid_frame_round_trip_preserves_distance(x, y, h, pts) -> None:
    frame = RigidFrame2D()
    pose = np.array([[x, y, h]])
    world = np.array(pts, dtype=float).reshape(1, 2, 2)
    local = frame.to_frame(world, pose)
    np.testing.assert_allclose(frame.from_frame(local, pose), world, atol=1e-9)
    d_world = np.linalg.norm(world[0, 0] - world[0, 1])
    d_local = np.linalg.norm(local[0, 0] - local[0, 1])
    assert d_local == pytest.approx(d_world, abs=1e-9)
