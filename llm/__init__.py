"""The LLM domain: transformers policy, SLM observers and the GRPO trainer."""
