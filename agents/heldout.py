"""Held-out evaluation of a driving ego: all episodes at once on the batched simulator.

:func:`evaluate_batched` plays ``episodes`` greedy (or sampled) episodes of a policy on
fixed seeds ``seed, seed + 1, ...``, one world per episode of
:class:`~bystander.envs.intersection.vec_env.IntersectionVecEnv` (world ``i`` is the
single env seeded ``seed + i``, so the episodes are those of
:func:`~bystander.agents.evaluation.evaluate_policy`), with the observers scored on the
array path. One step of the simulator and one policy call serve every episode, so 100
episodes cost about what one does on the single env.

:class:`HeldOutEvaluation` runs it during training every ``eval.every`` env steps on
``eval.heldout_episodes`` seeds from ``eval.seed``, logs ``heldout/*`` to the run's
logger (TensorBoard and ``progress.csv``) and keeps every evaluation in
``RUN_DIR/logs/heldout.csv`` (one row per evaluation, with its step). Costs and
budgets are judged on these figures, not on training rollouts. With
``constraint.lambda_step: search`` each evaluation is preceded by a lambda search on
tuning seeds of its own (:meth:`HeldOutEvaluation.search`, ``logs/lambda_search.csv``).

Figures per episode (as :func:`evaluate_policy`'s rows, see its module): ``success``,
``collision``, ``steps``, ``task_return``, ``episode_cost``, ``cost_<channel>`` and
``cost_<channel>_per_step``, ``stand_still_fraction`` (steps at a speed below
:data:`~bystander.agents.stand_still.STAND_STILL_SPEED` while the traffic does not hold
the ego: :func:`~bystander.agents.stand_still.standing_still`), the route figures
(:mod:`bystander.agents.route_stats`: ``driven_m``, ``route_overhead``, turn counts;
the summary's ``turn_entropy_bits``) and ``ade`` (the observers' mean error over the
episode, metres).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecNormalize

from bystander.agents.conditioning import fixed_lambda_observations, policy_observations
from bystander.agents.evaluation import (
    EvalResult,
    episode_row,
    eval_settings,
    summarize,
)
from bystander.agents.route_stats import RouteLog
from bystander.agents.stand_still import standing_still
from bystander.config import RunConfig
from bystander.envs.constraints import cost_column, multiplier_key
from bystander.envs.contract import find_layer, step_arrays
from bystander.sweeps import write_csv

__all__ = [
    "HELDOUT_METRICS",
    "SEARCH_SEED_OFFSET",
    "HeldOutEvaluation",
    "evaluate_batched",
    "evaluate_lambdas",
]

HELDOUT_METRICS = (
    "success", "collision", "off_route", "stand_still_fraction", "episode_cost", "ade",
    "progress_m",
)  # fmt: skip
"""Per-evaluation means logged by :class:`HeldOutEvaluation` (plus every
``cost_<channel>_per_step`` and ``cost_<channel>_per_metre``)."""

SEARCH_SEED_OFFSET = 1_000_000
"""A lambda search plays its episodes on tuning seeds ``eval.seed + SEARCH_SEED_OFFSET``
on: apart from the held-out seeds (``eval.seed`` on) and the training worlds'
(``train.seed`` on)."""


def evaluate_batched(
    policy: Any,
    cfg: RunConfig,
    *,
    episodes: int | None = None,
    seed: int | None = None,
    seeds: Any = None,
    deterministic: bool | None = None,
    predictor: Any = None,
    obs_normalizer: Any = None,
    max_steps: int = 100_000,
) -> EvalResult:
    """Play ``episodes`` episodes of ``policy`` at once, world ``i`` on seed ``seed + i``
    (or on ``seeds[i]``).

    Args:
        policy: Anything with SB3's ``predict(obs (N, ...), deterministic=...)``.
        cfg: The run config (``env.config``; the env must be ``bystander/Intersection-v0``
            without ``review`` or ``env.max_episode_steps``, as the batched stack).
        episodes: Number of episodes ``N`` (default ``eval.episodes``); with
            ``n_controlled = C`` cars per world, ``N * C`` rows (row ``w * C + c``: car
            ``c`` of the episode on seed ``seed + w``; ``steps`` are its steps in play).
        seed: First seed (default ``eval.seed``).
        seeds: Instead of ``episodes`` and ``seed`` (which are then refused): one seed
            per episode, ``(N,)`` ints (repeats allowed: the same episode played again,
            e.g. at another lambda).
        deterministic: Greedy actions (default ``eval.deterministic``).
        predictor: The observers' predictor (``None``: no predictability figures).
        obs_normalizer: Function applied to observations ``(N, ...)`` before ``predict``.
        max_steps: Safety cap on steps per episode.

    Returns:
        One row per episode, in world order (``seed + i`` or ``seeds[i]``), and their
        summary.
    """
    from bystander.agents.stack import make_intersection_vec_env
    from bystander.envs.intersection.vec_env import IntersectionVecEnv

    if seeds is not None and (episodes is not None or seed is not None):
        raise ValueError("seeds: expected either seeds or episodes / seed, got both")
    n, first, greedy = eval_settings(cfg, episodes, seed, deterministic)
    world_seeds = first + np.arange(n) if seeds is None else np.asarray(seeds, np.int64)
    n = len(world_seeds)
    if cfg.review.enabled or cfg.env.max_episode_steps is not None:
        raise ValueError(
            "evaluate_batched: review.enabled and env.max_episode_steps need the "
            "single-env evaluation (evaluate_policy)"
        )
    venv = make_intersection_vec_env(n, cfg.env.config, seed=first, predictors=predictor)
    inner = find_layer(venv, IntersectionVecEnv)
    if seeds is not None:
        inner.seed(world_seeds.tolist())
    sim = inner.sim
    dt = float(venv.get_attr("dt", [0])[0])
    cars = venv.num_envs // n  # several controlled cars per world: one row per car
    rows: list[dict[str, float] | None] = [None] * venv.num_envs
    steps = np.zeros(venv.num_envs, dtype=np.int64)
    still = np.zeros(venv.num_envs, dtype=np.int64)
    try:
        obs = venv.reset()
        routes = RouteLog(venv.num_envs, dt)
        routes.start(obs)
        while any(r is None for r in rows):
            o = obs_normalizer(obs) if obs_normalizer is not None else obs
            actions, _ = policy.predict(o, deterministic=greedy)
            obs, _, dones, infos = venv.step(actions)
            arrays = step_arrays(venv)
            open_ = np.array([r is None for r in rows])
            playing = open_ & arrays.get("active", True)  # a finished car's steps don't count
            steps += playing
            still += playing & standing_still(arrays["speed"], sim, fresh=np.asarray(dones))
            routes.step(obs, arrays["speed"], playing, ended=np.asarray(dones))
            for i in np.flatnonzero(open_ & (np.asarray(dones) | (steps >= max_steps))):
                w = i // cars
                rows[i] = row = _row(
                    i, int(world_seeds[w]), infos[i], int(steps[i]), int(still[i]), dt
                )
                row.update(routes.row(i, row["success"] > 0, row.get("progress_m")))
    finally:
        venv.close()
    episodes_ = [r for r in rows if r is not None]
    return EvalResult(episodes=episodes_, summary=summarize(episodes_))


def evaluate_lambdas(
    policy: Any,
    cfg: RunConfig,
    lambdas: Any,
    seeds: Any,
    *,
    predictor: Any = None,
    normalize: Any = None,
) -> list[EvalResult]:
    """A lambda-conditioned policy's answer to each of ``lambdas``, on common episodes.

    Plays the episodes on ``seeds`` once per lambda, all at once with
    :func:`evaluate_batched` (world ``m P + j`` shows ``lambdas[j]`` on ``seeds[m]``), so
    the figures of two lambdas differ only by what the policy does, not by the seeds.

    Args:
        policy: The conditioned policy (SB3 ``predict``).
        cfg: The run config.
        lambdas: ``(P,)`` lambdas > 0.
        seeds: ``(M,)`` episode seeds, the same for every lambda.
        predictor: The observers' predictor.
        normalize: The run's ``VecNormalize.normalize_obs``, if any (applied after the
            lambda feature is appended, as in training).

    Returns:
        One :class:`~bystander.agents.evaluation.EvalResult` per lambda, rows in the
        order of ``seeds``.
    """
    lams = np.asarray(lambdas, np.float64).ravel()
    seeds = np.asarray(seeds, np.int64).ravel()
    p = lams.size
    result = evaluate_batched(
        policy,
        cfg,
        seeds=np.repeat(seeds, p),
        predictor=predictor,
        obs_normalizer=fixed_lambda_observations(np.tile(lams, seeds.size), normalize),
    )
    return [
        EvalResult(episodes=rows, summary=summarize(rows))
        for rows in (result.episodes[j::p] for j in range(p))
    ]


def _row(i: int, seed: int, info: dict[str, Any], steps: int, still: int, dt: float) -> dict:
    """:func:`~bystander.agents.evaluation.episode_row` plus the observers' ``ade`` from
    the episode's info (NaN when no prediction was scored, as ``evaluate_policy``)."""
    row = episode_row(i, seed, info, steps, still, dt)
    if "episode_prediction_error" in info:
        scored = info.get("episode_observers_scored", 0)
        row["ade"] = float(info["episode_prediction_error"]) if scored else float("nan")
    return row


