"""Configs shipped with metarl: ``quickstart.yaml`` is what ``metarl train`` runs without one."""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ["QUICKSTART", "path"]

QUICKSTART = "quickstart.yaml"


def path(name: str = QUICKSTART) -> Traversable:
    """The packaged config file ``name``."""
    return files(__name__) / name
