"""The LLM domain: transformers policy, SLM observers and the GRPO trainer.

Modules (import what you need; nothing heavy is imported here). The tokenizer helpers
live with the text env, in :mod:`bystander.envs.text_tokens`.

- :mod:`bystander.llm.models`: ``load_causal_lm`` (hub id / local path / shipped
  tiny models), ``tiny_pair`` (shipped, or pretrained and cached for other configs),
  batched ``generate_group``.
- :mod:`bystander.llm.shipped`: the tiny models shipped in ``llm/weights/``, loaded
  with their SHA-256 checked; :mod:`bystander.llm.train_tiny` made them.
- :mod:`bystander.llm.measures`: accuracy, template entropy, an observer's completion
  accuracy from half a chain of thought, KL to the reference (GRPO evaluation).
- :mod:`bystander.llm.observers`: ``SLMPredictor`` (a ``Predictor`` with
  ``horizon=None``, nats/token), ``score_observers`` (costs combine with
  :func:`bystander.envs.scoring.combine_errors`).
- :mod:`bystander.llm.reviewer`: ``SLMReviewer`` for ``ReviewGate`` and the trainer.
- :mod:`bystander.llm.scorers`: reward / cost models (sequence classifiers).
- :mod:`bystander.llm.grpo`: ``GRPOTrainer``; :mod:`bystander.llm.grpo_config`: ``GRPOConfig``.
- :mod:`bystander.llm.trl_adapter`: TRL ``GRPOTrainer`` reward functions and callback.
- :mod:`bystander.llm.cli`: ``bystander llm train|evaluate``.
"""

__all__: list[str] = []
