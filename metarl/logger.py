"""Metrics to ``metrics.csv`` and TensorBoard, and the run's text log (design §4).

``metrics.csv`` has one row per iteration. Its columns are ``iteration``, ``env_steps``, then the
metric keys (``<phase>/<name>``) sorted, so the header never depends on the order metrics first
appear; when a new key shows up (the first evaluation, say) the file is rewritten atomically
with the wider header and blanks in the earlier rows. Floats are written with ``repr`` so they
read back bit for bit.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from metarl.checkpoint import atomic_write

__all__ = ["LOG_NAME", "METRICS_NAME", "MetricsCSV", "RunLogger", "attach_file_log", "read_metrics"]

METRICS_NAME = "metrics.csv"
LOG_NAME = "train.log"
_FIXED = ("iteration", "env_steps")

logger = logging.getLogger(__name__)


def _format(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def read_metrics(path: str | Path) -> list[dict[str, str]]:
    """Rows of a ``metrics.csv`` as dicts of strings (blank cells are ``""``)."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


class MetricsCSV:
    """``metrics.csv`` with a stable, sorted header.

    Args:
        path: the file.
        resume_iteration: on resume, keep the rows up to this iteration (a killed run may have
            logged iterations after its last checkpoint) and append after them.
    """

    def __init__(self, path: str | Path, *, resume_iteration: int | None = None):
        self.path = Path(path)
        self.keys: list[str] = []
        self.rows: list[dict[str, str]] = []
        if resume_iteration is not None and self.path.is_file():
            for row in read_metrics(self.path):
                if row.get("iteration", "").isdigit() and int(row["iteration"]) <= resume_iteration:
                    self.rows.append(row)
            with open(self.path, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), [])
            self.keys = [k for k in header if k not in _FIXED]
            self._rewrite()

    @property
    def header(self) -> list[str]:
        return [*_FIXED, *self.keys]

    def _rewrite(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.header, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write(self.path, buf.getvalue().encode("utf-8"))

    def write(self, iteration: int, env_steps: int, metrics: Mapping[str, float]) -> None:
        """Append one row; rewrite the file when ``metrics`` brings new keys."""
        row = {"iteration": str(int(iteration)), "env_steps": str(int(env_steps))}
        row.update({k: _format(v) for k, v in metrics.items()})
        self.rows.append(row)
        new = set(metrics) - set(self.keys)
        if new or not self.path.is_file():
            self.keys = sorted(set(self.keys) | new)
            self._rewrite()
            return
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=self.header, restval="", lineterminator="\n").writerow(row)


class RunLogger:
    """Writes each iteration's metrics to ``metrics.csv`` and TensorBoard event files.

    Args:
        run_dir: the run directory.
        resume_iteration: the iteration of the checkpoint a resumed run starts from; later rows
            and TensorBoard events of the killed run are dropped.
        tensorboard: write TensorBoard event files into ``run_dir``.
    """

    def __init__(
        self, run_dir: str | Path, *, resume_iteration: int | None = None, tensorboard: bool = True
    ):
        self.run_dir = Path(run_dir)
        self.csv = MetricsCSV(self.run_dir / METRICS_NAME, resume_iteration=resume_iteration)
        self._writer = None
        if tensorboard:
            # Imported here: tensorboard takes a second to import and only training needs it.
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resume_iteration is None else resume_iteration + 1
            self._writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=purge)

    def log(self, iteration: int, env_steps: int, metrics: Mapping[str, float]) -> None:
        """Record the metrics of ``iteration`` (1-based: iterations completed)."""
        self.csv.write(iteration, env_steps, metrics)
        if self._writer is not None:
            for key, value in sorted(metrics.items()):
                if (
                    isinstance(value, (int, float))
                    and not isinstance(value, bool)
                    and math.isfinite(value)
                ):
                    self._writer.add_scalar(key, value, global_step=iteration)
            self._writer.add_scalar("env_steps", env_steps, global_step=iteration)
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def attach_file_log(run_dir: str | Path, *, level: int = logging.INFO) -> logging.Handler:
    """Send the ``metarl`` loggers' records to ``run_dir/train.log``; returns the handler so the
    caller can remove it."""
    handler = logging.FileHandler(Path(run_dir) / LOG_NAME, encoding="utf-8")
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("metarl")
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > level:
        root.setLevel(level)
    return handler
