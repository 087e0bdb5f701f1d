"""The meta-training loop (design §3): sample tasks, let the agent learn, evaluate, log, checkpoint.

One root seed derives every generator: the train-task stream ``numpy_rng(seed, "tasks")``, the
fixed held-out tasks ``numpy_rng(seed, "test-tasks")``, the training sampler
``derive_seed(seed, "sampler")`` and a fresh evaluation sampler per evaluation,
``derive_seed(seed, "eval", iteration)``. Evaluation therefore never moves the training sampler's
generators, and a checkpoint (taken after the iteration's evaluation) holds every state the run
needs to continue bit for bit: agent, sampler, task generator, counters and the best metric.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import metarl
from metarl.checkpoint import CheckpointDir
from metarl.config import Config
from metarl.errors import CheckpointError, ConfigError, choices
from metarl.logger import RunLogger
from metarl.seeding import derive_seed, numpy_rng
from metarl.types import Agent, Task, TaskDistribution

__all__ = [
    "CHECKPOINT_DIR",
    "EVAL_NAME",
    "TrainResult",
    "Trainer",
    "default_best_metric",
    "evaluate_agent",
    "eval_tasks",
    "make_sampler",
    "resolve_device",
    "set_torch_threads",
    "validation_tasks",
    "write_report",
]

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
EVAL_NAME = "eval.json"


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without CUDA is an error.

    Raises:
        ConfigError: unknown device, or ``cuda`` on a machine without CUDA.
    """
    valid = ("auto", "cpu", "cuda")
    if device not in valid:
        raise ConfigError(f"run.device: invalid value {device!r}; valid choices: {choices(valid)}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "run.device 'cuda' requested but CUDA is not available on this machine; valid choices here: 'auto', 'cpu'"
        )
    return torch.device(device)


def set_torch_threads(threads: int | None) -> int:
    """Set torch's intra-op threads: ``threads``; else the ``OMP_NUM_THREADS`` environment
    variable when it names a positive count (the usual way to share a machine between jobs:
    several jobs each spinning threads on every core slow each other down many times over);
    else the usable CPU cores capped at 8 (small networks gain nothing from more and would
    starve the env workers). Returns the number set."""
    if threads is None:
        try:
            threads = int(os.environ.get("OMP_NUM_THREADS", ""))
        except ValueError:
            threads = None
        if threads is not None and threads < 1:
            threads = None
    if threads is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 1
        threads = max(1, min(cores, 8))
    torch.set_num_threads(int(threads))
    return int(threads)


def make_sampler(config: Config, dist: TaskDistribution, *, seed: int, device: torch.device) -> Any:
    """A :class:`metarl.sampler.Sampler` for ``dist`` with the config's sampler settings."""
    from metarl.sampler import Sampler

    return Sampler(
        dist,
        seed=seed,
        device=device,
        max_slots=config.sampler.max_slots,
        env_kwargs=dict(config.sampler.env_kwargs),
    )


def eval_tasks(
    config: Config, dist: TaskDistribution, *, split: str = "test", num_tasks: int | None = None
) -> list[Task]:
    """The run's evaluation tasks: the same draw at every evaluation of a run and in
    ``metarl evaluate`` (``numpy_rng(seed, "test-tasks")`` for the test split)."""
    n = config.evaluation.num_tasks if num_tasks is None else num_tasks
    stream = "test-tasks" if split == "test" else f"eval-{split}-tasks"
    return dist.sample(n, split=split, rng=numpy_rng(config.run.seed, stream))


def validation_tasks(config: Config, dist: TaskDistribution) -> list[Task]:
    """The run's validation tasks: ``evaluation.validation_tasks`` tasks of the train split from
    their own stream (``numpy_rng(seed, "valid-tasks")``), the same at every evaluation."""
    n = config.evaluation.validation_tasks
    return dist.sample(n, split="train", rng=numpy_rng(config.run.seed, "valid-tasks")) if n else []


