"""Atomic checkpoints and the checkpoint folder of a run (design §4).

A checkpoint is written to a temporary file in the target's folder, flushed and fsynced, renamed
over the target with :func:`os.replace` and the folder fsynced, so a crash at any moment leaves
either the old file or the new one, never half of one. The file is a ``torch.save`` envelope
holding the SHA-256 of the serialised state, so truncation and bit rot are both detected on load.

Checkpoints are pickles: load only files you wrote yourself.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from metarl.errors import CheckpointError, choices

__all__ = [
    "BEST_NAME",
    "atomic_write",
    "CheckpointDir",
    "FORMAT",
    "fits_config",
    "load_checkpoint",
    "restore_agent",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

#: Marks a metarl checkpoint envelope.
FORMAT = "metarl-checkpoint/1"
#: File name of the best checkpoint inside a run's ``checkpoints/``.
BEST_NAME = "best.pt"
_PERIODIC = re.compile(r"^iter_(\d+)\.pt$")


def _iteration_of(path: Path) -> int:
    """The iteration count in a periodic checkpoint's name (``iter_000012.pt`` -> 12)."""
    m = _PERIODIC.match(path.name)
    assert m is not None, path
    return int(m.group(1))


def _fsync_dir(directory: Path) -> None:
    # Directory fsync makes the rename itself durable; some platforms cannot open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one: a temporary
    file beside it, flushed and fsynced, renamed over it, and the folder fsynced. The temporary
    file is removed if anything fails."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _envelope(state: Mapping[str, Any]) -> bytes:
    payload = io.BytesIO()
    torch.save(dict(state), payload)
    body = payload.getvalue()
    outer = io.BytesIO()
    torch.save(
        {"format": FORMAT, "sha256": hashlib.sha256(body).hexdigest(), "payload": body}, outer
    )
    return outer.getvalue()


@contextlib.contextmanager
def fits_config(path: str | Path) -> Iterator[None]:
    """Turn a state that does not fit the objects built from the run's config (a ``KeyError``,
    ``RuntimeError`` or ``ValueError`` from ``load_state_dict``) into one-line
    :class:`CheckpointError` naming the checkpoint ``path``."""
    try:
        yield
    except (KeyError, RuntimeError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not match the run's config: {type(err).__name__}: {err}"
        ) from None


def restore_agent(agent: Any, state: Mapping[str, Any], path: str | Path) -> None:
    """Load a trainer checkpoint's ``state["agent"]`` into ``agent``.

    Raises:
        CheckpointError: the checkpoint holds no agent state, or one that does not fit ``agent``.
    """
    if "agent" not in state:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has no agent state; it was not written by the metarl trainer"
        )
    with fits_config(path):
        agent.load_state_dict(state["agent"])


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temp file, fsync, rename, fsync of the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, _envelope(state))
    return path


def load_checkpoint(
    path: str | Path, *, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: missing, truncated, corrupted (checksum mismatch) or not a metarl
            checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {str(path)!r}")
    try:
        # The envelope holds only str and bytes, so the safe loader reads it.
        outer = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to parse means the file is damaged
        raise CheckpointError(
            f"checkpoint {str(path)!r} is truncated or corrupt ({type(err).__name__})"
        ) from None
    if (
        not isinstance(outer, dict)
        or outer.get("format") != FORMAT
        or not isinstance(outer.get("payload"), bytes)
    ):
        raise CheckpointError(
            f"{str(path)!r} is not a metarl checkpoint (expected format {FORMAT!r})"
        )
    body = outer["payload"]
    if hashlib.sha256(body).hexdigest() != outer.get("sha256"):
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt (checksum mismatch)")
    try:
        # The payload holds numpy generator states and agent objects; the checksum above
        # guarantees it is the file metarl wrote.
        state = torch.load(io.BytesIO(body), map_location=map_location, weights_only=False)
    except Exception as err:  # noqa: BLE001 - same as above
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be read: {type(err).__name__}: {err}"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds {type(state).__name__}, expected a dict"
        )
    return state


