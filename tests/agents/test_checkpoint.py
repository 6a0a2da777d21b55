"""Checkpoints: exact resume, atomic writes, corrupt or mismatched checkpoints refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bystander.agents import checkpoint as ck
from bystander.agents.training import Trainer
from bystander.config import load_config

# A small, fast run on the intersection: 2 envs x 64 steps per rollout, Lagrangian
# constraint on the predictability channel (so the multiplier state matters too),
# VecNormalize on (so its statistics matter too).
BASE = [
    "train.vec_env=dummy",
    "train.n_envs=2",
    "train.hyperparams.n_steps=64",
    "train.hyperparams.batch_size=64",
    "train.hyperparams.n_epochs=2",
    "train.tensorboard=false",
    "train.normalize=true",
    "constraint.mode=lagrangian",
    "constraint.budget=1.0",
    "constraint.lambda_lr=0.05",
    "constraint.lambda_init=0.1",
    "constraint.lambda_max=5.0",
    "constraint.delay=0",
    "env.config.max_cycles=60",
]


def _cfg(tmp_path: Path, *extra: str):
    return load_config(overrides=[*BASE, f"runs_dir={tmp_path}", *extra])


def _params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.policy.state_dict().items()}


def _next_actions(trainer: Trainer, n: int = 20) -> list[np.ndarray]:
    """Step the training vec env with the policy's sampled actions (torch RNG included)."""
    env, obs, out = trainer.venv, trainer.model._last_obs, []
    for _ in range(n):
        action, _ = trainer.model.predict(obs, deterministic=False)
        out.append(action.copy())
        obs, _, _, _ = env.step(action)
        out.append(obs.copy())
    return out


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory: pytest.TempPathFactory):
    """Train 256 steps with a checkpoint at 128; keep the trainer for comparisons."""
    tmp = tmp_path_factory.mktemp("straight")
    cfg = _cfg(tmp, "train.total_timesteps=256", "train.checkpoint_every=128")
    trainer = Trainer(cfg, run_dir=tmp / "run")
    result = trainer.train()
    yield trainer, result, cfg
    trainer.close()


def test_resume_reproduces_the_same_next_steps(straight_run, tmp_path: Path) -> None:
    trainer, result, cfg = straight_run
    first = ck.list_checkpoints(result.run_dir)[0]
    assert first.name == "step_000000128"
    resumed = Trainer(cfg, run_dir=tmp_path / "resumed", resume=first)
    try:
        assert resumed.model.num_timesteps == 128
        r2 = resumed.train()
        assert r2.steps == result.steps == 256
        a, b = _params(trainer), _params(resumed)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
        oa = trainer.model.policy.optimizer.state_dict()["state"]
        ob = resumed.model.policy.optimizer.state_dict()["state"]
        for k in oa:
            assert torch.equal(oa[k]["exp_avg_sq"], ob[k]["exp_avg_sq"])
        assert resumed.multipliers["predictability"].state_dict() == (
            trainer.multipliers["predictability"].state_dict()
        )
        assert np.array_equal(trainer.venv.obs_rms.mean, resumed.venv.obs_rms.mean)
        # and the next steps (policy sampling, env dynamics, normalisation) agree too
        ca, cb = ck.capture_rng(), None
        steps_a = _next_actions(trainer)
        cb = ck.capture_rng()
        ck.restore_rng(ca)
        steps_b = _next_actions(resumed)
        ck.restore_rng(cb)
        for x, y in zip(steps_a, steps_b, strict=True):
            assert np.array_equal(x, y)
    finally:
        resumed.close()


def test_multiplier_moved_and_is_synced_into_envs(straight_run) -> None:
    trainer, result, _ = straight_run
    lam = trainer.multipliers["predictability"].value
    assert lam != pytest.approx(0.1)  # updated once per rollout
    in_envs = trainer.venv.env_method("get_lambda", "predictability")
    assert in_envs == [pytest.approx(lam)] * 2
    assert result.lambdas["predictability"] == pytest.approx(lam)


