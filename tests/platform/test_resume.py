"""Atomic checkpoints, metrics.csv, and exact resume after SIGKILL (bitwise on CPU)."""

from __future__ import annotations

import csv
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from platform_fakes import SLEEP_VAR
from platform_helpers import subprocess_env, toy_config, write_config

from metarl.checkpoint import CheckpointDir, load_checkpoint, save_checkpoint
from metarl.errors import CheckpointError
from metarl.logger import MetricsCSV, read_metrics

# --------------------------------------------------------------------------------------------
# Checkpoint files


def _state() -> dict:
    rng = np.random.default_rng(3)
    rng.normal(size=5)
    gen = torch.Generator().manual_seed(5)
    return {
        "weights": torch.randn(4, 3, generator=gen),
        "rng": rng.bit_generator.state,
        "torch_rng": gen.get_state(),
        "nested": {"step": 12, "array": np.arange(4.0)},
    }


def test_save_load_round_trip(tmp_path):
    state = _state()
    path = save_checkpoint(tmp_path / "a" / "c.pt", state)
    back = load_checkpoint(path)
    assert torch.equal(back["weights"], state["weights"])
    assert torch.equal(back["torch_rng"], state["torch_rng"])
    assert back["rng"] == state["rng"]
    assert back["nested"]["step"] == 12 and np.array_equal(back["nested"]["array"], np.arange(4.0))
    # The numpy generator continues exactly where it was saved.
    a, b = np.random.default_rng(), np.random.default_rng()
    a.bit_generator.state, b.bit_generator.state = state["rng"], back["rng"]
    assert np.array_equal(a.normal(size=3), b.normal(size=3))
    assert [p.name for p in path.parent.iterdir()] == ["c.pt"]  # no temporary left


def test_crash_during_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.pt", {"version": 1})
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"version": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_damage_is_detected(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", _state())
    data = path.read_bytes()

    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated or corrupt"):
        load_checkpoint(path)

    # A flipped byte inside the serialised state does not stop torch.load; the checksum does.
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match=r"corrupt"):
        load_checkpoint(path)

    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match=r"not a metarl checkpoint"):
        load_checkpoint(plain)
    with pytest.raises(CheckpointError, match=r"checkpoint not found"):
        load_checkpoint(tmp_path / "none.pt")


def test_checkpoint_dir_keeps_last_n_and_best(tmp_path):
    ckpts = CheckpointDir(tmp_path / "checkpoints", keep=2)
    for it in range(1, 6):
        ckpts.save(it, {"iteration": it}, best=it == 2)
    assert [p.name for p in ckpts.periodic()] == ["iter_000004.pt", "iter_000005.pt"]
    assert load_checkpoint(ckpts.best_path) == {"iteration": 2}
    assert ckpts.resolve("last").name == "iter_000005.pt"
    assert ckpts.resolve("best") == ckpts.best_path
    assert ckpts.resolve("iter_000004.pt").name == "iter_000004.pt"
    # A temporary left by a process killed mid-write is cleared by the next save.
    (ckpts.directory / ".iter_000006.pt.tmp-123").write_bytes(b"partial")
    ckpts.save(6, {"iteration": 6})
    assert sorted(p.name for p in ckpts.directory.iterdir()) == [
        "best.pt",
        "iter_000005.pt",
        "iter_000006.pt",
    ]


@pytest.mark.parametrize("keep", [1, 2])
def test_rotation_after_a_fallback_keeps_the_new_checkpoint(tmp_path, keep):
    # iter 4 is damaged, so a resume continues from iter 2 and saves iter 3 next (here with
    # keep_checkpoints lowered to 1 on resume, or left at 2): iter 3 must survive its own save.
    ckpts = CheckpointDir(tmp_path, keep=2)
    for it in (2, 4):
        ckpts.save(it, {"iteration": it})
    ckpts.path_for(4).write_bytes(b"junk")
    assert ckpts.load_latest()[1] == {"iteration": 2}
    ckpts = CheckpointDir(tmp_path, keep=keep)
    ckpts.save(3, {"iteration": 3})
    expected = {1: ["iter_000003.pt"], 2: ["iter_000002.pt", "iter_000003.pt"]}[keep]
    assert [p.name for p in ckpts.periodic()] == expected
    assert ckpts.load_latest() == (ckpts.path_for(3), {"iteration": 3})


