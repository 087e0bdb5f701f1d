"""VariBAD and RL² on the hidden-goal gridworld against the exact Bayes-optimal return.

``metarl bench gridworld --varibad RUN [RUN ...] --rl2 RUN [RUN ...] --json`` loads each trained
run (its config and a checkpoint), plays one trial of 4 episodes on every goal of ``--split``
(default ``test``: the held-out goals), and reports, per agent pooled over its runs (seeds):

- ``episode_returns``: the mean return of each episode of the trial, with 95% bootstrap intervals
  over (run, goal) units (a goal's trials averaged first, so repeating a trial adds no unit);
- ``mean_episode_return``: the mean over the trial's episodes (VariBAD's Fig. 3 metric) with its
  interval;
- ``score``: ``(agent − random) / (Bayes-optimal − random)`` on the mean episode return, with the
  interval carried through.

The references are exact: ``bayes_optimal`` is the Bayes-optimal policy for a uniform prior over
the evaluated split's goals (dynamic programming on the Bayes-adaptive MDP,
:mod:`metarl.agents.varibad.bayes_optimal`), ``random`` the uniformly random policy's expected
return.

Which comparison this is depends on the split. On ``--split train`` the agents play fresh trials
of the prior they were trained on, which is the paper's comparison (VariBAD trains and tests on
one goal prior). On ``--split test`` the goals are disjoint from the training goals (the
distribution's finite train/test partition), so the agents face a prior they never saw, while the
Bayes-optimal policy is computed for that prior: an upper bound that measures generalisation to
unseen goal cells, not Bayes-optimality on the training prior.

Agents act as their run's config says (VariBAD's protocol: deterministic actions); with stochastic
actions ``--trials-per-goal`` averages several trials per goal.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarl.agents.varibad.bayes_optimal import random_policy_returns, solve_gridworld
from metarl.bench import bench_device, load_trained_run
from metarl.errors import ConfigError, choices
from metarl.evaluation import bootstrap_ci

__all__ = ["add_arguments", "run", "load_run"]

_SPLITS = ("test", "train")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``metarl bench gridworld``."""
    parser.add_argument("--varibad", nargs="*", default=[], metavar="RUN", help="VariBAD run directories (one per seed)")
    parser.add_argument("--rl2", nargs="*", default=[], metavar="RUN", help="RL² run directories (one per seed)")
    parser.add_argument("--checkpoint", default="last", help="checkpoint of each run: last (default), best or a file name")
    parser.add_argument("--split", default="test", help="goals to play: test (held out, default) or train")
    parser.add_argument("--trials-per-goal", type=int, default=1, help="trials on each goal (default: 1; deterministic policies need no more)")
    parser.add_argument("--device", default="cpu", help="device for the agents: auto, cpu (default) or cuda")


def load_run(run_dir: str | Path, *, checkpoint: str = "last", device: str = "cpu") -> tuple[Any, Any, Any]:
    """``(config, dist, agent)`` of a run directory, the agent loaded from ``checkpoint``.

    Raises:
        CheckpointError: not a run directory, no readable checkpoint, or one that does not match.
    """
    config, dist, agent, _ = load_trained_run(run_dir, checkpoint=checkpoint, device=device)
    return config, dist, agent


def _play(run_dir: str, *, split: str, checkpoint: str, device: str, trials: int) -> dict[str, Any]:
    """Per-(goal, trial) episode returns ``[G * trials, E]`` of one run on every goal of ``split``."""
    from metarl.evaluation import evaluate
    from metarl.trainer import make_sampler

    device = bench_device(device)
    config, dist, agent = load_run(run_dir, checkpoint=checkpoint, device=device)
    if config.env.name != "gridworld":
        raise ConfigError(f"run {run_dir!r} trained on {config.env.name!r}, not on 'gridworld'")
    if agent.adaptation != "trial":
        raise ConfigError(f"run {run_dir!r} has a {config.agent.name!r} agent; the gridworld benchmark compares trial agents (varibad, rl2)")
    tasks = [task for task in dist.tasks(split) for _ in range(trials)]
    episodes = int(dist.episodes_per_trial)
    sampler = make_sampler(config, dist, seed=config.run.seed, device=torch.device(device))
    try:
        report = evaluate(agent, sampler, tasks, rounds=episodes, episodes_per_round=1, deterministic=config.evaluation.deterministic)
    finally:
        sampler.close()
    return {
        "returns": report.returns[:, :, 0],
        "goals": dist.goals(split),
        "num_cells": int(dist.num_cells),
        "episode_length": int(dist.max_episode_steps),
        "episodes": episodes,
        "agent": config.agent.name,
        "deterministic": bool(config.evaluation.deterministic),
    }


