"""Learning curves, adaptation curves and comparison tables over run directories (issue #7).

Runs are grouped by (agent, env, preset): runs of one group are seeds and are aggregated (mean or
interquartile mean, with 95% bootstrap bands across seeds). Adaptation results come from each
run's ``eval.json``; with several seeds, each (seed, task) pair is one sample of the interval.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats
import yaml

from metarl.errors import MetarlError
from metarl.evaluation import bootstrap_ci, load_eval
from metarl.reference import paper_numbers

__all__ = ["RunInfo", "load_run", "group_runs", "main_plot", "main_compare", "compare_table", "iqm"]


def iqm(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Interquartile mean (Agarwal et al. 2021): the mean of the middle 50%."""
    return scipy.stats.trim_mean(values, 0.25, axis=axis)


class RunInfo:
    """What a run directory holds: its resolved config, metrics rows and eval.json (if any)."""

    def __init__(self, path: Path, config: dict[str, Any], metrics: list[dict[str, float]], evaluation: dict[str, Any] | None):
        self.path = path
        self.config = config
        self.metrics = metrics
        self.evaluation = evaluation

    @property
    def agent(self) -> str:
        return str(self.config.get("agent", {}).get("name", "?"))

    @property
    def env(self) -> str:
        return str(self.config.get("env", {}).get("name", "?"))

    @property
    def preset(self) -> str:
        return str(self.config.get("env", {}).get("preset") or "default")

    @property
    def seed(self) -> int:
        return int(self.config.get("run", {}).get("seed", 0))

    @property
    def group(self) -> tuple[str, str, str]:
        return (self.agent, self.env, self.preset)


def load_run(path: str | Path) -> RunInfo:
    """Read a run directory; one-line error when it is not one."""
    path = Path(path)
    config_path = path / "config.yaml"
    if not config_path.is_file():
        raise MetarlError(f"{str(path)!r} is not a run directory (no config.yaml)")
    config = yaml.safe_load(config_path.read_text()) or {}
    metrics: list[dict[str, float]] = []
    metrics_path = path / "metrics.csv"
    if metrics_path.is_file():
        with metrics_path.open(newline="") as f:
            for row in csv.DictReader(f):
                metrics.append({k: _float(v) for k, v in row.items()})
    evaluation = load_eval(path / "eval.json") if (path / "eval.json").is_file() else None
    return RunInfo(path, config, metrics, evaluation)


def _float(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "") else math.nan
    except ValueError:
        return math.nan


def group_runs(runs: Sequence[RunInfo]) -> dict[tuple[str, str, str], list[RunInfo]]:
    groups: dict[tuple[str, str, str], list[RunInfo]] = defaultdict(list)
    for run in runs:
        groups[run.group].append(run)
    return dict(groups)


