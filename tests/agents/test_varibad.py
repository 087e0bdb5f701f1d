"""VariBAD: ELBO by hand, prior at t = 0, KL direction, gradient routing, belief over a trial,
the exact Bayes-optimal gridworld solver, resume and configs."""

import dataclasses
import io
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from metarl.agents.rl2.agent import trial_inputs
from metarl.agents.varibad import (
    VariBAD,
    VariBADConfig,
    consecutive_kls,
    gaussian_kl,
    random_policy_returns,
    solve_gridworld,
)
from metarl.agents.varibad.decoder import GridCells, RewardDecoder
from metarl.agents.varibad.vae import TrialData, VAEBuffer, elbo_loss, trial_data
from metarl.config import build_dataclass, load_config
from metarl.envs import make
from metarl.errors import ConfigError, EnvError
from metarl.evaluation import evaluate
from metarl.registry import agent_class, agent_config
from metarl.sampler import Sampler
from metarl.seeding import numpy_rng
from metarl.types import Policy

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments" / "varibad"

#: A small gridworld VariBAD (the repo's gridworld settings, narrower).
GRID = VariBADConfig(
    latent_dim=3,
    encoder_hidden_size=16,
    encoder_obs_embedding=8,
    encoder_action_embedding=0,
    encoder_reward_embedding=4,
    reward_decoder="bernoulli_multihead",
    reward_decoder_sizes=(8,),
    kl_weight=1.0,
    vae_buffer_size=64,
    vae_batch_num_trajs=4,
    num_vae_updates=2,
    policy_obs_embedding=8,
    policy_latent_embedding=8,
    policy_sizes=(16,),
    discount=0.95,
    gae_lambda=0.95,
    clip=0.05,
    value_clip=0.05,
    entropy_coef=0.1,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks run fastest on one thread; intra-op threads only add contention here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Recording(Policy):
    """Wraps a policy and keeps every StepInputs, state and extras it produced."""

    def __init__(self, inner):
        self.inner = inner
        self.device = inner.device
        self.inputs, self.states = [], []

    def initial_state(self, task_index):
        return self.inner.initial_state(task_index)

    def act(self, inputs, state):
        self.inputs.append(inputs)
        self.states.append(state)
        return self.inner.act(inputs, state)


def grid_agent(config=GRID, seed=0):
    dist = make("gridworld")
    return dist, VariBAD(config, dist=dist, device="cpu", seed=seed)


def perturb_(module, seed=0):
    """Random weights everywhere (biases included), so no test passes by a zero init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))


# ------------------------------------------------------------------------------ ELBO by hand


class SquareDecoder:
    """A reward decoder whose loss is (first latent coordinate − reward)²."""

    def loss(self, latent, obs, action, next_obs, reward):
        return (latent[..., 0] - reward) ** 2


def tiny_data(rewards, mask):
    steps, slots = rewards.shape
    zeros = torch.zeros(steps, slots, 1)
    inputs = None  # elbo_loss never reads the encoder inputs
    return TrialData(inputs=inputs, obs=zeros, next_obs=zeros, action=zeros, reward=rewards, mask=mask)


def kl_by_hand(m1, v1, m2, v2):
    """KL(N(m1, v1) ‖ N(m2, v2)) for scalars (variances, not log-variances)."""
    return math.log(math.sqrt(v2) / math.sqrt(v1)) + (v1 + (m1 - m2) ** 2) / (2 * v2) - 0.5


def test_elbo_terms_equal_hand_computed_values():
    # One trial of 3 steps, latent dim 1: q_0 = N(0, 1) (the prior), q_1 = N(1, 4), q_2 = N(2, 1/4).
    means, variances = [0.0, 1.0, 2.0], [1.0, 4.0, 0.25]
    mean = torch.tensor(means).view(3, 1, 1)
    logvar = torch.tensor(variances).log().view(3, 1, 1)
    rewards = torch.tensor([[1.0], [0.0], [2.0]])
    data = tiny_data(rewards, torch.ones(3, 1, dtype=torch.bool))
    config = dataclasses.replace(GRID, kl_weight=0.5, reward_loss_coef=2.0)
    out = elbo_loss(mean, logvar, data, config=config, reward_decoder=SquareDecoder(), state_decoder=None, task_decoder=None,
                    generator=torch.Generator().manual_seed(7))
    eps = torch.randn(3, 1, 1, generator=torch.Generator().manual_seed(7)).view(3).tolist()
    z = [m + math.sqrt(v) * e for m, v, e in zip(means, variances, eps)]
    # Every posterior reconstructs the whole trial, past and future: Σ_t Σ_k (z_t − r_k)².
    recon = sum((zt - rk) ** 2 for zt in z for rk in (1.0, 0.0, 2.0))
    kl = kl_by_hand(0, 1, 0, 1) + kl_by_hand(1, 4, 0, 1) + kl_by_hand(2, 0.25, 1, 4)
    assert out["reward_recon"].item() == pytest.approx(recon, rel=1e-5)
    assert out["kl"].item() == pytest.approx(kl, rel=1e-5)
    assert out["loss"].item() == pytest.approx(2.0 * recon + 0.5 * kl, rel=1e-5)
    assert out["elbo"].item() == pytest.approx(-(recon + kl), rel=1e-5)

    # Averages instead of sums (vae_avg_elbo_terms / vae_avg_reconstruction_terms).
    avg = dataclasses.replace(config, vae_avg_elbo_terms=True, vae_avg_reconstruction_terms=True)
    out = elbo_loss(mean, logvar, data, config=avg, reward_decoder=SquareDecoder(), state_decoder=None, task_decoder=None,
                    generator=torch.Generator().manual_seed(7))
    assert out["reward_recon"].item() == pytest.approx(recon / 9, rel=1e-5)
    assert out["kl"].item() == pytest.approx(kl / 3, rel=1e-5)


def test_elbo_ignores_padding_and_averages_over_trials():
    # Trial 0 has 3 steps, trial 1 only 2: its third step is neither an ELBO term nor a decode.
    mean = torch.tensor([[0.0, 0.0], [1.0, -1.0], [2.0, 5.0]]).unsqueeze(-1)
    logvar = torch.zeros(3, 2, 1)
    rewards = torch.tensor([[1.0, 3.0], [0.0, 1.0], [2.0, 100.0]])
    mask = torch.tensor([[True, True], [True, True], [True, False]])
    out = elbo_loss(mean, logvar, tiny_data(rewards, mask), config=GRID, reward_decoder=SquareDecoder(), state_decoder=None,
                    task_decoder=None, generator=torch.Generator().manual_seed(1))
    eps = torch.randn(3, 2, 1, generator=torch.Generator().manual_seed(1))[..., 0]
    z = mean[..., 0] + eps
    recon0 = sum((z[t, 0] - r) ** 2 for t in range(3) for r in (1.0, 0.0, 2.0))
    recon1 = sum((z[t, 1] - r) ** 2 for t in range(2) for r in (3.0, 1.0))
    kl0 = kl_by_hand(1, 1, 0, 1) + kl_by_hand(2, 1, 1, 1)
    kl1 = kl_by_hand(-1, 1, 0, 1)
    assert out["reward_recon"].item() == pytest.approx(float(recon0 + recon1) / 2, rel=1e-5)
    assert out["kl"].item() == pytest.approx((kl0 + kl1) / 2, rel=1e-5)


def test_elbo_subsampling_uses_the_drawn_terms():
    mean = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(4, 1, 1)
    logvar = torch.tensor([0.0, 0.5, -0.5, 1.0]).view(4, 1, 1)
    rewards = torch.tensor([[1.0], [0.0], [2.0], [4.0]])
    config = dataclasses.replace(GRID, vae_subsample_elbos=3, vae_subsample_decodes=2)
    out = elbo_loss(mean, logvar, tiny_data(rewards, torch.ones(4, 1, dtype=torch.bool)), config=config,
                    reward_decoder=SquareDecoder(), state_decoder=None, task_decoder=None, generator=torch.Generator().manual_seed(3))
    # Replay the documented draws: noise [T, B, L], ELBO indices [E, B], decode indices [E, K, B].
    gen = torch.Generator().manual_seed(3)
    eps = torch.randn(4, 1, 1, generator=gen).view(4)
    elbo_index = (torch.rand(3, 1, generator=gen) * 4).long().view(3)
    decode_index = (torch.rand(3, 2, 1, generator=gen) * 4).long().view(3, 2)
    z = mean.view(4) + torch.exp(0.5 * logvar.view(4)) * eps
    kls = consecutive_kls(mean, logvar).view(4)
    recon = sum((z[elbo_index[e]] - rewards[decode_index[e, k], 0]) ** 2 for e in range(3) for k in range(2))
    assert out["reward_recon"].item() == pytest.approx(float(recon), rel=1e-5)
    assert out["kl"].item() == pytest.approx(float(kls[elbo_index].sum()), rel=1e-5)


def test_multihead_reward_decoder_is_bernoulli_on_the_next_cell():
    dist = make("gridworld")
    cells = GridCells(dist.observation_space)
    assert cells.num_cells == 25
    assert cells.index(torch.tensor([[3.0, 4.0], [0.0, 0.0], [4.0, 1.0]])).tolist() == [19, 0, 21]  # VariBAD's 5x + y
    decoder = RewardDecoder("bernoulli_multihead", latent_dim=2, obs_dim=2, action_dim=5, hidden_sizes=(4,), obs_embedding=0,
                            action_embedding=0, prev_obs=False, action=False, cells=cells, generator=torch.Generator().manual_seed(0))
    latent = torch.tensor([[0.3, -0.2], [1.0, 2.0]])
    next_obs = torch.tensor([[3.0, 4.0], [1.0, 2.0]])
    reward = torch.tensor([1.0, -0.1])
    loss = decoder.loss(latent, next_obs, torch.zeros(2, 5), next_obs, reward)
    logits = decoder.net(latent)
    p = torch.sigmoid(torch.stack([logits[0, 19], logits[1, 7]]))
    expected = torch.stack([-torch.log(p[0]), -torch.log(1 - p[1])])  # target: the reward is positive
    torch.testing.assert_close(loss, expected)


def test_kl_direction_against_closed_form():
    mean_q, var_q = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 3.0])
    mean_p, var_p = torch.tensor([0.0, 1.0]), torch.tensor([2.0, 0.25])
    forward = gaussian_kl(mean_q, var_q.log(), mean_p, var_p.log())
    by_hand = sum(kl_by_hand(mean_q[i].item(), var_q[i].item(), mean_p[i].item(), var_p[i].item()) for i in range(2))
    assert forward.item() == pytest.approx(by_hand, rel=1e-6)
    reverse = gaussian_kl(mean_p, var_p.log(), mean_q, var_q.log())
    assert abs(reverse.item() - forward.item()) > 1.0  # the direction matters for these numbers
    # consecutive_kls[t] = KL(q_t ‖ q_{t−1}) (VariBAD: the previous posterior is the prior of step t).
    mean = torch.stack([mean_p, mean_q]).unsqueeze(1)  # [T=2, B=1, L=2]: q_0 = p, q_1 = q
    logvar = torch.stack([var_p.log(), var_q.log()]).unsqueeze(1)
    kls = consecutive_kls(mean, logvar)[:, 0]
    prior = torch.distributions.Normal(torch.zeros(2), torch.ones(2))
    first = torch.distributions.kl_divergence(torch.distributions.Normal(mean_p, var_p.sqrt()), prior).sum()
    assert kls[0].item() == pytest.approx(first.item(), rel=1e-6)
    assert kls[1].item() == pytest.approx(by_hand, rel=1e-6)


# ------------------------------------------------------------------------------ the belief


def test_posterior_at_t0_is_the_prior_for_any_weights():
    dist, agent = grid_agent()
    perturb_(agent.encoder, seed=1)
    _, prior_mean, prior_logvar = agent.encoder.prior(3)
    assert torch.equal(prior_mean, torch.zeros(3, 3)) and torch.equal(prior_logvar, torch.zeros(3, 3))  # N(0, I)
    tasks = dist.sample(3, split="train", rng=np.random.default_rng(0))
    batch = Sampler(dist, seed=0).collect(agent.policy(None), tasks, episodes_per_task=4, episodes_per_trial=4)
    assert torch.equal(batch.extras["latent_mean"][0], prior_mean)
    assert torch.equal(batch.extras["latent_logvar"][0], prior_logvar)
    mean, logvar = agent.encoder(trial_inputs(batch, dist.action_space))
    assert torch.equal(mean[0], prior_mean) and torch.equal(logvar[0], prior_logvar)
    assert mean[1:].abs().min() > 0  # after the first step the belief has moved


def test_belief_carries_across_episodes_and_resets_between_trials():
    dist, agent = grid_agent()
    perturb_(agent.encoder, seed=2)
    tasks = dist.sample(2, split="train", rng=np.random.default_rng(1))
    policy = Recording(agent.policy(None))
    # Two trials of 4 episodes per task: 4 slots, each one trial of 60 steps.
    batch = Sampler(dist, seed=1).collect(policy, tasks, episodes_per_task=8, episodes_per_trial=4)
    assert batch.num_steps == 60 and batch.num_slots == 4
    hidden0, mean0, logvar0, started0 = policy.states[0]
    assert torch.equal(hidden0, torch.zeros(1, 4, 16)) and not started0.any()  # every trial starts at the prior
    # At the first step of episode 2 (t = 15) nothing was reset: the GRU state equals one pass of
    # the encoder's core over the policy inputs of steps 1..14 from zero.
    inputs = trial_inputs(batch, dist.action_space)
    core = agent.encoder.core
    with torch.no_grad():
        _, after = core(inputs.obs[1:15], inputs.prev_action[1:15], inputs.prev_reward[1:15], inputs.prev_done[1:15], core.initial_state(4))
    assert policy.inputs[15].prev_done.eq(1.0).all()
    torch.testing.assert_close(policy.states[15][0], after, atol=1e-5, rtol=0)
    assert policy.states[15][0].abs().min() > 0
    # The belief acted on at every step is what the encoder recomputes from the stored trial.
    with torch.no_grad():
        mean, logvar = agent.encoder(inputs)
    torch.testing.assert_close(mean, batch.extras["latent_mean"], atol=1e-5, rtol=0)
    torch.testing.assert_close(logvar, batch.extras["latent_logvar"], atol=1e-5, rtol=0)
    # Truncated BPTT changes gradients, not values.
    with torch.no_grad():
        chunked, _ = agent.encoder(inputs, tbptt=7)
    torch.testing.assert_close(chunked, mean, atol=1e-5, rtol=0)
    # A second collection starts again from the prior.
    again = Sampler(dist, seed=2).collect(agent.policy(None), tasks, episodes_per_task=4, episodes_per_trial=4)
    assert torch.equal(again.extras["latent_mean"][0], torch.zeros(2, 3))


def test_rl_loss_reaches_the_encoder_only_when_configured():
    dist, agent = grid_agent()
    tasks = dist.sample(4, split="train", rng=np.random.default_rng(2))
    batch = Sampler(dist, seed=2).collect(agent.policy(None), tasks, episodes_per_task=4, episodes_per_trial=4)
    for with_grad in (False, True):
        agent.encoder.zero_grad(set_to_none=True)
        obs, done, belief = agent.policy_inputs(batch, with_grad=with_grad)
        dist_, value = agent.network(obs, done, belief)
        (dist_.log_prob(batch.actions).mean() + value.mean()).backward()
        grads = [p.grad for p in agent.encoder.parameters()]
        if with_grad:
            assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
        else:
            assert all(g is None for g in grads)
    # learn() (the PPO step) leaves the encoder untouched by default and moves it when configured.
    for through in (False, True):
        _, agent = grid_agent(dataclasses.replace(GRID, rl_loss_through_encoder=through))
        agent.buffer.add(batch)
        before = [p.detach().clone() for p in agent.encoder.parameters()]
        policy_before = [p.detach().clone() for p in agent.network.parameters()]
        agent.learn(batch)
        moved = any(not torch.equal(a, b) for a, b in zip(before, agent.encoder.parameters()))
        assert moved is through
        assert any(not torch.equal(a, b) for a, b in zip(policy_before, agent.network.parameters()))


def test_vae_updates_reduce_the_elbo_loss_on_fixed_trials():
    dist, agent = grid_agent(dataclasses.replace(GRID, vae_batch_num_trajs=64, vae_learning_rate=1e-2))
    tasks = dist.sample(8, split="train", rng=np.random.default_rng(3))
    batch = Sampler(dist, seed=3).collect(agent.policy(None), tasks, episodes_per_task=4, episodes_per_trial=4)
    agent.buffer.add(batch)
    losses = [agent.vae_update()["meta_train/vae_loss"] for _ in range(30)]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


# ------------------------------------------------------------------------------ training loop


def test_meta_train_step_reports_metrics_and_precollects():
    dist, agent = grid_agent(dataclasses.replace(GRID, precollect_steps=300))
    sampler, rng = Sampler(dist, seed=4), numpy_rng(4, "tasks")
    before = [p.detach().clone() for p in agent.network.parameters()]
    first = agent.meta_train_step(sampler, dist.sample(4, split="train", rng=rng))  # 240 steps: precollecting
    assert "meta_train/policy_loss" not in first and len(agent.buffer) == 4
    assert all(torch.equal(a, b) for a, b in zip(before, agent.network.parameters()))
    second = agent.meta_train_step(sampler, dist.sample(4, split="train", rng=rng))
    for key in ("meta_train/return", "meta_train/return_episode_4", "meta_train/elbo", "meta_train/reward_recon",
                "meta_train/kl", "meta_train/policy_loss", "meta_train/value_loss", "meta_train/entropy"):
        assert math.isfinite(second[key]), key
    assert second["meta_train/env_steps"] == 240 and len(agent.buffer) == 8
    assert second["meta_train/return"] == pytest.approx(second["meta_train/return_trial"] / 4)
    assert agent.iteration == 2 and agent.env_steps == 480


def test_continuous_actions_with_all_decoders_and_subsampling():
    dist = make("navigation-2d")
    config = dataclasses.replace(
        VariBADConfig(), latent_dim=2, encoder_hidden_size=8, encoder_obs_embedding=4, encoder_action_embedding=4,
        encoder_reward_embedding=4, reward_decoder_sizes=(8,), reward_decoder_prev_obs=True, reward_decoder_action=True,
        decode_state=True, state_decoder_sizes=(8,), decode_task=True, task_decoder_sizes=(8,), vae_subsample_elbos=5,
        vae_subsample_decodes=4, tbptt=7, policy_obs_embedding=4, policy_latent_embedding=4, policy_sizes=(8,),
        episodes_per_trial=2, vae_batch_num_trajs=3,
    )
    agent = VariBAD(config, dist=dist, device="cpu", seed=0)
    tasks = dist.sample(3, split="train", rng=np.random.default_rng(0))
    metrics = agent.meta_train_step(Sampler(dist, seed=0), tasks)
    for key in ("meta_train/reward_recon", "meta_train/state_recon", "meta_train/task_recon", "meta_train/kl"):
        assert math.isfinite(metrics[key]) and metrics[key] > 0, key
    # The task decoder's target is the goal, stored with each trial.
    sample, stored = agent.buffer.sample(3, generator=torch.Generator().manual_seed(0), device="cpu")
    assert stored.shape == (3, 2)
    goals = sorted(tuple(t["goal"].tolist()) for t in tasks)
    np.testing.assert_allclose(sorted(tuple(row) for row in stored.tolist()), goals, rtol=1e-6)


def test_buffer_is_a_ring_and_samples_without_replacement():
    dist, agent = grid_agent()
    tasks = dist.sample(3, split="train", rng=np.random.default_rng(5))
    buffer = VAEBuffer(5, horizon=60)
    batches = [Sampler(dist, seed=s).collect(agent.policy(None), tasks, episodes_per_task=4, episodes_per_trial=4) for s in range(2)]
    buffer.add(batches[0])
    buffer.add(batches[1])  # 6 trials into 5 places: the oldest is replaced
    assert len(buffer) == 5 and buffer.insert_at == 1
    assert torch.equal(buffer.storage["rewards"][:, 0], batches[1].rewards[:, 2])
    assert torch.equal(buffer.storage["rewards"][:, 1], batches[0].rewards[:, 1])
    sample, _ = buffer.sample(5, generator=torch.Generator().manual_seed(0), device="cpu")
    columns = {tuple(sample.observations[:, i].flatten().tolist()) for i in range(5)}
    assert len(columns) == 5  # no trial drawn twice
    data = trial_data(sample, dist.action_space)
    assert data.inputs.prev_done[15].eq(1.0).all() and data.next_obs.shape == (60, 5, 2)
    # A batch larger than the buffer leaves its newest trials, in ring order.
    small = VAEBuffer(2, horizon=60)
    small.add(batches[0])  # trials 0..2 into 2 places: trial 2 at 0, trial 1 at 1
    assert len(small) == 2 and small.insert_at == 1
    assert torch.equal(small.storage["rewards"][:, 0], batches[0].rewards[:, 2])
    assert torch.equal(small.storage["rewards"][:, 1], batches[0].rewards[:, 1])
    assert torch.equal(small.storage["observations"][:, 0], batches[0].observations[:, 2])


def test_state_dict_resumes_exactly_and_evaluation_does_not_perturb_training():
    dist, agent = grid_agent(dataclasses.replace(GRID, precollect_steps=100))
    sampler, rng = Sampler(dist, seed=6), numpy_rng(6, "tasks")

    def train(a, s, r, n):
        return [a.meta_train_step(s, dist.sample(4, split="train", rng=r)) for _ in range(n)]

    train(agent, sampler, rng, 3)
    saved = torch.load(_roundtrip((agent.state_dict(), sampler.state_dict(), rng.bit_generator.state)), weights_only=False)
    evaluate(agent, Sampler(dist, seed=9), dist.sample(3, split="test", rng=np.random.default_rng(0)), rounds=4, episodes_per_round=1)
    expected = train(agent, sampler, rng, 2)

    fresh = VariBAD(GRID, dist=dist, device="cpu", seed=123)
    fresh_sampler, fresh_rng = Sampler(dist, seed=0), numpy_rng(0, "tasks")
    fresh.load_state_dict(saved[0])
    fresh_sampler.load_state_dict(saved[1])
    fresh_rng.bit_generator.state = saved[2]
    assert train(fresh, fresh_sampler, fresh_rng, 2) == expected
    assert len(fresh.buffer) == len(agent.buffer) == 20 and fresh.iteration == 5


def _roundtrip(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


def test_same_seed_same_metrics():
    dist = make("gridworld")
    runs = []
    for seed in (5, 5, 6):
        agent = VariBAD(GRID, dist=dist, device="cpu", seed=seed)
        sampler, rng = Sampler(dist, seed=5), numpy_rng(5, "tasks")
        runs.append([agent.meta_train_step(sampler, dist.sample(4, split="train", rng=rng)) for _ in range(2)])
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_beliefs_are_json_ready_per_step():
    dist, agent = grid_agent()
    tasks = dist.tasks("test")[:2]
    data = agent.beliefs(Sampler(dist, seed=0), tasks)
    json.dumps(data)
    assert data["latent_dim"] == 3 and data["episodes_per_trial"] == 4 and data["grid_shape"] == [5, 5]
    assert [t["task"] for t in data["trials"]] == [str(t) for t in tasks]
    trial = data["trials"][0]
    assert np.asarray(trial["mean"]).shape == (60, 3) and np.asarray(trial["logvar"]).shape == (60, 3)
    assert trial["mean"][0] == [0.0, 0.0, 0.0] and trial["episode_starts"] == [0, 15, 30, 45]
    assert len(trial["rewards"]) == 60 and np.asarray(trial["cell_probabilities"]).shape == (60, 25)
    assert sum(trial["rewards"]) == pytest.approx(sum(trial["episode_returns"]), abs=1e-4)


def test_policy_is_deterministic_on_request_and_adapt_is_identity():
    dist, agent = grid_agent()
    tasks = dist.sample(2, split="test", rng=np.random.default_rng(0))
    batches = [Sampler(dist, seed=0).collect(agent.policy(None, deterministic=True), tasks, episodes_per_task=4, episodes_per_trial=4) for _ in range(2)]
    assert torch.equal(batches[0].actions, batches[1].actions)
    assert agent.adaptation == "trial" and agent.initial_context(2) is None
    assert agent.adapt(batches[0], "ctx") == "ctx"


def test_config_errors_and_registry():
    with pytest.raises(ConfigError, match="discount"):
        VariBADConfig(discount=0.0)
    with pytest.raises(ConfigError, match="decoder"):
        VariBADConfig(decode_reward=False)
    with pytest.raises(ConfigError, match="bernoulli_multihead"):
        VariBAD(dataclasses.replace(GRID), dist=make("navigation-2d"), device="cpu", seed=0)
    assert agent_class("varibad") is VariBAD and agent_config("varibad") is VariBADConfig
    # Zero would crash torch's huber_loss, fail the value clip mid-run, or silently zero every
    # update (a gradient-norm bound of 0): rejected when the config is loaded.
    for key in ("huber_delta", "value_clip", "max_grad_norm", "vae_max_grad_norm"):
        with pytest.raises(ConfigError, match=f"{key}: must be > 0"):
            build_dataclass(VariBADConfig, {key: 0.0}, section="agent")
        assert getattr(build_dataclass(VariBADConfig, {key: None}, section="agent"), key) is None
    sizes = ("encoder_layers_before_gru", "reward_decoder_sizes", "state_decoder_sizes", "task_decoder_sizes", "policy_sizes")
    for key in sizes:
        with pytest.raises(ConfigError, match=f"{key}: must be > 0"):
            build_dataclass(VariBADConfig, {key: [0]}, section="agent")


def test_building_the_agent_leaves_torch_global_rng_untouched():
    dist = make("navigation-2d")
    config = dataclasses.replace(VariBADConfig(), latent_dim=2, encoder_hidden_size=8, decode_state=True, decode_task=True)
    before = torch.random.get_rng_state()
    agents = [VariBAD(config, dist=dist, device="cpu", seed=s) for s in (3, 3, 4)]
    assert torch.equal(torch.random.get_rng_state(), before)
    weights = [
        torch.cat([p.detach().flatten() for m in (a.encoder, a.decoders, a.network) for p in m.parameters()]) for a in agents
    ]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])


def test_experiment_configs_load():
    files = sorted(EXPERIMENTS.glob("*.yaml"))
    names = {f.stem for f in files}
    assert {"gridworld", "halfcheetah-vel", "halfcheetah-dir", "ant-dir", "ant-goal"} <= names
    for path in files:
        config = load_config(path, agent_configs=agent_config)
        text = path.read_text()
        assert text.startswith("#") and "Source" in text  # every config cites where it comes from
        assert config.evaluation.deterministic  # VariBAD's protocol
        if config.agent.name == "varibad":
            assert isinstance(config.agent.config, VariBADConfig)


# ------------------------------------------------------------------------------ Bayes-optimal


def brute_force_bayes_value(goals, *, num_cells, horizon, episodes):
    """Expectimax over full histories with Bayes' rule on the goal (no candidate-set shortcut)."""
    moves = [(0, 0), (0, 1), (1, 0), (0, -1), (-1, 0)]
    goals = [tuple(g) for g in goals]

    def value(t, cell, posterior):
        if t == horizon * episodes:
            return 0.0
        best = -math.inf
        for dx, dy in moves:
            nxt = (min(max(cell[0] + dx, 0), num_cells - 1), min(max(cell[1] + dy, 0), num_cells - 1))
            after = (0, 0) if t % horizon == horizon - 1 else nxt
            total = 0.0
            for found in (True, False):
                weights = {g: p for g, p in posterior.items() if (g == nxt) == found}
                mass = sum(weights.values())
                if mass == 0:
                    continue
                reward = 1.0 if found else -0.1
                total += mass * (reward + value(t + 1, after, {g: p / mass for g, p in weights.items()}))
            best = max(best, total)
        return best

    return value(0, (0, 0), {g: 1 / len(goals) for g in goals})


def test_bayes_optimal_matches_brute_force_and_the_real_env():
    dist = make("gridworld", "varibad", num_cells=3, max_episode_steps=3, episodes_per_trial=2)
    goals = dist.goals(None)  # (0, 2), (1, 2), (2, 0), (2, 1), (2, 2)
    solution = solve_gridworld(goals, num_cells=3, episode_length=3, episodes_per_trial=2)
    assert solution.trial_return == pytest.approx(brute_force_bayes_value(goals, num_cells=3, horizon=3, episodes=2), abs=1e-9)
    assert solution.episode_returns.sum() == pytest.approx(solution.trial_return, abs=1e-9)
    # Replaying the Bayes-optimal actions in the env reproduces the per-goal episode returns.
    for task in dist.tasks("train") + dist.tasks("test"):
        index = [tuple(x) for x in goals.tolist()].index(tuple(task["goal"].tolist()))
        actions, returns = solution.rollout(index)
        env = dist.make_env(task)
        env.reset(seed=0)
        got = np.zeros(2)
        for t, a in enumerate(actions):
            _, r, _, truncated, _ = env.step(a)
            got[t // 3] += r
            if truncated:
                env.reset()
        np.testing.assert_allclose(got, returns)
    # One goal: no uncertainty. Two steps to (2, 0), then stay: −0.1 + 1 + 1 per episode.
    single = solve_gridworld([[2, 0]], num_cells=3, episode_length=3, episodes_per_trial=2)
    np.testing.assert_allclose(single.episode_returns, [1.9, 1.9])


def test_random_policy_return_matches_enumeration():
    goals = [[2, 0], [1, 2]]
    moves = [(0, 0), (0, 1), (1, 0), (0, -1), (-1, 0)]
    total = 0.0
    for goal in goals:
        for seq in itertools.product(range(5), repeat=3):
            cell, ret = (0, 0), 0.0
            for a in seq:
                cell = (min(max(cell[0] + moves[a][0], 0), 2), min(max(cell[1] + moves[a][1], 0), 2))
                ret += 1.0 if list(cell) == goal else -0.1
            total += ret / 125
    assert random_policy_returns(goals, num_cells=3, episode_length=3) == pytest.approx(total / 2, abs=1e-12)


def test_bayes_optimal_gridworld_test_split():
    """The 5-goal test split of the 5x5 gridworld (fast): the first episode searches, the rest
    walk straight to the goal; the figures the benchmark normalises by."""
    dist = make("gridworld")
    solution = solve_gridworld(dist.goals("test"))
    np.testing.assert_allclose(solution.episode_returns, [7.3, 11.7, 11.7, 11.7], atol=1e-9)
    assert random_policy_returns(dist.goals("test")) == pytest.approx(-1.0560565, abs=1e-6)


def test_bayes_optimal_rejects_bad_goals():
    with pytest.raises(EnvError, match="on the 3x3 grid"):
        solve_gridworld([[3, 0]], num_cells=3)
    with pytest.raises(EnvError, match="distinct"):
        solve_gridworld([[1, 2], [1, 2]], num_cells=3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_learns_on_cuda_with_the_same_numbers_as_cpu_at_trial_start():
    dist = make("gridworld")
    agent = VariBAD(GRID, dist=dist, device="cuda", seed=0)
    tasks = dist.sample(4, split="train", rng=np.random.default_rng(0))
    sampler = Sampler(dist, seed=0, device="cuda")
    metrics = agent.meta_train_step(sampler, tasks)
    assert math.isfinite(metrics["meta_train/elbo"]) and agent.buffer.storage["rewards"].is_cuda
    batch = sampler.collect(agent.policy(None), tasks, episodes_per_task=4, episodes_per_trial=4)
    assert torch.equal(batch.extras["latent_mean"][0].cpu(), torch.zeros(4, 3))
