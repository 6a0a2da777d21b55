"""Run configuration: dataclasses, YAML files, ``--set key=value`` overrides, validation.

A run is described by one :class:`RunConfig` made of sections (``env``, ``predictor``,
``constraint``, ``review``, ``train``, ``eval``, ``render``). The built-in defaults are
the demo's defaults; YAML files under ``experiments/configs/`` override some of them
and command-line overrides (``--set train.total_timesteps=20000``) come last. Every
run saves its resolved config as ``config.yaml`` in the run directory.

Bad values raise :class:`ValueError` (or :class:`TypeError` for a wrong type) naming
the field by its dotted path and the expected value, e.g.
``train.n_envs: expected an int >= 1, got 0``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bystander.envs.constraints import COST_NORMALIZATIONS

CONSTRAINT_MODES = ("none", "shaping", "lagrangian", "pid")
PREDICTOR_KINDS = ("none", "constant_velocity", "constant_turn_rate", "frozen", "cotrained")
ALGOS = ("ppo", "sac", "dqn")
VEC_ENVS = ("dummy", "subproc", "batched")
REVIEW_MODES = ("veto", "escalate")

DEFAULT_ENV_CONFIG: dict[str, Any] = {
    "n_cars": 1,
    "car_rate": 0.02,
    "n_pedestrians": 2,
    "pedestrian_rate": 0.01,
    "n_cyclists": 1,
    "cyclist_rate": 0.005,
}
"""Env overrides of the training defaults: lighter traffic than the intersection's own
defaults (every observer type present, but few enough road users that PPO learns the
task within minutes on 2 CPU cores)."""

ALGO_DEFAULTS: dict[str, dict[str, Any]] = {
    "ppo": {
        "n_steps": 16,  # x 128 worlds (train.n_envs): rollouts of 2048 env steps
        "batch_size": 512,
        "n_epochs": 4,
        "learning_rate": 1e-3,
        "gamma": 0.99,
        "gae_lambda": 0.95,
        "ent_coef": 0.01,
        "clip_range": 0.2,
    },
    "sac": {
        "learning_rate": 3e-4,
        "buffer_size": 100_000,
        "learning_starts": 1000,
        "batch_size": 256,
    },
    "dqn": {
        "learning_rate": 5e-4,
        "buffer_size": 50_000,
        "learning_starts": 1000,
        "batch_size": 64,
        "target_update_interval": 1000,
        "exploration_fraction": 0.3,
    },
}
"""Training defaults per algorithm; ``train.hyperparams`` overrides them key by key."""


def resolved_hyperparams(train: TrainSection) -> dict[str, Any]:
    """``ALGO_DEFAULTS[train.algo]`` updated with ``train.hyperparams``."""
    return {**ALGO_DEFAULTS[train.algo], **train.hyperparams}


@dataclass
class EnvSection:
    """Which environment to train on.

    Attributes:
        id: Gymnasium id.
        config: Passed as ``gymnasium.make(id, config=...)`` (the env validates it);
            default :data:`DEFAULT_ENV_CONFIG`.
        max_episode_steps: Optional extra ``TimeLimit`` in env steps; ``None`` keeps the env's.
    """

    id: str = "bystander/Intersection-v0"
    config: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_ENV_CONFIG))
    max_episode_steps: int | None = None


@dataclass
class PredictorSection:
    """The bystanders' model of the ego (one predictor for all observer types).

    Attributes:
        kind: ``none`` (no predictability wrapper: envs without observers),
            ``constant_velocity``, ``constant_turn_rate``, ``frozen`` (a learned
            predictor loaded from ``path`` and never updated) or ``cotrained`` (a learned
            predictor updated from every rollout, optionally initialised from ``path``).
        path: Weights file of a learned predictor.
        horizon: Predicted future states (env steps; 10 = 1 s at dt 0.1 s).
        history: Past states per view, current one included.
        lr: Adam learning rate of a co-trained predictor.
        updates_per_rollout: Gradient steps per rollout for a co-trained predictor.
        batch_size: Max (view, truth) pairs per gradient step.
        buffer_size: Max (view, truth) pairs kept between updates (newest kept).
    """

    kind: str = "constant_velocity"
    path: str | None = None
    horizon: int = 10
    history: int = 8
    lr: float = 1e-3
    updates_per_rollout: int = 4
    batch_size: int = 256
    buffer_size: int = 8192


@dataclass
class ConstraintSection:
    """How the predictability cost enters the reward.

    Attributes:
        mode: ``none``, ``shaping`` (r - weight * cost), ``lagrangian`` (Safe RLHF
            log-lambda ascent) or ``pid`` (PID-Lagrangian).
        channel: Cost channel constrained (``info["costs"][channel]``); ``None`` for
            the total ``info["cost"]``.
        weight: Shaping weight (reward units per cost unit).
        budget: Cost budget d of the multiplier, in the unit that
            ``cost_normalization`` gives: cost units per episode (``sum``) or cost
            units per env step (``per_step``; for the predictability channel, metres
            of observer ADE per step, steps where no observer scored counting 0).
        cost_normalization: How a finished episode's summed cost
            (``info["episode_costs"][channel]``) is compared with ``budget``: ``sum``
            (as is) or ``per_step`` (divided by the episode length in env steps, from
            the Monitor's ``info["episode"]["l"]``), see
            :func:`bystander.envs.constraints.episode_cost_for_budget`. ``per_step``
            makes the budget independent of episode length, so the ego cannot meet it
            by ending episodes early or miss it by waiting.
        lr: Lagrangian learning rate on log lambda.
        lambda_init: Initial lambda.
        lambda_max: Upper clamp on lambda.
        lambda_min: Lower clamp on lambda for mode ``lagrangian`` (0: none, the plain
            Safe RLHF update; else in (0, lambda_init]). Log-lambda ascent moves
            log lambda by ``lr * lambda * (cost - budget)``, so once lambda has decayed
            (cost under budget for a while) it hardly climbs back when the cost rises
            again; the floor bounds that step from below. Default 0 keeps the plain
            update, since a useful floor depends on ``lr`` and the cost's scale (about
            ``lr * lambda_min * typical excess`` ~ 0.02-0.1; e.g. 0.05 with lr 5 and
            per-step budgets in metres). Must be 0 for ``pid`` (additive, no stall).
        delay: Multiplier updates before lambda starts moving.
        window: Episode-cost window averaged by the Lagrangian multiplier.
        kp: PID proportional gain.
        ki: PID integral gain.
        kd: PID derivative gain.
    """

    mode: str = "none"
    channel: str | None = "predictability"
    weight: float = 0.05
    budget: float = 20.0
    cost_normalization: str = "sum"
    lr: float = 0.5
    lambda_init: float = 0.02
    lambda_max: float = 0.5
    lambda_min: float = 0.0
    delay: int = 0
    window: int = 1
    kp: float = 0.05
    ki: float = 0.01
    kd: float = 0.0


@dataclass
class ReviewSection:
    """Decision-time review gate (off by default).

    Attributes:
        enabled: Wrap the env in ``ReviewGate`` with the driving reviewer.
        threshold: Estimated cost above which the gate acts (cost units).
        mode: ``veto`` (replace by the fallback action) or ``escalate``.
    """

    enabled: bool = False
    threshold: float = 2.0
    mode: str = "veto"


@dataclass
class TrainSection:
    """SB3 training.

    Attributes:
        algo: ``ppo`` (default), ``sac`` (continuous actions) or ``dqn`` (meta-actions).
        total_timesteps: Env steps over all envs.
        n_envs: Parallel envs (worlds of the batched simulator). Default 128 with PPO
            ``n_steps = 16``: the same 2048-step rollouts as 16 x 128, but one simulator
            call steps 128 worlds (measured: 90 % success after 1.2 M steps in 2 min on
            2 cores). Use fewer with ``dummy``/``subproc`` (one Python env each).
        vec_env: ``dummy`` (one process), ``subproc`` (one process per env) or
            ``batched`` (intersection only: all envs in one vectorised simulator, see
            :mod:`bystander.agents.stack`).
        seed: Seed of the algorithm, the envs and every RNG.
        normalize: Wrap the vec env in ``VecNormalize`` (observations and rewards).
        policy: SB3 policy name.
        net_arch: Hidden layer sizes of policy and value networks.
        hyperparams: Keyword arguments of the SB3 algorithm (``n_steps``,
            ``learning_rate``...) over :data:`ALGO_DEFAULTS`; unknown names are refused.
        checkpoint_every: Write a checkpoint every this many env steps (0: only at the end).
        max_minutes: Stop training after this wall time (minutes), ``None``: no limit.
        progress_bar: Show a progress bar.
        tensorboard: Log to TensorBoard under ``RUN_DIR/tb``.
        device: Torch device.
        torch_threads: ``torch.set_num_threads`` for the training process (0: leave).
    """

    algo: str = "ppo"
    total_timesteps: int = 200_000
    n_envs: int = 128
    vec_env: str = "batched"
    seed: int = 0
    normalize: bool = False
    policy: str = "MlpPolicy"
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    hyperparams: dict[str, Any] = field(default_factory=dict)
    checkpoint_every: int = 0
    max_minutes: float | None = None
    progress_bar: bool = False
    tensorboard: bool = True
    device: str = "cpu"
    torch_threads: int = 1


@dataclass
class EvalSection:
    """Evaluation: ``episodes`` seeded episodes, seeds ``seed, seed+1, ...``."""

    episodes: int = 50
    seed: int = 100_000
    deterministic: bool = True


@dataclass
class RenderSection:
    """Rendering of one episode with the prediction overlay.

    Attributes:
        seed: Episode seed.
        max_steps: Frames at most.
        fps: Frames per second of the written GIF/MP4.
        every: Keep one frame in ``every`` (GIF size).
    """

    seed: int = 7
    max_steps: int = 300
    fps: int = 10
    every: int = 2


@dataclass
class RunConfig:
    """A whole run.

    Attributes:
        name: Run name (the run directory is ``runs_dir/<timestamp>-<name>``).
        runs_dir: Parent directory of run directories.
    """

    name: str = "default"
    runs_dir: str = "runs"
    env: EnvSection = field(default_factory=EnvSection)
    predictor: PredictorSection = field(default_factory=PredictorSection)
    constraint: ConstraintSection = field(default_factory=ConstraintSection)
    review: ReviewSection = field(default_factory=ReviewSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    render: RenderSection = field(default_factory=RenderSection)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON serialisable)."""
        return dataclasses.asdict(self)

    def validate(self) -> RunConfig:
        """Check every value; raise ``ValueError`` naming the field. Returns ``self``."""
        _validate(self)
        return self

    def fingerprint(self, keys: tuple[str, ...] = ()) -> str:
        """SHA-256 of the JSON of the whole config (or of the listed dotted keys)."""
        d = self.to_dict()
        if keys:
            d = {k: _get_dotted(d, k) for k in keys}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


