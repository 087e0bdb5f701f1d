"""The sampler against a small scripted distribution: layout, trials, recurrent state, seeds, faults."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scripted_env import H, ScriptedDist

from metarl.errors import EnvError
from metarl.sampler import Sampler
from metarl.types import Policy, StepInputs


class CountingPolicy(Policy):
    """State = number of steps since trial start; emits it as an extra, and an out-of-range action."""

    def initial_state(self, task_index):
        self.last_task_index = task_index.clone()
        return torch.zeros(task_index.shape[0])

    def act(self, inputs: StepInputs, state):
        action = torch.full((state.shape[0], 1), 3.0)
        extras = {
            "count": state.clone(),
            "prev_reward": inputs.prev_reward.clone(),
            "prev_done": inputs.prev_done.clone(),
            "prev_action": inputs.prev_action[:, 0].clone(),
        }
        return action, state + 1, extras


def collect(dist, *, seed=0, tasks=4, episodes=6, per_trial=3, max_slots=None):
    sampler = Sampler(dist, seed=seed, max_slots=max_slots)
    task_list = dist.sample(tasks, rng=np.random.default_rng(0))
    return sampler, sampler.collect(CountingPolicy(), task_list, episodes_per_task=episodes, episodes_per_trial=per_trial)


def test_layout_and_exact_episode_counts():
    _, batch = collect(ScriptedDist())
    assert batch.num_slots == 4 * 2
    assert batch.task_index.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert batch.trial_index.tolist() == [0, 1] * 4
    returns = batch.episode_returns()
    assert returns.shape == (8, 3)  # every slot ran exactly 3 episodes
    ends = (batch.dones & batch.mask).sum(0)
    assert ends.tolist() == [3] * 8
    assert (batch.trial_done.sum(0) == 1).all()
    # trial_done sits on the last valid step of each slot.
    last = batch.mask.long().cumsum(0).argmax(0)
    assert batch.trial_done[last, torch.arange(8)].all()
    # Episode lengths follow the task: task 1 stops at step 2, others run to H.
    lengths = (batch.mask & (batch.episode_index == 0)).sum(0)
    assert lengths.tolist() == [H, H, 2, 2, H, H, 1, 1]
    assert torch.equal(batch.terminated.any(0), torch.tensor([False, False, True, True, False, False, True, True]))
    assert not (batch.terminated & batch.truncated).any()


def test_task_fixed_within_trial_and_reset_inside_trial():
    _, batch = collect(ScriptedDist())
    values = batch.observations[..., 0]
    expected = (batch.task_index + 1).float().expand_as(values)
    assert torch.equal(values[batch.mask], expected[batch.mask])
    # obs step counter restarts at every episode start inside the trial
    assert torch.equal(batch.observations[..., 1][batch.mask], batch.step_in_episode[batch.mask].float())
    # next_observations of an ending step is the final obs, not the reset obs
    ends = batch.dones & batch.mask
    assert torch.equal(batch.next_observations[..., 1][ends], batch.step_in_episode[ends].float() + 1)


@pytest.mark.parametrize("max_slots", [None, 2, 3])
def test_recurrent_state_resets_only_at_trial_boundaries(max_slots):
    _, batch = collect(ScriptedDist(), max_slots=max_slots)
    count = batch.extras["count"]
    t = torch.arange(batch.num_steps).unsqueeze(1).expand_as(count).float()
    # the counting state equals the time index within the trial for every valid step: it was never
    # reset at an inner episode boundary, and it started from zero for every trial (and wave).
    assert torch.equal(count[batch.mask], t[batch.mask])


def test_rl2_inputs_previous_reward_done_and_clipped_action():
    _, batch = collect(ScriptedDist())
    m = batch.mask
    prev_r = torch.zeros_like(batch.rewards)
    prev_r[1:] = batch.rewards[:-1]
    prev_d = torch.zeros_like(batch.rewards)
    prev_d[1:] = batch.dones[:-1].float()
    assert torch.equal(batch.extras["prev_reward"][m], prev_r[m])
    assert torch.equal(batch.extras["prev_done"][m], prev_d[m])
    # raw action 3.0 is stored, and fed back as previous action; the env saw it clipped to 1.
    assert torch.all(batch.actions[m] == 3.0)
    assert torch.all(batch.extras["prev_action"][1:][m[1:]] == 3.0)
    assert torch.all(batch.extras["prev_action"][0] == 0.0)


def test_same_seed_same_batch_and_different_seed_differs():
    _, a = collect(ScriptedDist(), seed=7)
    _, b = collect(ScriptedDist(), seed=7)
    _, c = collect(ScriptedDist(), seed=8)
    for name in ("observations", "next_observations", "actions", "rewards", "terminated", "truncated", "mask"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.observations, c.observations)


def test_global_rng_does_not_matter():
    np.random.seed(1)
    torch.manual_seed(1)
    _, a = collect(ScriptedDist(), seed=3)
    np.random.seed(2)
    torch.manual_seed(2)
    _, b = collect(ScriptedDist(), seed=3)
    assert torch.equal(a.observations, b.observations)


def test_env_is_reused_across_collections_and_counts_steps():
    dist = ScriptedDist()
    sampler, batch = collect(dist)
    tasks = dist.sample(4, rng=np.random.default_rng(1))
    sampler.collect(CountingPolicy(), tasks, episodes_per_task=6, episodes_per_trial=3)
    assert dist.made == 1
    assert sampler.total_env_steps == 2 * int(batch.mask.sum())
    stats = sampler.pop_stats()
    assert stats["time/env_steps_per_s"] > 0 and stats["faults/worker_restarts"] == 0
    assert sampler.pop_stats()["time/sample_s"] == 0.0


def test_nan_from_env_names_task_and_seed():
    with pytest.raises(EnvError, match=r"non-finite reward in slot 1 \(task scripted.*reset seed \d+"):
        collect(ScriptedDist(nan_at=2))


def test_lost_worker_discards_partial_trials_and_recollects():
    sampler, batch = collect(ScriptedDist(lose_worker_at=4))
    _, clean = collect(ScriptedDist())
    assert sampler.stats["faults/worker_restarts"] == 1
    # full requested trials, none partial or duplicated
    assert batch.episode_returns().shape == clean.episode_returns().shape
    assert ((batch.dones & batch.mask).sum(0) == 3).all()
    assert torch.equal(batch.mask.sum(0), clean.mask.sum(0))


def test_bad_arguments():
    dist = ScriptedDist()
    sampler = Sampler(dist, seed=0)
    tasks = dist.sample(2, rng=np.random.default_rng(0))
    with pytest.raises(EnvError, match="episodes_per_task=5 is not a multiple of episodes_per_trial=2"):
        sampler.collect(CountingPolicy(), tasks, episodes_per_task=5, episodes_per_trial=2)
    with pytest.raises(EnvError, match="episodes_per_task must be a positive integer, got 0"):
        sampler.collect(CountingPolicy(), tasks, episodes_per_task=0)
    with pytest.raises(EnvError, match="at least one task"):
        sampler.collect(CountingPolicy(), [], episodes_per_task=1)
    with pytest.raises(EnvError, match="max_slots"):
        Sampler(dist, seed=0, max_slots=0)
    for seed in (1.5, "1", True, None):
        with pytest.raises(EnvError, match=f"seed must be an integer, got {seed!r}"):
            Sampler(dist, seed=seed)


def test_batch_to_and_select_slots():
    _, batch = collect(ScriptedDist())
    sub = batch.select_slots(torch.tensor([2, 3]))
    assert sub.num_slots == 2 and sub.task_index.tolist() == [1, 1]
    assert torch.equal(sub.rewards, batch.rewards[:, 2:4])
    moved = batch.to("cpu")
    assert torch.equal(moved.extras["count"], batch.extras["count"])


class ExtrasOfManyDtypesPolicy(CountingPolicy):
    """The counting policy's count as extras of several dtypes, some with no numpy equivalent."""

    def act(self, inputs: StepInputs, state):
        action, state_next, extras = super().act(inputs, state)
        count = extras["count"]
        extras = {
            "f32": count.clone(),
            "bf16": count.to(torch.bfloat16),
            "i64": count.long(),
            "flag": count > 1,
            "pair": torch.stack([count, -count], dim=-1),
        }
        return action, state_next, extras


