"""Test-wide settings: headless pygame, one torch thread (the CI machine has 2 cores)."""

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass

# Property-based tests: a few seconds by default, deeper with --hypothesis-profile=deep.
from hypothesis import settings  # noqa: E402

settings.register_profile("default", max_examples=30, deadline=None)
settings.register_profile("deep", max_examples=2000, deadline=None)
settings.load_profile("default")
