"""``metarl bench gridworld``: trained runs against the exact Bayes-optimal and random returns."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from metarl import cli
from metarl.bench import gridworld as bench
from metarl.errors import ConfigError
from metarl.evaluation import bootstrap_ci, evaluate
from metarl.trainer import make_sampler

ROOT = Path(__file__).resolve().parents[2]

_TINY = [
    "run.iterations=1",
    "run.num_tasks=4",
    "run.checkpoint_every=1",
    "run.device=cpu",
    "evaluation.every=100",
    "evaluation.num_tasks=2",
]


def _train(tmp: Path, config: str, name: str, extra: list[str]) -> Path:
    run_dir = tmp / name
    sets = [arg for item in [*_TINY, *extra] for arg in ("--set", item)]
    code = cli.main(["train", str(ROOT / "experiments" / "varibad" / config), "--run-dir", str(run_dir), "--no-progress", *sets])
    assert code == 0
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("gridworld-bench")
    return {
        "varibad": _train(tmp, "gridworld-cpu.yaml", "vb", ["agent.precollect_steps=0", "agent.num_vae_updates=1", "agent.num_minibatches=1"]),
        "rl2": _train(tmp, "gridworld-rl2-cpu.yaml", "rl2", ["agent.num_minibatches=1"]),
    }


def _args(**kw) -> argparse.Namespace:
    base = {"varibad": [], "rl2": [], "checkpoint": "last", "split": "test", "trials_per_goal": 1, "device": "cpu"}
    base.update(kw)
    return argparse.Namespace(**base)


def test_figures_match_exact_references_and_the_agents_own_evaluation(runs):
    out = bench.run(_args(varibad=[str(runs["varibad"])], rl2=[str(runs["rl2"])]))
    assert out["goals"] == [[0, 2], [1, 4], [2, 1], [3, 3], [4, 0]]
    # The Bayes-optimal policy for the 5 test goals: the first episode searches (expected 7.3),
    # later ones walk straight to the goal found (the same 11.7 whatever the goal's distance).
    assert out["references"]["bayes_optimal"]["episode_returns"] == pytest.approx([7.3, 11.7, 11.7, 11.7])
    random = out["references"]["random"]["mean_episode_return"]
    assert -1.5 < random < -1.0
    for name in ("varibad", "rl2"):
        agent = out["agents"][name]
        assert agent["units"] == 5 and len(agent["episode_returns"]) == 4
        # Recompute the agent's returns directly with evaluate() on the same goals.
        config, dist, model = bench.load_run(runs[name])
        sampler = make_sampler(config, dist, seed=config.run.seed, device=model.device)
        report = evaluate(model, sampler, dist.tasks("test"), rounds=4, episodes_per_round=1, deterministic=True)
        sampler.close()
        per_episode = report.returns[:, :, 0].mean(axis=0)
        assert [e["mean"] for e in agent["episode_returns"]] == pytest.approx(per_episode.tolist())
        mean = agent["mean_episode_return"]["mean"]
        assert mean == pytest.approx(float(per_episode.mean()))
        low, high = agent["mean_episode_return"]["ci95"]
        assert low <= mean <= high
        score = (mean - random) / (10.6 - random)
        assert agent["score"]["mean"] == pytest.approx(score)


def test_train_split_uses_the_training_prior(runs):
    out = bench.run(_args(rl2=[str(runs["rl2"])], split="train"))
    assert len(out["goals"]) == 16 and out["agents"]["rl2"]["units"] == 16
    assert out["references"]["bayes_optimal"]["mean_episode_return"] == pytest.approx(9.5859375)


def test_bad_input_is_one_line(runs, tmp_path):
    with pytest.raises(ConfigError, match="unknown split 'val'; valid splits: 'test', 'train'"):
        bench.run(_args(rl2=[str(runs["rl2"])], split="val"))
    with pytest.raises(ConfigError, match="give at least one run"):
        bench.run(_args())
    with pytest.raises(ConfigError, match="is a 'rl2' run, given as --varibad"):
        bench.run(_args(varibad=[str(runs["rl2"])]))
    with pytest.raises(Exception, match="does not exist"):
        bench.run(_args(rl2=[str(tmp_path / "nope")]))
    assert np.isfinite(bench.run(_args(rl2=[str(runs["rl2"])]))["wall_s"])


def test_repeated_trials_of_a_goal_are_one_unit_of_the_interval(monkeypatch):
    """A goal's trials are averaged before the bootstrap: playing every goal twice with the same
    returns (a deterministic policy on a deterministic grid) must not narrow the interval."""
    goals = np.array([[0, 2], [1, 4], [2, 1], [3, 3], [4, 0]])
    # Binary fractions, so that averaging a goal's equal trials is exact.
    per_goal = np.array([[-1.5, 11.75, 11.75, 11.75], [-1.5, -1.5, 6.0, 11.75], [5.0, 10.0, 10.0, 10.0],
                         [-1.5, -1.5, -1.5, -1.5], [3.0, 11.75, 11.75, 11.75]])

    def play(run_dir, *, split, checkpoint, device, trials):
        return {"returns": np.repeat(per_goal, trials, axis=0), "goals": goals, "num_cells": 5,
                "episode_length": 15, "episodes": 4, "agent": "rl2", "deterministic": True}

    monkeypatch.setattr(bench, "_play", play)
    once, twice = (bench.run(_args(rl2=["r"], trials_per_goal=k))["agents"]["rl2"] for k in (1, 3))
    assert once["units"] == twice["units"] == 5
    for key in ("mean_episode_return", "score", *(f"episode {e}" for e in range(4))):
        a, b = (once["episode_returns"][int(key[-1])], twice["episode_returns"][int(key[-1])]) if key.startswith("episode ") else (once[key], twice[key])
        assert b["mean"] == pytest.approx(a["mean"]) and b["ci95"] == pytest.approx(a["ci95"])
    assert twice["mean_episode_return"]["ci95"] == pytest.approx(
        list(bootstrap_ci(per_goal.mean(axis=1), seed=0))
    )


def test_a_gradient_agent_is_refused_before_playing(monkeypatch):
    import types

    config = types.SimpleNamespace(env=types.SimpleNamespace(name="gridworld"), agent=types.SimpleNamespace(name="maml-trpo"))
    agent = types.SimpleNamespace(adaptation="gradient")
    monkeypatch.setattr(bench, "load_run", lambda *a, **k: (config, object(), agent))
    monkeypatch.setattr("metarl.evaluation.evaluate", lambda *a, **k: pytest.fail("played a gradient agent"))
    with pytest.raises(ConfigError, match="'maml-trpo' agent; the gridworld benchmark compares trial agents"):
        bench.run(_args(rl2=["r"]))
