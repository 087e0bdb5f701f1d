"""Helpers of the platform tests: a toy config, and the CLI run as a subprocess."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent

PLUGINS = {
    "METARL_EXTRA_ENVS": "toy-goal=platform_fakes",
    "METARL_EXTRA_AGENTS": "fake=platform_fakes:FakeAgent",
}


def toy_config(**sections: dict) -> dict:
    """A small config for the fake agent on the toy distribution; ``sections`` update it."""
    config = {
        "run": {
            "name": "toy",
            "seed": 7,
            "iterations": 4,
            "device": "cpu",
            "num_tasks": 3,
            "checkpoint_every": 2,
            "keep_checkpoints": 2,
            "torch_threads": 1,
        },
        "env": {"name": "toy-goal", "preset": "default"},
        "sampler": {"max_slots": None},
        "evaluation": {"every": 2, "num_tasks": 4, "rounds": 2, "episodes_per_round": 2},
        "agent": {"name": "fake", "hidden_size": 8, "learning_rate": 0.05, "episodes_per_task": 2},
    }
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    return config


def write_config(path: Path, config: dict | str) -> Path:
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config), encoding="utf-8")
    return path


@dataclasses.dataclass
class Result:
    code: int
    out: str
    err: str


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PLUGINS)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH")) if p)
    return env


def run_metarl(*args: str, cwd: Path, timeout: float = 240) -> Result:
    """Run ``python -m metarl.cli ARGS`` as a subprocess with the plugins registered."""
    proc = subprocess.run(
        [sys.executable, "-m", "metarl.cli", *map(str, args)],
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)