def test_checkpoint_contents_and_manifest(straight_run) -> None:
    _, result, _ = straight_run
    path = result.checkpoint
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["step"] == 256 and manifest["format"] == ck.FORMAT_VERSION
    for name in ("model.zip", "vecnormalize.pkl", "envs.pkl", "multipliers.json", "rng.pkl"):
        assert name in manifest["files"], name
    loaded = ck.load_checkpoint(result.run_dir)  # a run dir resolves to the latest
    assert loaded.path == path and loaded.step == 256
    assert len(loaded.env_snapshots) == 2


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_corrupt_file_is_refused(straight_run, tmp_path: Path) -> None:
    _, result, cfg = straight_run
    bad = _copy(result.checkpoint, tmp_path / "step_000000256")
    data = bytearray((bad / "model.zip").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "model.zip").write_bytes(bytes(data))
    with pytest.raises(ck.CheckpointError, match=r"corrupt: checksum of model\.zip"):
        ck.load_checkpoint(bad, config=cfg)
    with pytest.raises(ck.CheckpointError, match="corrupt"):
        Trainer(cfg, run_dir=tmp_path / "r", resume=bad)


def test_truncated_and_missing_files_are_refused(straight_run, tmp_path: Path) -> None:
    _, result, cfg = straight_run
    a = _copy(result.checkpoint, tmp_path / "a" / "step_000000256")
    (a / "envs.pkl").write_bytes((a / "envs.pkl").read_bytes()[:100])
    with pytest.raises(ck.CheckpointError, match=r"envs\.pkl has 100 bytes"):
        ck.load_checkpoint(a)
    b = _copy(result.checkpoint, tmp_path / "b" / "step_000000256")
    (b / "rng.pkl").unlink()
    with pytest.raises(ck.CheckpointError, match=r"rng\.pkl is missing"):
        ck.load_checkpoint(b)
    c = _copy(result.checkpoint, tmp_path / "c" / "step_000000256")
    (c / "manifest.json").unlink()
    with pytest.raises(ck.CheckpointError, match="manifest.json is missing"):
        ck.load_checkpoint(c)
    d = _copy(result.checkpoint, tmp_path / "d" / "step_000000256")
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(ck.CheckpointError, match="not valid JSON"):
        ck.load_checkpoint(d)
    with pytest.raises(ck.CheckpointError, match="no checkpoint found"):
        ck.load_checkpoint(tmp_path / "empty")


def test_mismatched_config_is_refused_naming_fields(straight_run, tmp_path: Path) -> None:
    _, result, _ = straight_run
    other = _cfg(tmp_path, "train.n_envs=4", "constraint.mode=pid")
    with pytest.raises(ck.CheckpointError) as e:
        Trainer(other, run_dir=tmp_path / "r", resume=result.run_dir)
    msg = str(e.value)
    assert "train.n_envs: checkpoint has 2, this run has 4" in msg
    assert "constraint.mode" in msg
    # the training envs' overrides and the policy's prior are structural too
    learner = _cfg(
        tmp_path,
        "train.entropy_prior=[0.05, 0.45, 0.05, 0.15, 0.15, 0.15]",
        "env.train_overrides={start_target_speeds: [0, 6, 12]}",
    )
    with pytest.raises(ck.CheckpointError, match="train.entropy_prior") as e:
        ck.check_compatible(ck.load_checkpoint(result.run_dir).config, learner)
    assert "env.train_overrides" in str(e.value)
    # non-structural fields (the budget of steps) may change on resume
    longer = _cfg(tmp_path, "train.total_timesteps=512")
    ck.check_compatible(ck.load_checkpoint(result.run_dir).config, longer)


