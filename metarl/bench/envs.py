"""Environment steps per second: metarl's batched env against gymnasium's vector envs and MuJoCo.

``metarl bench envs --env halfcheetah-vel --slots 64 --json`` times, with the same random actions
and slot count:

- ``metarl``: the family's batched env (``dist.make_batched`` with its defaults, ``stepper`` in
  the result says how it steps: for MuJoCo on more than one core, one process per core), ended
  slots reset by mask;
- ``gymnasium_sync`` / ``gymnasium_async``: ``gymnasium.vector.SyncVectorEnv`` /
  ``AsyncVectorEnv`` over the family's single-task env (their default autoreset);
- ``ceiling`` (MuJoCo families only): one bare ``mujoco.rollout`` call over all threads, from the
  same reset states with the same controls held for ``frame_skip`` physics steps, counted in env
  steps (``slots * steps`` per call): the physics alone, with no observation, reward or reset.

Each figure is the median over ``--repeats`` (at least 3) interleaved repetitions: repetition 1
of every contender, then repetition 2 of every contender, and so on, so that load from other
processes hits all of them alike. ``ratios`` divides metarl's figure by the ceiling's and by the
faster gymnasium vector env's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from mujoco import rollout

from metarl.envs import make
from metarl.envs.locomotion import LocomotionDistribution
from metarl.errors import ConfigError
from metarl.types import Task, TaskDistribution

__all__ = ["add_arguments", "run", "ceiling_contender", "random_actions", "parallel_kwargs"]

_SEED = 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``metarl bench envs``."""
    parser.add_argument(
        "--env", default="halfcheetah-vel", help="task family (default: halfcheetah-vel)"
    )
    parser.add_argument(
        "--preset", default=None, help="preset of the family (default: the family's default)"
    )
    parser.add_argument(
        "--slots", type=int, default=64, help="environment slots stepped together (default: 64)"
    )
    parser.add_argument(
        "--steps", type=int, default=200, help="env steps per repetition (default: 200)"
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="interleaved repetitions, at least 3 (default: 5)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for metarl and the ceiling (default: all cores)",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Time every contender and return the figures (prints nothing).

    Returns:
        ``{"env", "preset", "slots", "steps", "repeats", "cpus", "threads", "stepper", "steps_per_s":
        {"metarl", "gymnasium_sync", "gymnasium_async", "ceiling"}, "ratios": {...}}`` with
        medians in env steps per second (``ceiling`` is ``None`` for non-MuJoCo families).

    Raises:
        ConfigError: a non-positive ``--slots``/``--steps``/``--threads`` or ``--repeats`` below 3.
        EnvError: an unknown env or preset.
    """
    slots, steps, repeats = int(args.slots), int(args.steps), int(args.repeats)
    if slots < 1 or steps < 1:
        raise ConfigError(
            f"--slots and --steps must be positive, got --slots {slots} --steps {steps}"
        )
    if repeats < 3:
        raise ConfigError(f"--repeats must be at least 3 for a median, got {repeats}")
    cpus = os.cpu_count() or 1
    threads = cpus if args.threads is None else int(args.threads)
    if threads < 1:
        raise ConfigError(f"--threads must be positive, got {threads}")

    dist = make(args.env, args.preset)
    rng = np.random.default_rng(_SEED)
    tasks = dist.sample(slots, split="train", rng=rng)
    actions = random_actions(dist.action_space, steps, slots, rng)

    closers: list[Callable[[], None]] = []
    try:
        contenders: dict[str, Callable[[], float]] = {}
        # The process pool is forked first, before any thread of ours exists.
        async_env = gym.vector.AsyncVectorEnv([_env_factory(dist, task) for task in tasks])
        closers.append(async_env.close)
        sync_env = gym.vector.SyncVectorEnv([_env_factory(dist, task) for task in tasks])
        closers.append(sync_env.close)
        batched = dist.make_batched(tasks, **parallel_kwargs(dist, threads))
        closers.append(batched.close)
        contenders["metarl"] = lambda: _time_batched(batched, actions)
        contenders["gymnasium_sync"] = lambda: _time_vector(sync_env, actions)
        contenders["gymnasium_async"] = lambda: _time_vector(async_env, actions)
        ceiling = ceiling_contender(batched, actions, threads)
        if ceiling is not None:
            contenders["ceiling"], close_ceiling = ceiling
            closers.append(close_ceiling)

        rates: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(repeats):
            for name, timed in contenders.items():
                rates[name].append(timed())
    finally:
        for close in reversed(closers):
            close()

    medians = {name: statistics.median(values) for name, values in rates.items()}
    steps_per_s = {
        "metarl": medians["metarl"],
        "gymnasium_sync": medians["gymnasium_sync"],
        "gymnasium_async": medians["gymnasium_async"],
        "ceiling": medians.get("ceiling"),
    }
    best_gym = max(medians["gymnasium_sync"], medians["gymnasium_async"])
    ratios = {"metarl_vs_gymnasium": medians["metarl"] / best_gym}
    if "ceiling" in medians:
        ratios["metarl_vs_ceiling"] = medians["metarl"] / medians["ceiling"]
    return {
        "env": dist.name,
        "preset": dist.preset,
        "slots": slots,
        "steps": steps,
        "repeats": repeats,
        "cpus": cpus,
        "threads": threads,
        "stepper": getattr(batched, "stepper", None),
        "steps_per_s": steps_per_s,
        "ratios": ratios,
    }


def parallel_kwargs(dist: TaskDistribution, threads: int) -> dict[str, int]:
    """The ``make_batched`` option that gives a family's batched env ``threads`` cores:
    ``num_workers`` for Meta-World, ``num_threads`` for MuJoCo locomotion, none for the toy
    families (they step every slot as arrays in the calling thread)."""
    if dist.name.startswith("metaworld"):
        return {"num_workers": threads}
    if isinstance(dist, LocomotionDistribution):
        return {"num_threads": threads}
    return {}


def random_actions(
    space: gym.Space, steps: int, slots: int, rng: np.random.Generator
) -> np.ndarray:
    """``[steps, slots, *action]`` uniform random actions of ``space``, drawn before timing."""
    if isinstance(space, gym.spaces.Discrete):
        return rng.integers(space.start, space.start + space.n, size=(steps, slots))
    if isinstance(space, gym.spaces.Box):
        low = np.broadcast_to(space.low, space.shape)
        high = np.broadcast_to(space.high, space.shape)
        return rng.uniform(low, high, size=(steps, slots, *space.shape)).astype(space.dtype)
    raise ConfigError(f"bench envs cannot draw random actions for {space}")


def _env_factory(dist: TaskDistribution, task: Task) -> Callable[[], gym.Env]:
    def factory() -> gym.Env:
        return dist.make_env(task)

    return factory


def _time_batched(env: Any, actions: np.ndarray) -> float:
    env.reset(seed=_SEED)
    start = time.perf_counter()
    for step_actions in actions:
        _, _, terminated, truncated, _ = env.step(step_actions)
        done = terminated | truncated
        if done.any():
            env.reset(mask=done)
    elapsed = time.perf_counter() - start
    return actions.shape[0] * actions.shape[1] / elapsed


def _time_vector(env: gym.vector.VectorEnv, actions: np.ndarray) -> float:
    env.reset(seed=_SEED)
    start = time.perf_counter()
    for step_actions in actions:
        env.step(step_actions)
    elapsed = time.perf_counter() - start
    return actions.shape[0] * actions.shape[1] / elapsed


def ceiling_contender(
    batched: Any, actions: np.ndarray, threads: int
) -> tuple[Callable[[], float], Callable[[], None]] | None:
    """The bare-physics contender for a MuJoCo batched env and its closer (``None`` for other
    families)."""
    model = getattr(batched, "model", None)
    if not isinstance(model, mujoco.MjModel):
        return None
    frame_skip = batched.robot.frame_skip
    steps, slots = actions.shape[:2]
    batched.reset(seed=_SEED)
    initial = batched.physics_states()
    # [slots, steps * frame_skip, nu]: each env action held for frame_skip physics steps.
    control = np.ascontiguousarray(
        np.repeat(actions.transpose(1, 0, 2), frame_skip, axis=1), dtype=np.float64
    )
    models = [model] * slots
    datas = [mujoco.MjData(model) for _ in range(max(1, threads))]
    pool = rollout.Rollout(nthread=threads if threads > 1 else 0)

    def timed() -> float:
        start = time.perf_counter()
        pool.rollout(
            models,
            datas,
            initial,
            control,
            nstep=steps * frame_skip,
            skip_checks=True,
            initial_warmstart=None,
            state=None,
            sensordata=None,
            chunk_size=None,
        )
        return steps * slots / (time.perf_counter() - start)

    return timed, pool.close
