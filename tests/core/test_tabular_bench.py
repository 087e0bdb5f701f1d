"""``metarl bench tabular-mdp``: trained runs against reference policies on the held-out MDPs."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from metarl import cli
from metarl.bench import tabular_mdp as bench
from metarl.envs import make
from metarl.errors import ConfigError
from metarl.evaluation import evaluate
from metarl.seeding import derive_seed, numpy_rng
from metarl.trainer import make_sampler

ROOT = Path(__file__).resolve().parents[2]


def _args(**kw) -> argparse.Namespace:
    base = {
        "preset": None,
        "rl2": [],
        "checkpoint": "last",
        "num_tasks": 1000,
        "references": list(bench.REFERENCES),
        "actions": "config",
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


def test_greedy_sticks_with_a_positive_reward_and_bayes_greedy_explores_below_the_prior():
    # Action 0 paid 0.5 once; actions 1 and 2 are untried.
    sums, counts = [[0.5, 0.0, 0.0]], [[1.0, 0.0, 0.0]]
    # Empirical greedy: 0.5 beats the untried actions' 0.
    assert _act("greedy", sums, counts).tolist() == [0]
    # Posterior mean (1 + 0.5) / 2 = 0.75 is below the untried actions' prior mean 1.
    picks = {int(_act("bayes_greedy", sums, counts, seed=seed)[0]) for seed in range(40)}
    assert picks == {1, 2}  # ties between the untried actions are broken both ways
    # A reward of 2 (posterior 1.5) beats the prior: Bayes-greedy exploits it.
    assert _act("bayes_greedy", [[2.0, 0.0, 0.0]], counts).tolist() == [0]
    # A negative reward: empirical greedy leaves it for an untried action (0 > -1).
    assert _act("greedy", [[-1.0, 0.0, 0.0]], counts).tolist() in ([1], [2])
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


def test_figures_rank_the_references_and_reproduce_the_papers_greedy():
    out = bench.run(_args(num_tasks=1000))
    totals = {name: ref["trial_return"]["mean"] for name, ref in out["references"].items()}
    assert totals["random"] < totals["greedy"] < totals["bayes_greedy"] < totals["oracle"]
    assert totals["certainty_equivalent"] < totals["oracle"]
    # The empirical greedy rule gives the paper's Greedy figure (Table 2: 134.8) within its interval.
    low, high = out["references"]["greedy"]["trial_return"]["ci95"]
    assert low <= out["paper_table_2"]["greedy"] <= high
    # Learning references improve over the trial; the oracle has nothing to learn.
    bayes = [e["mean"] for e in out["references"]["bayes_greedy"]["episode_returns"]]
    assert bayes[-1] > bayes[0] + 5
    oracle = [e["mean"] for e in out["references"]["oracle"]["episode_returns"]]
    assert max(oracle) - min(oracle) < 1.5
    # Same seed, same figures; another seed, other draws.
    again = bench.run(_args(num_tasks=50, references=["greedy"]))
    assert again["references"]["greedy"] == bench.run(_args(num_tasks=50, references=["greedy"]))["references"]["greedy"]
    other = bench.run(_args(num_tasks=50, references=["greedy"], seed=1))
    assert other["references"]["greedy"] != again["references"]["greedy"]


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


def test_a_run_plays_the_same_mdps_as_its_own_evaluation(rl2_run):
    out = bench.run(_args(rl2=[str(rl2_run)], num_tasks=30, references=["greedy"]))
    figures = out["agents"][str(rl2_run)]
    assert figures["agent"] == "rl2" and figures["checkpoint_iteration"] == 1
    assert figures["deterministic"] is False  # the config's evaluation.deterministic
    # Recompute with evaluate() under the run's evaluation seeding, on the first 30 test MDPs.
    config, dist, agent, iteration = bench._load(str(rl2_run), checkpoint="last", device="cpu")
    sampler = make_sampler(config, dist, seed=derive_seed(config.run.seed, "eval", iteration), device=agent.device)
    agent.seed_evaluation(derive_seed(config.run.seed, "eval-actions", iteration))
    report = evaluate(agent, sampler, dist.test_tasks()[:30], rounds=10, episodes_per_round=1)
    sampler.close()
    per_episode = report.returns[:, :, 0].mean(axis=0)
    assert [e["mean"] for e in figures["episode_returns"]] == pytest.approx(per_episode.tolist())
    assert figures["trial_return"]["mean"] == pytest.approx(float(report.returns.sum(axis=(1, 2)).mean()))
    mode = bench.run(_args(rl2=[str(rl2_run)], num_tasks=30, references=[], actions="mode"))
    assert mode["agents"][str(rl2_run)]["deterministic"] is True
    assert mode["references"] == {}


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
    assert "greedy 134.8" in lines[-1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--num-tasks", "0"], "--num-tasks must be between 1 and 1000"),
        (["--references", "thompson"], "unknown reference policy 'thompson'"),
        (["--actions", "greedy"], "unknown --actions 'greedy'"),
        (["--preset", "n11"], "n11"),
        (["--rl2", "/nonexistent/run"], "/nonexistent/run"),
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
    both = bench.play_references(tasks, episodes=2, horizon=10, names=["random", "greedy"], seed=5)
    alone = bench.play_references(tasks, episodes=2, horizon=10, names=["greedy"], seed=5)
    np.testing.assert_array_equal(both["greedy"], alone["greedy"])
    assert numpy_rng(5, "tabular-mdp-bench", "greedy").random() != numpy_rng(5, "tabular-mdp-bench", "random").random()
