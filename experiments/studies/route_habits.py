"""Study 8: route habits, and observers that know the map (driving, issue #11).

The founding analogy: an ego that keeps consistent route habits is easier to predict for
bystanders who know the map and have learned its habits, at some cost in utility. On
the research scenario (``experiments/configs/research_grid.yaml``: a 3x3 grid with
route choice and dense traffic) this study trains egos

- against three kinds of observers: constant velocity (``cv``), the map-aware
  predictor frozen and habit-blind (``map``), and the same co-trained on the ego's
  trajectories so it can learn its habits (``map_cotrained``), all scored at 3 s;
- unconstrained, with a shaping weight, and Lagrangian at two per-metre budgets (the
  preset's ``constraints``);

and evaluates every ego greedily on the same held-out episodes (seeds from
``eval.seed``), with its observers predicting 3 s and 5 s ahead. The scripted
drivers (:mod:`bystander.agents.scripted`: constant speeds, the route habits, stop) are
evaluated on the same episodes against the same kinds of observers (the co-trained
ones co-trained first on the driver's own training-seed episodes).

Per point: success, time to destination [s], the observers' error at 3 s and 5 s
[m] (``ade`` of the observers' predictions with that horizon: the most likely mode's
for the map-aware predictor), turn entropy given the approach [bits], route overhead
and stand-still fraction, each a mean with a 95 % interval (over seeds with two or
more, else over the episodes of the one seed; success: Wilson over pooled episodes).
The page says, computed from these figures, whether a trained ego lies beyond the
scripted speed-only frontier (lower error at 3 s and 5 s at equal time to destination)
for each kind of observers. Results: ``summary.json``, ``results.csv``, ``route_habits.png``
and ``README.md`` in ``experiments/results/<preset>/route_habits/``.

    python experiments/studies/route_habits.py --preset small
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import studylib as sl  # noqa: E402

from bystander.sweeps import Trial, atomic_write_json, markdown_table, write_csv  # noqa: E402

__all__ = ["NAME", "TITLE", "TRIAL_FN", "build_trials", "frontier_verdicts", "report",
           "route_trial"]  # fmt: skip

NAME = "route_habits"
TITLE = "Study 8: route habits and observers that know the map (driving)"
TRIAL_FN = "route_habits:route_trial"
SCENARIO = sl.REPO / "experiments" / "configs" / "research_grid.yaml"
OBSERVERS = {
    "cv": ["predictor.kind=constant_velocity"],
    "map": ["predictor.kind=map"],
    "map_cotrained": ["predictor.kind=map_cotrained"],
}
"""Observer kinds -> run-config overrides."""
HORIZONS = {"error_3s_m": 3.0, "error_5s_m": 5.0}
"""Evaluation horizons [s] of the observers' error (training scores at 3 s)."""
METRICS = ("success", "time_to_destination_s", "error_3s_m", "error_5s_m",
           "turn_entropy_bits", "stand_still_fraction", "route_overhead")  # fmt: skip
"""Figures of every point (mean with a 95 % interval)."""


def scenario_overrides() -> list[str]:
    """``env.config.<key>=<value>`` overrides of the research scenario's run config."""
    env = (yaml.safe_load(SCENARIO.read_text(encoding="utf-8")) or {})["env"]["config"]
    return [f"env.config.{k}={yaml.safe_dump(v, default_flow_style=True).strip()}"
            for k, v in env.items()]  # fmt: skip


