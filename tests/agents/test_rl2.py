"""RL²: recurrent state over trials, gradient routing, trial-level advantages, PPO wiring, resume."""

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from metarl.agents.rl2 import RL2, RecurrentCore, RL2Config, RL2Network
from metarl.agents.rl2.agent import TrialInputs, evaluate_trials, trial_advantages, trial_inputs
from metarl.agents.rl2.recurrent import Categorical, DiagGaussian
from metarl.config import build_dataclass, load_config
from metarl.envs import make
from metarl.errors import ConfigError
from metarl.evaluation import evaluate
from metarl.registry import agent_config
from metarl.returns import discounted_returns
from metarl.sampler import Sampler
from metarl.seeding import numpy_rng
from metarl.types import Policy

SMALL = RL2Config(hidden_size=16, epochs=2, num_minibatches=2)
EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments" / "rl2"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks run fastest on one thread; intra-op threads only add contention here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Recording(Policy):
    """Wraps a policy and keeps every StepInputs and state it was called with."""

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


def tabular_agent(config=SMALL, seed=0):
    dist = make("tabular-mdp", "n10")
    return dist, RL2(dataclasses.replace(config, episodes_per_trial=3), dist=dist, device="cpu", seed=seed)


def test_state_carries_across_episodes_and_resets_between_trials():
    dist, agent = tabular_agent()
    tasks = dist.sample(3, split="train", rng=np.random.default_rng(0))
    policy = Recording(agent.policy(None))
    batch = Sampler(dist, seed=1).collect(policy, tasks, episodes_per_task=6, episodes_per_trial=3)
    assert batch.num_steps == 30 and batch.num_slots == 6
    # Trial start: the state is zeros, for every slot of every collection.
    assert torch.equal(policy.states[0], torch.zeros(1, 6, 16))
    # At the first step of episode 2 (t = 10) the state is not reset: it is nonzero and equals
    # the state the GRU reached after the 10 steps of episode 1.
    inputs = trial_inputs(batch, dist.action_space)
    core = agent.network.core
    with torch.no_grad():
        _, after_episode_1 = core(
            inputs.obs[:10], inputs.prev_action[:10], inputs.prev_reward[:10], inputs.prev_done[:10], core.initial_state(6)
        )
    assert policy.inputs[10].prev_done.eq(1.0).all() and policy.inputs[9].prev_done.eq(0.0).all()
    torch.testing.assert_close(policy.states[10], after_episode_1, atol=1e-5, rtol=0)
    assert policy.states[10].abs().min() > 0
    # One pass over the whole trial from a zero state reproduces every stored log-prob and value.
    start = core.initial_state(6).unsqueeze(0)
    with torch.no_grad():
        dist_all, values = evaluate_trials(agent.network, inputs, start, chunk=30)
    torch.testing.assert_close(dist_all.log_prob(batch.actions), batch.extras["log_prob"], atol=1e-5, rtol=0)
    torch.testing.assert_close(values, batch.extras["value"], atol=1e-5, rtol=0)
    # Whereas resetting at the episode boundary would give different values in episode 2.
    with torch.no_grad():
        reset_values = evaluate_trials(agent.network, inputs, torch.zeros(3, 1, 6, 16), chunk=10)[1]
    assert (reset_values[10:] - batch.extras["value"][10:]).abs().max() > 1e-3
    # A second collection starts every trial from zeros again.
    policy2 = Recording(agent.policy(None))
    Sampler(dist, seed=2).collect(policy2, tasks, episodes_per_task=3, episodes_per_trial=3)
    assert torch.equal(policy2.states[0], torch.zeros(1, 3, 16))


