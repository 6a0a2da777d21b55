"""The TRL adapter: reward functions with TRL's signature and the multiplier callback."""

from __future__ import annotations

import numpy as np
import pytest

from bystander.envs.constraints import LagrangeMultiplier
from bystander.envs.text_tasks import generate_tasks
from bystander.envs.text_tokens import byte_tokenizer, encode
from bystander.llm.models import TinyConfig, load_causal_lm, tiny_model
from bystander.llm.observers import SLMPredictor
from bystander.llm.trl_adapter import (
    ConstraintCallback,
    PredictabilityReward,
    TaskReward,
    align_positions,
    attach_constraint,
    tasks_dataset,
    trl_tokenizer,
)

SMALL = TinyConfig(n_layer=1, n_embd=16, n_head=2, n_positions=192, steps=0)


def test_reward_functions_have_trls_signature():
    tok = byte_tokenizer()
    slm = tiny_model(SMALL, tok).eval()
    task = TaskReward()
    out = task(
        prompts=["Q: x\nA:"] * 2,
        completions=["#### 4", "5"],
        completion_ids=[[], []],
        answer=["4", "4"],
    )
    assert out == pytest.approx([1.1, 0.0])
    with pytest.raises(ValueError, match="answer"):
        task(prompts=["p"], completions=["c"], completion_ids=[[]])
    pred = PredictabilityReward(SLMPredictor(slm, tok), tok, views="full")
    ids = [
        encode(tok, " 1 + 1 = 2").tolist() + [tok.eos_token_id, 0, 0],
        encode(tok, " 2").tolist(),
    ]
    metrics = {}
    out = pred(
        ["Q: 1 + 1?\nA:"] * 2, ["", ""], ids, log_metric=lambda k, v: metrics.__setitem__(k, v)
    )
    assert len(out) == 2 and all(np.isfinite(out)) and all(r < 0 for r in out)
    assert pred.pending_costs == pytest.approx([-r for r in out])
    assert metrics["predictability_cost"] == pytest.approx(-np.mean(out))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning")
def _policy_and_cost(tmp_path):
    """A saved-and-reloaded tiny policy (TRL builds its reference policy from the model's
    path), its tokenizer, and the cost reward of a tiny SLM observer."""
    tok = byte_tokenizer()
    tiny_model(SMALL, tok).save_pretrained(tmp_path / "policy")
    tok.save_pretrained(tmp_path / "policy")
    policy, tok = load_causal_lm(str(tmp_path / "policy"))
    slm = tiny_model(TinyConfig(**{**SMALL.__dict__, "seed": 3}), tok).eval()
    return policy, tok, PredictabilityReward(SLMPredictor(slm, tok), tok, views="prefix:0.5,full")


def test_trl_grpo_trainer_runs_and_moves_the_multiplier(tmp_path):
    pytest.importorskip("trl")
    from trl import GRPOConfig, GRPOTrainer

    policy, tok, cost = _policy_and_cost(tmp_path)
    mult = LagrangeMultiplier(budget=0.5, lr=0.1)
    args = GRPOConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        max_steps=2,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        beta=0.04,
        multi_objective_aggregation="normalize_then_sum",
    )
    trainer = GRPOTrainer(
        model=policy,
        reward_funcs=[TaskReward(), cost],
        args=args,
        train_dataset=tasks_dataset(generate_tasks(8)),
        processing_class=trl_tokenizer(tok),
    )
    assert trainer.processing_class(text=["Q: 1 + 1?\nA:"])["input_ids"][0][-1] != tok.eos_token_id
    align_positions(trainer)
    cb = attach_constraint(trainer, ConstraintCallback(mult, cost))
    assert trainer.reward_weights.tolist() == pytest.approx([0.5, 0.5])
    before = [p.detach().clone() for p in policy.parameters()]
    trainer.train()
    assert len(cb.history) == 2
    assert mult.value > 1.0  # the cost (~6 nats/token) is above the budget
    lam = mult.value
    assert trainer.reward_weights.tolist() == pytest.approx([1 / (1 + lam), lam / (1 + lam)])
    assert any(
        not p.detach().equal(b) for p, b in zip(trainer.model.parameters(), before, strict=True)
    )


def test_trl_tokenizer_adds_no_eos_and_the_constraint_needs_normalize_then_sum():
    tok = byte_tokenizer()
    assert tok("ab")["input_ids"][-1] == tok.eos_token_id
    assert trl_tokenizer(tok)("ab")["input_ids"] == tok("ab", add_special_tokens=False)["input_ids"]
    assert tok("ab")["input_ids"][-1] == tok.eos_token_id  # the original is unchanged

    class Fake:
        args = type("Args", (), {"multi_objective_aggregation": "sum_then_normalize"})()

    cb = ConstraintCallback(LagrangeMultiplier(budget=0.5), cost_reward=None)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match="multi_objective_aggregation: expected 'normalize_then_sum'"
    ):
        attach_constraint(Fake(), cb)