def build_trials(preset: dict[str, Any]) -> list[Trial]:
    """Trained egos (observers x constraints x seeds) and scripted drivers (observers x
    drivers, one evaluation each)."""
    s = sl.section(preset, NAME)
    observers = list(s.get("observers", list(OBSERVERS)))
    bad = [o for o in observers if o not in OBSERVERS]
    if bad or not observers:
        raise ValueError(f"preset {NAME}.observers: expected some of {list(OBSERVERS)}, got {bad}")
    base = scenario_overrides()
    tail = [f"predictor.lr={float(s.get('cotrain_lr', 0.05))}", "predictor.horizon=30",
            *map(str, s.get("set", []))]  # fmt: skip
    cotrain = dict(s.get("cotrain_scripted", {"episodes": 32, "updates": 100}))
    trials = []
    # the scripted frontier first (seconds each): an interrupted sweep can still report
    first = sl.seeds(preset, NAME)[0]
    for obs in observers:
        for spec in s["drivers"]:
            ov = sl.driving_overrides(preset, [*base, *OBSERVERS[obs], *tail], NAME)
            ov["cotrain"] = cotrain
            trials.append(Trial(NAME, {"kind": "scripted", "observers": obs,
                                       "constraint": str(spec)}, ov, first))  # fmt: skip
    for seed in sl.seeds(preset, NAME):
        for obs in observers:
            for c in s["constraints"]:
                extra = [*base, *OBSERVERS[obs], *map(str, c.get("set", [])), *tail]
                ov = sl.driving_overrides(preset, extra, NAME)
                trials.append(Trial(NAME, {"kind": "trained", "observers": obs,
                                           "constraint": c["name"]}, ov, seed))  # fmt: skip
    return trials


# ------------------------------------------------------------------------------ trial


def _observers_at(cfg: Any, seconds: float, weights: Any) -> Any:
    """The run's kind of observers predicting ``seconds`` ahead (frozen), with the
    co-trained logit ``weights`` when given."""
    from bystander.agents.map_predictor import MapPredictor
    from bystander.agents.predictors import ConstantVelocityPredictor

    dt = float(cfg.env.config.get("dt", 0.1))
    h, hist = int(round(seconds / dt)), cfg.predictor.history
    if cfg.predictor.kind == "constant_velocity":
        return ConstantVelocityPredictor(horizon=h, history=hist)
    pred = MapPredictor(cfg.env.config, horizon=h, history=hist, seed=cfg.train.seed)
    if weights is not None:
        pred.net.load_state_dict(weights)
    return pred.freeze()


def _cotrain_on_driver(driver: Any, cfg: Any, episodes: int, updates: int, seed: int) -> Any:
    """Logit weights of a map-aware predictor (3 s) co-trained on ``episodes`` training
    episodes (seeds ``seed, seed + 1, ...``) of a scripted driver: ``updates`` Adam steps
    on minibatches of ``predictor.batch_size`` scored (view, truth) pairs."""
    from bystander.agents.callbacks import concat_views
    from bystander.agents.map_predictor import MapPredictor
    from bystander.agents.stack import make_intersection_vec_env
    from bystander.envs.scoring import ScoredReplay

    p = cfg.predictor
    pred = MapPredictor(cfg.env.config, horizon=p.horizon, history=p.history, lr=p.lr,
                        seed=seed).unfreeze()  # fmt: skip
    replay = ScoredReplay(capacity=None)
    venv = make_intersection_vec_env(episodes, cfg.env.config, seed=seed, predictors=pred,
                                     on_scored=replay, monitor=False)  # fmt: skip
    done = np.zeros(episodes, bool)
    try:
        obs = venv.reset()
        while not done.all():
            obs, _, dones, _ = venv.step(driver.predict(obs)[0])
            done |= np.asarray(dones)
    finally:
        venv.close()
    merged = concat_views([(v, t) for _, v, t in replay.drain()])
    if merged is not None:
        views, truth = merged
        rng = np.random.default_rng(seed)
        for _ in range(updates):
            idx = rng.choice(len(views), size=min(p.batch_size, len(views)), replace=False)
            pred.update(views.take(idx), truth[idx])
    return pred.net.state_dict()


