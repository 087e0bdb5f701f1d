"""Names the command line and configs use for agents, task distributions and benchmarks.

This module and :mod:`metarl.cli` are the only core modules that import envs and agents
(design §2); they do so lazily, so listing names imports only what is asked for.

Plugins: user code registers its own agents and task distributions without editing metarl,
through two environment variables holding comma-separated ``name=module:attr`` entries::

    METARL_EXTRA_AGENTS="my-ppo=mypkg.agents:MyPPO"
    METARL_EXTRA_ENVS="my-reach=mypkg.envs:REACH"

An agent entry names a class with the agent interface (:class:`metarl.types.Agent`, a nested
``Config`` dataclass, the constructor ``Cls(config, *, dist, device, seed)``). An env entry names
a :class:`metarl.envs.Family` or any object or module with ``presets``/``PRESETS`` (name ->
factory returning a :class:`metarl.types.TaskDistribution`), ``default_preset``/
``DEFAULT_PRESET`` and ``summary``/``SUMMARY``; ``name=module`` alone uses the module itself.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import os
from collections.abc import Callable
from typing import Any

from metarl.errors import ConfigError, EnvError, MetarlError, choices

__all__ = [
    "AGENTS",
    "BENCHES",
    "EXTRA_AGENTS_VAR",
    "EXTRA_ENVS_VAR",
    "EnvFamily",
    "agent_class",
    "agent_config",
    "agent_summary",
    "agents",
    "bench_module",
    "benches",
    "env_families",
    "env_family",
    "make_env",
]

#: Built-in agents: registry name -> ``module:class``, imported only when used.
AGENTS: dict[str, str] = {
    "maml-trpo": "metarl.agents.maml:MAMLTRPO",
    "maml-ppo": "metarl.agents.maml:MAMLPPO",
    "reptile": "metarl.agents.maml:Reptile",
    "rl2": "metarl.agents.rl2:RL2",
    "varibad": "metarl.agents.varibad:VariBAD",
}

#: Benchmarks run by ``metarl bench <name>``: each module has ``add_arguments(parser)`` and
#: ``run(args) -> dict``.
BENCHES: dict[str, str] = {
    "envs": "metarl.bench.envs",
    "sampler": "metarl.bench.sampler",
    "maml": "metarl.bench.maml",
    "gridworld": "metarl.bench.gridworld",
    "tabular-mdp": "metarl.bench.tabular_mdp",
    "metaworld-protocol": "metarl.bench.metaworld_protocol",
}

EXTRA_AGENTS_VAR = "METARL_EXTRA_AGENTS"
EXTRA_ENVS_VAR = "METARL_EXTRA_ENVS"


def _is_missing(err: ModuleNotFoundError, module: str) -> bool:
    """Whether ``err`` says ``module`` itself (or a package above it) does not exist, as opposed
    to a dependency that the module imports being absent (a real error)."""
    missing = err.name or ""
    return module == missing or module.startswith(missing + ".")


def _load(target: str, *, what: str) -> Any:
    """Import ``module:attr`` (or ``module``); :class:`ConfigError` when it does not exist."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if _is_missing(err, module_name):
            raise ConfigError(f"{what}: module {module_name!r} not found") from None
        raise
    if not attr:
        return module
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{what}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _parse_extra(var: str) -> dict[str, str]:
    """``name=module:attr`` entries of the environment variable ``var``."""
    out: dict[str, str] = {}
    for entry in os.environ.get(var, "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        name, sep, target = entry.partition("=")
        if not sep or not name.strip() or not target.strip():
            raise ConfigError(f"{var}: entry {entry!r} must look like name=module:attr")
        out[name.strip()] = target.strip()
    return out


# --------------------------------------------------------------------------------------------
# Agents


def _agent_targets() -> dict[str, str]:
    return {**AGENTS, **_parse_extra(EXTRA_AGENTS_VAR)}


def _try_agent(name: str, target: str) -> type | None:
    """The class behind ``target``, or ``None`` when its module or class is not there yet."""
    try:
        return _load(target, what=f"agent {name!r}")
    except ConfigError:
        if name in AGENTS:
            return None  # a built-in whose module is not installed is simply not offered
        raise


def agents() -> dict[str, type]:
    """Every available agent, by registry name (imports the agent modules)."""
    out: dict[str, type] = {}
    for name, target in _agent_targets().items():
        cls = _try_agent(name, target)
        if cls is not None:
            out[name] = cls
    return out


def agent_class(name: str) -> type:
    """The agent class registered as ``name``.

    Raises:
        ConfigError: unknown or unavailable agent; the message lists the available ones.
    """
    targets = _agent_targets()
    cls = _try_agent(name, targets[name]) if name in targets else None
    if cls is None:
        raise ConfigError(f"unknown agent {name!r}; valid agents: {choices(agents())}")
    if not dataclasses.is_dataclass(getattr(cls, "Config", None)):
        raise ConfigError(
            f"agent {name!r} ({cls.__module__}.{cls.__qualname__}) has no nested Config dataclass"
        )
    return cls


def agent_config(name: str) -> type:
    """The ``Config`` dataclass of agent ``name`` (for :func:`metarl.config.parse_config`)."""
    return agent_class(name).Config


def agent_summary(cls: type) -> str:
    """The first line of the agent class's docstring."""
    doc = inspect.getdoc(cls) or ""
    return doc.strip().splitlines()[0] if doc.strip() else cls.__qualname__


# --------------------------------------------------------------------------------------------
# Task distributions


@dataclasses.dataclass(frozen=True)
class EnvFamily:
    """A task-distribution family as the CLI lists it."""

    name: str
    presets: dict[str, Callable[..., Any]]
    default_preset: str
    summary: str


def _extra_family(name: str, target: str) -> EnvFamily:
    obj = _load(target, what=f"env {name!r}")

    def read(attr: str) -> Any:
        for key in (attr, attr.upper()):
            if hasattr(obj, key):
                value = getattr(obj, key)
                # A module serving several families keys its tables by family name.
                if isinstance(value, dict) and name in value and attr != "presets":
                    return value[name]
                if (
                    isinstance(value, dict)
                    and attr == "presets"
                    and isinstance(value.get(name), dict)
                ):
                    return value[name]
                return value
        raise ConfigError(f"env {name!r}: {target!r} has no {attr!r} (or {attr.upper()!r})")

    return EnvFamily(
        name=name,
        presets=dict(read("presets")),
        default_preset=read("default_preset"),
        summary=read("summary"),
    )


def env_families() -> dict[str, EnvFamily]:
    """Every available task-distribution family (built-in and plugin), by name."""
    from metarl import envs

    out = {
        name: EnvFamily(
            name=f.name, presets=dict(f.presets), default_preset=f.default_preset, summary=f.summary
        )
        for name, f in envs.families().items()
    }
    for name, target in _parse_extra(EXTRA_ENVS_VAR).items():
        out[name] = _extra_family(name, target)
    return out


def env_family(name: str) -> EnvFamily:
    """The family called ``name``.

    Raises:
        EnvError: unknown family; the message lists the available ones.
    """
    extra = _parse_extra(EXTRA_ENVS_VAR)
    if name in extra:
        return _extra_family(name, extra[name])
    from metarl import envs

    try:
        fam = envs.family(name)
    except ModuleNotFoundError as err:
        if not (err.name or "").startswith("metarl."):
            # The family exists but a simulator it needs is not installed.
            raise EnvError(
                f"env {name!r} needs the module {err.name!r}, which is not installed"
            ) from None
        fam = None  # the family's own module is not there: not offered
    except EnvError:
        fam = None
    if fam is None:
        raise EnvError(f"unknown env {name!r}; valid envs: {choices(env_families())}")
    return EnvFamily(
        name=fam.name,
        presets=dict(fam.presets),
        default_preset=fam.default_preset,
        summary=fam.summary,
    )


def make_env(name: str, preset: str | None = None, **kwargs: Any) -> Any:
    """Build the task distribution ``name`` under ``preset`` (plugins included).

    Raises:
        EnvError: unknown family or preset (listing the valid ones), or a keyword argument the
            preset does not take.
    """
    fam = env_family(name)
    preset = fam.default_preset if preset is None else preset
    if preset not in fam.presets:
        raise EnvError(
            f"unknown preset {preset!r} for env {name!r}; valid presets: {choices(fam.presets)}"
        )
    factory = fam.presets[preset]
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError:
        params = inspect.signature(factory).parameters
        valid = [
            p for p, v in params.items() if v.kind in (v.KEYWORD_ONLY, v.POSITIONAL_OR_KEYWORD)
        ]
        bad = [k for k in kwargs if k not in params]
        raise EnvError(
            f"env.kwargs {choices(bad) if bad else choices(kwargs)} not accepted by {name!r} preset {preset!r}; valid kwargs: {choices(valid) or 'none'}"
        ) from None
    except ValueError:
        pass  # no introspectable signature: let the factory check its arguments
    return factory(**kwargs)


# --------------------------------------------------------------------------------------------
# Benchmarks


def benches() -> list[str]:
    """Names of the benchmarks whose module is installed (found without importing it)."""
    out = []
    for name, module in BENCHES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            out.append(name)
    return out


def bench_module(name: str) -> Any:
    """Import the benchmark module ``name``.

    Raises:
        MetarlError: unknown or unavailable benchmark.
    """
    if name not in BENCHES or name not in benches():
        raise MetarlError(f"unknown bench {name!r}; valid benches: {choices(benches())}")
    return importlib.import_module(BENCHES[name])
