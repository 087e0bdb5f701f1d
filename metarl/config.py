"""Typed, frozen run configs loaded from YAML (design §3, §6.7).

A config file has five sections::

    run:        name, seed, iterations, device, num_tasks, checkpointing and logging
    env:        the task distribution: name, preset, kwargs for metarl.envs.make
    sampler:    max_slots and keyword arguments for the batched envs
    evaluation: how often and how the adaptation protocol runs during training
    agent:      name, then the fields of that agent's own ``Config`` dataclass

Loading is strict: an unknown key is rejected with the valid keys of its section and the closest
match, a value of the wrong type with the field, the value and the expected type, a size that
must be positive with its bound. Every error is a :class:`~metarl.errors.ConfigError` with one
line. Dotted overrides (``--set run.seed=3``) are YAML-parsed and validated the same way.

The agent section is validated against the agent's ``Config`` class, which the caller looks up
(``agent_configs``): the core never imports an agent.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import math
import re
import textwrap
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from metarl.errors import ConfigError, choices

__all__ = [
    "SECTIONS",
    "AgentSection",
    "Config",
    "EnvConfig",
    "EvaluationConfig",
    "RunConfig",
    "SamplerConfig",
    "apply_overrides",
    "at_least",
    "build_dataclass",
    "field_docs",
    "load_config",
    "load_yaml",
    "parse_config",
    "parse_override",
    "positive",
    "to_yaml",
]


def positive(default: Any) -> Any:
    """A dataclass field that must be ``> 0``; use it for sizes, counts and step sizes."""
    return dataclasses.field(default=default, metadata={"gt": 0})


def at_least(default: Any, minimum: float) -> Any:
    """A dataclass field that must be ``>= minimum``."""
    return dataclasses.field(default=default, metadata={"min": minimum})


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The run as a whole: seed, length, device, checkpoints and logging."""

    name: str = "run"
    """Run name; the run directory is ``runs/<name>-<timestamp>/``. Defaults to the config
    file's name."""

    seed: int = 0
    """Root seed: every generator of the run (tasks, workers, agent) derives from it."""

    iterations: int = positive(500)
    """Number of meta-training iterations."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where learning runs; ``auto`` picks CUDA when it is available. Rollouts run on CPU."""

    num_tasks: int = positive(20)
    """Tasks sampled from the train split per meta-iteration (the meta-batch size)."""

    checkpoint_every: int = positive(10)
    """Write a checkpoint every this many iterations (and always after the last)."""

    keep_checkpoints: int = positive(3)
    """Keep the last this many periodic checkpoints; the best one is kept separately."""

    log_every: int = positive(1)
    """Write a line to the text log every this many iterations (metrics.csv and TensorBoard
    get every iteration)."""

    best_metric: str | None = None
    """Metric that selects the best checkpoint; ``None``: ``meta_train/return_post`` if the agent
    reports it, else its first ``meta_train/return*`` metric. A ``meta_valid/*`` metric selects
    on validation tasks (``evaluation.validation_tasks``); ``meta_test/*`` metrics are refused,
    since choosing a checkpoint on the test tasks would overstate its held-out performance."""

    best_mode: Literal["max", "min"] = "max"
    """Whether a larger or a smaller ``best_metric`` is better."""

    torch_threads: int | None = at_least(None, 1)
    """Threads torch uses for learning on the CPU; ``None``: ``OMP_NUM_THREADS`` when that is set
    to a positive count, else the number of CPU cores, at most 8."""

    time_limit_minutes: float | None = positive(None)
    """Wall-clock budget of one ``metarl train`` invocation, in minutes; ``None``: no limit. Once
    it has passed, the run stops after the iteration in progress, evaluates and checkpoints that
    iteration, and ``metarl train --resume`` continues it later (the budget counts from each
    start). A SIGTERM (a batch scheduler's or ``timeout``'s) stops the run the same way."""


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    """The task distribution, as ``metarl.envs.make(name, preset, **kwargs)``."""

    name: str = "navigation-2d"
    """Task-distribution family, e.g. ``navigation-2d`` (``metarl envs`` lists them)."""

    preset: str | None = None
    """Preset of the family, e.g. ``maml``; ``None``: the family's default preset."""

    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Keyword arguments for the preset's factory, e.g. ``{task_in_obs: true}``."""


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """How rollouts are collected: ``metarl.sampler.Sampler(dist, max_slots=..., env_kwargs=...)``."""

    max_slots: int | None = at_least(None, 1)
    """Most environment slots stepped at once; larger collections run in chunks. ``None``: one
    slot per trial."""

    env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Keyword arguments for ``TaskDistribution.make_batched``, e.g. ``{num_workers: 4}`` for
    families that step in worker processes."""


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """The adaptation protocol run on held-out tasks during and after training."""

    every: int = positive(50)
    """Evaluate every this many iterations (and always after the last)."""

    num_tasks: int = positive(40)
    """Held-out test tasks; the same tasks are used at every evaluation of a run."""

    rounds: int = positive(4)
    """Adaptation rounds: round k is the behaviour after k adaptations (gradient steps for
    MAML-family agents, episodes of one trial for RL² and VariBAD)."""

    episodes_per_round: int = positive(20)
    """Episodes per task collected in each round."""

    deterministic: bool = False
    """Evaluate the policy's mean action instead of sampling."""

    validation_tasks: int = at_least(0, 0)
    """Tasks from the train split, drawn apart from the training stream, evaluated beside the
    test tasks at every periodic evaluation (``meta_valid/*`` metrics); they are what
    ``run.best_metric`` may select on. 0: none."""