def test_load_latest_falls_back_with_a_warning(tmp_path, caplog):
    ckpts = CheckpointDir(tmp_path, keep=3)
    for it in (1, 2, 3):
        ckpts.save(it, {"iteration": it})
    latest = ckpts.path_for(3)
    latest.write_bytes(latest.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="metarl"):
        path, state = ckpts.load_latest()
    assert path.name == "iter_000002.pt" and state == {"iteration": 2}
    assert any(
        "iter_000003.pt" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records
    )
    for p in ckpts.periodic():
        p.write_bytes(b"junk")
    with pytest.raises(CheckpointError, match=r"no readable checkpoint"):
        ckpts.load_latest()


# --------------------------------------------------------------------------------------------
# metrics.csv


def test_metrics_header_is_stable_and_floats_round_trip(tmp_path):
    path = tmp_path / "metrics.csv"
    log = MetricsCSV(path)
    x = 0.1 + 0.2
    log.write(1, 10, {"meta_train/return_pre": x, "time/sample_s": 1.5})
    log.write(
        2,
        20,
        {"time/sample_s": 2.0, "meta_train/return_pre": -1.0, "meta_test/return_round_0": 3.25},
    )
    log.write(3, 30, {"meta_train/return_pre": 1e-300, "time/sample_s": 0.5})
    with open(path, newline="") as f:
        header = next(csv.reader(f))
    assert header == [
        "iteration",
        "env_steps",
        "meta_test/return_round_0",
        "meta_train/return_pre",
        "time/sample_s",
    ]
    rows = read_metrics(path)
    assert [r["meta_test/return_round_0"] for r in rows] == ["", "3.25", ""]
    assert float(rows[0]["meta_train/return_pre"]) == x  # bit for bit
    assert float(rows[2]["meta_train/return_pre"]) == 1e-300

    # Resuming from iteration 2 drops the later row and appends after it.
    resumed = MetricsCSV(path, resume_iteration=2)
    resumed.write(3, 30, {"meta_train/return_pre": 7.0, "time/sample_s": 0.25})
    rows = read_metrics(path)
    assert [r["iteration"] for r in rows] == ["1", "2", "3"]
    assert rows[2]["meta_train/return_pre"] == "7.0"


def test_a_failed_metrics_rewrite_keeps_the_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "metrics.csv"
    log = MetricsCSV(path)
    log.write(1, 10, {"meta_train/return_pre": 1.0})
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        log.write(2, 20, {"meta_train/return_pre": 2.0, "meta_test/return_round_0": 3.0})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


# --------------------------------------------------------------------------------------------
# Exact resume after SIGKILL, through the command line


ITERATIONS = 6


def _final(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "checkpoints" / f"iter_{ITERATIONS:06d}.pt")


def _rows_without_time(run_dir: Path) -> tuple[list[str], list[list[str]]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    keep = [i for i, name in enumerate(rows[0]) if not name.startswith("time/")]
    return [rows[0][i] for i in keep], [[row[i] for i in keep] for row in rows[1:]]


def _assert_same(a, b, where: str = "state") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def _kill_after_checkpoint(config: Path, run_dir: Path, *, checkpoint: int, cwd: Path) -> None:
    env = subprocess_env()
    env[SLEEP_VAR] = "0.3"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "metarl.cli",
            "train",
            str(config),
            "--run-dir",
            str(run_dir),
            "--no-progress",
        ],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    target = run_dir / "checkpoints" / f"iter_{checkpoint:06d}.pt"
    deadline = time.monotonic() + 180
    try:
        while not target.exists():
            if proc.poll() is not None:
                pytest.fail(f"training ended before checkpoint {checkpoint}: {proc.stderr.read()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no checkpoint {checkpoint} after 180 s")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "checkpoints" / f"iter_{ITERATIONS:06d}.pt").exists()
    assert not (run_dir / "eval.json").exists()


