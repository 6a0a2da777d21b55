"""The time-to-success benchmark runs and prints its one line (tiny budget)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments" / "benchmarks"))
import time_to_success  # noqa: E402


def test_time_to_success_prints_its_line(capsys) -> None:
    rc = time_to_success.main(["--every", "2048", "--episodes", "4", "--max-steps", "4096",
                               "--target", "1.01"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 1 and "time to 101% success: not reached in 4096 steps" in out
    assert out.count("held-out success") == 2
