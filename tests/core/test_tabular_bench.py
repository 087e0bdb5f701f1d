"""``metarl bench tabular-mdp``: trained runs against reference policies on the held-out MDPs."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from metarl import cli
from metarl.bench import tabular_mdp as bench
from metarl.envs import make
from metarl.errors import ConfigError
from metarl.trainer import evaluate_agent

ROOT = Path(__file__).resolve().parents[2]


def _args(**kw) -> argparse.Namespace:
    base = {
        "preset": None,
        "rl2": [],
        "checkpoint": "last",
        "num_tasks": 1000,
        "references": list(bench.REFERENCES),
        "actions": "config",
        "memory": [],
        "seed": 0,
        "device": "cpu",
    }
    base.update(kw)
    return argparse.Namespace(**base)


def test_finite_horizon_q_is_backward_induction_by_hand():
    # One MDP, 2 states, 2 actions. State 0: action 0 pays 1 and stays, action 1 pays 0 and
    # moves to state 1; state 1: action 0 pays 3 and stays, action 1 pays 0 and stays.
    rewards = np.array([[[1.0, 0.0], [3.0, 0.0]]])
    transitions = np.zeros((1, 2, 2, 2))
    transitions[0, 0, 0, 0] = transitions[0, 0, 1, 1] = 1.0
    transitions[0, 1, 0, 1] = transitions[0, 1, 1, 1] = 1.0
    assert bench.finite_horizon_q(rewards, transitions, 1)[0].tolist() == [[1.0, 0.0], [3.0, 0.0]]
    # Two steps: from state 0, stay (1 + 1) or move (0 + 3); from state 1, 3 + 3 or 0 + 3.
    assert bench.finite_horizon_q(rewards, transitions, 2)[0].tolist() == [[2.0, 3.0], [6.0, 3.0]]
    assert bench.finite_horizon_q(rewards, transitions, 3)[0].tolist() == [[4.0, 6.0], [9.0, 6.0]]


def _act(name: str, sums, counts, left: int = 10, seed: int = 0) -> np.ndarray:
    sums = np.asarray(sums, dtype=float)[:, None, :]  # [N, S=1, A]
    counts = np.asarray(counts, dtype=float)[:, None, :]
    n, s, a = sums.shape
    mu = np.zeros((n, s, a))
    transitions = np.ones((n, s, a, s))
    act = bench._policy(name, mu, transitions, horizon=10)
    nxt = counts[..., None] * transitions
    return act(np.zeros(n, dtype=np.int64), left, sums, counts, nxt, np.random.default_rng(seed))


def test_empirical_greedy_keeps_a_positive_mean_and_bayes_greedy_explores_below_the_prior():
    # Action 0 paid 0.5 once; actions 1 and 2 are untried.
    sums, counts = [[0.5, 0.0, 0.0]], [[1.0, 0.0, 0.0]]
    # Empirical greedy: 0.5 beats the untried actions' 0.
    assert _act("empirical_greedy", sums, counts).tolist() == [0]
    # Posterior mean (1 + 0.5) / 2 = 0.75 is below the untried actions' prior mean 1.
    picks = {int(_act("bayes_greedy", sums, counts, seed=seed)[0]) for seed in range(40)}
    assert picks == {1, 2}  # ties between the untried actions are broken both ways
    # A reward of 2 (posterior 1.5) beats the prior: Bayes-greedy exploits it.
    assert _act("bayes_greedy", [[2.0, 0.0, 0.0]], counts).tolist() == [0]
    # A negative reward: empirical greedy leaves it for an untried action (0 > -1).
    assert _act("empirical_greedy", [[-1.0, 0.0, 0.0]], counts).tolist() in ([1], [2])
    # One step to go, certainty equivalence is Bayes-greedy.
    for seed in range(10):
        assert _act("certainty_equivalent", sums, counts, left=1, seed=seed).tolist() == _act("bayes_greedy", sums, counts, seed=seed).tolist()


def _exact_values(tasks, episodes: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Expected trial totals of the uniform and the optimal policy, per task, by dynamic
    programming (neither learns, so each episode has the same expectation)."""
    mu = np.array([t["reward_means"] for t in tasks])
    p = np.array([t["transitions"] for t in tasks])
    v_random = np.zeros(mu.shape[:2])
    for _ in range(horizon):
        v_random = (mu + np.einsum("nsaj,nj->nsa", p, v_random)).mean(axis=-1)
    v_opt = bench.finite_horizon_q(mu, p, horizon).max(axis=-1)
    return episodes * v_random[:, 0], episodes * v_opt[:, 0]