def evaluate_agent(
    config: Config,
    *,
    agent: Agent,
    dist: TaskDistribution,
    tasks: Sequence[Task],
    iteration: int,
    device: torch.device,
    rounds: int | None = None,
    episodes_per_round: int | None = None,
    deterministic: bool | None = None,
) -> Any:
    """Run :func:`metarl.evaluation.evaluate` with a fresh sampler and fresh evaluation actions,
    both seeded by ``iteration``; ``rounds``, ``episodes_per_round`` and ``deterministic``
    default to the config's ``evaluation`` section.

    Returns:
        The :class:`metarl.evaluation.EvalReport`.
    """
    from metarl.evaluation import evaluate

    ev = config.evaluation
    sampler = make_sampler(
        config, dist, seed=derive_seed(config.run.seed, "eval", iteration), device=device
    )
    # Actions from a stream keyed by the iteration too: the evaluation at the end of training
    # and ``metarl evaluate`` of the same checkpoint give the same numbers.
    agent.seed_evaluation(derive_seed(config.run.seed, "eval-actions", iteration))
    try:
        return evaluate(
            agent,
            sampler,
            list(tasks),
            rounds=ev.rounds if rounds is None else rounds,
            episodes_per_round=ev.episodes_per_round
            if episodes_per_round is None
            else episodes_per_round,
            deterministic=ev.deterministic if deterministic is None else bool(deterministic),
        )
    finally:
        sampler.close()


def write_report(
    report: Any, config: Config, *, path: str | Path, dist: TaskDistribution, split: str = "test"
) -> tuple[Path, Path]:
    """Write ``eval.json`` to ``path`` and the adaptation plot next to it (same stem, ``.png``).

    Returns:
        ``(json_path, png_path)``.
    """
    from metarl.evaluation import plot_adaptation, write_eval

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = report.to_dict(
        run=config.run.name,
        agent=config.agent.name,
        env=config.env.name,
        preset=config.env.preset if config.env.preset is not None else dist.preset,
        split=split,
        seed=config.run.seed,
    )
    write_eval(path, data)
    png = path.with_suffix(".png")
    plot_adaptation(png, data)
    return path, png


def default_best_metric(keys: Sequence[str]) -> str | None:
    """``meta_train/return_post`` when present, else the first ``meta_train/return*`` key."""
    if "meta_train/return_post" in keys:
        return "meta_train/return_post"
    candidates = sorted(k for k in keys if k.startswith("meta_train/return"))
    return candidates[0] if candidates else None


@dataclasses.dataclass
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    iterations: int
    env_steps: int
    report: Any
    eval_path: Path
    plot_path: Path
    best_metric: str | None
    best_value: float | None
    stopped_early: str | None = None
    """``"time limit"`` or ``"SIGTERM"`` when the run stopped before ``run.iterations``."""


class _StopOnSigterm:
    """While active, a SIGTERM sets :attr:`received` instead of killing the process, so that the
    training loop can finish its iteration and checkpoint it (main thread only; elsewhere a
    no-op)."""

    def __init__(self) -> None:
        self.received = False
        self._installed = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = True

    def __enter__(self) -> _StopOnSigterm:
        if threading.current_thread() is threading.main_thread():
            # signal.signal returns None for a handler installed outside Python; restoring
            # None is refused, so that case restores the default.
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            previous = signal.SIG_DFL if self._previous is None else self._previous
            signal.signal(signal.SIGTERM, previous)
            self._installed = False