class HeldOutEvaluation:
    """:func:`evaluate_batched` of a trainer's current policy on the run's held-out seeds,
    every ``every`` env steps; figures to the logger (``heldout/<metric>``, one row of
    ``progress.csv`` per evaluation) and to ``RUN_DIR/logs/heldout.csv``.

    The trainer calls :meth:`due` / :meth:`evaluate` between ``learn`` chunks, where it
    writes checkpoints, so an evaluation at step ``S`` sees the policy of the checkpoint
    of step ``S``.

    With ``constraint.lambda_step: search`` (a lambda-conditioned policy) each
    evaluation first runs :meth:`search`, which sets the multiplier's lambda, and the
    held-out episodes are then played at that lambda: the figures that judge the budget
    come from seeds the lambda was not fit on.

    Args:
        trainer: The :class:`~bystander.agents.training.Trainer` (config, run directory,
            model, master predictor, training VecEnv for observation normalisation).
        every: Env steps between evaluations.
        episodes: Held-out episodes per evaluation.
    """

    def __init__(self, trainer: Any, every: int, episodes: int) -> None:
        self.trainer = trainer
        self.every = int(every)
        self.episodes = int(episodes)
        self.rows: list[dict[str, float]] = []
        self.searches: list[dict[str, float]] = []
        self.next_at = self.every

    def due(self, steps: int) -> bool:
        """Whether an evaluation is due at ``steps`` env steps."""
        return steps >= self.next_at

    def evaluate(self, steps: int) -> dict[str, float]:
        """Run one held-out evaluation now and record it as taken at ``steps``."""
        trainer = self.trainer
        model = trainer.model
        searching = trainer.cfg.constraint.lambda_step == "search"
        if searching:
            self.search(steps)
        result = evaluate_batched(
            model,
            trainer.cfg,
            episodes=self.episodes,
            predictor=trainer.predictor,
            obs_normalizer=policy_observations(
                trainer.cfg, trainer.multipliers, self._normalizer()
            ),
        )
        row: dict[str, float] = {"step": float(steps)}
        for key, stats in result.summary.items():
            if key in HELDOUT_METRICS or (
                key.startswith("cost_") and key.endswith(("_per_step", "_per_metre"))
            ):
                row[key] = stats["mean"]
                model.logger.record(f"heldout/{key}", stats["mean"])
        if trainer.cfg.constraint.signal == "heldout":
            self._update_multipliers(result.summary, step=not searching)
        model.logger.record("time/total_timesteps", steps)  # the row's step, kept on resume
        model.logger.dump(step=steps)
        self.rows.append(row)
        self.next_at = (steps // self.every + 1) * self.every
        write_csv(self.rows, trainer.run_dir / "logs" / "heldout.csv")
        return row

    def search(self, steps: int) -> float:
        """``constraint.lambda_step: search``: set lambda from the policy's cost curve.

        Plays the same ``M = search_episodes`` episodes (greedy unless
        ``eval.deterministic`` is false) at each of ``P = search_points`` lambdas
        log-spaced over ``[lambda_min, lambda_max]`` (:func:`evaluate_lambdas`: world
        ``m P + j`` shows ``grid[j]`` on tuning seed ``eval.seed + SEARCH_SEED_OFFSET +
        k M + m``, ``k`` the searches before this one), hands the mean cost per lambda
        to
        :meth:`~bystander.envs.multipliers.LagrangeMultiplier.solve` and syncs every
        env's copy. Each search is a row of ``logs/lambda_search.csv`` (the step, the
        lambda set and the cost at each grid lambda).

        Common seeds across the grid give the curve's shape without the seeds' own
        spread (an episode's cost per metre varies by about half the mean from seed to
        seed); new seeds at every search keep lambda from being fit to one seed set,
        and the multiplier's ``window`` averages over several.

        Returns:
            The lambda set.
        """
        trainer = self.trainer
        cfg = trainer.cfg
        c = cfg.constraint
        key = multiplier_key(c.channel)
        grid = np.geomspace(c.lambda_min, c.lambda_max, c.search_points)
        first = cfg.eval.seed + SEARCH_SEED_OFFSET + len(self.searches) * c.search_episodes
        results = evaluate_lambdas(
            trainer.model,
            cfg,
            grid,
            first + np.arange(c.search_episodes),
            predictor=trainer.predictor,
            normalize=self._normalizer(),
        )
        name = self._cost_name(key)
        costs = [r.summary[name]["mean"] for r in results]
        lam = trainer.multipliers[key].solve(grid.tolist(), costs)
        trainer.model.logger.record(f"constraint/search_lambda_{key}", lam)
        trainer.sync_multipliers()
        row = {"step": float(steps), "lambda": lam}
        row.update({f"cost@{x:.4g}": float(y) for x, y in zip(grid, costs, strict=True)})
        self.searches.append(row)
        write_csv(self.searches, trainer.run_dir / "logs" / "lambda_search.csv")
        return lam

    def _normalizer(self) -> Any:
        """The training VecEnv's ``normalize_obs`` (``train.normalize``), else ``None``."""
        venv = self.trainer.venv
        return venv.normalize_obs if isinstance(venv, VecNormalize) else None

    def _cost_name(self, key: str) -> str:
        """The held-out figure in the budget's unit for multiplier ``key``:
        ``cost_<channel>_per_step`` / ``_per_metre`` (or the summed ``episode_cost``)."""
        normalization = self.trainer.cfg.constraint.cost_normalization
        if key == "cost" and normalization != "sum":
            raise ValueError(
                "constraint.signal: 'heldout' needs a cost channel with per-step or "
                "per-metre budgets (the held-out rows have per-channel rates)"
            )
        return "episode_cost" if key == "cost" else cost_column(key, normalization)

    def _update_multipliers(self, summary: dict[str, dict[str, float]], step: bool) -> None:
        """``constraint.signal: heldout``: one multiplier step (when ``step``; a search
        has already set lambda) from this evaluation's mean cost in the budget's unit
        (:meth:`_cost_name`), logged as ``constraint/heldout_cost_<key>``; then every
        env's copy is synced."""
        trainer = self.trainer
        for key, m in trainer.multipliers.items():
            value = summary[self._cost_name(key)]["mean"]
            if step:
                m.update(value)
            trainer.model.logger.record(f"constraint/heldout_cost_{key}", value)
            trainer.model.logger.record(f"constraint/lambda_{key}", m.value)
        trainer.sync_multipliers()

    def state_dict(self) -> dict[str, Any]:
        """The evaluations (and searches) so far and the next due step (checkpoints)."""
        return {
            "rows": [dict(r) for r in self.rows],
            "searches": [dict(r) for r in self.searches],
            "next_at": self.next_at,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = [dict(r) for r in state.get("rows", [])]
        self.searches = [dict(r) for r in state.get("searches", [])]
        self.next_at = int(state.get("next_at", self.every))