def test_random_and_oracle_match_their_exact_expectations():
    dist = make("tabular-mdp", "n10")
    tasks = dist.test_tasks()[:400]
    played = bench.play_references(tasks, episodes=10, horizon=10, names=["random", "oracle"], seed=3)
    exact_random, exact_oracle = _exact_values(tasks, 10, 10)
    for name, exact in (("random", exact_random), ("oracle", exact_oracle)):
        totals = played[name].sum(axis=1)
        # Trial totals have standard deviation about 10 (100 unit-variance rewards), so the
        # mean of 400 is within 2 of its expectation with overwhelming probability.
        assert abs(totals.mean() - exact.mean()) < 2.0, name
        assert played[name].shape == (400, 10)


def test_certainty_equivalent_plans_on_the_posterior_mean_transitions():
    # Two states, two actions, two steps to go, from state 0. Observed so far: action 0 in
    # state 0 paid 1.0 once and led to state 1 once; action 1 in state 0 paid 1.6 once and
    # led to state 0 once; in state 1 action 0 paid 5 twice (state 1 both times), action 1 untried.
    sums = np.zeros((1, 2, 2))
    counts = np.zeros((1, 2, 2))
    nxt = np.zeros((1, 2, 2, 2))
    sums[0, 0, 0], counts[0, 0, 0], nxt[0, 0, 0, 1] = 1.0, 1, 1
    sums[0, 0, 1], counts[0, 0, 1], nxt[0, 0, 1, 0] = 1.6, 1, 1
    sums[0, 1, 0], counts[0, 1, 0], nxt[0, 1, 0, 1] = 10.0, 2, 2
    act = bench._policy("certainty_equivalent", np.zeros((1, 2, 2)), np.full((1, 2, 2, 2), 0.5), horizon=2)
    # Posterior means: R(0,0) = 2/2 = 1, R(0,1) = 2.6/2 = 1.3, R(1,0) = 11/3, R(1,1) = 1.
    # P(.|0,0) = (1, 2)/3, P(.|0,1) = (2, 1)/3. With one step left V(0) = 1.3, V(1) = 11/3, so
    # Q(0,0) = 1 + (1.3 + 2 * 11/3) / 3 = 3.878 and Q(0,1) = 1.3 + (2 * 1.3 + 11/3) / 3 = 3.389.
    r_hat = (1.0 + sums) / (1.0 + counts)
    p_hat = (1.0 + nxt) / (2 + counts[..., None])
    q = bench.finite_horizon_q(r_hat, p_hat, 2)[0, 0]
    np.testing.assert_allclose(q, [1 + (1.3 + 2 * 11 / 3) / 3, 1.3 + (2 * 1.3 + 11 / 3) / 3])
    rng = np.random.default_rng(0)
    assert act(np.zeros(1, dtype=np.int64), 2, sums, counts, nxt, rng).tolist() == [0]
    # With one step to go it takes the larger immediate posterior mean instead.
    assert act(np.zeros(1, dtype=np.int64), 1, sums, counts, nxt, rng).tolist() == [1]
    with pytest.raises(ValueError, match="at least 1"):
        bench.finite_horizon_q(r_hat, p_hat, 0)


def test_figures_rank_the_references_and_are_seeded():
    out = bench.run(_args(num_tasks=1000))
    totals = {name: ref["trial_return"]["mean"] for name, ref in out["references"].items()}
    assert totals["random"] < totals["empirical_greedy"] < totals["bayes_greedy"] < totals["oracle"]
    assert totals["empirical_greedy"] < totals["certainty_equivalent"] < totals["oracle"]
    # Learning references improve over the trial; the oracle has nothing to learn.
    bayes = [e["mean"] for e in out["references"]["bayes_greedy"]["episode_returns"]]
    assert bayes[-1] > bayes[0] + 5
    oracle = [e["mean"] for e in out["references"]["oracle"]["episode_returns"]]
    assert max(oracle) - min(oracle) < 1.5
    assert out["paper_table_2"]["RL2"] == 156.2
    # Same seed, same figures; another seed, other draws.
    again = bench.run(_args(num_tasks=50, references=["empirical_greedy"]))
    assert again["references"]["empirical_greedy"] == bench.run(_args(num_tasks=50, references=["empirical_greedy"]))["references"]["empirical_greedy"]
    other = bench.run(_args(num_tasks=50, references=["empirical_greedy"], seed=1))
    assert other["references"]["empirical_greedy"] != again["references"]["empirical_greedy"]


