"""evaluate(): round semantics for gradient and trial agents, fixed quotas, intervals, eval.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats
import torch
from scripted_env import H, ScriptedDist

from metarl.evaluation import (
    EvalReport,
    bootstrap_ci,
    evaluate,
    load_eval,
    plot_adaptation,
    write_eval,
)
from metarl.sampler import Sampler
from metarl.types import Agent, Policy


class ConstantPolicy(Policy):
    """Action = a constant; with reward_from_action the per-step reward equals it."""

    def __init__(self, value):
        self.value = value

    def initial_state(self, task_index):
        return None

    def act(self, inputs, state):
        return torch.full((inputs.obs.shape[0], 1), float(self.value)), state, {}


class EpisodePolicy(Policy):
    """Action = 0.1 × the episode index within the trial (a 'trial' agent's adaptation)."""

    def initial_state(self, task_index):
        return None

    def act(self, inputs, state):
        return (0.1 * inputs.episode_index.float()).unsqueeze(1), state, {}


class GradientAgent(Agent):
    adaptation = "gradient"

    def __init__(self):
        self.adapt_calls = []

    def meta_train_step(self, sampler, tasks):
        return {}

    def initial_context(self, num_tasks):
        return 0

    def policy(self, context, *, deterministic=False):
        return ConstantPolicy(0.1 * context)

    def adapt(self, batch, context, *, step=0):
        self.adapt_calls.append((step, float(batch.actions[0, 0, 0])))
        return context + 1

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class TrialAgent(GradientAgent):
    adaptation = "trial"

    def policy(self, context, *, deterministic=False):
        return EpisodePolicy()


def dist_and_tasks(n=6, **kwargs):
    dist = ScriptedDist(stops=False, reward_from_action=True, **kwargs)
    return dist, dist.sample(n, split="test", rng=np.random.default_rng(0))


def test_gradient_agent_round_k_is_after_k_adaptations():
    dist, tasks = dist_and_tasks()
    agent = GradientAgent()
    report = evaluate(agent, Sampler(dist, seed=0), tasks, rounds=4, episodes_per_round=3)
    assert report.returns.shape == (6, 4, 3)
    # round k acts with context k: reward 0.1 k per step, H steps per episode
    np.testing.assert_allclose(report.returns[0, :, 0], [0.0, 0.1 * H, 0.2 * H, 0.3 * H], atol=1e-5)
    # adapt saw the batch of the round it follows, with the right step numbers
    assert [c[0] for c in agent.adapt_calls] == [0, 1, 2]
    np.testing.assert_allclose([c[1] for c in agent.adapt_calls], [0.0, 0.1, 0.2], atol=1e-6)
    assert report.metrics()["meta_test/return_round_2"] == pytest.approx(0.2 * H, abs=1e-5)


def test_trial_agent_round_k_is_kth_episode_of_a_trial():
    dist, tasks = dist_and_tasks()
    report = evaluate(TrialAgent(), Sampler(dist, seed=0), tasks, rounds=3, episodes_per_round=2)
    assert report.returns.shape == (6, 3, 2)
    np.testing.assert_allclose(report.returns[:, :, :], np.array([0.0, 0.1 * H, 0.2 * H])[None, :, None] * np.ones((6, 3, 2)), atol=1e-5)


@pytest.mark.parametrize("agent_cls", [GradientAgent, TrialAgent])
def test_success_rate_unbiased_by_early_finishers(agent_cls):
    """Successful episodes last 1 step, failures H=5: a step-budgeted protocol would over-count
    successes (5x as many per step); fixed episode quotas recover the true probability."""
    p = 0.3
    dist, tasks = dist_and_tasks(n=8, success_prob=p)
    report = evaluate(agent_cls(), Sampler(dist, seed=1), tasks, rounds=2, episodes_per_round=250)
    n = report.successes.size
    assert report.successes.shape == (8, 2, 250)
    rate = report.successes.mean()
    assert abs(rate - p) < 4 * np.sqrt(p * (1 - p) / n)
    rounds = report.rounds()
    assert all(abs(r["success_rate"] - p) < 0.06 for r in rounds)


def test_bootstrap_ci_agrees_with_scipy():
    values = np.random.default_rng(5).normal(3.0, 2.0, size=40)
    lo, hi = bootstrap_ci(values, seed=11)
    ref = scipy.stats.bootstrap((values,), np.mean, n_resamples=2000, method="BCa", rng=np.random.default_rng(11))
    assert lo == pytest.approx(ref.confidence_interval.low)
    assert hi == pytest.approx(ref.confidence_interval.high)
    assert lo < values.mean() < hi
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)