def test_extras_of_every_dtype_are_stored_exactly():
    dist = ScriptedDist()
    tasks = dist.sample(4, rng=np.random.default_rng(0))
    batch = Sampler(dist, seed=0).collect(
        ExtrasOfManyDtypesPolicy(), tasks, episodes_per_task=6, episodes_per_trial=3
    )
    count = batch.extras["f32"]
    assert count.dtype == torch.float32 and count[batch.mask].max() > 2
    assert batch.extras["bf16"].dtype == torch.bfloat16
    assert torch.equal(batch.extras["bf16"], count.to(torch.bfloat16))
    assert torch.equal(batch.extras["i64"], count.long())
    assert torch.equal(batch.extras["flag"], (count > 1) & batch.mask)
    assert batch.extras["pair"].shape == (*count.shape, 2)
    assert torch.equal(batch.extras["pair"][..., 1], -count)


def test_step_inputs_build_deferred_inputs_once_on_first_read():
    calls = []

    def reward():
        calls.append("reward")
        return torch.tensor([1.5, 2.5])

    inputs = StepInputs(torch.zeros(2, 3), torch.ones(2, 1), reward, torch.zeros(2), lambda: torch.tensor([0, 1]))
    assert calls == []  # nothing built yet
    assert torch.equal(inputs.prev_reward, torch.tensor([1.5, 2.5]))
    assert torch.equal(inputs.prev_reward, torch.tensor([1.5, 2.5]))
    assert calls == ["reward"]  # built once
    assert torch.equal(inputs.prev_action, torch.ones(2, 1))  # given as a tensor: kept as is
    assert inputs.episode_index.tolist() == [0, 1]
    assert "prev_reward=tensor([1.5000, 2.5000])" in repr(inputs)


