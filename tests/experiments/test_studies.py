"""The studies' smoke presets run end to end and their outputs have content.

Each study runs its ``smoke`` preset (serial backend, into a temporary results root)
and is checked for: a non-empty ``results.csv`` with finite numbers in its key
columns, its PNG figure, a Markdown page with the table and the figure, and
``headline.json``. The LLM study uses two untrained tiny local models (no
pretraining, no download).
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import pytest

STUDIES = Path(__file__).resolve().parents[2] / "experiments" / "studies"
sys.path.insert(0, str(STUDIES))

import studylib as sl  # noqa: E402

# study -> (figure, columns that must be finite in every row, columns finite in some row)
EXPECT = {
    "frontier": ("frontier.png", ["success", "cost_predictability", "task_return"], ["ade"]),
    "lagrangian": ("cost_lambda.png", ["final_cost", "success"], ["final_lambda"]),
    "cotraining": (
        "cotraining.png",
        ["success", "cost_predictability", "cv_cost_predictability"],
        [],
    ),  # fmt: skip
    "partial_observation": ("partial.png", ["success", "cost_predictability"], ["ade"]),
    "review_gate": ("review_gate.png", ["success", "escalation_rate"], []),
    "multi_agent": (
        "multi_agent.png",
        ["success", "collision", "cost_predictability_per_step"],
        [],
    ),
    "route_habits": ("route_habits.png", ["success", "error_3s_m", "error_5s_m"], []),
    "llm_tradeoff": (
        "llm_tradeoff.png",
        ["accuracy", "predictability_cost", "length_mean", "before_accuracy"],
        [],
    ),  # fmt: skip
}


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from bystander.envs.text_tokens import byte_tokenizer
    from bystander.llm.models import TinyConfig, tiny_model

    root = tmp_path_factory.mktemp("models")
    tok = byte_tokenizer()
    for name, seed in (("policy", 0), ("slm", 1)):
        cfg = TinyConfig(n_layer=1, n_embd=16, n_head=2, n_positions=192, seed=seed)
        tiny_model(cfg, tok).save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _check_outputs(study: str, results_dir: Path, n_trials: int) -> list[dict[str, str]]:
    figure, all_finite, some_finite = EXPECT[study]
    rows = _rows(results_dir / "results.csv")
    assert rows, f"{study}: empty results.csv"
    for col in all_finite:
        vals = [float(r[col]) for r in rows]
        assert all(math.isfinite(v) for v in vals), f"{study}.{col}: {vals}"
    for col in some_finite:
        assert any(math.isfinite(float(r[col] or "nan")) for r in rows), f"{study}.{col}"
    png = results_dir / figure
    assert png.is_file() and png.stat().st_size > 5000
    page = (results_dir / "README.md").read_text()
    assert f"]({figure})" in page and "|---" in page
    assert "python experiments/studies/" in page  # the reproducing command
    head = json.loads((results_dir / "headline.json").read_text())
    assert head["trials_done"] == head["trials"] == n_trials
    assert len(list((results_dir / "trials").glob("*.json"))) == n_trials
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("study", ["frontier", "lagrangian", "cotraining",
                                   "partial_observation", "review_gate", "multi_agent",
                                   "route_habits"])  # fmt: skip
def test_driving_study_smoke(study, out):
    import importlib

    module = importlib.import_module(study)
    preset = sl.load_preset("smoke")
    n = len(module.build_trials(preset))
    assert n >= 1
    head = sl.run_study(module, preset, backend="serial", out=out, log=None)
    rows = _check_outputs(study, out / study, n)
    if study == "frontier":
        assert {r["sweep"] for r in rows} == {"shaping", "lagrangian"}
        assert len(head["alignment_tax"]) == len(module.TAX_FRACTIONS)
        # the last level is the most predictable ego's own ADE: on the frontier, so finite
        assert math.isfinite(head["alignment_tax"][-1]["success_at_target"])
        assert (out / study / "alignment_tax.csv").is_file()
    if study == "lagrangian":
        assert {r["mode"] for r in rows} == {"lagrangian", "pid", "unconstrained"}
        for r in rows:  # the reference ego has no multiplier
            assert math.isfinite(float(r["final_lambda"])) == (r["mode"] != "unconstrained")
        curves = json.loads((out / study / "curves.json").read_text())
        assert all(len(c["lambda"]) >= 2 for c in curves if c["mode"] != "unconstrained")
        summary = json.loads((out / study / "summary.json").read_text())
        assert {(r["mode"], r["budget"]) for r in summary["runs"]} == {
            ("unconstrained", 0.0), ("lagrangian", 0.3), ("pid", 0.3)}  # fmt: skip
        for r in summary["runs"]:
            assert [c[0] for c in r["eval_costs"]] == [256, 512]
            assert 0.0 <= r["stand_still_fraction"] <= 1.0 and 0.0 <= r["success"] <= 1.0
            if r["mode"] != "unconstrained":
                assert r["within_10pct_last_quarter"] in (0.0, 1.0)
        assert set(summary["goal"]) == {"lagrangian", "pid"}
    if study == "cotraining":  # the co-trained predictor really learned during training
        recs = {r["trial"]["point"]["predictor"]: r for r in sl.load_results(out / study)}
        assert recs["cotrained"]["metrics"]["curve"].get("predictor_loss")
        assert "predictor_loss" not in recs["constant_velocity"]["metrics"]["curve"]
    if study == "review_gate":
        assert [r["gate"] for r in rows][0] == "no gate" and len(rows) == 2
    if study == "multi_agent":  # one evaluation row per car per episode
        rec = sl.load_results(out / study)[0]
        assert rec["metrics"]["success"] >= 0.0 and rows[0]["cars"] == "2"
    if study == "route_habits":  # the summary.json, scripted points included
        summary = json.loads((out / study / "summary.json").read_text())
        assert summary["points"] and summary["scripted"]
        for p in summary["points"] + summary["scripted"]:
            assert {"observers", "constraint", "seeds", "eval_episodes"} <= set(p)
            for m in ("success", "time_to_destination_s", "error_3s_m", "error_5s_m",
                      "turn_entropy_bits", "stand_still_fraction"):  # fmt: skip
                assert set(p[m]) == {"mean", "ci_low", "ci_high"}, m
        assert "Does the gain disappear" in (out / study / "README.md").read_text()


def test_llm_study_smoke(out, tiny_models):
    import llm_tradeoff

    preset = sl.load_preset("smoke")
    preset["llm_tradeoff"] = dict(preset["llm_tradeoff"], policy=str(tiny_models / "policy"),
                                  observers=[str(tiny_models / "slm")])  # fmt: skip
    n = len(llm_tradeoff.build_trials(preset))
    sl.run_study(llm_tradeoff, preset, backend="serial", out=out, log=None)
    rows = _check_outputs("llm_tradeoff", out / "llm_tradeoff", n)
    assert {r["constraint"] for r in rows} == {"none", "shaping", "lagrangian"}
    tracking = json.loads((out / "llm_tradeoff" / "summary.json").read_text())["budget_tracking"]
    (lag,) = [r for r in tracking["runs"] if r["mode"] == "lagrangian"]
    assert lag["budget"] == 1.0 and [s for s, _ in lag["eval_costs"]] == [1]
    keys = {"within_10pct_last_quarter", "last_quarter_cost", "format_failure", "success"}
    assert keys <= set(lag)
    assert [r["mode"] for r in tracking["runs"]].count("none") == 1  # the reference
    assert tracking["goal"]["lagrangian"]["runs"] == 1
    assert 0.0 <= lag["reference_within_10pct_last_quarter"] <= 1.0


def test_rerun_resumes_and_report_only(out):
    """A second run finds every trial done and runs none (records untouched)."""
    import frontier

    preset = sl.load_preset("smoke")
    before = {p.name: p.stat().st_mtime_ns for p in (out / "frontier" / "trials").glob("*.json")}
    if not before:
        pytest.skip("frontier smoke did not run in this session")
    lines: list[str] = []
    sl.run_study(frontier, preset, backend="serial", out=out, log=lines.append)
    assert "0 done" not in lines[0] and "running 0" in lines[0]
    after = {p.name: p.stat().st_mtime_ns for p in (out / "frontier" / "trials").glob("*.json")}
    assert after == before
    sl.run_study(frontier, preset, out=out, report_only=True, log=None)


def test_presets_are_valid_and_bad_input_raises():
    import importlib

    for name in sl.PRESETS:
        preset = sl.load_preset(name)
        for study in EXPECT:
            module = importlib.import_module(study)
            trials = module.build_trials(preset)
            assert trials and len({t.trial_id for t in trials}) == len(trials)
    full, small = sl.load_preset("full"), sl.load_preset("small")
    # a preset built on a base keeps its own name (= its results folder)
    assert [sl.load_preset(n)["name"] for n in sl.PRESETS] == list(sl.PRESETS)
    assert len(full["seeds"]) > len(small["seeds"])
    assert full["driving"]["timesteps"] > small["driving"]["timesteps"]
    with pytest.raises(ValueError, match="preset"):
        sl.load_preset("huge")
    import partial_observation

    bad = dict(small, partial_observation={"fovs": ["tiny"], "weight": 0.1})
    with pytest.raises(ValueError, match="fovs"):
        partial_observation.build_trials(bad)
    with pytest.raises(ValueError, match="seeds"):
        sl.seeds(dict(small, seeds=[]), "frontier")


def test_lagrangian_variants_and_frontier_budget_unit():
    import frontier
    import lagrangian

    medium = sl.load_preset("medium")
    variants = {**medium["lagrangian"], "modes": [
        "lagrangian", {"name": "lagrangian-floor", "mode": "lagrangian",
                       "set": ["constraint.lambda_min=0.05"]}]}  # fmt: skip
    trials = lagrangian.build_trials(dict(medium, lagrangian=variants))
    floor = [t for t in trials if t.point["mode"] == "lagrangian-floor"]
    plain = [t for t in trials if t.point["mode"] == "lagrangian"]
    assert floor and plain and len(floor) == len(plain)
    assert all(t.overrides["set"][-1] == "constraint.lambda_min=0.05" for t in floor)
    assert len({t.trial_id for t in trials}) == len(trials)
    # budgets as fractions of the reference cost, and an unconstrained reference per seed
    fractions = medium["lagrangian"]["budget_fractions"]
    ref = medium["lagrangian"]["reference_cost"]
    assert lagrangian.budgets(medium) == [round(f * ref, 4) for f in fractions]
    refs = [t for t in trials if t.point["mode"] == "unconstrained"]
    assert len(refs) == len(medium["lagrangian"]["seeds"])
    assert all("eval.every=65536" in t.overrides["set"] for t in trials)
    bad = dict(medium, lagrangian={**medium["lagrangian"], "reference_cost": None})
    with pytest.raises(ValueError, match="lagrangian.reference_cost"):
        lagrangian.build_trials(bad)
    bad = dict(medium, lagrangian={**medium["lagrangian"], "modes": [{"name": "x", "mode": "ppo"}]})
    with pytest.raises(ValueError, match="lagrangian.modes"):
        lagrangian.build_trials(bad)
    budget_points = [t for t in frontier.build_trials(medium) if t.point["sweep"] == "lagrangian"]
    assert budget_points and all(
        "constraint.cost_normalization=per_step" in t.overrides["set"] for t in budget_points
    )
    bad = dict(medium, frontier={**medium["frontier"], "cost_normalization": "mean"})
    with pytest.raises(ValueError, match="frontier.cost_normalization"):
        frontier.build_trials(bad)


def _point(kind, observers, name, time, e3, e5):
    return {"kind": kind, "observers": observers, "constraint": name,
            "time_to_destination_s": time, "error_3s_m": e3, "error_5s_m": e5}  # fmt: skip


def _records(rows, n=20):
    """Trial records whose per-episode lists hold each row's figures on every episode
    (the first one fails: never matched)."""
    out = []
    for r in rows:
        point = {k: r[k] for k in ("kind", "observers", "constraint")}
        eps = {"seed": list(range(n)), "success": [0.0] + [1.0] * (n - 1)}
        for k in ("time_to_destination_s", "error_3s_m", "error_5s_m"):
            eps[k] = [r[k]] * n
        out.append({"trial": {"point": point, "seed": 0}, "metrics": {"episodes": eps}})
    return out


def test_route_habits_verdicts_are_computed_from_the_figures():
    """Beyond the speed-only frontier = lower 3 s and 5 s error at equal time; the
    answer follows the data (here: a gain with co-trained observers only)."""
    import route_habits as rh

    rows = []
    for obs in ("cv", "map", "map_cotrained"):
        rows += [_point("scripted", obs, "speed:6", 40.0, 2.0, 5.0),
                 _point("scripted", obs, "speed:12", 20.0, 4.0, 9.0)]  # fmt: skip
    rows += [_point("trained", "map_cotrained", "lagrangian", 30.0, 2.0, 5.0),  # frontier 3, 7
             _point("trained", "map", "lagrangian", 30.0, 3.5, 6.0),  # worse at 3 s
             _point("trained", "cv", "lagrangian", 50.0, 1.0, 1.0),  # slower, lower error
             _point("trained", "cv", "shaping", 50.0, 3.0, 1.0),  # slower, higher 3 s error
             _point("trained", "map", "shaping", 15.0, 3.9, 8.0),  # faster and lower error
             _point("scripted", "map_cotrained", "route:no-left", 30.0, 3.0, 7.5)]  # fmt: skip
    v = {(r["observers"], r["constraint"]): r for r in rh.frontier_verdicts(rows, _records(rows))}
    co = v[("map_cotrained", "lagrangian")]
    assert co["margin_error_3s_m"] == pytest.approx(1.0) and co["beyond"] and co["significant"]
    assert co["matched"] == 19
    assert v[("map", "lagrangian")]["beyond"] is False
    assert v[("cv", "lagrangian")]["beyond"] is None  # outside the frontier's times
    assert v[("cv", "shaping")]["beyond"] is False  # dominated by speed:6
    assert v[("map", "shaping")]["beyond"] is True  # dominates speed:12
    assert v[("map", "shaping")]["frontier_at"] == "fastest"
    assert v[("map_cotrained", "route:no-left")]["beyond"] is False  # equal at 3 s
    lines, answer = rh._sentences(
        rh.frontier_verdicts(rows, _records(rows)), ["cv", "map", "map_cotrained"]
    )
    assert answer["per_observers"]["map_cotrained"]["beyond"] == ["lagrangian"]
    assert answer["per_observers"]["map"]["beyond"] == ["shaping"]
    assert answer["gain_with_cv_or_habit_blind"] == (
        "the gain disappears with constant-velocity observers; it remains with "
        "habit-blind map-aware observers"
    )
    rows = [r for r in rows if (r["observers"], r["constraint"]) != ("map", "shaping")]
    _, answer = rh._sentences(
        rh.frontier_verdicts(rows, _records(rows)), ["cv", "map", "map_cotrained"]
    )
    assert answer["gain_with_cv_or_habit_blind"].startswith("the gain disappears with const")
    blind = next(r for r in rows if (r["observers"], r["kind"]) == ("map", "trained"))
    blind["error_3s_m"] = 2.5  # now the habit-blind ego beats its frontier too
    _, answer = rh._sentences(
        rh.frontier_verdicts(rows, _records(rows)), ["cv", "map", "map_cotrained"]
    )
    assert "remains with habit-blind" in answer["gain_with_cv_or_habit_blind"]


def test_legibility_tax_on_hand_made_rows():
    import llm_tradeoff as L

    v = L.DEFAULT_VIEWS
    rows = [
        {"name": "none", "constraint": "none", "views": v, "accuracy": 0.9, "before_accuracy": 0.5,
         "heldout_nats_per_token": 1.0, "predictability_cost": 1.2},
        {"name": "shaping-2", "constraint": "shaping", "views": v, "accuracy": 0.7,
         "before_accuracy": 0.5, "heldout_nats_per_token": 0.6, "predictability_cost": 0.4},
        {"name": "worse", "constraint": "shaping", "views": v, "accuracy": 0.8,
         "before_accuracy": 0.5, "heldout_nats_per_token": 1.1, "predictability_cost": 1.0},
    ]  # fmt: skip
    tax = {t["name"]: t for t in L.legibility_tax(rows)}
    t = tax["shaping-2"]
    assert t["accuracy_lost"] == pytest.approx(0.2) and t["heldout_gain"] == pytest.approx(0.4)
    assert t["tax"] == pytest.approx(0.5) and t["heldout_share"] == pytest.approx(0.5)
    assert t["gain_kept"] == pytest.approx(0.5)
    assert math.isnan(tax["worse"]["tax"])  # the held-out observer did not gain
    text = L._tax_text(list(tax.values()))
    assert "tax 0.50" in text and "no gain for the held-out observer" in text
    # unconstrained GRPO within noise of the start (0.79 [0.70, 0.88] vs 0.79): no share
    noisy = [dict(rows[0], accuracy=0.794, accuracy_lo=0.704, before_accuracy=0.790), rows[1]]
    t = L.legibility_tax(noisy)[0]
    assert math.isnan(t["gain_kept"]) and t["tax"] == pytest.approx((0.794 - 0.7) / 0.4)
    assert "did not raise accuracy beyond noise" in L._tax_text([t])
