"""Random tabular MDPs: trained trial agents against reference policies on the same held-out MDPs.

``metarl bench tabular-mdp [--preset n10] [--rl2 RUN ...] [--json]`` plays one trial of ``n``
episodes on each of the first ``--num-tasks`` held-out test MDPs (RL² §3.2, Table 2) with every
reference policy below and with each trained run, and reports per policy the mean return of each
episode of the trial and the trial total, with 95% bootstrap intervals over MDPs. The paper's
Table 2 row for the preset is printed beside them.

The reference policies follow exact rules on the MDP's known prior (rewards ``N(mu, 1)`` with
``mu ~ N(1, 1)``; transition rows from a flat Dirichlet), learning across the trial's episodes:

- ``random``: uniform actions;
- ``empirical_greedy``: the action of the current state with the highest empirical mean reward,
  untried actions counting 0 (ties broken uniformly), so it keeps an action while that action's
  mean stays highest and non-negative. It is one reading of the paper's "greedy", not its rule:
  on n10 the two are close (135.6 [133.8, 137.3] at ``--seed 0`` against 134.8), on n25-n100 this
  rule scores below the paper's column;
- ``bayes_greedy``: the action with the highest posterior-mean reward ``(1 + sum r) / (1 + n)``
  (the exact Normal posterior under the prior), so untried actions keep their prior mean 1;
- ``certainty_equivalent``: optimal for the posterior-mean MDP (posterior-mean rewards, transition
  rows ``(1 + counts) / (S + n)``) over the episode's remaining steps, re-planned every step;
- ``oracle``: optimal for the true MDP over the episode's remaining steps (knows the task: an upper
  bound on any adaptive policy);
- ``bayes_greedy_lastK`` (``--memory K ...``): ``bayes_greedy`` whose reward sums and counts cover
  only the trial's last ``K`` steps, a scale of memory spans to place a trained recurrent policy
  on. On the 1000 n10 test MDPs at ``--seed 0``: K = 5 scores 114.2, K = 8 122.6, K = 10 132.3,
  K = 15 139.4, K = 20 145.5, K = 30 151.3, K = 50 156.3, K = 100 (the whole trial) 157.0.

Each reference draws its rewards and transitions from its own stream of ``--seed``, so adding a
policy changes no other figure; ``--references`` with no names plays only the runs. Trained runs
play the same MDPs as the trainer evaluates them (:func:`metarl.trainer.evaluate_agent`, seeded by
the checkpoint's iteration); ``--actions`` chooses sampled actions, the policy's mode, or what the
run's config says.
"""

from __future__ import annotations

import argparse
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from metarl.bench import bench_device, load_trained_run
from metarl.errors import ConfigError, choices
from metarl.evaluation import bootstrap_ci
from metarl.seeding import numpy_rng

__all__ = [
    "add_arguments",
    "run",
    "format_text",
    "play_references",
    "finite_horizon_q",
    "reference_memory",
    "REFERENCES",
    "PAPER_TABLE_2",
]

#: Reference policies, in the order they are reported.
REFERENCES: tuple[str, ...] = ("random", "empirical_greedy", "bayes_greedy", "certainty_equivalent", "oracle")

#: Duan et al. 2016 (arXiv 1611.02779), Table 2: total reward per trial on held-out MDPs.
PAPER_TABLE_2: dict[str, dict[str, float]] = {
    "n10": {"random": 100.1, "PSRL": 138.1, "OPSRL": 144.1, "UCRL2": 146.6, "BEB": 150.2, "eps_greedy": 132.8, "greedy": 134.8, "RL2": 156.2},
    "n25": {"random": 250.2, "PSRL": 408.8, "OPSRL": 425.2, "UCRL2": 424.1, "BEB": 427.8, "eps_greedy": 377.3, "greedy": 368.8, "RL2": 445.7},
    "n50": {"random": 499.7, "PSRL": 904.4, "OPSRL": 930.7, "UCRL2": 918.9, "BEB": 917.8, "eps_greedy": 823.3, "greedy": 769.3, "RL2": 936.1},
    "n75": {"random": 749.9, "PSRL": 1417.1, "OPSRL": 1449.2, "UCRL2": 1427.6, "BEB": 1422.6, "eps_greedy": 1293.9, "greedy": 1172.9, "RL2": 1428.8},
    "n100": {"random": 999.4, "PSRL": 1939.5, "OPSRL": 1973.9, "UCRL2": 1942.1, "BEB": 1935.1, "eps_greedy": 1778.2, "greedy": 1578.5, "RL2": 1913.7},
}

