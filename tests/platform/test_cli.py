"""The command line: one-line errors with exit code 2 and nothing left behind; what a run writes;
evaluate, bench, plot, compare, envs, agents and help."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from platform_helpers import run_metarl, toy_config, write_config

from metarl import registry

# --------------------------------------------------------------------------------------------
# Bad input: (id, config change or raw YAML, extra args, substrings the message must hold)

_BAD_CONFIGS = [
    (
        "unknown-key",
        {"run": {"seeed": 1}},
        [],
        ["'seeed'", "did you mean 'seed'", "valid keys", "'iterations'"],
    ),
    (
        "unknown-section",
        {"trainer": {"x": 1}},
        [],
        ["'trainer'", "valid sections", "'run'", "'agent'"],
    ),
    ("wrong-type", {"run": {"iterations": "ten"}}, [], ["run.iterations", "'ten'", "expected int"]),
    (
        "wrong-type-float",
        {"agent": {"learning_rate": "fast"}},
        [],
        ["agent.learning_rate", "'fast'", "expected float"],
    ),
    ("negative-size", {"run": {"num_tasks": -3}}, [], ["run.num_tasks", "-3", "must be > 0"]),
    ("zero-size", {"evaluation": {"rounds": 0}}, [], ["evaluation.rounds", "must be > 0", "got 0"]),
    (
        "negative-agent-size",
        {"agent": {"episodes_per_task": -2}},
        [],
        ["agent.episodes_per_task", "must be > 0"],
    ),
    ("unknown-env", {"env": {"name": "nowhere"}}, [], ["'nowhere'", "valid envs", "'toy-goal'"]),
    (
        "unknown-preset",
        {"env": {"preset": "huge"}},
        [],
        ["'huge'", "valid presets", "'default'", "'short'"],
    ),
    (
        "unknown-env-kwarg",
        {"env": {"kwargs": {"bogus": 1}}},
        [],
        ["'bogus'", "valid kwargs", "'horizon'"],
    ),
    (
        "unknown-env-kwarg-sampler",
        {"sampler": {"env_kwargs": {"workers": 2}}},
        [],
        ["'workers'", "valid env_kwargs", "'scale'"],
    ),
    ("unknown-agent", {"agent": {"name": "nobody"}}, [], ["'nobody'", "valid agents", "'fake'"]),
    (
        "unknown-agent-key",
        {"agent": {"learnin_rate": 0.1}},
        [],
        ["'learnin_rate'", "did you mean 'learning_rate'", "valid keys"],
    ),
    (
        "unknown-device-config",
        {"run": {"device": "gpu"}},
        [],
        ["run.device", "'gpu'", "'auto', 'cpu', 'cuda'"],
    ),
    (
        "bad-choice",
        {"run": {"best_mode": "biggest"}},
        [],
        ["run.best_mode", "'biggest'", "'max', 'min'"],
    ),
    ("set-missing-key", {}, ["--set", "run.sed=1"], ["'sed'", "valid keys of run", "'seed'"]),
    ("set-missing-section", {}, ["--set", "trainer.x=1"], ["'trainer'", "valid sections"]),
    (
        "set-missing-agent-key",
        {},
        ["--set", "agent.hiden_size=4"],
        ["'hiden_size'", "--set agent.hiden_size=4", "did you mean 'hidden_size'"],
    ),
    ("set-bad-type", {}, ["--set", "run.seed=abc"], ["run.seed", "'abc'", "expected int"]),
    ("set-no-equals", {}, ["--set", "run.seed"], ["'run.seed'", "section.key=value"]),
    ("device-flag", {}, ["--device", "gpu"], ["--device", "'gpu'", "'cpu'", "'cuda'"]),
    ("malformed-yaml", "run: {seed: [1, 2\n", [], ["malformed YAML", "line 2"]),
    ("not-a-mapping", "- run\n- env\n", [], ["must hold a mapping", "'run'"]),
]


def _assert_one_line_error(result, expected: list[str]) -> None:
    assert result.code == 2, (result.code, result.err)
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("metarl: error: "), result.err
    assert "Traceback" not in result.err
    for text in expected:
        assert text in lines[0], (text, lines[0])


def _assert_nothing_left(tmp_path: Path, run_dir: Path) -> None:
    assert not run_dir.exists(), sorted(p.name for p in run_dir.iterdir())
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("change", "args", "expected"), [c[1:] for c in _BAD_CONFIGS], ids=[c[0] for c in _BAD_CONFIGS]
)
def test_bad_config_is_one_line_and_leaves_nothing(
    cli, tmp_path, monkeypatch, change, args, expected
):
    monkeypatch.chdir(tmp_path)
    if isinstance(change, str):
        config = write_config(tmp_path / "bad.yaml", change)
    else:
        config = write_config(tmp_path / "bad.yaml", toy_config(**change))
    run_dir = tmp_path / "run"
    _assert_one_line_error(cli("train", config, "--run-dir", run_dir, *args), expected)
    _assert_nothing_left(tmp_path, run_dir)


def test_missing_config_file(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _assert_one_line_error(cli("train", "missing.yaml"), ["'missing.yaml'", "not found"])
    _assert_nothing_left(tmp_path, tmp_path / "run")


def test_runtime_env_error_before_first_checkpoint_removes_the_run(cli, tmp_path, monkeypatch):
    # The toy's make_batched accepts `scale` by signature but rejects a negative one when the
    # sampler first builds the env, i.e. after the run directory exists.
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "c.yaml", toy_config(sampler={"env_kwargs": {"scale": -1.0}}))
    _assert_one_line_error(cli("train", config), ["scale", "-1.0"])
    _assert_nothing_left(tmp_path, tmp_path / "run")


def test_runtime_env_error_empties_the_empty_run_dir_it_was_given(cli, tmp_path, monkeypatch):
    # --run-dir may name an empty folder: a failure before the first checkpoint leaves it empty,
    # so that the same command can run again once the config is fixed.
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "given"
    run_dir.mkdir()
    bad = write_config(tmp_path / "c.yaml", toy_config(sampler={"env_kwargs": {"scale": -1.0}}))
    _assert_one_line_error(cli("train", bad, "--run-dir", run_dir), ["scale", "-1.0"])
    assert run_dir.is_dir() and list(run_dir.iterdir()) == []
    good = write_config(tmp_path / "c.yaml", toy_config(run={"iterations": 2}))
    assert cli("train", good, "--run-dir", run_dir, "--no-progress").code == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "c.yaml", toy_config())
    _assert_one_line_error(
        cli("train", config, "--device", "cuda"), ["'cuda'", "not available", "'cpu'"]
    )
    _assert_nothing_left(tmp_path, tmp_path / "run")


def test_existing_run_dir_is_refused(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "c.yaml", toy_config())
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    _assert_one_line_error(
        cli("train", config, "--run-dir", run_dir), ["already exists", "--resume"]
    )
    assert sorted(p.name for p in run_dir.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("make", ["missing", "empty", "file"])
def test_resume_of_a_non_run_directory(cli, tmp_path, monkeypatch, make):
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "elsewhere"
    if make == "empty":
        target.mkdir()
    elif make == "file":
        target.write_text("x")
    expected = (
        ["does not exist"] if make == "missing" else ["not a metarl run directory", "config.yaml"]
    )
    _assert_one_line_error(cli("train", "--resume", target), [repr(str(target)), *expected])
    assert not (tmp_path / "runs").exists()
    if make == "empty":
        assert list(target.iterdir()) == []


def _fake_run_dir(tmp_path: Path) -> Path:
    """A run directory with a config but no checkpoint yet."""
    run_dir = tmp_path / "fresh-run"
    (run_dir / "checkpoints").mkdir(parents=True)
    write_config(run_dir / "config.yaml", toy_config())
    return run_dir


def test_resume_without_checkpoint(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = _fake_run_dir(tmp_path)
    _assert_one_line_error(cli("train", "--resume", run_dir), ["no checkpoint", "checkpoints"])
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoints", "config.yaml"]


@pytest.mark.parametrize(
    ("which", "expected"),
    [
        (
            "iter_000099.pt",
            ["'iter_000099.pt'", "not found", "valid --checkpoint", "'last', 'best'"],
        ),
        ("best", ["no best checkpoint", "'last'"]),
        ("last", ["no checkpoint", "fresh-run", "checkpoint_every"]),
    ],
)
def test_evaluate_missing_checkpoint(cli, tmp_path, monkeypatch, which, expected):
    monkeypatch.chdir(tmp_path)
    run_dir = _fake_run_dir(tmp_path)
    _assert_one_line_error(cli("evaluate", run_dir, "--checkpoint", which), expected)
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoints", "config.yaml"]


def test_evaluate_non_run_directory_and_bad_numbers(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _assert_one_line_error(cli("evaluate", tmp_path), ["not a metarl run directory"])
    _assert_one_line_error(
        cli("evaluate", tmp_path, "--num-tasks", "0"), ["--num-tasks", "positive integer", "'0'"]
    )
    _assert_one_line_error(
        cli("evaluate", tmp_path, "--split", "validation"), ["--split", "'validation'", "'test'"]
    )


def test_plugin_variable_malformed(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("METARL_EXTRA_AGENTS", "just-a-name")
    _assert_one_line_error(
        cli("agents"), ["METARL_EXTRA_AGENTS", "'just-a-name'", "name=module:attr"]
    )


def test_errors_through_the_real_entry_point(tmp_path):
    """The same one-line contract holds in a fresh interpreter (no traceback, exit 2)."""
    config = write_config(tmp_path / "c.yaml", toy_config(run={"num_tasks": -1}))
    result = run_metarl("train", config, "--run-dir", tmp_path / "run", cwd=tmp_path)
    _assert_one_line_error(result, ["run.num_tasks", "must be > 0"])
    _assert_nothing_left(tmp_path, tmp_path / "run")


# --------------------------------------------------------------------------------------------
# Listing, help, version


def test_help_reads_well(cli):
    result = cli("--help")
    assert result.code == 0
    for command in ("train", "evaluate", "bench", "plot", "compare", "envs", "agents"):
        assert f"    {command} " in result.out
    assert "metarl train " in result.out  # the start-here examples
    for command in ("train", "evaluate", "plot", "compare", "envs", "agents", "bench"):
        sub = cli(command, "--help")
        assert sub.code == 0, sub.err
        assert f"usage: metarl {command}" in sub.out
    train_help = cli("train", "--help").out
    for option in ("--set", "--device", "--run-dir", "--resume", "--print-config", "examples:"):
        assert option in train_help
    evaluate_help = cli("evaluate", "--help").out
    for option in ("--checkpoint", "--split", "--num-tasks", "--rounds", "--out"):
        assert option in evaluate_help


def test_no_command_prints_help(cli):
    result = cli()
    assert result.code == 0
    assert "usage: metarl" in result.out


def test_version(cli):
    import metarl

    result = cli("--version")
    assert result.code == 0
    assert result.out.strip() == f"metarl {metarl.__version__}"


def test_envs_lists_every_family_on_one_line(cli):
    result = cli("envs")
    assert result.code == 0
    families = registry.env_families()
    lines = result.out.splitlines()
    assert len(lines) == len(families)
    by_name = {line.split()[0]: line for line in lines}
    assert set(by_name) == set(families)
    toy = by_name["toy-goal"]
    assert "a point on a line reaching a goal" in toy
    assert "presets: default (default), short" in toy


def test_agents_lists_what_imports(cli):
    result = cli("agents")
    assert result.code == 0
    lines = result.out.splitlines()
    names = [line.split()[0] for line in lines]
    assert names == list(registry.agents())
    assert set(names) <= set(registry.AGENTS) | {"fake"}
    fake = next(line for line in lines if line.startswith("fake "))
    assert (
        fake.split(None, 1)[1]
        == "A linear Gaussian policy trained by REINFORCE with Adam (test fixture)."
    )


def test_registry_skips_missing_builtin_agents(monkeypatch):
    monkeypatch.setitem(registry.AGENTS, "ghost", "metarl.agents.does_not_exist:Ghost")
    assert "ghost" not in registry.agents()
    with pytest.raises(Exception, match="unknown agent 'ghost'"):
        registry.agent_class("ghost")


def test_print_config_prints_resolved_yaml_and_creates_nothing(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "c.yaml", toy_config())
    result = cli(
        "train", config, "--set", "run.seed=11", "--set", "agent.learning_rate=1", "--print-config"
    )
    assert result.code == 0, result.err
    printed = yaml.safe_load(result.out)
    assert printed["run"]["seed"] == 11
    assert printed["agent"]["learning_rate"] == 1.0 and isinstance(
        printed["agent"]["learning_rate"], float
    )
    assert printed["agent"]["hidden_size"] == 8  # defaults are filled in
    assert printed["sampler"]["env_kwargs"] == {}
    assert printed["run"]["name"] == "toy"
    assert list(printed) == ["run", "env", "sampler", "evaluation", "agent"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"env": {"name": "nowhere"}}, ["'nowhere'", "valid envs", "'toy-goal'"]),
        ({"env": {"preset": "huge"}}, ["'huge'", "valid presets", "'default'"]),
        ({"env": {"kwargs": {"bogus": 1}}}, ["'bogus'", "valid kwargs", "'horizon'"]),
        ({"sampler": {"env_kwargs": {"workers": 2}}}, ["'workers'", "valid env_kwargs", "'scale'"]),
    ],
)
def test_print_config_checks_the_env_section(cli, tmp_path, monkeypatch, change, expected):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "c.yaml", toy_config(**change))
    result = cli("train", config, "--print-config")
    _assert_one_line_error(result, expected)
    assert result.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_quickstart_print_config(cli, tmp_path, monkeypatch):
    if "maml-trpo" not in registry.agents():
        pytest.skip("the MAML agents are not installed")
    monkeypatch.chdir(tmp_path)
    result = cli("train", "--print-config")
    assert result.code == 0, result.err
    printed = yaml.safe_load(result.out)
    assert printed["run"]["name"] == "quickstart"
    assert printed["env"]["name"] == "navigation-2d"
    assert printed["agent"]["name"] == "maml-trpo"
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# A whole run, then evaluate


def test_train_writes_a_complete_run_then_evaluate(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "c.yaml", toy_config())
    result = cli("train", config, "--no-progress")
    assert result.code == 0, result.err
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("toy-")  # run.name, then a timestamp
    run_dir = runs[0]

    names = {p.name for p in run_dir.iterdir()}
    assert {
        "config.yaml",
        "metrics.csv",
        "checkpoints",
        "eval.json",
        "eval.png",
        "train.log",
    } <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    # keep_checkpoints=2 of checkpoint_every=2 over 4 iterations, plus the best one
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "best.pt",
        "iter_000002.pt",
        "iter_000004.pt",
    ]

    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["run"]["seed"] == 7 and saved["agent"]["name"] == "fake"

    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    assert header[:2] == ["iteration", "env_steps"]
    assert header[2:] == sorted(header[2:])
    assert {
        "meta_train/return_pre",
        "meta_train/loss",
        "time/learn_s",
        "time/sample_s",
        "meta_test/return_round_0",
        "meta_test/return_round_1",
    } <= set(header)
    assert [r[0] for r in body] == ["1", "2", "3", "4"]
    # 3 tasks x 2 episodes x 5 steps per iteration
    assert [int(r[1]) for r in body] == [30, 60, 90, 120]
    evaluated = header.index("meta_test/return_round_0")
    assert [bool(r[evaluated]) for r in body] == [False, True, False, True]

    report = json.loads((run_dir / "eval.json").read_text())
    assert report["agent"] == "fake" and report["env"] == "toy-goal" and report["split"] == "test"
    assert report["num_tasks"] == 4 and len(report["rounds"]) == 2
    # The final row logs the final evaluation.
    assert float(body[-1][evaluated]) == pytest.approx(report["rounds"][0]["return_mean"])
    assert "gradient steps" in result.out  # the adaptation table
    assert f"adaptation plot: {run_dir.relative_to(tmp_path) / 'eval.png'}" in result.out

    # evaluate: other checkpoint, split and sizes, to another file
    out = tmp_path / "best-eval.json"
    ev = cli(
        "evaluate",
        run_dir,
        "--checkpoint",
        "best",
        "--split",
        "train",
        "--num-tasks",
        "3",
        "--rounds",
        "3",
        "--out",
        out,
    )
    assert ev.code == 0, ev.err
    doc = json.loads(out.read_text())
    assert doc["split"] == "train" and doc["num_tasks"] == 3 and len(doc["rounds"]) == 3
    assert out.with_suffix(".png").is_file()
    assert "gradient steps" in ev.out and str(out) in ev.out

    # plugin evaluation by file path, and the default output
    ckpt = run_dir / "checkpoints" / "iter_000002.pt"
    ev2 = cli("evaluate", run_dir, "--checkpoint", ckpt)
    assert ev2.code == 0, ev2.err
    assert json.loads((run_dir / "eval.json").read_text())["num_tasks"] == 4


def test_output_paths_that_cannot_be_written_are_one_line_errors(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "c.yaml", toy_config(run={"iterations": 2}))
    run_dir = tmp_path / "run"
    assert cli("train", config, "--run-dir", run_dir, "--no-progress").code == 0
    folder = tmp_path / "folder"
    folder.mkdir()
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for args, path, reason in [
        (("evaluate", run_dir, "--out", folder), folder, "Is a directory"),
        (("compare", run_dir, "--out", folder), folder, "Is a directory"),
        (("plot", run_dir, "--out", a_file), a_file, "File exists"),
        (("train", config, "--run-dir", a_file / "run"), a_file / "run", "Not a directory"),
    ]:
        _assert_one_line_error(cli(*args), [f"cannot access {str(path)!r}: {reason}"])
    assert sorted(p.name for p in folder.iterdir()) == []  # no temporary left behind
    assert a_file.read_text() == "x"


def test_validation_tasks_select_the_best_checkpoint_apart_from_the_test_tasks(cli, tmp_path, monkeypatch):
    from platform_fakes import FakeAgent, ToyGoal

    from metarl.config import parse_config
    from metarl.trainer import eval_tasks, validation_tasks

    monkeypatch.chdir(tmp_path)
    data = toy_config(
        run={"best_metric": "meta_valid/return_round_1", "iterations": 4},
        evaluation={"validation_tasks": 3},
    )
    result = cli("train", write_config(tmp_path / "c.yaml", data), "--no-progress", "--run-dir", tmp_path / "run")
    assert result.code == 0, result.err
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    valid = [r["meta_valid/return_round_1"] for r in rows]
    test = [r["meta_test/return_round_1"] for r in rows]
    assert [bool(v) for v in valid] == [False, True, False, True] == [bool(t) for t in test]
    assert valid[1] != test[1]  # other tasks, other numbers
    best = max((1, 3), key=lambda i: float(valid[i]))
    assert f"best meta_valid/return_round_1: {float(valid[best]):.4g}" in result.out
    # The validation tasks come from the train split and never coincide with the test tasks.
    config = parse_config(data, agent_configs=lambda name: FakeAgent.Config)
    dist = ToyGoal()
    valid_tasks, test_tasks = validation_tasks(config, dist), eval_tasks(config, dist)
    assert len(valid_tasks) == 3 and {t.split for t in valid_tasks} == {"train"}
    assert not {t.params for t in valid_tasks} & {t.params for t in test_tasks}


# --------------------------------------------------------------------------------------------
# bench, plot, compare wiring


def test_bench_dispatch_json_and_table(cli, monkeypatch):
    monkeypatch.setitem(registry.BENCHES, "fake", "platform_fakes")
    result = cli("bench", "fake", "--size", "5", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out) == {"size": 5, "ratios": {"vs_anchor": 0.5}}
    table = cli("bench", "fake")
    assert table.out.splitlines() == ["size              3", "ratios.vs_anchor  0.5"]
    unknown = cli("bench", "nope")
    _assert_one_line_error(unknown, ["'nope'", "'fake'"])


def test_plot_and_compare_without_plotting_module(cli, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "metarl.plotting", None)  # import now fails
    for command in ("plot", "compare"):
        _assert_one_line_error(
            cli(command, tmp_path), ["plotting is not available", "metarl.plotting"]
        )


def test_plot_and_compare_are_wired(cli, monkeypatch, tmp_path):
    import types

    calls = []
    fake = types.ModuleType("metarl.plotting")
    fake.main_plot = lambda args: (
        calls.append(("plot", args.run_dirs, args.out, args.aggregate)) or [tmp_path / "a.png"]
    )
    fake.main_compare = lambda args: (
        calls.append(("compare", args.run_dirs, args.out)) or "| table |"
    )
    monkeypatch.setitem(sys.modules, "metarl.plotting", fake)
    assert cli("plot", "r1", "r2", "--aggregate", "iqm", "--out", "figs").out.strip() == str(
        tmp_path / "a.png"
    )
    assert cli("compare", "r1", "r2").out.strip() == "| table |"
    assert calls == [("plot", ["r1", "r2"], "figs", "iqm"), ("compare", ["r1", "r2"], None)]
    _assert_one_line_error(
        cli("plot", "r1", "--aggregate", "median"), ["'median'", "'iqm'", "'mean'"]
    )


def test_resume_compares_a_field_added_since_the_checkpoint_at_its_default(cli, tmp_path, monkeypatch):
    from metarl.checkpoint import load_checkpoint, save_checkpoint

    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "c.yaml", toy_config())
    run_dir = tmp_path / "run"
    assert cli("train", config, "--run-dir", run_dir).code == 0
    # A checkpoint written before `run.best_mode` and the agent's `learning_rate` existed.
    path = run_dir / "checkpoints" / "iter_000004.pt"
    state = load_checkpoint(path)
    del state["config"]["run"]["best_mode"]
    del state["config"]["agent"]["learning_rate"]  # the config file sets it, at a non-default value
    save_checkpoint(path, state)
    result = cli("train", "--resume", run_dir, "--set", "run.iterations=6", "-v")
    assert result.code == 0, result.err
    line = next(x for x in result.err.splitlines() if "resuming from iter_000004.pt" in x)
    # best_mode is at its default: no change; learning_rate is not: reported against the default.
    assert "best_mode" not in line
    assert "run.iterations 4 -> 6" in line and "agent.learning_rate" in line


def test_a_failed_resume_keeps_the_runs_config(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "c.yaml", toy_config())
    run_dir = tmp_path / "run"
    assert cli("train", config, "--run-dir", run_dir).code == 0
    saved = (run_dir / "config.yaml").read_text()
    bad = cli("train", "--resume", run_dir, "--set", "run.iterations=6", "--set", "run.best_metric=meta_train/nope")
    _assert_one_line_error(bad, ["run.best_metric 'meta_train/nope'", "valid metrics"])
    assert (run_dir / "config.yaml").read_text() == saved
    assert cli("train", "--resume", run_dir, "--set", "run.iterations=6").code == 0
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["run"]["iterations"] == 6


def test_resume_to_fewer_iterations_than_done_is_refused(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "c.yaml", toy_config())
    run_dir = tmp_path / "run"
    assert cli("train", config, "--run-dir", run_dir).code == 0
    files = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    result = cli("train", "--resume", run_dir, "--set", "run.iterations=3")
    _assert_one_line_error(result, ["run.iterations 3", "4 iterations of iter_000004.pt", ">= 4"])
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == files


def test_resume_a_finished_run_to_more_iterations(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "c.yaml", toy_config())
    run_dir = tmp_path / "run"
    assert cli("train", config, "--run-dir", run_dir).code == 0
    result = cli("train", "--resume", run_dir, "--set", "run.iterations=6", "-v")
    assert result.code == 0, result.err
    assert (
        "resuming from iter_000004.pt (iteration 4); config changed since the checkpoint: run.iterations 4 -> 6"
        in result.err
    )
    with open(run_dir / "metrics.csv", newline="") as f:
        assert [row["iteration"] for row in csv.DictReader(f)] == ["1", "2", "3", "4", "5", "6"]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["run"]["iterations"] == 6
    assert "run.iterations 4 -> 6" in (run_dir / "train.log").read_text()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "best.pt",
        "iter_000004.pt",
        "iter_000006.pt",
    ]
