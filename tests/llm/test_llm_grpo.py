"""Tiny models, loading, generation edge cases and the GRPO trainer (tiny, untrained models)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bystander.envs.text_tasks import generate_tasks
from bystander.envs.text_tokens import byte_tokenizer, encode
from bystander.llm.grpo import GRPOTrainer, group_normalise
from bystander.llm.grpo_config import GRPOConfig
from bystander.llm.models import (
    TinyConfig,
    generate_group,
    load_causal_lm,
    tiny_model,
    tiny_pair,
)
from bystander.llm.observers import SLMPredictor

SMALL = TinyConfig(n_layer=1, n_embd=16, n_head=2, n_positions=192, steps=0)


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def make_trainer(tok, run_dir=None, **overrides):
    policy = tiny_model(SMALL, tok).eval()
    slm = tiny_model(TinyConfig(**{**SMALL.__dict__, "seed": 5}), tok).eval()
    cfg = GRPOConfig(
        group_size=3,
        prompts_per_step=2,
        max_new_tokens=12,
        lr=1e-2,
        views="prefix:0.5,full",
        **overrides,
    )
    return GRPOTrainer(policy, tok, generate_tasks(6), SLMPredictor(slm, tok), cfg, run_dir=run_dir)


def params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_group_normalise():
    x = np.array([1.0, 2.0, 3.0, 5.0, 5.0, 9.0])
    groups = np.array([0, 0, 0, 1, 1, 1])
    valid = np.array([True, True, True, True, True, False])
    out = group_normalise(x, groups, valid)
    assert out[:3].mean() == pytest.approx(0.0) and out[:3].std() == pytest.approx(1.0, abs=1e-3)
    assert out[3:].tolist() == [0.0, 0.0, 0.0]  # equal rewards: no signal; invalid: 0


def test_tiny_pair_is_built_cached_and_loadable(tmp_path, tok):
    cfg_p = TinyConfig(
        n_layer=1, n_embd=16, n_head=2, n_positions=128, steps=3, batch_size=4, num_tasks=20
    )
    cfg_s = TinyConfig(
        n_layer=1,
        n_embd=8,
        n_head=2,
        n_positions=128,
        steps=2,
        batch_size=4,
        num_tasks=20,
        mask_noise=0.5,
    )
    policy, slm, tk = tiny_pair(cfg_p, cfg_s, root=tmp_path)
    dirs = sorted(p.name for p in (tmp_path / "tiny").iterdir())
    assert [d.split("-")[0] for d in dirs] == ["policy", "slm"]
    again, _, _ = tiny_pair(cfg_p, cfg_s, root=tmp_path)  # from the cache
    assert torch.equal(params(policy), params(again))
    # from_pretrained round trip through our loader
    policy.save_pretrained(tmp_path / "saved")
    tk.save_pretrained(tmp_path / "saved")
    model, tk2 = load_causal_lm(str(tmp_path / "saved"))
    assert torch.equal(params(model), params(policy))
    assert tk2(" 7", add_special_tokens=False)["input_ids"] == encode(tok, " 7").tolist()


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        load_causal_lm(str(tmp_path / "no_such_model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_causal_lm(str(tmp_path / "empty"))
    with pytest.raises(OSError, match="not-a-real-org/not-a-model"):
        load_causal_lm("not-a-real-org/not-a-model")


def test_generation_edge_cases(tok):
    policy = tiny_model(SMALL, tok).eval()
    prompt = encode(tok, "Q: 1 + 1?\nA:")
    torch.manual_seed(0)
    out = generate_group(policy, tok, [prompt, prompt[:5]], 3, max_new_tokens=8)
    assert len(out) == 6 and all(c.dtype == np.int64 and len(c) <= 8 for c in out)
    torch.manual_seed(0)
    again = generate_group(policy, tok, [prompt, prompt[:5]], 3, max_new_tokens=8)
    assert all(np.array_equal(a, b) for a, b in zip(out, again, strict=True))
    long = encode(tok, "9" * 190)
    with pytest.raises(ValueError, match="exceeds the policy's context"):
        generate_group(policy, tok, [long], 2, max_new_tokens=8)
    assert (
        len(generate_group(policy, tok, [long], 2, max_new_tokens=8, truncate_prompt="left")) == 2
    )
    with pytest.raises(ValueError, match="empty prompt"):
        generate_group(policy, tok, [np.zeros(0, dtype=np.int64)], 2)
    with pytest.raises(ValueError, match="group_size"):
        GRPOConfig(group_size=1)
    with pytest.raises(ValueError, match="constraint"):
        GRPOConfig(constraint={"mode": "hard"})


def test_grpo_steps_change_policy_and_move_the_multiplier(tok, tmp_path):
    trainer = make_trainer(
        tok, run_dir=tmp_path, constraint={"mode": "lagrangian", "budget": 0.5, "lambda_lr": 0.2}
    )
    before = params(trainer.policy)
    logs = trainer.train(2)
    assert not torch.equal(before, params(trainer.policy))
    assert torch.equal(before, params(trainer.ref_policy))  # the reference stays frozen
    assert trainer.multiplier.value > 1.0  # cost (~6 nats/token) above the budget
    assert logs[1]["lambda"] == pytest.approx(logs[0]["lambda_next"])
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    for key in ["reward", "accuracy", "kl", "lambda", "length_mean", "escalations",
                "nats/prefix:0.5", "nats/full", "predictability_cost"]:  # fmt: skip
        assert key in lines[0]
    assert lines[1]["kl"] > 0.0
    assert np.isfinite(lines[0]["nats/full"]) and lines[0]["nats/full"] > 0


def test_checkpoint_resume_is_exact(tok, tmp_path):
    straight = make_trainer(tok, constraint={"mode": "pid", "budget": 0.5}, co_train=True)
    logs = straight.train(3)
    first = make_trainer(tok, constraint={"mode": "pid", "budget": 0.5}, co_train=True)
    first.train(2)
    first.save_checkpoint(tmp_path / "ck.pt")
    assert not (tmp_path / "ck.pt.tmp").exists()
    torch.manual_seed(123)  # whatever happens in between must not matter
    resumed = make_trainer(tok, constraint={"mode": "pid", "budget": 0.5}, co_train=True)
    resumed.load_checkpoint(tmp_path / "ck.pt")
    log = resumed.step()
    assert torch.equal(params(resumed.policy), params(straight.policy))
    assert torch.equal(params(resumed.predictors.model), params(straight.predictors.model))
    assert resumed.multiplier.value == straight.multiplier.value
    for key in ("reward", "kl", "loss", "lambda", "nats/full", "length_mean"):
        assert log[key] == logs[2][key]
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        resumed.load_checkpoint(tmp_path / "missing.pt")


def test_review_gate_withholds_or_flags_and_counts(tok):
    withhold = make_trainer(tok, review_threshold=0.0, review_mode="withhold")
    before = params(withhold.policy)
    log = withhold.step()
    assert log["escalations"] == 6 and log["withheld"] == 6 and withhold.escalations == 6
    assert torch.equal(before, params(withhold.policy))  # everything withheld: no update
    assert len(withhold.review_queue) == 6 and withhold.review_queue[0]["withheld"]
    flag = make_trainer(
        tok, review_threshold=0.0, review_mode="flag", constraint={"mode": "lagrangian"}
    )
    log = flag.step()
    assert log["escalations"] == 6 and log["withheld"] == 0
    assert not torch.equal(before, params(flag.policy))
    off = make_trainer(tok, review_threshold=1e9)
    assert off.step()["escalations"] == 0


def test_shaping_and_min_length_guard(tok):
    trainer = make_trainer(
        tok,
        constraint={"mode": "shaping", "weight": 0.1},
        min_length=1000,
        length_penalty=0.5,
    )
    log = trainer.step()
    assert log["reward"] == pytest.approx(log["task_reward"] - 0.5)
    assert trainer.multiplier is None
    out = trainer.evaluate(num_prompts=2, samples=2)
    assert set(out) >= {"accuracy", "reward", "length_mean", "nats/full", "predictability_cost"}
    assert out["short_fraction"] == 1.0  # every completion is under the guard's 1000 tokens
    assert out["kl"] > 0.0  # one step (lr 1e-2) moved the policy off its reference
    assert out["completions"] == 4.0 and 0.0 <= out["template_entropy_bits"] <= np.log2(5)
    assert sum(v for k, v in out.items() if k.startswith("template/")) == pytest.approx(1.0)
    assert "heldout_nats_per_token" not in out  # no held-out observer given


def test_evaluation_with_a_held_out_observer_never_rewards_it(tok):
    held = SLMPredictor(tiny_model(TinyConfig(**{**SMALL.__dict__, "seed": 8}), tok).eval(), tok)
    trainer = make_trainer(tok, constraint={"mode": "shaping", "weight": 1.0})
    trainer.heldout = held
    before = params(held.model).clone()
    assert trainer.evaluate(num_prompts=2, samples=1)["kl"] == pytest.approx(0.0, abs=1e-6)
    trainer.step()
    out = trainer.evaluate(num_prompts=2, samples=2)
    assert out["heldout_nats_per_token"] > 0 and 0.0 <= out["heldout_completion_accuracy"] <= 1
    assert out["kl"] > 0.0
    assert torch.equal(params(held.model), before)


def test_empty_completions_get_the_worst_cost_not_zero(tok):
    trainer = make_trainer(tok)
    prompt = encode(tok, "Q: 1?\nA:")
    comps = [encode(tok, " 1 + 1 = 2"), np.zeros(0, dtype=np.int64), encode(tok, " 2")]
    errors, cost, _ = trainer._costs([prompt] * 3, ["Q: 1?\nA:"] * 3, comps)
    assert np.isnan(errors[1]).all()
    assert cost[1] == pytest.approx(np.nanmax(errors)) and cost[1] > 0


def test_lambda_min_reaches_the_shared_multiplier():
    def make_multiplier(cfg):
        return cfg.constraint.make_multiplier()

    m = make_multiplier(
        GRPOConfig(constraint={"mode": "lagrangian", "lambda_init": 1.0, "lambda_min": 0.1})
    )
    assert m is not None and m.min == 0.1
    with pytest.raises(ValueError, match="lambda_min"):
        make_multiplier(GRPOConfig(constraint={"mode": "pid", "lambda_min": 0.1}))


def test_a_checkpoint_that_does_not_fit_leaves_the_trainer_unchanged(tok, tmp_path):
    from bystander.checkpointing import CheckpointError

    small = make_trainer(tok)
    small.train(1)
    small.save_checkpoint(tmp_path / "ck")
    other = make_trainer(tok)
    # the same GRPO config, a policy of another size: the state cannot fit
    other.policy = tiny_model(TinyConfig(**{**SMALL.__dict__, "n_embd": 32}), tok).eval()
    other.optimizer = torch.optim.AdamW(other.policy.parameters(), lr=1e-2)
    before, step = params(other.policy).clone(), other.step_count
    with pytest.raises(CheckpointError, match="does not fit this trainer"):
        other.load_checkpoint(tmp_path / "ck")
    assert torch.equal(params(other.policy), before) and other.step_count == step


def test_grpo_steps_leave_a_heldout_signal_multiplier_alone(tok) -> None:
    """``constraint.signal: heldout``: the GRPO step does not update lambda (the held-out
    evaluations do: ``tests/llm/test_llm_cli.py``); with ``rollout`` it does."""
    for signal, moved in (("heldout", False), ("rollout", True)):
        trainer = make_trainer(tok, constraint={"mode": "lagrangian", "budget": 0.01,
                                                "lambda_init": 1.0, "signal": signal})  # fmt: skip
        trainer.step()
        assert (trainer.multiplier.num_updates > 0) == moved
        assert (trainer.multiplier.value != 1.0) == moved


def test_training_prompts_stay_their_own_after_an_evaluation_on_other_tasks(tok):
    """Regression: prompt ids were cached by task index, so after ``evaluate`` on held-out
    tasks, training task ``i`` was shown held-out prompt ``i`` and rewarded against its
    own answer (and the reverse for an evaluation after training)."""
    from bystander.envs.text_tasks import format_prompt

    trainer = make_trainer(tok)
    held = generate_tasks(4, seed=10_000)
    trainer.evaluate(held, samples=1)
    for i, task in enumerate(trainer.tasks):
        assert np.array_equal(trainer._prompt_ids(i), encode(tok, format_prompt(task.question)))
    trainer.step()
    trainer.evaluate(held, samples=1)
    saved, trainer.tasks = trainer.tasks, held
    try:
        seen = [trainer._prompt_ids(i) for i in range(len(held))]
    finally:
        trainer.tasks = saved
    for ids, task in zip(seen, held, strict=True):
        assert np.array_equal(ids, encode(tok, format_prompt(task.question)))