def test_a_freshly_pretrained_tiny_model_names_its_cache_path(tmp_path):
    from bystander.llm.models import cached_path, tiny_pair

    cfg = TinyConfig(n_layer=1, n_embd=16, n_head=2, n_positions=64, steps=1, seed=5)
    policy, slm, _ = tiny_pair(cfg, cfg, root=tmp_path)
    # TRL rebuilds its reference model from this path (a cold cache left it empty)
    assert policy.name_or_path == str(cached_path("policy", cfg, tmp_path))
    assert slm.name_or_path == str(cached_path("slm", cfg, tmp_path))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_trl_builds_its_reference_from_a_cold_cache_tiny_policy(tmp_path):
    pytest.importorskip("trl")
    from trl import GRPOConfig, GRPOTrainer

    from bystander.llm.models import tiny_pair

    cfg = TinyConfig(n_layer=1, n_embd=16, n_head=2, n_positions=64, steps=1, seed=6)
    policy, _, tok = tiny_pair(cfg, cfg, root=tmp_path / "cache")  # pretrained just now
    args = GRPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=2,
                      num_generations=2, max_completion_length=4, max_steps=1, beta=0.04,
                      report_to="none", use_cpu=True, save_strategy="no")  # fmt: skip
    trainer = GRPOTrainer(model=policy, reward_funcs=[TaskReward()], args=args,
                          train_dataset=tasks_dataset(generate_tasks(4)),
                          processing_class=trl_tokenizer(tok))  # fmt: skip
    assert trainer.ref_model is not None


def test_align_positions_scores_left_padded_rows_where_they_were_generated():
    import torch

    from bystander.envs.text_tasks import format_prompt

    policy, tok = load_causal_lm("tiny-policy")
    policy.eval()
    prompts = [encode(tok, format_prompt(t.question)).tolist() for t in generate_tasks(2, seed=1)]
    prompts[1] = prompts[1][:-7]  # a shorter row: left-padded
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = (ids != 0).long()
    for row, p in enumerate(prompts):
        mask[row, : width - len(p)] = 0
    torch.manual_seed(0)
    out = policy.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=True,
                          output_scores=True, return_dict_in_generate=True, pad_token_id=0)  # fmt: skip
    new = out.sequences[:, width:]
    at_generation = torch.stack(out.scores, 1).log_softmax(-1).gather(-1, new[..., None])[..., 0]
    full_mask = torch.cat([mask, torch.ones_like(new)], 1)

    def scored() -> torch.Tensor:  # as TRL 1.16 scores: input ids and mask, no positions
        with torch.no_grad():
            logits = policy(input_ids=out.sequences, attention_mask=full_mask).logits
        return logits[:, width - 1 : -1].log_softmax(-1).gather(-1, new[..., None])[..., 0]

    before = scored()
    gap = (before.sum(1) - at_generation.sum(1)).abs()  # nats per completion
    assert gap[0] < 0.01 and gap[1] > 1.0  # the left-padded row is scored at wrong positions
    trainer = type("Trainer", (), {"model": policy, "ref_model": None})()
    assert align_positions(trainer) is trainer
    align_positions(trainer)  # a second call adds no second hook
    # equal up to the cached and uncached forward passes' float differences
    assert torch.allclose(scored(), at_generation, atol=2e-3)


def test_trl_heldout_signal_moves_lambda_at_evaluations_only(tmp_path):
    """``ConstraintCallback(signal="heldout")``: TRL's training steps leave lambda alone,
    each TRL evaluation moves it once from the held-out cost TRL logged for the cost
    reward, and a trainer that never evaluates is refused."""
    pytest.importorskip("trl")
    from trl import GRPOConfig, GRPOTrainer

    policy, tok, cost = _policy_and_cost(tmp_path)

    def trainer_for(eval_strategy: str):
        args = GRPOConfig(
            output_dir=str(tmp_path / f"out-{eval_strategy}"), per_device_train_batch_size=4,
            per_device_eval_batch_size=4, num_generations=4, max_completion_length=8,
            max_steps=4, learning_rate=1e-2, logging_steps=1, save_strategy="no",
            report_to="none", use_cpu=True, seed=0, beta=0.04, eval_strategy=eval_strategy,
            eval_steps=2, multi_objective_aggregation="normalize_then_sum",
        )  # fmt: skip
        return GRPOTrainer(
            model=policy, reward_funcs=[TaskReward(), cost], args=args,
            train_dataset=tasks_dataset(generate_tasks(8)),
            eval_dataset=tasks_dataset(generate_tasks(4, seed=10_000)),
            processing_class=trl_tokenizer(tok),
        )  # fmt: skip

    with pytest.raises(ValueError, match="GRPOConfig.eval_strategy"):
        attach_constraint(trainer_for("no"),
                          ConstraintCallback(LagrangeMultiplier(0.5), cost, signal="heldout"))  # fmt: skip
    with pytest.raises(ValueError, match="signal: expected one of"):
        ConstraintCallback(LagrangeMultiplier(0.5), cost, signal="eval")
    mult = LagrangeMultiplier(budget=0.5, lr=0.1, step="relative")
    trainer = trainer_for("steps")
    align_positions(trainer)
    cb = attach_constraint(trainer, ConstraintCallback(mult, cost, signal="heldout"))
    trainer.train()
    assert [h["step"] for h in cb.history] == [2.0, 4.0] and mult.num_updates == 2
    # the same multiplier fed only the two evaluations' costs ends where this one does
    ref = LagrangeMultiplier(budget=0.5, lr=0.1, step="relative")
    for h in cb.history:
        assert h["lambda"] == ref.update(h["mean_cost"]) and h["mean_cost"] > 0.5
    evals = [r for r in trainer.state.log_history if "eval_rewards/predictability/mean" in r]
    assert [-r["eval_rewards/predictability/mean"] for r in evals] == [
        h["mean_cost"] for h in cb.history
    ]
    assert not cost.pending_costs  # evaluation costs never reach a training update
