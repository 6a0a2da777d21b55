"""The evaluation and rendering sections of a run config (:class:`bystander.config.RunConfig`).

Each checks its own fields in ``__post_init__`` / ``validate(path)`` and raises
``ValueError`` naming the dotted field (``eval.episodes: expected an int >= 1, got 0``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bystander.dataconfig import check

__all__ = ["EvalSection", "RenderSection"]


@dataclass
class EvalSection:
    """Evaluation: ``episodes`` seeded episodes, seeds ``seed, seed+1, ...``.

    Attributes:
        episodes: Episodes of the final evaluation (``bystander evaluate``).
        seed: First held-out seed (training worlds use ``train.seed + i``).
        deterministic: Greedy actions.
        every: Held-out evaluation during training every this many env steps (0: none),
            on ``heldout_episodes`` seeds from ``seed``, all at once on the batched
            simulator (:mod:`bystander.agents.heldout`); figures in
            ``RUN_DIR/logs/heldout.csv`` and the logger's ``heldout/*``.
        heldout_episodes: Episodes per held-out evaluation during training.
    """

    episodes: int = 50
    seed: int = 100_000
    deterministic: bool = True
    every: int = field(
        default=0,
        metadata={
            "flag": "--eval-every",
            "help": "held-out evaluation every N env steps (0: none)",
        },
    )
    heldout_episodes: int = 100

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, path: str = "eval") -> None:
        """Check every field; raise ``ValueError`` naming ``{path}.<field>``."""
        check(self.episodes >= 1, f"{path}.episodes", "an int >= 1", self.episodes)
        check(self.seed >= 0, f"{path}.seed", "an int >= 0", self.seed)
        check(self.every >= 0, f"{path}.every", "an int >= 0 (0: none)", self.every)
        check(
            self.heldout_episodes >= 1,
            f"{path}.heldout_episodes",
            "an int >= 1",
            self.heldout_episodes,
        )


@dataclass
class RenderSection:
    """Rendering of one episode with the prediction overlay.

    Attributes:
        seed: Episode seed.
        max_steps: Frames at most.
        fps: Frames per second of the written GIF/MP4.
        every: Keep one frame in ``every`` (GIF size).
    """

    seed: int = 7
    max_steps: int = 300
    fps: int = 10
    every: int = 2

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, path: str = "render") -> None:
        """Check every field; raise ``ValueError`` naming ``{path}.<field>``."""
        check(self.max_steps >= 1, f"{path}.max_steps", "an int >= 1", self.max_steps)
        check(self.fps >= 1, f"{path}.fps", "an int >= 1", self.fps)
        check(self.every >= 1, f"{path}.every", "an int >= 1", self.every)
