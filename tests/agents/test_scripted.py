"""Scripted drivers: they hold their speed, stop when told, and form a frontier
(faster: sooner at the destination, larger observer error)."""

from __future__ import annotations

import numpy as np
import pytest

from bystander.agents.heldout import evaluate_batched
from bystander.agents.predictors import ConstantVelocityPredictor
from bystander.agents.scripted import ConstantSpeedDriver, StopDriver, scripted_driver
from bystander.cli import main
from bystander.config import load_config
from bystander.envs.intersection.gym_env import IntersectionEnv


def test_a_constant_speed_driver_holds_its_speed():
    env = IntersectionEnv(config={"n_cars": 0, "n_pedestrians": 0, "n_cyclists": 0})
    driver = ConstantSpeedDriver(6.0)
    obs, _ = env.reset(seed=3)
    speeds = []
    for _ in range(60):
        obs, _, term, trunc, info = env.step(driver.predict(obs)[0])
        speeds.append(info["speed"])
        if term or trunc:
            break
    assert np.median(speeds[20:]) == pytest.approx(6.0, abs=0.5)


def test_the_scripted_frontier_orders_speed_against_observer_error():
    cfg = load_config()
    pred = ConstantVelocityPredictor(horizon=10, history=8)
    rows = {
        spec: evaluate_batched(scripted_driver(spec), cfg, episodes=30, predictor=pred).summary
        for spec in ("speed:3", "speed:6", "speed:9", "stop")
    }
    cost = {k: v["cost_predictability_per_step"]["mean"] for k, v in rows.items()}
    time = {k: v["time_to_destination_s"]["mean"] for k, v in rows.items() if k != "stop"}
    assert cost["stop"] < cost["speed:3"] < cost["speed:6"] < cost["speed:9"]
    assert time["speed:3"] > time["speed:6"] > time["speed:9"]
    assert rows["stop"]["success"]["mean"] == 0.0
    assert rows["stop"]["stand_still_fraction"]["mean"] > 0.9
    assert rows["speed:6"]["stand_still_fraction"]["mean"] < 0.05


def test_driver_specs_and_inputs_are_checked():
    assert isinstance(scripted_driver("stop"), StopDriver)
    assert scripted_driver("speed:9").speed == 9.0
    for bad in ("speed:fast", "speed:0", "speed:50", "left", "stop:1"):
        with pytest.raises(ValueError, match="speed"):
            scripted_driver(bad)
    with pytest.raises(ValueError, match="vector observation"):
        StopDriver().predict(np.zeros(5))


def test_evaluate_scripted_on_the_command_line(capsys, tmp_path):
    assert main(["evaluate", "--scripted", "speed:6", "--scripted", "stop", "--episodes", "4",
                 "--csv-dir", str(tmp_path)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "scripted speed:6:" in out and "scripted stop:" in out and "stand_still" in out
    assert (tmp_path / "speed-6" / "eval_episodes.csv").is_file()
    assert main(["evaluate"]) == 2  # neither a run nor a driver
