"""Sampler + process-pool backend under faults: env exceptions, SIGKILLed and hung workers."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from metarl.envs.procpool import ProcessPoolBatchedEnv
from metarl.errors import WorkerError
from metarl.sampler import Sampler
from metarl.types import Policy, Task, TaskDistribution

H = 6


class WalkEnv(gym.Env):
    """Random walk; ``raise_at``: raise at that step; ``hang_flag``: hang once at step 3 (the
    first env to get there creates the flag file, so the replacement worker does not hang)."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, task: Task):
        self.task = task
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([float(self.task["value"]), 0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        if self.task.get("raise_at") == self.t:
            raise ValueError(f"boom at step {self.t}")
        flag = self.task.get("hang_flag")
        if flag and self.t == 3 and not os.path.exists(flag):
            Path(flag).touch()
            time.sleep(3600)
        obs = np.array([float(self.task["value"]), self.t + self.np_random.normal()], np.float32)
        return obs, float(self.task["value"]), False, self.t >= H, {}


def make_walk_env(task: Task) -> gym.Env:
    return gym.wrappers.TimeLimit(WalkEnv(task), H)


class WalkDist(TaskDistribution):
    name = "walk"
    preset = "default"
    max_episode_steps = H
    episodes_per_trial = 1
    observation_space = WalkEnv.observation_space
    action_space = WalkEnv.action_space

    def __init__(self, **params):
        self.params = params

    def sample(self, n, *, split="train", rng):
        return [Task.make("walk", "default", split, i, value=float(i), **self.params) for i in range(n)]

    def make_env(self, task, **kwargs):
        return make_walk_env(task)

    def make_batched(self, tasks, **kwargs):
        return ProcessPoolBatchedEnv(make_walk_env, tasks, num_workers=2, **kwargs)


class KillingPolicy(Policy):
    """Zero actions of ``act_dim``; counts steps in its state; at global step ``kill_at`` SIGKILLs
    the env's first worker process."""

    def __init__(self, sampler, kill_at=None, act_dim=1):
        self.sampler, self.kill_at, self.calls, self.act_dim = sampler, kill_at, 0, act_dim

    def initial_state(self, task_index):
        return torch.zeros(task_index.shape[0])

    def act(self, inputs, state):
        self.calls += 1
        if self.calls == self.kill_at:
            os.kill(self.sampler._env.worker_pids()[0], signal.SIGKILL)
        return torch.zeros(state.shape[0], self.act_dim), state + 1, {"count": state.clone()}


def check_complete(batch, tasks, episodes_per_task, per_trial):
    trials = episodes_per_task // per_trial
    assert batch.num_slots == len(tasks) * trials
    assert batch.task_index.tolist() == [i for i in range(len(tasks)) for _ in range(trials)]
    assert ((batch.dones & batch.mask).sum(0) == per_trial).all()  # complete trials only
    assert (batch.mask.sum(0) == per_trial * H).all()  # no partial or duplicated steps
    t = torch.arange(batch.num_steps).unsqueeze(1).expand_as(batch.mask).float()
    assert torch.equal(batch.extras["count"][batch.mask], t[batch.mask])  # each trial from its start
    values = batch.observations[..., 0]
    assert torch.equal(values[batch.mask], batch.task_index.float().expand_as(values)[batch.mask])


@pytest.fixture
def sampler_factory():
    made = []

    def build(dist, **env_kwargs):
        s = Sampler(dist, seed=0, env_kwargs=env_kwargs)
        made.append(s)
        return s

    yield build
    for s in made:
        s.close()


def test_sigkilled_worker_yields_full_trials_and_is_counted(sampler_factory):
    dist = WalkDist()
    sampler = sampler_factory(dist, timeout=20)
    tasks = dist.sample(3, rng=np.random.default_rng(0))
    policy = KillingPolicy(sampler, kill_at=4)
    batch = sampler.collect(policy, tasks, episodes_per_task=4, episodes_per_trial=2)
    check_complete(batch, tasks, 4, 2)
    assert sampler.stats["faults/worker_restarts"] == 1
    assert sampler._env.worker_restarts == 1


def test_hung_worker_is_timed_out_and_replaced(sampler_factory, tmp_path):
    dist = WalkDist(hang_flag=str(tmp_path / "hung-once"))
    sampler = sampler_factory(dist, timeout=3)
    tasks = dist.sample(2, rng=np.random.default_rng(0))
    batch = sampler.collect(KillingPolicy(sampler), tasks, episodes_per_task=2)
    check_complete(batch, tasks, 2, 1)
    assert (tmp_path / "hung-once").exists()
    assert sampler.stats["faults/worker_restarts"] == 1


def test_env_exception_names_task_and_seed(sampler_factory):
    dist = WalkDist(raise_at=2)
    sampler = sampler_factory(dist, timeout=20)
    tasks = dist.sample(2, rng=np.random.default_rng(0))
    with pytest.raises(WorkerError) as info:
        sampler.collect(KillingPolicy(sampler), tasks, episodes_per_task=1)
    message = str(info.value).splitlines()[0]
    assert "boom at step 2" in message and "walk[default]/train#" in message and "seed" in message


def test_sigkilled_locomotion_worker_yields_full_trials_and_is_counted():
    from metarl.envs import make
    from metarl.envs.locomotion.split import SplitLocomotionBatchedEnv

    dist = make("halfcheetah-vel", "pytorch-maml-rl")
    tasks = dist.sample(2, split="train", rng=np.random.default_rng(0))
    env_kwargs = {"num_threads": 2, "parallel": "processes", "restart_backoff": 0.0}
    with Sampler(dist, seed=0, env_kwargs=env_kwargs) as sampler:
        policy = KillingPolicy(sampler, kill_at=30, act_dim=6)
        batch = sampler.collect(policy, tasks, episodes_per_task=2)
        assert isinstance(sampler._env, SplitLocomotionBatchedEnv)
        assert sampler.stats["faults/worker_restarts"] == 1 and sampler._env.worker_restarts == 1
        assert policy.calls == 30 + dist.max_episode_steps  # the wave ran again from its start
    with Sampler(dist, seed=0, env_kwargs=env_kwargs) as clean:
        # A fault-free collection whose second wave uses the same reset seeds as the rerun.
        clean._seed_rng.integers(0, 2**31 - 1, size=4)
        expected = clean.collect(KillingPolicy(clean, act_dim=6), tasks, episodes_per_task=2)
    horizon = dist.max_episode_steps
    assert batch.num_slots == 4 and batch.task_index.tolist() == [0, 0, 1, 1]
    assert (batch.mask.sum(0) == horizon).all() and (batch.truncated.sum(0) == 1).all()
    assert torch.equal(batch.extras["count"][:, 0], torch.arange(horizon, dtype=torch.float32))
    for key in ("observations", "rewards", "next_observations"):
        assert torch.equal(getattr(batch, key), getattr(expected, key))
