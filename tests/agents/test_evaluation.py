"""Evaluation (seeded episodes, CIs, CSV), prediction rendering, and the report."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from bystander.agents.evaluation import (
    EvalResult,
    PredictionOverlay,
    evaluate_policy,
    latest_predictions,
    render_policy,
    summarize,
)
from bystander.agents.stack import make_env
from bystander.agents.training import build_predictor
from bystander.config import load_config
from bystander.envs.contract import find_layer
from bystander.envs.predictability import PredictabilityReward
from bystander.report import EgoEntry, write_report
from bystander.stats import mean_ci, t_critical_95, wilson_ci

SHORT = ["env.config.max_cycles=60", "render.every=1", "render.max_steps=12"]


class KeepPolicy:
    """Scripted ego: always the KEEP meta-action (lane following at target speed)."""

    def predict(self, obs, deterministic: bool = True):
        return 1, None


def test_t_critical_and_mean_ci_match_hand_computation() -> None:
    assert t_critical_95(1) == pytest.approx(12.706)
    assert t_critical_95(9) == pytest.approx(2.262)
    assert t_critical_95(10_000) == pytest.approx(1.96)
    with pytest.raises(ValueError, match="df"):
        t_critical_95(0)
    m, lo, hi = mean_ci(np.array([1.0, 2.0, 3.0, 4.0]))
    half = 3.182 * np.std([1, 2, 3, 4], ddof=1) / 2.0
    assert (m, lo, hi) == pytest.approx((2.5, 2.5 - half, 2.5 + half))
    assert math.isnan(mean_ci(np.array([1.0]))[1])
    assert all(math.isnan(x) for x in mean_ci(np.array([np.nan])))


def test_wilson_interval() -> None:
    p, lo, hi = wilson_ci(8, 10)
    assert p == 0.8
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    p, lo, hi = wilson_ci(0, 5)
    assert p == 0.0 and lo == 0.0 and 0 < hi < 0.5
    assert math.isnan(wilson_ci(0, 0)[0])


def test_summarize_uses_wilson_for_rates_and_ignores_nan() -> None:
    rows = [
        {"episode": 0.0, "success": 1.0, "time_to_destination_s": 8.0},
        {"episode": 1.0, "success": 0.0, "time_to_destination_s": math.nan},
        {"episode": 2.0, "success": 1.0, "time_to_destination_s": 10.0},
    ]
    s = summarize(rows)
    assert "episode" not in s
    assert s["success"]["mean"] == pytest.approx(2 / 3)
    assert s["success"]["ci_low"] == pytest.approx(wilson_ci(2, 3)[1])
    assert s["time_to_destination_s"]["n"] == 2 and s["time_to_destination_s"]["mean"] == 9.0


@pytest.fixture(scope="module")
def keep_eval() -> tuple[EvalResult, object]:
    cfg = load_config(overrides=SHORT)
    return evaluate_policy(KeepPolicy(), cfg, episodes=3, seed=11), cfg


def test_evaluate_policy_rows_and_per_type_errors(keep_eval) -> None:
    result, _ = keep_eval
    assert len(result.episodes) == 3
    assert [r["seed"] for r in result.episodes] == [11.0, 12.0, 13.0]
    row = result.episodes[0]
    for k in ("success", "collision", "steps", "task_return", "episode_cost", "escalations"):
        assert k in row
    channels = [
        k[5:] for k in row if k.startswith("cost_") and not k.endswith(("_per_step", "_per_metre"))
    ]
    assert "predictability" in channels
    for ch in channels:  # per-step costs: the unit of per_step budgets
        assert row[f"cost_{ch}_per_step"] == pytest.approx(row[f"cost_{ch}"] / row["steps"])
    types = [k[4:] for k in result.summary if k.startswith("ade_")]
    assert types, "no observer type was scored"
    for t in types:
        assert f"fde_{t}" in result.summary
        assert result.summary[f"ade_{t}"]["mean"] >= 0
    # FDE of a constant-velocity guess is at least its ADE on average (errors grow)
    assert result.metric("fde") >= result.metric("ade") * 0.9
    # evaluation is seeded: the same seeds give the same rows
    again = evaluate_policy(KeepPolicy(), keep_eval[1], episodes=1, seed=11)
    assert again.episodes[0] == pytest.approx(row, nan_ok=True)


def test_eval_csv(keep_eval, tmp_path: Path) -> None:
    result, _ = keep_eval
    ep_path, sum_path = result.write_csv(tmp_path)
    with open(ep_path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and "success" in rows[0]
    with open(sum_path) as f:
        summary = {r["metric"]: r for r in csv.DictReader(f)}
    assert float(summary["success"]["n"]) == 3
    assert "ci_low" in summary["ade"]


def test_latest_predictions_are_world_frame_and_start_near_the_ego() -> None:
    cfg = load_config(overrides=[*SHORT, "env.config.n_cars=5", "env.config.n_pedestrians=4"])
    env = make_env(cfg, predictor=build_predictor(cfg))
    tracker = find_layer(env, PredictabilityReward).tracker
    env.reset(seed=5)
    found = False
    for _ in range(60):
        _, _, term, trunc, info = env.step(1)
        preds = latest_predictions(tracker)
        if preds:
            ego = info["ego_step"].states[-1]
            for p in preds:
                assert p["path"].shape == (cfg.predictor.horizon, 2)
                # a constant-velocity guess starts about one step ahead of the ego (world
                # frame); in an observer's own frame it would be metres off
                assert np.linalg.norm(p["path"][0] - ego) < 5.0
            found = True
        if term or trunc:
            break
    assert found, "no observer saw the ego in 60 steps"


def test_render_gif_with_overlay_and_hud(tmp_path: Path) -> None:
    import imageio.v2 as imageio

    cfg = load_config(overrides=SHORT)
    out, stats = render_policy(KeepPolicy(), cfg, out=tmp_path / "ep.gif", seed=5)
    assert out.is_file() and stats["steps"] >= 1
    frames = imageio.mimread(out)
    assert len(frames) >= 2
    f = np.asarray(frames[-1])[..., :3]
    assert f.mean() > 10 and len(np.unique(f.reshape(-1, 3), axis=0)) > 8

    # the overlay draws something: frames differ from the env's own rendering
    env = make_env(cfg, predictor=build_predictor(cfg), render_mode="rgb_array")
    overlay = PredictionOverlay(find_layer(env, PredictabilityReward).tracker)
    env.reset(seed=5)
    for _ in range(12):
        _, r, _, _, info = env.step(1)
        overlay.update(r, info)
    plain = env.render()
    env.unwrapped.add_overlay(overlay)
    drawn = env.render()
    assert plain.shape == drawn.shape and not np.array_equal(plain, drawn)
    assert any(line.startswith("cost") for line in overlay.hud_lines())
    with pytest.raises(ValueError, match="out"):
        render_policy(KeepPolicy(), cfg, out=tmp_path / "ep.png")


def test_report_markdown_and_plot(keep_eval, tmp_path: Path) -> None:
    result, _ = keep_eval
    entries = [
        EgoEntry(
            "unconstrained",
            tmp_path / "a",
            result,
            {"steps": 10, "wall_s": 1.0, "steps_per_s": 10.0},
        ),
        EgoEntry("lagrangian", tmp_path / "b", result, {"lambdas": {"predictability": 0.5}}),
    ]
    path = write_report(tmp_path, entries, notes=["hello"])
    text = path.read_text()
    assert "| unconstrained |" in text and "| lagrangian |" in text
    row = next(line for line in text.splitlines() if line.startswith("| unconstrained |"))
    for key in ("cost_predictability_per_step", "cost_predictability_per_metre"):
        assert f"| {result.summary[key]['mean']:.3f} " in row  # the cost columns are filled
    assert "utility_vs_predictability.png" in text and "lambda[predictability] = 0.500" in text
    png = tmp_path / "utility_vs_predictability.png"
    assert png.is_file() and png.stat().st_size > 5000
    assert "heldout_cost.png" not in text  # no held-out evaluations logged: no curve


def test_report_plots_heldout_cost_against_the_budget(keep_eval, tmp_path: Path) -> None:
    result, _ = keep_eval
    for name, costs in (("a", (0.40, 0.42)), ("b", (0.41, 0.26))):
        logs = tmp_path / name / "logs"
        logs.mkdir(parents=True)
        rows = "".join(f"{s},{c},{c * 1.3},0.05\n" for s, c in zip((512, 1024), costs, strict=True))
        (logs / "heldout.csv").write_text(
            "step,cost_predictability_per_step,cost_predictability_per_metre,"
            "stand_still_fraction\n" + rows
        )
    con = {"mode": "lagrangian", "budget": 0.25, "cost_normalization": "per_step"}
    entries = [
        EgoEntry("unconstrained", tmp_path / "a", result, {"constraint": {"mode": "none"}}),
        EgoEntry("lagrangian", tmp_path / "b", result, {"constraint": con}),
    ]
    text = write_report(tmp_path, entries).read_text()
    assert "## Held-out cost over training" in text and "](heldout_cost.png)" in text
    png = tmp_path / "heldout_cost.png"
    assert png.is_file() and png.stat().st_size > 5000