def test_trial_inputs_match_what_the_sampler_fed():
    dist = make("navigation-2d", max_episode_steps=4)
    config = dataclasses.replace(SMALL, episodes_per_trial=3, normalize_observations=True)
    agent = RL2(config, dist=dist, device="cpu", seed=0)
    agent.obs_normalizer.update(torch.randn(50, 2, generator=torch.Generator().manual_seed(0)) * 3)
    tasks = dist.sample(2, split="train", rng=np.random.default_rng(0))
    policy = Recording(agent.policy(None))
    batch = Sampler(dist, seed=0).collect(policy, tasks, episodes_per_task=3, episodes_per_trial=3)
    rebuilt = trial_inputs(batch, dist.action_space, obs_normalizer=agent.obs_normalizer)
    assert batch.actions.shape == (12, 2, 2)
    for t, seen in enumerate(policy.inputs):
        valid = batch.mask[t]
        torch.testing.assert_close(rebuilt.prev_action[t][valid], seen.prev_action[valid])
        torch.testing.assert_close(rebuilt.prev_reward[t][valid], seen.prev_reward[valid])
        torch.testing.assert_close(rebuilt.prev_done[t][valid], seen.prev_done[valid])
        torch.testing.assert_close(rebuilt.obs[t][valid], agent.obs_normalizer.normalize(seen.obs)[valid])
    start = agent.network.core.initial_state(2).unsqueeze(0)
    with torch.no_grad():
        d, _ = evaluate_trials(agent.network, rebuilt, start, chunk=batch.num_steps)
    torch.testing.assert_close(d.log_prob(batch.actions)[batch.mask], batch.extras["log_prob"][batch.mask], atol=1e-5, rtol=0)


def _core_and_inputs(steps=12):
    gen = torch.Generator().manual_seed(0)
    core = RecurrentCore(3, 2, hidden_size=8, obs_embedding=4, action_embedding=3, reward_embedding=2, generator=gen)
    obs = torch.randn(steps, 2, 3, generator=gen, requires_grad=True)
    inputs = TrialInputs(obs, torch.randn(steps, 2, 2, generator=gen), torch.randn(steps, 2, generator=gen), torch.zeros(steps, 2))
    return core, inputs


def test_gradient_of_last_step_reaches_first_step_input():
    core, x = _core_and_inputs()
    features, _ = core(x.obs, x.prev_action, x.prev_reward, x.prev_done, core.initial_state(2))
    features[-1, 0].sum().backward()
    assert x.obs.grad[0, 0].abs().sum() > 0  # the first step of the same trial
    assert x.obs.grad[:, 1].abs().sum() == 0  # never another trial


def _ln(x):
    return torch.nn.functional.layer_norm(x, x.shape[-1:])


