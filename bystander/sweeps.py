"""Sweep machinery: run many (study, config overrides, seed) trials, resumably.

A :class:`Trial` is one training-and-evaluation job: a study name, a *point* (the
swept parameters, e.g. ``{"weight": 0.1}``), the config overrides that realise it
and a seed. A *trial function* ``fn(trial, trial_dir) -> dict[str, float]`` runs it
and returns its metrics; :func:`run_sweep` runs a list of trials on a backend and
writes one JSON record per finished trial, atomically, as
``RESULTS_DIR/trials/<trial_id>.json``. A rerun skips every trial whose record
exists with ``status == "ok"`` (an interrupted sweep resumes where it stopped;
failed trials are retried).

Backends:

- ``serial``: in this process (debugging, tests).
- ``local``: a :class:`concurrent.futures.ProcessPoolExecutor` with the ``spawn``
  start method, ``workers`` processes.
- ``ray``: Ray Tune (``pip install 'bystander[ray]'``): a ``Tuner`` over a function
  trainable, one Tune trial per pending trial, at most ``workers`` at once;
  ``ray.init()`` starts a local Ray unless ``ray_address`` names a cluster
  (``"auto"`` or ``"ray://host:10001"``). The trainable returns the record and the
  driver writes it, so a cluster needs no shared filesystem for the results.

Trial functions are named by a spec ``"module:function"`` (importable in the
workers); ``sys_path`` entries are prepended to ``sys.path`` in each worker first,
so study scripts outside the installed package work on every backend.

Aggregation helpers (:func:`aggregate`, :func:`pareto_front`, :func:`write_csv`,
:func:`markdown_table`) turn the records into per-point means with 95 % confidence
intervals over seeds (Student t, :func:`bystander.stats.mean_ci`).
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import json
import math
import os
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bystander.atomic import atomic_open
from bystander.stats import mean_ci

__all__ = [
    "BACKENDS",
    "Trial",
    "aggregate",
    "atomic_write_json",
    "execute_trial",
    "fmt_ci",
    "is_done",
    "load_results",
    "markdown_table",
    "pareto_front",
    "read_csv_floats",
    "resolve_fn",
    "run_sweep",
    "trial_path",
    "write_csv",
]

BACKENDS = ("serial", "local", "ray")

TrialFn = Callable[["Trial", Path], dict[str, Any]]


@dataclass(frozen=True)
class Trial:
    """One job of a sweep.

    Attributes:
        study: Study name (``frontier``, ``lagrangian``...).
        point: Swept parameters of this trial, e.g. ``{"mode": "shaping", "weight": 0.1}``
            (JSON scalars; the grouping key of :func:`aggregate`).
        overrides: Everything the trial function needs to build its config
            (e.g. ``["constraint.weight=0.1"]`` for the driving studies).
        seed: Seed of training and evaluation.
    """

    study: str
    point: dict[str, Any]
    overrides: Any = field(default_factory=list)
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.study, str) or not self.study:
            raise ValueError(f"study: expected a non-empty str, got {self.study!r}")
        if not isinstance(self.point, dict):
            raise TypeError(f"point: expected a dict, got {type(self.point).__name__}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise TypeError(f"seed: expected an int, got {self.seed!r}")

    @property
    def trial_id(self) -> str:
        """Stable file-safe id: readable point label, seed, hash of everything."""
        label = "_".join(f"{k}={_short(v)}" for k, v in self.point.items()) or "base"
        label = re.sub(r"[^A-Za-z0-9_.=-]+", "-", label)[:80]
        digest = hashlib.sha256(
            json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        ).hexdigest()[:8]
        return f"{label}_s{self.seed}_{digest}"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trial:
        """Inverse of :meth:`to_dict`."""
        return cls(
            study=d["study"], point=dict(d["point"]), overrides=d["overrides"], seed=d["seed"]
        )


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


# --------------------------------------------------------------------------- files


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (:func:`bystander.atomic.atomic_open`)."""
    path = Path(path)
    with atomic_open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, default=_json_default, allow_nan=True)
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def trial_path(results_dir: str | Path, trial: Trial) -> Path:
    """Where the record of ``trial`` lives: ``RESULTS_DIR/trials/<trial_id>.json``."""
    return Path(results_dir) / "trials" / f"{trial.trial_id}.json"


