"""bystander: train agents that stay predictable to the weaker agents around them.

Sub-packages (installed from the repository's ``envs/``, ``agents/`` and ``llm/``):

- :mod:`bystander.envs`: the intersection (PettingZoo / Gymnasium) and text envs, the
  shared predictability contract and the predictability / constraint wrappers.
- :mod:`bystander.agents`: predictors of the ego's trajectory, reviewers, SB3 glue.
- :mod:`bystander.llm`: transformers policy, SLM observers, the GRPO trainer.
"""

__version__ = "0.1.0"
