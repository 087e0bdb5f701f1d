"""Fixtures of the platform tests: the plugin fakes on the path and the CLI run in-process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # platform_fakes is imported by name, as a user's plugin would be

from platform_helpers import PLUGINS, Result  # noqa: E402 - needs the path above


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the toy distribution and the fake agent through the plugin variables."""
    for key, value in PLUGINS.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def cli(plugins: None, capsys: pytest.CaptureFixture[str]):
    """Run ``metarl ARGS`` in this process; returns a ``Result(code, out, err)``."""
    import torch

    from metarl.cli import main

    threads = torch.get_num_threads()

    def run(*args: object) -> Result:
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        finally:
            torch.set_num_threads(threads)  # `metarl train` sets it for the process
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run