def test_layer_norm_gru_is_the_documented_recurrence():
    from metarl.agents.rl2.recurrent import LayerNormGRU

    gen = torch.Generator().manual_seed(3)
    cell = LayerNormGRU(3, 4, num_layers=2, update_bias=1.0, generator=gen)
    # Give the layer norms non-trivial affine parameters so the test covers them.
    with torch.no_grad():
        for p in cell.parameters():
            if p.dim() == 1:
                p.copy_(torch.randn(p.shape, generator=gen))
    x = torch.randn(5, 2, 3, generator=gen)
    state = torch.randn(2, 2, 4, generator=gen).abs()
    out, final = cell(x, state)
    # By hand, step by step and layer by layer.
    inputs = x
    for layer, c in enumerate(cell.layers):

        def norm(name, v, c=c):
            m = c[name]
            return _ln(v) * m.weight + m.bias

        h = state[layer]
        outs = []
        for t in range(5):
            zr = norm("ln_x_zr", inputs[t] @ c["x_zr"].weight.T) + norm("ln_h_zr", h @ c["h_zr"].weight.T)
            z, r = torch.sigmoid(zr[:, :4] - 1.0), torch.sigmoid(zr[:, 4:])
            n = torch.relu(norm("ln_x_n", inputs[t] @ c["x_n"].weight.T) + r * norm("ln_h_n", h @ c["h_n"].weight.T))
            h = (1 - z) * h + z * n
            outs.append(h)
        inputs = torch.stack(outs)
        torch.testing.assert_close(final[layer], h, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out, inputs, atol=1e-6, rtol=1e-5)
    # Running the sequence in two pieces from the carried state gives the same outputs.
    first, mid = cell(x[:2], state)
    second, end = cell(x[2:], mid)
    torch.testing.assert_close(torch.cat([first, second]), out, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(end, final, atol=1e-6, rtol=1e-5)


def test_layer_norm_gru_core_carries_gradient_to_every_parameter_and_the_first_input():
    gen = torch.Generator().manual_seed(0)
    core = RecurrentCore(3, 2, hidden_size=8, obs_embedding=4, cell="ln_gru", generator=gen)
    obs = torch.randn(12, 2, 3, generator=gen, requires_grad=True)
    features, _ = core(obs, torch.randn(12, 2, 2, generator=gen), torch.randn(12, 2, generator=gen), torch.zeros(12, 2), core.initial_state(2))
    assert features.shape == (12, 2, 8) and (features >= 0).all()  # ReLU candidates, zero start
    features[-1, 0].sum().backward()
    assert obs.grad[0, 0].abs().sum() > 0
    assert obs.grad[:, 1].abs().sum() == 0
    for name, p in core.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    with pytest.raises(ConfigError, match="unknown recurrent cell 'lstm'; valid cells: 'gru', 'ln_gru'"):
        RecurrentCore(3, 2, hidden_size=8, cell="lstm", generator=gen)


def test_layer_norm_gru_agent_collects_and_learns_on_the_stored_log_probs():
    config = dataclasses.replace(SMALL, cell="ln_gru", value_network="separate")
    dist, agent = tabular_agent(config)
    tasks = dist.sample(3, split="train", rng=np.random.default_rng(0))
    batch = Sampler(dist, seed=1).collect(agent.policy(None), tasks, episodes_per_task=3, episodes_per_trial=3)
    inputs = trial_inputs(batch, dist.action_space)
    start = agent.network.core.initial_state(3).unsqueeze(0)
    with torch.no_grad():
        d, values = evaluate_trials(agent.network, inputs, start, chunk=batch.num_steps)
    torch.testing.assert_close(d.log_prob(batch.actions), batch.extras["log_prob"], atol=1e-5, rtol=0)
    torch.testing.assert_close(values, batch.extras["value"], atol=1e-5, rtol=0)
    before = [p.detach().clone() for p in agent.network.parameters()]
    metrics = agent.learn(batch)
    assert np.isfinite(metrics["meta_train/policy_loss"])
    assert all(not torch.equal(a, b) for a, b in zip(before, agent.network.parameters()))


def test_truncated_bptt_stops_gradient_at_chunk_boundaries():
    gen = torch.Generator().manual_seed(1)
    dist = make("bandit", "k5-n10")
    network = RL2Network(dataclasses.replace(SMALL, obs_embedding=4), dist.observation_space, dist.action_space, generator=gen)
    steps = 10
    obs = torch.randn(steps, 2, 1, generator=gen, requires_grad=True)
    inputs = TrialInputs(obs, torch.zeros(steps, 2, 5), torch.randn(steps, 2, generator=gen), torch.zeros(steps, 2))
    start = network.core.initial_state(2)
    # Whole trial: the last step's value depends on the first step's input.
    _, values = evaluate_trials(network, inputs, start.unsqueeze(0), chunk=steps)
    values[-1].sum().backward()
    assert obs.grad[0].abs().sum() > 0
    # Chunks of 4 (4 + 4 + 2, the last padded): the gradient stays inside the last chunk, and the
    # forward values equal the untruncated ones because each chunk starts from the rollout state.
    obs.grad = None
    states = network.core.chunk_states(obs, inputs.prev_action, inputs.prev_reward, inputs.prev_done, start, chunk=4)
    assert states.shape == (3, 1, 2, 16) and torch.equal(states[0], start)
    _, chunked = evaluate_trials(network, inputs, states, chunk=4)
    torch.testing.assert_close(chunked, values, atol=1e-6, rtol=0)
    chunked[-1].sum().backward()
    assert obs.grad[:8].abs().sum() == 0
    assert obs.grad[8].abs().sum() > 0


def test_separate_value_network_routes_each_loss_to_its_own_gru():
    gen = torch.Generator().manual_seed(2)
    dist = make("bandit", "k5-n10")
    config = dataclasses.replace(SMALL, value_network="separate", bptt_chunk=4)
    network = RL2Network(config, dist.observation_space, dist.action_space, generator=gen)
    steps = 10
    inputs = TrialInputs(torch.randn(steps, 2, 1, generator=gen), torch.zeros(steps, 2, 5), torch.randn(steps, 2, generator=gen), torch.zeros(steps, 2))
    start = network.core.initial_state(2)
    assert start.shape == (1, 2, 32)  # both GRUs' states side by side
    states = network.core.chunk_states(inputs.obs, inputs.prev_action, inputs.prev_reward, inputs.prev_done, start, chunk=4)
    dist_out, values = evaluate_trials(network, inputs, states, chunk=4)
    # Chunked evaluation equals one pass over the whole trial (each chunk resumes both GRUs).
    whole_dist, whole_values = evaluate_trials(network, inputs, start.unsqueeze(0), chunk=steps)
    torch.testing.assert_close(values, whole_values, atol=1e-6, rtol=0)
    torch.testing.assert_close(dist_out.log_probs, whole_dist.log_probs, atol=1e-6, rtol=0)

    def grads(loss):
        network.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        return {n for n, p in network.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}

    value_params = grads(values.pow(2).sum())
    policy_params = grads(dist_out.log_prob(torch.zeros(steps, 2, dtype=torch.long)).sum())
    names = {n for n, _ in network.named_parameters()}
    assert value_params == {n for n in names if n.startswith(("core.value.", "value_head."))}
    assert policy_params == {n for n in names if n.startswith(("core.policy.", "policy_head."))}
    # The two GRUs start from different weights and give different features.
    assert not torch.equal(network.core.policy.gru.weight_hh_l0, network.core.value.gru.weight_hh_l0)
    with pytest.raises(ConfigError, match="value_network"):
        RL2Network(dataclasses.replace(SMALL, value_network="both"), dist.observation_space, dist.action_space, generator=gen)


def test_advantages_run_through_inner_episode_boundaries():
    # Two 2-step episodes in one trial; the first one terminates at t = 1 (inside the trial).
    rewards = torch.tensor([[0.0], [1.0], [0.0], [2.0], [0.0]], dtype=torch.float64)
    values = torch.full((5, 1), 0.5, dtype=torch.float64)
    trial_done = torch.tensor([[False], [False], [False], [True], [False]])
    mask = torch.tensor([[True], [True], [True], [True], [False]])
    adv, ret = trial_advantages(rewards, values, trial_done=trial_done, mask=mask, discount=0.5, gae_lambda=1.0)
    # deltas: -0.25, 1 + 0.25 - 0.5 = 0.75 (next value kept at the inner end), -0.25, 2 - 0.5 = 1.5
    np.testing.assert_allclose(adv[:, 0].numpy(), [-0.25 + 0.5 * 1.0, 0.75 + 0.5 * 0.5, -0.25 + 0.5 * 1.5, 1.5, 0.0])
    # λ = 1: returns are the discounted reward-to-go of the whole trial.
    expected = discounted_returns(rewards, discount=0.5, ends=trial_done, mask=mask)
    torch.testing.assert_close(ret, expected)
    np.testing.assert_allclose(ret[:, 0].numpy(), [0.75, 1.5, 1.0, 2.0, 0.0])
    adv_l, _ = trial_advantages(rewards, values, trial_done=trial_done, mask=mask, discount=0.5, gae_lambda=0.5)
    np.testing.assert_allclose(adv_l[:, 0].numpy(), [-0.25 + 0.25 * 0.78125, 0.75 + 0.25 * 0.125, -0.25 + 0.25 * 1.5, 1.5, 0.0])


def test_action_distributions_hand_computed():
    cat = Categorical(torch.log(torch.tensor([[0.5, 0.25, 0.25]])))
    assert cat.log_prob(torch.tensor([1])).item() == pytest.approx(np.log(0.25))
    assert cat.entropy().item() == pytest.approx(-(0.5 * np.log(0.5) + 0.5 * np.log(0.25)))
    assert cat.mode().item() == 0
    draws = cat.sample(torch.Generator().manual_seed(0))
    assert torch.equal(draws, Categorical(cat.log_probs).sample(torch.Generator().manual_seed(0)))
    gauss = DiagGaussian(torch.tensor([[0.0, 1.0]]), torch.log(torch.tensor([1.0, 2.0])))
    a = torch.tensor([[1.0, 1.0]])
    expected = -0.5 - 0.5 * np.log(2 * np.pi) + (-np.log(2.0) - 0.5 * np.log(2 * np.pi))
    assert gauss.log_prob(a).item() == pytest.approx(expected)
    assert gauss.entropy().item() == pytest.approx(1.0 + np.log(2 * np.pi) + np.log(2.0))


@pytest.mark.parametrize("value_network", ["shared", "separate"])
def test_ppo_starts_on_policy_and_reports_metrics(value_network):
    config = dataclasses.replace(SMALL, epochs=1, num_minibatches=1, learning_rate=1e-12, bptt_chunk=7, value_network=value_network)
    dist, agent = tabular_agent(config)
    tasks = dist.sample(4, split="train", rng=np.random.default_rng(0))
    metrics = agent.meta_train_step(Sampler(dist, seed=0), tasks)
    # One tiny step: the recomputed log-probs equal the rollout's, so the ratio is 1 everywhere.
    assert metrics["meta_train/approx_kl"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["meta_train/clip_fraction"] == 0.0
    assert metrics["meta_train/env_steps"] == 4 * 30
    for k in (1, 2, 3):
        assert f"meta_train/return_episode_{k}" in metrics
    assert metrics["meta_train/return_trial"] == pytest.approx(3 * metrics["meta_train/return"])
    for key in ("policy_loss", "value_loss", "entropy"):
        assert np.isfinite(metrics[f"meta_train/{key}"])
    assert metrics["meta_train/entropy"] == pytest.approx(np.log(5), abs=1e-2)  # near-uniform init


def _train(agent, dist, sampler, rng, iterations):
    return [agent.meta_train_step(sampler, dist.sample(8, split="train", rng=rng)) for _ in range(iterations)]


def test_state_dict_resumes_exactly_and_evaluation_does_not_perturb_training():
    config = dataclasses.replace(SMALL, normalize_observations=True, normalize_rewards=True, bptt_chunk=4)
    dist = make("bandit", "k5-n10")
    agent = RL2(config, dist=dist, device="cpu", seed=3)
    sampler, rng = Sampler(dist, seed=3), numpy_rng(3, "tasks")
    _train(agent, dist, sampler, rng, 2)
    saved = (agent.state_dict(), sampler.state_dict(), rng.bit_generator.state)
    saved = torch.load(_roundtrip(saved), weights_only=False)
    evaluate(agent, Sampler(dist, seed=9), dist.sample(4, split="test", rng=np.random.default_rng(0)), rounds=10, episodes_per_round=1)
    expected = _train(agent, dist, sampler, rng, 2)

    fresh = RL2(config, dist=dist, device="cpu", seed=99)
    fresh_sampler, fresh_rng = Sampler(dist, seed=0), numpy_rng(0, "tasks")
    fresh.load_state_dict(saved[0])
    fresh_sampler.load_state_dict(saved[1])
    fresh_rng.bit_generator.state = saved[2]
    assert _train(fresh, dist, fresh_sampler, fresh_rng, 2) == expected
    assert fresh.iteration == agent.iteration == 4
    assert fresh.reward_normalizer.count.item() == pytest.approx(agent.reward_normalizer.count.item())


def _roundtrip(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


def test_same_seed_same_metrics():
    dist = make("bandit", "k5-n10")
    runs = []
    for _ in range(2):
        agent = RL2(SMALL, dist=dist, device="cpu", seed=5)
        runs.append(_train(agent, dist, Sampler(dist, seed=5), numpy_rng(5, "tasks"), 2))
    assert runs[0] == runs[1]
    other = _train(RL2(SMALL, dist=dist, device="cpu", seed=6), dist, Sampler(dist, seed=5), numpy_rng(5, "tasks"), 1)
    assert other[0] != runs[0][0]


def test_policy_is_deterministic_on_request_and_adapt_is_identity():
    dist, agent = tabular_agent()
    tasks = dist.sample(2, split="test", rng=np.random.default_rng(0))
    batches = [Sampler(dist, seed=0).collect(agent.policy(None, deterministic=True), tasks, episodes_per_task=3, episodes_per_trial=3) for _ in range(2)]
    assert torch.equal(batches[0].actions, batches[1].actions)
    assert agent.adaptation == "trial" and agent.initial_context(2) is None
    assert agent.adapt(batches[0], "ctx") == "ctx"


def test_chrono_init_spreads_update_gate_biases_over_the_trial_length():
    dist, zero = tabular_agent(dataclasses.replace(SMALL, value_network="separate"))
    _, chrono = tabular_agent(dataclasses.replace(SMALL, value_network="separate", gate_init="chrono"))
    h = SMALL.hidden_size
    for core in ("policy", "value"):
        gru_zero = getattr(zero.network.core, core).gru
        gru = getattr(chrono.network.core, core).gru
        bias = gru.bias_ih_l0.detach()
        # Update ("keep") gate biases log U[1, T_max - 1] with T_max = 3 episodes x 10 steps.
        keep = bias[h : 2 * h]
        assert bool((keep >= 0).all()) and bool((keep <= np.log(29) + 1e-6).all())
        assert float(keep.std()) > 0.3  # spread, not one value
        # Reset and candidate biases stay zero, and so do the recurrent biases.
        assert not bias[:h].any() and not bias[2 * h :].any() and not gru.bias_hh_l0.any()
        assert not gru_zero.bias_ih_l0.any()
        if core == "policy":  # drawn before any chrono draw: the same weights as without it
            torch.testing.assert_close(gru.weight_hh_l0, gru_zero.weight_hh_l0)
    # At initialisation the chrono units forget more slowly: z = sigmoid(b) >= 1/2 on average.
    assert float(torch.sigmoid(keep).mean()) > 0.8
    explicit = RL2Network(
        dataclasses.replace(SMALL, gate_init="chrono", chrono_max_steps=5),
        dist.observation_space,
        dist.action_space,
        generator=torch.Generator().manual_seed(0),
    )
    assert float(explicit.core.gru.bias_ih_l0[h : 2 * h].max()) <= np.log(4) + 1e-6
    with pytest.raises(ConfigError, match="chrono_max_steps"):
        RL2Network(dataclasses.replace(SMALL, gate_init="chrono"), dist.observation_space, dist.action_space, generator=torch.Generator())
    with pytest.raises(ConfigError, match="needs cell 'gru'"):
        tabular_agent(dataclasses.replace(SMALL, gate_init="chrono", cell="ln_gru"))
    with pytest.raises(ConfigError, match="chrono_max_steps"):
        build_dataclass(RL2Config, {"gate_init": "chrono", "chrono_max_steps": 2}, section="agent")
    with pytest.raises(ConfigError, match="gate_init"):
        build_dataclass(RL2Config, {"gate_init": "chorno"}, section="agent")
    with pytest.raises(ConfigError, match="only read with gate_init 'chrono'"):
        RL2Config(chrono_max_steps=50)


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="discount"):
        RL2Config(discount=1.5)
    with pytest.raises(ConfigError, match="gae_lambda"):
        RL2Config(gae_lambda=2.0)
    assert agent_config("rl2") is RL2Config
    # A zero Huber delta crashes torch's huber_loss at the first update, a zero value clip fails
    # there too, and a zero gradient-norm bound silently zeroes every update: all rejected on load.
    for key in ("huber_delta", "value_clip", "max_grad_norm"):
        with pytest.raises(ConfigError, match=f"{key}: must be > 0"):
            build_dataclass(RL2Config, {key: 0.0}, section="agent")
        assert getattr(build_dataclass(RL2Config, {key: None}, section="agent"), key) is None
    # Layer widths must be positive (a torch traceback at build time otherwise); () is no layer.
    for key in ("encoder_sizes", "policy_sizes", "value_sizes"):
        with pytest.raises(ConfigError, match=f"{key}: must be > 0"):
            build_dataclass(RL2Config, {key: [64, -1]}, section="agent")
        assert getattr(build_dataclass(RL2Config, {key: []}, section="agent"), key) == ()


@pytest.mark.parametrize(
    "overrides",
    [
        {"obs_embedding": 4, "encoder_sizes": (8,), "policy_sizes": (8,), "value_sizes": (8,)},
        {"cell": "ln_gru", "num_layers": 2},
        {"value_network": "separate", "gate_init": "chrono"},
    ],
    ids=["gru", "ln_gru", "separate-chrono"],
)
def test_building_the_agent_leaves_torch_global_rng_untouched(overrides):
    dist = make("navigation-2d")
    config = dataclasses.replace(SMALL, **overrides)
    before = torch.random.get_rng_state()
    agents = [RL2(config, dist=dist, device="cpu", seed=s) for s in (3, 3, 4)]
    assert torch.equal(torch.random.get_rng_state(), before)
    weights = [torch.cat([p.detach().flatten() for p in a.network.parameters()]) for a in agents]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])


