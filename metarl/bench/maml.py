"""Seconds per MAML-TRPO meta-update: tasks vectorised with ``vmap`` against a per-task loop.

``metarl bench maml --json`` times one complete outer step of :class:`~metarl.agents.maml.MAMLTRPO`
(adaptation with the exact second-order graph, surrogate and its meta-gradient, mean KL through
the adaptation, conjugate gradient on exact Hessian-vector products, backtracking line search that
re-adapts at every trial) on the problem of the MAML paper's locomotion runs: 40 tasks × 20
episodes × 200 steps per support and per query batch, HalfCheetah-sized observations (17) and
actions (6), a 2×100 ReLU policy (Finn et al. 2017 §5.3).

The data are synthetic (random observations, actions and normalised advantages, every step
valid), so the benchmark needs no simulator and times learning only; collection is timed by
``metarl bench sampler``. Two contenders run the same update from the same parameters on the same
data: ``vmap`` (``vectorized=True``: all tasks in one batched computation) and ``loop``
(``vectorized=False``: a Python loop over tasks, as per-task MAML implementations do). Each figure
is the median over ``--repeats`` (at least 3) interleaved repetitions, on the CPU and, when one is
available, on CUDA (after one untimed warm-up there).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import types
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metarl.agents.maml import MAMLTRPO, TaskData
from metarl.errors import ConfigError

__all__ = ["add_arguments", "run"]

_SEED = 0
_MODES = ("vmap", "loop")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``metarl bench maml``."""
    parser.add_argument("--num-tasks", type=int, default=40, help="tasks in the meta-batch (default: 40)")
    parser.add_argument("--episodes", type=int, default=20, help="episodes per task per batch (default: 20)")
    parser.add_argument("--steps", type=int, default=200, help="steps per episode (default: 200)")
    parser.add_argument("--obs-dim", type=int, default=17, help="observation size (default: 17, HalfCheetah)")
    parser.add_argument("--act-dim", type=int, default=6, help="action size (default: 6, HalfCheetah)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[100, 100], help="hidden sizes (default: 100 100)")
    parser.add_argument("--inner-steps", type=int, default=1, help="inner steps, one support batch each (default: 1)")
    parser.add_argument("--first-order", action="store_true", help="time first-order MAML instead")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions, at least 3 (default: 3)")
    parser.add_argument(
        "--devices", default=None, help="comma-separated devices (default: cpu, and cuda when available)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")


def _synthetic_data(num_tasks: int, episodes: int, steps: int, obs_dim: int, act_dim: int, *, seed: int, device: torch.device) -> TaskData:
    """One batch of per-task data with every step valid and advantages normalised per task."""
    gen = torch.Generator().manual_seed(seed)
    m = episodes * steps
    advantages = torch.randn(num_tasks, m, generator=gen)
    advantages = (advantages - advantages.mean(1, keepdim=True)) / advantages.std(1, keepdim=True)
    return TaskData(
        observations=torch.randn(num_tasks, m, obs_dim, generator=gen).to(device),
        actions=torch.randn(num_tasks, m, act_dim, generator=gen).to(device),
        advantages=advantages.to(device),
        weights=torch.full((num_tasks, m), 1.0 / m).to(device),
        mask=torch.ones(num_tasks, m, dtype=torch.bool, device=device),
    )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Time both contenders on every device and return the figures (prints nothing).

    Returns:
        ``{"problem": {...}, "repeats", "threads", "cpus", "results": {device: {"vmap_s",
        "loop_s", "loop_over_vmap", "vmap_runs_s", "loop_runs_s", "line_search_steps"}}}``;
        ``*_s`` are median seconds per meta-update and ``loop_over_vmap`` how many times faster
        the vectorised update is.

    Raises:
        ConfigError: a non-positive size, ``--repeats`` below 3, or an unknown or unavailable
            device.
    """
    sizes = {
        "num_tasks": args.num_tasks,
        "episodes": args.episodes,
        "steps": args.steps,
        "obs_dim": args.obs_dim,
        "act_dim": args.act_dim,
        "inner_steps": args.inner_steps,
    }
    for name, value in sizes.items():
        if int(value) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if int(args.repeats) < 3:
        raise ConfigError(f"--repeats must be at least 3 (the figure is a median), got {args.repeats}")
    if any(h < 1 for h in args.hidden):
        raise ConfigError(f"--hidden sizes must be positive, got {args.hidden}")
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be a positive integer, got {args.threads}")
        torch.set_num_threads(int(args.threads))
    if args.devices is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [d.strip() for d in args.devices.split(",") if d.strip()]
        if not devices:
            raise ConfigError(f"--devices names no device, got {args.devices!r}; valid devices: 'cpu', 'cuda'")
    for name in devices:
        if name not in ("cpu", "cuda"):
            raise ConfigError(f"unknown device {name!r} in --devices; valid devices: 'cpu', 'cuda'")
        if name == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--devices names 'cuda' but torch sees no CUDA device")

    dist = types.SimpleNamespace(
        name="synthetic",
        observation_space=gym.spaces.Box(-np.inf, np.inf, (args.obs_dim,), dtype=np.float32),
        action_space=gym.spaces.Box(-1.0, 1.0, (args.act_dim,), dtype=np.float32),
    )
    results: dict[str, Any] = {}
    num_params = 0
    for name in devices:
        device = torch.device(name)
        supports = [
            _synthetic_data(args.num_tasks, args.episodes, args.steps, args.obs_dim, args.act_dim, seed=_SEED + k, device=device)
            for k in range(args.inner_steps)
        ]
        query = _synthetic_data(args.num_tasks, args.episodes, args.steps, args.obs_dim, args.act_dim, seed=_SEED + 100, device=device)
        agents = {}
        for mode in _MODES:
            config = MAMLTRPO.Config(
                hidden_sizes=tuple(args.hidden),
                num_inner_steps=args.inner_steps,
                first_order=bool(args.first_order),
                vectorized=mode == "vmap",
            )
            agents[mode] = MAMLTRPO(config, dist=dist, device=device, seed=_SEED)
        initial = agents["vmap"].state_dict()
        num_params = sum(p.numel() for p in agents["vmap"].net.parameters())
        runs: dict[str, list[float]] = {mode: [] for mode in _MODES}
        line_search: dict[str, float] = {}
        repetitions = int(args.repeats) + (1 if device.type == "cuda" else 0)
        for rep in range(repetitions):
            for mode in _MODES:
                agent = agents[mode]
                agent.load_state_dict(initial)
                _synchronize(device)
                start = time.perf_counter()
                metrics = agent.meta_update(supports, query)
                _synchronize(device)
                elapsed = time.perf_counter() - start
                line_search[mode] = metrics["meta_train/line_search_steps"]
                if device.type == "cuda" and rep == 0:
                    continue  # warm-up: kernel selection and the caching allocator
                runs[mode].append(elapsed)
        vmap_s, loop_s = statistics.median(runs["vmap"]), statistics.median(runs["loop"])
        results[name] = {
            "vmap_s": vmap_s,
            "loop_s": loop_s,
            "loop_over_vmap": loop_s / vmap_s,
            "vmap_runs_s": runs["vmap"],
            "loop_runs_s": runs["loop"],
            "line_search_steps": line_search,
        }
        if device.type == "cuda":
            results[name]["device_name"] = torch.cuda.get_device_name(device)
    return {
        "problem": {
            **sizes,
            "hidden_sizes": list(args.hidden),
            "first_order": bool(args.first_order),
            "samples_per_batch": args.num_tasks * args.episodes * args.steps,
            "num_params": num_params,
            "data": "synthetic TaskData (random observations/actions, per-task normalised advantages); no env",
        },
        "repeats": int(args.repeats),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "results": results,
    }