_ACTIONS = ("config", "sample", "mode")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``metarl bench tabular-mdp``."""
    parser.add_argument("--preset", default=None, help="tabular-mdp preset (n10, n25, n50, n75, n100); default: the runs' preset, else n10")
    parser.add_argument("--rl2", nargs="*", default=[], metavar="RUN", help="trained run directories (RL² or another trial agent) on that preset")
    parser.add_argument("--checkpoint", default="last", help="checkpoint of each run: last (default), best or a file name")
    parser.add_argument("--num-tasks", type=int, default=1000, help="the first N held-out test MDPs (default: all 1000)")
    parser.add_argument("--references", nargs="*", default=list(REFERENCES), metavar="NAME", help=f"reference policies to play (default: all of {', '.join(REFERENCES)}; none: only the runs)")
    parser.add_argument("--memory", nargs="*", type=int, default=[], metavar="K", help="also play bayes_greedy remembering only the trial's last K steps, for each K (reported as bayes_greedy_lastK)")
    parser.add_argument("--actions", default="config", help="the runs' actions: config (the run's evaluation.deterministic, default), sample or mode")
    parser.add_argument("--seed", type=int, default=0, help="seed of the reference policies' streams (default: 0)")
    parser.add_argument("--device", default="cpu", help="device for the agents: auto, cpu (default) or cuda")


# --------------------------------------------------------------------------------------------
# Reference policies


def finite_horizon_q(rewards: np.ndarray, transitions: np.ndarray, steps: int) -> np.ndarray:
    """Optimal action values ``Q[N, S, A]`` with ``steps`` steps to go (``steps >= 1``), by
    backward induction on ``rewards[N, S, A]`` and ``transitions[N, S, A, S]``."""
    if int(steps) < 1:
        raise ValueError(f"steps to go must be at least 1, got {steps}")
    values = np.zeros(rewards.shape[:2])
    q = rewards
    for _ in range(int(steps)):
        q = rewards + np.einsum("nsaj,nj->nsa", transitions, values)
        values = q.max(axis=-1)
    return q


def _argmax_random_ties(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Index of the largest entry of each row of ``values[N, A]``, ties broken uniformly."""
    best = values == values.max(axis=1, keepdims=True)
    return np.argmax(best * rng.random(values.shape, dtype=np.float64), axis=1)


_MEMORY_PREFIX = "bayes_greedy_last"


def reference_memory(name: str) -> int | None:
    """The memory span ``K`` of a ``bayes_greedy_lastK`` reference, ``None`` for the others.

    Raises:
        ConfigError: an unknown reference name, or ``K < 1``.
    """
    if name in REFERENCES:
        return None
    suffix = name[len(_MEMORY_PREFIX) :] if name.startswith(_MEMORY_PREFIX) else ""
    if not suffix.isdigit() or int(suffix) < 1:
        raise ConfigError(
            f"unknown reference policy {name!r}; valid references: {choices(REFERENCES)} "
            f"or {_MEMORY_PREFIX}K with K >= 1 steps of memory"
        )
    return int(suffix)


def _policy(name: str, mu: np.ndarray, transitions: np.ndarray, horizon: int) -> Callable[..., np.ndarray]:
    """``act(state[N], steps_left, sums, counts, next_counts, rng) -> actions[N]`` of a reference."""
    n, s, a = mu.shape
    rows = np.arange(n)
    if reference_memory(name) is not None:
        name = "bayes_greedy"  # the same rule; play_references forgets what is older than K steps
    if name == "random":
        return lambda state, left, sums, counts, nxt, rng: rng.integers(a, size=n)
    if name == "empirical_greedy":
        def act(state, left, sums, counts, nxt, rng):
            mean = sums[rows, state] / np.maximum(counts[rows, state], 1)
            return _argmax_random_ties(mean, rng)
        return act
    if name == "bayes_greedy":
        def act(state, left, sums, counts, nxt, rng):
            return _argmax_random_ties((1.0 + sums[rows, state]) / (1.0 + counts[rows, state]), rng)
        return act
    if name == "certainty_equivalent":
        def act(state, left, sums, counts, nxt, rng):
            r_hat = (1.0 + sums) / (1.0 + counts)
            p_hat = (1.0 + nxt) / (s + counts[..., None])
            return _argmax_random_ties(finite_horizon_q(r_hat, p_hat, left)[rows, state], rng)
        return act
    if name == "oracle":
        q_by_left = {left: finite_horizon_q(mu, transitions, left) for left in range(1, horizon + 1)}
        return lambda state, left, sums, counts, nxt, rng: _argmax_random_ties(q_by_left[left][rows, state], rng)
    raise ConfigError(f"unknown reference policy {name!r}; valid references: {choices(REFERENCES)}")


