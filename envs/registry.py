"""The table of task-distribution families and their presets.

Each family module (``metarl.envs.<module>``) defines:

- ``PRESETS: dict[str, Callable[..., TaskDistribution]]``: preset name -> factory taking keyword
  overrides (e.g. ``task_in_obs=True``);
- ``DEFAULT_PRESET: str``;
- ``SUMMARY: str``: one line for ``metarl envs``.

A module serving several families (``mujoco``, ``metaworld``) makes each of these a dict keyed by
family name. The single-task env of every family is registered with gymnasium under the id in
:data:`GYM_IDS`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from metarl.errors import EnvError, choices
from metarl.types import Task, TaskDistribution

__all__ = ["GYM_IDS", "Family", "families", "family", "make", "make_gym_env", "names", "register_gymnasium_ids"]

#: family name -> module under ``metarl.envs``; the module is imported only when used.
_FAMILY_MODULES: dict[str, str] = {
    "navigation-2d": "navigation",
    "bandit": "bandit",
    "tabular-mdp": "tabular",
    "gridworld": "gridworld",
    "halfcheetah-vel": "locomotion",
    "halfcheetah-dir": "locomotion",
    "ant-vel": "locomotion",
    "ant-dir": "locomotion",
    "ant-goal": "locomotion",
    "metaworld-ml1": "metaworld",
    "metaworld-ml10": "metaworld",
    "metaworld-ml45": "metaworld",
}


@dataclasses.dataclass(frozen=True)
class Family:
    """A family of task distributions and its presets."""

    name: str
    presets: dict[str, Callable[..., TaskDistribution]]
    default_preset: str
    summary: str


def _module(family: str) -> Any:
    return importlib.import_module(f"metarl.envs.{_FAMILY_MODULES[family]}")


def families() -> dict[str, Family]:
    """Every available family, by name (imports the family modules)."""
    out: dict[str, Family] = {}
    for name in _FAMILY_MODULES:
        try:
            out[name] = family(name)
        except ModuleNotFoundError:
            continue  # a family whose module is not written yet is simply not offered
    return out


def family(name: str) -> Family:
    """The :class:`Family` called ``name``."""
    if name not in _FAMILY_MODULES:
        raise EnvError(f"unknown env {name!r}; valid envs: {choices(_FAMILY_MODULES)}")
    module = _module(name)
    presets = module.PRESETS[name] if isinstance(module.PRESETS.get(name), dict) else module.PRESETS
    default = module.DEFAULT_PRESET[name] if isinstance(module.DEFAULT_PRESET, dict) else module.DEFAULT_PRESET
    summary = module.SUMMARY[name] if isinstance(module.SUMMARY, dict) else module.SUMMARY
    return Family(name=name, presets=dict(presets), default_preset=default, summary=summary)


def make(name: str, preset: str | None = None, **kwargs: Any) -> TaskDistribution:
    """Build the task distribution ``name`` under ``preset`` (the family's default if ``None``).

    Raises:
        EnvError: unknown family or preset; the message lists the valid ones.
    """
    fam = family(name)
    preset = fam.default_preset if preset is None else preset
    if preset not in fam.presets:
        raise EnvError(f"unknown preset {preset!r} for env {name!r}; valid presets: {choices(fam.presets)}")
    return fam.presets[preset](**kwargs)


def names() -> dict[str, list[str]]:
    """Family name -> its preset names."""
    return {name: sorted(fam.presets) for name, fam in families().items()}


#: gymnasium id -> family; every single-task env is ``gymnasium.make``-able under its id.
GYM_IDS: dict[str, str] = {
    "metarl/Navigation2D-v0": "navigation-2d",
    "metarl/Bandit-v0": "bandit",
    "metarl/TabularMDP-v0": "tabular-mdp",
    "metarl/GridWorld-v0": "gridworld",
    "metarl/HalfCheetahVel-v0": "halfcheetah-vel",
    "metarl/HalfCheetahDir-v0": "halfcheetah-dir",
    "metarl/AntVel-v0": "ant-vel",
    "metarl/AntDir-v0": "ant-dir",
    "metarl/AntGoal-v0": "ant-goal",
    "metarl/MetaWorldML1-v0": "metaworld-ml1",
    "metarl/MetaWorldML10-v0": "metaworld-ml10",
    "metarl/MetaWorldML45-v0": "metaworld-ml45",
}


def make_gym_env(
    *,
    family: str,
    preset: str | None = None,
    task: Task | None = None,
    split: str = "train",
    task_seed: int = 0,
    render_mode: str | None = None,
    **kwargs: Any,
) -> gym.Env:
    """Entry point behind the ``metarl/<Name>-v0`` ids.

    ``gymnasium.make("metarl/HalfCheetahVel-v0", preset="maml", task=task)`` binds the env to
    ``task``; without one it draws a task of ``split`` with ``np.random.default_rng(task_seed)``.
    Remaining keyword arguments go to the distribution (e.g. ``task_in_obs=True``).
    """
    dist = make(family, preset, **kwargs)
    if task is None:
        task = dist.sample(1, split=split, rng=np.random.default_rng(task_seed))[0]
    env_kwargs = {"render_mode": render_mode} if render_mode is not None else {}
    # make_env already applies the time limit; the ids are registered without
    # max_episode_steps, so gymnasium adds no second one.
    return dist.make_env(task, **env_kwargs)


def register_gymnasium_ids() -> None:
    """Register every family's single-task env as ``metarl/<Name>-v0`` with gymnasium.

    Entry points are strings, so registering imports no simulator.
    """
    for env_id, family_name in GYM_IDS.items():
        if env_id not in gym.registry:
            gym.register(
                id=env_id,
                entry_point="metarl.envs.registry:make_gym_env",
                kwargs={"family": family_name},
                disable_env_checker=True,
            )
