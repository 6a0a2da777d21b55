"""The Lagrangian-return probe plays the held-out episodes ``bystander evaluate`` plays,
and refuses a config whose reward is not the per-metre Lagrangian."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments" / "probes"))
import lagrangian_return  # noqa: E402

from bystander.agents.heldout import evaluate_batched  # noqa: E402
from bystander.agents.scripted import scripted_driver  # noqa: E402
from bystander.agents.training import build_predictor  # noqa: E402

SETS = ["constraint.mode=lagrangian", "constraint.cost_normalization=per_metre",
        "constraint.budget=0.3", "constraint.credit_margin=0.3"]  # fmt: skip


def test_probe_plays_the_heldout_episodes_of_evaluate(capsys) -> None:
    cfg = lagrangian_return._config(None, 1.0, 6, SETS)
    got = lagrangian_return.play(cfg, lambda o: scripted_driver("speed:6").predict(o)[0], 0.99)
    want = evaluate_batched(scripted_driver("speed:6"), cfg, episodes=6,
                            predictor=build_predictor(cfg)).episodes  # fmt: skip
    assert got["success"] == pytest.approx(np.mean([e["success"] for e in want]))
    assert got["length"] == pytest.approx(np.mean([e["steps"] for e in want]))
    # per episode (R - lambda (C - d (1 + m) P)) / (1 + lambda), from evaluate's own sums
    lagrangian = [(e["task_return"] - (e["cost_predictability"] - 0.39 * e["progress_m"])) / 2
                  for e in want]  # fmt: skip
    assert got["return"] == pytest.approx(np.mean(lagrangian), rel=1e-4)
    assert lagrangian_return.main(["--lam", "0.5", "--episodes", "2", "--driver", "stop",
                                   *[a for s in SETS for a in ("--set", s)]]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "lambda 0.5, budget 0.3 m/m, credit margin 0.3" in out and "\nstop " in out


def test_probe_refuses_other_rewards_and_bad_noise() -> None:
    with pytest.raises(ValueError, match="constraint: expected mode=lagrangian"):
        lagrangian_return._config(None, 1.0, 2, ["constraint.mode=shaping"])
    cfg = lagrangian_return._config(None, 1.0, 2, SETS)
    with pytest.raises(ValueError, match="expected @EPS in"):
        lagrangian_return._driver_policy("speed:6@1.5", cfg, 6, 0)
    for bad in ("speed:6@0=0.7,2=0.7", "speed:6@9=0.1", "speed:6@0=-0.1", "speed:6@0=x"):
        with pytest.raises(ValueError, match="expected @A=P"):
            lagrangian_return._driver_policy(bad, cfg, 6, 0)


def test_chosen_action_noise_presses_that_action_at_its_rate() -> None:
    cfg = lagrangian_return._config(None, 1.0, 2, SETS)
    act = lagrangian_return._driver_policy("speed:6@0=0.25,2=0.05", cfg, 6, 0)
    import gymnasium as gym

    first, _ = gym.make(cfg.env.id, config=cfg.env.config).reset(seed=0)  # target 6 m/s
    a = act(np.repeat(first[None], 20_000, axis=0))  # speed:6 says KEEP here
    shares = np.bincount(a, minlength=6) / len(a)
    assert shares[0] == pytest.approx(0.25, abs=0.01) and shares[2] == pytest.approx(0.05, abs=0.01)
    assert shares[1] == pytest.approx(0.70, abs=0.01) and shares[3:].sum() == 0
