"""Learning curves, adaptation curves, belief plots and comparison tables over run directories.

Runs are grouped by (agent, env, preset, config name): runs of one group are seeds and are aggregated (mean or
interquartile mean, with 95% bootstrap bands across seeds). Adaptation results come from each
run's ``eval.json``; with several seeds, each (seed, task) pair is one sample of the interval.
Belief plots come from the ``belief.json`` that ``metarl evaluate`` writes for agents with a
``beliefs`` method (VariBAD): the posterior over a trial on a few held-out tasks.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats

from metarl.config import load_yaml
from metarl.errors import MetarlError, choices
from metarl.evaluation import bootstrap_ci, load_eval
from metarl.reference import paper_numbers

__all__ = [
    "BeliefSeries",
    "RunInfo",
    "belief_series",
    "compare_table",
    "group_runs",
    "iqm",
    "load_belief",
    "load_run",
    "main_compare",
    "main_plot",
    "plot_belief",
]


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
    def name(self) -> str:
        """The run's config name (``run.name``: the config file's stem unless set)."""
        return str(self.config.get("run", {}).get("name") or "")

    @property
    def group(self) -> tuple[str, str, str, str]:
        """Seeds of one experiment share agent, env, preset and config name."""
        return (self.agent, self.env, self.preset, self.name)


def load_run(path: str | Path) -> RunInfo:
    """Read a run directory; one-line error when it is not one."""
    path = Path(path)
    config_path = path / "config.yaml"
    if not config_path.is_file():
        raise MetarlError(f"{str(path)!r} is not a run directory (no config.yaml)")
    config = load_yaml(config_path)
    bad = [k for k in ("run", "env", "agent") if not isinstance(config.get(k) or {}, Mapping)]
    if bad:
        raise MetarlError(
            f"{str(path)!r} is not a run directory: section {bad[0]!r} of its config.yaml is {config[bad[0]]!r}, not a mapping"
        )
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


def group_runs(runs: Sequence[RunInfo]) -> dict[tuple[str, str, str, str], list[RunInfo]]:
    """Runs by (agent, env, preset, config name): the runs of one group are seeds.

    Raises:
        MetarlError: two runs of one group have the same seed (or one run is given twice):
            pooled as seeds, they would count the same tasks twice and narrow the intervals.
    """
    groups: dict[tuple[str, str, str, str], list[RunInfo]] = defaultdict(list)
    for run in runs:
        for other in groups[run.group]:
            if other.seed == run.seed:
                agent, env, preset, name = run.group
                raise MetarlError(
                    f"runs {str(other.path)!r} and {str(run.path)!r} are both seed {run.seed} of {agent} on "
                    f"{env}[{preset}] (run.name {name!r}); the runs of one experiment are pooled as seeds, so give each seed once"
                )
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


def _learning_curves(groups: dict[tuple[str, str, str, str], list[RunInfo]], out: Path, how: str, *, suffix: str = "") -> list[Path]:
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
        for (agent, env, preset, config_name), runs in sorted(groups.items()):
            series = [[(row["env_steps"], row[key]) for row in run.metrics if math.isfinite(row.get(key, math.nan))] for run in runs]
            series = [s for s in series if s]
            if not series:
                continue
            length = min(len(s) for s in series)
            steps = np.array([p[0] for p in series[0][:length]])
            values = np.array([[p[1] for p in s[:length]] for s in series])  # [seeds, points]
            agg = np.array([_aggregate(values[:, i], how) for i in range(length)])
            label = f"{agent} on {env}[{preset}] '{config_name}' ({len(series)} seed{'s' if len(series) > 1 else ''})"
            (line,) = ax.plot(steps, agg[:, 0], label=label)
            if len(series) > 1:
                ax.fill_between(steps, agg[:, 1], agg[:, 2], alpha=0.25, color=line.get_color())
            drawn = True
        if not drawn:
            plt.close(fig)
            continue
        ax.set_xlabel("environment steps")
        ylabel = "success rate" if "success" in key else ("trial return (sum over its episodes)" if key.endswith("_trial") else "average episode return (undiscounted)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{key} ({how} across seeds, 95% bootstrap band)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"curve_{key.replace('/', '_')}{suffix}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def _num_rounds(runs: Sequence[RunInfo]) -> int:
    """Rounds every seed of a group has (0 when none has an eval.json)."""
    counts = [len(r.evaluation["rounds"]) for r in runs if r.evaluation is not None]
    return min(counts) if counts else 0


def _pooled_eval(runs: Sequence[RunInfo], *, rounds: Sequence[int] | None = None) -> dict[str, Any] | None:
    """One eval document for a group: per-round intervals over every (seed, task) pair.

    Args:
        runs: the group's runs (seeds); those without an eval.json are skipped.
        rounds: the rounds to summarise (default: all). A trial of hundreds of episodes needs
            an interval only for the few rounds a table shows.

    Returns:
        ``eval.json``-like summary with ``rounds`` (only the asked ones, each with its index),
        ``num_rounds``, ``round_names`` (what each round is: ``"step k"``, ``"episode k"`` or
        ``"episodes a–b"``), ``trial_episodes`` (episodes of a trial agent's trial) and the
        trial total per (seed, task) with its interval; ``None`` when no run has an eval.json.
    """
    docs = [r.evaluation for r in runs if r.evaluation is not None]
    if not docs:
        return None
    splits = {str(d.get("split", "test")) for d in docs}
    if len(splits) > 1:
        named = ", ".join(f"{r.path.name} ({r.evaluation.get('split', 'test')})" for r in runs if r.evaluation is not None)
        raise MetarlError(
            f"the eval.json files of {named} hold different task splits ({choices(splits)}) and cannot be pooled; "
            "evaluate every run on one split (metarl evaluate RUN --split test)"
        )
    num_rounds = min(len(d["rounds"]) for d in docs)
    per_task = [[float(np.mean(r)) for r in t["returns"][:num_rounds]] for d in docs for t in d["per_task"]]
    returns = np.asarray(per_task, dtype=np.float64)  # [seeds × tasks, rounds]
    has_success = docs[0]["per_task"][0]["successes"] is not None
    success = None
    if has_success:
        success = np.asarray(
            [[float(np.mean(r)) for r in t["successes"][:num_rounds]] for d in docs for t in d["per_task"]], dtype=np.float64
        )
    summary = []
    for k in range(num_rounds) if rounds is None else sorted(set(rounds)):
        row: dict[str, Any] = {
            "round": k,
            "return_mean": float(returns[:, k].mean()),
            "return_ci95": list(bootstrap_ci(returns[:, k], seed=k)),
            "success_rate": None if success is None else float(success[:, k].mean()),
            "success_ci95": None if success is None else list(bootstrap_ci(success[:, k], seed=1000 + k)),
        }
        summary.append(row)
    first = docs[0]
    adaptation = first.get("adaptation", "gradient")
    quotas = first["episodes_per_round"]
    blocks = adaptation == "trial" and isinstance(quotas, list)
    if blocks:
        # One trial split into blocks of episodes (evaluation.evaluate): its total is the sum of
        # every episode, not of the blocks' means.
        totals = [sum(float(np.sum(r)) for r in t["returns"][:num_rounds]) for d in docs for t in d["per_task"]]
        trial_totals = np.asarray(totals, dtype=np.float64)
    else:
        # One episode of each trial per round: the per-task mean of round k is the mean of episode
        # k over the task's trials, so the sum over rounds is the task's mean trial total.
        trial_totals = returns.sum(axis=1)
    return {
        **{k: first[k] for k in ("agent", "env", "preset", "split", "episodes_per_round")},
        "adaptation": adaptation,
        "run": ", ".join(str(r.path.name) for r in runs),
        "num_tasks": int(returns.shape[0]),
        "num_seeds": len(docs),
        "num_rounds": num_rounds,
        "round_names": _round_names(adaptation, num_rounds, quotas if blocks else None),
        "trial_episodes": int(sum(quotas[:num_rounds])) if blocks else num_rounds,
        "rounds": summary,
        "trial_total": float(trial_totals.mean()),
        "trial_total_ci95": list(bootstrap_ci(trial_totals, seed=7)),
    }


def _round_names(adaptation: str, num_rounds: int, blocks: Sequence[int] | None) -> list[str]:
    """What round ``k`` is: ``"step k"`` (gradient), ``"episode k+1"`` (trial) or
    ``"episodes a–b"`` (a trial split into blocks of episodes)."""
    if adaptation != "trial":
        return [f"step {k}" for k in range(num_rounds)]
    if blocks is None:
        return [f"episode {k + 1}" for k in range(num_rounds)]
    edges = np.cumsum([0, *blocks])
    return [
        f"episode {edges[k] + 1}" if blocks[k] == 1 else f"episodes {edges[k] + 1}–{edges[k + 1]}" for k in range(num_rounds)
    ]


#: Round columns of the gradient agents' table: every round up to this many (MAML reports 0-3
#: inner steps), else the first ones and the last.
MAX_STEP_COLUMNS = 6
#: Leading episode columns of the trial agents' table (then the last episode and the trial
#: total): trials run to hundreds of episodes (Duan et al. 2016's n = 500 bandits).
FIRST_EPISODE_COLUMNS = 3

#: What a cell's interval is (evaluation.bootstrap_ci over the pooled per-(seed, task) means).
INTERVAL_NOTE = "mean [95% bootstrap CI over seeds × tasks]"


def _round_columns(counts: Sequence[int], *, first: int) -> tuple[list[int], bool]:
    """The leading round indices a table shows as columns, and whether a "last round" column
    follows them (when some group has more than ``first + 1`` rounds)."""
    most = max(counts)
    if most <= first + 1:
        return list(range(most)), False
    return list(range(first)), True


def _cell(row: Mapping[str, Any]) -> str:
    cell = f"{row['return_mean']:.2f} [{row['return_ci95'][0]:.2f}, {row['return_ci95'][1]:.2f}]"
    if row["success_rate"] is not None:
        lo, hi = row["success_ci95"]
        cell += f"<br>success {100 * row['success_rate']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"
    return cell


def _kind_table(groups: Mapping[tuple[str, str, str, str], list[RunInfo]], *, adaptation: str) -> list[str]:
    """The Markdown lines of one table: a caption, the table, and a note of the rounds shown."""
    trial = adaptation == "trial"
    counts = {g: _num_rounds(rs) for g, rs in groups.items()}
    first = FIRST_EPISODE_COLUMNS if trial else MAX_STEP_COLUMNS - 1
    leading, has_last = _round_columns(list(counts.values()), first=first)
    docs: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for g, rs in groups.items():
        wanted = [k for k in leading if k < counts[g]] + ([counts[g] - 1] if has_last and counts[g] > first else [])
        doc = _pooled_eval(rs, rounds=wanted)
        if doc is not None:  # compare_table passes only groups with an eval.json
            docs[g] = doc
    # Column k is round k (episode k + 1 of a trial, or k inner steps); a group whose round k is
    # something else (a block of episodes) names it inside its cell.
    headers = _round_names(adaptation, len(leading), None)
    last_names = {d["round_names"][-1] for d in docs.values() if d["num_rounds"] > first}
    last_header = ""
    if has_last:
        last_header = next(iter(last_names)) if len(last_names) == 1 else ("last episode" if trial else "last step")
    header = ["agent", "env [preset]", "seeds × tasks", *headers, *([last_header] if has_last else [])]
    header += ["trial total", "paper"] if trial else ["paper"]
    lines = [f"**{'Trial' if trial else 'Gradient'} agents**: return per {'episode of a trial' if trial else 'inner gradient step'}, {INTERVAL_NOTE}", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    shared = Counter((agent, env, preset) for agent, env, preset, _ in docs)
    for (agent, env, preset, config_name), doc in sorted(docs.items()):
        by_round = {r["round"]: r for r in doc["rounds"]}
        # Two experiments of one agent, env and preset are told apart by their config names.
        label = f"{agent} ({config_name})" if shared[(agent, env, preset)] > 1 else agent
        # Results on the training split are no held-out results: say so beside the env.
        split = "" if doc["split"] == "test" else f" ({doc['split']} tasks)"
        cells = [label, f"{env} [{preset}]{split}", f"{doc['num_seeds']} × {doc['num_tasks'] // doc['num_seeds']}"]
        for k, name in zip(leading, headers):
            if k not in by_round:
                cells.append("")
                continue
            own = doc["round_names"][k]
            cells.append(_cell(by_round[k]) if own == name else f"{own}: {_cell(by_round[k])}")
        if has_last:
            k = doc["num_rounds"] - 1
            if doc["num_rounds"] <= first:
                cells.append("")  # its last round is already a leading column
            else:
                own = doc["round_names"][k]
                cells.append(_cell(by_round[k]) if own == last_header else f"{own}: {_cell(by_round[k])}")
        if trial:
            lo, hi = doc["trial_total_ci95"]
            cells.append(f"{doc['trial_total']:.2f} [{lo:.2f}, {hi:.2f}]")
        cells.append(paper_numbers(agent, env, preset))
        lines.append("| " + " | ".join(cells) + " |")
    most = max(counts.values())
    if trial:
        shown = f"episodes 1–{len(leading)} and the last one" if has_last else ("episode 1" if most == 1 else f"episodes 1–{most}")
        note = (
            f"Episode k: the k-th episode of a trial, the agent keeping its memory across episodes; shown: {shown} "
            f"(trials of {_count_text(d['trial_episodes'] for d in docs.values())} episodes). Trial total: the sum of a trial's episode returns, "
            "Duan et al. 2016's metric (Tables 1–2)."
        )
    else:
        shown = f"steps 0–{leading[-1]} and the last one" if has_last else ("step 0" if most == 1 else f"steps 0–{most - 1}")
        note = (
            f"Step k: the policy after k inner gradient steps on the task (step 0: before adaptation); shown: {shown} "
            f"(of {_count_text(counts.values())} rounds)."
        )
    lines += ["", note]
    return lines


def _count_text(counts: Any) -> str:
    """``"4, 10 or 100"``."""
    values = [str(v) for v in sorted(set(int(c) for c in counts))]
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"


def compare_table(run_dirs: Sequence[str | Path]) -> str:
    """Markdown tables of agents × rounds with 95% intervals, the paper's numbers beside ours.

    Runs of one (agent, env, preset, config name) are seeds and are pooled: every (seed, task) pair is one
    sample of the interval. Gradient agents (round k = k inner steps) and trial agents (round k =
    episode k + 1 of a trial) get a table each, with a caption saying what the cells are and a
    note saying which rounds are shown: every step up to :data:`MAX_STEP_COLUMNS`, else the
    first ones and the last; for trials the first :data:`FIRST_EPISODE_COLUMNS` episodes, the
    last one and the trial total.
    """
    runs = [load_run(p) for p in run_dirs]
    groups = {g: rs for g, rs in group_runs(runs).items() if _num_rounds(rs) > 0}
    if not groups:
        raise MetarlError("none of the given runs has an eval.json; run 'metarl evaluate RUN_DIR' first")
    kinds: dict[str, dict[tuple[str, str, str, str], list[RunInfo]]] = defaultdict(dict)
    for g, rs in groups.items():
        doc = next(r.evaluation for r in rs if r.evaluation is not None)
        kinds["trial" if doc.get("adaptation", "gradient") == "trial" else "gradient"][g] = rs
    lines: list[str] = []
    for kind in ("gradient", "trial"):
        if kind in kinds:
            lines += ([""] if lines else []) + _kind_table(kinds[kind], adaptation=kind)
    return "\n".join(lines)


#: The belief trajectories ``metarl evaluate`` writes for agents with a ``beliefs`` method.
BELIEF_NAME = "belief.json"
#: Grid snapshots per task in a belief plot: the prior, then the end of the first episodes.
MAX_SNAPSHOTS = 6

_GOAL = re.compile(r"goal=\(([^()]*)\)")


@dataclasses.dataclass(frozen=True)
class BeliefSeries:
    """One trial's belief, ready to draw (from one entry of ``belief.json``'s ``trials``).

    Attributes:
        task: the task's string.
        mean: ``[T, L]`` posterior mean the policy acted on at each step (``[0]``: the prior).
        std: ``[T, L]`` posterior standard deviation, ``exp(logvar / 2)``.
        episode_starts: step index of each episode's first step.
        episode_returns: undiscounted return of each episode.
        snapshots: ``(step, label)`` of each grid heatmap: the prior, the belief after each
            episode (at the next episode's first step) and the last step; empty without
            ``cell_probabilities``.
        cells: ``[K, X, Y]`` p(goal at cell ``(x, y)``) at the snapshots, or ``None``.
        positions: ``[K, 2]`` the agent's cell at the snapshots (its observation), or ``None``.
        goal: the true goal cell parsed from the task string, or ``None``.
    """

    task: str
    mean: np.ndarray
    std: np.ndarray
    episode_starts: list[int]
    episode_returns: list[float]
    snapshots: list[tuple[int, str]]
    cells: np.ndarray | None
    positions: np.ndarray | None
    goal: tuple[int, ...] | None


def load_belief(path: str | Path) -> dict[str, Any]:
    """Read a ``belief.json``; one-line error when it is not one."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise MetarlError(f"{str(path)!r} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    trials = doc.get("trials") if isinstance(doc, dict) else None
    if not isinstance(trials, list) or not trials:
        raise MetarlError(f"{str(path)!r} is not a belief file: it has no non-empty 'trials' list")
    for i, trial in enumerate(trials):
        missing = [k for k in ("task", "mean", "logvar", "episode_starts") if k not in trial]
        if missing:
            raise MetarlError(f"{str(path)!r}: trial {i} lacks {choices(missing)}; a trial needs 'episode_starts', 'logvar', 'mean', 'task'")
        if np.shape(trial["mean"]) != np.shape(trial["logvar"]) or np.ndim(trial["mean"]) != 2:
            raise MetarlError(
                f"{str(path)!r}: trial {i} has mean {np.shape(trial['mean'])} and logvar {np.shape(trial['logvar'])}; both must be [steps, latent_dim]"
            )
    return doc


def _parse_goal(task: str, shape: Sequence[int]) -> tuple[int, ...] | None:
    """The goal cell in a task string such as ``gridworld[varibad]/test#9(goal=(1, 4))``
    (envs/gridworld.py), when it is a cell of a grid of ``shape``."""
    match = _GOAL.search(task)
    if match is None:
        return None
    try:
        values = [float(v) for v in match.group(1).split(",")]
    except ValueError:
        return None
    if len(values) != len(shape) or any(v != round(v) or not 0 <= v < n for v, n in zip(values, shape)):
        return None
    return tuple(int(v) for v in values)


def belief_series(trial: Mapping[str, Any], *, grid_shape: Sequence[int] | None = None) -> BeliefSeries:
    """The arrays a belief plot draws for one trial of ``belief.json``.

    Args:
        trial: one entry of ``trials`` (see ``VariBAD.beliefs``).
        grid_shape: the file's ``grid_shape``; with a 2-D grid and ``cell_probabilities`` in
            the trial, the snapshots hold p(goal at cell), indexed row-major with the first
            coordinate slowest (the decoder's cell index ``x * Y + y``).
    """
    mean = np.asarray(trial["mean"], dtype=np.float64)
    std = np.exp(0.5 * np.asarray(trial["logvar"], dtype=np.float64))
    steps = mean.shape[0]
    starts = [int(s) for s in trial["episode_starts"]]
    cells = positions = goal = None
    snapshots: list[tuple[int, str]] = []
    probabilities = trial.get("cell_probabilities")
    if probabilities is not None and grid_shape is not None and len(grid_shape) == 2:
        shape = (int(grid_shape[0]), int(grid_shape[1]))
        # mean[t] is the posterior after t transitions, so the belief at the end of episode e is
        # the one at the next episode's first step; the last episode ends at the last recorded step.
        snapshots = [(0, "t=0 (prior)")]
        ends = [(s, f"t={s} (after ep {e + 1})") for e, s in enumerate(starts[1:])]
        snapshots += ends[: MAX_SNAPSHOTS - 2] + [(steps - 1, f"t={steps - 1} (last step)")]
        snapshots = list(dict(snapshots).items())  # a one-step trial has t=0 only once
        probs = np.asarray(probabilities, dtype=np.float64)
        cells = np.stack([probs[t].reshape(shape) for t, _ in snapshots])
        observations = trial.get("observations")
        if observations is not None and np.shape(observations)[1] >= 2:
            positions = np.asarray([observations[t][:2] for t, _ in snapshots], dtype=np.float64)
        goal = _parse_goal(str(trial["task"]), shape)
    return BeliefSeries(
        task=str(trial["task"]),
        mean=mean,
        std=std,
        episode_starts=starts,
        episode_returns=[float(r) for r in trial.get("episode_returns", [])],
        snapshots=snapshots,
        cells=cells,
        positions=positions,
        goal=goal,
    )


def plot_belief(path: str | Path, doc: Mapping[str, Any]) -> dict[str, Any]:
    """Plot the belief over time on a few tasks (as VariBAD, Zintgraf et al. 2020 §5.1, shows it).

    One row per trial: the posterior mean of each latent dimension over the trial's steps with
    a ±1 std band, dashed lines at episode starts, each episode's return written above it; with
    ``cell_probabilities`` (gridworld), a strip of p(goal at cell) heatmaps at the
    :attr:`BeliefSeries.snapshots` with the true goal (star) and the agent (circle).

    Args:
        path: the PNG to write.
        doc: a ``belief.json`` document (see :func:`load_belief`).

    Returns:
        ``{"path", "rows", "line_panels", "heatmap_panels", "snapshots"}``: the written file, the
        number of each kind of panel and the snapshot steps of each row.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    series = [belief_series(t, grid_shape=doc.get("grid_shape")) for t in doc["trials"]]
    rows = len(series)
    strip = max(len(s.snapshots) for s in series)
    latent_dim = series[0].mean.shape[1]
    width = 7.5 + (1.6 * strip + 0.8 if strip else 0)
    fig = plt.figure(figsize=(width, 2.7 * rows + 0.9), layout="constrained")
    grid = fig.add_gridspec(rows, 1 + strip, width_ratios=[4.5] + [1] * strip)
    colours = plt.get_cmap("tab10").colors
    heatmaps = 0
    image = None
    for i, s in enumerate(series):
        ax = fig.add_subplot(grid[i, 0])
        t = np.arange(s.mean.shape[0])
        for d in range(latent_dim):
            colour = colours[d % len(colours)]
            ax.plot(t, s.mean[:, d], color=colour, lw=1.2)
            ax.fill_between(t, s.mean[:, d] - s.std[:, d], s.mean[:, d] + s.std[:, d], color=colour, alpha=0.18, lw=0)
        for start in s.episode_starts[1:]:
            ax.axvline(start - 0.5, color="0.3", ls="--", lw=0.8)
        bounds = [*s.episode_starts, len(t)]
        for e, ret in enumerate(s.episode_returns[: len(s.episode_starts)]):
            ax.text((bounds[e] + bounds[e + 1] - 1) / 2, 1.0, f"R={ret:.3g}", transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=7, color="0.25")
        ax.set_xlim(-0.5, len(t) - 0.5)
        ax.set_title(s.task, fontsize=9, loc="left", pad=12)
        ax.set_ylabel("posterior mean ± 1 std")
        ax.grid(alpha=0.3)
        if i == rows - 1:
            ax.set_xlabel("step within the trial (episode starts dashed)")
        row_axes = []
        for j, (_, label) in enumerate(s.snapshots if s.cells is not None else []):
            hx = fig.add_subplot(grid[i, 1 + j])
            # cells[j] is [x, y]; transposed so that x runs right and y (action "up") runs up.
            image = hx.imshow(s.cells[j].T, origin="lower", vmin=0.0, vmax=1.0, cmap="viridis")
            for edge in range(1, max(s.cells.shape[1:])):
                hx.axvline(edge - 0.5, color="white", lw=0.3, alpha=0.5)
                hx.axhline(edge - 0.5, color="white", lw=0.3, alpha=0.5)
            if s.goal is not None:
                hx.plot(*s.goal, marker="*", ms=11, color="red", mec="white", mew=0.8, ls="")
            if s.positions is not None:
                hx.plot(*s.positions[j], marker="o", ms=7, mfc="none", mec="white", mew=1.5, ls="")
            hx.set_title(label, fontsize=7)
            if i == rows - 1 and j == 0:
                # Cell coordinates once, on the bottom-left grid: tick labels on every grid
                # would cost more layout time than the rest of the figure.
                hx.set_xticks(range(s.cells.shape[1]))
                hx.set_yticks(range(s.cells.shape[2]))
                hx.tick_params(labelsize=6, length=2)
                hx.set_xlabel("x", fontsize=8)
                hx.set_ylabel("y", fontsize=8)
            else:
                hx.set_xticks([])
                hx.set_yticks([])
            row_axes.append(hx)
            heatmaps += 1
        if row_axes and image is not None:
            fig.colorbar(image, ax=row_axes, shrink=0.8, pad=0.02).set_label("p(goal at cell)", fontsize=7)
    handles = [Line2D([], [], color=colours[d % len(colours)], lw=1.2, label=f"latent dim {d}") for d in range(latent_dim)]
    handles += [Patch(color="0.5", alpha=0.3, label="± 1 std"), Line2D([], [], color="0.3", ls="--", lw=0.8, label="episode start")]
    if heatmaps:
        handles += [
            Line2D([], [], marker="*", ms=10, color="red", mec="white", ls="", label="true goal"),
            Line2D([], [], marker="o", ms=7, mfc="none", mec="0.2", mew=1.5, ls="", label="agent"),
        ]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 10), fontsize=8)
    mode = "deterministic" if doc.get("deterministic", True) else "stochastic"
    fig.suptitle(f"{doc.get('agent', 'agent')}: belief over one trial per evaluation task ({mode} policy)", fontsize=11)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {
        "path": path,
        "rows": rows,
        "line_panels": rows,
        "heatmap_panels": heatmaps,
        "snapshots": [[step for step, _ in s.snapshots] for s in series],
    }


def main_plot(args: argparse.Namespace) -> list[Path]:
    """``metarl plot RUN_DIR... [--out DIR] [--aggregate mean|iqm]``: PNGs of learning curves,
    adaptation curves (one set per env and preset, suffixed ``_<env>-<preset>`` when the runs
    span several) and, for each run with a ``belief.json``, its belief plot (``belief.png``,
    or ``belief_<run>.png`` when several runs have one); returns the written paths."""
    from metarl.evaluation import plot_adaptation

    runs = [load_run(p) for p in args.run_dirs]
    how = getattr(args, "aggregate", "mean") or "mean"
    if how not in ("mean", "iqm"):
        raise MetarlError(f"unknown aggregate {how!r}; valid: 'iqm', 'mean'")
    groups = group_runs(runs)
    out = Path(args.out) if getattr(args, "out", None) else runs[0].path / "plots"
    out.mkdir(parents=True, exist_ok=True)
    # One set of figures per task distribution: returns of different envs share no scale.
    by_env: dict[tuple[str, str], dict[tuple[str, str, str, str], list[RunInfo]]] = defaultdict(dict)
    for key, members in groups.items():
        by_env[(key[1], key[2])][key] = members
    written: list[Path] = []
    for (env, preset), env_groups in sorted(by_env.items()):
        suffix = "" if len(by_env) == 1 else f"_{env}-{preset}"
        written += _learning_curves(env_groups, out, how, suffix=suffix)
        pooled = [d for d in (_pooled_eval(rs) for rs in env_groups.values()) if d is not None]
        if pooled:
            written.append(plot_adaptation(out / f"adaptation{suffix}.png", pooled))
    with_belief = [run for run in runs if (run.path / BELIEF_NAME).is_file()]
    names: set[str] = set()
    for run in with_belief:
        name = "belief.png" if len(with_belief) == 1 else f"belief_{run.path.name}.png"
        while name in names:  # runs from different parents may share a folder name
            name = f"{Path(name).stem}_{len(names)}.png"
        names.add(name)
        written.append(plot_belief(out / name, load_belief(run.path / BELIEF_NAME))["path"])
    return written


def main_compare(args: argparse.Namespace) -> str:
    """``metarl compare RUN_DIR... [--out FILE]``: the Markdown comparison table."""
    table = compare_table(args.run_dirs)
    if getattr(args, "out", None):
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(table + "\n")
    return table
