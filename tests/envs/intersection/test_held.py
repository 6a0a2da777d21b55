"""``IntersectionSim.held``: standing in a queue is not standing still by choice."""

from __future__ import annotations

import math

import numpy as np

from bystander.agents.stand_still import standing_still
from bystander.envs.intersection.config import IntersectionConfig
from bystander.envs.intersection.sim import CAR, IntersectionSim


def _lone_ego() -> IntersectionSim:
    """One world, the ego stopped on its entry lane, every other road user removed."""
    sim = IntersectionSim(IntersectionConfig(), n_worlds=1, seed=3)
    sim.reset()
    sim.alive[0, sim.C :] = False
    sim.v[0, 0] = sim.target_v[0, 0] = 0.0
    sim.refresh()
    return sim


def _car_ahead(sim: IntersectionSim, gap_m: float) -> None:
    """A standing scripted car ``gap_m`` metres (box to box) ahead of the ego."""
    d = gap_m + 4.5  # centre to centre: two half car lengths
    h = float(sim.h[0, 0])
    x, y = float(sim.x[0, 0]) + d * math.cos(h), float(sim.y[0, 0]) + d * math.sin(h)
    sim.place(0, sim.C, CAR, x, y, h, v=0.0)


def test_an_ego_with_a_free_road_is_not_held():
    sim = _lone_ego()
    assert sim.seg[0, 0] >= 0  # lane-bound: the rule applies
    assert not sim.held()[0, 0]
    assert standing_still([0.0], sim).tolist() == [True]


def test_an_ego_right_behind_a_standing_car_is_held_one_further_back_is_not():
    sim = _lone_ego()
    _car_ahead(sim, gap_m=2.0)
    assert sim.held()[0, 0]
    assert standing_still([0.0], sim).tolist() == [False]  # queueing is not standing still
    assert standing_still([3.0], sim).tolist() == [False]  # nor is driving
    sim = _lone_ego()
    _car_ahead(sim, gap_m=15.0)
    assert not sim.held()[0, 0]
    assert standing_still([0.0], sim).tolist() == [True]


def test_a_reset_world_is_judged_by_speed_alone():
    sim = _lone_ego()
    _car_ahead(sim, gap_m=2.0)
    fresh = np.array([True])
    assert standing_still([0.0], sim, fresh=fresh).tolist() == [True]
    assert standing_still([0.0], None).tolist() == [True]
