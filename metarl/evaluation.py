"""One adaptation protocol for every agent (design §4 "evaluate()").

Round ``k`` is the agent's behaviour after ``k`` adaptations, on held-out tasks:

- gradient agents (MAML family, ``agent.adaptation == "gradient"``): round ``k`` collects
  ``episodes_per_round`` episodes per task with the policy after ``k`` inner gradient steps;
  those same episodes are the support data of step ``k + 1`` (as in Finn et al. 2017's test
  scripts);
- trial agents (RL², VariBAD, ``"trial"``): one trial of ``rounds`` episodes per repetition and
  round ``k`` is its ``k``-th episode; ``episodes_per_round`` trials per task.

Every task gets exactly ``episodes_per_round`` episodes in every round: an episode that ends early
(e.g. on success) still counts once, so early finishers never bias a mean. An episode succeeds
when the env's success flag was set at any of its steps. Intervals are 95% bootstrap intervals
over tasks (``scipy.stats.bootstrap`` on per-task means).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats

from metarl import __version__
from metarl.checkpoint import atomic_write
from metarl.errors import MetarlError
from metarl.types import Agent, Task

__all__ = ["EvalReport", "evaluate", "bootstrap_ci", "write_eval", "plot_adaptation", "load_eval"]

#: Bootstrap resamples for every interval.
N_RESAMPLES = 2000


def bootstrap_ci(values: Sequence[float] | np.ndarray, *, seed: int = 0, confidence: float = 0.95) -> tuple[float, float]:
    """BCa bootstrap interval of the mean of ``values`` (``scipy.stats.bootstrap``).

    Degenerate samples (one value, or all equal) give the point interval ``(mean, mean)``.
    """
    data = np.asarray(values, dtype=np.float64).ravel()
    if data.size == 0:
        return (math.nan, math.nan)
    if data.size == 1 or np.all(data == data[0]):
        return (float(data.mean()), float(data.mean()))
    res = scipy.stats.bootstrap(
        (data,),
        np.mean,
        confidence_level=confidence,
        n_resamples=N_RESAMPLES,
        method="BCa",
        rng=np.random.default_rng(seed),
    )
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(lo) and math.isfinite(hi)):  # BCa can fail on near-degenerate data
        res = scipy.stats.bootstrap(
            (data,), np.mean, confidence_level=confidence, n_resamples=N_RESAMPLES, method="percentile",
            rng=np.random.default_rng(seed),
        )
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return (lo, hi)


@dataclasses.dataclass
class EvalReport:
    """Per-task, per-round results of :func:`evaluate`.

    Attributes:
        tasks: the evaluated tasks.
        returns: ``[num_tasks, rounds, max quota]`` undiscounted episode returns; NaN pads
            rounds with fewer episodes than the widest one.
        successes: same shape, 1.0/0.0 (NaN padded), or ``None`` when the env defines no
            success.
        adaptation: ``"gradient"`` or ``"trial"`` (what a round means).
    """

    tasks: tuple[Task, ...]
    returns: np.ndarray
    successes: np.ndarray | None
    adaptation: str

    @property
    def num_rounds(self) -> int:
        return int(self.returns.shape[1])

    @property
    def episodes_per_round(self) -> list[int]:
        """Episodes per task in each round."""
        return [int(np.isfinite(self.returns[0, k]).sum()) for k in range(self.num_rounds)]

    def rounds(self) -> list[dict[str, Any]]:
        """One summary per round: mean return and success over tasks, with 95% intervals."""
        out = []
        for k in range(self.num_rounds):
            per_task = np.nanmean(self.returns[:, k], axis=1)
            row: dict[str, Any] = {
                "round": k,
                "return_mean": float(per_task.mean()),
                "return_ci95": list(bootstrap_ci(per_task, seed=k)),
                "success_rate": None,
                "success_ci95": None,
            }
            if self.successes is not None:
                rate = np.nanmean(self.successes[:, k], axis=1)
                row["success_rate"] = float(rate.mean())
                row["success_ci95"] = list(bootstrap_ci(rate, seed=1000 + k))
            out.append(row)
        return out

    def metrics(self, prefix: str = "meta_test") -> dict[str, float]:
        """``{prefix}/return_round_k`` (and ``success_round_k``) for logging."""
        out: dict[str, float] = {}
        for k in range(self.num_rounds):
            out[f"{prefix}/return_round_{k}"] = float(np.nanmean(self.returns[:, k]))
            if self.successes is not None:
                out[f"{prefix}/success_round_{k}"] = float(np.nanmean(self.successes[:, k]))
        return out

    def to_dict(self, *, run: str, agent: str, env: str, preset: str, split: str, seed: int) -> dict[str, Any]:
        """The ``eval.json`` document: run identity, per-round summaries and per-task episodes."""
        return {
            "metarl_version": __version__,
            "run": run,
            "agent": agent,
            "env": env,
            "preset": preset,
            "split": split,
            "num_tasks": len(self.tasks),
            "episodes_per_round": quotas[0] if len(set(quotas := self.episodes_per_round)) == 1 else quotas,
            "seed": seed,
            "adaptation": self.adaptation,
            "rounds": self.rounds(),
            "per_task": [
                {
                    "task": str(task),
                    "returns": [row[np.isfinite(row)].tolist() for row in self.returns[i]],
                    "successes": None
                    if self.successes is None
                    else [row[np.isfinite(row)].astype(bool).tolist() for row in self.successes[i]],
                }
                for i, task in enumerate(self.tasks)
            ],
        }

    def table(self) -> str:
        """The adaptation table as aligned text."""
        return format_table(self.rounds(), adaptation=self.adaptation)


def format_table(rounds: Sequence[Mapping[str, Any]], *, adaptation: str = "gradient") -> str:
    """Aligned text table of round summaries (as in ``eval.json``'s ``rounds``)."""
    what = "gradient steps" if adaptation == "gradient" else "episode of trial"
    has_success = any(r.get("success_rate") is not None for r in rounds)
    header = f"{'round':>5}  {what:<16}  {'return':>10}  {'95% CI':>22}"
    if has_success:
        header += f"  {'success':>7}  {'95% CI':>15}"
    lines = [header, "-" * len(header)]
    for r in rounds:
        label = str(r["round"]) if adaptation == "gradient" else str(r["round"] + 1)
        lo, hi = r["return_ci95"]
        line = f"{r['round']:>5}  {label:<16}  {r['return_mean']:>10.2f}  [{lo:>9.2f}, {hi:>9.2f}]"
        if has_success:
            slo, shi = r["success_ci95"]
            line += f"  {100 * r['success_rate']:>6.1f}%  [{100 * slo:>5.1f}, {100 * shi:>5.1f}]"
        lines.append(line)
    return "\n".join(lines)


def evaluate(
    agent: Agent,
    sampler: Any,
    tasks: Sequence[Task],
    *,
    rounds: int,
    episodes_per_round: int | Sequence[int],
    deterministic: bool = False,
) -> EvalReport:
    """Measure few-episode adaptation of ``agent`` on ``tasks`` (see the module docstring).

    Args:
        agent: any :class:`~metarl.types.Agent`.
        sampler: a :class:`~metarl.sampler.Sampler` for the tasks' distribution.
        tasks: held-out tasks.
        rounds: number of rounds (gradient agents: 0 … rounds−1 inner steps; trial agents:
            episodes per trial).
        episodes_per_round: episodes per task per round, or one quota per round (e.g.
            Meta-World's ``[10, 3]``: 10 adaptation episodes, then 3 evaluation episodes; for
            trial agents a list means one trial of ``sum`` episodes split into those blocks).
        deterministic: act with the policy's mode (VariBAD's protocol); gradient agents need
            stochastic support episodes and should leave it False.

    Returns:
        An :class:`EvalReport`.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds <= 0:
        raise MetarlError(f"rounds must be a positive integer, got {rounds!r}")
    quotas = [episodes_per_round] * rounds if isinstance(episodes_per_round, int) else list(episodes_per_round)
    if len(quotas) != rounds:
        raise MetarlError(f"episodes_per_round lists {len(quotas)} quotas for rounds={rounds}")
    for q in quotas:
        if isinstance(q, bool) or not isinstance(q, int) or q <= 0:
            raise MetarlError(f"episodes_per_round must be a positive integer, got {q!r}")
    tasks = tuple(tasks)
    n = len(tasks)
    width = max(quotas)
    returns = np.full((n, rounds, width), np.nan)
    successes: np.ndarray | None = None

    def store(k: int, ep_returns: np.ndarray, ep_success: np.ndarray | None) -> None:
        nonlocal successes
        q = ep_returns.shape[1]
        returns[:, k, :q] = ep_returns
        if ep_success is not None:
            if successes is None:
                successes = np.full((n, rounds, width), np.nan)
            successes[:, k, :q] = ep_success

    if agent.adaptation == "gradient":
        context = agent.initial_context(n)
        for k, q in enumerate(quotas):
            batch = sampler.collect(
                agent.policy(context, deterministic=deterministic), tasks, episodes_per_task=q, episodes_per_trial=1
            )
            ep_success = batch.episode_successes()
            store(
                k,
                batch.episode_returns()[:, 0].cpu().numpy().reshape(n, q),
                None if ep_success is None else ep_success[:, 0].cpu().numpy().reshape(n, q),
            )
            if k + 1 < rounds:
                context = agent.adapt(batch, context, step=k)
    elif agent.adaptation == "trial":
        # int quota: `quota` trials of `rounds` episodes, round k = episode k of each trial;
        # list of quotas: one trial of sum(quotas) episodes, round k = its k-th block.
        blocks = isinstance(episodes_per_round, int) is False
        trial_len = sum(quotas) if blocks else rounds
        trials = 1 if blocks else quotas[0]
        batch = sampler.collect(
            agent.policy(agent.initial_context(n), deterministic=deterministic),
            tasks,
            episodes_per_task=trials * trial_len,
            episodes_per_trial=trial_len,
        )
        ep_returns = batch.episode_returns().cpu().numpy().reshape(n, trials, trial_len)
        ep_success = batch.episode_successes()
        ep_success_np = None if ep_success is None else ep_success.cpu().numpy().reshape(n, trials, trial_len)
        if blocks:
            edges = np.cumsum([0, *quotas])
            for k in range(rounds):
                sl = slice(edges[k], edges[k + 1])
                store(k, ep_returns[:, 0, sl], None if ep_success_np is None else ep_success_np[:, 0, sl])
        else:
            for k in range(rounds):
                store(k, ep_returns[:, :, k], None if ep_success_np is None else ep_success_np[:, :, k])
    else:
        raise MetarlError(f"agent {type(agent).__name__} has unknown adaptation {agent.adaptation!r}; valid: 'gradient', 'trial'")
    return EvalReport(tasks=tasks, returns=returns, successes=successes, adaptation=agent.adaptation)


def write_eval(path: str | os.PathLike[str], report: Mapping[str, Any]) -> Path:
    """Write ``report`` as JSON atomically (temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(report, indent=2).encode("utf-8"))
    return path


def load_eval(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read an ``eval.json``."""
    path = Path(path)
    if not path.is_file():
        raise MetarlError(f"no eval.json at {str(path)!r}; run 'metarl evaluate RUN_DIR' first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise MetarlError(f"{str(path)!r} is not valid JSON: {exc.msg} at line {exc.lineno}") from None


def plot_adaptation(path: str | os.PathLike[str], reports: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Path:
    """Plot return (and success) per round with 95% intervals, one line per report.

    Args:
        path: the PNG to write.
        reports: one ``eval.json`` document or several (e.g. agents to compare).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    docs = [reports] if isinstance(reports, Mapping) else list(reports)
    has_success = any(r["rounds"][0].get("success_rate") is not None for r in docs)
    fig, axes = plt.subplots(1, 2 if has_success else 1, figsize=(10 if has_success else 6, 4), squeeze=False)
    for doc in docs:
        rounds = doc["rounds"]
        x = np.array([r["round"] for r in rounds])
        if doc.get("adaptation", "gradient") == "trial":
            x = x + 1
        mean = np.array([r["return_mean"] for r in rounds])
        lo = np.array([r["return_ci95"][0] for r in rounds])
        hi = np.array([r["return_ci95"][1] for r in rounds])
        label = f"{doc['agent']} ({doc['run']})" if len(docs) > 1 else doc["agent"]
        (line,) = axes[0, 0].plot(x, mean, marker="o", label=label)
        axes[0, 0].fill_between(x, lo, hi, alpha=0.25, color=line.get_color())
        if has_success and rounds[0].get("success_rate") is not None:
            rate = np.array([100 * r["success_rate"] for r in rounds])
            slo = np.array([100 * r["success_ci95"][0] for r in rounds])
            shi = np.array([100 * r["success_ci95"][1] for r in rounds])
            axes[0, 1].plot(x, rate, marker="o", color=line.get_color(), label=label)
            axes[0, 1].fill_between(x, slo, shi, alpha=0.25, color=line.get_color())
    first = docs[0]
    xlabel = "gradient steps of adaptation" if first.get("adaptation", "gradient") == "gradient" else "episode within trial"
    axes[0, 0].set_xlabel(xlabel)
    axes[0, 0].set_ylabel("episode return (undiscounted)")
    axes[0, 0].set_title(f"{first['env']}[{first['preset']}], {first['num_tasks']} {first['split']} tasks, 95% CI")
    axes[0, 0].legend()
    axes[0, 0].grid(alpha=0.3)
    if has_success:
        axes[0, 1].set_xlabel(xlabel)
        axes[0, 1].set_ylabel("success rate (%)")
        axes[0, 1].set_ylim(-2, 102)
        axes[0, 1].legend()
        axes[0, 1].grid(alpha=0.3)
    for ax in axes[0]:
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
