"""A tiny task distribution and a tiny agent, registered through the plugin variables.

``METARL_EXTRA_ENVS="toy-goal=platform_fakes"`` and
``METARL_EXTRA_AGENTS="fake=platform_fakes:FakeAgent"`` (with this folder on ``PYTHONPATH``)
make them trainable with ``metarl train``. The agent has real parameters, an Adam optimiser and
its own torch generator, so exact resume is a meaningful check.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metarl.config import positive
from metarl.errors import EnvError
from metarl.seeding import torch_generator
from metarl.types import (
    Agent,
    BatchedEnv,
    Policy,
    StepInputs,
    Task,
    TaskDistribution,
    TrialBatch,
    check_num_tasks,
    check_split,
)

#: Seconds the fake agent sleeps per meta-training step.
SLEEP_VAR = "PLATFORM_FAKES_SLEEP_S"

__all__ = [
    "SLEEP_VAR",
    "DEFAULT_PRESET",
    "PRESETS",
    "SUMMARY",
    "FakeAgent",
    "ToyGoal",
    "add_arguments",
    "run",
]


class _ToyBatched(BatchedEnv):
    """A point on a line moving by its action towards the slot's goal; reward = -|x - goal|."""

    def __init__(self, tasks: Sequence[Task], *, horizon: int, scale: float = 1.0):
        self.num_slots = len(tasks)
        self.horizon = horizon
        self.scale = scale
        self.single_observation_space = gym.spaces.Box(-10.0, 10.0, shape=(2,), dtype=np.float32)
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.set_tasks(tasks)
        self.pos = np.zeros(self.num_slots)
        self.t = np.zeros(self.num_slots, dtype=np.int64)
        self.start = np.zeros(self.num_slots)

    def set_tasks(self, tasks: Sequence[Task]) -> None:
        self.goals = np.array([t["goal"] for t in tasks], dtype=np.float64)

    def _obs(self) -> np.ndarray:
        return np.stack([self.pos, self.t / self.horizon], axis=1).astype(np.float32)

    def reset(
        self, *, seed: Any = None, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        m = np.ones(self.num_slots, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        if seed is not None:
            seeds = (
                [int(seed) + i for i in range(self.num_slots)] if np.isscalar(seed) else list(seed)
            )
            self.start = np.array([np.random.default_rng(s).uniform(-0.1, 0.1) for s in seeds])
        self.pos[m] = self.start[m]
        self.t[m] = 0
        return self._obs(), {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        self.pos = self.pos + self.scale * np.asarray(actions, dtype=np.float64).reshape(-1)
        self.t = self.t + 1
        reward = -np.abs(self.pos - self.goals)
        terminated = np.zeros(self.num_slots, dtype=bool)
        truncated = self.t >= self.horizon
        return self._obs(), reward.astype(np.float32), terminated, truncated, {}


class _ToyEnv(gym.Env):
    """The single-task env: one slot of the batched one."""

    def __init__(self, batched: _ToyBatched):
        self.batched = batched
        self.observation_space = batched.single_observation_space
        self.action_space = batched.single_action_space

    def reset(
        self, *, seed: int | None = None, options: Any = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.batched.reset(seed=seed)
        return obs[0], info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.batched.step(
            np.asarray(action).reshape(1, 1)
        )
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), info


class ToyGoal(TaskDistribution):
    """Goals on a line: train goals in [0.2, 1], test goals in [-1, -0.2] (disjoint)."""

    def __init__(self, *, horizon: int = 5, name: str = "toy-goal", preset: str = "default"):
        self.name = name
        self.preset = preset
        self.max_episode_steps = horizon
        self.observation_space = gym.spaces.Box(-10.0, 10.0, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def sample(self, n: int, *, split: str = "train", rng: np.random.Generator) -> list[Task]:
        n = check_num_tasks(n)
        check_split(split)
        low, high = (0.2, 1.0) if split == "train" else (-1.0, -0.2)
        goals = rng.uniform(low, high, size=n)
        return [
            Task.make(self.name, self.preset, split, i, goal=float(g)) for i, g in enumerate(goals)
        ]

    def make_env(self, task: Task, **kwargs: Any) -> gym.Env:
        return _ToyEnv(_ToyBatched([task], horizon=self.max_episode_steps, **kwargs))

    def make_batched(self, tasks: Sequence[Task], *, scale: float = 1.0) -> BatchedEnv:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale <= 0:
            raise EnvError(f"scale must be a positive number, got {scale!r}")
        return _ToyBatched(tasks, horizon=self.max_episode_steps, scale=float(scale))


#: The family-module protocol of metarl.envs (PRESETS, DEFAULT_PRESET, SUMMARY).
PRESETS = {"default": ToyGoal, "short": lambda **kw: ToyGoal(horizon=3, preset="short", **kw)}
DEFAULT_PRESET = "default"
SUMMARY = "a point on a line reaching a goal (test fixture)"


class _FakePolicy(Policy):
    def __init__(
        self,
        net: torch.nn.Module,
        log_std: torch.Tensor,
        generator: torch.Generator,
        *,
        deterministic: bool,
    ):
        self.net = net
        self.log_std = log_std
        self.generator = generator
        self.deterministic = deterministic

    def initial_state(self, task_index: torch.Tensor) -> None:
        return None

    def act(
        self, inputs: StepInputs, state: Any
    ) -> tuple[torch.Tensor, Any, dict[str, torch.Tensor]]:
        mean = self.net(inputs.obs)
        std = self.log_std.exp().expand_as(mean)
        if self.deterministic:
            action = mean
        else:
            noise = torch.randn(mean.shape, generator=self.generator)
            action = mean + std * noise
        log_prob = torch.distributions.Normal(mean, std).log_prob(action).sum(-1)
        return action, None, {"log_prob": log_prob}


class FakeAgent(Agent):
    """A linear Gaussian policy trained by REINFORCE with Adam (test fixture)."""

    @dataclasses.dataclass(frozen=True)
    class Config:
        """Settings of the fake agent."""

        hidden_size: int = positive(8)
        """Width of the policy's hidden layer."""

        learning_rate: float = positive(0.01)
        """Adam step size."""

        episodes_per_task: int = positive(2)
        """Episodes per task per meta-training step."""

    adaptation = "gradient"

    def __init__(
        self, config: FakeAgent.Config, *, dist: TaskDistribution, device: torch.device, seed: int
    ):
        self.config = config
        self.device = torch.device(device)
        init = torch_generator(seed, "init")
        obs_dim = int(np.prod(dist.observation_space.shape))
        self.net = torch.nn.Sequential(
            torch.nn.Linear(obs_dim, config.hidden_size),
            torch.nn.Tanh(),
            torch.nn.Linear(config.hidden_size, 1),
        )
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(0.3 * torch.randn(p.shape, generator=init))
        self.log_std = torch.nn.Parameter(torch.full((1,), -0.5))
        self.optimizer = torch.optim.Adam(
            [*self.net.parameters(), self.log_std], lr=config.learning_rate
        )
        self.generator = torch_generator(seed, "actions")

    def _params(self) -> list[torch.Tensor]:
        return [*self.net.parameters(), self.log_std]

    def meta_train_step(self, sampler: Any, tasks: Sequence[Task]) -> dict[str, float]:
        batch: TrialBatch = sampler.collect(
            self.policy(None), tasks, episodes_per_task=self.config.episodes_per_task
        )
        returns = batch.episode_returns()[:, 0]
        advantage = returns - returns.mean()
        mean = self.net(batch.observations)
        std = self.log_std.exp().expand_as(mean)
        log_prob = torch.distributions.Normal(mean, std).log_prob(batch.actions).sum(-1)
        log_prob = (log_prob * batch.mask).sum(0)
        loss = -(log_prob * advantage).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        # A pause set from outside the config lets a test kill the process between checkpoints
        # while the run's config stays identical to the uninterrupted one.
        time.sleep(float(os.environ.get(SLEEP_VAR, "0")))
        return {
            "meta_train/return_pre": float(returns.mean()),
            "meta_train/loss": float(loss.detach()),
        }

    def initial_context(self, num_tasks: int) -> None:
        return None

    def policy(self, context: Any, *, deterministic: bool = False) -> Policy:
        return _FakePolicy(
            self.net, self.log_std.detach(), self.generator, deterministic=deterministic
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "net": self.net.state_dict(),
            "log_std": self.log_std.detach().clone(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        with torch.no_grad():
            self.log_std.copy_(state["log_std"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])


def add_arguments(parser: Any) -> None:
    """Options of the fake benchmark (the ``metarl.bench.<name>`` module protocol)."""
    parser.add_argument("--size", type=int, default=3, help="a size")


def run(args: Any) -> dict[str, Any]:
    """The fake benchmark's result."""
    return {"size": args.size, "ratios": {"vs_anchor": 0.5}}