def is_done(results_dir: str | Path, trial: Trial) -> bool:
    """Whether ``trial`` has a record with ``status == "ok"``."""
    p = trial_path(results_dir, trial)
    if not p.is_file():
        return False
    try:
        return json.loads(p.read_text(encoding="utf-8")).get("status") == "ok"
    except (OSError, json.JSONDecodeError):
        return False


def load_results(results_dir: str | Path, status: str | None = "ok") -> list[dict[str, Any]]:
    """All trial records under ``RESULTS_DIR/trials`` (only ``status`` ones unless ``None``),
    sorted by trial id."""
    out = []
    for p in sorted((Path(results_dir) / "trials").glob("*.json")):
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if status is None or rec.get("status") == status:
            out.append(rec)
    return out


# ------------------------------------------------------------------------ execution


def resolve_fn(spec: str | TrialFn, sys_path: Sequence[str] = ()) -> TrialFn:
    """The trial function named by ``"module:function"`` (or ``spec`` if callable)."""
    if callable(spec):
        return spec
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"fn: expected 'module:function' or a callable, got {spec!r}")
    for p in reversed(list(sys_path)):
        if p not in sys.path:
            sys.path.insert(0, p)
    module, name = spec.split(":", 1)
    fn = getattr(importlib.import_module(module), name, None)
    if fn is None or not callable(fn):
        raise ValueError(f"fn: module {module!r} has no function {name!r}")
    return fn


def execute_trial(
    spec: str | TrialFn,
    trial_dict: dict[str, Any],
    results_dir: str,
    sys_path: Sequence[str] = (),
) -> dict[str, Any]:
    """Run one trial and return its record (never raises: errors are recorded).

    The trial function gets ``trial_dir = RESULTS_DIR/runs/<trial_id>`` for its files.
    Record: ``{"trial", "trial_id", "status": "ok"|"error", "metrics", "wall_s",
    "error"?}``.
    """
    trial = Trial.from_dict(trial_dict)
    trial_dir = Path(results_dir) / "runs" / trial.trial_id
    t0 = time.perf_counter()
    record: dict[str, Any] = {"trial": trial.to_dict(), "trial_id": trial.trial_id}
    try:
        fn = resolve_fn(spec, sys_path)
        trial_dir.mkdir(parents=True, exist_ok=True)
        metrics = fn(trial, trial_dir)
        if not isinstance(metrics, dict):
            raise TypeError(f"trial function returned {type(metrics).__name__}, expected dict")
        record.update(status="ok", metrics=metrics)
    except Exception as e:  # noqa: BLE001 - recorded and reported, the sweep goes on
        record.update(status="error", metrics={}, error=f"{type(e).__name__}: {e}")
        record["traceback"] = traceback.format_exc()
    record["wall_s"] = time.perf_counter() - t0
    return record


def _local_worker(args: tuple[Any, ...]) -> dict[str, Any]:
    spec, trial_dict, results_dir, sys_path = args
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    return execute_trial(spec, trial_dict, results_dir, sys_path)