@pytest.fixture(scope="module")
def rl2_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("tabular-bench") / "rl2"
    sets = [
        "run.iterations=1",
        "run.num_tasks=4",
        "run.checkpoint_every=1",
        "run.device=cpu",
        "run.torch_threads=1",
        "evaluation.every=100",
        "evaluation.num_tasks=2",
        "agent.num_minibatches=1",
        "agent.epochs=1",
    ]
    argv = ["train", str(ROOT / "experiments" / "rl2" / "tabular-mdp-n10.yaml"), "--run-dir", str(run_dir), "--no-progress"]
    assert cli.main([*argv, *[arg for item in sets for arg in ("--set", item)]]) == 0
    return run_dir


def test_a_run_is_evaluated_as_the_trainer_evaluates_it(rl2_run):
    out = bench.run(_args(rl2=[str(rl2_run)], num_tasks=30, references=["empirical_greedy"]))
    figures = out["agents"][str(rl2_run)]
    assert figures["agent"] == "rl2" and figures["checkpoint_iteration"] == 1
    assert figures["deterministic"] is False  # the config's evaluation.deterministic
    # The trainer's evaluation of that checkpoint, on the first 30 test MDPs.
    config, dist, agent, iteration = bench._load(str(rl2_run), checkpoint="last", device="cpu")
    report = evaluate_agent(config, agent=agent, dist=dist, tasks=dist.test_tasks()[:30], iteration=iteration, device=agent.device, rounds=10, episodes_per_round=1)
    per_episode = report.returns[:, :, 0].mean(axis=0)
    assert [e["mean"] for e in figures["episode_returns"]] == pytest.approx(per_episode.tolist())
    assert figures["trial_return"]["mean"] == pytest.approx(float(report.returns.sum(axis=(1, 2)).mean()))
    mode = bench.run(_args(rl2=[str(rl2_run)], num_tasks=30, references=[], actions="mode"))
    assert mode["agents"][str(rl2_run)]["deterministic"] is True
    assert mode["references"] == {}
    greedy_actions = evaluate_agent(config, agent=agent, dist=dist, tasks=dist.test_tasks()[:30], iteration=iteration, device=agent.device, rounds=10, episodes_per_round=1, deterministic=True)
    assert mode["agents"][str(rl2_run)]["trial_return"]["mean"] == pytest.approx(float(greedy_actions.returns.sum(axis=(1, 2)).mean()))


def test_a_gradient_agent_is_refused_before_playing(rl2_run, monkeypatch):
    config, dist, agent, iteration = bench._load(str(rl2_run), checkpoint="last", device="cpu")
    monkeypatch.setattr(type(agent), "adaptation", "gradient")
    monkeypatch.setattr(bench, "load_trained_run", lambda *a, **k: (config, dist, agent, iteration))
    monkeypatch.setattr("metarl.trainer.evaluate_agent", lambda *a, **k: pytest.fail("played a gradient agent"))
    with pytest.raises(ConfigError, match="compares trial agents"):
        bench.run(_args(rl2=[str(rl2_run)], num_tasks=5))


def test_text_table_has_a_row_per_policy(rl2_run):
    out = bench.run(_args(rl2=[str(rl2_run)], num_tasks=20))
    text = bench.format_text(out)
    lines = text.splitlines()
    for name in bench.REFERENCES:
        row = next(line for line in lines if line.startswith(name + " "))
        total = out["references"][name]["trial_return"]["mean"]
        assert f"{total:.1f} [" in row
        assert len(row.split("[")[0].split()) == 1 + 10 + 1  # name, 10 episodes, total
    assert any(line.startswith(str(rl2_run)) and "iteration 1, sampled" in line for line in lines)
    assert "greedy 134.8" in lines[-1] and "RL2 156.2" in lines[-1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--num-tasks", "0"], "--num-tasks must be between 1 and 1000"),
        (["--references", "thompson"], "unknown reference policy 'thompson'"),
        (["--references", "bayes_greedy_last0"], "unknown reference policy 'bayes_greedy_last0'"),
        (["--memory", "0"], "--memory needs spans of at least 1 step, got 0"),
        (["--actions", "empirical_greedy"], "unknown --actions 'empirical_greedy'"),
        (["--preset", "n11"], "n11"),
        (["--rl2", "/nonexistent/run"], "/nonexistent/run"),
        (["--device", "tpu"], "unknown --device 'tpu'; valid devices: 'auto', 'cpu', 'cuda'"),
        (["--references"], "nothing to play: name reference policies (--references, --memory) or runs (--rl2)"),
    ],
)
def test_bad_options_stop_with_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "tabular-mdp", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("metarl: error:") and message in err[0]


def test_a_run_on_other_mdps_is_refused(rl2_run):
    with pytest.raises(ConfigError, match="plays other MDPs"):
        bench.run(_args(rl2=[str(rl2_run)], preset="n25", num_tasks=5))


