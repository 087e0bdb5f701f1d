"""A small scripted task distribution for sampler and evaluation tests."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from metarl.errors import WorkerLost
from metarl.types import BatchedEnv, Task, TaskDistribution

H = 5


class ScriptedBatchedEnv(BatchedEnv):
    """obs = [task value, step, noise]; reward = task value; terminates at step ``stop`` (task
    param, 0 = never) else truncated at H. ``noise`` comes from a per-slot generator seeded at reset."""

    def __init__(self, tasks, *, nan_at=None, lose_worker_at=None, success_prob=None, reward_from_action=False):
        self.num_slots = len(tasks)
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float64)
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.nan_at = nan_at
        self.lose_worker_at = lose_worker_at
        self.total_steps = 0
        self.success_prob = success_prob
        self.reward_from_action = reward_from_action
        self.has_success = success_prob is not None
        self.set_tasks(tasks)
        self.rngs = [np.random.default_rng(0) for _ in tasks]
        self.steps = np.zeros(self.num_slots, dtype=np.int64)
        self.noise = np.zeros(self.num_slots)

    def set_tasks(self, tasks):
        self.values = np.array([t["value"] for t in tasks], dtype=np.float64)
        self.stops = np.array([t["stop"] for t in tasks], dtype=np.int64)

    def _obs(self):
        return np.stack([self.values, self.steps.astype(np.float64), self.noise], axis=1)

    def reset(self, *, seed=None, mask=None):
        mask = np.ones(self.num_slots, bool) if mask is None else mask
        for i in np.flatnonzero(mask):
            if seed is not None:
                self.rngs[i] = np.random.default_rng(seed[i])
            self.noise[i] = self.rngs[i].random()
        self.steps[mask] = 0
        if self.success_prob is not None:
            # success is decided at reset; a successful episode ends after one step (early finisher)
            self.will_succeed = getattr(self, "will_succeed", np.zeros(self.num_slots, bool))
            for i in np.flatnonzero(mask):
                self.will_succeed[i] = self.rngs[i].random() < self.success_prob
        return self._obs(), {}

    def step(self, actions):
        assert actions.shape == (self.num_slots, 1)
        assert np.all(np.abs(actions) <= 1.0)  # the sampler clips to the action space
        self.total_steps += 1
        if self.lose_worker_at is not None and self.total_steps == self.lose_worker_at:
            raise WorkerLost("worker 0 died (SIGKILL)", slots=[0])
        self.steps += 1
        terminated = (self.stops > 0) & (self.steps == self.stops)
        info = {}
        if self.success_prob is not None:
            info["success"] = self.will_succeed & (self.steps == 1)
            terminated = terminated | info["success"]
        truncated = ~terminated & (self.steps >= H)
        reward = actions[:, 0].astype(np.float64) if self.reward_from_action else self.values.copy()
        if self.nan_at is not None and self.total_steps == self.nan_at:
            reward[1] = np.nan
        return self._obs(), reward, terminated, truncated, info


class ScriptedDist(TaskDistribution):
    name = "scripted"
    preset = "default"
    max_episode_steps = H
    episodes_per_trial = 1
    observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float64)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, *, stops=True, **env_kwargs):
        self.env_kwargs = env_kwargs
        self.stops = stops
        self.made = 0
        self.has_success = env_kwargs.get("success_prob") is not None

    def sample(self, n, *, split="train", rng):
        return [Task.make("scripted", "default", split, i, value=float(i + 1), stop=(int(i % 3) + 1 if i % 2 else 0) if self.stops else 0) for i in range(n)]

    def make_env(self, task, **kwargs):
        raise NotImplementedError("the scripted distribution only has a batched env")

    def make_batched(self, tasks, **kwargs):
        self.made += 1
        return ScriptedBatchedEnv(list(tasks), **{**self.env_kwargs, **kwargs})
