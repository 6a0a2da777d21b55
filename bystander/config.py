"""Run configuration: dataclasses, YAML files, ``--set key=value`` overrides, validation.

A run is described by one :class:`RunConfig` made of sections (``env``, ``predictor``,
``constraint``, ``review``, ``train``, ``eval``, ``render``). The built-in defaults are
the demo's defaults; YAML files under ``experiments/configs/`` override some of them
and command-line overrides (``--set train.total_timesteps=20000``) come last. Every
run saves its resolved config as ``config.yaml`` in the run directory.

Bad values raise :class:`ValueError` (or :class:`TypeError` for a wrong type) naming
the field by its dotted path and the expected value, e.g.
``train.n_envs: expected an int >= 1, got 0``. Each section checks its own fields in
``__post_init__`` / ``validate(path)``, next to them; :class:`RunConfig` checks what
spans sections. The ``constraint`` section is the shared
:class:`~bystander.envs.constraint_config.ConstraintConfig` (the same schema as the
text trainer's ``GRPOConfig.constraint``) with the driving defaults
(:func:`driving_constraint`). Fields with a ``flag`` in their metadata are the
``bystander train`` shortcuts (:func:`bystander.dataconfig.add_flags`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bystander.dataconfig import (
    check,
    deep_merge,
    from_dict,
    get_dotted,
    is_distribution,
    parse_override,
    read_yaml,
    set_dotted,
)
from bystander.envs.constraint_config import ConstraintConfig
from bystander.envs.intersection.config import IntersectionConfig
from bystander.hyperparams import ALGO_DEFAULTS, validate_hyperparams
from bystander.run_sections import EvalSection, RenderSection

INTERSECTION_ID = "bystander/Intersection-v0"
"""Gymnasium id of the intersection env (its ``env.config`` is checked here)."""

__all__ = [
    "ALGOS",
    "DEFAULT_ENV_CONFIG",
    "COTRAINED_KINDS",
    "LR_SCHEDULES",
    "PREDICTOR_ALIASES",
    "PREDICTOR_KINDS",
    "REVIEW_MODES",
    "SECTIONS",
    "TRAIN_OVERRIDE_KEYS",
    "VEC_ENVS",
    "EnvSection",
    "EvalSection",
    "PredictorSection",
    "RenderSection",
    "ReviewSection",
    "RunConfig",
    "TrainSection",
    "config_from_dict",
    "driving_constraint",
    "load_config",
    "parse_override",
    "resolved_hyperparams",
    "save_config",
]

PREDICTOR_KINDS = (
    "none",
    "constant_velocity",
    "constant_turn_rate",
    "frozen",
    "cotrained",
    "map",
    "map_cotrained",
)
COTRAINED_KINDS = ("cotrained", "map_cotrained")
"""Predictor kinds the training loop updates from every rollout (and saves)."""
ALGOS = ("ppo", "sac", "dqn")
VEC_ENVS = ("dummy", "subproc", "batched")
LR_SCHEDULES = ("constant", "linear")
REVIEW_MODES = ("veto", "escalate")
PREDICTOR_ALIASES = {
    "cv": "constant_velocity",
    "ctr": "constant_turn_rate",
    **{k: k for k in PREDICTOR_KINDS},
}
"""What ``--predictor`` accepts: the short names and every kind."""

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


TRAIN_OVERRIDE_KEYS = (
    "start_target_speeds", "max_cycles", "n_cars", "n_pedestrians", "n_cyclists", "car_rate",
    "cyclist_rate", "pedestrian_rate", "speed_limit", "cyclist_speed", "pedestrian_speed",
    "stuck_time",
)  # fmt: skip
"""Intersection config keys ``env.train_overrides`` may change: the episode's start, length
and traffic. Not the spaces, the map, the ego's dynamics, the observers or the rewards,
which the observers' predictor, the scripted drivers and the evaluation read from
``env.config``."""


def resolved_hyperparams(train: TrainSection) -> dict[str, Any]:
    """``ALGO_DEFAULTS[train.algo]`` updated with ``train.hyperparams``."""
    return {**ALGO_DEFAULTS[train.algo], **train.hyperparams}


def _flag(flag: str, help: str, **extra: Any) -> dict[str, Any]:  # noqa: A002 - argparse's name
    """Field metadata of a CLI shortcut (see :func:`bystander.dataconfig.add_flags`)."""
    return {"flag": flag, "help": help, **extra}


@dataclass
class EnvSection:
    """Which environment to train on.

    Attributes:
        id: Gymnasium id.
        config: Passed as ``gymnasium.make(id, config=...)`` (the env validates it);
            default :data:`DEFAULT_ENV_CONFIG`.
        max_episode_steps: Optional extra ``TimeLimit`` in env steps; ``None`` keeps the env's.
        train_overrides: Keys of ``config`` changed for the training envs only (the
            episode's start, length and traffic: :data:`TRAIN_OVERRIDE_KEYS`); held-out
            evaluations, ``bystander evaluate`` and rendering keep ``config``. E.g.
            ``{start_target_speeds: [0, 3, 6, 9, 12]}``: exploring starts in training,
            judged on the task's own start (README "Constraints that hold").
    """

    id: str = INTERSECTION_ID
    config: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_ENV_CONFIG))
    max_episode_steps: int | None = None
    train_overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def train_config(self) -> dict[str, Any]:
        """The training envs' config: ``config`` updated with ``train_overrides``."""
        return {**self.config, **self.train_overrides}

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, path: str = "env") -> None:
        """Check every field; raise ``ValueError`` naming ``{path}.<field>``."""
        check(bool(self.id), f"{path}.id", "a Gymnasium id", self.id)
        if self.max_episode_steps is not None:
            check(
                self.max_episode_steps >= 1,
                f"{path}.max_episode_steps",
                "an int >= 1 or null",
                self.max_episode_steps,
            )
        check(
            isinstance(self.train_overrides, dict),
            f"{path}.train_overrides",
            "a dict of env.config keys",
            self.train_overrides,
        )
        other = sorted(set(self.train_overrides) - set(TRAIN_OVERRIDE_KEYS))
        check(
            not other,
            f"{path}.train_overrides",
            f"keys among {TRAIN_OVERRIDE_KEYS} (start, length and traffic only)",
            other,
        )
        if self.id == INTERSECTION_ID:
            for name, config in (("config", self.config), ("train_overrides", self.train_config)):
                try:  # the env's own checks, so that a config is refused before any run
                    IntersectionConfig.from_dict(config)
                except (ValueError, TypeError) as err:
                    msg = str(err)
                    raise ValueError(
                        f"{path}.{name}.{msg[7:]}"
                        if msg.startswith("config.")
                        else f"{path}.{name}: {msg}"
                    ) from None
        elif self.train_overrides:
            raise ValueError(
                f"{path}.train_overrides: expected {{}} unless env.id is {INTERSECTION_ID}, "
                f"got {self.train_overrides!r}"
            )


