"""Route figures (turns given the approach, route overhead) and the route-habit drivers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bystander.agents.evaluation import evaluate_policy
from bystander.agents.heldout import evaluate_batched
from bystander.agents.route_stats import RouteLog, turn_columns, turn_entropy_bits
from bystander.agents.scripted import (
    ROUTE_HABITS,
    ConstantSpeedDriver,
    RouteHabitDriver,
    RoutePreferenceDriver,
    scripted_driver,
)
from bystander.config import load_config

GRID = ["env.config.grid=[3,3]", "env.config.block_length=50.0",
        "env.config.arm_length=35.0", "env.config.max_cycles=600",
        "predictor.kind=none"]  # fmt: skip


def _obs(heading_deg: float, inside: bool) -> np.ndarray:
    o = np.zeros(15)
    o[1], o[2] = math.cos(math.radians(heading_deg)), math.sin(math.radians(heading_deg))
    o[14] = float(inside)
    return o


def test_a_crossing_is_counted_by_approach_and_turn():
    log = RouteLog(1, dt=0.1)
    log.start(_obs(0, False))  # heading east
    for heading, inside in [(0, True), (40, True), (90, True), (90, False), (90, False)]:
        log.step(_obs(heading, inside), 10.0, True)
    row = log.row(0, success=True, progress_m=2.5)
    assert row["turns_E_left"] == 1.0 and row["crossings"] == 1.0
    assert row["driven_m"] == pytest.approx(5.0)
    assert row["route_overhead"] == pytest.approx(2.0)
    assert math.isnan(log.row(0, success=False, progress_m=2.5)["route_overhead"])
    # a slot whose episode ended: its next obs (auto-reset) is not read
    log = RouteLog(2, dt=0.1)
    log.start(np.stack([_obs(0, True), _obs(180, True)]))
    log.step(np.stack([_obs(-90, False), _obs(180, False)]), 5.0, True, ended=[False, True])
    assert log.row(0, True, 1.0)["turns_E_right"] == 1.0
    assert log.row(1, True, 1.0)["crossings"] == 0.0


def test_turn_entropy_given_the_approach():
    cols = turn_columns()
    habit = [{"turns_E_right": 5.0, "turns_N_right": 3.0}]
    assert turn_entropy_bits(habit) == 0.0
    even = [{c: 1.0 for c in cols}]
    assert turn_entropy_bits(even) == pytest.approx(math.log2(3))
    # E: always straight (0 bits, 2 crossings); N: left or right (1 bit, 2 crossings)
    rows = [{"turns_E_straight": 2.0}, {"turns_N_left": 1.0, "turns_N_right": 1.0}]
    assert turn_entropy_bits(rows) == pytest.approx(0.5)
    assert math.isnan(turn_entropy_bits([{"success": 1.0}]))


def test_route_habit_specs():
    cfg = load_config(overrides=GRID).env.config
    assert isinstance(scripted_driver("route:shortest", cfg), ConstantSpeedDriver)
    assert isinstance(scripted_driver("route:always-right:6", cfg), RouteHabitDriver)
    d = scripted_driver("route:no-left:6", cfg)
    assert isinstance(d, RoutePreferenceDriver) and d.speed == 6.0
    assert d.min_ahead == pytest.approx(0.75 * 50.0)
    assert set(ROUTE_HABITS) == {"shortest", "straight-first", "no-left", "always-right"}
    for bad in ("route:zigzag", "route:no-left:fast", "route:"):
        with pytest.raises(ValueError, match="route:<habit>"):
            scripted_driver(bad, cfg)


def test_route_habits_arrive_and_show_in_the_evaluation_rows():
    cfg = load_config(overrides=GRID)
    res = {
        spec: evaluate_batched(scripted_driver(spec, cfg.env.config), cfg, episodes=24,
                               seed=500).summary
        for spec in ("route:shortest", "route:straight-first", "route:no-left",
                     "route:always-right")
    }  # fmt: skip
    for spec in ("route:shortest", "route:straight-first", "route:no-left"):
        assert res[spec]["success"]["mean"] >= 0.6, spec
        # a near-shortest route: at most a few per cent longer than the shortest
        assert 0.98 <= res[spec]["route_overhead"]["mean"] <= 1.1, spec
    left = {k: sum(res[k][f"turns_{a}_left"]["mean"] for a in "ENWS") for k in res}
    straight = {k: sum(res[k][f"turns_{a}_straight"]["mean"] for a in "ENWS") for k in res}
    assert left["route:no-left"] < left["route:shortest"]
    assert straight["route:straight-first"] > straight["route:shortest"]
    assert res["route:always-right"]["turn_entropy_bits"]["mean"] == 0.0
    assert res["route:shortest"]["turn_entropy_bits"]["mean"] > 1.0


def test_the_single_env_evaluation_has_the_route_figures_too():
    cfg = load_config(overrides=GRID)
    driver = scripted_driver("route:shortest", cfg.env.config)
    single = evaluate_policy(driver, cfg, episodes=3, seed=500)
    batched = evaluate_batched(driver, cfg, episodes=3, seed=500)
    for key in ("crossings", "driven_m", *turn_columns()):
        assert [r[key] for r in single.episodes] == pytest.approx(
            [r[key] for r in batched.episodes]
        ), key
    assert "turn_entropy_bits" in single.summary


def test_the_demo_adds_route_habits_on_a_grid(tmp_path):
    from bystander.demo import _scripted_frontier
    from bystander.report import plot_utility_vs_predictability

    grid = load_config(overrides=[*GRID[:-1], "eval.episodes=3"])
    entries = _scripted_frontier(grid)
    labels = [e.label for e in entries]
    assert "scripted route:no-left" in labels and "scripted speed:6" in labels
    assert plot_utility_vs_predictability(entries, tmp_path / "p.png").is_file()
    one = load_config(overrides=["eval.episodes=2"])
    assert not any("route:" in e.label for e in _scripted_frontier(one))
    # a target_speed env: its own speed levels, and no turn habits its egos cannot choose
    levels = load_config(overrides=[*GRID[:-1], "eval.episodes=2",
                                    "env.config.action_type=target_speed",
                                    "env.config.speed_levels=[2, 7]"])  # fmt: skip
    labels = [e.label for e in _scripted_frontier(levels)]
    assert labels == ["scripted speed:2", "scripted speed:7", "scripted stop"]