class Trainer:
    """The meta-training loop of one run.

    Args:
        config: the validated run config.
        dist: the task distribution.
        agent: the meta-learner, built for ``dist`` on ``device``.
        sampler: the training sampler (seed ``derive_seed(config.run.seed, "sampler")``).
        run_dir: where metrics, checkpoints and the evaluation go (must exist).
        device: the learner device.
        progress: show a tqdm progress bar; ``None``: only on a terminal.
        time_limit_minutes: this invocation's wall-clock budget; ``None``: the config's
            ``run.time_limit_minutes`` (see there). Not written to the run's config.
    """

    def __init__(
        self,
        config: Config,
        dist: TaskDistribution,
        *,
        agent: Agent,
        sampler: Any,
        run_dir: str | Path,
        device: torch.device,
        progress: bool | None = None,
        time_limit_minutes: float | None = None,
    ):
        if time_limit_minutes is not None and not time_limit_minutes > 0:
            raise ConfigError(f"time_limit_minutes must be positive, got {time_limit_minutes!r}")
        self.config = config
        self.dist = dist
        self.agent = agent
        self.sampler = sampler
        self.run_dir = Path(run_dir)
        self.device = device
        self.progress = progress
        self.checkpoints = CheckpointDir(
            self.run_dir / CHECKPOINT_DIR, keep=config.run.keep_checkpoints
        )
        self.task_rng: np.random.Generator = numpy_rng(config.run.seed, "tasks")
        self.iteration = 0
        self.env_steps = 0
        self.best_metric: str | None = config.run.best_metric
        self.best_value: float | None = None
        self.best_iteration: int | None = None
        self._resumed_from: int | None = None
        self.stopped_early: str | None = None
        self.time_limit_minutes = time_limit_minutes

    # ----------------------------------------------------------------------------------------
    # State

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs: agent, sampler, task generator, counters, config."""
        return {
            "metarl_version": metarl.__version__,
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "best": {
                "metric": self.best_metric,
                "value": self.best_value,
                "iteration": self.best_iteration,
            },
            "rng": {"tasks": self.task_rng.bit_generator.state},
            "agent": self.agent.state_dict(),
            "sampler": self.sampler.state_dict(),
            "config": self.config.to_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a checkpoint written by :meth:`state_dict`.

        Raises:
            CheckpointError: the checkpoint lacks a required entry.
        """
        missing = [
            k
            for k in ("iteration", "env_steps", "best", "rng", "agent", "sampler")
            if k not in state
        ]
        if missing:
            raise CheckpointError(
                f"checkpoint lacks {choices(missing)}; it was not written by the metarl trainer"
            )
        self.agent.load_state_dict(state["agent"])
        self.sampler.load_state_dict(state["sampler"])
        self.task_rng.bit_generator.state = state["rng"]["tasks"]
        self.iteration = int(state["iteration"])
        self.env_steps = int(state["env_steps"])
        best = state["best"]
        self.best_metric = best.get("metric") or self.config.run.best_metric
        self.best_value = best.get("value")
        self.best_iteration = best.get("iteration")
        self._resumed_from = self.iteration

    # ----------------------------------------------------------------------------------------
    # The loop

    def _eval_due(self, iteration: int) -> bool:
        return (
            iteration % self.config.evaluation.every == 0 or iteration == self.config.run.iterations
        )

    def _checkpoint_due(self, iteration: int) -> bool:
        return (
            iteration % self.config.run.checkpoint_every == 0
            or iteration == self.config.run.iterations
        )

    def _update_best(self, metrics: Mapping[str, float]) -> bool:
        """Track the best metric; returns whether this iteration is the new best."""
        if self.best_metric is None:
            self.best_metric = default_best_metric(list(metrics))
            if self.best_metric is None:
                return False
        value = metrics.get(self.best_metric)
        if value is None or not np.isfinite(value):
            return False
        better = (
            self.best_value is None
            or (self.config.run.best_mode == "max" and value > self.best_value)
            or (self.config.run.best_mode == "min" and value < self.best_value)
        )
        if better:
            self.best_value = float(value)
            self.best_iteration = self.iteration
        return better

    def _check_best_metric(self, metrics: Mapping[str, float], evaluated: bool) -> None:
        """A configured best metric must be one the run reports (meta_valid/* ones once it has
        evaluated)."""
        name = self.config.run.best_metric
        if name is None or name in metrics:
            return
        if name.startswith("meta_valid/") and not evaluated:
            return
        raise ConfigError(
            f"run.best_metric {name!r} is not a metric of this run; valid metrics: {choices(metrics)}"
        )

    def _stop(self, reason: str) -> None:
        self.stopped_early = reason
        logger.info(
            "stopped at iteration %d/%d (%s); continue with metarl train --resume %s",
            self.iteration,
            self.config.run.iterations,
            reason,
            self.run_dir,
        )

    def run(self) -> TrainResult:
        """Train to ``config.run.iterations``, evaluating, logging and checkpointing on the way;
        then write ``eval.json`` and the adaptation plot.

        Returns:
            The :class:`TrainResult` with the final evaluation report.
        """
        from tqdm.auto import tqdm

        cfg = self.config
        test_tasks = eval_tasks(cfg, self.dist, split="test")
        valid_tasks = validation_tasks(cfg, self.dist)
        report = None
        checked_best = False
        limit = (
            cfg.run.time_limit_minutes
            if self.time_limit_minutes is None
            else self.time_limit_minutes
        )
        deadline = None if limit is None else time.monotonic() + 60.0 * limit
        first_iteration = saved_at = self.iteration  # a resumed run's checkpoint is saved
        report_at: int | None = None

        def stop_reason(sigterm: _StopOnSigterm) -> str | None:
            if sigterm.received:
                return "SIGTERM"
            if deadline is not None and time.monotonic() >= deadline:
                return "time limit"
            return None

        with (
            _StopOnSigterm() as sigterm,
            RunLogger(self.run_dir, resume_iteration=self._resumed_from) as run_log,
            tqdm(
                total=cfg.run.iterations,
                initial=self.iteration,
                desc=cfg.run.name,
                unit="it",
                dynamic_ncols=True,
                disable=None if self.progress is None else not self.progress,
            ) as bar,
        ):
            if self._resumed_from is not None:
                logger.info(
                    "resumed at iteration %d (%d env steps)", self.iteration, self.env_steps
                )
            while self.iteration < cfg.run.iterations:
                # A stop that came after the last iteration's own check (during its evaluation,
                # logging or checkpoint) ends the run here, with that iteration checkpointed. A
                # time limit lets every invocation run at least one iteration.
                reason = stop_reason(sigterm)
                if reason is not None and (reason == "SIGTERM" or self.iteration > first_iteration):
                    if self.iteration != saved_at:
                        self.checkpoints.save(self.iteration, self.state_dict(), best=False)
                        saved_at = self.iteration
                    self._stop(reason)
                    break
                tasks = self.dist.sample(cfg.run.num_tasks, split="train", rng=self.task_rng)
                self.sampler.pop_stats()  # drop anything collected outside the step
                steps_before = self.sampler.total_env_steps
                start = time.perf_counter()
                stats = self.agent.meta_train_step(self.sampler, tasks)
                elapsed = time.perf_counter() - start
                sample_stats = self.sampler.pop_stats()
                self.iteration += 1
                self.env_steps += int(self.sampler.total_env_steps - steps_before)
                # Out of time or told to stop: this iteration is the last of this invocation, so
                # it is evaluated and checkpointed like the run's final one.
                reason = stop_reason(sigterm) if self.iteration < cfg.run.iterations else None
                stopping = reason is not None
                # An evaluation off the schedule, made only because the run stops here, does not
                # choose best.pt: the best checkpoint stays what an uninterrupted run would keep.
                off_schedule = stopping and not self._eval_due(self.iteration)

                metrics: dict[str, float] = {k: float(v) for k, v in stats.items()}
                metrics.update({k: float(v) for k, v in sample_stats.items()})
                metrics["time/iteration_s"] = elapsed
                # The sampler's time is spent inside meta_train_step; the rest is learning.
                metrics["time/learn_s"] = max(
                    elapsed - float(sample_stats.get("time/sample_s", 0.0)), 0.0
                )
                evaluated = stopping or self._eval_due(self.iteration)
                if evaluated:
                    report_at = self.iteration
                    eval_start = time.perf_counter()
                    # Validation first, so ``report`` ends as the test report (the final one).
                    for prefix, split_tasks in (("meta_valid", valid_tasks), ("meta_test", test_tasks)):
                        if not split_tasks:
                            continue
                        report = evaluate_agent(
                            cfg,
                            agent=self.agent,
                            dist=self.dist,
                            tasks=split_tasks,
                            iteration=self.iteration,
                            device=self.device,
                        )
                        metrics.update({k: float(v) for k, v in report.metrics(prefix).items()})
                    metrics["time/eval_s"] = time.perf_counter() - eval_start
                if not checked_best:
                    self._check_best_metric(metrics, evaluated)
                    checked_best = (
                        evaluated
                        or cfg.run.best_metric is None
                        or not cfg.run.best_metric.startswith("meta_valid/")
                    )
                run_log.log(self.iteration, self.env_steps, metrics)
                is_best = self._update_best(
                    {k: v for k, v in metrics.items() if not k.startswith(_EVAL_PREFIXES)}
                    if off_schedule
                    else metrics
                )

                if stopping or self._checkpoint_due(self.iteration):
                    state = self.state_dict()
                    self.checkpoints.save(self.iteration, state, best=is_best)
                    saved_at = self.iteration
                elif is_best:
                    self.checkpoints.save_best(self.state_dict())

                if self.iteration % cfg.run.log_every == 0 or evaluated:
                    logger.info(
                        "iteration %d/%d env_steps %d %s",
                        self.iteration,
                        cfg.run.iterations,
                        self.env_steps,
                        _brief(metrics, self.best_metric),
                    )
                bar.set_postfix_str(_postfix(metrics, self.best_metric), refresh=False)
                bar.update(1)
                if stopping:
                    assert reason is not None
                    self._stop(reason)
                    break

        if report is None or (self.stopped_early is not None and report_at != self.iteration):
            # Resumed after the last iteration had been checkpointed, or stopped after an
            # iteration that was not evaluated: the evaluation is a deterministic function of
            # the checkpoint, so run it.
            report = evaluate_agent(
                cfg,
                agent=self.agent,
                dist=self.dist,
                tasks=test_tasks,
                iteration=self.iteration,
                device=self.device,
            )
        eval_path, plot_path = write_report(
            report, cfg, path=self.run_dir / EVAL_NAME, dist=self.dist
        )
        logger.info("wrote %s and %s", eval_path, plot_path)
        return TrainResult(
            run_dir=self.run_dir,
            iterations=self.iteration,
            env_steps=self.env_steps,
            report=report,
            eval_path=eval_path,
            plot_path=plot_path,
            best_metric=self.best_metric,
            best_value=self.best_value,
            stopped_early=self.stopped_early,
        )