@dataclass
class PredictorSection:
    """The bystanders' model of the ego (one predictor for all observer types).

    Attributes:
        kind: ``none`` (no predictability wrapper: envs without observers),
            ``constant_velocity``, ``constant_turn_rate``, ``frozen`` (a learned
            predictor loaded from ``path`` and never updated) or ``cotrained`` (a learned
            predictor updated from every rollout, optionally initialised from ``path``),
            ``map`` (the map-aware route-hypothesis predictor,
            :class:`~bystander.agents.map_predictor.MapPredictor`, habit-blind and frozen,
            or loaded frozen from ``path``) or ``map_cotrained`` (the same, its
            distribution over routes updated from every rollout with learning rate
            ``lr``; 0.05 learns a turn habit within tens of updates).
        path: Weights file of a learned predictor.
        horizon: Predicted future states (env steps; 10 = 1 s at dt 0.1 s).
        history: Past states per view, current one included.
        lr: Adam learning rate of a co-trained predictor.
        updates_per_rollout: Gradient steps per rollout for a co-trained predictor.
        batch_size: Max (view, truth) pairs per gradient step.
        buffer_size: Max (view, truth) pairs kept between updates (newest kept).
    """

    kind: str = field(
        default="constant_velocity",
        metadata=_flag(
            "--predictor",
            "predictor kind (cv, ctr, frozen, cotrained, map, map_cotrained)",
            aliases=PREDICTOR_ALIASES,
        ),
    )
    path: str | None = field(
        default=None, metadata=_flag("--predictor-path", "learned predictor weights")
    )
    horizon: int = 10
    history: int = 8
    lr: float = 1e-3
    updates_per_rollout: int = 4
    batch_size: int = 256
    buffer_size: int = 8192

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, path: str = "predictor") -> None:
        """Check every field; raise ``ValueError`` naming ``{path}.<field>``."""
        check(self.kind in PREDICTOR_KINDS, f"{path}.kind", f"one of {PREDICTOR_KINDS}", self.kind)
        if self.kind == "frozen":
            check(bool(self.path), f"{path}.path", "a weights file for kind 'frozen'", self.path)
        check(self.horizon >= 1, f"{path}.horizon", "an int >= 1", self.horizon)
        check(self.history >= 2, f"{path}.history", "an int >= 2", self.history)
        check(self.lr > 0, f"{path}.lr", "a number > 0", self.lr)
        check(
            self.updates_per_rollout >= 0,
            f"{path}.updates_per_rollout",
            "an int >= 0",
            self.updates_per_rollout,
        )
        check(self.batch_size >= 1, f"{path}.batch_size", "an int >= 1", self.batch_size)
        check(
            self.buffer_size >= self.batch_size,
            f"{path}.buffer_size",
            f"an int >= {path}.batch_size ({self.batch_size})",
            self.buffer_size,
        )