def test_eval_json_schema_and_plot(tmp_path):
    dist, tasks = dist_and_tasks(success_prob=0.5)
    report = evaluate(GradientAgent(), Sampler(dist, seed=0), tasks, rounds=3, episodes_per_round=4)
    doc = report.to_dict(run="r1", agent="fake", env="scripted", preset="default", split="test", seed=0)
    path = write_eval(tmp_path / "eval.json", doc)
    loaded = load_eval(path)
    assert set(loaded) >= {"metarl_version", "run", "agent", "env", "preset", "split", "num_tasks",
                           "episodes_per_round", "seed", "rounds", "per_task"}
    assert loaded["num_tasks"] == 6 and loaded["episodes_per_round"] == 4
    assert [r["round"] for r in loaded["rounds"]] == [0, 1, 2]
    for r in loaded["rounds"]:
        assert r["return_ci95"][0] <= r["return_mean"] <= r["return_ci95"][1]
        assert 0.0 <= r["success_rate"] <= 1.0
    assert len(loaded["per_task"]) == 6 and np.array(loaded["per_task"][0]["returns"]).shape == (3, 4)
    assert "round" in report.table() and "success" in report.table()
    png = plot_adaptation(tmp_path / "adaptation.png", loaded)
    assert png.stat().st_size > 5000
    json.dumps(loaded)  # plain JSON types only


def test_no_success_fields_are_null():
    dist, tasks = dist_and_tasks()
    report = evaluate(GradientAgent(), Sampler(dist, seed=0), tasks, rounds=2, episodes_per_round=2)
    assert report.successes is None
    doc = report.to_dict(run="r", agent="a", env="e", preset="p", split="test", seed=0)
    assert doc["rounds"][0]["success_rate"] is None and doc["per_task"][0]["successes"] is None


def test_bad_rounds():
    dist, tasks = dist_and_tasks()
    with pytest.raises(Exception, match="rounds must be a positive integer, got 0"):
        evaluate(GradientAgent(), Sampler(dist, seed=0), tasks, rounds=0, episodes_per_round=1)
    assert isinstance(EvalReport, type)


@pytest.mark.parametrize("agent_cls", [GradientAgent, TrialAgent])
def test_per_round_quotas_metaworld_style(agent_cls, tmp_path):
    """Meta-World's protocol: 3 adaptation episodes then 2 evaluation episodes per task."""
    dist, tasks = dist_and_tasks(n=4)
    agent = agent_cls()
    report = evaluate(agent, Sampler(dist, seed=0), tasks, rounds=2, episodes_per_round=[3, 2])
    assert report.episodes_per_round == [3, 2]
    assert np.isnan(report.returns[:, 1, 2]).all() and np.isfinite(report.returns[:, 1, :2]).all()
    if agent_cls is GradientAgent:
        expected = [0.0, 0.1 * H]  # one adaptation between the phases
    else:
        expected = [0.1 * H * np.mean([0, 1, 2]), 0.1 * H * np.mean([3, 4])]  # episodes 0-2, then 3-4 of one trial
    assert [r["return_mean"] for r in report.rounds()] == pytest.approx(expected, abs=1e-5)
    doc = report.to_dict(run="r", agent="a", env="e", preset="p", split="test", seed=0)
    assert doc["episodes_per_round"] == [3, 2] and [len(r) for r in doc["per_task"][0]["returns"]] == [3, 2]
    from metarl.plotting import compare_table

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("agent: {name: a}\nenv: {name: e, preset: p}\nrun: {seed: 0}\n")
    write_eval(run / "eval.json", doc)
    assert "| a | e [p] | 1 × 4 |" in compare_table([run])


@pytest.mark.parametrize("agent_cls", [GradientAgent, TrialAgent])
@pytest.mark.parametrize("deterministic", [False, True])
def test_deterministic_flag_reaches_every_policy(agent_cls, deterministic):
    seen = []

    class Recording(agent_cls):
        def policy(self, context, *, deterministic=False):
            seen.append(deterministic)
            return super().policy(context, deterministic=deterministic)

    dist, tasks = dist_and_tasks(n=2)
    evaluate(Recording(), Sampler(dist, seed=0), tasks, rounds=3, episodes_per_round=1, deterministic=deterministic)
    assert seen == [deterministic] * (3 if agent_cls is GradientAgent else 1)