# ----------------------------------------------------------------------------- parsing


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Convert ``value`` to the annotated type ``tp`` or raise naming ``path``."""
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise TypeError(f"{path}: expected {_type_name(inner)}, got None")
    if dataclasses.is_dataclass(inner):
        if isinstance(value, inner):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"{path}: expected a mapping of fields, got {type(value).__name__}")
        return _from_dict(inner, value, path)
    origin = typing.get_origin(inner)
    if inner is bool:
        if isinstance(value, bool):
            return value
        raise TypeError(f"{path}: expected a bool (true/false), got {value!r}")
    if inner is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise TypeError(f"{path}: expected an int, got {value!r}")
        return value
    if inner is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if inner is str:
        if not isinstance(value, str):
            raise TypeError(f"{path}: expected a string, got {value!r}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(inner)
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{path}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{path}: expected a mapping, got {value!r}")
        return copy.deepcopy(dict(value))
    raise TypeError(f"{path}: unsupported annotation {tp!r}")  # pragma: no cover


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _from_dict(cls: type, data: dict[str, Any], path: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{path}." if path else ""
        raise ValueError(
            f"{where}{unknown[0]}: unknown config key; expected one of {sorted(names)}"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], f"{path}.{name}" if path else name)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any] | None) -> RunConfig:
    """Build a validated :class:`RunConfig` from a (partial) nested dict over the defaults."""
    return _from_dict(RunConfig, data or {}).validate()


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping at the top level")
    data = _numbers(data)
    base = data.pop("base", None)
    if base is not None:
        # ``base: other.yaml`` (relative to this file) is read first, this file on top.
        data = _deep_merge(_read_yaml(path.parent / base), data)
    return data


_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _numbers(obj: Any) -> Any:
    """Turn float-looking strings (YAML 1.1 reads ``3e-4`` as a string) into floats."""
    if isinstance(obj, dict):
        return {k: _numbers(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_numbers(v) for v in obj]
    if isinstance(obj, str) and _FLOAT_RE.fullmatch(obj.strip()):
        return float(obj)
    return obj


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``"a.b.c=value"`` into ``("a.b.c", value)``; the value is read as YAML."""
    if "=" not in text:
        raise ValueError(f"override {text!r}: expected KEY=VALUE, e.g. train.n_envs=4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ValueError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ValueError(f"override {key}: cannot parse value {raw!r}: {e}") from e
    return key, _numbers(value)


def _set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    cur = d
    for i, p in enumerate(parts[:-1]):
        nxt = cur.get(p)
        if nxt is None:
            nxt = cur[p] = {}
        if not isinstance(nxt, dict):
            raise ValueError(f"{'.'.join(parts[: i + 1])}: is not a section; cannot set {key}")
        cur = nxt
    cur[parts[-1]] = value


def _get_dotted(d: dict[str, Any], key: str) -> Any:
    cur: Any = d
    for p in key.split("."):
        if not isinstance(cur, dict) or p not in cur:
            raise KeyError(key)
        cur = cur[p]
    return cur


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> RunConfig:
    """Defaults, then ``base`` (a dict), then the YAML file ``path``, then ``overrides``.

    Args:
        path: YAML file (may name a ``base:`` file relative to itself), or ``None``.
        overrides: ``KEY=VALUE`` strings with dotted keys (``train.seed=3``).
        base: A nested dict applied before the file (e.g. a saved run config).

    Returns:
        The validated config.
    """
    data: dict[str, Any] = RunConfig().to_dict()
    if base:
        data = _deep_merge(data, base)
    if path is not None:
        data = _deep_merge(data, _read_yaml(path))
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(data, key, value)
    return config_from_dict(data)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write ``cfg`` as YAML (atomically)."""
    from bystander.atomic import atomic_open

    with atomic_open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)


# -------------------------------------------------------------------------- validation


def _check(cond: bool, field_path: str, expected: str, got: Any) -> None:
    if not cond:
        raise ValueError(f"{field_path}: expected {expected}, got {got!r}")


def _validate(cfg: RunConfig) -> None:
    _check(bool(cfg.name) and "/" not in cfg.name, "name", "a non-empty name without '/'", cfg.name)
    _check(bool(cfg.env.id), "env.id", "a Gymnasium id", cfg.env.id)
    if cfg.env.max_episode_steps is not None:
        _check(
            cfg.env.max_episode_steps >= 1,
            "env.max_episode_steps",
            "an int >= 1 or null",
            cfg.env.max_episode_steps,
        )

    p = cfg.predictor
    _check(p.kind in PREDICTOR_KINDS, "predictor.kind", f"one of {PREDICTOR_KINDS}", p.kind)
    if p.kind == "frozen":
        _check(bool(p.path), "predictor.path", "a weights file for kind 'frozen'", p.path)
    _check(p.horizon >= 1, "predictor.horizon", "an int >= 1", p.horizon)
    _check(p.history >= 2, "predictor.history", "an int >= 2", p.history)
    _check(p.lr > 0, "predictor.lr", "a number > 0", p.lr)
    _check(
        p.updates_per_rollout >= 0,
        "predictor.updates_per_rollout",
        "an int >= 0",
        p.updates_per_rollout,
    )
    _check(p.batch_size >= 1, "predictor.batch_size", "an int >= 1", p.batch_size)
    _check(
        p.buffer_size >= p.batch_size,
        "predictor.buffer_size",
        f"an int >= predictor.batch_size ({p.batch_size})",
        p.buffer_size,
    )

    c = cfg.constraint
    _check(c.mode in CONSTRAINT_MODES, "constraint.mode", f"one of {CONSTRAINT_MODES}", c.mode)
    _check(c.weight >= 0, "constraint.weight", "a number >= 0", c.weight)
    _check(c.budget >= 0, "constraint.budget", "a number >= 0", c.budget)
    _check(
        c.cost_normalization in COST_NORMALIZATIONS,
        "constraint.cost_normalization",
        f"one of {COST_NORMALIZATIONS}",
        c.cost_normalization,
    )
    _check(c.lr > 0, "constraint.lr", "a number > 0", c.lr)
    _check(c.lambda_init >= 0, "constraint.lambda_init", "a number >= 0", c.lambda_init)
    _check(
        c.lambda_max >= c.lambda_init,
        "constraint.lambda_max",
        f"a number >= constraint.lambda_init ({c.lambda_init})",
        c.lambda_max,
    )
    _check(
        0 <= c.lambda_min <= c.lambda_init,
        "constraint.lambda_min",
        f"a number in [0, constraint.lambda_init ({c.lambda_init})]",
        c.lambda_min,
    )
    if c.mode == "pid":
        _check(
            c.lambda_min == 0,
            "constraint.lambda_min",
            "0 for mode 'pid' (the floor is for log-lambda ascent, mode 'lagrangian')",
            c.lambda_min,
        )
    if c.mode == "lagrangian":
        _check(
            c.lambda_init > 0,
            "constraint.lambda_init",
            "a number > 0 for mode 'lagrangian' (log-parametrised)",
            c.lambda_init,
        )
    if c.mode != "none" and cfg.predictor.kind == "none" and c.channel == "predictability":
        raise ValueError(
            "constraint.channel: 'predictability' needs a predictor; set predictor.kind "
            "or constraint.channel (e.g. null for the total cost)"
        )
    _check(c.delay >= 0, "constraint.delay", "an int >= 0", c.delay)
    _check(c.window >= 1, "constraint.window", "an int >= 1", c.window)
    for g in ("kp", "ki", "kd"):
        _check(getattr(c, g) >= 0, f"constraint.{g}", "a number >= 0", getattr(c, g))

    r = cfg.review
    _check(r.mode in REVIEW_MODES, "review.mode", f"one of {REVIEW_MODES}", r.mode)
    _check(r.threshold >= 0, "review.threshold", "a number >= 0", r.threshold)

    t = cfg.train
    _check(t.algo in ALGOS, "train.algo", f"one of {ALGOS}", t.algo)
    _check(t.total_timesteps >= 1, "train.total_timesteps", "an int >= 1", t.total_timesteps)
    _check(t.n_envs >= 1, "train.n_envs", "an int >= 1", t.n_envs)
    _check(t.vec_env in VEC_ENVS, "train.vec_env", f"one of {VEC_ENVS}", t.vec_env)
    _check(t.seed >= 0, "train.seed", "an int >= 0", t.seed)
    _check(
        len(t.net_arch) >= 1 and all(n >= 1 for n in t.net_arch),
        "train.net_arch",
        "a non-empty list of ints >= 1",
        t.net_arch,
    )
    if t.vec_env == "batched":
        if r.enabled:
            raise ValueError(
                "review.enabled: the review gate needs per-env wrappers; expected false "
                "with train.vec_env='batched' (use 'dummy' or 'subproc')"
            )
        _check(
            cfg.env.id == "bystander/Intersection-v0",
            "train.vec_env",
            "'dummy' or 'subproc' for envs other than bystander/Intersection-v0 ('batched' is its simulator)",
            t.vec_env,
        )
    _check(t.checkpoint_every >= 0, "train.checkpoint_every", "an int >= 0", t.checkpoint_every)
    if t.max_minutes is not None:
        _check(t.max_minutes > 0, "train.max_minutes", "a number > 0 or null", t.max_minutes)
    _check(t.torch_threads >= 0, "train.torch_threads", "an int >= 0", t.torch_threads)
    _validate_hyperparams(t.algo, resolved_hyperparams(t))

    e = cfg.eval
    _check(e.episodes >= 1, "eval.episodes", "an int >= 1", e.episodes)
    _check(e.seed >= 0, "eval.seed", "an int >= 0", e.seed)
    rd = cfg.render
    _check(rd.max_steps >= 1, "render.max_steps", "an int >= 1", rd.max_steps)
    _check(rd.fps >= 1, "render.fps", "an int >= 1", rd.fps)
    _check(rd.every >= 1, "render.every", "an int >= 1", rd.every)


# Arguments the training code sets itself; they may not come from ``train.hyperparams``.
_RESERVED_HYPERPARAMS = (
    "policy",
    "env",
    "seed",
    "device",
    "policy_kwargs",
    "tensorboard_log",
    "verbose",
    "_init_setup_model",
)


def _validate_hyperparams(algo: str, hyperparams: dict[str, Any]) -> None:
    import inspect

    from stable_baselines3 import DQN, PPO, SAC

    cls = {"ppo": PPO, "sac": SAC, "dqn": DQN}[algo]
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self", *_RESERVED_HYPERPARAMS}
    for k, v in hyperparams.items():
        if k not in allowed:
            raise ValueError(
                f"train.hyperparams.{k}: not an argument of {cls.__name__}; expected one of {sorted(allowed)}"
            )
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v != v:
            raise ValueError(f"train.hyperparams.{k}: expected a finite number, got {v!r}")
    for k in ("n_steps", "batch_size", "n_epochs"):
        if k in hyperparams:
            v = hyperparams[k]
            _check(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                f"train.hyperparams.{k}",
                "an int >= 1",
                v,
            )
    if "learning_rate" in hyperparams:
        v = hyperparams["learning_rate"]
        _check(
            isinstance(v, (int, float)) and v > 0,
            "train.hyperparams.learning_rate",
            "a number > 0",
            v,
        )
    for k in ("gamma", "gae_lambda"):
        if k in hyperparams:
            v = hyperparams[k]
            _check(
                isinstance(v, (int, float)) and 0 <= v <= 1,
                f"train.hyperparams.{k}",
                "a number in [0, 1]",
                v,
            )
