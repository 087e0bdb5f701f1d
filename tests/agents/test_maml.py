"""MAML family: exact meta-gradients, vmap vs per-task loop, TRPO step, policy and checkpoints.

The maths tests run in float64 on a tiny fixed synthetic batch built by hand (no env); the
learning checks on 2D navigation are marked ``slow``.
"""

import dataclasses
import types
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from metarl.agents.maml import (
    MAMLPPO,
    MAMLTRPO,
    Reptile,
    adapt_params,
    adaptation_path,
    gaussian_kl,
    inner_step,
    meta_kl_hessian_vector_product,
    reinforce_loss,
    stack_params,
    task_distributions,
)
from metarl.errors import ConfigError, EnvError
from metarl.optim import flatten, hessian_vector_product, unflatten
from metarl.returns import discounted_returns, fit_linear_baseline
from metarl.types import StepInputs, TrialBatch

OBS, ACT, T = 3, 2, 6
TINY = {"hidden_sizes": (5,), "activation": "tanh", "init_log_std": -0.3, "episodes_per_task": 2}
EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments" / "maml"


def fake_dist(obs_dim=OBS, act_dim=ACT):
    return types.SimpleNamespace(
        name="synthetic",
        observation_space=gym.spaces.Box(-np.inf, np.inf, (obs_dim,), dtype=np.float32),
        action_space=gym.spaces.Box(-1.0, 1.0, (act_dim,), dtype=np.float32),
    )


def synthetic_batch(num_tasks, slots_per_task, *, seed, obs_dim=OBS, act_dim=ACT, steps=T):
    """A task-major batch with random data; every third slot terminates at t = steps // 2."""
    gen = torch.Generator().manual_seed(seed)
    b = num_tasks * slots_per_task
    mask = torch.ones(steps, b, dtype=torch.bool)
    terminated = torch.zeros(steps, b, dtype=torch.bool)
    truncated = torch.zeros(steps, b, dtype=torch.bool)
    truncated[-1] = True
    for slot in range(0, b, 3):
        end = steps // 2
        terminated[end, slot], truncated[-1, slot] = True, False
        mask[end + 1 :, slot] = False
    zero = ~mask
    obs = torch.randn(steps, b, obs_dim, generator=gen).masked_fill(zero[..., None], 0.0)
    step = torch.arange(steps).unsqueeze(1).expand(steps, b).masked_fill(zero, 0)
    return TrialBatch(
        observations=obs,
        next_observations=torch.randn(steps, b, obs_dim, generator=gen).masked_fill(zero[..., None], 0.0),
        actions=torch.randn(steps, b, act_dim, generator=gen).masked_fill(zero[..., None], 0.0),
        rewards=torch.randn(steps, b, generator=gen).masked_fill(zero, 0.0),
        terminated=terminated,
        truncated=truncated & mask,
        trial_done=(terminated | truncated) & mask,
        episode_index=torch.zeros(steps, b, dtype=torch.long),
        step_in_episode=step,
        mask=mask,
        task_index=torch.arange(num_tasks).repeat_interleave(slots_per_task),
        trial_index=torch.arange(slots_per_task).repeat(num_tasks),
    )


def make_agent(cls=MAMLTRPO, *, dtype=torch.float64, seed=0, **overrides):
    config = cls.Config(**{**TINY, **overrides})
    agent = cls(config, dist=fake_dist(), device=torch.device("cpu"), seed=seed)
    agent.net.to(dtype)
    if isinstance(agent, MAMLPPO):  # the optimiser must see the converted parameters
        agent.optimizer = torch.optim.Adam(agent.net.parameters(), lr=config.outer_lr)
    return agent


def problem(agent, num_steps, *, num_tasks=3):
    supports = [agent.task_data(synthetic_batch(num_tasks, 2, seed=10 + k), num_tasks) for k in range(num_steps)]
    query = agent.task_data(synthetic_batch(num_tasks, 2, seed=99), num_tasks)
    return supports, query


def query_loss(agent, theta, supports, query, *, create_graph=True, vectorized=True):
    """Mean over tasks of the REINFORCE loss on the query data after adaptation."""
    adapted = adapt_params(
        agent.net,
        stack_params(theta, query.num_tasks),
        supports,
        lrs=[0.3] * len(supports),
        create_graph=create_graph,
        vectorized=vectorized,
    )
    fields = (query.observations, query.actions, query.advantages, query.weights)
    losses = torch.func.vmap(lambda p, *f: reinforce_loss(agent.net, p, *f))(adapted, *fields)
    return losses.mean()