def _interval(values: np.ndarray, seed: int) -> list[float]:
    return [float(v) for v in bootstrap_ci(values, seed=seed)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Play every run on the split's goals and return the figures (prints nothing).

    Raises:
        ConfigError: no runs, an unknown split, a run not on the gridworld or not a trial agent,
            or runs of one agent that disagree on the gridworld's shape.
        CheckpointError: a missing run directory or checkpoint.
    """
    split = str(args.split)
    if split not in _SPLITS:
        raise ConfigError(f"unknown split {split!r}; valid splits: {choices(_SPLITS)}")
    trials = int(args.trials_per_goal)
    bench_device(str(args.device))
    if trials < 1:
        raise ConfigError(f"--trials-per-goal must be positive, got {trials}")
    groups = {"varibad": list(args.varibad or []), "rl2": list(args.rl2 or [])}
    if not any(groups.values()):
        raise ConfigError("give at least one run: --varibad RUN ... and/or --rl2 RUN ...")

    start = time.perf_counter()
    played: dict[str, list[dict[str, Any]]] = {}
    for name, dirs in groups.items():
        for run_dir in dirs:
            result = _play(run_dir, split=split, checkpoint=str(args.checkpoint), device=str(args.device), trials=trials)
            if result["agent"] != name:
                raise ConfigError(f"run {run_dir!r} is a {result['agent']!r} run, given as --{name}")
            played.setdefault(name, []).append(result)
    first = next(iter(played.values()))[0]
    for results in played.values():
        for result in results:
            if (result["num_cells"], result["episode_length"], result["episodes"]) != (first["num_cells"], first["episode_length"], first["episodes"]):
                raise ConfigError("the runs play different gridworlds (grid size, episode length or episodes per trial differ)")

    shape = {"num_cells": first["num_cells"], "episode_length": first["episode_length"]}
    goals = first["goals"]
    episodes = first["episodes"]
    solution = solve_gridworld(goals, episodes_per_trial=episodes, **shape)
    random_return = random_policy_returns(goals, **shape)
    references = {
        "bayes_optimal": {
            "episode_returns": solution.episode_returns.tolist(),
            "mean_episode_return": solution.mean_episode_return,
            "prior": f"uniform over the {len(goals)} {split} goals",
        },
        "random": {"episode_returns": [random_return] * episodes, "mean_episode_return": random_return},
    }

    agents: dict[str, Any] = {}
    for name, results in played.items():
        # One unit per (run, goal): its trials are averaged first, since trials on one goal are
        # not independent draws (a deterministic policy repeats the same trial exactly).
        returns = np.concatenate(
            [r["returns"].reshape(-1, trials, episodes).mean(axis=1) for r in results]
        )  # [runs * goals, E]
        per_unit = returns.mean(axis=1)
        mean = float(per_unit.mean())
        ci = _interval(per_unit, seed=0)
        gap = solution.mean_episode_return - random_return
        agents[name] = {
            "runs": [str(d) for d in groups[name]],
            "units": int(returns.shape[0]),
            "deterministic": results[0]["deterministic"],
            "episode_returns": [
                {"mean": float(returns[:, e].mean()), "ci95": _interval(returns[:, e], seed=1 + e)}
                for e in range(episodes)
            ],
            "mean_episode_return": {"mean": mean, "ci95": ci},
            "score": {"mean": (mean - random_return) / gap, "ci95": [(bound - random_return) / gap for bound in ci]},
        }
    return {
        "env": "gridworld",
        "split": split,
        "goals": goals.tolist(),
        "episodes_per_trial": episodes,
        "trials_per_goal": trials,
        "checkpoint": str(args.checkpoint),
        "agents": agents,
        "references": references,
        "wall_s": time.perf_counter() - start,
    }
