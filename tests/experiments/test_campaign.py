"""The reliability campaign script runs end to end (a few cases of each kind)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments" / "reliability"))
import campaign  # noqa: E402


@pytest.mark.slow
def test_quick_campaign_finds_no_obscure_crash_and_nothing_silently_wrong(capsys) -> None:
    assert campaign.main(["--quick", "--cases", "30"]) == 0
    out = capsys.readouterr().out
    assert "obscure crashes 0, silently wrong 0" in out
    assert "kills resumed with the metrics log intact: 1 of 1" in out