def driving_constraint() -> ConstraintConfig:
    """The driving defaults of ``RunConfig.constraint`` (fields:
    :class:`~bystander.envs.constraint_config.ConstraintConfig`).

    The cost is the ``predictability`` channel, metres of observer ADE; with
    ``cost_normalization: sum`` the budget (20) is metres summed over an episode,
    with ``per_step`` metres per env step (steps where no observer scored count 0).
    A multiplier is updated once per rollout, hence the larger ``lambda_lr`` than the
    text domain's and the small ``lambda_init`` / ``lambda_max`` (reward scale ~1).
    """
    return ConstraintConfig(
        channel="predictability",
        weight=0.05,
        budget=20.0,
        lambda_lr=0.5,
        lambda_init=0.02,
        lambda_max=0.5,
        kp=0.05,
    )


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

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, path: str = "review") -> None:
        """Check every field; raise ``ValueError`` naming ``{path}.<field>``."""
        check(self.mode in REVIEW_MODES, f"{path}.mode", f"one of {REVIEW_MODES}", self.mode)
        check(self.threshold >= 0, f"{path}.threshold", "a number >= 0", self.threshold)


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
            ``learning_rate``...) over :data:`~bystander.hyperparams.ALGO_DEFAULTS`; unknown names are refused.
        lr_schedule: ``constant`` (default: ``hyperparams.learning_rate`` throughout) or
            ``linear`` (PPO only): the learning rate falls linearly from
            ``learning_rate`` at step 0 to 0 at ``total_timesteps`` (CleanRL's
            ``anneal_lr``), measured on the whole run's step count, across resumes and
            the trainer's chunked ``learn`` calls (a resume with a larger
            ``total_timesteps`` raises the rate to that schedule's value). Gives constrained runs a steady last
            quarter (issue 12; README "Constraints that hold").
        ent_schedule: ``constant`` (default) or ``linear`` (PPO only): the entropy
            bonus ``hyperparams.ent_coef`` falls linearly to 0 over the run, in the same
            way (explore early, act steadily late).
        entropy_prior: ``None`` (PPO's entropy bonus) or one probability per discrete
            action (PPO only): the bonus becomes ``-ent_coef * KL(pi || entropy_prior)``,
            a pull toward a calm policy instead of the uniform one
            (:class:`~bystander.agents.models.KLPriorPolicy`).
        exploration_hold: PPO with discrete actions: the mean number of env steps an
            env holds its rollout sampling noise (a Gumbel vector redrawn with probability
            ``1 / exploration_hold`` per step,
            :class:`~bystander.agents.models.HeldNoisePolicy`), so an explored action is
            kept for a while instead of flickering (averaged over the noise, each step's
            action is the policy's). 0 or 1 (default 0): a fresh draw every step.
        checkpoint_every: Write a checkpoint every this many env steps (0: only at the end).
        max_minutes: Stop training after this wall time (minutes), ``None``: no limit.
        progress_bar: Show a progress bar.
        tensorboard: Log to TensorBoard under ``RUN_DIR/tb``.
        device: Torch device.
        torch_threads: ``torch.set_num_threads`` for the training process (0: leave).
    """

    algo: str = field(default="ppo", metadata=_flag("--algo", "SB3 algorithm", choices=ALGOS))
    total_timesteps: int = field(default=200_000, metadata=_flag("--timesteps", "total env steps"))
    n_envs: int = field(default=128, metadata=_flag("--n-envs", "parallel envs"))
    vec_env: str = field(
        default="batched",
        metadata=_flag("--vec-env", "batched, DummyVecEnv or SubprocVecEnv", choices=VEC_ENVS),
    )
    seed: int = field(default=0, metadata=_flag("--seed", "seed"))
    normalize: bool = False
    policy: str = "MlpPolicy"
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    hyperparams: dict[str, Any] = field(default_factory=dict)
    lr_schedule: str = "constant"
    ent_schedule: str = "constant"
    entropy_prior: list[float] | None = None
    exploration_hold: float = 0.0
    checkpoint_every: int = 0
    max_minutes: float | None = field(
        default=None, metadata=_flag("--max-minutes", "wall-time limit")
    )
    progress_bar: bool = field(default=False, metadata=_flag("--progress", "progress bar"))
    tensorboard: bool = True
    device: str = "cpu"
    torch_threads: int = 1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, path: str = "train") -> None:
        """Check every field (``hyperparams`` against the SB3 class's signature, which
        imports SB3); raise ``ValueError`` naming ``{path}.<field>``."""
        check(self.algo in ALGOS, f"{path}.algo", f"one of {ALGOS}", self.algo)
        check(self.total_timesteps >= 1, f"{path}.total_timesteps", "an int >= 1",
              self.total_timesteps)  # fmt: skip
        check(self.n_envs >= 1, f"{path}.n_envs", "an int >= 1", self.n_envs)
        check(self.vec_env in VEC_ENVS, f"{path}.vec_env", f"one of {VEC_ENVS}", self.vec_env)
        check(self.seed >= 0, f"{path}.seed", "an int >= 0", self.seed)
        check(
            len(self.net_arch) >= 1 and all(n >= 1 for n in self.net_arch),
            f"{path}.net_arch",
            "a non-empty list of ints >= 1",
            self.net_arch,
        )
        for name in ("lr_schedule", "ent_schedule"):
            value = getattr(self, name)
            check(value in LR_SCHEDULES, f"{path}.{name}", f"one of {LR_SCHEDULES}", value)
            check(
                value == "constant" or self.algo == "ppo",
                f"{path}.{name}",
                "'constant' unless train.algo is ppo",
                value,
            )
        if self.entropy_prior is not None:
            prior = self.entropy_prior
            check(
                self.algo == "ppo" and isinstance(prior, list) and is_distribution(prior),
                f"{path}.entropy_prior",
                "null, or (PPO only) a list of positive probabilities summing to 1",
                prior,
            )
            check(self.policy == "MlpPolicy", f"{path}.policy",
                  "'MlpPolicy' with train.entropy_prior (its policy is an MLP actor-critic)",
                  self.policy)  # fmt: skip
        check(self.checkpoint_every >= 0, f"{path}.checkpoint_every", "an int >= 0",
              self.checkpoint_every)  # fmt: skip
        hold = self.exploration_hold
        real = isinstance(hold, (int, float)) and not isinstance(hold, bool)
        check(real and 0 <= hold < float("inf"), f"{path}.exploration_hold",
              "a finite number >= 0", hold)  # fmt: skip
        check(hold <= 1 or (self.algo == "ppo" and self.policy == "MlpPolicy"),
              f"{path}.exploration_hold", "0 or 1 unless train.algo is ppo with 'MlpPolicy'",
              hold)  # fmt: skip
        if self.max_minutes is not None:
            check(
                self.max_minutes > 0,
                f"{path}.max_minutes",
                "a number > 0 or null",
                self.max_minutes,
            )
        check(self.torch_threads >= 0, f"{path}.torch_threads", "an int >= 0", self.torch_threads)
        validate_hyperparams(self.algo, resolved_hyperparams(self), f"{path}.hyperparams")


SECTIONS = ("env", "predictor", "constraint", "review", "train", "eval", "render")
"""The sections of a :class:`RunConfig`, in order."""


@dataclass
class RunConfig:
    """A whole run.

    Each section checks its own fields when built (``__post_init__``); the run checks
    what spans sections. Bad values raise ``ValueError`` naming the dotted path.

    Attributes:
        name: Run name (the run directory is ``runs_dir/<timestamp>-<name>``).
        runs_dir: Parent directory of run directories.
        constraint: The shared constraint schema with the driving defaults
            (:func:`driving_constraint`).
    """

    name: str = field(
        default="default", metadata=_flag("--name", "run name (run dir: runs/<timestamp>-<name>)")
    )
    runs_dir: str = "runs"
    env: EnvSection = field(default_factory=EnvSection)
    predictor: PredictorSection = field(default_factory=PredictorSection)
    constraint: ConstraintConfig = field(default_factory=driving_constraint)
    review: ReviewSection = field(default_factory=ReviewSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    render: RenderSection = field(default_factory=RenderSection)

    def __post_init__(self) -> None:
        self._check_across()

    @property
    def n_controlled(self) -> int:
        """Controlled cars per world (``env.config.n_controlled``, default 1)."""
        return int((self.env.config or {}).get("n_controlled", 1))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON serialisable)."""
        return dataclasses.asdict(self)

    def validate(self) -> RunConfig:
        """Check every value again (sections may have been mutated); raise ``ValueError``
        naming the field. Returns ``self``."""
        for name in SECTIONS:
            getattr(self, name).validate(name)
        self._check_across()
        return self

    def _check_across(self) -> None:
        """The checks that span sections."""
        check(
            bool(self.name) and "/" not in self.name,
            "name",
            "a non-empty name without '/'",
            self.name,
        )
        c = self.constraint
        if c.mode != "none" and self.predictor.kind == "none" and c.channel == "predictability":
            raise ValueError(
                "constraint.channel: 'predictability' needs a predictor; set predictor.kind "
                "or constraint.channel (e.g. null for the total cost)"
            )
        if c.mode in ("lagrangian", "pid") and c.signal == "heldout":
            check(
                self.eval.every > 0,
                "constraint.signal",
                "'rollout' unless eval.every > 0 ('heldout' updates lambda at each held-out "
                "evaluation)",
                c.signal,
            )
        if self.eval.every:  # held-out evaluation runs on the batched simulator
            check(
                self.env.id == INTERSECTION_ID
                and not self.review.enabled
                and self.env.max_episode_steps is None,
                "eval.every",
                "0 (no held-out evaluation during training) unless env.id is "
                f"{INTERSECTION_ID} without review.enabled and env.max_episode_steps",
                self.eval.every,
            )
        cars = self.n_controlled
        if cars != 1:  # one slot per car per world: the batched simulator's multi-agent form
            check(
                self.train.vec_env == "batched" and self.env.id == INTERSECTION_ID,
                "train.vec_env",
                f"'batched' on {INTERSECTION_ID} with env.config.n_controlled={cars} "
                "(several controlled cars per world)",
                self.train.vec_env,
            )
        if self.train.vec_env == "batched":
            if self.review.enabled:
                raise ValueError(
                    "review.enabled: the review gate needs per-env wrappers; expected false "
                    "with train.vec_env='batched' (use 'dummy' or 'subproc')"
                )
            check(
                self.env.id == INTERSECTION_ID,
                "train.vec_env",
                "'dummy' or 'subproc' for envs other than bystander/Intersection-v0 ('batched' is its simulator)",
                self.train.vec_env,
            )

    def fingerprint(self, keys: tuple[str, ...] = ()) -> str:
        """SHA-256 of the JSON of the whole config (or of the listed dotted keys)."""
        d = self.to_dict()
        if keys:
            d = {k: get_dotted(d, k) for k in keys}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


# ----------------------------------------------------------------------------- loading


def config_from_dict(data: dict[str, Any] | None) -> RunConfig:
    """Build a validated :class:`RunConfig` from a (partial) nested dict over the defaults
    (each section validates itself when built, the run checks across sections)."""
    return from_dict(RunConfig, data or {})


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
        data = deep_merge(data, base)
    if path is not None:
        data = deep_merge(data, read_yaml(path))
    for text in overrides or []:
        key, value = parse_override(text)
        set_dotted(data, key, value)
    return config_from_dict(data)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write ``cfg`` as YAML (atomically)."""
    from bystander.atomic import atomic_open

    with atomic_open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)


# ------------------------------------------------------------------ hyperparameters