def test_experiment_configs_load():
    files = sorted(EXPERIMENTS.glob("*.yaml"))
    names = {f.stem for f in files}
    expected = {f"bandit-k{k}-n{n}" for k in (5, 10, 50) for n in (10, 100, 500)}
    expected |= {f"tabular-mdp-n{n}" for n in (10, 25, 50, 75, 100)}
    expected |= {"halfcheetah-vel", "halfcheetah-dir", "ant-dir", "metaworld-ml1-push", "metaworld-ml10"}
    assert expected <= names
    for path in files:
        config = load_config(path, agent_configs=agent_config)
        assert config.agent.name == "rl2" and isinstance(config.agent.config, RL2Config)
        text = path.read_text()
        assert text.startswith("#") and "Source" in text  # every config cites where it comes from
        if config.env.name in ("bandit", "tabular-mdp"):
            dist = make(config.env.name, config.env.preset)
            assert config.evaluation.rounds == dist.episodes_per_trial


@pytest.mark.slow
def test_short_training_beats_random_on_held_out_bandits():
    dist = make("bandit", "k5-n10")
    config = RL2Config(hidden_size=64, gae_lambda=0.3, learning_rate=1e-3, epochs=4, num_minibatches=4, entropy_coef=0.0)
    agent = RL2(config, dist=dist, device="cpu", seed=0)
    sampler, rng = Sampler(dist, seed=0), numpy_rng(0, "tasks")
    for _ in range(60):
        agent.meta_train_step(sampler, dist.sample(200, split="train", rng=rng))
    test_tasks = dist.sample(500, split="test", rng=np.random.default_rng(1))
    report = evaluate(agent, Sampler(dist, seed=1), test_tasks, rounds=10, episodes_per_round=1)
    totals = report.returns.sum(axis=1).mean(axis=1)  # total reward of the 10-pull trial, per task
    stderr = totals.std() / np.sqrt(len(totals))
    assert totals.mean() - 3 * stderr > 5.0  # random play gets 5.0


