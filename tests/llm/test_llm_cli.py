"""``bystander llm train|evaluate``: train, resume exactly, evaluate (tiny local models)."""

from __future__ import annotations

import json

import pytest

from bystander.envs.text_tokens import byte_tokenizer
from bystander.llm import cli
from bystander.llm.models import TinyConfig, tiny_model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    tok = byte_tokenizer()
    for name, seed in (("policy", 0), ("slm", 1)):
        cfg = TinyConfig(n_layer=1, n_embd=16, n_head=2, n_positions=192, seed=seed)
        tiny_model(cfg, tok).save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return root


def test_train_resume_and_evaluate(models, tmp_path, capsys):
    common = ["--policy", str(models / "policy"), "--observer", str(models / "slm"),
              "--heldout-observer", str(models / "slm"), "--views", "prefix:0.5,full", "--group-size", "2", "--prompts-per-step", "2",
              "--max-new-tokens", "8", "--eval-prompts", "2", "--num-tasks", "8",
              "--constraint", "lagrangian", "--budget", "0.5"]  # fmt: skip
    run = tmp_path / "run"
    assert cli.main(["train", *common, "--steps", "2", "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert "lambda=" in out and "accuracy=" in out
    assert (run / "checkpoint" / "manifest.json").is_file() and (
        run / "policy" / "config.json"
    ).is_file()
    before = json.loads((run / "eval_before.json").read_text())
    assert {"accuracy", "nats/full", "nats/prefix:0.5", "length_mean", "kl",
            "heldout_nats_per_token", "heldout_completion_accuracy",
            "template_entropy_bits"} <= set(before)  # fmt: skip
    assert cli.main(["train", "--resume", str(run), "--steps", "3"]) == 0
    lines = (run / "log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3]
    assert json.loads(lines[2])["lambda"] == pytest.approx(json.loads(lines[1])["lambda_next"])
    result = cli.llm_evaluate({"run_dir": str(run), "eval_prompts": 2, "samples": 1,
                               "heldout_observer": "none"})  # fmt: skip
    assert 0.0 <= result["accuracy"] <= 1.0 and result["nats/full"] > 0
    assert "heldout_nats_per_token" not in result
    with pytest.raises(FileNotFoundError, match="nowhere"):
        cli.main(["train", "--resume", str(tmp_path / "nowhere")])
    with pytest.raises(FileNotFoundError, match="missing_model"):
        cli.llm_train({**cli._config_from_args(cli.build_parser().parse_args(["train", *common])),
                       "policy": str(tmp_path / "missing_model"), "run_dir": str(tmp_path / "r2"),
                       "steps": 1})  # fmt: skip


def test_mounted_in_the_main_cli(capsys):
    from bystander.cli import build_parser

    args = build_parser().parse_args(["llm", "train", "--constraint", "pid", "--kp", "0.5"])
    assert args.constraint == "pid" and args.kp == 0.5 and args.func is not None


def _common(models):
    return ["--policy", str(models / "policy"), "--observer", str(models / "slm"),
            "--views", "full", "--group-size", "2", "--prompts-per-step", "2",
            "--max-new-tokens", "8", "--eval-prompts", "0", "--num-tasks", "8"]  # fmt: skip


def test_resume_refuses_an_edited_config_naming_the_field(models, tmp_path):
    from bystander.checkpointing import CheckpointError

    run = tmp_path / "run"
    assert cli.main(["train", *_common(models), "--steps", "1", "--run-dir", str(run)]) == 0
    cfg = json.loads((run / "config.json").read_text())
    cfg["grpo"]["constraint"] = {"mode": "lagrangian"}
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        CheckpointError, match=r"(?s)another config.*constraint\.mode: checkpoint has .none."
    ):
        cli.main(["train", "--resume", str(run), "--steps", "2"])


def test_resume_refuses_a_damaged_checkpoint(models, tmp_path):
    from bystander.checkpointing import CheckpointError

    run = tmp_path / "run"
    assert cli.main(["train", *_common(models), "--steps", "1", "--run-dir", str(run)]) == 0
    state = run / "checkpoint" / "state.pt"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF
    state.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"corrupt: checksum of state\.pt"):
        cli.main(["train", "--resume", str(run), "--steps", "2"])


def test_resume_drops_log_rows_after_the_checkpoint(models, tmp_path):
    run = tmp_path / "run"
    args = [*_common(models), "--checkpoint-every", "1"]
    assert cli.main(["train", *args, "--steps", "2", "--run-dir", str(run)]) == 0
    log = run / "log.jsonl"
    rows = log.read_text().splitlines()
    # a run that went on to step 3 without a checkpoint, then died mid-line
    log.write_text("\n".join([*rows, rows[-1].replace('"step": 2', '"step": 3'), rows[0][:9]]))
    assert cli.main(["train", "--resume", str(run), "--steps", "3"]) == 0
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [1, 2, 3]


def test_a_second_llm_run_on_one_directory_is_refused(models, tmp_path):
    from bystander.atomic import RunDirBusyError, RunDirLock

    run = tmp_path / "run"
    with RunDirLock(run):
        with pytest.raises(RunDirBusyError, match="in use by another process"):
            cli.main(["train", *_common(models), "--steps", "1", "--run-dir", str(run)])
    assert not (run / "config.json").exists()


def test_heldout_rows_during_training_equal_llm_evaluate_and_survive_a_resume(models, tmp_path):
    """``--eval-every``: one row of ``heldout.csv`` per N GRPO steps, on fixed prompts and a
    fixed sampling seed; the last equals ``llm evaluate`` of the saved policy on the same
    prompts, and a resume keeps the rows up to its checkpoint (not a later one)."""
    import csv

    run, plain = tmp_path / "run", tmp_path / "plain"
    base = ["train", *_common(models), "--steps", "4", "--constraint", "lagrangian",
            "--budget", "0.5", "--checkpoint-every", "2", "--heldout-observer", "none"]  # fmt: skip
    args = [*base, "--run-dir", str(run), "--eval-every", "2", "--eval-every-prompts", "3"]
    assert cli.main(args) == 0

    def rows():
        with open(run / "heldout.csv", encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))

    got = rows()
    assert [int(float(r["step"])) for r in got] == [2, 4]
    # the evaluations draw from their own seeds: training is the same without them
    assert cli.main([*base, "--run-dir", str(plain)]) == 0

    def log(run_dir):
        drop = ("gen_seconds", "score_seconds")
        lines = (run_dir / "log.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k not in drop} for x in lines]

    assert log(plain) == log(run) and not (plain / "heldout.csv").exists()
    assert float(got[-1]["completions"]) == 6.0 and float(got[-1]["lambda"]) > 0
    final = cli.llm_evaluate({"run_dir": str(run), "eval_prompts": 3, "samples": 2,
                              "seed": 1234, "heldout_observer": "none"})  # fmt: skip
    for key in ("accuracy", "predictability_cost", "length_mean", "format_failure"):
        assert float(got[-1][key]) == pytest.approx(final[key], rel=1e-6, abs=1e-9), key
    # a row past the checkpoint (a crash after it) is dropped on resume, then redone
    with open(run / "heldout.csv", "a", encoding="utf-8") as f:
        f.write(",".join("5" if k == "step" else got[-1][k] for k in got[-1]) + "\n")
    assert cli.main(["train", "--resume", str(run), "--steps", "6"]) == 0
    assert [int(float(r["step"])) for r in rows()] == [2, 4, 6]
    with pytest.raises(ValueError, match="eval_every"):
        cli.main(["train", *_common(models), "--run-dir", str(tmp_path / "bad"),
                  "--eval-every", "-1"])  # fmt: skip
    assert not (tmp_path / "bad").exists()


def test_heldout_signal_moves_lambda_once_per_evaluation(models, tmp_path):
    """``constraint.signal: heldout`` (``--constraint-signal heldout``): the GRPO steps
    leave lambda alone and each held-out evaluation moves it once, from its own
    predictability cost; without ``--eval-every`` the run is refused before it starts."""
    import csv

    from bystander.envs.multipliers import LagrangeMultiplier

    run = tmp_path / "run"
    args = ["train", *_common(models), "--steps", "4", "--constraint", "lagrangian",
            "--budget", "0.5", "--lambda-init", "1.0", "--lambda-lr", "0.05",
            "--lambda-step", "relative", "--constraint-signal", "heldout",
            "--heldout-observer", "none", "--run-dir", str(run), "--eval-every", "2",
            "--eval-every-prompts", "3"]  # fmt: skip
    assert cli.main(args) == 0
    lams = [json.loads(x)["lambda"] for x in (run / "log.jsonl").read_text().splitlines()]
    with open(run / "heldout.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    # the same multiplier, fed only the evaluations' costs, gives the logged lambdas
    ref = LagrangeMultiplier(0.5, lr=0.05, init=1.0, max=100.0, step="relative")
    assert [float(r["lambda"]) for r in rows] == [
        1.0,
        ref.update(float(rows[0]["predictability_cost"])),
    ]
    assert lams[:2] == [1.0, 1.0] and lams[2:] == [ref.value] * 2
    with pytest.raises(ValueError, match="constraint.signal: 'heldout'.*--eval-every"):
        cli.main(["train", *_common(models), "--constraint", "lagrangian", "--budget", "0.5",
                  "--constraint-signal", "heldout", "--run-dir", str(tmp_path / "bad")])  # fmt: skip
    assert not (tmp_path / "bad").exists()