def test_resume_after_sigkill_is_bitwise_exact(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = write_config(
        tmp_path / "toy.yaml",
        toy_config(
            run={"iterations": ITERATIONS, "checkpoint_every": 1, "keep_checkpoints": 10},
            evaluation={"every": 2},
        ),
    )

    reference = tmp_path / "reference"
    result = cli("train", config, "--run-dir", reference, "--no-progress")
    assert result.code == 0, result.err

    killed = tmp_path / "killed"
    _kill_after_checkpoint(config, killed, checkpoint=3, cwd=tmp_path)
    corrupted = tmp_path / "corrupted"
    shutil.copytree(killed, corrupted)

    # 1) plain resume from the newest checkpoint
    resumed = cli("train", "--resume", killed, "--no-progress")
    assert resumed.code == 0, resumed.err
    assert "warning" not in resumed.err

    # 2) the newest checkpoint is damaged: resume warns and continues from the one before
    newest = CheckpointDir(corrupted / "checkpoints").periodic()[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    fallback = cli("train", "--resume", corrupted, "--no-progress")
    assert fallback.code == 0, fallback.err
    assert "metarl: warning: skipping checkpoint " + newest.name in fallback.err

    want = _final(reference)
    assert want["iteration"] == ITERATIONS and want["env_steps"] == ITERATIONS * 3 * 2 * 5
    header, rows = _rows_without_time(reference)
    assert len(rows) == ITERATIONS and "meta_test/return_round_1" in header
    for run_dir in (killed, corrupted):
        got = _final(run_dir)
        for key in ("agent", "sampler", "rng", "iteration", "env_steps", "best", "config"):
            _assert_same(want[key], got[key], key)
        assert _rows_without_time(run_dir) == (header, rows)
        assert (run_dir / "config.yaml").read_text() == (reference / "config.yaml").read_text()
        assert (run_dir / "eval.json").read_text() == (reference / "eval.json").read_text()
        _assert_same(
            load_checkpoint(reference / "checkpoints" / "best.pt")["agent"],
            load_checkpoint(run_dir / "checkpoints" / "best.pt")["agent"],
            "best",
        )
    # The parameters moved during training (the comparison is not between two untouched inits).
    first = load_checkpoint(reference / "checkpoints" / "iter_000001.pt")["agent"]["net"]
    assert not all(torch.equal(first[k], want["agent"]["net"][k]) for k in first)


# --------------------------------------------------------------------------------------------
# Stopping early: a wall-clock budget or a SIGTERM ends the run at a checkpointed iteration


def test_sigterm_stops_at_a_checkpointed_iteration_and_resume_finishes_exactly(
    tmp_path, cli, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    config = write_config(
        tmp_path / "toy.yaml",
        # No periodic checkpoint before the end: the one at the stop comes from the SIGTERM.
        # Every iteration is evaluated, since the fake agent's evaluation draws from its
        # training generator (the real agents' does not) and the stop adds one.
        toy_config(
            run={"iterations": ITERATIONS, "checkpoint_every": 100}, evaluation={"every": 1}
        ),
    )
    reference = tmp_path / "reference"
    assert cli("train", config, "--run-dir", reference, "--no-progress").code == 0

    stopped = tmp_path / "stopped"
    env = subprocess_env()
    env[SLEEP_VAR] = "0.3"
    proc = subprocess.Popen(
        [sys.executable, "-m", "metarl.cli", "train", str(config), "--run-dir", str(stopped)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 180
    metrics = stopped / "metrics.csv"
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):  # 2 iterations
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no iteration logged after 180 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err

    done = len(metrics.read_text().splitlines()) - 1
    assert 2 <= done < ITERATIONS
    assert f"stopped early (SIGTERM) at iteration {done} of {ITERATIONS}" in out
    assert f"metarl train --resume {stopped}" in out
    checkpoints = CheckpointDir(stopped / "checkpoints").periodic()
    assert [p.name for p in checkpoints] == [f"iter_{done:06d}.pt"]
    assert load_checkpoint(checkpoints[0])["iteration"] == done
    assert (stopped / "eval.json").exists()  # the stopped iteration was evaluated
    assert read_metrics(stopped / "metrics.csv")[-1]["meta_test/return_round_0"] != ""

    resumed = cli("train", "--resume", stopped, "--no-progress")
    assert resumed.code == 0, resumed.err
    assert "stopped early" not in resumed.out
    want, got = _final(reference), _final(stopped)
    for key in ("agent", "sampler", "rng", "iteration", "env_steps", "best"):
        _assert_same(want[key], got[key], key)
    # The handler is the trainer's only while it runs.
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_time_limit_stops_after_the_iteration_in_progress(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(SLEEP_VAR, "0.05")  # every iteration outlasts the 6 ms budget below
    config = write_config(
        tmp_path / "toy.yaml",
        toy_config(
            run={"iterations": ITERATIONS, "checkpoint_every": 100, "time_limit_minutes": 1e-4}
        ),
    )
    run_dir = tmp_path / "run"
    first = cli("train", config, "--run-dir", run_dir, "--no-progress")
    assert first.code == 0, first.err
    assert f"stopped early (time limit) at iteration 1 of {ITERATIONS}" in first.out
    assert [p.name for p in CheckpointDir(run_dir / "checkpoints").periodic()] == ["iter_000001.pt"]
    # --time-limit overrides the config's budget for this invocation only: a generous one lets
    # the resumed run finish, and the run's config keeps its own value.
    again = cli("train", "--resume", run_dir, "--no-progress", "--time-limit", "60")
    assert again.code == 0, again.err
    assert "stopped early" not in again.out
    assert (
        load_checkpoint(run_dir / "checkpoints" / f"iter_{ITERATIONS:06d}.pt")["iteration"]
        == ITERATIONS
    )
    assert "time_limit_minutes: 0.0001" in (run_dir / "config.yaml").read_text()
    for bad in ("0", "-1", "soon", "inf"):
        refused = cli("train", config, "--time-limit", bad)
        assert (
            refused.code == 2 and "--time-limit" in refused.err and "\n" not in refused.err.strip()
        )


def _validated_config(tmp_path: Path, *, every: int, **run: object) -> Path:
    """The toy run with no periodic checkpoint before its end and the best checkpoint chosen on
    validation tasks evaluated every ``every`` iterations."""
    return write_config(
        tmp_path / "toy.yaml",
        toy_config(
            run={
                "iterations": ITERATIONS,
                "checkpoint_every": 100,
                "best_metric": "meta_valid/return_round_1",
                **run,
            },
            evaluation={"every": every, "validation_tasks": 3},
        ),
    )


def test_a_stop_during_an_evaluation_ends_the_run_before_the_next_iteration(
    tmp_path, cli, monkeypatch
):
    import metarl.trainer as trainer_module

    monkeypatch.chdir(tmp_path)
    config = _validated_config(tmp_path, every=2)
    real_evaluate = trainer_module.evaluate_agent
    calls = []

    def evaluate_then_sigterm(*args, **kwargs):
        calls.append(kwargs["iteration"])
        report = real_evaluate(*args, **kwargs)
        if kwargs["iteration"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives while iteration 2 is evaluated
        return report

    monkeypatch.setattr(trainer_module, "evaluate_agent", evaluate_then_sigterm)
    run_dir = tmp_path / "run"
    result = cli("train", config, "--run-dir", run_dir, "--no-progress")
    assert result.code == 128 + signal.SIGTERM, result.err
    assert "stopped early (SIGTERM) at iteration 2 of" in result.out
    # No third iteration; iteration 2 (not due for a checkpoint) was checkpointed, and its
    # scheduled evaluation (validation, then test) is the one in eval.json: none was added.
    assert len(read_metrics(run_dir / "metrics.csv")) == 2
    assert [p.name for p in CheckpointDir(run_dir / "checkpoints").periodic()] == ["iter_000002.pt"]
    assert calls == [2, 2]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_an_evaluation_made_only_for_a_stop_does_not_choose_the_best_checkpoint(
    tmp_path, cli, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(SLEEP_VAR, "0.05")
    # The budget stops the run after iteration 1, off the evaluation schedule of 3.
    config = _validated_config(tmp_path, every=3, time_limit_minutes=1e-4)
    run_dir = tmp_path / "run"
    first = cli("train", config, "--run-dir", run_dir, "--no-progress")
    assert first.code == 0 and "stopped early (time limit) at iteration 1" in first.out
    # Iteration 1 was evaluated (its metrics row has validation returns) but is not the best.
    assert read_metrics(run_dir / "metrics.csv")[0]["meta_valid/return_round_1"] != ""
    assert load_checkpoint(run_dir / "checkpoints" / "iter_000001.pt")["best"]["value"] is None
    assert not (run_dir / "checkpoints" / "best.pt").exists()
