"""``per_metre`` cost budgets: waiting and standing still cannot game them (a
stop-then-go episode costs what driving at once costs; a stopped car pays its whole
cost), where ``per_step`` rewards both."""

from __future__ import annotations

import numpy as np
import pytest

from bystander.agents.evaluation import evaluate_policy
from bystander.agents.predictors import ConstantVelocityPredictor
from bystander.agents.scripted import ConstantSpeedDriver, StopDriver
from bystander.config import load_config
from bystander.envs.constraints import MIN_PROGRESS_M, episode_cost_for_budget


class StopThenGo:
    """Stand still for ``wait`` steps, then drive as ``ConstantSpeedDriver(speed)``."""

    def __init__(self, wait: int, speed: float) -> None:
        self.wait, self.t = wait, 0
        self.stop, self.go = StopDriver(), ConstantSpeedDriver(speed)

    def predict(self, obs, deterministic=True):
        self.t += 1
        return (self.stop if self.t <= self.wait else self.go).predict(obs)


def _rows(policy_factory, cfg, seeds):
    pred = ConstantVelocityPredictor(horizon=10, history=8)
    rows = []
    for s in seeds:  # one episode per seed, a fresh policy (its clock) each
        rows += evaluate_policy(policy_factory(), cfg, episodes=1, seed=s, predictor=pred).episodes
    return rows


def test_waiting_lowers_the_per_step_cost_but_not_the_per_metre_cost():
    cfg = load_config(overrides=["env.config.n_cars=0", "env.config.max_cycles=400"])
    seeds = range(100, 106)
    go = _rows(lambda: ConstantSpeedDriver(9.0), cfg, seeds)
    wait = _rows(lambda: StopThenGo(60, 9.0), cfg, seeds)
    both = [(a, b) for a, b in zip(go, wait, strict=True) if a["success"] and b["success"]]
    assert len(both) >= 4
    step_go = np.mean([a["cost_predictability_per_step"] for a, _ in both])
    step_wait = np.mean([b["cost_predictability_per_step"] for _, b in both])
    metre_go = np.mean([a["cost_predictability_per_metre"] for a, _ in both])
    metre_wait = np.mean([b["cost_predictability_per_metre"] for _, b in both])
    assert step_wait < 0.8 * step_go  # per step, waiting looks more predictable
    assert metre_wait == pytest.approx(metre_go, rel=0.15)  # per metre, it does not
    assert min(b["stand_still_fraction"] for _, b in both) > 0.2


def test_a_car_that_stops_pays_more_per_metre_than_one_that_drives():
    cfg = load_config()
    stop = _rows(StopDriver, cfg, range(100, 106))
    drive = _rows(lambda: ConstantSpeedDriver(9.0), cfg, range(100, 106))
    assert all(r["progress_m"] < 5.0 for r in stop)  # it rolls a few metres while braking
    per_step = [np.mean([r["cost_predictability_per_step"] for r in x]) for x in (stop, drive)]
    per_metre = [np.mean([r["cost_predictability_per_metre"] for r in x]) for x in (stop, drive)]
    assert per_step[0] < 0.1 * per_step[1]  # per step, the stopped car looks predictable
    assert per_metre[0] > per_metre[1]  # per metre, it does not


def test_the_per_metre_rule_and_its_floor():
    assert episode_cost_for_budget(3.0, 10, "per_metre", progress=0.0) == 3.0 / MIN_PROGRESS_M
    assert episode_cost_for_budget(3.0, 10, "per_metre", progress=30.0) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="episode_progress"):
        episode_cost_for_budget(3.0, 10, "per_metre")
    with pytest.raises(ValueError, match="progress"):
        episode_cost_for_budget(3.0, 10, "per_metre", progress=-1.0)


def _episode_weighted(vec_env: str, margin: float, action: int) -> tuple[float, np.ndarray, list]:
    """Run 2 worlds of the training stack (per-metre Lagrangian, budget 0.3, lambda 0.5,
    ``credit_margin``) with one action until both episodes end; return lambda, each
    world's summed ``lambda * counted cost`` (from the rewards and penalties the stack
    reports) and the final infos."""
    from bystander.agents.stack import build_vec_env
    from bystander.agents.training import build_multipliers, build_predictor
    from bystander.envs.contract import step_arrays

    cfg = load_config(overrides=[
        "env.config.max_cycles=40", "constraint.mode=lagrangian",
        "constraint.channel=predictability", "constraint.cost_normalization=per_metre",
        "constraint.budget=0.3", "constraint.lambda_init=0.5",
        f"constraint.credit_margin={margin}",
        "train.n_envs=2", f"train.vec_env={vec_env}", "train.normalize=false",
    ])  # fmt: skip
    multipliers = build_multipliers(cfg)
    venv = build_vec_env(cfg, build_predictor(cfg), multipliers)
    venv.reset()
    lam = multipliers["predictability"].value
    penalty, rewards = np.zeros(2), np.zeros(2)
    done = np.zeros(2, dtype=bool)
    infos: list = [None, None]
    for _ in range(40):
        _, r, dones, step_infos = venv.step(np.full(2, action, dtype=np.int64))
        live = ~done
        rewards[live] += r[live]
        if vec_env == "dummy":  # full infos, every step
            pen = np.array([info["rewards"]["penalty"] for info in step_infos])
        else:  # lean infos: the step's arrays
            pen = step_arrays(venv)["penalty"]
        penalty[live] += pen[live]
        for i in np.flatnonzero(dones & live):
            infos[i] = step_infos[i]
        done |= dones
        if done.all():
            break
    assert done.all()
    # new = (r - w) / (1 + lam) and penalty = new - r: w = -penalty - lam * new
    return lam, -penalty - lam * rewards, infos


@pytest.mark.parametrize("vec_env", ["batched", "dummy"])
def test_the_training_stack_credits_the_budget_and_its_margin_per_metre(vec_env):
    """``constraint.credit_margin`` on the real stack: an episode is charged
    lambda (C - d (1 + margin) P): each metre driven earns lambda d margin more than with
    the plain credit (the sums are read back from the rewards and penalties the stack
    reports)."""
    for margin in (0.0, 0.3):
        lam, weighted, infos = _episode_weighted(vec_env, margin, action=2)  # FASTER
        for info, w in zip(infos, weighted, strict=True):
            cost = info["episode_costs"]["predictability"]
            progress = info["episode_progress"]
            assert progress > 20.0
            expected = lam * (cost - 0.3 * (1 + margin) * progress)
            assert w == pytest.approx(expected, rel=1e-4)