_EVAL_PREFIXES = ("meta_valid/", "meta_test/")


def _brief(metrics: Mapping[str, float], best: str | None) -> str:
    """A few headline metrics for the text log: returns before/after adaptation, the first and
    last evaluation round, throughput."""
    rounds = sorted(
        (k for k in metrics if k.startswith("meta_test/return_round_")),
        key=lambda k: int(k.rsplit("_", 1)[1]),
    )
    successes = sorted(
        (k for k in metrics if k.startswith("meta_test/success_round_")),
        key=lambda k: int(k.rsplit("_", 1)[1]),
    )
    keys = [
        best,
        "meta_train/return_pre",
        "meta_train/return_post",
        *rounds[:1],
        *rounds[1:][-1:],
        *successes[-1:],
        "time/env_steps_per_s",
    ]
    shown = [k for k in dict.fromkeys(keys) if k is not None and k in metrics]
    return " ".join(f"{k}={metrics[k]:.4g}" for k in shown)


def _postfix(metrics: Mapping[str, float], best: str | None) -> str:
    parts = []
    if "time/env_steps_per_s" in metrics:
        parts.append(f"steps/s={metrics['time/env_steps_per_s']:,.0f}")
    for key in dict.fromkeys(
        [k for k in (best, "meta_train/return_pre", "meta_train/return_post") if k]
    ):
        if key in metrics:
            parts.append(f"{key.split('/', 1)[1]}={metrics[key]:.4g}")
    return " ".join(parts)
