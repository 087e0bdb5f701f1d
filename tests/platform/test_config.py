"""Typed configs: strict loading, messages, overrides, round trip, the shipped configs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import pytest
import yaml
from platform_helpers import toy_config, write_config

from metarl import registry
from metarl.config import (
    SECTIONS,
    Config,
    RunConfig,
    apply_overrides,
    at_least,
    build_dataclass,
    field_docs,
    load_config,
    parse_config,
    parse_override,
    positive,
    to_yaml,
)
from metarl.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class Sample:
    """A config exercising every kind of field."""

    count: int = positive(2)
    """A size."""

    rate: float = 0.1
    """A float."""

    sizes: tuple[int, ...] = (4, 4)
    """A tuple."""

    names: list[str] = dataclasses.field(default_factory=list)
    """A list."""

    mode: Literal["a", "b"] = "a"
    """A choice."""

    limit: float | None = at_least(None, 0.0)
    """Optional, bounded."""

    extra: dict[str, int] = dataclasses.field(default_factory=dict)
    """A mapping."""

    flag: bool = False
    """A switch."""

    def __post_init__(self) -> None:
        if self.mode == "b" and self.count < 3:
            raise ValueError(f"mode 'b' needs count >= 3, got count={self.count}")


def _agents(name: str) -> type:
    if name == "sample":
        return Sample
    raise ConfigError(f"unknown agent {name!r}; valid agents: 'sample'")


def _config(**sections: dict) -> Config:
    data = {"agent": {"name": "sample"}}
    for k, v in sections.items():
        data[k] = {**data.get(k, {}), **v}
    return parse_config(data, agent_configs=_agents)


def test_every_field_has_a_docstring():
    for cls in [*SECTIONS.values(), Config]:
        docs = field_docs(cls)
        assert set(docs) == {f.name for f in dataclasses.fields(cls)}
        missing = [name for name, doc in docs.items() if not doc]
        assert not missing, f"{cls.__name__} fields without a docstring: {missing}"


@dataclasses.dataclass(frozen=True)
class _Base:
    alpha: float = 0.1
    """Step size of the base."""

    beta: int = 2
    """Documented in the base."""


@dataclasses.dataclass(frozen=True)
class _Derived(_Base):
    beta: int = 3
    """Redeclared and documented again."""

    gamma: str = "x"


def test_field_docs_merge_inherited_fields():
    assert field_docs(_Derived) == {
        "alpha": "Step size of the base.",
        "beta": "Redeclared and documented again.",
        "gamma": "",
    }


def test_defaults_and_frozen():
    config = _config()
    assert config.run == RunConfig()
    assert config.agent.name == "sample" and config.agent.config == Sample()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.run.seed = 3  # type: ignore[misc]


def test_values_are_converted_to_the_declared_types():
    built = build_dataclass(
        Sample,
        {"rate": 1, "sizes": [8, 16], "names": ("x",), "limit": 2, "extra": {"k": 1}},
        section="agent",
    )
    assert built.rate == 1.0 and isinstance(built.rate, float)
    assert built.sizes == (8, 16) and isinstance(built.sizes, tuple)
    assert built.names == ["x"] and isinstance(built.names, list)
    assert built.limit == 2.0 and isinstance(built.limit, float)
    # PyYAML reads 1e-3 as a string (YAML 1.1); a float field takes it.
    assert build_dataclass(Sample, yaml.safe_load("rate: 1e-3"), section="agent").rate == 0.001


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"count": "3"}, "agent.count: expected int, got '3' (str)"),
        ({"count": True}, "agent.count: expected int, got True (bool)"),
        ({"count": 2.5}, "agent.count: expected int, got 2.5 (float)"),
        ({"count": 0}, "agent.count: must be > 0, got 0"),
        ({"rate": "fast"}, "agent.rate: expected float, got 'fast' (str)"),
        ({"rate": float("nan")}, "agent.rate: must be a finite number, got nan"),
        ({"sizes": [4, "x"]}, "agent.sizes[1]: expected int, got 'x' (str)"),
        ({"sizes": 4}, "agent.sizes: expected list of int, got 4 (int)"),
        ({"mode": "c"}, "agent.mode: invalid value 'c'; valid choices: 'a', 'b'"),
        ({"limit": -1.0}, "agent.limit: must be >= 0.0, got -1.0"),
        ({"extra": [1]}, "agent.extra: expected mapping, got [1] (list)"),
        ({"extra": {"k": "v"}}, "agent.extra.k: expected int, got 'v' (str)"),
        ({"flag": "yes please"}, "agent.flag: expected bool, got 'yes please' (str)"),
        ({"mode": "b"}, "section 'agent': mode 'b' needs count >= 3, got count=2"),
        (
            {"cuont": 3},
            "unknown key 'cuont' in section 'agent'; did you mean 'count'? valid keys: 'count', 'extra', 'flag', 'limit', 'mode', 'names', 'rate', 'sizes'",
        ),
    ],
)
def test_bad_values_name_field_value_and_expectation(data, message):
    with pytest.raises(ConfigError) as info:
        build_dataclass(Sample, data, section="agent")
    assert str(info.value) == message


def test_sections_and_agent_are_checked():
    with pytest.raises(
        ConfigError, match=r"^section 'run' must be a mapping of keys to values, got int 5$"
    ):
        parse_config({"run": 5, "agent": {"name": "sample"}}, agent_configs=_agents)
    with pytest.raises(ConfigError, match=r"section 'agent' must give the agent's name"):
        parse_config({"run": {}}, agent_configs=_agents)
    with pytest.raises(ConfigError, match=r"^unknown agent 'other'; valid agents: 'sample'$"):
        parse_config({"agent": {"name": "other"}}, agent_configs=_agents)
    with pytest.raises(
        ConfigError,
        match=r"^unknown section 'evaluate'; did you mean 'evaluation'\? valid sections: 'agent', 'env', 'evaluation', 'run', 'sampler'$",
    ):
        parse_config({"evaluate": {}, "agent": {"name": "sample"}}, agent_configs=_agents)


def test_overrides_are_yaml_and_reach_every_field():
    data = {"run": {"seed": 1}, "agent": {"name": "sample"}}
    data, origin = apply_overrides(
        data,
        [
            "run.seed=5",
            "run.best_metric=meta_valid/return_round_1",
            "evaluation.validation_tasks=8",
            "env.preset=null",
            "env.kwargs.task_in_obs=true",
            "env.kwargs.nested.depth=2",
            "agent.sizes=[32, 32]",
            "agent.rate=0.5",
            "evaluation.deterministic=yes",
        ],
    )
    config = parse_config(data, agent_configs=_agents, origin=origin)
    assert config.run.seed == 5
    assert config.run.best_metric == "meta_valid/return_round_1"
    assert config.evaluation.validation_tasks == 8
    assert config.env.preset is None
    assert config.env.kwargs == {"task_in_obs": True, "nested": {"depth": 2}}
    assert config.agent.config.sizes == (32, 32)
    assert config.agent.config.rate == 0.5
    assert config.evaluation.deterministic is True
    assert origin["run"]["seed"] == "--set run.seed=5"


def test_override_errors():
    with pytest.raises(
        ConfigError,
        match=r"^unknown key 'sed' in --set run.sed=1; did you mean 'seed'\? valid keys of run: ",
    ):
        apply_overrides({}, ["run.sed=1"])
    with pytest.raises(ConfigError, match=r"must look like section.key=value"):
        parse_override("run.seed")
    with pytest.raises(ConfigError, match=r"must name section.key"):
        parse_override("seed=3")
    data, origin = apply_overrides({"agent": {"name": "sample"}}, ["agent.cuont=3"])
    with pytest.raises(
        ConfigError,
        match=r"unknown key 'cuont' in section 'agent' \(from --set agent.cuont=3\); did you mean 'count'",
    ):
        parse_config(data, agent_configs=_agents, origin=origin)
    data, origin = apply_overrides({"agent": {"name": "sample"}}, ["run.seed=abc"])
    with pytest.raises(
        ConfigError,
        match=r"^run.seed: expected int, got 'abc' \(str\) \(from --set run.seed=abc\)$",
    ):
        parse_config(data, agent_configs=_agents, origin=origin)


def test_yaml_round_trip(tmp_path):
    config = _config(
        run={"name": "x", "seed": 3, "best_metric": "meta_train/return_post"},
        env={"kwargs": {"a": [1, 2]}},
        agent={"sizes": [3, 5], "mode": "b", "count": 4},
    )
    text = to_yaml(config)
    assert "sizes: [3, 5]" in text  # lists of numbers stay on one line
    again = parse_config(yaml.safe_load(text), agent_configs=_agents)
    assert again == config
    path = write_config(tmp_path / "named.yaml", text.replace("  name: x\n", ""))
    assert load_config(path, agent_configs=_agents).run.name == "named"  # the file's stem


def test_load_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"^config file not found: '.*nope.yaml'$"):
        load_config(tmp_path / "nope.yaml", agent_configs=_agents)
    bad = write_config(tmp_path / "bad.yaml", "run:\n  seed: [1,\n")
    with pytest.raises(ConfigError, match=r"^malformed YAML in '.*bad.yaml' at line 3, column 1: "):
        load_config(bad, agent_configs=_agents)
    with pytest.raises(ConfigError, match=r"is a directory"):
        load_config(tmp_path, agent_configs=_agents)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("run:\n  seed: 1\n  iterations: 2\n  seed: 2\n", "line 4, column 3: found duplicate key 'seed'"),
        ("run: {seed: 1}\nenv: {name: x}\nrun: {seed: 2}\n", "line 3, column 1: found duplicate key 'run'"),
        ("env:\n  kwargs: {a: 1, a: 2}\n", "line 2, column 18: found duplicate key 'a'"),
    ],
)
def test_a_key_given_twice_is_refused(tmp_path, text, where):
    # PyYAML alone keeps the last value: the first seed or section would be dropped silently.
    path = write_config(tmp_path / "dup.yaml", text)
    with pytest.raises(ConfigError, match=rf"^malformed YAML in '.*dup.yaml' at {where}; give each key once$"):
        load_config(path, agent_configs=_agents)


def test_quickstart_ships_maml_trpo_on_navigation():
    from metarl import configs

    data = yaml.safe_load(configs.path().read_text())
    assert data["env"]["name"] == "navigation-2d"
    assert data["agent"]["name"] == "maml-trpo"
    assert data["agent"]["inner_lr"] == 0.1  # the paper's inner step size (Finn et al. 2017, App. A.2)
    assert data["evaluation"]["num_tasks"] == 40  # the paper's 40 held-out goals
    # The fixed sections validate whatever the agent; the agent section against its own Config.
    for section, cls in SECTIONS.items():
        build_dataclass(cls, data[section], section=section)
    if "maml-trpo" in registry.agents():
        config = parse_config(data, agent_configs=registry.agent_config)
        assert config.agent.config.inner_lr == 0.1


def _experiment_configs() -> list[Path]:
    return sorted((REPO / "experiments").rglob("*.yaml"))


@pytest.mark.parametrize("path", _experiment_configs(), ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_experiment_configs_validate(path):
    data = yaml.safe_load(path.read_text())
    name = data.get("agent", {}).get("name")
    if name not in registry.agents():
        pytest.skip(f"agent {name!r} is not installed")
    config = load_config(path, agent_configs=registry.agent_config)
    assert config.run.name == data["run"].get("name", path.stem)
    registry.env_family(config.env.name)


def test_toy_config_through_the_plugin_registry(plugins, tmp_path):
    path = write_config(tmp_path / "toy.yaml", toy_config())
    config = load_config(
        path, agent_configs=registry.agent_config, overrides=["agent.learning_rate=0.5"]
    )
    assert type(config.agent.config).__qualname__ == "FakeAgent.Config"
    assert config.agent.config.learning_rate == 0.5
    dist = registry.make_env(config.env.name, config.env.preset)
    assert dist.name == "toy-goal" and dist.max_episode_steps == 5
    assert registry.make_env("toy-goal", "short").max_episode_steps == 3


def test_best_metric_never_selects_on_test_tasks():
    data = {"run": {"best_metric": "meta_test/return_round_1"}, "agent": {"name": "sample"}}
    with pytest.raises(ConfigError, match=r"selects checkpoints on the test tasks.*'meta_valid/return_round_1'"):
        parse_config(data, agent_configs=_agents)
    data = {"run": {"best_metric": "meta_valid/return_round_1"}, "agent": {"name": "sample"}}
    with pytest.raises(ConfigError, match="needs validation tasks"):
        parse_config(data, agent_configs=_agents)
    data["evaluation"] = {"validation_tasks": 4}
    assert parse_config(data, agent_configs=_agents).evaluation.validation_tasks == 4


@pytest.mark.parametrize(
    ("explicit", "omp", "expected"),
    [
        (None, "1", 1),  # the environment's count, as torch itself reads it
        (2, "1", 2),  # run.torch_threads wins over the environment
        (None, "0", "cores"),  # not a positive count: the cores, at most 8
        (None, "many", "cores"),
        (None, None, "cores"),
    ],
)
def test_torch_threads_honour_omp_num_threads(monkeypatch, explicit, omp, expected):
    import os

    import torch

    from metarl.trainer import set_torch_threads

    before = torch.get_num_threads()
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    cores = max(1, min(len(os.sched_getaffinity(0)), 8))
    want = cores if expected == "cores" else expected
    try:
        assert set_torch_threads(explicit) == want
        assert torch.get_num_threads() == want
    finally:
        torch.set_num_threads(before)
