"""Batched training stack: N intersection worlds stepped in one simulator call.

``train.vec_env = "batched"`` trains on :class:`IntersectionVecEnv`, an SB3 ``VecEnv``
over one :class:`~bystander.envs.intersection.sim.IntersectionSim` with
``n_worlds = train.n_envs``: one numpy step for all worlds instead of one Python env
per world. The wrappers are the vectorised equivalents of the per-env stack in
:mod:`bystander.agents.training`, built on the same shared code:

    IntersectionVecEnv            obs (N, F); info per world as the Gymnasium view's
    PredictabilityVecWrapper      (bystander.envs.predictability) ONE predictor call
                                  per step for all worlds and observers
    VecMonitor                    episode stats of the task reward
    VecConstraint                 shaped / Lagrangian reward with the shared formulas
                                  (bystander.envs.constraints.shaped_reward /
                                  lagrangian_reward), multipliers by key
    BatchedHooks                  snapshot / restore / sync / co-training pairs, the
                                  same ``env_method`` names as ``TrainingHooks``

Differences from the per-env stack (documented, deliberate): the worlds share one
random generator seeded by ``train.seed``, so a world's episodes depend on the seed of
the whole batch, not on ``seed + rank``; only the ``vector`` observation and the
single-ego Gymnasium view (``n_controlled = 1``) are supported. Evaluation and
rendering always use the Gymnasium env with per-episode seeds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cloudpickle
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecMonitor

from bystander.envs.constraints import Multiplier, lagrangian_reward, shaped_reward
from bystander.envs.contract import EGO_STEP_KEY, EgoStep


class IntersectionVecEnv(VecEnv):
    """SB3 ``VecEnv`` of ``n_worlds`` intersection worlds in one simulator.

    Observations, rewards and infos per world follow the Gymnasium view
    (``bystander/Intersection-v0``): vector observation, reward = sum of the
    components, ``info`` with ``ego_step``, ``rewards``, ``costs`` (``collision``),
    ``cost``, ``crashed``, ``arrived``, ``offroad``, ``left_map``, ``speed``,
    ``route_distance``, ``destination``; at episode end ``episode_cost`` /
    ``episode_costs``, ``terminal_observation`` and ``TimeLimit.truncated`` (SB3). A
    finished world restarts at once; its reset info is in ``reset_infos[i]``.

    Args:
        config: Env config dict (as ``gymnasium.make(..., config=...)``).
        n_worlds: Number of worlds N.
    """

    def __init__(self, config: Mapping[str, Any] | None, n_worlds: int) -> None:
        from bystander.envs.intersection.config import IntersectionConfig
        from bystander.envs.intersection.sim import IntersectionSim
        from bystander.envs.intersection.views import make_spaces

        cfg = IntersectionConfig.from_dict(dict(config or {}))
        if cfg.observation != "vector":
            raise ValueError(
                f"env.config.observation: the batched vec env supports 'vector', got {cfg.observation!r}"
            )
        if cfg.n_controlled != 1:
            raise ValueError(
                f"env.config.n_controlled: the batched vec env needs 1, got {cfg.n_controlled}"
            )
        self.config = cfg
        self.dt = cfg.dt
        self.render_mode = None
        self.sim = IntersectionSim(cfg, n_worlds=n_worlds)
        obs_space, act_space = make_spaces(cfg)
        super().__init__(n_worlds, obs_space, act_space)
        self.continuous = isinstance(act_space, spaces.Box)
        self._actions: np.ndarray | None = None
        self._episode_cost = np.zeros(n_worlds)
        self._seed: int | None = 0  # seeded even if nobody calls seed()

    # ------------------------------------------------------------------ helpers
    def _ego_step(self, out: Any, w: int, start: bool) -> EgoStep:
        sim = self.sim
        view = sim.observer_view(w, 0, out.visible)
        return EgoStep(
            states=np.array([[sim.x[w, 0], sim.y[w, 0]]]),
            observer_ids=view["ids"],
            observer_types=view["types"],
            visible=view["visible"][:, None],
            observer_frames=view["poses"],
            frame="rigid2d",
            episode_start=start,
            context={"dt": self.dt},
        )

    def _base_info(self, out: Any, w: int, start: bool) -> dict[str, Any]:
        sim = self.sim
        return {
            EGO_STEP_KEY: self._ego_step(out, w, start),
            "speed": float(sim.v[w, 0]),
            "route_distance": float(sim.route_dist[w, 0]),
            "destination": int(sim.dest[w, 0]),
        }

    # ------------------------------------------------------------------ VecEnv API
    def reset(self) -> np.ndarray:
        seed, self._seed = self._seed, None
        out = self.sim.reset(seed=seed)
        self._episode_cost[:] = 0.0
        self.reset_infos = [self._base_info(out, w, True) for w in range(self.num_envs)]
        return out.obs[:, 0].astype(np.float32, copy=True)

    def seed(self, seed: int | None = None) -> list[int | None]:
        """Seed of the shared generator, applied at the next :meth:`reset`."""
        self._seed = seed
        return [seed] * self.num_envs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self):
        from bystander.envs.intersection.sim import REWARD_NAMES
        from bystander.envs.intersection.views import COST_CHANNEL

        assert self._actions is not None, "step_async() first"
        a = self._actions
        a = a.reshape(self.num_envs, 1, -1) if self.continuous else a.reshape(self.num_envs, 1)
        out = self.sim.step(a)
        obs = out.obs[:, 0].astype(np.float32, copy=True)
        rewards = out.rewards[:, 0].sum(axis=1).astype(np.float32)
        terminated = out.terminated[:, 0]
        truncated = out.truncated & ~terminated
        dones = terminated | out.truncated
        cost = out.cost[:, 0]
        self._episode_cost += cost
        infos: list[dict[str, Any]] = []
        for w in range(self.num_envs):
            info = self._base_info(out, w, False)
            c = float(cost[w])
            info.update(
                rewards={n: float(v) for n, v in zip(REWARD_NAMES, out.rewards[w, 0], strict=True)},
                costs={COST_CHANNEL: c},
                cost=c,
                crashed=bool(out.crashed[w, 0]),
                arrived=bool(out.arrived[w, 0]),
                offroad=bool(out.offroad[w, 0]),
                left_map=bool(out.left_map[w, 0]),
            )
            if dones[w]:
                ep = float(self._episode_cost[w])
                info["episode_cost"] = ep
                info["episode_costs"] = {COST_CHANNEL: ep}
                info["terminal_observation"] = obs[w].copy()
                info["TimeLimit.truncated"] = bool(truncated[w])
            infos.append(info)
        done_idx = np.flatnonzero(dones)
        if len(done_idx):
            rout = self.sim.reset(worlds=done_idx)
            obs[done_idx] = rout.obs[done_idx, 0]
            self._episode_cost[done_idx] = 0.0
            for w in done_idx:
                self.reset_infos[w] = self._base_info(rout, int(w), True)
        return obs, rewards, dones, infos

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        value = getattr(self, attr_name)
        return [value] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self, attr_name, value)

    def env_method(
        self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any
    ) -> list[Any]:
        raise AttributeError(f"IntersectionVecEnv has no per-env method {method_name!r}")

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False] * len(self._get_indices(indices))


class VecConstraint(VecEnvWrapper):
    """Vectorised ``ShapedReward`` / ``LagrangianReward`` (same formulas, same info keys).

    Args:
        venv: A vec env whose infos carry ``cost`` / ``costs``.
        mode: ``shaping`` or ``lagrangian`` (PID multipliers also use ``lagrangian``).
        weight: Shaping weight.
        multiplier: The multiplier (lagrangian).
        channel: ``None`` = ``info["cost"]``, else ``info["costs"][channel]``.
    """

    def __init__(
        self,
        venv: VecEnv,
        mode: str,
        *,
        weight: float = 0.0,
        multiplier: Multiplier | None = None,
        channel: str | None = None,
    ) -> None:
        super().__init__(venv)
        if mode not in ("shaping", "lagrangian"):
            raise ValueError(f"mode: expected 'shaping' or 'lagrangian', got {mode!r}")
        if mode == "lagrangian" and multiplier is None:
            raise ValueError("multiplier: required for mode 'lagrangian'")
        self.mode, self.weight, self.multiplier, self.channel = (
            mode,
            float(weight),
            multiplier,
            channel,
        )
        self.key = "cost" if channel is None else channel

    def reset(self) -> np.ndarray:
        return self.venv.reset()

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        costs = np.array(
            [
                float(info["cost"]) if self.channel is None else float(info["costs"][self.channel])
                for info in infos
            ]
        )
        r = rewards.astype(np.float64)
        if self.mode == "shaping":
            new = shaped_reward(r, costs, self.weight)
        else:
            assert self.multiplier is not None
            lam = self.multiplier.value
            new = lagrangian_reward(r, costs, lam)
        infos = list(infos)
        for i, info in enumerate(infos):
            info = dict(info)
            comps = dict(info.get("rewards") or {})
            comps["penalty"] = comps.get("penalty", 0.0) + float(new[i] - r[i])
            info["rewards"] = comps
            if self.mode == "lagrangian":
                info["lambdas"] = {self.key: lam}
            infos[i] = info
        return obs, np.asarray(new, dtype=np.float32), dones, infos


class BatchedHooks(VecEnvWrapper):
    """Outermost wrapper: the ``TrainingHooks`` methods for the batched stack.

    ``env_method(name, ...)`` for ``bystander_snapshot`` / ``bystander_restore`` /
    ``bystander_sync`` / ``bystander_pop_scored`` / ``get_lambda`` returns one entry
    per world, like a vec env of ``TrainingHooks`` envs (the state lives in one place,
    so the snapshot is in entry 0 and the others are empty).
    """

    def __init__(
        self,
        venv: VecEnv,
        multipliers: Mapping[str, Multiplier],
        predictor: Any,
        collect_scored: bool = False,
        max_scored: int = 8192,
    ) -> None:
        super().__init__(venv)
        self._multipliers = dict(multipliers)
        self._predictor = predictor
        self._scored: list[tuple[Any, np.ndarray]] = []
        self._n_scored = 0
        self._max_scored = max_scored
        self.collect_scored = collect_scored
        if collect_scored:
            _set_on_scored(venv, self._on_scored)

    def _on_scored(self, predictor: Any, views: Any, truth: np.ndarray, errors: Any) -> None:
        if self._n_scored < self._max_scored:
            self._scored.append((views, np.asarray(truth)))
            self._n_scored += len(views)

    def reset(self) -> np.ndarray:
        return self.venv.reset()

    def step_wait(self):
        return self.venv.step_wait()

    def _layers(self) -> list[Any]:
        """This wrapper and every layer below it, outermost first."""
        out, v = [], self
        while True:
            out.append(v)
            if not isinstance(v, VecEnvWrapper):
                return out
            v = v.venv

    def env_method(
        self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any
    ) -> list[Any]:
        n = len(self._get_indices(indices))
        if method_name == "bystander_snapshot":
            # Layer states, not the layers: some wrapper classes are built at run time
            # and cannot be pickled by reference. One pickle keeps shared objects shared.
            if self.collect_scored:  # a bound method would drag this wrapper in
                _set_on_scored(self.venv, None)
            try:
                blob = cloudpickle.dumps([_layer_state(layer) for layer in self._layers()])
            finally:
                if self.collect_scored:
                    _set_on_scored(self.venv, self._on_scored)
            return [blob] + [b""] * (n - 1)
        if method_name == "bystander_restore":
            if args and args[0]:
                states = cloudpickle.loads(args[0])
                layers = self._layers()
                if len(states) != len(layers):
                    raise ValueError(
                        f"snapshot has {len(states)} layers, this vec env has {len(layers)}"
                    )
                for layer, state in zip(layers, states, strict=True):
                    layer.__dict__.update(state)
                if self.collect_scored:
                    _set_on_scored(self.venv, self._on_scored)
                self._n_scored = sum(len(v) for v, _ in self._scored)
            return [None] * n
        if method_name == "bystander_sync":
            multipliers, predictor_state = args
            for key, state in multipliers.items():
                self._multipliers[key].load_state_dict(state)
            if predictor_state is not None and self._predictor is not None:
                self._predictor.net.load_state_dict(predictor_state)
            return [None] * n
        if method_name == "bystander_pop_scored":
            out, self._scored, self._n_scored = self._scored, [], 0
            return [out] + [[] for _ in range(n - 1)]
        if method_name == "get_lambda":
            key = args[0] if args else kwargs.get("channel")
            key = "cost" if key is None else key
            return [self._multipliers[key].value] * n
        return self.venv.env_method(method_name, *args, indices=indices, **kwargs)


_NOT_STATE = ("venv", "class_attributes")


def _layer_state(layer: Any) -> dict[str, Any]:
    return {k: v for k, v in layer.__dict__.items() if k not in _NOT_STATE}


def _set_on_scored(venv: VecEnv, fn: Any) -> None:
    layer = _predictability_layer(venv)
    layer.on_scored = fn
    for tracker in [*layer.trackers, *getattr(layer, "_spares", [])]:
        tracker.on_scored = fn


def _predictability_layer(venv: VecEnv) -> Any:
    v = venv
    while True:
        if hasattr(v, "trackers"):
            return v
        if not hasattr(v, "venv"):
            raise ValueError("co-training needs a PredictabilityVecWrapper in the vec env stack")
        v = v.venv


def build_batched_vec_env(
    cfg: Any, predictor: Any, multipliers: Mapping[str, Multiplier]
) -> VecEnv:
    """The batched stack of the module docstring for ``cfg`` (``train.vec_env='batched'``)."""
    from bystander.envs.predictability import PredictabilityVecWrapper

    if cfg.env.id != "bystander/Intersection-v0":
        raise ValueError(
            f"train.vec_env: 'batched' is for bystander/Intersection-v0, got env.id={cfg.env.id!r}"
        )
    if cfg.review.enabled:
        raise ValueError("train.vec_env: 'batched' does not support review.enabled; use 'dummy'")
    if cfg.env.max_episode_steps is not None:
        raise ValueError(
            "env.max_episode_steps: not supported with train.vec_env='batched'; set env.config.max_cycles"
        )
    copies = cloudpickle.loads(cloudpickle.dumps((predictor, dict(multipliers))))
    pred_copy, mult_copy = copies
    venv: VecEnv = IntersectionVecEnv(cfg.env.config, cfg.train.n_envs)
    if pred_copy is not None:
        venv = PredictabilityVecWrapper(venv, pred_copy)
    venv = VecMonitor(venv)
    c = cfg.constraint
    if c.mode == "shaping":
        venv = VecConstraint(venv, "shaping", weight=c.weight, channel=c.channel)
    elif c.mode in ("lagrangian", "pid"):
        key = "cost" if c.channel is None else c.channel
        venv = VecConstraint(venv, "lagrangian", multiplier=mult_copy[key], channel=c.channel)
    hooks = BatchedHooks(
        venv,
        mult_copy,
        pred_copy,
        collect_scored=cfg.predictor.kind == "cotrained",
        max_scored=cfg.predictor.buffer_size,
    )
    hooks.seed(cfg.train.seed)
    return hooks
