"""PettingZoo intersection: the controlled cars are the agents, everything else scripted.

::

    from bystander.envs import intersection_v0
    env = intersection_v0.parallel_env(render_mode="rgb_array", n_controlled=2, max_cycles=200)
    obs, infos = env.reset(seed=0)
    obs, rewards, terms, truncs, infos = env.step({a: env.action_space(a).sample() for a in env.agents})

Agents are ``"car_0" .. "car_{n_controlled-1}"``. ``**config`` are
:class:`~bystander.envs.intersection.config.IntersectionConfig` fields. Spaces,
rewards and ``info`` entries are those of the single-agent view
(:class:`~bystander.envs.intersection.gym_env.IntersectionEnv`), per agent: each
agent's ``info["ego_step"]`` lists every other road user (other agents included, typed
``"car"``) as an observer of that agent. An agent that arrives, crashes or leaves the
road is removed from ``agents`` (and from the world); the episode truncates for all
after ``max_cycles`` steps. ``env()`` is the AEC version (``parallel_to_aec``) with the
usual assertion / order-enforcing wrappers.

Actions missing for a live agent default to KEEP (discrete) or zeros (continuous);
actions for unknown or finished agents raise ``ValueError``.

Finished agents: ``finished_agents="remove"`` (default) is PettingZoo's usual
convention above. ``finished_agents="inactive"`` keeps every agent in ``agents`` until
the episode ends for all, as fixed-size clients (SuperSuit's
``pettingzoo_env_to_vec_env_v1``, PettingZoo's SB3 tutorial) require without
``black_death``:

- an agent's last step in play (arrival, crash, off-road, leaving the map) has
  ``terminated=False`` and ``info["finished"] = True`` (with its episode figures, as
  a terminated agent's info); after it, the agent is inactive: zero observation, zero
  reward, ``info == {"active": False}``, and its actions are accepted and ignored;
- the episode ends when every agent has finished (all ``terminated``) or at
  ``max_cycles``: agents that finished earlier are then ``terminated``, the others
  ``truncated``; ``agents`` becomes empty.

In both modes a truncated (not terminated) agent's info has
``"TimeLimit.truncated": True``, so that SB3 bootstraps through SuperSuit's
SB3 wrapper, which merges terminations and truncations into ``dones``.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv
from pettingzoo.utils import parallel_to_aec, wrappers

from bystander.envs.intersection.config import IntersectionConfig
from bystander.envs.intersection.views import (
    WorldView,
    check_action,
    keep_actions,
    make_spaces,
    zero_observation,
)

__all__ = ["FINISHED_AGENTS", "IntersectionParallelEnv", "env", "parallel_env", "raw_env"]

FINISHED_AGENTS = ("remove", "inactive")
"""Values of ``finished_agents``: what happens to an agent that finishes (module doc)."""


class IntersectionParallelEnv(ParallelEnv):
    """Parallel API over one simulated world (see the module doc)."""

    metadata = {
        "name": "intersection_v0",
        "render_modes": ["human", "rgb_array"],
        "render_fps": 10,
        "is_parallelizable": True,
    }

    def __init__(
        self, render_mode: str | None = None, finished_agents: str = "remove", **config: Any
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode: expected None or one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        if finished_agents not in FINISHED_AGENTS:
            raise ValueError(
                f"finished_agents: expected one of {FINISHED_AGENTS}, got {finished_agents!r}"
            )
        self.render_mode = render_mode
        self.finished_agents = finished_agents
        self._finished: set[str] = set()
        self.config = IntersectionConfig.from_dict(config)
        self.max_cycles = self.config.max_cycles
        self.possible_agents = [f"car_{i}" for i in range(self.config.n_controlled)]
        self.agent_name_mapping = {a: i for i, a in enumerate(self.possible_agents)}
        self._obs_space, self._act_space = make_spaces(self.config)
        self.world = WorldView(self.config, render_mode)
        self.agents: list[str] = []
        self._out = None
        self._np_random = np.random.default_rng()

    @functools.cache  # noqa: B019 - spaces are fixed per instance
    def observation_space(self, agent: str) -> spaces.Space:
        self._check_agent(agent)
        return self._obs_space

    @functools.cache  # noqa: B019
    def action_space(self, agent: str) -> spaces.Space:
        self._check_agent(agent)
        return self._act_space

    def _check_agent(self, agent: str) -> int:
        if agent not in self.agent_name_mapping:
            raise ValueError(
                f"agent: unknown agent {agent!r}; expected one of {self.possible_agents}"
            )
        return self.agent_name_mapping[agent]

    @property
    def sim(self):
        """The underlying :class:`~bystander.envs.intersection.sim.IntersectionSim` (N = 1)."""
        return self.world.sim

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._np_random = np.random.default_rng(seed)
        # ``options`` is accepted for API compatibility and ignored (spaces are fixed).
        out = self.world.reset(int(self._np_random.integers(0, 2**62)))
        self._out = out
        self.agents = list(self.possible_agents)
        self._finished = set()
        obs = {a: self.world.observation(out, i) for i, a in enumerate(self.agents)}
        infos = {a: self.world.info(out, i, reset=True) for i, a in enumerate(self.agents)}
        if self.render_mode == "human":
            self.render()
        return obs, infos

    def step(self, actions: dict[str, Any]):
        if self._out is None:
            raise RuntimeError("step() called before reset()")
        if not isinstance(actions, dict):
            raise TypeError(
                f"actions: expected a dict agent -> action, got {type(actions).__name__}"
            )
        cfg = self.config
        batch = (
            np.zeros((cfg.n_controlled, 2)) if cfg.action_type == "continuous"
            else keep_actions(cfg, self.world.sim.target_v[0])
        )  # fmt: skip  # an agent left out of ``actions`` keeps its target speed
        for agent, action in actions.items():
            i = self._check_agent(agent)
            if agent not in self.agents:
                raise ValueError(f"actions: agent {agent!r} is done; live agents are {self.agents}")
            action = check_action(action, cfg, name=f"actions[{agent!r}]")
            if agent not in self._finished:  # an inactive agent's action is ignored
                batch[i] = action
        out = self.world.step(batch)
        self._out = out
        if self.finished_agents == "inactive":
            obs, rewards, terms, truncs, infos = self._step_inactive(out)
        else:
            live = list(self.agents)
            idx = [self.agent_name_mapping[a] for a in live]
            obs = {a: self.world.observation(out, i) for a, i in zip(live, idx, strict=True)}
            rewards = {a: float(out.rewards[0, i].sum()) for a, i in zip(live, idx, strict=True)}
            terms = {a: bool(out.terminated[0, i]) for a, i in zip(live, idx, strict=True)}
            truncs = {a: bool(out.truncated[0]) for a in live}
            infos = {a: self.world.info(out, i) for a, i in zip(live, idx, strict=True)}
            self.agents = [a for a in live if not (terms[a] or truncs[a])]
        for a, info in infos.items():
            if truncs[a] and not terms[a]:
                info["TimeLimit.truncated"] = True
        if self.render_mode == "human":
            self.render()
        return obs, rewards, terms, truncs, infos

    def _step_inactive(self, out: Any) -> tuple[dict, dict, dict, dict, dict]:
        """One step's dicts under ``finished_agents="inactive"`` (module doc): every
        agent reports until the episode ends for all."""
        obs, rewards, infos = {}, {}, {}
        for a in self.agents:
            i = self.agent_name_mapping[a]
            if a in self._finished:
                obs[a] = zero_observation(self.world.observation(out, i))
                rewards[a] = 0.0
                infos[a] = {"active": False}
                continue
            obs[a] = self.world.observation(out, i)
            rewards[a] = float(out.rewards[0, i].sum())
            infos[a] = self.world.info(out, i)
            infos[a]["active"] = True
            if out.terminated[0, i]:
                infos[a]["finished"] = True
                self._finished.add(a)
        everyone = len(self._finished) == len(self.possible_agents)
        over = everyone or bool(out.truncated[0])
        terms = {a: over and a in self._finished for a in self.agents}
        truncs = {a: over and a not in self._finished for a in self.agents}
        if over:
            self.agents = []
        return obs, rewards, terms, truncs, infos

    def render(self):
        if self.render_mode is None:
            return None
        return self.world.render(0)

    def close(self) -> None:
        self.world.close()

    def observer_view(self, agent: str) -> dict:
        """Observers of ``agent`` this step; see ``IntersectionEnv.observer_view``."""
        i = self._check_agent(agent)
        if self._out is None:
            raise RuntimeError("observer_view() called before reset()")
        return self.sim.observer_view(0, i, self._out.visible)

    def add_overlay(self, fn) -> None:
        """Draw ``fn(surface, world_to_px)`` on every rendered frame."""
        if not callable(fn):
            raise TypeError(
                f"add_overlay: expected a callable fn(surface, world_to_px), got {fn!r}"
            )
        self.world.overlays.append(fn)


def parallel_env(
    render_mode: str | None = None, finished_agents: str = "remove", **config: Any
) -> IntersectionParallelEnv:
    """The parallel env; ``config`` are :class:`IntersectionConfig` fields (``max_cycles``...);
    ``finished_agents``: ``"remove"`` or ``"inactive"`` (module doc)."""
    return IntersectionParallelEnv(
        render_mode=render_mode, finished_agents=finished_agents, **config
    )


def raw_env(render_mode: str | None = None, finished_agents: str = "remove", **config: Any):
    """The AEC env without wrappers (``parallel_to_aec``)."""
    return parallel_to_aec(
        parallel_env(render_mode=render_mode, finished_agents=finished_agents, **config)
    )


def env(render_mode: str | None = None, finished_agents: str = "remove", **config: Any):
    """The AEC env with PettingZoo's assertion and order-enforcing wrappers."""
    e = raw_env(render_mode=render_mode, finished_agents=finished_agents, **config)
    if IntersectionConfig.from_dict(config).action_type != "continuous":
        e = wrappers.AssertOutOfBoundsWrapper(e)
    return wrappers.OrderEnforcingWrapper(e)
