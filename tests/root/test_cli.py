"""The ``bystander`` command line and the run config: help, overrides, validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bystander.cli import build_parser, main
from bystander.config import (
    RunConfig,
    config_from_dict,
    load_config,
    parse_override,
    resolved_hyperparams,
    save_config,
)

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"
SUBCOMMANDS = ["train", "evaluate", "render", "demo", "config"]


def test_help_top_level(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in SUBCOMMANDS:
        assert cmd in out


@pytest.mark.parametrize("cmd", SUBCOMMANDS)
def test_help_every_subcommand(cmd: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"bystander {cmd}" in out and "--help" in out


def test_llm_subcommand_help_when_mounted(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    if "llm" not in sub.choices:  # type: ignore[attr-defined]
        pytest.skip("bystander.llm.cli not available")
    with pytest.raises(SystemExit) as e:
        main(["llm", "--help"])
    assert e.value.code == 0


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "COMMAND" in capsys.readouterr().out


def test_config_command_applies_flags_then_set(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "config",
            "-c",
            str(CONFIGS / "lagrangian.yaml"),
            "--n-envs",
            "3",
            "--predictor",
            "cv",
            "--budget",
            "7.5",
            "--cost-normalization",
            "per_step",
            "--lambda-min",
            "0.01",
            "--set",
            "train.n_envs=5",
            "--set",
            "env.config.n_cars=2",
        ]
    )
    assert rc == 0
    d = yaml.safe_load(capsys.readouterr().out)
    assert d["constraint"]["mode"] == "lagrangian"
    assert d["constraint"]["budget"] == 7.5
    assert d["constraint"]["cost_normalization"] == "per_step"
    assert d["constraint"]["lambda_min"] == 0.01
    assert d["predictor"]["kind"] == "constant_velocity"
    assert d["train"]["n_envs"] == 5  # --set wins over the flag
    assert d["env"]["config"]["n_cars"] == 2  # merged into the default env config


def test_bad_override_exits_2_naming_the_field(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--set", "train.n_envs=0"]) == 2
    err = capsys.readouterr().err
    assert "train.n_envs" in err and ">= 1" in err


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.name and cfg.train.total_timesteps >= 1


@pytest.mark.parametrize(
    ("override", "exc", "words"),
    [
        ("train.n_envs=0", ValueError, ["train.n_envs", ">= 1"]),
        ("train.n_envs=abc", TypeError, ["train.n_envs", "int"]),
        ("train.algo=a2c", ValueError, ["train.algo", "ppo"]),
        ("train.vec_env=threads", ValueError, ["train.vec_env", "subproc"]),
        ("constraint.mode=hard", ValueError, ["constraint.mode", "lagrangian"]),
        ("constraint.budget=-1", ValueError, ["constraint.budget", ">= 0"]),
        (
            "constraint.cost_normalization=mean",
            ValueError,
            ["constraint.cost_normalization", "per_step", "'mean'"],
        ),
        ("constraint.lambda_max=0.01", ValueError, ["constraint.lambda_max", "lambda_init"]),
        ("constraint.lambda_min=0.5", ValueError, ["constraint.lambda_min", "lambda_init (0.02)"]),
        ("constraint.lambda_min=-1", ValueError, ["constraint.lambda_min", "[0, "]),
        ("predictor.kind=oracle", ValueError, ["predictor.kind", "constant_velocity"]),
        ("predictor.kind=frozen", ValueError, ["predictor.path"]),
        ("predictor.horizon=0", ValueError, ["predictor.horizon"]),
        ("train.hyperparams.nsteps=8", ValueError, ["train.hyperparams.nsteps", "n_steps"]),
        ("train.hyperparams.gamma=1.5", ValueError, ["train.hyperparams.gamma", "[0, 1]"]),
        ("train.bogus=1", ValueError, ["train.bogus", "unknown"]),
        ("bogus.key=1", ValueError, ["bogus", "unknown"]),
        ("train=3", TypeError, ["train", "mapping"]),
        ("eval.episodes=0", ValueError, ["eval.episodes"]),
        ("train.normalize=maybe", TypeError, ["train.normalize", "bool"]),
        ("noequals", ValueError, ["KEY=VALUE"]),
    ],
)
def test_override_validation(override: str, exc: type, words: list[str]) -> None:
    with pytest.raises(exc) as e:
        load_config(overrides=[override])
    for w in words:
        assert w in str(e.value)


def test_lambda_min_reaches_the_multiplier_and_is_refused_for_pid() -> None:
    from bystander.agents.training import build_multipliers

    cfg = load_config(overrides=["constraint.mode=lagrangian", "constraint.lambda_min=0.01"])
    (m,) = build_multipliers(cfg).values()
    assert m.min == 0.01
    with pytest.raises(ValueError, match="constraint.lambda_min.*'pid'"):
        load_config(overrides=["constraint.mode=pid", "constraint.lambda_min=0.01"])


def test_override_values_are_typed() -> None:
    cfg = load_config(
        overrides=[
            "train.hyperparams.learning_rate=3e-4",
            "train.net_arch=[32, 32]",
            "train.max_minutes=null",
            "constraint.channel=null",
            "constraint.mode=shaping",
            "predictor.kind=none",
            "env.id=CartPole-v1",
            "train.vec_env=dummy",
        ]
    )
    assert cfg.train.net_arch == [32, 32]
    assert cfg.train.max_minutes is None
    assert cfg.constraint.channel is None
    assert resolved_hyperparams(cfg.train)["learning_rate"] == pytest.approx(3e-4)
    assert resolved_hyperparams(cfg.train)["n_steps"] >= 1  # PPO defaults kept
    assert parse_override("a.b= 1.5") == ("a.b", 1.5)


def test_predictability_channel_needs_a_predictor() -> None:
    with pytest.raises(ValueError, match="constraint.channel"):
        load_config(overrides=["predictor.kind=none", "constraint.mode=lagrangian"])


def test_algo_defaults_follow_the_algorithm() -> None:
    cfg = load_config(CONFIGS / "sac_continuous.yaml")
    hp = resolved_hyperparams(cfg.train)
    assert cfg.train.algo == "sac" and "n_steps" not in hp


def test_saved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(overrides=["train.seed=9", "env.config.n_cars=1", "name=x"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert config_from_dict(cfg.to_dict()) == cfg
    assert RunConfig().fingerprint() != cfg.fingerprint()


def test_yaml_base_chain(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: a\ntrain:\n  seed: 3\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nname: b\ntrain:\n  n_envs: 2\n")
    cfg = load_config(tmp_path / "b.yaml")
    assert (cfg.name, cfg.train.seed, cfg.train.n_envs) == ("b", 3, 2)
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_demo_egos_use_the_shipped_constraint_configs() -> None:
    """The demo's Lagrangian ego trains as experiments/configs/conditioned.yaml: its env,
    learner, held-out evaluations and constraint (one truth: the YAML; the demo cannot
    read it once installed); the unconstrained ego in the same world with PPO's own
    sampling."""
    from dataclasses import asdict

    from bystander.demo import demo_configs

    egos = demo_configs()
    shipped = load_config(CONFIGS / "conditioned.yaml")
    ego = egos["lagrangian"]
    assert ego.constraint == shipped.constraint and ego.env == shipped.env
    budget = {"total_timesteps", "max_minutes"}  # the demo's own (FULL)
    train = {k: v for k, v in asdict(ego.train).items() if k not in budget}
    assert train == {k: v for k, v in asdict(shipped.train).items() if k not in budget}
    assert (ego.eval.every, ego.eval.heldout_episodes) == (
        shipped.eval.every, shipped.eval.heldout_episodes)  # fmt: skip
    free = egos["unconstrained"]
    assert free.constraint.mode == "none" and free.env == ego.env  # same world, comparable ADE
    assert free.train.exploration_hold == 0 and free.train.n_envs == ego.train.n_envs


@pytest.mark.parametrize(
    ("content", "words"),
    [(b"train: [1, 2\n", ["invalid YAML"]), (b"name: \xff\xfe\n", ["UTF-8"])],
    ids=["invalid-yaml", "not-utf8"],
)
def test_a_bad_config_file_exits_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, words: list[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content)
    assert main(["config", "-c", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and all(w in err for w in words)


def test_config_refuses_an_invalid_env_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--set", "env.config.dt=-1"]) == 2
    assert "env.config.dt: expected a finite number > 0" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", [["render", "RUN", "--max-steps", "-1"],
                                 ["render", "RUN", "--max-steps", "0"]])  # fmt: skip
def test_render_refuses_a_non_positive_frame_count(
    cmd: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main(cmd)
    assert e.value.code == 2 and "expected an int >= 1" in capsys.readouterr().err


def test_an_unknown_model_offline_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    if "llm" not in sub.choices:  # type: ignore[attr-defined]
        pytest.skip("bystander.llm.cli not available")
    run = tmp_path / "run"
    rc = main(["llm", "train", "--policy", "no-such-org/no-such-model", "--steps", "1",
               "--run-dir", str(run)])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "no-such-org/no-such-model" in err and "Traceback" not in err
    assert not run.exists()  # the rejected run left nothing behind


def test_heldout_evaluation_needs_the_batched_simulator() -> None:
    with pytest.raises(ValueError, match=r"^eval\.every: expected 0"):
        config_from_dict({"eval": {"every": 1000}, "review": {"enabled": True},
                          "train": {"vec_env": "dummy"}})  # fmt: skip
