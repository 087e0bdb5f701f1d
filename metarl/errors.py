"""Exceptions with one-line messages that name the offending thing and the valid choices."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "MetarlError",
    "ConfigError",
    "EnvError",
    "CheckpointError",
    "WorkerError",
    "WorkerLost",
    "choices",
]


class MetarlError(Exception):
    """Base class of every error metarl raises on bad input. The CLI prints it on one line."""


class ConfigError(MetarlError, ValueError):
    """A config file, key, value or override is wrong."""


class EnvError(MetarlError, ValueError):
    """An environment, task distribution, preset, split, task or action is wrong."""


class CheckpointError(MetarlError):
    """A checkpoint or run directory is missing, unreadable or incompatible."""


class WorkerError(MetarlError, RuntimeError):
    """An environment raised inside a worker; carries the worker, task and seed."""


class WorkerLost(MetarlError, RuntimeError):  # noqa: N818 - it is an event, not a bug
    """A worker died or hung and was replaced; the slots it ran must be collected again.

    Attributes:
        slots: indices of the batched-env slots whose current trials are lost.
    """

    def __init__(self, message: str, slots: Iterable[int]):
        super().__init__(message)
        self.slots = sorted(set(int(s) for s in slots))


def choices(values: Iterable[object]) -> str:
    """Format valid choices for an error message: ``'a', 'b', 'c'``."""
    return ", ".join(repr(v) for v in sorted(values, key=str))