@dataclasses.dataclass(frozen=True)
class AgentSection:
    """The agent's registry name and its validated ``Config`` instance."""

    name: str
    """Registry name of the agent, e.g. ``maml-trpo`` (``metarl agents`` lists them)."""

    config: Any
    """An instance of the agent class's nested ``Config`` dataclass."""


@dataclasses.dataclass(frozen=True)
class Config:
    """A complete, validated run config."""

    run: RunConfig
    """The run as a whole."""

    env: EnvConfig
    """The task distribution."""

    sampler: SamplerConfig
    """Rollout collection."""

    evaluation: EvaluationConfig
    """The adaptation protocol."""

    agent: AgentSection
    """The meta-learner."""

    def __post_init__(self) -> None:
        best = self.run.best_metric
        if best is None:
            return
        if best.startswith("meta_test/"):
            valid = best.replace("meta_test/", "meta_valid/", 1)
            raise ConfigError(
                f"run.best_metric {best!r} selects checkpoints on the test tasks; valid choices: "
                f"a meta_train/* metric, or {valid!r} with evaluation.validation_tasks > 0"
            )
        if best.startswith("meta_valid/") and self.evaluation.validation_tasks == 0:
            raise ConfigError(
                f"run.best_metric {best!r} needs validation tasks; set evaluation.validation_tasks > 0"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts and lists (YAML- and JSON-safe), the agent section flattened."""
        out: dict[str, Any] = {}
        for name in ("run", "env", "sampler", "evaluation"):
            out[name] = _plain(dataclasses.asdict(getattr(self, name)))
        out["agent"] = {"name": self.agent.name, **_plain(_asdict_shallow(self.agent.config))}
        return out


#: Section name -> dataclass, in file order. ``agent`` is validated against the agent's Config.
SECTIONS: dict[str, type] = {
    "run": RunConfig,
    "env": EnvConfig,
    "sampler": SamplerConfig,
    "evaluation": EvaluationConfig,
}
_ALL_SECTIONS = (*SECTIONS, "agent")


def _asdict_shallow(obj: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    raise ConfigError(f"agent config must be a dataclass instance, got {type(obj).__name__}")


def _plain(value: Any) -> Any:
    """Tuples to lists, nested dataclasses to dicts, recursively (yaml.safe_dump rejects tuples)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# Type checking of one value against an annotation.


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class _Mismatch(Exception):
    """Internal: a value does not fit an annotation; carries the expected type's name."""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None) or tp is None:
        return "null"
    if tp is Any:
        return "any"
    if origin is Literal:
        return "one of " + choices(typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = typing.get_args(tp)
        base = getattr(origin, "__name__", str(origin))
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        if origin in (list, Sequence, tuple) and args:
            return f"list of {_type_name(args[0])}"
        if origin in (dict, Mapping):
            return "mapping"
        return base
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` converted to ``tp`` (ints to float, lists to tuple), or raise."""
    if tp is Any or tp is object:
        return value
    if tp is type(None) or tp is None:
        if value is None:
            return None
        raise _Mismatch
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed and not (
            isinstance(value, bool) and not any(isinstance(a, bool) for a in allowed)
        ):
            return value
        raise ConfigError(f"{where}: invalid value {value!r}; valid choices: {choices(allowed)}")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        # A precise error (a Literal's choices, a bad list item) beats "expected X or Y" when
        # nothing else in the union fits.
        precise: ConfigError | None = None
        for arg in args:
            try:
                return _convert(value, arg, where)
            except _Mismatch:
                continue
            except ConfigError as err:
                precise = err
        if precise is not None and value is not None:
            raise precise
        raise _Mismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            # PyYAML follows YAML 1.1, which reads 1e-3 (no dot) as a string.
            value = float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{where}: must be a finite number, got {value!r}")
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        args = typing.get_args(tp)
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ConfigError(
                    f"{where}: expected a list of {len(args)} items, got {len(value)}: {value!r}"
                )
            return tuple(
                _convert_item(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))
            )
        item = args[0] if args else Any
        items = [_convert_item(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list or tp is list else tuple(items)
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _Mismatch
        args = typing.get_args(tp)
        key_tp, value_tp = args if args else (Any, Any)
        out = {}
        for k, v in value.items():
            out[_convert_item(k, key_tp, f"{where} key {k!r}")] = _convert_item(
                v, value_tp, f"{where}.{k}"
            )
        return out
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise _Mismatch
        return build_dataclass(tp, value, section=where)
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _Mismatch
    # An annotation we cannot interpret (a forward reference that did not resolve): accept.
    return value


def _convert_item(value: Any, tp: Any, where: str) -> Any:
    """:func:`_convert` for an item of a list or mapping: a mismatch names the item."""
    try:
        return _convert(value, tp, where)
    except _Mismatch:
        raise ConfigError(
            f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})"
        ) from None


def _check_bounds(value: Any, meta: Mapping[str, Any], where: str) -> None:
    if value is None:
        return
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        if "gt" in meta and not v > meta["gt"]:
            raise ConfigError(f"{where}: must be > {meta['gt']}, got {value!r}")
        if "min" in meta and not v >= meta["min"]:
            raise ConfigError(f"{where}: must be >= {meta['min']}, got {value!r}")


def _suggest(key: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}? " if close else ""


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to no type checks
        return {f.name: Any for f in dataclasses.fields(cls)}


def build_dataclass(
    cls: type,
    data: Mapping[str, Any] | None,
    *,
    section: str,
    origin: Mapping[str, str] | None = None,
) -> Any:
    """Build the frozen dataclass ``cls`` from ``data``, strictly.

    Args:
        cls: a dataclass; field metadata ``gt``/``min`` (see :func:`positive`) bound numbers.
        data: the section's mapping; missing fields take their defaults.
        section: dotted name used in messages, e.g. ``"run"``.
        origin: key -> where its value came from (``"--set run.seed=x"``), for messages.

    Raises:
        ConfigError: unknown key, wrong type, out-of-range value, or a ``__post_init__`` that
            rejected the combination.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"section {section!r} must be a mapping of keys to values, got {type(data).__name__} {data!r}"
        )
    origin = origin or {}
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            source = f" (from {origin[key]})" if key in origin else ""
            raise ConfigError(
                f"unknown key {key!r} in section {section!r}{source}; {_suggest(str(key), list(fields))}valid keys: {choices(fields)}"
            )
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        where = f"{section}.{name}"
        tp = hints.get(name, Any)
        try:
            converted = _convert(value, tp, where)
        except _Mismatch:
            source = f" (from {origin[name]})" if name in origin else ""
            raise ConfigError(
                f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__}){source}"
            ) from None
        _check_bounds(converted, fields[name].metadata, where)
        kwargs[name] = converted
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"section {section!r} is missing required key(s) {choices(missing)}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        # A Config's __post_init__ checks combinations of fields; keep its message on one line.
        message = " ".join(str(err).split())
        raise ConfigError(f"section {section!r}: {message}") from None


# --------------------------------------------------------------------------------------------
# Files, overrides and the whole config.


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the last
    one silently, so a repeated field would override the first without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: construct_mapping reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}; give each key once",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``.

    Raises:
        ConfigError: the file is missing, unreadable, not valid YAML (a key given twice in one
            mapping included), or not a mapping.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {str(path)!r}")
    if path.is_dir():
        raise ConfigError(f"config path is a directory, not a YAML file: {str(path)!r}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {str(path)!r}: {err}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"malformed YAML in {str(path)!r}{at}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping of sections ({choices(_ALL_SECTIONS)}), got {type(data).__name__}"
        )
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``section.key=value`` into the key path and the YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. run.seed=3")
    dotted, raw = text.split("=", 1)
    path = [p.strip() for p in dotted.strip().split(".")]
    if len(path) < 2 or not all(path):
        raise ConfigError(
            f"override {text!r} must name section.key, e.g. run.seed=3; valid sections: {choices(_ALL_SECTIONS)}"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        # Not YAML (e.g. an unbalanced bracket): keep the text; type checking reports it.
        value = raw
    return path, value


def apply_overrides(
    data: Mapping[str, Any], overrides: Sequence[str]
) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """Apply dotted ``section.key=value`` overrides to a raw config mapping.

    Returns:
        The new mapping and, per section, key -> the override text, for error messages.

    Raises:
        ConfigError: malformed override, unknown section, or a key that is not a field of a
            fixed section (the message lists the valid keys).
    """
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in data.items()}
    origin: dict[str, dict[str, str]] = {}
    for text in overrides:
        path, value = parse_override(text)
        section, key = path[0], path[1]
        if section not in _ALL_SECTIONS:
            raise ConfigError(
                f"unknown section {section!r} in --set {text}; {_suggest(section, _ALL_SECTIONS)}valid sections: {choices(_ALL_SECTIONS)}"
            )
        if section in SECTIONS:
            valid = [f.name for f in dataclasses.fields(SECTIONS[section])]
            if key not in valid:
                raise ConfigError(
                    f"unknown key {key!r} in --set {text}; {_suggest(key, valid)}valid keys of {section}: {choices(valid)}"
                )
        target = out.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"section {section!r} must be a mapping, got {target!r}")
        if len(path) > 2:
            # Nested keys go into mapping fields such as env.kwargs.task_in_obs.
            node = target.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text}: {section}.{key} is {node!r}, not a mapping")
            node = dict(node)
            target[key] = node
            for part in path[2:-1]:
                child = node.get(part, {})
                if not isinstance(child, dict):
                    raise ConfigError(f"--set {text}: {part!r} is {child!r}, not a mapping")
                node[part] = dict(child)
                node = node[part]
            node[path[-1]] = value
        else:
            target[key] = value
        origin.setdefault(section, {})[key] = f"--set {text}"
    return out, origin


def parse_config(
    data: Mapping[str, Any],
    *,
    agent_configs: Callable[[str], type],
    default_name: str | None = None,
    origin: Mapping[str, Mapping[str, str]] | None = None,
) -> Config:
    """Validate a raw mapping into a :class:`Config`.

    Args:
        data: ``{section: {key: value}}`` as read from YAML.
        agent_configs: agent name -> that agent's ``Config`` dataclass; raises
            :class:`ConfigError` for an unknown agent (the registry's ``agent_config``).
        default_name: ``run.name`` when the file gives none (the config file's stem).
        origin: from :func:`apply_overrides`, for messages.

    Raises:
        ConfigError: anything wrong, on one line.
    """
    origin = origin or {}
    for section in data:
        if section not in _ALL_SECTIONS:
            raise ConfigError(
                f"unknown section {section!r}; {_suggest(str(section), _ALL_SECTIONS)}valid sections: {choices(_ALL_SECTIONS)}"
            )
    built: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        raw = data.get(section)
        if (
            section == "run"
            and default_name is not None
            and (raw is None or (isinstance(raw, Mapping) and "name" not in raw))
        ):
            raw = {**(raw or {}), "name": default_name}
        built[section] = build_dataclass(cls, raw, section=section, origin=origin.get(section))
    raw_agent = data.get("agent")
    if not isinstance(raw_agent, Mapping) or "name" not in raw_agent:
        raise ConfigError(
            "section 'agent' must give the agent's name, e.g. agent: {name: maml-trpo}; `metarl agents` lists them"
        )
    agent_name = raw_agent["name"]
    if not isinstance(agent_name, str):
        raise ConfigError(
            f"agent.name: expected str, got {agent_name!r} ({type(agent_name).__name__})"
        )
    agent_cls = agent_configs(agent_name)
    fields = {k: v for k, v in raw_agent.items() if k != "name"}
    agent_origin = dict(origin.get("agent", {}))
    agent_config = build_dataclass(agent_cls, fields, section="agent", origin=agent_origin)
    return Config(agent=AgentSection(name=agent_name, config=agent_config), **built)


def load_config(
    path: str | Path,
    *,
    agent_configs: Callable[[str], type],
    overrides: Sequence[str] = (),
) -> Config:
    """Load, override and validate the config at ``path``; ``run.name`` defaults to its stem."""
    data = load_yaml(path)
    data, origin = apply_overrides(data, overrides)
    return parse_config(
        data, agent_configs=agent_configs, default_name=Path(path).stem, origin=origin
    )


class _Dumper(yaml.SafeDumper):
    """Sections and mappings in block style, lists of scalars inline (``[64, 64]``)."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flat = all(not isinstance(v, (list, dict)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


_Dumper.add_representer(list, _represent_list)


def to_yaml(config: Config) -> str:
    """The resolved config as YAML, sections in file order."""
    return yaml.dump(
        config.to_dict(),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
    )


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its attribute docstring (the string literal under the field), from source.

    Fields inherited from dataclass bases take the docstring written in the class that declares
    them (a subclass that redeclares a field and documents it wins). Returns an empty string for
    a field without one, and ``{}`` when no class's source is available.
    """
    docs = {f.name: "" for f in dataclasses.fields(cls)}
    found = False
    # Most-derived last, so that a redeclared field keeps the subclass's docstring.
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        found = True
        tree = ast.parse(source)
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and node.target.id in docs
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs if found else {}