def meta_gradient(agent, supports, query, **kwargs):
    theta = agent.meta_parameters()
    loss = query_loss(agent, theta, supports, query, **kwargs)
    return dict(zip(theta, torch.autograd.grad(loss, list(theta.values()))))


# ------------------------------------------------------------------ meta-gradients


@pytest.mark.parametrize("num_steps", [1, 2])
def test_second_order_meta_gradient_matches_finite_differences(num_steps):
    agent = make_agent()
    supports, query = problem(agent, num_steps)
    theta = agent.meta_parameters()
    grad = flatten(list(meta_gradient(agent, supports, query).values()))

    flat = flatten([p.detach() for p in theta.values()])
    eps = 1e-6
    fd = torch.zeros_like(flat)
    for j in range(flat.numel()):
        values = []
        for sign in (1.0, -1.0):
            moved = flat.clone()
            moved[j] += sign * eps
            params = {k: v.detach().requires_grad_() for k, v in zip(theta, unflatten(moved, list(theta.values())))}
            values.append(query_loss(agent, params, supports, query, create_graph=False).item())
        fd[j] = (values[0] - values[1]) / (2 * eps)
    rel = float((grad - fd).norm() / fd.norm())
    assert rel < 1e-4, f"relative error {rel:.2e} between the meta-gradient and finite differences"


