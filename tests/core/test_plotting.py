"""metarl plot / compare over run directories: grouping by seeds, pooled intervals, paper column."""

from __future__ import annotations

import argparse
import csv

import numpy as np
import pytest
import yaml

from metarl.errors import MetarlError
from metarl.evaluation import bootstrap_ci, write_eval
from metarl.plotting import compare_table, iqm, main_compare, main_plot


def make_run(root, name, *, agent, seed, returns, env="navigation-2d", preset="maml", successes=None, adaptation="gradient"):
    run = root / name
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"run": {"seed": seed}, "env": {"name": env, "preset": preset}, "agent": {"name": agent}}))
    with (run / "metrics.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["iteration", "env_steps", "meta_train/return_pre", "meta_train/return_post", "time/learn_s"])
        for i in range(5):
            w.writerow([i, 1000 * (i + 1), -40 + i + seed, -30 + 2 * i + seed, 0.1])
    returns = np.asarray(returns, dtype=float)  # [tasks, rounds, episodes]
    doc = {
        "metarl_version": "0", "run": name, "agent": agent, "env": env, "preset": preset, "split": "test",
        "num_tasks": returns.shape[0], "episodes_per_round": returns.shape[2], "seed": seed, "adaptation": adaptation,
        "rounds": [{"round": k, "return_mean": float(returns[:, k].mean()), "return_ci95": [0, 0],
                    "success_rate": None, "success_ci95": None} for k in range(returns.shape[1])],
        "per_task": [{"task": f"t{i}", "returns": returns[i].tolist(),
                      "successes": None if successes is None else successes[i].tolist()} for i in range(returns.shape[0])],
    }
    write_eval(run / "eval.json", doc)
    return run


def test_compare_pools_seeds_and_shows_paper(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(-20, 3, size=(10, 2, 4))
    b = rng.normal(-18, 3, size=(10, 2, 4))
    runs = [make_run(tmp_path, "s0", agent="maml-trpo", seed=0, returns=a), make_run(tmp_path, "s1", agent="maml-trpo", seed=1, returns=b)]
    table = compare_table(runs)
    lines = table.splitlines()
    assert lines[0].startswith("| agent | env [preset] | seeds × tasks | round 0 | round 1 |")
    row = lines[2]
    assert "maml-trpo" in row and "2 × 10" in row and "-40.41" in row
    pooled0 = np.concatenate([a[:, 0].mean(1), b[:, 0].mean(1)])
    lo, hi = bootstrap_ci(pooled0, seed=0)
    assert f"{pooled0.mean():.2f} [{lo:.2f}, {hi:.2f}]" in row


def test_compare_trial_total_and_success(tmp_path):
    r = np.ones((4, 3, 2))
    s = np.zeros((4, 3, 2), dtype=bool)
    s[:2] = True
    run = make_run(tmp_path, "rl", agent="rl2", seed=0, returns=r, env="bandit", preset="k5-n10", successes=s, adaptation="trial")
    out = tmp_path / "table.md"
    table = main_compare(argparse.Namespace(run_dirs=[run], out=str(out)))
    assert out.read_text().strip() == table
    assert "3.00 [3.00, 3.00]" in table  # trial total = sum over the 3 episodes
    assert "success 50.0%" in table and "6.7" in table


def test_plot_writes_curves_and_adaptation(tmp_path):
    rng = np.random.default_rng(1)
    runs = [make_run(tmp_path, f"s{i}", agent="maml-trpo", seed=i, returns=rng.normal(size=(5, 3, 2))) for i in range(3)]
    out = tmp_path / "plots"
    written = main_plot(argparse.Namespace(run_dirs=runs, out=str(out), aggregate="iqm"))
    names = sorted(p.name for p in written)
    assert names == ["adaptation.png", "curve_meta_train_return_post.png", "curve_meta_train_return_pre.png"]
    assert all(p.stat().st_size > 5000 for p in written)


def test_not_a_run_dir(tmp_path):
    with pytest.raises(MetarlError, match="is not a run directory"):
        compare_table([tmp_path])


def test_iqm_trims_quartiles():
    assert iqm(np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 100.0])) == pytest.approx(3.5)