def _aggregate(values: np.ndarray, how: str) -> tuple[float, float, float]:
    """Centre and 95% bootstrap band across seeds of ``values`` (1-D)."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (math.nan, math.nan, math.nan)
    stat: Callable[..., Any] = np.mean if how == "mean" else iqm
    centre = float(stat(values))
    if values.size < 3 or np.all(values == values[0]):
        return (centre, centre, centre)
    res = scipy.stats.bootstrap((values,), stat, n_resamples=1000, method="percentile", rng=np.random.default_rng(0))
    return (centre, float(res.confidence_interval.low), float(res.confidence_interval.high))


def _learning_curves(groups: dict[tuple[str, str, str], list[RunInfo]], out: Path, how: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(
        {k for runs in groups.values() for run in runs for row in run.metrics[:1] for k in row}
        - {"iteration", "env_steps"}
    )
    keys = [k for k in keys if k.startswith(("meta_train/return", "meta_test/return", "meta_test/success"))]
    written = []
    for key in keys:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        drawn = False
        for (agent, env, preset), runs in sorted(groups.items()):
            series = [[(row["env_steps"], row[key]) for row in run.metrics if math.isfinite(row.get(key, math.nan))] for run in runs]
            series = [s for s in series if s]
            if not series:
                continue
            length = min(len(s) for s in series)
            steps = np.array([p[0] for p in series[0][:length]])
            values = np.array([[p[1] for p in s[:length]] for s in series])  # [seeds, points]
            agg = np.array([_aggregate(values[:, i], how) for i in range(length)])
            label = f"{agent} on {env}[{preset}] ({len(series)} seed{'s' if len(series) > 1 else ''})"
            (line,) = ax.plot(steps, agg[:, 0], label=label)
            if len(series) > 1:
                ax.fill_between(steps, agg[:, 1], agg[:, 2], alpha=0.25, color=line.get_color())
            drawn = True
        if not drawn:
            plt.close(fig)
            continue
        ax.set_xlabel("environment steps")
        ylabel = "success rate" if "success" in key else "average episode return (undiscounted)"
        ax.set_ylabel(ylabel)
        ax.set_title(f"{key} ({how} across seeds, 95% bootstrap band)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"curve_{key.replace('/', '_')}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def _pooled_eval(runs: Sequence[RunInfo]) -> dict[str, Any] | None:
    """One eval document for a group: per-round intervals over every (seed, task) pair."""
    docs = [r.evaluation for r in runs if r.evaluation is not None]
    if not docs:
        return None
    num_rounds = min(len(d["rounds"]) for d in docs)
    per_task = [[float(np.mean(r)) for r in t["returns"][:num_rounds]] for d in docs for t in d["per_task"]]
    returns = np.asarray(per_task, dtype=np.float64)  # [seeds × tasks, rounds]
    has_success = docs[0]["per_task"][0]["successes"] is not None
    success = None
    if has_success:
        success = np.asarray(
            [[float(np.mean(r)) for r in t["successes"][:num_rounds]] for d in docs for t in d["per_task"]], dtype=np.float64
        )
    rounds = []
    for k in range(num_rounds):
        row: dict[str, Any] = {
            "round": k,
            "return_mean": float(returns[:, k].mean()),
            "return_ci95": list(bootstrap_ci(returns[:, k], seed=k)),
            "success_rate": None if success is None else float(success[:, k].mean()),
            "success_ci95": None if success is None else list(bootstrap_ci(success[:, k], seed=1000 + k)),
        }
        rounds.append(row)
    trial_totals = returns.sum(axis=1)
    first = docs[0]
    return {
        **{k: first[k] for k in ("agent", "env", "preset", "split", "episodes_per_round")},
        "adaptation": first.get("adaptation", "gradient"),
        "run": ", ".join(str(r.path.name) for r in runs),
        "num_tasks": int(returns.shape[0]),
        "num_seeds": len(docs),
        "rounds": rounds,
        "trial_total": float(trial_totals.mean()),
        "trial_total_ci95": list(bootstrap_ci(trial_totals, seed=7)),
    }


def compare_table(run_dirs: Sequence[str | Path]) -> str:
    """A Markdown table of agents × rounds with 95% intervals, the paper's numbers beside ours."""
    runs = [load_run(p) for p in run_dirs]
    groups = group_runs(runs)
    pooled = {g: _pooled_eval(rs) for g, rs in groups.items()}
    pooled = {g: d for g, d in pooled.items() if d is not None}
    if not pooled:
        raise MetarlError("none of the given runs has an eval.json; run 'metarl evaluate RUN_DIR' first")
    num_rounds = max(len(d["rounds"]) for d in pooled.values())
    header = ["agent", "env [preset]", "seeds × tasks"] + [f"round {k}" for k in range(num_rounds)] + ["trial total", "paper"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (agent, env, preset), doc in sorted(pooled.items()):
        cells = [agent, f"{env} [{preset}]", f"{doc['num_seeds']} × {doc['num_tasks'] // doc['num_seeds']}"]
        for k in range(num_rounds):
            if k >= len(doc["rounds"]):
                cells.append("")
                continue
            r = doc["rounds"][k]
            cell = f"{r['return_mean']:.2f} [{r['return_ci95'][0]:.2f}, {r['return_ci95'][1]:.2f}]"
            if r["success_rate"] is not None:
                cell += f"<br>success {100 * r['success_rate']:.1f}% [{100 * r['success_ci95'][0]:.1f}, {100 * r['success_ci95'][1]:.1f}]"
            cells.append(cell)
        if doc["adaptation"] == "trial":
            cells.append(f"{doc['trial_total']:.2f} [{doc['trial_total_ci95'][0]:.2f}, {doc['trial_total_ci95'][1]:.2f}]")
        else:
            cells.append("")
        cells.append(paper_numbers(agent, env, preset))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main_plot(args: argparse.Namespace) -> list[Path]:
    """``metarl plot RUN_DIR... [--out DIR] [--aggregate mean|iqm]``: PNGs of learning curves and
    adaptation curves; returns the written paths."""
    from metarl.evaluation import plot_adaptation

    runs = [load_run(p) for p in args.run_dirs]
    how = getattr(args, "aggregate", "mean") or "mean"
    if how not in ("mean", "iqm"):
        raise MetarlError(f"unknown aggregate {how!r}; valid: 'iqm', 'mean'")
    out = Path(args.out) if getattr(args, "out", None) else runs[0].path / "plots"
    out.mkdir(parents=True, exist_ok=True)
    groups = group_runs(runs)
    written = _learning_curves(groups, out, how)
    pooled = [d for d in (_pooled_eval(rs) for rs in groups.values()) if d is not None]
    if pooled:
        written.append(plot_adaptation(out / "adaptation.png", pooled))
    return written


def main_compare(args: argparse.Namespace) -> str:
    """``metarl compare RUN_DIR... [--out FILE]``: the Markdown comparison table."""
    table = compare_table(args.run_dirs)
    if getattr(args, "out", None):
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(table + "\n")
    return table
