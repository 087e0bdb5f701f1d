"""Round semantics of evaluate() with the real agents: MAML-TRPO (round k = after k gradient
steps) and RL² (round k = episode k of a trial)."""

from __future__ import annotations

import numpy as np
import torch

from metarl.agents.maml import MAMLTRPO
from metarl.agents.rl2 import RL2
from metarl.envs import make
from metarl.evaluation import evaluate
from metarl.sampler import Sampler
from metarl.seeding import numpy_rng


class Spy:
    """Forward to a sampler and keep every batch it collects with the call's arguments."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self.calls: list[tuple[object, dict, object]] = []

    def collect(self, policy, tasks, **kw):
        batch = self.sampler.collect(policy, tasks, **kw)
        self.calls.append((policy, kw, batch))
        return batch


def test_maml_round_k_is_the_policy_after_k_gradient_steps():
    dist = make("navigation-2d")
    agent = MAMLTRPO(MAMLTRPO.Config(hidden_sizes=(16,), episodes_per_task=2), dist=dist, device=torch.device("cpu"), seed=0)
    tasks = dist.sample(3, split="test", rng=numpy_rng(0, "test"))
    adapt_calls = []
    real_adapt = agent.adapt

    def adapt(batch, context, *, step=0):
        out = real_adapt(batch, context, step=step)
        adapt_calls.append((step, batch, context, out))
        return out

    agent.adapt = adapt  # type: ignore[method-assign]
    spy = Spy(Sampler(dist, seed=1))
    report = evaluate(agent, spy, tasks, rounds=3, episodes_per_round=4)
    assert report.returns.shape == (3, 3, 4)
    assert [c[0] for c in adapt_calls] == [0, 1]  # two adaptations between three rounds
    theta = agent.initial_context(3)
    for k, (policy, kw, batch) in enumerate(spy.calls):
        assert kw == {"episodes_per_task": 4, "episodes_per_trial": 1}
        # Round k acts with θ (k = 0) or with the output of the k-th adapt() call ...
        expected = theta if k == 0 else adapt_calls[k - 1][3]
        for name, value in expected.items():
            torch.testing.assert_close(policy.params[name], value, rtol=0, atol=0)
        # ... which adapted on round k − 1's own episodes with the step size of step k − 1.
        if k < 2:
            assert adapt_calls[k][1] is batch
        np.testing.assert_allclose(report.returns[:, k], batch.episode_returns()[:, 0].numpy().reshape(3, 4))
    # Each step moved the parameters: three different policies.
    flat = [torch.cat([v.flatten() for v in ctx.values()]) for ctx in (theta, adapt_calls[0][3], adapt_calls[1][3])]
    assert not torch.equal(flat[0], flat[1]) and not torch.equal(flat[1], flat[2])


def test_rl2_round_k_is_episode_k_of_one_trial():
    dist = make("tabular-mdp", "n10")
    agent = RL2(RL2.Config(hidden_size=16, episodes_per_trial=3), dist=dist, device="cpu", seed=0)
    tasks = dist.sample(4, split="test", rng=numpy_rng(0, "test"))
    spy = Spy(Sampler(dist, seed=2))
    report = evaluate(agent, spy, tasks, rounds=3, episodes_per_round=2)
    # One collection: 2 trials of 3 episodes per task, memory kept inside each trial.
    assert len(spy.calls) == 1
    _, kw, batch = spy.calls[0]
    assert kw == {"episodes_per_task": 6, "episodes_per_trial": 3}
    per_trial = batch.episode_returns().numpy().reshape(4, 2, 3)  # [task, trial, episode]
    assert report.returns.shape == (4, 3, 2)
    for k in range(3):
        np.testing.assert_allclose(report.returns[:, k, :], per_trial[:, :, k])
    # The agent never adapts outside its trials.
    assert report.adaptation == "trial"


class _RecordingPolicy:
    """Acts with the first two observation features and keeps every input it was given."""

    def __init__(self) -> None:
        self.inputs: list[dict[str, torch.Tensor]] = []

    def initial_state(self, task_index):
        return torch.zeros(task_index.shape[0])

    def act(self, inputs, state):
        self.inputs.append(
            {
                "prev_action": inputs.prev_action.clone(),
                "prev_reward": inputs.prev_reward.clone(),
                "prev_done": inputs.prev_done.clone(),
                "episode_index": inputs.episode_index.clone(),
            }
        )
        return inputs.obs[:, :2].clone(), state + 1, {}


class _TrialAgent:
    adaptation = "trial"

    def __init__(self) -> None:
        self.policies: list[_RecordingPolicy] = []

    def initial_context(self, num_tasks):
        return None

    def policy(self, context, *, deterministic=False):
        self.policies.append(_RecordingPolicy())
        return self.policies[-1]


def test_metaworld_adapter_gives_a_trial_agent_its_own_history_in_the_evaluation_phase():
    """Drive MetaWorldAgent as metaworld.evaluation.metalearning_evaluation does: the evaluation
    phase shows the agent no rewards and calls reset(dones) after every step."""
    import types

    import gymnasium as gym

    from metarl.metaworld_eval import MetaWorldAgent

    agent = _TrialAgent()
    wrapped = MetaWorldAgent(agent, action_space=gym.spaces.Box(-1.0, 1.0, (2,)))
    obs = [np.full((2, 3), 0.1 * (t + 1), dtype=np.float32) for t in range(5)]
    false, true = np.zeros(2, dtype=bool), np.ones(2, dtype=bool)
    wrapped.init()
    for t, (reward, truncated) in enumerate([([1.0, 2.0], false), ([3.0, 4.0], true)]):
        action, _ = wrapped.adapt_action(obs[t])
        wrapped.step(types.SimpleNamespace(observation=obs[t], action=action, reward=np.array(reward),
                                           terminated=false, truncated=truncated))
    wrapped.adapt()
    wrapped.reset(true)  # the evaluation phase starts with new episodes
    for t, ended in [(2, false), (3, np.array([True, False])), (4, None)]:
        wrapped.eval_action(obs[t])
        if ended is not None:
            wrapped.reset(ended)

    [policy] = agent.policies
    seen = policy.inputs
    assert len(seen) == 5
    # The action of the previous step, whichever phase it was in.
    for t in range(1, 5):
        torch.testing.assert_close(seen[t]["prev_action"], torch.from_numpy(obs[t - 1][:, :2]))
    # Done flags: the adaptation episode ends at t=1, env 0's evaluation episode at t=3.
    assert [s["prev_done"].tolist() for s in seen] == [[0, 0], [0, 0], [1, 1], [0, 0], [1, 0]]
    assert [s["episode_index"].tolist() for s in seen] == [[0, 0], [0, 0], [1, 1], [1, 1], [2, 1]]
    # The last adaptation reward is known; Meta-World's evaluation phase shows none (0).
    assert [s["prev_reward"].tolist() for s in seen] == [[0, 0], [1, 2], [3, 4], [0, 0], [0, 0]]