def _entropy_ci(rows: list[dict[str, float]], seed: int = 0, n: int = 400) -> tuple[float, float]:
    """95 % bootstrap interval (over episodes) of the pooled turn entropy [bits]."""
    from bystander.agents.route_stats import turn_columns, turn_entropy_bits

    cols = turn_columns()
    counts = np.array([[r.get(c, 0.0) for c in cols] for r in rows], float)
    if not len(counts) or counts.sum() == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    draws = [turn_entropy_bits([dict(zip(cols, counts[rng.integers(0, len(counts), len(counts))]
                                         .sum(axis=0), strict=True))]) for _ in range(n)]  # fmt: skip
    return float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def route_trial(trial: Trial, trial_dir: Path) -> dict[str, Any]:
    """Train an ego (``kind: trained``) or take a scripted driver, then evaluate it on
    ``eval_episodes`` held-out episodes with its observers at 3 s and 5 s.

    Returns the figures of :data:`METRICS` and, for each, ``<m>_ci_low`` /
    ``<m>_ci_high`` over this trial's episodes, ``n_episodes``, ``successes``,
    ``episodes`` (per-episode lists: ``seed``, ``success``, ``time_to_destination_s``,
    ``error_3s_m``, ``error_5s_m``),
    ``cost_per_metre_3s`` (the observers' summed 3 s error per metre of route gained),
    ``collision`` and, for trained egos, ``train_steps``, ``train_wall_s``, ``lambda``.
    """
    from bystander.agents.heldout import evaluate_batched
    from bystander.agents.scripted import scripted_driver
    from bystander.config import load_config

    ov, point = trial.overrides, trial.point
    cfg = load_config(None, overrides=list(ov["set"]) + [f"train.seed={trial.seed}",
                                                         f"name={NAME}"])  # fmt: skip
    out: dict[str, Any] = {}
    weights, normalizer = None, None
    if point["kind"] == "trained":
        from bystander.agents.training import load_obs_normalizer, load_policy, train

        run_dir = trial_dir / "run"
        res = train(cfg, run_dir=run_dir)
        policy, _ = load_policy(run_dir)
        normalizer = load_obs_normalizer(run_dir)
        if cfg.predictor.kind == "map_cotrained" and (run_dir / "predictor.pt").is_file():
            from bystander.agents.map_predictor import MapPredictor

            weights = MapPredictor.from_file(run_dir / "predictor.pt").net.state_dict()
        out.update(train_steps=float(res.steps), train_wall_s=float(res.wall_s),
                   **{"lambda": float(next(iter(res.lambdas.values()), math.nan))})  # fmt: skip
    else:
        policy = scripted_driver(point["constraint"], cfg.env.config)
        if cfg.predictor.kind == "map_cotrained":
            c = ov.get("cotrain", {})
            weights = _cotrain_on_driver(policy, cfg, int(c.get("episodes", 32)),
                                         int(c.get("updates", 100)), trial.seed)  # fmt: skip
    n = int(ov.get("eval_episodes", 10))
    per_episode: dict[str, list[float]] = {}  # the matched frontier comparison's inputs
    out["episodes"] = per_episode
    for i, (key, seconds) in enumerate(HORIZONS.items()):
        ev = evaluate_batched(policy, cfg, episodes=n, seed=cfg.eval.seed,
                              predictor=_observers_at(cfg, seconds, weights),
                              obs_normalizer=normalizer)  # fmt: skip
        ev.write_csv(trial_dir, prefix=f"eval_{key}")
        per_episode[key] = [r.get("ade", math.nan) for r in ev.episodes]
        s = ev.summary
        out[key] = ev.metric("ade")
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = (s.get("ade", {}).get(k, math.nan)
                                                       for k in ("ci_low", "ci_high"))  # fmt: skip
        if i:
            continue
        for m in ("success", "time_to_destination_s", "stand_still_fraction", "route_overhead",
                  "turn_entropy_bits", "collision"):  # fmt: skip
            out[m] = ev.metric(m)
            out[f"{m}_ci_low"], out[f"{m}_ci_high"] = (s.get(m, {}).get(k, math.nan)
                                                       for k in ("ci_low", "ci_high"))  # fmt: skip
        lo, hi = _entropy_ci(ev.episodes, seed=trial.seed)
        out["turn_entropy_bits_ci_low"], out["turn_entropy_bits_ci_high"] = lo, hi
        out["cost_per_metre_3s"] = ev.metric("cost_predictability_per_metre")
        out["n_episodes"] = float(len(ev.episodes))
        out["successes"] = float(sum(r["success"] for r in ev.episodes))
        per_episode["seed"] = [r["seed"] for r in ev.episodes]
        per_episode["success"] = [r["success"] for r in ev.episodes]
        per_episode["time_to_destination_s"] = [r["time_to_destination_s"] for r in ev.episodes]
    return out