def test_crash_mid_write_leaves_previous_checkpoint_loadable(straight_run, tmp_path: Path) -> None:
    trainer, result, cfg = straight_run
    ckdir = _copy(result.run_dir / "checkpoints", tmp_path / "checkpoints")
    before = sorted(p.name for p in ckdir.iterdir())

    class Boom(RuntimeError):
        pass

    real_save = trainer.model.save

    def crashing_save(path, *a, **k):
        real_save(path, *a, **k)
        raise Boom("power cut")

    trainer.model.save = crashing_save  # type: ignore[method-assign]
    try:
        with pytest.raises(Boom):
            ck.save_checkpoint(
                ckdir,
                model=trainer.model,
                config=cfg,
                step=999,
                multipliers=trainer.multipliers,
            )
    finally:
        del trainer.model.save
    assert sorted(p.name for p in ckdir.iterdir()) == before  # no partial step_, no tmp
    assert ck.load_checkpoint(ckdir).step == 256


def test_rewriting_the_same_step_replaces_it(straight_run, tmp_path: Path) -> None:
    trainer, _, cfg = straight_run
    d = tmp_path / "ck"
    p1 = ck.save_checkpoint(d, model=trainer.model, config=cfg, step=5)
    p2 = ck.save_checkpoint(d, model=trainer.model, config=cfg, step=5, state={"x": 1})
    assert p1 == p2 and ck.load_checkpoint(d).state["x"] == 1
    assert sorted(p.name for p in d.iterdir()) == ["latest", "step_000000005"]


@pytest.mark.parametrize(
    ("edit", "match"),
    [(lambda m: m.pop("files"), "'files' must map"),
     (lambda m: m["files"]["model.zip"].pop("bytes"), "'files' must map"),
     (lambda m: m["files"].update({"../escape": m["files"]["rng.pkl"]}), "'files' must map"),
     (lambda m: m["files"].pop("config.yaml"), r"no entry for \['config.yaml'\]"),
     (lambda m: m.update(step="256"), "no int 'step'")],
    ids=["no-files", "no-bytes", "path", "no-config", "step-str"],
)  # fmt: skip
def test_a_malformed_manifest_is_refused(straight_run, tmp_path: Path, edit, match) -> None:
    _, result, _ = straight_run
    bad = _copy(result.checkpoint, tmp_path / "step_000000256")
    manifest = json.loads((bad / "manifest.json").read_text())
    edit(manifest)
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ck.CheckpointError, match=match):
        ck.load_checkpoint(bad)


def test_the_cli_verifies_a_checkpoint_before_reading_its_config(
    straight_run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bystander.cli import main

    _, result, _ = straight_run
    bad = _copy(result.checkpoint, tmp_path / "run" / "checkpoints" / "step_000000256")
    (bad / "config.yaml").write_bytes(b"train: [\xff")
    assert main(["train", "--resume", str(bad), "--no-evaluate"]) == 2
    assert "is corrupt: file config.yaml has 9 bytes" in capsys.readouterr().err


def test_leftovers_of_interrupted_writes_are_removed_by_the_next_write(
    straight_run, tmp_path: Path
) -> None:
    trainer, _, _ = straight_run
    (tmp_path / ".tmp-killed" / "x").mkdir(parents=True)
    (tmp_path / ".old-killed").mkdir()
    ck.save_checkpoint(tmp_path, model=trainer.model, config=trainer.cfg, step=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_000000001"]


def test_a_checkpoint_a_kill_left_moved_aside_is_found_and_kept(
    straight_run, tmp_path: Path
) -> None:
    import shutil

    _, result, _ = straight_run
    ckpts = tmp_path / "run" / "checkpoints"
    shutil.copytree(result.checkpoint.parent, ckpts)
    newest = sorted(ckpts.glob("step_*"))[-1]
    aside = ckpts / ".old-killed"
    aside.mkdir()
    newest.rename(aside / newest.name)  # a kill between the two renames of a replace
    assert ck.load_checkpoint(tmp_path / "run").path == newest  # put back, not an older one
    newest.rename(aside / newest.name)
    trainer, _, _ = straight_run  # the next write of another step keeps it too
    ck.save_checkpoint(ckpts, model=trainer.model, config=trainer.cfg, step=999)
    assert newest.is_dir() and not aside.exists()