@pytest.mark.parametrize("num_steps", [1, 2])
def test_first_order_differs_from_second_order_and_drops_the_inner_hessian(num_steps):
    agent = make_agent()
    supports, query = problem(agent, num_steps)
    second = flatten(list(meta_gradient(agent, supports, query, create_graph=True).values()))
    first = flatten(list(meta_gradient(agent, supports, query, create_graph=False).values()))
    assert float((second - first).norm() / second.norm()) > 1e-2
    # First-order MAML replaces d(phi)/d(theta) by the identity: its meta-gradient is the sum over
    # tasks of the query loss's gradient at each task's adapted parameters.
    theta = agent.meta_parameters()
    adapted = adapt_params(
        agent.net, stack_params(theta, 3), supports, lrs=[0.3] * num_steps, create_graph=False
    )
    phi = {k: v.detach().requires_grad_() for k, v in adapted.items()}
    fields = (query.observations, query.actions, query.advantages, query.weights)
    loss = torch.func.vmap(lambda p, *f: reinforce_loss(agent.net, p, *f))(phi, *fields).mean()
    expected = flatten([g.sum(0) for g in torch.autograd.grad(loss, list(phi.values()))])
    torch.testing.assert_close(first, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("create_graph", [True, False])
def test_vmap_path_equals_per_task_loop(create_graph):
    agent = make_agent()
    supports, query = problem(agent, 2)
    theta = agent.meta_parameters()
    adapted = {
        vec: adapt_params(agent.net, stack_params(theta, 3), supports, lrs=[0.3, 0.2], create_graph=create_graph, vectorized=vec)
        for vec in (True, False)
    }
    for name in theta:
        torch.testing.assert_close(adapted[True][name], adapted[False][name], rtol=0, atol=1e-10)
    grads = {vec: meta_gradient(agent, supports, query, create_graph=create_graph, vectorized=vec) for vec in (True, False)}
    for name in theta:
        assert float((grads[True][name] - grads[False][name]).abs().max()) < 1e-6
    dists = {vec: task_distributions(agent.net, adapted[vec], query.observations, vectorized=vec) for vec in (True, False)}
    torch.testing.assert_close(dists[True][0], dists[False][0], rtol=0, atol=1e-10)
    torch.testing.assert_close(dists[True][1], dists[False][1], rtol=0, atol=1e-10)


def test_vmap_and_loop_trpo_updates_agree():
    results = {}
    for vec in (True, False):
        agent = make_agent(vectorized=vec, num_inner_steps=2)
        supports, query = problem(agent, 2)
        metrics = agent.meta_update(supports, query)
        results[vec] = (flatten([p.detach() for p in agent.net.parameters()]), metrics)
    assert float((results[True][0] - results[False][0]).abs().max()) < 1e-6
    for key in ("meta_train/kl", "meta_train/surrogate_improvement", "meta_train/line_search_steps"):
        assert results[True][1][key] == pytest.approx(results[False][1][key], rel=1e-6, abs=1e-12)


@pytest.mark.parametrize(
    "num_steps, first_order, vectorized", [(1, False, True), (2, False, True), (2, False, False), (2, True, True)]
)
def test_kl_hessian_vector_product_equals_double_backward_through_the_adaptation(num_steps, first_order, vectorized):
    agent = make_agent()
    supports, query = problem(agent, num_steps)
    theta = agent.meta_parameters()
    adapted, steps = adaptation_path(
        agent.net, stack_params(theta, 3), supports, lrs=[0.3, 0.2][:num_steps], create_graph=not first_order, vectorized=vectorized
    )
    mean, log_std = task_distributions(agent.net, adapted, query.observations, vectorized=vectorized)
    kl = (query.weights * gaussian_kl(mean.detach(), log_std.detach(), mean, log_std)).sum(1).mean()
    direct = hessian_vector_product(kl, list(theta.values()), damping=0.01)
    factorised = meta_kl_hessian_vector_product(kl, adapted, steps, damping=0.01)
    gen = torch.Generator().manual_seed(8)
    for _ in range(3):
        v = torch.randn(sum(p.numel() for p in theta.values()), generator=gen, dtype=torch.float64)
        expected = direct(v)
        assert float((factorised(v) - expected).norm() / expected.norm()) < 1e-10


@pytest.mark.parametrize("first_order", [False, True])
def test_every_meta_parameter_gets_a_gradient(first_order):
    agent = make_agent()
    supports, query = problem(agent, 1)
    grads = meta_gradient(agent, supports, query, create_graph=not first_order)
    assert set(grads) == {"mean.0.weight", "mean.0.bias", "mean.2.weight", "mean.2.bias", "log_std"}
    for name, g in grads.items():
        assert torch.isfinite(g).all() and float(g.abs().max()) > 0, name


def test_adaptation_leaves_meta_parameters_untouched():
    agent = make_agent()
    supports, query = problem(agent, 2)
    before = {k: v.detach().clone() for k, v in agent.net.state_dict().items()}
    context = agent.initial_context(3)
    context_before = {k: v.clone() for k, v in context.items()}
    adapted = agent.adapt(synthetic_batch(3, 2, seed=5), context, step=0)
    meta_gradient(agent, supports, query)
    for k, v in agent.net.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k in context:
        assert torch.equal(context[k], context_before[k]), k
        assert not torch.equal(adapted[k], context[k]), k
    assert all(not v.requires_grad for v in adapted.values())


def test_inner_step_is_one_reinforce_step_per_task():
    agent = make_agent()
    supports, _ = problem(agent, 1)
    data = supports[0]
    theta = agent.meta_parameters()
    adapted = inner_step(agent.net, stack_params(theta, 3), data, lr=0.25, create_graph=False)
    for i in range(3):
        params = {k: v.detach().clone().requires_grad_() for k, v in theta.items()}
        loss = reinforce_loss(agent.net, params, data.observations[i], data.actions[i], data.advantages[i], data.weights[i])
        grads = torch.autograd.grad(loss, list(params.values()))
        for (name, p), g in zip(params.items(), grads):
            torch.testing.assert_close(adapted[name][i], p - 0.25 * g, rtol=1e-12, atol=1e-14)


def test_test_time_step_sizes_follow_the_schedule():
    agent = make_agent(test_inner_lrs=(0.1, 0.05))
    context = agent.initial_context(3)
    batch = synthetic_batch(3, 2, seed=7)
    deltas = [
        {k: agent.adapt(batch, context, step=s)[k] - context[k] for k in context} for s in (0, 1, 4)
    ]
    for k in context:
        torch.testing.assert_close(deltas[1][k], 0.5 * deltas[0][k], rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(deltas[2][k], deltas[1][k], rtol=0, atol=0)


# ------------------------------------------------------------------ data


def test_task_data_advantages_are_per_task_normalised_reward_to_go_minus_baseline():
    agent = make_agent(discount=0.9)
    batch = synthetic_batch(3, 2, seed=3)
    data = agent.task_data(batch, 3)
    assert data.observations.shape == (3, 2 * T, OBS) and data.actions.shape == (3, 2 * T, ACT)
    # Slot 1 of task 0 is batch slot 1; it occupies rows T..2T of task 0.
    torch.testing.assert_close(data.observations[0, T:], batch.observations[:, 1].double())
    for i in range(3):
        m = data.mask[i]
        adv = data.advantages[i][m]
        assert abs(float(adv.mean())) < 1e-10
        assert float(adv.std(unbiased=False)) == pytest.approx(1.0, abs=1e-6)
        assert float(data.weights[i].sum()) == pytest.approx(1.0)
        assert torch.all(data.advantages[i][~m] == 0)
    # Unnormalised, lambda = 1: advantage + per-task baseline = reward-to-go, which stops at the
    # episode's end (termination at t = 3 for slot 0, the horizon for slot 1) without bootstrap.
    raw = make_agent(discount=0.9, normalize_advantages=False).task_data(batch, 3)
    r = batch.rewards.double()
    returns = torch.zeros(T, 2, dtype=torch.float64)
    returns[3, 0], returns[2, 0] = r[3, 0], r[2, 0] + 0.9 * r[3, 0]
    returns[5, 1], returns[4, 1] = r[5, 1], r[4, 1] + 0.9 * r[5, 1]
    full = discounted_returns(r, discount=0.9, ends=batch.dones, mask=batch.mask)
    torch.testing.assert_close(full[2:4, 0], returns[2:4, 0])
    torch.testing.assert_close(full[4:6, 1], returns[4:6, 1])
    baseline = fit_linear_baseline(batch.observations, batch.step_in_episode, full, batch.mask, batch.task_index, num_groups=3)
    for slot in (0, 1):
        rows = slice(slot * T, (slot + 1) * T)
        valid = batch.mask[:, slot]
        torch.testing.assert_close(
            (raw.advantages[0, rows] + baseline[:, slot])[valid], full[:, slot][valid], rtol=1e-9, atol=1e-9
        )


def test_task_data_rejects_a_batch_that_is_not_task_major():
    agent = make_agent()
    batch = synthetic_batch(3, 2, seed=3)
    shuffled = batch.select_slots(torch.tensor([1, 0, 3, 2, 5, 4]))
    agent.task_data(shuffled, 3)  # slots within a task may come in any order
    bad = dataclasses.replace(batch, task_index=torch.tensor([0, 1, 0, 1, 2, 2]))
    with pytest.raises(ConfigError, match="task-major"):
        agent.task_data(bad, 3)
    with pytest.raises(ConfigError, match="task-major"):
        agent.task_data(batch, 4)


# ------------------------------------------------------------------ outer updates


def test_trpo_step_keeps_kl_within_max_kl_and_improves_the_surrogate():
    agent = make_agent(max_kl=0.005, num_inner_steps=2)
    supports, query = problem(agent, 2)
    theta_old = {k: v.detach().clone() for k, v in agent.meta_parameters().items()}
    metrics = agent.meta_update(supports, query)
    assert metrics["meta_train/step_accepted"] == 1.0
    assert metrics["meta_train/surrogate_improvement"] > 0
    assert 0 < metrics["meta_train/kl"] <= 0.005
    # Recompute the KL between the old and the new adapted policies independently.
    old = agent._adapted_distributions(
        {k: v.clone().requires_grad_() for k, v in theta_old.items()}, supports, query, create_graph=False
    )
    new = agent._adapted_distributions(
        {k: v.detach().clone().requires_grad_() for k, v in agent.meta_parameters().items()}, supports, query, create_graph=False
    )
    kl = (query.weights * gaussian_kl(old[0], old[1], new[0], new[1])).sum(1).mean()
    assert kl.item() == pytest.approx(metrics["meta_train/kl"], rel=1e-9)
    assert kl.item() <= 0.005


def test_trpo_rejected_step_leaves_parameters_unchanged():
    # One line-search trial with a trust region far larger than the surrogate's valid range: the
    # full step overshoots, the single trial fails, and theta must stay where it was.
    agent = make_agent(max_kl=1e6, line_search_steps=1)
    supports, query = problem(agent, 1)
    before = flatten([p.detach().clone() for p in agent.net.parameters()])
    metrics = agent.meta_update(supports, query)
    after = flatten([p.detach() for p in agent.net.parameters()])
    assert metrics["meta_train/step_accepted"] == 0.0, f"a step of KL size 1e6 was accepted: {metrics}"
    assert torch.equal(before, after)
    assert metrics["meta_train/surrogate_improvement"] == 0.0 and metrics["meta_train/kl"] == 0.0


def test_maml_ppo_update_moves_theta_and_lowers_the_clipped_loss():
    agent = make_agent(MAMLPPO, outer_lr=1e-2, num_epochs=3)
    supports, query = problem(agent, 1)
    before = flatten([p.detach().clone() for p in agent.net.parameters()])
    metrics = agent.meta_update(supports, query)
    after = flatten([p.detach() for p in agent.net.parameters()])
    assert float((after - before).norm()) > 0
    assert metrics["meta_train/loss"] < 0  # the surrogate -mean(rho A) went below its start, 0
    assert metrics["meta_train/approx_kl"] > 0
    assert set(agent.state_dict()) >= {"net", "optimizer", "generator", "iteration"}


def test_reptile_update_interpolates_towards_the_mean_adapted_parameters():
    agent = make_agent(Reptile, outer_lr=0.25)
    theta = {k: v.detach().clone() for k, v in agent.meta_parameters().items()}
    gen = torch.Generator().manual_seed(4)
    adapted = {k: v + torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in stack_params(theta, 3).items()}
    agent.meta_update(adapted)
    for k, v in agent.meta_parameters().items():
        torch.testing.assert_close(v.detach(), theta[k] + 0.25 * (adapted[k].mean(0) - theta[k]))


# ------------------------------------------------------------------ policy, seeding, checkpoints


def test_policy_uses_each_slots_task_parameters_and_the_agents_generator():
    agent = make_agent()
    context = agent.initial_context(3)
    context = {k: v + 0.1 * torch.arange(3, dtype=v.dtype).view(-1, *[1] * (v.dim() - 1)) for k, v in context.items()}
    obs = torch.randn(6, OBS, generator=torch.Generator().manual_seed(0))
    inputs = StepInputs(obs=obs, prev_action=torch.zeros(6, ACT), prev_reward=torch.zeros(6), prev_done=torch.zeros(6), episode_index=torch.zeros(6, dtype=torch.long))
    task_index = torch.tensor([0, 0, 1, 1, 2, 2])
    rng_before = torch.random.get_rng_state()
    policy = agent.policy(context, deterministic=True)
    action, _, extras = policy.act(inputs, policy.initial_state(task_index))
    for b in range(6):
        params = {k: v[task_index[b]] for k, v in context.items()}
        mean, _ = torch.func.functional_call(agent.net, params, (obs[b].double(),))
        torch.testing.assert_close(action[b], mean)
    assert extras["log_prob"].shape == (6,)
    # A wave of the sampler holding tasks 1 and 2 only, and a layout that is not contiguous per
    # task (one group per slot): every slot still acts under its own task's parameters.
    for layout in (torch.tensor([1, 1, 1, 2, 2, 2]), torch.tensor([2, 0, 1, 0, 2, 1])):
        acted, _, _ = policy.act(inputs, policy.initial_state(layout))
        for b in range(6):
            params = {k: v[layout[b]] for k, v in context.items()}
            torch.testing.assert_close(acted[b], torch.func.functional_call(agent.net, params, (obs[b].double(),))[0])
    # Stochastic actions come from the agent's evaluation generator only.
    stochastic = agent.policy(context)
    state = agent.eval_generator.get_state()
    train_state = agent.generator.get_state()
    a1, _, _ = stochastic.act(inputs, stochastic.initial_state(task_index))
    assert torch.equal(agent.generator.get_state(), train_state)
    agent.eval_generator.set_state(state)
    a2, _, _ = stochastic.act(inputs, stochastic.initial_state(task_index))
    assert torch.equal(a1, a2) and not torch.equal(a1, action)
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    with pytest.raises(ConfigError, match="out of range"):
        policy.initial_state(torch.tensor([0, 3]))


def test_evaluation_does_not_perturb_training():
    """Training draws action noise from its own stream: an evaluation between two meta-updates
    leaves the second update exactly as without it."""
    from metarl.envs import make as make_dist
    from metarl.evaluation import evaluate
    from metarl.sampler import Sampler
    from metarl.seeding import numpy_rng

    dist = make_dist("navigation-2d")
    agents = [MAMLTRPO(MAMLTRPO.Config(episodes_per_task=2, hidden_sizes=(8,)), dist=dist, device=torch.device("cpu"), seed=0) for _ in range(2)]
    samplers = [Sampler(dist, seed=1) for _ in range(2)]
    tasks = dist.sample(2, split="train", rng=numpy_rng(0, "tasks"))
    for agent, sampler in zip(agents, samplers):
        agent.meta_train_step(sampler, tasks)
    evaluate(agents[0], Sampler(dist, seed=2), dist.sample(3, split="test", rng=numpy_rng(0, "test")), rounds=2, episodes_per_round=2)
    for agent, sampler in zip(agents, samplers):
        agent.meta_train_step(sampler, tasks)
    assert torch.equal(*(flatten([p.detach() for p in a.net.parameters()]) for a in agents))
    assert not torch.equal(agents[0].eval_generator.get_state(), agents[1].eval_generator.get_state())


def test_same_seed_same_weights_and_global_rng_untouched():
    rng_before = torch.random.get_rng_state()
    a, b, c = make_agent(seed=3), make_agent(seed=3), make_agent(seed=4)
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    fa, fb, fc = (flatten([p.detach() for p in x.net.parameters()]) for x in (a, b, c))
    assert torch.equal(fa, fb) and not torch.equal(fa, fc)
    assert a.net.log_std[0].item() == pytest.approx(-0.3)


@pytest.mark.parametrize("cls", [MAMLTRPO, MAMLPPO, Reptile])
def test_state_dict_round_trip_resumes_exactly(cls):
    agent = make_agent(cls)
    if cls is Reptile:
        agent.meta_update({k: v + 0.1 for k, v in agent.initial_context(3).items()})
    else:
        agent.meta_update(*problem(agent, 1))
    agent.policy(agent.initial_context(1)).act(
        StepInputs(torch.zeros(2, OBS), torch.zeros(2, ACT), torch.zeros(2), torch.zeros(2), torch.zeros(2, dtype=torch.long)),
        agent.policy(agent.initial_context(1)).initial_state(torch.zeros(2, dtype=torch.long)),
    )
    state = agent.state_dict()
    clone = make_agent(cls, seed=123)
    clone.load_state_dict(state)
    assert clone.iteration == agent.iteration == 1
    for x in (agent, clone):
        if cls is Reptile:
            x.meta_update({k: v + 0.1 for k, v in x.initial_context(3).items()})
        else:
            x.meta_update(*problem(x, 1))
    torch.testing.assert_close(
        flatten([p.detach() for p in agent.net.parameters()]), flatten([p.detach() for p in clone.net.parameters()]), rtol=0, atol=0
    )
    inputs = StepInputs(torch.ones(2, OBS), torch.zeros(2, ACT), torch.zeros(2), torch.zeros(2), torch.zeros(2, dtype=torch.long))
    acts = []
    for x in (agent, clone):
        pol = x.policy(x.initial_context(1))
        acts.append(pol.act(inputs, pol.initial_state(torch.zeros(2, dtype=torch.long)))[0])
    assert torch.equal(acts[0], acts[1])


# ------------------------------------------------------------------ configs


def test_config_validation_messages():
    with pytest.raises(ConfigError, match="test_inner_lrs"):
        MAMLTRPO.Config(test_inner_lrs=())
    with pytest.raises(ConfigError, match="backtrack_ratio"):
        MAMLTRPO.Config(backtrack_ratio=1.5)
    with pytest.raises(ConfigError, match="MAMLTRPOConfig"):
        MAMLTRPO(MAMLPPO.Config(), dist=fake_dist(), device="cpu", seed=0)
    discrete = types.SimpleNamespace(name="bandit", observation_space=gym.spaces.Box(0, 1, (1,)), action_space=gym.spaces.Discrete(5))
    with pytest.raises(EnvError, match="Box"):
        MAMLTRPO(MAMLTRPO.Config(), dist=discrete, device="cpu", seed=0)


@pytest.mark.parametrize("cls", [MAMLTRPO, MAMLPPO, Reptile])
def test_every_config_field_has_a_docstring(cls):
    from metarl.config import field_docs

    docs = field_docs(cls.Config)  # inherited fields carry their base class's docstrings
    missing = [f.name for f in dataclasses.fields(cls.Config) if not docs.get(f.name)]
    assert not missing, f"{cls.Config.__name__} fields without a docstring: {missing}"


def test_agent_configs_match_the_config_loader():
    from metarl.config import build_dataclass

    cfg = build_dataclass(MAMLTRPO.Config, {"hidden_sizes": [64, 64], "activation": "tanh", "first_order": True}, section="agent")
    assert cfg.hidden_sizes == (64, 64) and cfg.first_order
    with pytest.raises(ConfigError, match="inner_lr"):
        build_dataclass(MAMLTRPO.Config, {"inner_lr": -0.1}, section="agent")
    with pytest.raises(ConfigError, match="unknown key"):
        build_dataclass(Reptile.Config, {"max_kl": 0.01}, section="agent")


def test_experiment_configs_load_strictly():
    from metarl.config import load_config
    from metarl.registry import agent_config, env_family

    paths = sorted(EXPERIMENTS.glob("*.yaml"))
    assert len(paths) >= 8
    for path in paths:
        config = load_config(path, agent_configs=agent_config)
        assert config.agent.name in {"maml-trpo", "maml-ppo", "reptile"}, path.name
        assert config.env.preset in env_family(config.env.name).presets, path.name
        text = path.read_text()
        assert "# Source" in text or "# source" in text, f"{path.name} cites no source"


# ------------------------------------------------------------------ learning (slow)


def navigation_run(cls, *, iterations, seed=0, **overrides):
    """Mean return per round (0 and 1 inner steps) on 20 test goals before and after training."""
    from metarl.envs import make
    from metarl.evaluation import evaluate
    from metarl.sampler import Sampler
    from metarl.seeding import numpy_rng

    torch.set_num_threads(1)
    dist = make("navigation-2d")
    agent = cls(cls.Config(**overrides), dist=dist, device=torch.device("cpu"), seed=seed)
    test_tasks = dist.sample(20, split="test", rng=numpy_rng(seed, "test"))

    def rounds():
        report = evaluate(agent, Sampler(dist, seed=seed + 1), test_tasks, rounds=2, episodes_per_round=20)
        return report.returns.mean(axis=(0, 2))

    before = rounds()
    sampler = Sampler(dist, seed=seed)
    rng = numpy_rng(seed, "tasks")
    for _ in range(iterations):
        agent.meta_train_step(sampler, dist.sample(20, split="train", rng=rng))
    return before, rounds()


@pytest.mark.slow
@pytest.mark.parametrize(
    "cls, overrides",
    [
        (MAMLTRPO, {"first_order": True}),
        (MAMLPPO, {"outer_lr": 3e-3}),
        (Reptile, {"num_inner_steps": 2, "inner_lr": 0.3, "test_inner_lrs": (0.3,)}),
    ],
    ids=["fo-maml", "maml-ppo", "reptile"],
)
def test_navigation_post_adaptation_beats_pre_adaptation(cls, overrides):
    # One inner step helps a little even at initialisation, so the check is twofold: after 15
    # iterations the adapted policy beats the unadapted one, and training made the adapted
    # policy much better than the untrained agent's adapted policy.
    before, after = navigation_run(cls, iterations=15, episodes_per_task=20, **overrides)
    pre, post = after
    assert post > pre + 3.0, f"{cls.__name__}: return {pre:.2f} before and {post:.2f} after one step"
    assert post > before[1] + 10.0, f"{cls.__name__}: adapted return {post:.2f} after training, {before[1]:.2f} untrained"


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_grouped_distributions_for_acting_equal_the_vmapped_ones(activation):
    from metarl.agents.maml.policy import GaussianMLP, grouped_distributions

    gen = torch.Generator().manual_seed(0)
    net = GaussianMLP(5, 3, hidden_sizes=[8, 7], activation=activation, init_log_std=-0.5, generator=gen)
    # Four tasks, each with its own parameters (theta plus a different perturbation).
    params = {
        k: v.detach() + 0.3 * torch.randn((4, *v.shape), generator=gen) for k, v in net.named_parameters()
    }
    obs = torch.randn(4, 6, 5, generator=gen)
    mean, log_std = grouped_distributions(net, params, obs)
    for vectorized in (True, False):
        ref_mean, ref_log_std = task_distributions(net, params, obs, vectorized=vectorized)
        torch.testing.assert_close(mean, ref_mean)
        torch.testing.assert_close(log_std, ref_log_std)
    assert mean.shape == (4, 6, 3) and log_std.shape == (4, 1, 3)
    # Each task's rows come from that task's parameters only.
    assert not torch.allclose(mean[0], grouped_distributions(net, {k: v[[1, 1, 2, 3]] for k, v in params.items()}, obs)[0][0])
