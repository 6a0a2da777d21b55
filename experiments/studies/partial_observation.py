"""Study 4: partial observation matters (driving).

The same shaping-constrained ego is trained under different observer fields of view
(``narrow``: 60 deg / 20 m for every type; ``default``: the intersection's own
per-type values; ``wide``: 300 deg / 60 m) with and without occlusion by vehicles
(buildings always occlude). Reported: utility, the observers' ADE overall and per
type (car, pedestrian, cyclist), the episode predictability cost (it grows with how
often the ego is seen) and, per observer type, its share of the cost: the types
whose predictions carry most of the cost are the ones that constrain the ego most.

    python experiments/studies/partial_observation.py --preset small
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import studylib as sl  # noqa: E402

from bystander.sweeps import Trial, aggregate, markdown_table, write_csv  # noqa: E402

NAME = "partial_observation"
TITLE = "Study 4: partial observation (driving)"
TRIAL_FN = "studylib:driving_trial"
TYPES = ("car", "pedestrian", "cyclist")
FOVS: dict[str, dict[str, float] | None] = {
    "narrow": {"fov": math.radians(60.0), "range": 20.0},
    "default": None,
    "wide": {"fov": math.radians(300.0), "range": 60.0},
}
METRICS = ("success", "time_to_destination_s", "ade", "cost_predictability",
           *(f"ade_{t}" for t in TYPES), *(f"share_{t}" for t in TYPES))  # fmt: skip


def fov_overrides(fov: str) -> list[str]:
    """Env config overrides of a field-of-view setting (every observer type)."""
    if fov not in FOVS:
        raise ValueError(
            f"preset partial_observation.fovs: expected one of {sorted(FOVS)}, got {fov!r}"
        )
    v = FOVS[fov]
    if v is None:
        return []
    return [f"env.config.{k}_{t}={v[k]}" for t in TYPES for k in ("fov", "range")]


def build_trials(preset: dict[str, Any]) -> list[Trial]:
    """FOV settings x occlusion on/off x seeds, shaping weight ``partial.weight``."""
    s = sl.section(preset, NAME)
    trials = []
    for seed in sl.seeds(preset, NAME):
        for fov in s["fovs"]:
            for occ in s.get("occlusion", [False]):
                extra = ["constraint.mode=shaping", f"constraint.weight={float(s['weight'])}",
                         f"env.config.occlusion_by_vehicles={str(bool(occ)).lower()}",
                         *fov_overrides(fov)]  # fmt: skip
                trials.append(Trial(NAME, {"fov": fov, "occlusion": bool(occ)},
                                    sl.driving_overrides(preset, extra, NAME), seed))  # fmt: skip
    return trials


def _shares(metrics: dict[str, Any]) -> None:
    """Each type's share of the scored error mass (ADE x predictions of that type)."""
    per = {}
    for t in TYPES:
        ade = metrics.get(f"ade_{t}")
        per[t] = ade if sl.finite(ade) else 0.0
    total = sum(per.values())
    for t in TYPES:
        metrics[f"share_{t}"] = per[t] / total if total > 0 else math.nan


def report(records: list[dict[str, Any]], preset: dict[str, Any], results_dir: Path) -> dict:
    for r in records:
        _shares(r["metrics"])
    rows = aggregate(records, metrics=list(METRICS))
    sl.pool_rate_ci(rows, records)
    order = {k: i for i, k in enumerate(FOVS)}
    rows.sort(key=lambda r: (order.get(r["fov"], 9), r["occlusion"]))
    for r in rows:
        r["setting"] = f"{r['fov']}, occl. {'on' if r['occlusion'] else 'off'}"
    write_csv(rows, results_dir / "results.csv")

    p = sl.plt()
    fig, axes = p.subplots(1, 2, figsize=(10, 4))
    x = list(range(len(rows)))
    width = 0.25
    for i, t in enumerate(TYPES):
        vals = [r.get(f"ade_{t}", math.nan) for r in rows]
        axes[0].bar([xx + (i - 1) * width for xx in x], vals, width, label=t)
    axes[0].set_xticks(x, [r["setting"] for r in rows], rotation=20, fontsize=7)
    axes[0].set_ylabel("ADE of predictions about the ego [m]")
    axes[0].set_title("who finds the ego hard to predict")
    sl.legend(axes[0], fontsize=7)
    sl.errorbar(axes[1], rows, "cost_predictability", "success", annotate="setting")
    axes[1].set_xlabel("episode predictability cost")
    axes[1].set_ylabel("success rate")
    axes[1].set_title("utility vs cost by observation setting")
    for ax in axes:
        ax.grid(alpha=0.3)
    sl.save(fig, results_dir / "partial.png")

    cols = [("setting", "setting"), ("seeds", "n_seeds"), ("success", "success"),
            ("ADE [m]", "ade"), ("episode pred. cost", "cost_predictability"),
            *((f"ADE {t} [m]", f"ade_{t}") for t in TYPES),
            *((f"share {t}", f"share_{t}") for t in TYPES)]  # fmt: skip
    ci = tuple(k for _, k in cols[2:])
    sections = [
        "![partial observation](partial.png)", "",
        "Share <type>: that type's ADE over the sum of the per-type ADEs (which observer "
        "type finds the ego hardest to predict, so constrains it most). A type that never "
        "saw the ego has no ADE (n/a).", "",
        markdown_table(rows, cols, ci=ci, digits=3),
    ]  # fmt: skip
    sl.write_page(results_dir, TITLE, NAME, preset, sections)
    top = {}
    for r in rows:
        shares = {t: r.get(f"share_{t}", math.nan) for t in TYPES}
        shares = {t: v for t, v in shares.items() if sl.finite(v)}
        top[r["setting"]] = max(shares, key=shares.get) if shares else None
    return {"settings": [{k: r.get(k) for k in ("setting", "success", "ade", "cost_predictability")}
                         for r in rows], "most_constraining_type": top}  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(sl.main(sys.modules[__name__]))