# ----------------------------------------------------------------------------- report


def point_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per point: ``kind``, ``observers``, ``constraint``, ``seeds``,
    ``eval_episodes`` and, for each of :data:`METRICS`, ``m`` / ``m_lo`` / ``m_hi``:
    95 % Student-t over seeds with two or more seeds, else the one seed's interval over
    its episodes; success: Wilson over the pooled episodes."""
    from bystander.stats import mean_ci, wilson_ci

    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        p = r["trial"]["point"]
        groups.setdefault((p["kind"], p["observers"], p["constraint"]), []).append(r)
    rows = []
    for (kind, obs, constraint), recs in groups.items():
        recs.sort(key=lambda r: r["trial"]["seed"])
        ms = [r["metrics"] for r in recs]
        row: dict[str, Any] = {"kind": kind, "observers": obs, "constraint": constraint,
                               "seeds": [r["trial"]["seed"] for r in recs],
                               "eval_episodes": int(sum(m.get("n_episodes", 0) for m in ms))}  # fmt: skip
        row["n_seeds"] = len(recs)
        for m in METRICS:
            vals = np.array([sl._f(x.get(m)) for x in ms], float)
            if m == "success":
                mean, lo, hi = wilson_ci(int(sum(x.get("successes", 0) for x in ms)),
                                         row["eval_episodes"])  # fmt: skip
            elif len(recs) >= 2:
                mean, lo, hi = mean_ci(vals)
            else:
                mean, lo, hi = (
                    vals[0],
                    sl._f(ms[0].get(f"{m}_ci_low")),
                    sl._f(ms[0].get(f"{m}_ci_high")),
                )
            row[m], row[f"{m}_lo"], row[f"{m}_hi"] = float(mean), float(lo), float(hi)
        rows.append(row)
    return rows


def _frontier(rows: list[dict[str, Any]], observers: str, key: str) -> list[tuple[float, float]]:
    """The scripted speed-only frontier of ``observers`` as the tables give it: (time to
    destination [s], error ``key`` [m]) of the ``speed:`` drivers, sorted by time
    (drivers that never arrive have no time and are left out)."""
    pts = [(r["time_to_destination_s"], r[key]) for r in rows
           if r["kind"] == "scripted" and r["observers"] == observers
           and r["constraint"].startswith("speed:")
           and sl.finite(r["time_to_destination_s"]) and sl.finite(r[key])]  # fmt: skip
    return sorted(pts)


MIN_MATCHED = 10
"""Fewest matched episodes for a frontier comparison."""


def _episodes(records: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """Point (kind, observers, constraint) -> the per-episode lists of its trials."""
    out: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        p, eps = r["trial"]["point"], r["metrics"].get("episodes")
        if isinstance(eps, dict) and eps.get("seed"):
            out.setdefault((p["kind"], p["observers"], p["constraint"]), []).append(eps)
    return out


def frontier_verdicts(rows: list[dict[str, Any]],
                      records: list[dict[str, Any]]) -> list[dict[str, Any]]:  # fmt: skip
    """Every trained ego and route-habit driver against the scripted speed-only frontier
    of the same observers, on matched episodes.

    Time to destination only counts arrivals, so drivers that fail different episodes
    average different routes. The comparison therefore uses the held-out episodes on
    which the ego (each of its seeds) and every ``speed:`` driver arrived (at least
    :data:`MIN_MATCHED`): on them, each driver's mean time and mean 3 s / 5 s errors make
    the frontier, and the ego's mean time and errors are compared with it.

    Inside the frontier's time range its error is interpolated linearly
    (``frontier_at = "interpolated"``); outside, only dominance decides: faster than the
    fastest driver with lower errors is beyond (``"fastest"``), slower than the slowest
    with a higher error is not (``"slowest"``); other cases are not comparable.

    Returns one dict per compared point: ``matched`` (episodes), ``time_to_destination_s``
    and ``error_<h>`` (the ego's, on them), ``frontier_<h>``, ``margin_<h>`` (frontier -
    own error [m], > 0: below the frontier), ``beyond`` (True / False / None: not
    comparable) and ``significant`` (beyond, with the upper 95 % bound of the ego's mean
    error under the frontier at both horizons).
    """
    from bystander.stats import mean_ci

    eps = _episodes(records)
    out = []
    for r in rows:
        if r["kind"] == "scripted" and not r["constraint"].startswith(("route:", "habit:")):
            continue
        v: dict[str, Any] = {k: r[k] for k in ("kind", "observers", "constraint")}
        v.update(beyond=None, significant=None, frontier_at="", matched=0)
        drivers = [d for d in rows if d["kind"] == "scripted" and d["observers"] == r["observers"]
                   and d["constraint"].startswith("speed:")]  # fmt: skip
        d_eps = [eps.get((d["kind"], d["observers"], d["constraint"]), [None])[0] for d in drivers]
        own = eps.get((r["kind"], r["observers"], r["constraint"]), [])
        if len(drivers) < 2 or any(e is None for e in d_eps) or not own:
            out.append(v)
            continue
        index = [{s: i for i, s in enumerate(e["seed"])} for e in d_eps]
        pairs = [(e, i, [ix[s] for ix in index]) for e in own
                 for i, s in enumerate(e["seed"]) if e["success"][i]
                 and all(s in ix and d["success"][ix[s]] for ix, d in zip(index, d_eps, strict=True))]  # fmt: skip
        v["matched"] = len(pairs)
        if len(pairs) < MIN_MATCHED:
            out.append(v)
            continue
        t = float(np.mean([e["time_to_destination_s"][i] for e, i, _ in pairs]))
        v["time_to_destination_s"] = t
        margins, upper = [], []
        for key in HORIZONS:
            own_err = np.array([e[key][i] for e, i, _ in pairs], float)
            front = sorted((float(np.mean([d["time_to_destination_s"][j[k]] for _, _, j in pairs])),
                            float(np.nanmean([d[key][j[k]] for _, _, j in pairs])))
                           for k, d in enumerate(d_eps))  # fmt: skip
            ts, es = zip(*front, strict=True)
            f = float(np.interp(t, ts, es))  # the end point's error outside the range
            v["frontier_at"] = ("fastest" if t < ts[0] else "slowest" if t > ts[-1]
                                else "interpolated")  # fmt: skip
            mean, _, hi = mean_ci(own_err)
            v[key], v[f"frontier_{key}"], v[f"margin_{key}"] = mean, f, f - mean
            margins.append(f - mean)
            upper.append(f - hi)
        if all(math.isfinite(m) for m in margins):
            beyond = all(m > 0 for m in margins)
            at = v["frontier_at"]
            if (
                at == "interpolated"
                or (at == "fastest" and beyond)
                or (at == "slowest" and not beyond)
            ):
                v["beyond"] = beyond
                v["significant"] = beyond and all(math.isfinite(u) and u > 0 for u in upper)
        out.append(v)
    return out


def _sentences(verdicts: list[dict[str, Any]], observers: list[str]) -> tuple[list[str], dict]:
    """The page's answer, from the verdicts: per observer kind, which trained egos lie
    beyond the speed-only frontier; then whether the gain disappears with CV or
    habit-blind observers."""
    names = {"cv": "constant-velocity observers", "map": "habit-blind map-aware observers",
             "map_cotrained": "co-trained map-aware observers"}  # fmt: skip
    lines, answer = [], {}
    for obs in observers:
        mine = [v for v in verdicts if v["kind"] == "trained" and v["observers"] == obs]
        beyond = [v["constraint"] for v in mine if v["beyond"]]
        sig = [v["constraint"] for v in mine if v["significant"]]
        na = [v["constraint"] for v in mine if v["beyond"] is None]
        answer[obs] = {"beyond": beyond, "significant": sig, "not_comparable": na,
                       "compared": len(mine) - len(na)}  # fmt: skip
        text = (f"With {names[obs]}: {len(beyond)} of {len(mine) - len(na)} comparable trained "
                f"egos lie beyond the scripted speed-only frontier")  # fmt: skip
        text += (
            f" ({', '.join(beyond)}; outside the 95 % intervals: {', '.join(sig) or 'none'})"
            if beyond
            else ""
        )
        text += (
            f"; not comparable (no arrival, or a time outside the frontier): {', '.join(na)}."
            if na
            else "."
        )
        lines.append(text)
    co = answer.get("map_cotrained", {}).get("beyond")
    others = [o for o in ("cv", "map") if o in answer]
    if co is None:
        verdict = "not measured (no co-trained observers in this preset)"
    elif not answer["map_cotrained"]["compared"]:
        verdict = (
            "cannot be answered: no trained ego is comparable with the frontier of "
            "co-trained observers (no arrival, or a time outside the frontier)"
        )
    elif not co:
        verdict = "there is no gain to lose: no trained ego beats the speed-only frontier of co-trained observers"
    else:
        kept = [o for o in others if answer[o]["beyond"]]
        verdict = (
            "the gain disappears with " + " and ".join(names[o] for o in others if o not in kept)
            if len(kept) < len(others)
            else "the gain does not disappear"
        )
        verdict += f"; it remains with {' and '.join(names[o] for o in kept)}" if kept else ""
    lines.append(
        f"Does the gain disappear with CV or habit-blind observers? {verdict[0].upper()}{verdict[1:]}."
    )
    return lines, {"per_observers": answer, "gain_with_cv_or_habit_blind": verdict}


def _plot(rows: list[dict[str, Any]], observers: list[str], path: Path) -> None:
    p = sl.plt()
    fig, axes = p.subplots(len(HORIZONS), len(observers), figsize=(4.2 * len(observers), 7),
                           squeeze=False)  # fmt: skip
    for j, obs in enumerate(observers):
        for i, key in enumerate(HORIZONS):
            ax = axes[i][j]
            front = _frontier(rows, obs, key)
            if front:
                ax.plot(*zip(*front, strict=True), "k--o", lw=1, ms=4, label="scripted speeds")
            for kind, fmt in (("scripted", "s"), ("trained", "o")):
                sub = [r for r in rows if r["observers"] == obs and r["kind"] == kind
                       and (kind == "trained" or not r["constraint"].startswith(("speed:", "stop")))]  # fmt: skip
                sl.errorbar(ax, sub, "time_to_destination_s", key, fmt=fmt, annotate="constraint",
                            label="route habits" if kind == "scripted" else "trained egos")  # fmt: skip
            ax.set_title(f"{obs}, {HORIZONS[key]:g} s", fontsize=9)
            ax.set_xlabel("time to destination [s]")
            ax.set_ylabel(f"observers' error at {HORIZONS[key]:g} s [m]")
            ax.grid(alpha=0.3)
            sl.legend(ax, fontsize=6)
    sl.save(fig, path)


def report(records: list[dict[str, Any]], preset: dict[str, Any], results_dir: Path) -> dict:
    rows = point_rows(records)
    s = sl.section(preset, NAME)
    names = [c["name"] for c in s["constraints"]] + [str(d) for d in s["drivers"]]
    rows.sort(key=lambda r: (r["kind"] != "trained", list(OBSERVERS).index(r["observers"]),
                             names.index(r["constraint"]) if r["constraint"] in names else 99))  # fmt: skip
    observers = [o for o in OBSERVERS if any(r["observers"] == o for r in rows)]
    verdicts = frontier_verdicts(rows, records)
    lines, answer = _sentences(verdicts, observers)
    csv_rows = [{k: (",".join(map(str, v)) if isinstance(v, list) else v) for k, v in r.items()}
                for r in rows]  # fmt: skip
    write_csv(csv_rows, results_dir / "results.csv")
    write_csv(verdicts, results_dir / "frontier.csv")
    _plot(rows, observers, results_dir / "route_habits.png")

    def entry(r: dict[str, Any]) -> dict[str, Any]:
        e = {k: r[k] for k in ("observers", "constraint", "seeds", "eval_episodes")}
        if r["kind"] == "scripted":
            e["driver"], e["constraint"] = r["constraint"], "scripted"
        e.update({m: {"mean": r[m], "ci_low": r[f"{m}_lo"], "ci_high": r[f"{m}_hi"]}
                  for m in METRICS})  # fmt: skip
        return e

    summary = {
        "study": NAME, "preset": preset["name"], "command": sl.command_line(NAME, preset),
        "scenario": {"config": str(SCENARIO.relative_to(sl.REPO)), "set": scenario_overrides()},
        "horizons_s": list(HORIZONS.values()),
        "ci": "95 %: Student-t over seeds (2+ seeds), else over the episodes of the one "
              "seed (turn entropy: bootstrap); success: Wilson over pooled episodes",
        "points": [entry(r) for r in rows if r["kind"] == "trained"],
        "scripted": [entry(r) for r in rows if r["kind"] == "scripted"],
        "frontier": verdicts, "answer": answer,
    }  # fmt: skip
    atomic_write_json(results_dir / "summary.json", summary)
    cols = [("observers", "observers"), ("ego", "constraint"), ("seeds", "n_seeds"),
            ("episodes", "eval_episodes"), ("success", "success"),
            ("time to dest. [s]", "time_to_destination_s"), ("error 3 s [m]", "error_3s_m"),
            ("error 5 s [m]", "error_5s_m"), ("turn entropy [bits]", "turn_entropy_bits"),
            ("route overhead", "route_overhead"), ("stand-still", "stand_still_fraction")]  # fmt: skip
    ci = tuple(k for _, k in cols[4:])
    vcols = [("observers", "observers"), ("ego", "constraint"), ("matched", "matched"),
             ("time to dest. [s]", "time_to_destination_s"),
             ("error 3 s [m]", "error_3s_m"), ("frontier 3 s [m]", "frontier_error_3s_m"),
             ("error 5 s [m]", "error_5s_m"), ("frontier 5 s [m]", "frontier_error_5s_m"),
             ("frontier at", "frontier_at"), ("beyond", "beyond"),
             ("outside CI", "significant")]  # fmt: skip
    sections = [
        "## Answer (computed from the figures below)", "", *[f"- {x}" for x in lines], "",
        "Beyond the frontier = lower observer error at both 3 s and 5 s than the scripted "
        "constant-speed drivers (speed:3/6/9/12, interpolated) at the same time to "
        "destination, all on matched episodes: the held-out episodes on which the ego and "
        f"every speed driver arrived (at least {MIN_MATCHED}; last table). Outside the "
        "frontier's time range only dominance counts (faster with lower errors: beyond; "
        "slower with a higher error: not beyond).", "",
        "![route habits](route_habits.png)", "",
        "The figure and the next two tables: means over all held-out episodes (time to "
        "destination over the arrivals of each driver); the verdicts: matched episodes.", "",
        "## Trained egos", "",
        markdown_table([r for r in rows if r["kind"] == "trained"], cols, ci=ci, digits=2), "",
        "## Scripted drivers", "",
        markdown_table([r for r in rows if r["kind"] == "scripted"], cols, ci=ci, digits=2), "",
        "## Against the speed-only frontier (matched episodes)", "",
        markdown_table(verdicts, vcols, digits=2), "",
        "Scenario: `experiments/configs/research_grid.yaml`; observers score the ego at 3 s "
        "during training; co-trained observers of a scripted driver are co-trained on its "
        "own training-seed episodes first. Intervals: " + summary["ci"] + ".",
    ]  # fmt: skip
    sl.write_page(results_dir, TITLE, NAME, preset, sections)
    return {
        "answer": answer,
        "points": len(summary["points"]),
        "scripted": len(summary["scripted"]),
    }


if __name__ == "__main__":
    raise SystemExit(sl.main(sys.modules[__name__]))