def run_sweep(
    trials: Iterable[Trial],
    fn: str | TrialFn,
    results_dir: str | Path,
    *,
    backend: str = "local",
    workers: int = 1,
    ray_address: str | None = None,
    sys_path: Sequence[str] = (),
    rerun: bool = False,
    max_trials: int | None = None,
    log: Callable[[str], None] | None = print,
) -> list[dict[str, Any]]:
    """Run every trial not already done; return the records of *all* ``trials``.

    Args:
        trials: The sweep.
        fn: ``"module:function"`` (required for ``local`` and ``ray``) or a callable
            (``serial`` only) with signature ``fn(trial, trial_dir) -> metrics dict``.
        results_dir: Study results directory (records in ``trials/``, trial files in ``runs/``).
        backend: ``serial``, ``local`` (process pool, spawn) or ``ray`` (Ray Tune).
        workers: Trials run at once.
        ray_address: Existing Ray cluster (``None``: ``ray.init()`` locally).
        sys_path: Prepended to ``sys.path`` in the workers before importing ``fn``.
        rerun: Run finished trials again.
        max_trials: Run at most this many pending trials now (the rest stay pending;
            a later call resumes). ``None``: all.
        log: Progress lines (``None``: silent).

    Returns:
        One record per trial (in ``trials`` order; pending trials beyond ``max_trials``
        and failed ones included with their status).
    """
    trials = list(trials)
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: expected an int >= 1, got {workers!r}")
    if backend != "serial" and not isinstance(fn, str):
        raise TypeError(f"fn: backend {backend!r} needs a 'module:function' string spec")
    ids = [t.trial_id for t in trials]
    if len(set(ids)) != len(ids):
        raise ValueError("trials: duplicate trials (same study, point, overrides and seed)")
    results_dir = Path(results_dir)
    (results_dir / "trials").mkdir(parents=True, exist_ok=True)
    pending = [t for t in trials if rerun or not is_done(results_dir, t)]
    if max_trials is not None:
        pending = pending[: max(0, int(max_trials))]
    say = log or (lambda _m: None)
    say(f"sweep {results_dir}: {len(trials)} trials, {len(trials) - len(pending)} done, "
        f"running {len(pending)} on {backend} x{workers}")  # fmt: skip
    sys_path = [str(p) for p in sys_path]

    def _save(rec: dict[str, Any]) -> None:
        atomic_write_json(results_dir / "trials" / f"{rec['trial_id']}.json", rec)
        extra = f" ({rec.get('error')})" if rec["status"] != "ok" else ""
        say(f"  {rec['trial_id']}: {rec['status']} in {rec['wall_s']:.1f} s{extra}")

    if pending:
        args = [(fn, t.to_dict(), str(results_dir), sys_path) for t in pending]
        if backend == "serial" or (backend == "local" and workers == 1 and not isinstance(fn, str)):
            for a in args:
                _save(execute_trial(*a))
        elif backend == "local":
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            ctx = mp.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                futures = [pool.submit(_local_worker, a) for a in args]
                for fut in as_completed(futures):
                    _save(fut.result())
        else:
            for rec in _run_ray(args, results_dir, workers, ray_address):
                _save(rec)
    by_id = {r["trial_id"]: r for r in load_results(results_dir, status=None)}
    return [by_id.get(t.trial_id, {"trial_id": t.trial_id, "status": "pending"}) for t in trials]


def _ray_trainable(config: dict[str, Any]) -> dict[str, Any]:
    """Ray Tune function trainable: runs one trial, returns its record as JSON text."""
    rec = execute_trial(config["fn"], config["trial"], config["results_dir"], config["sys_path"])
    return {"record": json.dumps(rec, default=_json_default), "ok": float(rec["status"] == "ok")}


def _run_ray(
    args: list[tuple[Any, ...]], results_dir: Path, workers: int, address: str | None
) -> list[dict[str, Any]]:
    """Run ``args`` as Ray Tune trials; returns the records."""
    try:
        import ray
        from ray import tune
    except ImportError as e:  # pragma: no cover - depends on the extra
        raise ImportError("backend 'ray' needs Ray Tune: pip install 'bystander[ray]'") from e

    if not ray.is_initialized():
        if address is None:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    space = {
        "trial_index": tune.grid_search(list(range(len(args)))),
        "fn": args[0][0],
        "results_dir": str(results_dir.resolve()),
        "sys_path": [str(Path(p).resolve()) for p in args[0][3]],
    }
    trial_dicts = [a[1] for a in args]

    def trainable(config: dict[str, Any]) -> dict[str, Any]:
        cfg = dict(config, trial=trial_dicts[config["trial_index"]])
        return _ray_trainable(cfg)

    storage = (results_dir / "ray").resolve()
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space=space,
        tune_config=tune.TuneConfig(max_concurrent_trials=workers),
        run_config=tune.RunConfig(
            storage_path=str(storage), name=f"sweep-{int(time.time())}", verbose=0
        ),
    )
    grid = tuner.fit()
    out = []
    for i in range(len(grid)):
        res = grid[i]
        metrics = res.metrics or {}
        if "record" in metrics:
            out.append(json.loads(metrics["record"]))
        else:
            cfg = res.config or {}
            td = trial_dicts[int(cfg.get("trial_index", i))]
            t = Trial.from_dict(td)
            out.append({"trial": td, "trial_id": t.trial_id, "status": "error", "metrics": {},
                        "error": f"ray: {res.error}", "wall_s": 0.0})  # fmt: skip
    return out


# ----------------------------------------------------------------------- aggregation


