"""Study 7: several controlled cars, each an ego and an observer of the others (driving).

``cars`` controlled cars per world share one PPO policy on the batched simulator (one
VecEnv slot per car per world, ``bystander train --agents K``); every other road user,
the other controlled cars included, predicts each car's trajectory, so the
predictability cost is mutual. Trained without a constraint and with each constraint
point of the preset; evaluated greedily on held-out seeds, one row per car per episode.
Reported per point: success and collision rates per car, time to destination, the
observers' ADE and the per-step predictability cost, and the stand-still fraction.

    python experiments/studies/multi_agent.py --preset small
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import studylib as sl  # noqa: E402

from bystander.sweeps import Trial, aggregate, markdown_table, write_csv  # noqa: E402

NAME = "multi_agent"
TITLE = "Study 7: several controlled cars (driving)"
TRIAL_FN = "studylib:driving_trial"
METRICS = ("success", "collision", "time_to_destination_s", "ade",
           "cost_predictability_per_step", "stand_still_fraction")  # fmt: skip


def build_trials(preset: dict[str, Any]) -> list[Trial]:
    """Constraint points x seeds, ``cars`` controlled cars per world."""
    s = sl.section(preset, NAME)
    cars = int(s.get("cars", 4))
    if cars < 2:
        raise ValueError(f"preset multi_agent.cars: expected an int >= 2, got {cars}")
    trials = []
    for seed in sl.seeds(preset, NAME):
        for point in s["points"]:
            extra = [f"env.config.n_controlled={cars}", *map(str, point.get("set", []))]
            trials.append(Trial(NAME, {"point": point["name"], "cars": cars},
                                sl.driving_overrides(preset, extra, NAME), seed))  # fmt: skip
    return trials


def report(records: list[dict[str, Any]], preset: dict[str, Any], results_dir: Path) -> dict:
    rows = aggregate(records, metrics=list(METRICS))
    sl.pool_rate_ci(rows, records)
    names = [p["name"] for p in sl.section(preset, NAME)["points"]]
    rows.sort(key=lambda r: names.index(r["point"]) if r["point"] in names else 99)
    write_csv(rows, results_dir / "results.csv")

    p = sl.plt()
    fig, ax = p.subplots(figsize=(5, 4))
    sl.errorbar(ax, rows, "cost_predictability_per_step", "success", annotate="point")
    ax.set_xlabel("observers' error per step [m] (mutual: other cars observe too)")
    ax.set_ylabel("success rate per car")
    ax.grid(alpha=0.3)
    sl.save(fig, results_dir / "multi_agent.png")

    cols = [("point", "point"), ("cars", "cars"), ("seeds", "n_seeds"),
            ("success", "success"), ("collision", "collision"),
            ("time to dest. [s]", "time_to_destination_s"), ("ADE [m]", "ade"),
            ("pred. cost [m/step]", "cost_predictability_per_step"),
            ("stand-still", "stand_still_fraction")]  # fmt: skip
    sections = [
        "![multi-agent](multi_agent.png)", "",
        "One row per car per held-out episode (success and collision per car); the "
        "observers of each car include the other controlled cars.", "",
        markdown_table(rows, cols, ci=tuple(k for _, k in cols[3:]), digits=3),
    ]  # fmt: skip
    sl.write_page(results_dir, TITLE, NAME, preset, sections)
    return {"points": [{k: r.get(k) for k in ("point", "cars", *METRICS)} for r in rows]}


if __name__ == "__main__":
    raise SystemExit(sl.main(sys.modules[__name__]))
