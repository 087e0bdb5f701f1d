"""metarl plot / compare over run directories: grouping by seeds, pooled intervals, paper column."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
import yaml

from metarl.errors import MetarlError
from metarl.evaluation import bootstrap_ci, write_eval
from metarl.plotting import (
    belief_series,
    compare_table,
    iqm,
    load_belief,
    main_compare,
    main_plot,
    plot_belief,
)


def make_run(root, name, *, agent, seed, returns, env="navigation-2d", preset="maml", successes=None, adaptation="gradient", config_name=None):
    run = root / name
    run.mkdir()
    run_section = {"seed": seed} if config_name is None else {"seed": seed, "name": config_name}
    (run / "config.yaml").write_text(yaml.safe_dump({"run": run_section, "env": {"name": env, "preset": preset}, "agent": {"name": agent}}))
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


def _ci(values, seed):
    lo, hi = bootstrap_ci(values, seed=seed)
    return f"{np.mean(values):.2f} [{lo:.2f}, {hi:.2f}]"


def _table_rows(table):
    """The cells of every table row (header first), without the separator rows."""
    return [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines() if line.startswith("| ")]


def test_compare_pools_seeds_and_shows_paper(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(-20, 3, size=(10, 2, 4))
    b = rng.normal(-18, 3, size=(10, 2, 4))
    runs = [make_run(tmp_path, "s0", agent="maml-trpo", seed=0, returns=a), make_run(tmp_path, "s1", agent="maml-trpo", seed=1, returns=b)]
    table = compare_table(runs)
    lines = table.splitlines()
    assert lines[0] == "**Gradient agents**: return per inner gradient step, mean [95% bootstrap CI over seeds × tasks]"
    header, row = _table_rows(table)
    assert header == ["agent", "env [preset]", "seeds × tasks", "step 0", "step 1", "paper"]
    pooled = [np.concatenate([a[:, k].mean(1), b[:, k].mean(1)]) for k in range(2)]
    assert row[:5] == ["maml-trpo", "navigation-2d [maml]", "2 × 10", _ci(pooled[0], 0), _ci(pooled[1], 1)]
    assert row[5].startswith("MAML (Finn et al. 2017, Table 4): -40.41")
    assert lines[-1] == "Step k: the policy after k inner gradient steps on the task (step 0: before adaptation); shown: steps 0–1 (of 2 rounds)."


def test_compare_keeps_different_experiments_apart(tmp_path):
    """Seeds pool only within one config: a scaled-down config on the same env is its own row."""
    rng = np.random.default_rng(1)
    full = [rng.normal(-12, 2, size=(6, 2, 3)) for _ in range(2)]
    small = rng.normal(-20, 2, size=(6, 2, 3))
    runs = [
        make_run(tmp_path, "full0", agent="maml-trpo", seed=0, returns=full[0], config_name="navigation-2d"),
        make_run(tmp_path, "full1", agent="maml-trpo", seed=1, returns=full[1], config_name="navigation-2d"),
        make_run(tmp_path, "quick", agent="maml-trpo", seed=0, returns=small, config_name="quickstart"),
    ]
    _, first, second = _table_rows(compare_table(runs))
    assert first[:3] == ["maml-trpo (navigation-2d)", "navigation-2d [maml]", "2 × 6"]
    assert first[3] == _ci(np.concatenate([full[0][:, 0].mean(1), full[1][:, 0].mean(1)]), 0)
    assert second[:4] == ["maml-trpo (quickstart)", "navigation-2d [maml]", "1 × 6", _ci(small[:, 0].mean(1), 0)]


def test_compare_long_trial_shows_first_last_and_total(tmp_path):
    """RL² on 100-episode bandit trials: episodes 1–3, episode 100 and the trial total."""
    tasks, n = 6, 100
    episode = np.arange(n) / n  # episode k of every trial returns k / 100 + the task's offset
    returns = [episode[None, :, None] + np.arange(tasks)[:, None, None] * (seed + 1) / 10 for seed in (0, 1)]
    runs = [
        make_run(tmp_path, f"b{seed}", agent="rl2", seed=seed, env="bandit", preset="k5-n100", returns=r, adaptation="trial")
        for seed, r in enumerate(returns)
    ]
    table = compare_table(runs)
    assert table.splitlines()[0] == "**Trial agents**: return per episode of a trial, mean [95% bootstrap CI over seeds × tasks]"
    header, row = _table_rows(table)
    assert header == ["agent", "env [preset]", "seeds × tasks", "episode 1", "episode 2", "episode 3", "episode 100", "trial total", "paper"]
    pooled = np.concatenate([r[:, :, 0] for r in returns])  # [seeds × tasks, episodes]
    assert row[:3] == ["rl2", "bandit [k5-n100]", "2 × 6"]
    assert row[3:7] == [_ci(pooled[:, k], k) for k in (0, 1, 2, 99)]
    totals = pooled.sum(1)
    assert totals.mean() == pytest.approx(np.mean([r.sum(axis=(1, 2)) for r in returns]))
    assert row[7] == _ci(totals, 7) and row[7].startswith("87.00 [")  # 49.5 + 100 × mean task offset 0.375
    assert row[8] == "RL² 78.7 (Gittins 78.3, UCB1 78.0)"
    assert "shown: episodes 1–3 and the last one (trials of 100 episodes)" in table


def test_compare_caps_gradient_steps_and_splits_kinds(tmp_path):
    """A MAML run with 8 rounds shows steps 0–4 and the last; a trial group in the same call
    gets its own table whose columns mean episodes, with differing trial lengths labelled."""
    maml = np.arange(8, dtype=float)[None, :, None] + np.zeros((3, 8, 2))
    runs = [
        make_run(tmp_path, "maml", agent="maml-trpo", seed=0, returns=maml),
        make_run(tmp_path, "short", agent="varibad", seed=0, env="gridworld", preset="varibad", returns=np.ones((4, 2, 1)), adaptation="trial"),
        make_run(tmp_path, "tab", agent="rl2", seed=0, env="tabular-mdp", preset="n10", returns=np.full((4, 10, 1), 2.0), adaptation="trial"),
    ]
    table = compare_table(runs)
    rows = _table_rows(table)
    assert rows[0] == ["agent", "env [preset]", "seeds × tasks", "step 0", "step 1", "step 2", "step 3", "step 4", "step 7", "paper"]
    assert rows[1] == ["maml-trpo", "navigation-2d [maml]", "1 × 3"] + [f"{k:.2f} [{k:.2f}, {k:.2f}]" for k in (0, 1, 2, 3, 4, 7)] + [
        "MAML (Finn et al. 2017, Table 4): -40.41 / -11.68 / -3.33 / -3.23"
    ]
    assert rows[2] == ["agent", "env [preset]", "seeds × tasks", "episode 1", "episode 2", "episode 3", "episode 10", "trial total", "paper"]
    assert rows[3][:8] == ["rl2", "tabular-mdp [n10]", "1 × 4", *["2.00 [2.00, 2.00]"] * 4, "20.00 [20.00, 20.00]"]
    assert rows[4] == ["varibad", "gridworld [varibad]", "1 × 4", "1.00 [1.00, 1.00]", "1.00 [1.00, 1.00]", "", "", "2.00 [2.00, 2.00]", ""]
    assert "shown: steps 0–4 and the last one (of 8 rounds)" in table
    assert "shown: episodes 1–3 and the last one (trials of 2 or 10 episodes)" in table
    assert table.index("**Gradient agents**") < table.index("**Trial agents**")


def test_compare_labels_differing_last_rounds_and_blocks(tmp_path):
    """Trials of 5 and 7 episodes: the last column is "last episode" and each cell names its
    episode; a trial split into blocks of episodes names the block and sums every episode."""
    runs = [
        make_run(tmp_path, "a", agent="rl2", seed=0, env="bandit", preset="k5-n10", returns=np.ones((2, 5, 1)), adaptation="trial"),
        make_run(tmp_path, "b", agent="rl2", seed=0, env="bandit", preset="k10-n10", returns=np.ones((2, 7, 1)), adaptation="trial"),
    ]
    rows = _table_rows(compare_table(runs))
    assert rows[0][3:8] == ["episode 1", "episode 2", "episode 3", "last episode", "trial total"]
    assert rows[1][6:8] == ["episode 7: 1.00 [1.00, 1.00]", "7.00 [7.00, 7.00]"]
    assert rows[2][6:8] == ["episode 5: 1.00 [1.00, 1.00]", "5.00 [5.00, 5.00]"]
    blocks = tmp_path / "blocks"
    run = make_run(tmp_path, "blocks", agent="rl2", seed=0, env="e", preset="p", returns=np.ones((2, 2, 3)), adaptation="trial")
    doc = json.loads((run / "eval.json").read_text())
    doc["episodes_per_round"] = [3, 2]
    for task in doc["per_task"]:
        task["returns"][1] = task["returns"][1][:2]
    write_eval(blocks / "eval.json", doc)
    rows = _table_rows(compare_table([blocks]))
    assert rows[0][3:6] == ["episode 1", "episode 2", "trial total"]
    assert rows[1][3:5] == ["episodes 1–3: 1.00 [1.00, 1.00]", "episodes 4–5: 1.00 [1.00, 1.00]"]
    assert rows[1][5] == "5.00 [5.00, 5.00]"  # the one trial's 5 episodes, not the 2 blocks' means
    assert "shown: episodes 1–2 (trials of 5 episodes)" in compare_table([blocks])


def test_compare_trial_total_and_success(tmp_path):
    r = np.ones((4, 3, 2))
    s = np.zeros((4, 3, 2), dtype=bool)
    s[:2] = True
    run = make_run(tmp_path, "rl", agent="rl2", seed=0, returns=r, env="bandit", preset="k5-n10", successes=s, adaptation="trial")
    out = tmp_path / "table.md"
    table = main_compare(argparse.Namespace(run_dirs=[run], out=str(out)))
    assert out.read_text().strip() == table
    header, row = _table_rows(table)
    assert header[3:] == ["episode 1", "episode 2", "episode 3", "trial total", "paper"]
    lo, hi = bootstrap_ci([1.0, 1.0, 0.0, 0.0], seed=1000)
    assert row[3] == f"1.00 [1.00, 1.00]<br>success 50.0% [{100 * lo:.1f}, {100 * hi:.1f}]"
    assert row[6] == "3.00 [3.00, 3.00]"  # trial total = sum over the 3 episodes
    assert row[7].startswith("RL² 6.7")


def test_plot_writes_curves_and_adaptation(tmp_path):
    rng = np.random.default_rng(1)
    runs = [make_run(tmp_path, f"s{i}", agent="maml-trpo", seed=i, returns=rng.normal(size=(5, 3, 2))) for i in range(3)]
    out = tmp_path / "plots"
    written = main_plot(argparse.Namespace(run_dirs=runs, out=str(out), aggregate="iqm"))
    names = sorted(p.name for p in written)
    assert names == ["adaptation.png", "curve_meta_train_return_post.png", "curve_meta_train_return_pre.png"]
    assert all(p.stat().st_size > 5000 for p in written)


def test_plot_splits_figures_by_env(tmp_path):
    """Runs on two task distributions get one set of figures each, never one shared axis."""
    rng = np.random.default_rng(2)
    runs = [
        make_run(tmp_path, "nav", agent="maml-trpo", seed=0, returns=rng.normal(size=(4, 2, 2))),
        make_run(tmp_path, "bandit", agent="rl2", seed=0, returns=rng.normal(size=(4, 3, 1)), env="bandit", preset="k5-n10", adaptation="trial"),
    ]
    written = main_plot(argparse.Namespace(run_dirs=runs, out=str(tmp_path / "plots"), aggregate="mean"))
    names = sorted(p.name for p in written)
    assert "adaptation_navigation-2d-maml.png" in names and "adaptation_bandit-k5-n10.png" in names
    assert "adaptation.png" not in names
    assert "curve_meta_train_return_pre_bandit-k5-n10.png" in names and "curve_meta_train_return_pre_navigation-2d-maml.png" in names


def test_not_a_run_dir(tmp_path):
    with pytest.raises(MetarlError, match="is not a run directory"):
        compare_table([tmp_path])
    config = tmp_path / "config.yaml"
    for text, message in [
        ("- run\n", r"must hold a mapping of sections"),
        ("run: 3\nagent: {name: a}\n", r"is not a run directory: section 'run' of its config.yaml is 3, not a mapping"),
        ("run: [1\n", r"malformed YAML in '.*config.yaml'"),
    ]:
        config.write_text(text)
        with pytest.raises(MetarlError, match=message):
            compare_table([tmp_path])
        with pytest.raises(MetarlError, match=message):
            main_plot(argparse.Namespace(run_dirs=[tmp_path], out=None, aggregate="mean"))


def test_one_seed_given_twice_is_refused(tmp_path):
    # Pooled as two seeds, one run's tasks would count twice: "2 × 4" and a narrower interval.
    returns = np.random.default_rng(0).normal(size=(4, 2, 1))
    a = make_run(tmp_path, "a", agent="maml-trpo", seed=0, returns=returns)
    b = make_run(tmp_path, "b", agent="maml-trpo", seed=0, returns=returns)
    other = make_run(tmp_path, "other", agent="maml-trpo", seed=1, returns=returns)
    message = r"runs '.*a' and '.*b' are both seed 0 of maml-trpo on navigation-2d\[maml\]"
    with pytest.raises(MetarlError, match=message):
        compare_table([a, b])
    with pytest.raises(MetarlError, match=r"runs '.*a' and '.*a' are both seed 0"):
        compare_table([a, other, a])
    out = tmp_path / "figures"
    with pytest.raises(MetarlError, match=message):
        main_plot(argparse.Namespace(run_dirs=[a, b], out=out, aggregate="mean"))
    assert not out.exists()
    assert "| maml-trpo | navigation-2d [maml] | 2 × 4 |" in compare_table([a, other])


def test_splits_are_never_pooled_and_a_train_split_is_labelled(tmp_path):
    returns = np.random.default_rng(0).normal(size=(4, 2, 1))
    test_run = make_run(tmp_path, "s0", agent="maml-trpo", seed=0, returns=returns)
    train_run = make_run(tmp_path, "s1", agent="maml-trpo", seed=1, returns=returns)
    doc = json.loads((train_run / "eval.json").read_text())
    doc["split"] = "train"  # as `metarl evaluate RUN --split train` writes it
    write_eval(train_run / "eval.json", doc)
    with pytest.raises(MetarlError, match=r"s0 \(test\), s1 \(train\) hold different task splits \('test', 'train'\)"):
        compare_table([test_run, train_run])
    assert "| maml-trpo | navigation-2d [maml] (train tasks) | 1 × 4 |" in compare_table([train_run])
    assert "| maml-trpo | navigation-2d [maml] | 1 × 4 |" in compare_table([test_run])


def test_iqm_trims_quartiles():
    assert iqm(np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 100.0])) == pytest.approx(3.5)


# --------------------------------------------------------------------------------------------
# Belief plots


def belief_doc(*, cells=True):
    """Two gridworld-like trials on a 3×3 grid: 3 episodes of 4 steps, latent_dim 2."""
    steps, starts = 12, [0, 4, 8]
    trials = []
    for goal, offset in (((1, 2), 0.0), ((2, 0), 1.0)):
        t = np.arange(steps, dtype=float)
        mean = np.stack([t / steps + offset, -t / steps], axis=1)
        logvar = np.stack([-t / 4, np.zeros(steps)], axis=1)
        trial = {
            "task": f"gridworld[varibad]/test#{goal[0] * 3 + goal[1]}(goal={goal})",
            "mean": mean.tolist(),
            "logvar": logvar.tolist(),
            "rewards": [-0.1] * steps,
            "episode_index": [t // 4 for t in range(steps)],
            "episode_starts": starts,
            "episode_returns": [-0.4, -0.4, -0.4],
            "observations": [[t % 3, (t // 3) % 3] for t in range(steps)],
            "actions": [0] * steps,
        }
        if cells:
            # p(cell c at step t) = (c + t) / 100: every snapshot and cell is distinguishable.
            trial["cell_probabilities"] = [[(c + t) / 100 for c in range(9)] for t in range(steps)]
        trials.append(trial)
    doc = {"agent": "varibad", "latent_dim": 2, "episodes_per_trial": 3, "episode_length": 4, "deterministic": True, "trials": trials}
    if cells:
        doc["grid_shape"] = [3, 3]
    return doc


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_belief_series_snapshots_orientation_and_goal():
    doc = belief_doc()
    s = belief_series(doc["trials"][0], grid_shape=doc["grid_shape"])
    assert s.task == "gridworld[varibad]/test#5(goal=(1, 2))" and s.goal == (1, 2)
    assert s.mean.shape == (12, 2) and s.std[8] == pytest.approx([np.exp(-1.0), 1.0])
    assert s.snapshots == [(0, "t=0 (prior)"), (4, "t=4 (after ep 1)"), (8, "t=8 (after ep 2)"), (11, "t=11 (last step)")]
    assert s.cells.shape == (4, 3, 3)
    # cell index x * 3 + y (the decoder's row-major cells) lands at cells[k][x, y]
    assert s.cells[1][1, 2] == pytest.approx((5 + 4) / 100) and s.cells[3][2, 0] == pytest.approx((6 + 11) / 100)
    assert s.positions.tolist() == [[0, 0], [1, 1], [2, 2], [2, 0]]
    plain = belief_series(belief_doc(cells=False)["trials"][1])
    assert plain.snapshots == [] and plain.cells is None and plain.goal is None


def test_plot_belief_panels_and_png(tmp_path):
    meta = plot_belief(tmp_path / "b.png", belief_doc())
    assert (meta["rows"], meta["line_panels"], meta["heatmap_panels"]) == (2, 2, 8)
    assert meta["snapshots"] == [[0, 4, 8, 11], [0, 4, 8, 11]]
    width, height = png_size(meta["path"])
    assert width > 1000 and 500 < height < 1500 and meta["path"].stat().st_size > 20_000
    meta = plot_belief(tmp_path / "plain.png", belief_doc(cells=False))
    assert (meta["rows"], meta["heatmap_panels"]) == (2, 0)
    assert png_size(meta["path"])[0] < width  # no heatmap strip


def test_metarl_plot_writes_belief_png(tmp_path):
    runs = []
    for seed, name in enumerate(("a", "b")):
        run = tmp_path / name
        run.mkdir()
        (run / "config.yaml").write_text(yaml.safe_dump({"run": {"seed": seed}, "env": {"name": "gridworld"}, "agent": {"name": "varibad"}}))
        write_eval(run / "belief.json", belief_doc())
        runs.append(run)
    written = main_plot(argparse.Namespace(run_dirs=runs[:1], out=None, aggregate="mean"))
    assert [p.name for p in written] == ["belief.png"] and written[0].parent == runs[0] / "plots"
    assert png_size(written[0])[0] > 1000
    written = main_plot(argparse.Namespace(run_dirs=runs, out=str(tmp_path / "figs"), aggregate="mean"))
    assert sorted(p.name for p in written) == ["belief_a.png", "belief_b.png"]


def test_bad_belief_file(tmp_path):
    path = tmp_path / "belief.json"
    path.write_text("{}")
    with pytest.raises(MetarlError, match="no non-empty 'trials'"):
        load_belief(path)
    doc = belief_doc()
    doc["trials"][1]["logvar"] = doc["trials"][1]["logvar"][:3]
    path.write_text(json.dumps(doc))
    with pytest.raises(MetarlError, match=r"trial 1 has mean \(12, 2\) and logvar \(3, 2\)"):
        load_belief(path)
