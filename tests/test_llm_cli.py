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
              "--views", "prefix:0.5,full", "--group-size", "2", "--prompts-per-step", "2",
              "--max-new-tokens", "8", "--eval-prompts", "2", "--num-tasks", "8",
              "--constraint", "lagrangian", "--budget", "0.5"]  # fmt: skip
    run = tmp_path / "run"
    assert cli.main(["train", *common, "--steps", "2", "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert "lambda=" in out and "accuracy=" in out
    assert (run / "checkpoint.pt").is_file() and (run / "policy" / "config.json").is_file()
    before = json.loads((run / "eval_before.json").read_text())
    assert {"accuracy", "nats/full", "nats/prefix:0.5", "length_mean"} <= set(before)
    assert cli.main(["train", "--resume", str(run), "--steps", "3"]) == 0
    lines = (run / "log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3]
    assert json.loads(lines[2])["lambda"] == pytest.approx(json.loads(lines[1])["lambda_next"])
    result = cli.llm_evaluate({"run_dir": str(run), "eval_prompts": 2, "samples": 1})
    assert 0.0 <= result["accuracy"] <= 1.0 and result["nats/full"] > 0
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