def test_reference_streams_are_independent_of_each_other():
    tasks = make("tabular-mdp", "n10").test_tasks()[:20]
    both = bench.play_references(tasks, episodes=2, horizon=10, names=["random", "empirical_greedy"], seed=5)
    alone = bench.play_references(tasks, episodes=2, horizon=10, names=["empirical_greedy"], seed=5)
    np.testing.assert_array_equal(both["empirical_greedy"], alone["empirical_greedy"])


def test_cuda_without_cuda_is_one_line(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "tabular-mdp", "--device", "cuda", "--num-tasks", "3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["metarl: error: --device 'cuda' requested but CUDA is not available on this machine; valid choices here: 'auto', 'cpu'"]
    assert bench.run(_args(device="auto", num_tasks=3, references=["random"]))["num_tasks"] == 3


def _windowed_bayes_greedy_by_hand(tasks, episodes: int, horizon: int, memory: int, seed: int) -> np.ndarray:
    """Bayes-greedy recomputing its sums and counts from the last ``memory`` steps at every step,
    drawing from the stream and in the order the bench does."""
    from metarl.seeding import numpy_rng

    mu = np.array([t["reward_means"] for t in tasks])
    cdf = np.cumsum(np.array([t["transitions"] for t in tasks]), axis=-1)
    n, s, a = mu.shape
    rows = np.arange(n)
    rng = numpy_rng(seed, "tabular-mdp-bench", f"bayes_greedy_last{memory}")
    history, returns = [], np.zeros((n, episodes))
    for episode in range(episodes):
        state = np.zeros(n, dtype=np.int64)
        for _ in range(horizon):
            sums, counts = np.zeros((n, s, a)), np.zeros((n, s, a))
            for old_state, old_action, old_reward in history[-memory:]:
                sums[rows, old_state, old_action] += old_reward
                counts[rows, old_state, old_action] += 1
            post = (1.0 + sums[rows, state]) / (1.0 + counts[rows, state])
            best = post == post.max(axis=1, keepdims=True)
            action = np.argmax(best * rng.random(post.shape), axis=1)
            reward = mu[rows, state, action] + rng.standard_normal(n)
            u = rng.random(n)
            history.append((state, action, reward))
            returns[:, episode] += reward
            state = np.minimum((cdf[rows, state, action] <= u[:, None]).sum(axis=1), s - 1)
    return returns


@pytest.mark.parametrize("memory", [1, 7, 30])
def test_memory_limited_bayes_greedy_forgets_exactly_the_steps_outside_its_window(memory):
    tasks = make("tabular-mdp", "n10").test_tasks()[:50]
    played = bench.play_references(tasks, episodes=3, horizon=10, names=[f"bayes_greedy_last{memory}"], seed=3)
    expected = _windowed_bayes_greedy_by_hand(tasks, 3, 10, memory, seed=3)
    np.testing.assert_allclose(played[f"bayes_greedy_last{memory}"], expected, rtol=0, atol=1e-9)


def test_memory_spans_rank_between_random_and_full_memory():
    out = bench.run(_args(references=["random", "bayes_greedy", "bayes_greedy_last2"], memory=[2, 30], num_tasks=300))
    totals = {name: figures["trial_return"]["mean"] for name, figures in out["references"].items()}
    assert list(totals) == ["random", "bayes_greedy", "bayes_greedy_last2", "bayes_greedy_last30"]
    assert totals["random"] < totals["bayes_greedy_last2"] < totals["bayes_greedy_last30"]
    assert totals["bayes_greedy_last30"] > 140 and totals["bayes_greedy_last2"] < 125
    assert "last 30 steps" in out["references"]["bayes_greedy_last30"]["description"]
    assert bench.reference_memory("bayes_greedy_last12") == 12 and bench.reference_memory("oracle") is None


def test_a_checkpoint_that_does_not_fit_the_agent_is_one_line(rl2_run, monkeypatch, capsys):
    """Agents whose load_state_dict raises torch's own error (MAML's nn.Module) on weights of
    another shape stop with a CheckpointError naming the checkpoint."""
    from metarl.agents.rl2 import RL2

    def mismatch(self, state):
        raise RuntimeError("Error(s) in loading state_dict: size mismatch for net.0.weight")

    monkeypatch.setattr(RL2, "load_state_dict", mismatch)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "tabular-mdp", "--rl2", str(rl2_run), "--num-tasks", "3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"metarl: error: checkpoint '{rl2_run}")
    assert "does not match the run's config: RuntimeError: " in err[0]
