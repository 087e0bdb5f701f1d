"""`.ci/gpu-checks`: it refuses to run without CUDA unless told DEVICE=cpu; on the CPU, its
training half runs fresh and then resumes from the archives it returns (slow: two short MuJoCo
runs twice; run with `pytest -m slow`)."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from platform_helpers import subprocess_env

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / ".ci" / "gpu-checks"


def _run(out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = subprocess_env()
    env.update({"DEVICE": "cpu", "BENCH": "0", "PYTHON": sys.executable})
    return subprocess.run(
        ["bash", str(SCRIPT), str(out), "0.05", *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _iteration(archive: Path) -> int:
    with tarfile.open(archive) as tar:
        names = [n for n in tar.getnames() if n.startswith("checkpoints/iter_")]
    assert len(names) == 1, names  # the latest checkpoint alone
    return int(names[0][len("checkpoints/iter_") : -len(".pt")])


@pytest.mark.slow
def test_gpu_checks_trains_returns_archives_and_resumes_from_them(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    done = _run(first)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "gpu-checks: all steps passed" in (first / "gpu-checks.log").read_text()
    assert not list(first.glob("bench_*"))  # BENCH=0
    started = {agent: _iteration(first / f"{agent}.tar.gz") for agent in ("rl2", "varibad")}
    assert all(n >= 1 for n in started.values())

    resumed = _run(second, str(first))
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "train-rl2 (resumed)" in resumed.stdout and "train-varibad (resumed)" in resumed.stdout
    for agent, before in started.items():
        assert _iteration(second / f"{agent}.tar.gz") > before


def test_gpu_checks_refuses_to_run_without_cuda_when_asked_for_it(tmp_path):
    env = subprocess_env()
    env.update({"PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""})
    done = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "out")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "no CUDA device visible" in done.stdout