def aggregate(
    records: Sequence[dict[str, Any]],
    metrics: Sequence[str] | None = None,
    group_by: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Mean and 95 % CI over seeds of each metric, per point.

    Args:
        records: Trial records (``status == "ok"`` ones are used).
        metrics: Metric names (default: every metric of any record).
        group_by: Point keys to group on (default: all keys of the point).

    Returns:
        One row per point, in first-seen order: the point's keys, ``n_seeds``, and for
        each metric ``m``: ``m`` (mean), ``m_lo``, ``m_hi`` (95 % Student-t interval
        over seeds; NaN with one seed).
    """
    ok = [r for r in records if r.get("status") == "ok"]
    if metrics is None:
        metrics = []
        for r in ok:
            metrics.extend(k for k, v in r["metrics"].items() if k not in metrics and _num(v))
    groups: dict[str, list[dict[str, Any]]] = {}
    points: dict[str, dict[str, Any]] = {}
    for r in ok:
        point = r["trial"]["point"]
        if group_by is not None:
            point = {k: point.get(k) for k in group_by}
        key = json.dumps(point, sort_keys=True, default=str)
        groups.setdefault(key, []).append(r)
        points.setdefault(key, point)
    rows = []
    for key, recs in groups.items():
        row: dict[str, Any] = dict(points[key])
        row["n_seeds"] = len(recs)
        for m in metrics:
            vals = np.array([_as_float(r["metrics"].get(m)) for r in recs], dtype=float)
            mean, lo, hi = mean_ci(vals)
            row[m], row[f"{m}_lo"], row[f"{m}_hi"] = mean, lo, hi
        rows.append(row)
    return rows


def _num(v: Any) -> bool:
    return isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool)


def _as_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def pareto_front(
    rows: Sequence[dict[str, Any]], maximize: str, minimize: str
) -> list[dict[str, Any]]:
    """Rows not dominated on (``maximize`` higher, ``minimize`` lower), sorted by ``minimize``.

    A row dominates another when it is at least as good on both and strictly better
    on one. Rows with a NaN in either column are ignored.
    """
    pts = [r for r in rows if math.isfinite(_as_float(r.get(maximize))) and math.isfinite(
        _as_float(r.get(minimize)))]  # fmt: skip
    front = []
    for r in pts:
        dominated = any(
            o[maximize] >= r[maximize]
            and o[minimize] <= r[minimize]
            and (o[maximize] > r[maximize] or o[minimize] < r[minimize])
            for o in pts
        )
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: r[minimize])


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Rows (dicts) as CSV with the union of their keys as header (atomically)."""
    path = Path(path)
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    with atomic_open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys, restval="")
        w.writeheader()
        for r in rows:
            w.writerow({k: _cell(v) for k, v in r.items()})
    return path


def read_csv_floats(path: str | Path) -> list[dict[str, float]]:
    """A numeric CSV (such as :func:`write_csv` writes for logs: ``heldout.csv``) as rows
    of floats; empty cells are NaN, a missing file is no rows. A cell that is not a
    number raises ``ValueError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        try:
            return [{k: float(v) if v else math.nan for k, v in r.items()}
                    for r in csv.DictReader(f)]  # fmt: skip
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: expected a CSV of numbers, got {err}") from None


def _cell(v: Any) -> Any:
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return v


def fmt_ci(row: dict[str, Any], metric: str, digits: int = 2, scale: float = 1.0) -> str:
    """``"mean [lo, hi]"`` of ``metric`` in an aggregated row (``"n/a"`` when NaN)."""
    m = _as_float(row.get(metric)) * scale
    if not math.isfinite(m):
        return "n/a"
    lo, hi = _as_float(row.get(f"{metric}_lo")) * scale, _as_float(row.get(f"{metric}_hi")) * scale
    if math.isfinite(lo) and math.isfinite(hi):
        return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
    return f"{m:.{digits}f}"


def markdown_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, str]],
    ci: Sequence[str] = (),
    digits: int = 2,
) -> str:
    """A Markdown table: ``columns`` = (header, key) pairs; keys in ``ci`` print as
    ``mean [lo, hi]`` (aggregated rows), others as plain values."""
    head = "| " + " | ".join(h for h, _ in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, sep]
    for r in rows:
        cells = []
        for _, k in columns:
            if k in ci:
                cells.append(fmt_ci(r, k, digits))
            else:
                v = r.get(k, "")
                if isinstance(v, float):
                    cells.append(f"{v:.{digits}f}" if math.isfinite(v) else "n/a")
                else:
                    cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
