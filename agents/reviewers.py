"""Driving reviewer for :class:`bystander.envs.review.ReviewGate`.

:class:`DrivingReviewer` estimates, before an action runs, how costly it would be:

1. **Roll out.** A copy of the intersection simulator (``env.unwrapped.sim``, an
   :class:`~bystander.envs.intersection.sim.IntersectionSim`) is stepped ``H`` times:
   the proposed action first, then ``continuation`` (default: the discrete ``KEEP``
   meta-action, or holding the continuous controls). The ego's kinematics, the
   scripted traffic's reactions and the collision checks are the simulator's own; the
   real env (its state and its random generator) is untouched.
2. **Surprise.** Every observer that sees the ego now predicts its next ``H``
   positions from its view (the ego's last ``history`` positions in the observer's
   frame, masked where the reviewer did not record them) with the observer type's
   predictor; the surprise is the mean :meth:`Predictor.error` (ADE, metres) of these
   predictions against the rolled-out path. No observer sees the ego: surprise 0.
3. **Collision risk.** The largest per-step collision / near-miss cost the simulator
   reports for the ego during the rollout (``collision_cost`` for a crash).

The estimate is ``predictability_weight * surprise + collision_weight * risk``; the
parts of the last estimate are kept in :attr:`DrivingReviewer.last`.

The reviewer is independent of the wrapper chain: it keeps its own record of the
ego's positions, one per simulator step, taken each time it is asked (the gate asks
on every step). A step it was not asked at is an unseen (masked) history entry; a
new episode (the simulator's step counter going back) clears the record. It never
learns and runs under ``torch.no_grad()``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np

from bystander.envs.contract import FRAMES, Predictor, Views

__all__ = ["DrivingReviewer", "LeastCostFallback", "build_driving_reviewer", "find_sim"]


def find_sim(env: Any) -> Any:
    """The :class:`IntersectionSim` behind ``env`` (``env.unwrapped.sim`` or ``env.sim``)."""
    for candidate in (getattr(env, "unwrapped", None), env):
        sim = getattr(candidate, "sim", None)
        if sim is not None and hasattr(sim, "observer_view") and hasattr(sim, "step"):
            return sim
    raise TypeError(
        f"env: expected an intersection env exposing .unwrapped.sim (an IntersectionSim), "
        f"got {type(env).__name__}"
    )


def _clone(sim: Any) -> Any:
    """Deep copy of the simulator state; the static road network and config are shared."""
    memo = {id(sim.road): sim.road, id(sim.config): sim.config}
    return copy.deepcopy(sim, memo)


class DrivingReviewer:
    """Estimated cost of a proposed ego action on the intersection (see module docstring).

    Args:
        predictors: One :class:`Predictor` for every observer, or a dict observer type ->
            predictor (key ``"*"``: default). Predictors need an integer ``horizon``.
        predictability_weight: Weight of the surprise (metres of ADE), >= 0.
        collision_weight: Weight of the collision risk (the env's collision cost), >= 0.
        continuation: Action applied after the proposed one during the rollout: ``None``
            (discrete: ``KEEP``; continuous: repeat the proposed action) or a fixed action.
        world: Simulator world of the ego (``0`` for the Gymnasium view).
        ego: Controlled-car slot of the ego (``0`` for the Gymnasium view).
    """

    def __init__(
        self,
        predictors: Predictor | Mapping[str, Predictor],
        *,
        predictability_weight: float = 1.0,
        collision_weight: float = 1.0,
        continuation: Any = None,
        world: int = 0,
        ego: int = 0,
    ) -> None:
        if isinstance(predictors, Mapping):
            if not predictors:
                raise ValueError(
                    "predictors: expected a Predictor or a non-empty dict type -> Predictor"
                )
            self.predictors = {str(k): p for k, p in predictors.items()}
        else:
            self.predictors = {"*": predictors}
        for key, p in self.predictors.items():
            h = getattr(p, "horizon", None)
            if isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1:
                raise ValueError(f"predictors[{key!r}].horizon: expected an int >= 1, got {h!r}")
            hist = getattr(p, "history", None)
            if isinstance(hist, bool) or not isinstance(hist, (int, np.integer)) or hist < 1:
                raise ValueError(f"predictors[{key!r}].history: expected an int >= 1, got {hist!r}")
        for name, w in (
            ("predictability_weight", predictability_weight),
            ("collision_weight", collision_weight),
        ):
            if not (np.isfinite(w) and w >= 0):
                raise ValueError(f"{name}: expected a finite number >= 0, got {w!r}")
        self.predictability_weight = float(predictability_weight)
        self.collision_weight = float(collision_weight)
        self.continuation = continuation
        self.world, self.ego = int(world), int(ego)
        self.horizon = max(int(p.horizon) for p in self.predictors.values())
        self.history = max(int(p.history) for p in self.predictors.values())
        self.last: dict[str, float] = {}
        self.reset()

    def reset(self) -> None:
        """Forget the recorded ego positions (done automatically on a new episode)."""
        self._t: list[int] = []
        self._xy: list[tuple[float, float]] = []

    def __call__(self, env: Any, action: Any) -> float:
        return self.estimate(env, action)

    # ------------------------------------------------------------------ parts
    def _record(self, sim: Any) -> None:
        w, c = self.world, self.ego
        t = int(sim.t[w])
        xy = (float(sim.x[w, c]), float(sim.y[w, c]))
        if self._t and t <= self._t[-1]:
            if t == self._t[-1] and xy == self._xy[-1]:
                return  # asked again at the same state (e.g. an escalated step)
            self.reset()
        self._t.append(t)
        self._xy.append(xy)
        keep = self.history
        if len(self._t) > 4 * keep:
            del self._t[:-keep], self._xy[:-keep]

    def _history(self, now: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """World positions ``(length, 2)`` for steps ``now-length+1 .. now`` and their mask."""
        states = np.zeros((length, 2))
        mask = np.zeros(length, bool)
        for t, xy in zip(self._t[-length:], self._xy[-length:], strict=True):
            i = t - (now - length + 1)
            if 0 <= i < length:
                states[i], mask[i] = xy, True
        if mask.any():  # unseen entries hold the nearest recorded value (ignored anyway)
            states[~mask] = states[np.flatnonzero(mask)[0]]
        return states, mask

    def _sim_actions(self, sim: Any, action: Any) -> np.ndarray:
        n, c = sim.N, sim.C
        if sim.continuous:
            out = np.zeros((n, c, 2))
            out[self.world, self.ego] = np.asarray(action, dtype=np.float64).reshape(2)
        else:
            from bystander.envs.intersection.views import keep_action

            out = np.full((n, c), keep_action(sim.config), dtype=np.int64)
            out[self.world, self.ego] = int(np.asarray(action).reshape(()))
        return out

    def rollout(self, env: Any, action: Any) -> tuple[np.ndarray, float]:
        """Ego world positions ``(H, 2)`` after the action and the rollout's collision risk.

        After the ego's episode ends in the rollout, its last position is repeated.
        """
        sim = _clone(find_sim(env))
        w, c = self.world, self.ego
        if sim.continuous:
            follow = action if self.continuation is None else self.continuation
        else:
            from bystander.envs.intersection.views import keep_action

            follow = keep_action(sim.config) if self.continuation is None else self.continuation
        first, then = self._sim_actions(sim, action), self._sim_actions(sim, follow)
        path = np.zeros((self.horizon, 2))
        risk = 0.0
        done = bool(sim.done[w, c])
        for k in range(self.horizon):
            if not done:
                out = sim.step(first if k == 0 else then)
                risk = max(risk, float(out.cost[w, c]))
                done = bool(out.terminated[w, c] or out.truncated[w])
                path[k] = sim.x[w, c], sim.y[w, c]
            else:
                path[k] = path[k - 1] if k else (sim.x[w, c], sim.y[w, c])
        return path, risk

    def surprise(self, env: Any, path: np.ndarray) -> tuple[float, int]:
        """Mean prediction error (metres) of the observers that see the ego now, and their count."""
        sim = find_sim(env)
        w, c = self.world, self.ego
        view = sim.observer_view(w, c)
        seen = np.flatnonzero(view["visible"])
        if seen.size == 0 or not self._t:
            return 0.0, 0
        now = int(sim.t[w])
        frame = FRAMES["rigid2d"]
        total, count = 0.0, 0
        groups: dict[int, tuple[Any, list[int]]] = {}
        for i in seen.tolist():
            p = self.predictors.get(str(view["types"][i]), self.predictors.get("*"))
            if p is not None:
                groups.setdefault(id(p), (p, []))[1].append(i)
        for p, idx_list in groups.values():
            idx = np.asarray(idx_list)
            hist, mask = self._history(now, int(p.history))
            poses = view["poses"][idx]
            b = len(idx)
            views = Views(
                states=frame.to_frame(np.broadcast_to(hist, (b, *hist.shape)), poses),
                mask=np.broadcast_to(mask, (b, mask.size)).copy(),
                observer_types=np.asarray(view["types"][idx], dtype=object),
                observer_ids=view["ids"][idx],
                dt=float(sim.config.dt),
            )
            truth = frame.to_frame(
                np.broadcast_to(path[: int(p.horizon)], (b, int(p.horizon), 2)), poses
            )
            errors = np.asarray(p.error(p.predict(views), truth, views), dtype=np.float64)
            total += float(errors.sum())
            count += b
        return (total / count if count else 0.0), count

    def estimate(self, env: Any, action: Any) -> float:
        """Estimated cost of ``action`` in ``env``'s current state (see module docstring)."""
        try:
            import torch

            no_grad = torch.no_grad()
        except ImportError:  # pragma: no cover - torch is a dependency
            import contextlib

            no_grad = contextlib.nullcontext()
        with no_grad:
            sim = find_sim(env)
            self._record(sim)
            path, risk = self.rollout(env, action)
            surprise, observers = self.surprise(env, path)
        cost = self.predictability_weight * surprise + self.collision_weight * risk
        self.last = {
            "surprise": surprise,
            "collision": risk,
            "observers": float(observers),
            "cost": cost,
        }
        return float(cost)


class LeastCostFallback:
    """``ReviewGate`` fallback: of a few safe candidate actions, the one the reviewer
    rates cheapest (ties: the first). Discrete candidates: ``KEEP``, ``SLOWER``;
    continuous: coast straight ``(0, 0)``, brake gently straight ``(-0.5, 0)``.

    Args:
        reviewer: The reviewer that rates the candidates (normally the gate's).
        candidates: Override the candidate actions.
    """

    def __init__(self, reviewer: DrivingReviewer, candidates: list[Any] | None = None) -> None:
        self.reviewer = reviewer
        self.candidates = candidates

    def _candidates(self, env: Any) -> list[Any]:
        if self.candidates is not None:
            return list(self.candidates)
        if find_sim(env).continuous:
            return [np.zeros(2, dtype=np.float32), np.array([-0.5, 0.0], dtype=np.float32)]
        from bystander.envs.intersection.sim import KEEP, SLOWER
        from bystander.envs.intersection.views import meta_action

        config = find_sim(env).config
        return [meta_action(config, KEEP), meta_action(config, SLOWER)]

    def __call__(self, env: Any, action: Any) -> Any:
        options = self._candidates(env)
        costs = [self.reviewer.estimate(env, a) for a in options]
        return options[int(np.argmin(costs))]


def build_driving_reviewer(
    env: Any, predictor: Predictor | Mapping[str, Predictor] | None = None, **kwargs: Any
) -> tuple[DrivingReviewer, LeastCostFallback]:
    """A :class:`DrivingReviewer` for ``env`` and its :class:`LeastCostFallback`.

    Args:
        env: The intersection env the gate will wrap (checked to expose its simulator).
        predictor: The observers' predictor(s); default constant velocity (horizon 10,
            history 8).
        **kwargs: Passed to :class:`DrivingReviewer` (weights, continuation, ...).

    Returns:
        ``(reviewer, fallback)``, ready for ``ReviewGate(env, reviewer, threshold, fallback)``.
    """
    if find_sim(env).config.action_type == "target_speed":  # (find_sim fails early too)
        raise ValueError(
            "env.config.action_type='target_speed': the review gate rolls the ego forward "
            "with meta-actions (KEEP, SLOWER); expected 'discrete', 'factored' or 'continuous'"
        )
    if predictor is None:
        from bystander.agents.predictors import ConstantVelocityPredictor

        predictor = ConstantVelocityPredictor()
    reviewer = DrivingReviewer(predictor, **kwargs)
    return reviewer, LeastCostFallback(reviewer)
