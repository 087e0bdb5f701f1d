"""Meta-World's own metalearning_evaluation runs on metarl agents through MetaWorldAgent."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from metarl.metaworld_eval import MetaWorldAgent
from metarl.types import Agent, Policy

metaworld = pytest.importorskip("metaworld")
from metaworld.evaluation import metalearning_evaluation  # noqa: E402


class OffsetPolicy(Policy):
    """Action = context offset; the state counts steps (to prove it survives episode ends)."""

    def __init__(self, offset):
        self.offset = offset

    def initial_state(self, task_index):
        return torch.zeros(task_index.shape[0])

    def act(self, inputs, state):
        self.last_state = state
        self.last_prev_done = inputs.prev_done.clone()
        return torch.full((inputs.obs.shape[0], 4), self.offset), state + 1, {}


class FakeAgent(Agent):
    def __init__(self, adaptation):
        self.adaptation = adaptation
        self.batches = []
        self.policies = []

    def meta_train_step(self, sampler, tasks):
        return {}

    def initial_context(self, num_tasks):
        return 0.0

    def policy(self, context, *, deterministic=False):
        self.policies.append(OffsetPolicy(context))
        return self.policies[-1]

    def adapt(self, batch, context, *, step=0):
        self.batches.append((step, batch))
        return context + 0.5

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


@pytest.fixture(scope="module")
def ml1_test_envs():
    envs = gym.make_vec("Meta-World/ML1-test", env_name="reach-v3", seed=0, meta_batch_size=2, total_tasks_per_cls=2)
    yield envs
    envs.close()


def test_gradient_agent_adapts_on_recorded_episodes(ml1_test_envs):
    agent = FakeAgent("gradient")
    wrapped = MetaWorldAgent(agent, action_space=ml1_test_envs.single_action_space)
    success, mean_return, per_task = metalearning_evaluation(
        wrapped, ml1_test_envs, num_evals=1, adaptation_steps=1, adaptation_episodes=1, evaluation_episodes=1
    )
    assert 0.0 <= success <= 1.0 and np.isfinite(mean_return) and set(per_task) == {"reach-v3"}
    [(step, batch)] = agent.batches
    assert step == 0
    # one slot per (env, episode), env-major, a full 500-step truncated episode each
    assert batch.num_slots == 2 and batch.task_index.tolist() == [0, 1]
    assert batch.num_steps == 500 and bool(batch.mask.all())
    assert batch.truncated[-1].all() and not batch.truncated[:-1].any()
    assert torch.equal(batch.step_in_episode[:, 0], torch.arange(500))
    assert torch.all(batch.actions == 0.0)
    # the evaluation phase acted with the adapted context
    assert agent.policies[-1].offset == 0.5


def test_trial_agent_keeps_state_across_phases(ml1_test_envs):
    agent = FakeAgent("trial")
    wrapped = MetaWorldAgent(agent, action_space=ml1_test_envs.single_action_space)
    metalearning_evaluation(wrapped, ml1_test_envs, num_evals=1, adaptation_steps=1, adaptation_episodes=1, evaluation_episodes=1)
    assert agent.batches == []  # no gradient adaptation for trial agents
    [policy] = agent.policies
    # the recurrent state counted through the adaptation episode into the evaluation episode
    assert float(policy.last_state.min()) >= 500
