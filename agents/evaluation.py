"""Evaluation of a trained ego: N seeded episodes, per-episode figures, 95% CIs, CSV.

Per episode (one CSV row): success (``info["arrived"]``), collision
(``info["crashed"]``), off route (``off_route``: the episode ended by leaving the road or
the map off its route, ``info["offroad"]`` or ``info["left_map"]``), steps, time to
destination in seconds (successful episodes only; ``steps * dt``), task return (the env's reward, before any constraint
wrapper), episode cost and each cost channel (``cost_<channel>``, summed over the
episode, and ``cost_<channel>_per_step``, divided by its steps: the unit of
``per_step`` budgets, and ``cost_<channel>_per_metre``, divided by the metres of route
gained, ``progress_m``: the unit of ``per_metre`` budgets), escalations of the review
gate, the fraction of steps spent
standing still (``stand_still_fraction``: slow while no queue or yielding rule holds the
ego, :func:`~bystander.agents.stand_still.standing_still`), and
route figures (``driven_m``, ``route_overhead``, turn counts; the summary's
``turn_entropy_bits``: :mod:`bystander.agents.route_stats`) and
the observers' ADE / FDE in metres, over all scored predictions and per observer
type. ADE is the predictor's own error (the cost the ego pays); FDE is the final
displacement of the same predictions (:func:`bystander.agents.metrics.fde`).

Confidence intervals (95 %): Wilson score interval for rates (success, collision,
off route),
Student-t interval of the mean for everything else (episodes are independent draws
with different seeds). Metrics with no value in any episode (e.g. time to
destination when no episode succeeded) are NaN.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bystander.agents.route_stats import RouteLog, turn_entropy_bits
from bystander.agents.stand_still import standing_still
from bystander.config import COTRAINED_KINDS, RunConfig
from bystander.envs.constraints import MIN_PROGRESS_M, cost_column
from bystander.envs.scoring import ScoredReplay
from bystander.stats import mean_ci, wilson_ci
from bystander.sweeps import write_csv

__all__ = [
    "RATE_METRICS",
    "episode_row",
    "eval_settings",
    "EvalResult",
    "PredictionOverlay",
    "evaluate_policy",
    "evaluate_run",
    "format_summary",
    "latest_predictions",
    "load_run",
    "render_policy",
    "render_run",
    "summarize",
]

RATE_METRICS = ("success", "collision", "off_route")


@dataclass
class EvalResult:
    """Evaluation of one policy.

    Attributes:
        episodes: One dict per episode (the CSV rows).
        summary: Metric -> ``{"mean", "ci_low", "ci_high", "n"}``.
    """

    episodes: list[dict[str, float]] = field(default_factory=list)
    summary: dict[str, dict[str, float]] = field(default_factory=dict)

    def metric(self, name: str) -> float:
        """Mean of a metric (NaN when absent)."""
        return self.summary.get(name, {}).get("mean", math.nan)

    def write_csv(self, directory: str | Path, prefix: str = "eval") -> tuple[Path, Path]:
        """Write ``<prefix>_episodes.csv`` and ``<prefix>_summary.csv`` (atomically);
        returns both paths."""
        directory = Path(directory)
        ep_path = write_csv(self.episodes, directory / f"{prefix}_episodes.csv")
        sum_path = write_csv(
            [{"metric": k, **s, "n": int(s["n"])} for k, s in self.summary.items()],
            directory / f"{prefix}_summary.csv",
        )
        return ep_path, sum_path


def summarize(episodes: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """95 % CIs of every metric over ``episodes`` (Wilson for rates, t otherwise)."""
    keys: list[str] = []
    for row in episodes:
        keys.extend(k for k in row if k not in keys)
    out: dict[str, dict[str, float]] = {}
    for k in keys:
        if k in ("episode", "seed"):
            continue
        vals = np.array([row.get(k, math.nan) for row in episodes], dtype=float)
        finite = vals[np.isfinite(vals)]
        if k in RATE_METRICS:
            m, lo, hi = wilson_ci(int(finite.sum()), len(finite))
        else:
            m, lo, hi = mean_ci(finite)
        out[k] = {"mean": m, "ci_low": lo, "ci_high": hi, "n": float(len(finite))}
    if "turns_E_right" in keys:  # pooled over the episodes: no interval
        h, n = turn_entropy_bits(episodes), float(len(episodes))
        out["turn_entropy_bits"] = {"mean": h, "ci_low": math.nan, "ci_high": math.nan, "n": n}
    return out


class _ScoredLog(ScoredReplay):
    """Tracker ``on_scored`` collector: per-type ADE (the scored error) and FDE of an
    episode, from the predictions handed over."""

    def __init__(self) -> None:
        super().__init__(capacity=None)
        self.reset()

    def reset(self) -> None:
        self.ade: dict[str, list[np.ndarray]] = defaultdict(list)
        self.fde: dict[str, list[np.ndarray]] = defaultdict(list)

    def keep(
        self,
        predictor: Any,
        views: Any,
        truth: np.ndarray,
        predictions: np.ndarray | None,
        errors: np.ndarray,
    ) -> None:
        from bystander.agents.metrics import fde

        if predictions is None:
            return  # text predictors (score calls): no displacement
        pred = np.asarray(predictions)
        truth = np.asarray(truth)
        if pred.ndim == truth.ndim + 1:  # k modes: minFDE_k
            fin = np.linalg.norm(pred[..., -1, :2] - truth[:, None, -1, :2], axis=-1).min(axis=1)
        else:
            fin = fde(pred[..., :2], truth[..., :2])
        types = np.asarray(views.observer_types).astype(str)
        errors = np.asarray(errors, dtype=float)
        for t in np.unique(types):
            sel = types == t
            self.ade[t].append(errors[sel])
            self.fde[t].append(np.asarray(fin)[sel])

    def figures(self) -> dict[str, float]:
        out: dict[str, float] = {}
        all_ade = [a for v in self.ade.values() for a in v]
        all_fde = [a for v in self.fde.values() for a in v]
        out["ade"] = float(np.concatenate(all_ade).mean()) if all_ade else math.nan
        out["fde"] = float(np.concatenate(all_fde).mean()) if all_fde else math.nan
        out["predictions_scored"] = float(sum(len(a) for a in all_ade))
        for t in sorted(self.ade):
            out[f"ade_{t}"] = float(np.concatenate(self.ade[t]).mean())
            out[f"fde_{t}"] = float(np.concatenate(self.fde[t]).mean())
        return out


def evaluate_policy(
    policy: Any,
    cfg: RunConfig,
    *,
    episodes: int | None = None,
    seed: int | None = None,
    deterministic: bool | None = None,
    predictor: Any = None,
    obs_normalizer: Any = None,
    multipliers: dict[str, Any] | None = None,
    max_steps: int = 100_000,
) -> EvalResult:
    """Run seeded episodes of ``policy`` in the run's env stack and summarise them.

    Args:
        policy: Anything with SB3's ``predict(obs, deterministic=...) -> (action, state)``.
        cfg: The run config (env, predictor, constraint, review sections).
        episodes: Episodes (default ``eval.episodes``); episode ``i`` uses seed ``seed + i``.
        seed: First seed (default ``eval.seed``).
        deterministic: Greedy actions (default ``eval.deterministic``).
        predictor: The observers' predictor (default: built from ``cfg.predictor``).
        obs_normalizer: Function applied to observations before ``policy.predict``
            (``VecNormalize.normalize_obs`` of runs trained with ``train.normalize``).
        multipliers: Multipliers for the constraint wrapper (only its logged reward
            depends on them; default: fresh ones from the config).
        max_steps: Safety cap on steps per episode.
    """
    from bystander.agents.stack import make_env
    from bystander.agents.training import build_multipliers, build_predictor
    from bystander.envs.contract import find_layer
    from bystander.envs.predictability import PredictabilityReward

    n, first, greedy = eval_settings(cfg, episodes, seed, deterministic)
    if predictor is None and cfg.predictor.kind != "none":
        predictor = build_predictor(cfg)
    env = make_env(cfg, predictor=predictor, multipliers=multipliers or build_multipliers(cfg))
    sim = getattr(env.unwrapped, "sim", None)  # the intersection's simulator
    log = _ScoredLog()
    if predictor is not None:
        find_layer(env, PredictabilityReward).tracker.on_scored = log
    rows: list[dict[str, float]] = []
    try:
        for i in range(n):
            log.reset()
            obs, info = env.reset(seed=first + i)
            dt = _env_dt(env, info)
            routes = RouteLog(1, dt)
            routes.start(obs)
            escalations = 0
            steps = 0
            still = 0
            ep_return = 0.0
            while True:
                o = obs_normalizer(obs) if obs_normalizer is not None else obs
                action, _ = policy.predict(o, deterministic=greedy)
                obs, reward, terminated, truncated, info = env.step(action)
                steps += 1
                escalations += int(bool(info.get("escalated", False)))
                still += int(standing_still(info.get("speed", np.inf), sim)[0])
                routes.step(obs, float(info.get("speed", 0.0)), True)
                ep_return += float(reward)
                if terminated or truncated or steps >= max_steps:
                    break
            row = episode_row(
                i, first + i, info, steps, still, dt, escalations=escalations, ret=ep_return
            )
            row.update(routes.row(0, row["success"] > 0, row.get("progress_m")))
            row.update(log.figures() if predictor is not None else {})
            rows.append(row)
    finally:
        env.close()
    return EvalResult(episodes=rows, summary=summarize(rows))


def eval_settings(
    cfg: RunConfig, episodes: int | None, seed: int | None, deterministic: bool | None
) -> tuple[int, int, bool]:
    """``(episodes, first seed, greedy)``: the arguments given, else the ``eval`` section."""
    n = episodes if episodes is not None else cfg.eval.episodes
    first = seed if seed is not None else cfg.eval.seed
    greedy = cfg.eval.deterministic if deterministic is None else deterministic
    if n < 1:
        raise ValueError(f"episodes: expected an int >= 1, got {n}")
    return n, first, greedy


def episode_row(
    i: int,
    seed: int,
    info: dict[str, Any],
    steps: int,
    still: int,
    dt: float,
    *,
    escalations: int = 0,
    ret: float = math.nan,
) -> dict[str, float]:
    """One episode's figures (the CSV row) from its final ``info``.

    Args:
        i: Episode index. seed: Its seed. info: The final step's info (episode keys).
        steps: Steps played. still: Of them, steps standing still
            (:func:`~bystander.agents.stand_still.standing_still`).
        dt: Seconds per step. escalations: Review-gate escalations.
        ret: Task return, when the info carries no Monitor ``episode`` entry.
    """
    outcome = info.get("episode_outcome")  # several cars per world: how this one ended
    success = outcome == "arrived" if outcome else bool(info.get("arrived", False))
    crashed = outcome == "crashed" if outcome else bool(info.get("crashed", False))
    if outcome:
        off_route = outcome in ("offroad", "left_map")
    else:
        off_route = bool(info.get("offroad", False) or info.get("left_map", False))
    row: dict[str, float] = {
        "episode": float(i),
        "seed": float(seed),
        "success": float(success),
        "collision": float(crashed),
        "off_route": float(off_route and not success and not crashed),
        "steps": float(steps),
        "time_to_destination_s": steps * dt if success else math.nan,
        "task_return": float((info.get("episode") or {}).get("r", ret)),
        "episode_cost": float(info.get("episode_cost", math.nan)),
        "escalations": float(escalations),
        "stand_still_fraction": still / steps,
    }
    progress = info.get("episode_progress")
    if progress is not None:
        row["progress_m"] = float(progress)
    for ch, v in (info.get("episode_costs") or {}).items():
        # in the unit of each budget (constraint.cost_normalization)
        row[cost_column(ch, "sum")] = float(v)
        row[cost_column(ch, "per_step")] = float(v) / steps
        if progress is not None:
            row[cost_column(ch, "per_metre")] = float(v) / max(float(progress), MIN_PROGRESS_M)
    return row


def _env_dt(env: Any, info: dict[str, Any]) -> float:
    """Seconds per env step: ``env.unwrapped.dt``, its ``config.dt``, the EgoStep's
    ``context["dt"]``, else 1.0."""
    base = env.unwrapped
    for dt in (getattr(base, "dt", None), getattr(getattr(base, "config", None), "dt", None)):
        if isinstance(dt, (int, float)):
            return float(dt)
    ego = info.get("ego_step")
    if ego is not None and "dt" in getattr(ego, "context", {}):
        return float(ego.context["dt"])
    return 1.0


def evaluate_run(
    run_dir: str | Path,
    *,
    episodes: int | None = None,
    seed: int | None = None,
    deterministic: bool | None = None,
    csv_dir: str | Path | None = None,
    overrides: list[str] | None = None,
) -> EvalResult:
    """Evaluate the policy saved in ``run_dir`` and write CSVs (default into ``run_dir``).

    Co-trained runs are scored with the predictor they trained against
    (``RUN_DIR/predictor.pt``).
    """
    run_dir = Path(run_dir)
    model, cfg, predictor, multipliers, observe = load_run(run_dir, overrides)
    kw = dict(episodes=episodes, seed=seed, deterministic=deterministic,
              obs_normalizer=observe)  # fmt: skip
    if cfg.n_controlled > 1:  # several cars per world: the batched simulator's slots
        from bystander.agents.heldout import evaluate_batched
        from bystander.agents.training import build_predictor

        if predictor is None and cfg.predictor.kind != "none":
            predictor = build_predictor(cfg)
        result = evaluate_batched(model, cfg, predictor=predictor, **kw)
    else:
        result = evaluate_policy(model, cfg, predictor=predictor, multipliers=multipliers, **kw)
    result.write_csv(csv_dir if csv_dir is not None else run_dir)
    return result


def load_run(run_dir: str | Path, overrides: list[str] | None = None) -> tuple[Any, ...]:
    """(model, config, predictor, multipliers, observation function) of a saved run.

    Co-trained runs get the predictor they trained against (``predictor.pt``), else
    ``None``; the multipliers are the final checkpoint's; the observation function is
    :func:`~bystander.agents.conditioning.run_observations`."""
    from bystander.agents.conditioning import run_observations
    from bystander.agents.training import build_multipliers, load_policy
    from bystander.config import load_config

    run_dir = Path(run_dir)
    model, cfg = load_policy(run_dir)
    if overrides:
        cfg = load_config(base=cfg.to_dict(), overrides=overrides)
    predictor = None
    if cfg.predictor.kind in COTRAINED_KINDS and (run_dir / "predictor.pt").is_file():
        from bystander.agents.training import load_trained_predictor

        predictor = load_trained_predictor(cfg, run_dir / "predictor.pt")
    multipliers = build_multipliers(cfg)
    _load_final_multipliers(run_dir, multipliers)
    return model, cfg, predictor, multipliers, run_observations(run_dir, cfg, multipliers)


def _load_final_multipliers(run_dir: Path, multipliers: dict[str, Any]) -> None:
    if not multipliers:
        return
    import json

    from bystander.agents.checkpoint import find_checkpoint

    try:
        ck = find_checkpoint(run_dir)
    except ValueError:
        return
    path = ck / "multipliers.json"
    if path.is_file():
        for k, state in json.loads(path.read_text()).items():
            if k in multipliers:
                multipliers[k].load_state_dict(state)


def format_summary(result: EvalResult, keys: list[str] | None = None) -> str:
    """A small text table ``metric  mean  [ci_low, ci_high]``."""
    lines = []
    for k, s in result.summary.items():
        if keys is not None and k not in keys:
            continue
        lines.append(
            f"{k:28s} {s['mean']:10.4g}  [{s['ci_low']:.4g}, {s['ci_high']:.4g}]  n={int(s['n'])}"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------- rendering


def latest_predictions(tracker: Any) -> list[dict[str, Any]]:
    """Predictions made at the tracker's latest ego state, in the world frame.

    One dict per observer that saw the ego at that state: ``observer_id``,
    ``observer_type``, ``pose`` ``(3,)`` (x [m], y [m], heading [rad]) and ``path``
    ``(H, 2)`` metres (first mode of a multi-modal prediction). See
    :meth:`bystander.envs.tracker.PredictabilityTracker.latest_predictions`.
    """
    preds = tracker.latest_predictions()
    for p in preds:
        p["path"] = p["path"][:, :2]
    return preds


_TYPE_COLOURS = {
    "car": (80, 160, 255),
    "pedestrian": (255, 210, 60),
    "cyclist": (90, 230, 120),
}


class PredictionOverlay:
    """Env overlay ``fn(surface, world_to_px)``: each observer's guess, and a HUD.

    Each observer that saw the ego at the latest step draws its predicted trajectory
    (type colour; a dot at the end) from the ego, with a thin line from the observer
    to the start, over the env's own drawing of the ego's real past path. The HUD (top
    left, below the env's status line) shows the step's reward components, costs,
    lambda and predictability; update it with :meth:`update` after each step.
    """

    def __init__(self, tracker: Any) -> None:
        self.tracker = tracker
        self.info: dict[str, Any] = {}
        self.reward = 0.0
        self.total = 0.0
        self.font: Any = None

    def update(self, reward: float, info: dict[str, Any]) -> None:
        self.reward = float(reward)
        self.total += float(reward)
        self.info = info

    def hud_lines(self) -> list[str]:
        info = self.info
        lines = [f"reward {self.reward:+.3f}  return {self.total:+.2f}"]
        comps = info.get("rewards") or {}
        if comps:
            lines.append("  ".join(f"{k} {v:+.2f}" for k, v in comps.items()))
        costs = info.get("costs") or {}
        if costs:
            lines.append("cost " + "  ".join(f"{k} {v:.2f}" for k, v in costs.items()))
        lams = info.get("lambdas") or {}
        if lams:
            lines.append("lambda " + "  ".join(f"{k} {v:.3f}" for k, v in lams.items()))
        if "predictability" in info:
            lines.append(
                f"predictability {info['predictability']:+.2f} m  "
                f"({info.get('observers_scored', 0)} observers scored)"
            )
        if info.get("escalated"):
            lines.append("ESCALATED")
        return lines

    def __call__(self, surface: Any, world_to_px: Any) -> None:
        import pygame

        for item in latest_predictions(self.tracker):
            colour = _TYPE_COLOURS.get(item["observer_type"], (240, 120, 240))
            px = world_to_px(item["path"])
            pts = [tuple(q) for q in px.tolist()]
            if item["pose"] is not None:
                start = tuple(world_to_px(item["pose"][:2]).tolist())
                pygame.draw.line(surface, (*colour,), start, pts[0], 1)
            if len(pts) > 1:
                pygame.draw.lines(surface, colour, False, pts, 2)
            pygame.draw.circle(surface, colour, pts[-1], 3)
        if self.font is None:
            if not pygame.font.get_init():
                pygame.font.init()
            self.font = pygame.font.Font(None, max(14, surface.get_height() // 42))
        y = 6 + self.font.get_linesize() + 2
        for line in self.hud_lines():
            img = self.font.render(line, True, (255, 255, 255))
            bg = pygame.Surface((img.get_width() + 6, img.get_height() + 2), pygame.SRCALPHA)
            bg.fill((0, 0, 0, 150))
            surface.blit(bg, (3, y - 1))
            surface.blit(img, (6, y))
            y += self.font.get_linesize()


def render_policy(
    policy: Any,
    cfg: RunConfig,
    *,
    out: str | Path | None,
    seed: int | None = None,
    max_steps: int | None = None,
    human: bool = False,
    predictor: Any = None,
    obs_normalizer: Any = None,
    multipliers: dict[str, Any] | None = None,
) -> tuple[Path | None, dict[str, float]]:
    """Run one episode of ``policy`` with the prediction overlay; write a GIF/MP4.

    Args:
        policy: SB3-style ``predict``.
        cfg: Run config (``render`` section for defaults: seed, max_steps, fps, every).
        out: ``.gif`` or ``.mp4`` path (``None`` with ``human=True``: a window only).
        human: Render in a window at the env's ``render_fps`` instead of to a file.

    Returns:
        The written path (or ``None``) and ``{"steps", "return", "arrived", "crashed"}``.
    """
    from bystander.agents.stack import make_env
    from bystander.agents.training import build_multipliers, build_predictor
    from bystander.envs.contract import find_layer
    from bystander.envs.predictability import PredictabilityReward

    if not human and out is None:
        raise ValueError("out: expected a .gif or .mp4 path (or human=True)")
    if out is not None and Path(out).suffix.lower() not in (".gif", ".mp4"):
        raise ValueError(f"out: expected a .gif or .mp4 file name, got {str(out)!r}")
    if out is not None:  # before the episode is rolled out: an OSError naming the path
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    seed = cfg.render.seed if seed is None else seed
    max_steps = cfg.render.max_steps if max_steps is None else max_steps
    if predictor is None and cfg.predictor.kind != "none":
        predictor = build_predictor(cfg)
    env = make_env(
        cfg,
        predictor=predictor,
        multipliers=multipliers or build_multipliers(cfg),
        render_mode="human" if human else "rgb_array",
    )
    overlay = None
    if predictor is not None:
        overlay = PredictionOverlay(find_layer(env, PredictabilityReward).tracker)
    base = env.unwrapped
    if overlay is not None:
        if not hasattr(base, "add_overlay"):
            raise ValueError(f"env {cfg.env.id} has no add_overlay(fn) hook for predictions")
        base.add_overlay(overlay)
    frames: list[np.ndarray] = []
    stats = {"steps": 0.0, "return": 0.0, "arrived": 0.0, "crashed": 0.0}
    try:
        obs, info = env.reset(seed=seed)
        if overlay is not None:
            overlay.update(0.0, info)
        if not human:
            frames.append(env.render())
        for step in range(max_steps):
            o = obs_normalizer(obs) if obs_normalizer is not None else obs
            action, _ = policy.predict(o, deterministic=cfg.eval.deterministic)
            obs, reward, terminated, truncated, info = env.step(action)
            if overlay is not None:
                overlay.update(float(reward), info)
            stats["steps"] += 1
            stats["return"] += float(reward)
            if human:
                env.render()
            elif step % cfg.render.every == 0 or terminated or truncated:
                frames.append(env.render())
            if terminated or truncated:
                break
        stats["arrived"] = float(bool(info.get("arrived", False)))
        stats["crashed"] = float(bool(info.get("crashed", False)))
    finally:
        env.close()
    if human:
        return None, stats
    from bystander.envs.intersection.render import save_video

    fps = max(1, cfg.render.fps // cfg.render.every)
    path = Path(save_video(frames, out, fps=fps))  # type: ignore[arg-type]
    return path, stats


def render_run(
    run_dir: str | Path,
    *,
    out: str | Path | None,
    seed: int | None = None,
    max_steps: int | None = None,
    human: bool = False,
) -> Path | None:
    """Render the policy saved in ``run_dir`` (see :func:`render_policy`)."""
    model, cfg, predictor, multipliers, observe = load_run(Path(run_dir))
    path, _ = render_policy(
        model, cfg, out=out, seed=seed, max_steps=max_steps, human=human,
        predictor=predictor, obs_normalizer=observe, multipliers=multipliers,
    )  # fmt: skip
    return path
