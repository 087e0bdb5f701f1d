"""`metarl evaluate` records the belief of agents that expose one (VariBAD) in belief.json, and
`metarl plot` draws it; agents without a belief (MAML) get neither and no error."""

from __future__ import annotations

import json
import stat

import numpy as np
import pytest
from platform_helpers import write_config

#: VariBAD on the 5×5 gridworld, small enough to train two iterations in seconds.
VARIBAD = {
    "run": {
        "name": "vb",
        "seed": 0,
        "iterations": 2,
        "device": "cpu",
        "num_tasks": 4,
        "checkpoint_every": 2,
        "keep_checkpoints": 1,
        "torch_threads": 1,
    },
    "env": {"name": "gridworld", "preset": "varibad"},
    "evaluation": {
        "every": 2,
        "num_tasks": 5,
        "rounds": 4,
        "episodes_per_round": 1,
        "deterministic": True,
    },
    "agent": {
        "name": "varibad",
        "latent_dim": 3,
        "encoder_hidden_size": 16,
        "encoder_obs_embedding": 8,
        "encoder_action_embedding": 0,
        "encoder_reward_embedding": 4,
        "reward_decoder": "bernoulli_multihead",
        "reward_decoder_sizes": [8],
        "vae_buffer_size": 64,
        "vae_batch_num_trajs": 4,
        "num_vae_updates": 2,
        "precollect_steps": 0,
        "policy_obs_embedding": 8,
        "policy_latent_embedding": 8,
        "policy_sizes": [16],
    },
}

#: MAML-TRPO on 2-D navigation, one tiny iteration.
MAML = {
    "run": {
        "name": "maml",
        "seed": 0,
        "iterations": 1,
        "device": "cpu",
        "num_tasks": 2,
        "checkpoint_every": 1,
        "keep_checkpoints": 1,
        "torch_threads": 1,
    },
    "env": {"name": "navigation-2d", "preset": "maml"},
    "evaluation": {"every": 1, "num_tasks": 2, "rounds": 2, "episodes_per_round": 2},
    "agent": {"name": "maml-trpo", "episodes_per_task": 2, "hidden_sizes": [8]},
}


@pytest.fixture(scope="module")
def varibad_run(tmp_path_factory):
    """A trained tiny VariBAD run directory (trained once for the module)."""
    from metarl.cli import main

    root = tmp_path_factory.mktemp("belief")
    run = root / "vb"
    config = write_config(root / "vb.yaml", VARIBAD)
    assert main(["train", str(config), "--run-dir", str(run), "--no-progress"]) == 0
    return run


def test_evaluate_writes_belief_json(cli, varibad_run):
    result = cli("evaluate", varibad_run)
    assert result.code == 0, result.err
    path = varibad_run / "belief.json"
    assert f"belief:          {path}" in result.out
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    leftovers = [p for p in varibad_run.iterdir() if p.name.startswith(".belief.json")]
    assert not leftovers  # the temporary file was renamed
    data = json.loads(path.read_text())
    evaluated = [t["task"] for t in json.loads((varibad_run / "eval.json").read_text())["per_task"]]
    assert data["agent"] == "varibad" and data["latent_dim"] == 3 and data["grid_shape"] == [5, 5]
    assert (
        data["episodes_per_trial"] == 4
        and data["episode_length"] == 15
        and data["deterministic"] is True
    )
    assert [t["task"] for t in data["trials"]] == evaluated[:4]  # the first 4 evaluation tasks
    for trial in data["trials"]:
        assert np.shape(trial["mean"]) == np.shape(trial["logvar"]) == (60, 3)
        assert trial["mean"][0] == [0.0, 0.0, 0.0]  # the prior at the trial's first step
        assert trial["episode_starts"] == [0, 15, 30, 45]
        assert np.shape(trial["cell_probabilities"]) == (60, 25)
        assert sum(trial["rewards"]) == pytest.approx(sum(trial["episode_returns"]), abs=1e-4)

    plotted = cli("plot", varibad_run)
    assert plotted.code == 0, plotted.err
    png = varibad_run / "plots" / "belief.png"
    assert str(png) in plotted.out.split()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000


def test_belief_tasks_option(cli, varibad_run, tmp_path):
    out = tmp_path / "best.json"
    result = cli("evaluate", varibad_run, "--belief-tasks", "2", "--out", out)
    assert result.code == 0, result.err
    data = json.loads((tmp_path / "best.belief.json").read_text())
    assert len(data["trials"]) == 2
    none = tmp_path / "none.json"
    result = cli("evaluate", varibad_run, "--belief-tasks", "0", "--out", none)
    assert result.code == 0 and "belief:" not in result.out
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.belief.json",
        "best.json",
        "best.png",
        "none.json",
        "none.png",
    ]
    bad = cli("evaluate", varibad_run, "--belief-tasks", "-1")
    assert bad.code == 2 and bad.err.count("\n") == 1
    assert "--belief-tasks" in bad.err and "'-1'" in bad.err


def test_no_belief_for_maml(cli, tmp_path):
    run = tmp_path / "maml"
    config = write_config(tmp_path / "maml.yaml", MAML)
    assert cli("train", config, "--run-dir", run, "--no-progress").code == 0
    result = cli("evaluate", run, "--belief-tasks", "3")
    assert result.code == 0, result.err
    assert "belief:" not in result.out and not (run / "belief.json").exists()
    assert (run / "eval.json").is_file()
