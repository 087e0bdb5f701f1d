"""Benchmarks behind ``metarl bench <name>``: each module has ``add_arguments(parser)`` and
``run(args) -> dict``, and compares metarl against its anchors in one run (design §7)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

__all__ = ["default_args", "bench_device", "DEVICES"]

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
