"""TRL at parity with the built-in GRPO trainer: the cost term moves both the same way.

Both trainers start from the shipped tiny policy, see the same generated tasks, seed,
group size (8), prompts per step (4), learning rate and KL coefficient, and score the
same SLM observer through the same view. Each is run twice: without the observers'
cost, and with it at shaping weight 8 (TRL: ``reward_weights [1, 8]`` with
``normalize_then_sum``, the adapter's documented parity setting). On the same held-out
prompts, the cost term must lower the observer's nats/token in both trainers (and, in
both, lengthen the chain of thought: a per-token cost rewards predictable filler).
The step sizes differ (documented in :mod:`bystander.llm.trl_adapter`), so only the
direction is compared.
"""

from __future__ import annotations

import pytest

from bystander.envs.constraint_config import ConstraintConfig
from bystander.envs.text_tasks import generate_tasks
from bystander.llm.grpo import GRPOTrainer
from bystander.llm.grpo_config import GRPOConfig
from bystander.llm.models import load_causal_lm
from bystander.llm.observers import SLMPredictor
from bystander.llm.trl_adapter import (
    PredictabilityReward,
    TaskReward,
    align_positions,
    tasks_dataset,
    trl_tokenizer,
)

STEPS, LR, WEIGHT, SEED, TOKENS, VIEWS = 12, 3e-4, 8.0, 0, 48, "full"
TRAIN = generate_tasks(64, seed=SEED)
HELDOUT = generate_tasks(48, seed=10_000)


def _config(weight: float) -> GRPOConfig:
    constraint = (
        ConstraintConfig(mode="shaping", weight=weight) if weight else ConstraintConfig(mode="none")
    )
    return GRPOConfig(group_size=8, prompts_per_step=4, max_new_tokens=TOKENS, lr=LR, beta=0.04,
                      views=VIEWS, seed=SEED, constraint=constraint)  # fmt: skip


def _observer(tok):
    slm, slm_tok = load_causal_lm("tiny-slm")
    return SLMPredictor(slm.eval(), slm_tok, policy_tokenizer=tok)


def _ours(weight: float, tmp_path) -> dict[str, float]:
    policy, tok = load_causal_lm("tiny-policy")
    trainer = GRPOTrainer(policy, tok, TRAIN, _observer(tok), _config(weight))
    trainer.train(STEPS)
    return trainer.evaluate(HELDOUT, samples=2)


def _trl(weight: float, tmp_path) -> dict[str, float]:
    import torch
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer as TRLTrainer

    policy, tok = load_causal_lm("tiny-policy")
    observer = _observer(tok)
    args = TRLConfig(output_dir=str(tmp_path / f"trl-{weight}"), per_device_train_batch_size=32,
                     num_generations=8, max_completion_length=TOKENS, max_steps=STEPS,
                     learning_rate=LR, beta=0.04, seed=SEED, temperature=1.0,
                     save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
                     multi_objective_aggregation="normalize_then_sum")  # fmt: skip
    trainer = TRLTrainer(model=policy, args=args, train_dataset=tasks_dataset(TRAIN),
                         reward_funcs=[TaskReward(), PredictabilityReward(observer, tok, views=VIEWS)],
                         processing_class=trl_tokenizer(tok))  # fmt: skip
    align_positions(trainer)
    trainer.reward_weights = torch.tensor([1.0, weight])
    trainer.train()
    # the same evaluation code for both: the TRL-trained weights in a built-in trainer
    judge = GRPOTrainer(trainer.model.eval(), tok, TRAIN, observer, _config(0.0))
    return judge.evaluate(HELDOUT, samples=2)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_the_cost_term_moves_trl_and_the_built_in_trainer_the_same_way(tmp_path):
    pytest.importorskip("trl")
    effects = {}
    for name, run in (("built-in", _ours), ("trl", _trl)):
        plain, shaped = run(0.0, tmp_path), run(WEIGHT, tmp_path)
        effects[name] = {
            "cost": shaped["predictability_cost"] - plain["predictability_cost"],
            "length": shaped["length_mean"] - plain["length_mean"],
        }
    for name, effect in effects.items():
        assert effect["cost"] < 0, (name, effects)
        assert effect["length"] > 0, (name, effects)