def play_references(
    tasks: Sequence[Any],
    *,
    episodes: int,
    horizon: int,
    names: Sequence[str] = REFERENCES,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Play one trial of ``episodes`` episodes of ``horizon`` steps (each from state 0) on every
    task with each reference policy of ``names``.

    Returns:
        ``{name: returns[num_tasks, episodes]}``, undiscounted episode returns.
    """
    mu = np.array([task["reward_means"] for task in tasks], dtype=np.float64)
    transitions = np.array([task["transitions"] for task in tasks], dtype=np.float64)
    cdf = np.cumsum(transitions, axis=-1)
    n, s, a = mu.shape
    rows = np.arange(n)
    out: dict[str, np.ndarray] = {}
    for name in names:
        act = _policy(name, mu, transitions, horizon)
        memory = reference_memory(name)
        rng = numpy_rng(seed, "tabular-mdp-bench", name)
        sums, counts = np.zeros((n, s, a)), np.zeros((n, s, a))
        nxt = np.zeros((n, s, a, s))
        returns = np.zeros((n, episodes))
        history: deque[tuple[np.ndarray, np.ndarray, np.ndarray]] = deque()
        for episode in range(episodes):
            state = np.zeros(n, dtype=np.int64)
            for t in range(horizon):
                action = act(state, horizon - t, sums, counts, nxt, rng)
                reward = mu[rows, state, action] + rng.standard_normal(n)
                u = rng.random(n)
                new_state = np.minimum((cdf[rows, state, action] <= u[:, None]).sum(axis=1), s - 1)
                sums[rows, state, action] += reward
                counts[rows, state, action] += 1
                nxt[rows, state, action, new_state] += 1
                if memory is not None:
                    history.append((state, action, reward))
                    if len(history) > memory:  # forget the step that left the window
                        old_state, old_action, old_reward = history.popleft()
                        counts[rows, old_state, old_action] -= 1
                        left = counts[rows, old_state, old_action]
                        # An emptied pair is exactly untried again (no rounding residue).
                        sums[rows, old_state, old_action] = np.where(left > 0, sums[rows, old_state, old_action] - old_reward, 0.0)
                returns[:, episode] += reward
                state = new_state
        out[name] = returns
    return out


# --------------------------------------------------------------------------------------------
# Trained runs


def _load(run_dir: str, *, checkpoint: str, device: str) -> tuple[Any, Any, Any, int]:
    config, dist, agent, iteration = load_trained_run(run_dir, checkpoint=checkpoint, device=device)
    if config.env.name != "tabular-mdp":
        raise ConfigError(f"run {run_dir!r} trained on {config.env.name!r}, not on 'tabular-mdp'")
    if agent.adaptation != "trial":
        raise ConfigError(
            f"run {run_dir!r} has a {config.agent.name!r} agent; the tabular-MDP benchmark compares trial agents (rl2, varibad)"
        )
    return config, dist, agent, iteration


def _play_run(loaded: tuple[Any, Any, Any, int], tasks: list[Any], *, device: str, actions: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Episode returns ``[num_tasks, episodes]`` of one loaded run, evaluated as the trainer
    evaluates it (:func:`metarl.trainer.evaluate_agent`, seeded by the checkpoint's iteration)."""
    from metarl.trainer import evaluate_agent

    config, dist, agent, iteration = loaded
    deterministic = bool(config.evaluation.deterministic) if actions == "config" else actions == "mode"
    report = evaluate_agent(
        config,
        agent=agent,
        dist=dist,
        tasks=tasks,
        iteration=iteration,
        device=torch.device(device),
        rounds=int(dist.episodes_per_trial),
        episodes_per_round=1,
        deterministic=deterministic,
    )
    info = {"agent": config.agent.name, "checkpoint_iteration": int(iteration), "deterministic": deterministic}
    return report.returns[:, :, 0], info


def _summary(returns: np.ndarray, seed: int) -> dict[str, Any]:
    totals = returns.sum(axis=1)
    return {
        "episode_returns": [
            {"mean": float(returns[:, e].mean()), "ci95": [float(v) for v in bootstrap_ci(returns[:, e], seed=seed + 1 + e)]}
            for e in range(returns.shape[1])
        ],
        "trial_return": {"mean": float(totals.mean()), "ci95": [float(v) for v in bootstrap_ci(totals, seed=seed)]},
    }


def _shape(dist: Any) -> tuple[Any, ...]:
    return (dist.preset, dist.num_states, dist.num_actions, dist.max_episode_steps, dist.episodes_per_trial, dist.num_test_tasks)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Play the references and every run on the same held-out MDPs; return the figures.

    Raises:
        ConfigError: nothing to play, an unknown reference, ``--actions`` or ``--device`` value, a ``--num-tasks``
            outside the held-out list, runs on another env, runs whose MDPs differ from each other
            or from ``--preset``, or a gradient agent.
        EnvError: an unknown preset.
        CheckpointError: a missing run directory or checkpoint.
    """
    from metarl.envs import make

    actions = str(args.actions)
    if actions not in _ACTIONS:
        raise ConfigError(f"unknown --actions {actions!r}; valid values: {choices(_ACTIONS)}")
    names = list(args.references or [])
    for k in getattr(args, "memory", None) or []:
        if int(k) < 1:
            raise ConfigError(f"--memory needs spans of at least 1 step, got {k}")
        names.append(f"{_MEMORY_PREFIX}{int(k)}")
    names = list(dict.fromkeys(names))  # each policy once, in the order asked
    for name in names:
        reference_memory(name)  # raises on an unknown name
    if not names and not args.rl2:
        raise ConfigError("nothing to play: name reference policies (--references, --memory) or runs (--rl2)")
    device = bench_device(str(args.device))
    loaded = {str(d): _load(str(d), checkpoint=str(args.checkpoint), device=device) for d in (args.rl2 or [])}
    if args.preset is not None or not loaded:
        dist = make("tabular-mdp", args.preset or "n10")
    else:
        dist = next(iter(loaded.values()))[1]
    for run_dir, (_, run_dist, _, _) in loaded.items():
        if _shape(run_dist) != _shape(dist):
            raise ConfigError(
                f"run {run_dir!r} plays other MDPs (preset, sizes, episodes or test list "
                f"{_shape(run_dist)}) than {_shape(dist)}"
            )
    pool = dist.test_tasks()
    num_tasks = int(args.num_tasks)
    if not 1 <= num_tasks <= len(pool):
        raise ConfigError(f"--num-tasks must be between 1 and {len(pool)} (the held-out MDPs), got {num_tasks}")
    tasks = pool[:num_tasks]
    episodes, horizon = int(dist.episodes_per_trial), int(dist.max_episode_steps)

    start = time.perf_counter()
    played = play_references(tasks, episodes=episodes, horizon=horizon, names=names, seed=int(args.seed))
    references = {name: {"description": _description(name), **_summary(returns, seed=0)} for name, returns in played.items()}
    agents: dict[str, Any] = {}
    for run_dir, state in loaded.items():
        returns, info = _play_run(state, tasks, device=device, actions=actions)
        agents[run_dir] = {**info, **_summary(returns, seed=0)}
    return {
        "env": "tabular-mdp",
        "preset": dist.preset,
        "num_tasks": num_tasks,
        "episodes_per_trial": episodes,
        "episode_length": horizon,
        "references": references,
        "agents": agents,
        "paper_table_2": PAPER_TABLE_2.get(dist.preset, {}),
        "wall_s": time.perf_counter() - start,
    }


_DESCRIPTIONS = {
    "random": "uniform actions",
    "empirical_greedy": "highest empirical mean reward in the current state, untried actions 0",
    "bayes_greedy": "highest posterior-mean reward (prior N(1, 1)), untried actions 1",
    "certainty_equivalent": "optimal for the posterior-mean MDP over the episode's remaining steps",
    "oracle": "optimal for the true MDP (knows the task)",
}


def _description(name: str) -> str:
    memory = reference_memory(name)
    if memory is None:
        return _DESCRIPTIONS[name]
    return f"bayes_greedy remembering only the trial's last {memory} steps"


def format_text(result: dict[str, Any]) -> str:
    """The figures of :func:`run` as a table: one row per policy, the mean return of each
    episode of the trial and the trial total with its 95% interval, then the paper's row."""
    episodes = int(result["episodes_per_trial"])
    shown = list(range(episodes)) if episodes <= 10 else [0, 1, 2, episodes // 2 - 1, episodes - 2, episodes - 1]
    rows: list[tuple[str, dict[str, Any]]] = [(name, figures) for name, figures in result["references"].items()]
    for run_dir, figures in result["agents"].items():
        actions = "mode" if figures["deterministic"] else "sampled"
        rows.append((f"{run_dir} ({figures['agent']}, iteration {figures['checkpoint_iteration']}, {actions})", figures))
    width = max([len("policy"), *(len(name) for name, _ in rows)])
    head = f"{'policy':<{width}}" + "".join(f"{f'ep {e + 1}':>8}" for e in shown) + "   trial total [95% CI]"
    lines = [
        f"tabular-mdp {result['preset']}: one trial of {episodes} episodes of {result['episode_length']} steps "
        f"on each of the first {result['num_tasks']} held-out MDPs; mean return per episode",
        head,
        "-" * len(head),
    ]
    for name, figures in rows:
        means = "".join(f"{figures['episode_returns'][e]['mean']:>8.2f}" for e in shown)
        total = figures["trial_return"]
        low, high = total["ci95"]
        lines.append(f"{name:<{width}}{means}   {total['mean']:.1f} [{low:.1f}, {high:.1f}]")
    paper = result.get("paper_table_2") or {}
    if paper:
        lines.append("Duan et al. 2016, Table 2 (trial total): " + ", ".join(f"{k} {v}" for k, v in paper.items()))
    return "\n".join(lines)