class OneHotRecordingPolicy(Policy):
    """Uniform random discrete actions; records the previous action the sampler fed it."""

    def __init__(self, num_actions):
        self.num_actions = num_actions
        self.generator = torch.Generator().manual_seed(0)
        self.seen = []

    def initial_state(self, task_index):
        return None

    def act(self, inputs: StepInputs, state):
        self.seen.append(inputs.prev_action.clone())
        slots = inputs.obs.shape[0]
        return torch.randint(self.num_actions, (slots,), generator=self.generator), state, {}


def test_discrete_previous_action_is_one_hot_and_zero_at_trial_start():
    from metarl.envs import make

    dist = make("bandit", "k5-n10")
    policy = OneHotRecordingPolicy(5)
    batch = Sampler(dist, seed=0).collect(
        policy, dist.sample(3, rng=np.random.default_rng(0)), episodes_per_task=20, episodes_per_trial=10
    )
    seen = torch.stack(policy.seen)  # [T, B, 5]
    assert seen.shape == (batch.num_steps, batch.num_slots, 5) and seen.dtype == torch.float32
    assert torch.equal(seen[0], torch.zeros(batch.num_slots, 5))
    expected = torch.nn.functional.one_hot(batch.actions[:-1].long(), 5).float()
    assert torch.equal(seen[1:], expected)


def test_max_slots_caps_the_slots_stepped_at_once_even_below_one_task():
    """A task with more trials than max_slots is split over waves; the batch is unchanged."""

    class Recording(ScriptedDist):
        def make_batched(self, tasks, **kwargs):
            self.sizes = getattr(self, "sizes", []) + [len(tasks)]
            return super().make_batched(tasks, **kwargs)

    dist = Recording()
    tasks = dist.sample(2, rng=np.random.default_rng(0))
    sampler = Sampler(dist, seed=0, max_slots=2)
    batch = sampler.collect(CountingPolicy(), tasks, episodes_per_task=3, episodes_per_trial=1)
    assert dist.sizes == [2]  # one env of max_slots slots, reused for every wave
    assert batch.task_index.tolist() == [0, 0, 0, 1, 1, 1]
    assert batch.trial_index.tolist() == [0, 1, 2, 0, 1, 2]
    assert ((batch.dones & batch.mask).sum(0) == 1).all()
    t = torch.arange(batch.num_steps).unsqueeze(1).expand_as(batch.mask).float()
    assert torch.equal(batch.extras["count"][batch.mask], t[batch.mask])
    _, whole = collect(ScriptedDist(), tasks=2, episodes=3, per_trial=1)
    assert torch.equal(batch.mask, whole.mask) and torch.equal(batch.rewards, whole.rewards)


def test_an_episode_past_the_horizon_is_a_one_line_env_error():
    class NeverTruncated(ScriptedDist):
        def make_batched(self, tasks, **kwargs):
            env = super().make_batched(tasks, **kwargs)
            step = env.step

            def step_without_time_limit(actions):
                obs, reward, terminated, truncated, info = step(actions)
                return obs, reward, terminated, np.zeros_like(truncated), info

            env.step = step_without_time_limit
            return env

    dist = NeverTruncated(stops=False)
    with pytest.raises(EnvError, match=rf"ran past max_episode_steps={H} without truncation.*task scripted"):
        Sampler(dist, seed=0).collect(CountingPolicy(), dist.sample(2, rng=np.random.default_rng(0)), episodes_per_task=1)