def test_evaluation_depends_on_the_iteration_not_on_earlier_evaluations():
    from metarl.trainer import eval_tasks, evaluate_agent

    config = load_config(
        EXPERIMENTS / "bandit-k5-n10.yaml",
        agent_configs=agent_config,
        overrides=["evaluation.num_tasks=16", "agent.hidden_size=16"],
    )
    dist = make("bandit", "k5-n10")
    agent = RL2(config.agent.config, dist=dist, device="cpu", seed=0)
    tasks = eval_tasks(config, dist)

    def returns(iteration):
        report = evaluate_agent(config, agent=agent, dist=dist, tasks=tasks, iteration=iteration, device=torch.device("cpu"))
        return report.returns.copy()

    first = returns(5)
    np.testing.assert_array_equal(returns(5), first)  # same weights, same iteration: same numbers
    assert not np.array_equal(returns(6), first)  # another iteration draws other actions


def test_latent_layer_feeds_both_heads_through_a_relu():
    dist = make("navigation-2d")
    config = dataclasses.replace(SMALL, latent_size=6, policy_sizes=(5,), value_sizes=(4,))
    net = RL2(config, dist=dist, device="cpu", seed=0).network
    linear = net.latent[0]
    assert (linear.in_features, linear.out_features) == (16, 6)
    features = torch.randn(7, 16, generator=torch.Generator().manual_seed(1))
    dist_, value = net.heads(features)
    hidden = torch.relu(features @ linear.weight.T + linear.bias)
    torch.testing.assert_close(dist_.mean, net.policy_head(hidden).mean)
    torch.testing.assert_close(value, net.value_head(hidden).squeeze(-1))
    # Both losses reach the layer.
    (dist_.mean.sum() + value.sum()).backward()
    assert linear.weight.grad is not None and linear.weight.grad.abs().sum() > 0
    # Without it the heads read the GRU directly, and the weights are those of before.
    plain = RL2(SMALL, dist=dist, device="cpu", seed=0).network
    assert plain.latent is None and plain.value_head[0].in_features == 16
    with pytest.raises(ConfigError, match="latent_size needs value_network 'shared'"):
        RL2(dataclasses.replace(config, value_network="separate"), dist=dist, device="cpu", seed=0)
