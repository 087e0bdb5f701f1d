"""Benchmarks behind ``metarl bench <name>``: each module has ``add_arguments(parser)`` and
``run(args) -> dict``, and compares metarl against its anchors in one run (design §7)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["default_args", "bench_device", "load_trained_run", "DEVICES"]

#: Values of a bench's ``--device``.
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def default_args(
    add_arguments: Callable[[argparse.ArgumentParser], None], **overrides: Any
) -> argparse.Namespace:
    """A bench's options with their command-line defaults and ``overrides``, for calling its
    ``run(args)`` from Python: ``run(default_args(add_arguments, env="ant-vel", slots=16))``."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    for key, value in overrides.items():
        if not hasattr(args, key):
            raise ValueError(f"unknown bench option {key!r}; valid options: {sorted(vars(args))}")
        setattr(args, key, value)
    return args


def bench_device(name: str) -> str:
    """A bench's ``--device`` as the device to use: ``"cpu"`` or ``"cuda"`` (``auto``: CUDA when
    available).

    Raises:
        ConfigError: an unknown value, or ``cuda`` on a machine without CUDA.
    """
    import torch

    from metarl.errors import ConfigError, choices

    if name not in DEVICES:
        raise ConfigError(f"unknown --device {name!r}; valid devices: {choices(DEVICES)}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device 'cuda' requested but CUDA is not available on this machine; valid choices here: 'auto', 'cpu'")
    return name


def load_trained_run(run_dir: str | Path, *, checkpoint: str = "last", device: str = "cpu") -> tuple[Any, Any, Any, int]:
    """``(config, dist, agent, iteration)`` of a run directory: the agent loaded from
    ``checkpoint`` (``last``, ``best`` or a file name) on ``device`` (a bench's ``--device``),
    and that checkpoint's iteration, which seeds the run's evaluations.

    Raises:
        CheckpointError: not a run directory, no readable checkpoint, or one that does not match.
        ConfigError: a bad ``device``.
    """
    import torch

    from metarl.checkpoint import CheckpointDir, load_checkpoint, restore_agent
    from metarl.cli import CONFIG_NAME, _build, _check_run_dir, _load
    from metarl.trainer import CHECKPOINT_DIR

    device = bench_device(device)
    path = Path(run_dir)
    _check_run_dir(path)
    config = _load(path / CONFIG_NAME, [], device, default_name=None)
    checkpoints = CheckpointDir(path / CHECKPOINT_DIR, keep=config.run.keep_checkpoints)
    if checkpoint == "last":
        ckpt_path, state = checkpoints.load_latest()
    else:
        ckpt_path = checkpoints.resolve(checkpoint)
        state = load_checkpoint(ckpt_path)
    dist, agent = _build(config, device=torch.device(device))
    restore_agent(agent, state, ckpt_path)
    return config, dist, agent, int(state.get("iteration", 0))