class CheckpointDir:
    """The ``checkpoints/`` folder of a run: ``iter_<N>.pt`` for the last ``keep`` periodic
    checkpoints (N = iterations completed) and ``best.pt``.

    Args:
        directory: the folder; created on the first save.
        keep: how many periodic checkpoints to keep (the best one is kept separately).
    """

    def __init__(self, directory: str | Path, *, keep: int = 3):
        if keep < 1:
            raise CheckpointError(f"keep must be >= 1, got {keep}")
        self.directory = Path(directory)
        self.keep = int(keep)

    @property
    def best_path(self) -> Path:
        return self.directory / BEST_NAME

    def path_for(self, iteration: int) -> Path:
        """Where the checkpoint after ``iteration`` completed iterations goes."""
        return self.directory / f"iter_{int(iteration):06d}.pt"

    def periodic(self) -> list[Path]:
        """Periodic checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for p in self.directory.iterdir():
            m = _PERIODIC.match(p.name)
            if m and p.is_file():
                found.append((int(m.group(1)), p))
        return [p for _, p in sorted(found)]

    def save(self, iteration: int, state: Mapping[str, Any], *, best: bool = False) -> Path:
        """Write the periodic checkpoint of ``iteration`` (and ``best.pt`` when ``best``), then
        delete periodic ones beyond the last ``keep``. Older files go only after the new one is
        durable."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob(".*.tmp-*"):
            stale.unlink(missing_ok=True)  # left by a process killed mid-write
        data = _envelope(state)
        path = self.path_for(iteration)
        atomic_write(path, data)
        if best:
            atomic_write(self.best_path, data)
        # Files numbered above the new one are left from a timeline that a resume abandoned
        # (it skipped them as unreadable): they go first, then the oldest; the new one stays.
        others = [p for p in self.periodic() if p != path]
        later = [p for p in others if _iteration_of(p) > iteration]
        earlier = [p for p in others if _iteration_of(p) < iteration]
        for old in [*later, *earlier][: max(len(others) + 1 - self.keep, 0)]:
            old.unlink(missing_ok=True)
        _fsync_dir(self.directory)
        return path

    def save_best(self, state: Mapping[str, Any]) -> Path:
        """Write ``best.pt`` alone (a best iteration that is not a periodic one)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write(self.best_path, _envelope(state))
        return self.best_path

    def load_latest(
        self, *, map_location: str | torch.device = "cpu"
    ) -> tuple[Path, dict[str, Any]]:
        """The newest periodic checkpoint that reads back; a damaged newer one is reported with
        a warning and skipped.

        Raises:
            CheckpointError: no readable checkpoint.
        """
        candidates = self.periodic()
        for path in reversed(candidates):
            try:
                return path, load_checkpoint(path, map_location=map_location)
            except CheckpointError as err:
                logger.warning(
                    "skipping checkpoint %s: %s; falling back to the previous one", path.name, err
                )
        if candidates:
            raise CheckpointError(
                f"no readable checkpoint in {str(self.directory)!r}: all of {choices(p.name for p in candidates)} are damaged"
            )
        raise CheckpointError(
            f"no checkpoint in {str(self.directory)!r} yet (the trainer writes one every run.checkpoint_every iterations)"
        )

    def resolve(self, which: str) -> Path:
        """``"last"``, ``"best"`` or a path -> the checkpoint file.

        Raises:
            CheckpointError: the requested checkpoint does not exist.
        """
        if which == "last":
            periodic = self.periodic()
            if not periodic:
                raise CheckpointError(
                    f"no checkpoint in {str(self.directory)!r}; valid --checkpoint: 'last', 'best' or a file"
                )
            return periodic[-1]
        if which == "best":
            if not self.best_path.is_file():
                raise CheckpointError(
                    f"no best checkpoint {str(self.best_path)!r}; valid --checkpoint: 'last' or a file of {choices(p.name for p in self.periodic()) or 'none'}"
                )
            return self.best_path
        path = Path(which)
        if not path.is_file() and (self.directory / which).is_file():
            path = self.directory / which
        if not path.is_file():
            raise CheckpointError(
                f"checkpoint {which!r} not found; valid --checkpoint: 'last', 'best' or one of {choices(p.name for p in self.periodic()) or 'none'}"
            )
        return path
