"""A Gymnasium 1.x training loop (CleanRL-style PPO) on the native vector env."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments" / "clients"))


@pytest.mark.slow
def test_cleanrl_style_ppo_runs_on_the_vector_entry_point(capsys) -> None:
    import cleanrl_ppo

    last = cleanrl_ppo.main(["--total-timesteps", "4096", "--num-envs", "16",
                             "--num-steps", "64", "--max-cycles", "40"])  # fmt: skip
    assert last["steps"] == 4096
    assert math.isfinite(last["return"]) and 0.0 <= last["success"] <= 1.0
    assert math.isfinite(last["explained_variance"])
    assert capsys.readouterr().out.count("steps/s") == 4
