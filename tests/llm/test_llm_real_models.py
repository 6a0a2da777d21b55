"""Real architectures on CPU: Qwen2- and Llama-style models built from configs, with a
tokenizer built locally (nothing downloads), through the built-in trainer and the TRL
recipe (``experiments/recipes/trl_real_models.py``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bystander.envs.text_tasks import generate_tasks
from bystander.envs.text_tokens import byte_tokenizer
from bystander.llm.grpo import GRPOTrainer
from bystander.llm.grpo_config import GRPOConfig
from bystander.llm.models import load_causal_lm
from bystander.llm.observers import SLMPredictor

ROOT = Path(__file__).resolve().parents[2]


def bpe_tokenizer():
    """A byte-level BPE tokenizer trained on generated text (as real models' are)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from bystander.llm.models import pretraining_texts

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<pad>", "<eos>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator(pretraining_texts(generate_tasks(300, seed=7)), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>")  # fmt: skip


@pytest.fixture(scope="module")
def real_models(tmp_path_factory):
    """``qwen`` (policy, BPE), ``llama`` (observer, BPE), ``llama-byte`` (observer, bytes)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    root = tmp_path_factory.mktemp("real")
    bpe, byt = bpe_tokenizer(), byte_tokenizer()
    common = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2,
              "max_position_embeddings": 512}  # fmt: skip
    torch.manual_seed(0)
    specs = [("qwen", Qwen2ForCausalLM, Qwen2Config, bpe), ("llama", LlamaForCausalLM, LlamaConfig, bpe),
             ("llama-byte", LlamaForCausalLM, LlamaConfig, byt)]  # fmt: skip
    for name, model_cls, config_cls, tok in specs:
        cfg = config_cls(vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id,
                         tie_word_embeddings=True, **common)  # fmt: skip
        model_cls(cfg).save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return root


@pytest.mark.slow
def test_builtin_trainer_on_qwen2_policy_with_llama_observers(real_models):
    policy, tok = load_causal_lm(str(real_models / "qwen"))
    assert type(policy).__name__ == "Qwen2ForCausalLM" and tok.is_fast
    obs, obs_tok = load_causal_lm(str(real_models / "llama-byte"))  # another tokenizer
    held, held_tok = load_causal_lm(str(real_models / "llama"))
    cfg = GRPOConfig(group_size=2, prompts_per_step=2, max_new_tokens=8, lr=1e-2,
                     views="prefix:0.5,full", constraint={"mode": "lagrangian", "budget": 0.1})  # fmt: skip
    trainer = GRPOTrainer(policy, tok, generate_tasks(4),
                          SLMPredictor(obs, obs_tok, policy_tokenizer=tok), cfg,
                          heldout=SLMPredictor(held, held_tok, policy_tokenizer=tok))  # fmt: skip
    log = trainer.step()
    assert np.isfinite(log["predictability_cost"]) and log["lambda_next"] > log["lambda"]
    out = trainer.evaluate(num_prompts=2, samples=2)
    assert np.isfinite(out["heldout_nats_per_token"]) and out["kl"] >= 0.0


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_trl_recipe_runs_on_small_real_architectures(real_models, tmp_path):
    pytest.importorskip("trl")
    sys.path.insert(0, str(ROOT / "experiments" / "recipes"))
    import trl_real_models

    out = tmp_path / "run"
    argv = ["--policy", str(real_models / "qwen"), "--observer", str(real_models / "llama-byte"),
            "--heldout-observer", str(real_models / "llama"), "--num-tasks", "8",
            "--eval-prompts", "2", "--steps", "1", "--group-size", "2", "--batch-size", "2",
            "--max-new-tokens", "8", "--lr", "1e-2", "--budget", "0.1", "--device", "cpu",
            "--out", str(out)]  # fmt: skip
    assert trl_real_models.main(argv) == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["completions"] == 2 and result["lambda"] > 0.0  # cost above the budget
    assert np.isfinite(result["heldout_nats_per_token"])
    assert 0.0 <= result["heldout_completion_accuracy"] <= 1.0
