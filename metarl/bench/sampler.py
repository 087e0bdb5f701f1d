"""Collection throughput with a policy in the loop: metarl's sampler against vector-env anchors.

``metarl bench sampler --env halfcheetah-vel --slots 64 --json`` collects one episode on each of
``--slots`` slots with the same ``[64, 64]`` tanh Gaussian MLP policy (one batched forward per
step, on ``--device``) through:

- ``metarl``: :class:`metarl.sampler.Sampler` over the family's batched env;
- ``gymnasium_sync`` / ``gymnasium_async``: gymnasium's ``SyncVectorEnv`` / ``AsyncVectorEnv`` over
  the single-task env;
- ``sb3_subproc``: Stable-Baselines3's ``SubprocVecEnv`` over the single-task env;
- ``ceiling``: bare ``mujoco.rollout`` with random controls on all cores (no policy), from
  :mod:`metarl.bench.envs` (MuJoCo locomotion families only);
- ``metaworld_async`` (Meta-World families only): Meta-World's own
  ``gymnasium.make_vec("Meta-World/ML10-train", vector_strategy="async", ...)``, one process per
  env, stepped with the same policy; our side is the process-pool backend.

Figures are env steps per second, the median of ``--repeats`` interleaved repetitions (one of
each contender, then the next round), so load from other processes hits all alike.
``time_split`` is metarl's own split of its collection time into env, policy and sampler
bookkeeping (median repetition).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metarl.bench import bench_device
from metarl.bench.envs import ceiling_contender, parallel_kwargs, random_actions
from metarl.envs import make
from metarl.errors import ConfigError
from metarl.sampler import Sampler
from metarl.types import Policy, StepInputs, TaskDistribution

__all__ = ["add_arguments", "run", "MLPPolicy"]

_SEED = 0


class MLPPolicy(Policy):
    """A ``[64, 64]`` tanh Gaussian MLP with fixed std 0.5, acting on the whole batch.

    It only ever acts (no gradients), so the forward pass is written as a few fused ops on
    plain tensors: three ``addmm``, in-place ``tanh``, and the log-density from the noise alone
    (``log N(a; μ, σ²) = −|ε|²/2 − A·log(σ√(2π))`` with ``a = μ + σε``). Every contender runs this
    same network, so its cost is common to all of them.
    """

    def __init__(self, obs_dim: int, act_dim: int, *, device: torch.device, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.device = device
        sizes = [obs_dim, 64, 64, act_dim]
        # (weight transposed to [in, out], bias) per layer, on the device, without autograd.
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []
        for i in range(3):
            weight = torch.randn((sizes[i + 1], sizes[i]), generator=gen) / np.sqrt(sizes[i])
            self.layers.append((weight.t().contiguous().to(device), torch.zeros(sizes[i + 1], device=device)))
        self.std = 0.5
        self.log_norm = -act_dim * (math.log(self.std) + 0.5 * math.log(2 * math.pi))
        self.gen = torch.Generator(device=device).manual_seed(seed)

    def initial_state(self, task_index: torch.Tensor) -> None:
        return None

    def mean(self, obs: torch.Tensor) -> torch.Tensor:
        hidden = obs
        for i, (weight, bias) in enumerate(self.layers):
            hidden = torch.addmm(bias, hidden, weight)
            if i < len(self.layers) - 1:
                hidden = hidden.tanh_()
        return hidden

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.mean(obs)
        noise = torch.randn(mean.shape, generator=self.gen, device=mean.device)
        action = mean.add_(noise, alpha=self.std)
        log_prob = noise.square_().sum(-1).mul_(-0.5).add_(self.log_norm)
        return action, log_prob

    def act(self, inputs: StepInputs, state: None) -> tuple[torch.Tensor, None, dict[str, torch.Tensor]]:
        action, log_prob = self.forward(inputs.obs)
        return action, state, {"log_prob": log_prob}

    def numpy_act(self, obs: np.ndarray) -> np.ndarray:
        """For the vector-env anchors: numpy in, numpy out, through the same network."""
        with torch.no_grad():
            action, _ = self.forward(torch.as_tensor(obs, dtype=torch.float32, device=self.device))
        return action.cpu().numpy()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``metarl bench sampler``."""
    parser.add_argument("--env", default="halfcheetah-vel", help="task family (default: halfcheetah-vel)")
    parser.add_argument("--preset", default=None, help="preset of the family (default: the family's default)")
    parser.add_argument("--slots", type=int, default=64, help="slots (one episode each) per collection (default: 64)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repetitions, at least 3 (default: 5)")
    parser.add_argument("--device", default="cpu", help="policy device: auto, cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=None, help="env threads/workers (default: all cores)")
    parser.add_argument(
        "--anchors",
        default=None,
        help="comma-separated anchors to time: gymnasium_sync, gymnasium_async, sb3_subproc, ceiling, "
        "metaworld_async (default: the first four; metaworld_async and gymnasium_async for Meta-World)",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Time metarl's sampler and the anchors; returns the figures (prints nothing)."""
    slots, repeats = int(args.slots), int(args.repeats)
    if slots < 1:
        raise ConfigError(f"--slots must be positive, got {slots}")
    if repeats < 3:
        raise ConfigError(f"--repeats must be at least 3 for a median, got {repeats}")
    valid = {"gymnasium_sync", "gymnasium_async", "sb3_subproc", "ceiling", "metaworld_async"}
    is_metaworld = str(args.env).startswith("metaworld")
    default = "metaworld_async,gymnasium_async" if is_metaworld else "gymnasium_sync,gymnasium_async,sb3_subproc,ceiling"
    anchors = [a for a in str(args.anchors or default).split(",") if a]
    for a in anchors:
        if a not in valid:
            raise ConfigError(f"unknown anchor {a!r}; valid anchors: {', '.join(sorted(valid))}")
    device = torch.device(bench_device(str(args.device)))
    cpus = os.cpu_count() or 1
    threads = cpus if args.threads is None else int(args.threads)
    if threads < 1:
        raise ConfigError(f"--threads must be positive, got {threads}")

    if device.type == "cpu":
        # The env threads own the cores; a 64-unit MLP gains nothing from intra-op threads and
        # loses much to their spinning. Applies to every contender alike.
        torch.set_num_threads(1)
    dist = make(args.env, args.preset)
    rng = np.random.default_rng(_SEED)
    tasks = dist.sample(slots, split="train", rng=rng)
    obs_dim = int(np.prod(dist.observation_space.shape))
    act_dim = int(np.prod(dist.action_space.shape))
    policy = MLPPolicy(obs_dim, act_dim, device=device)
    steps = dist.max_episode_steps

    closers: list[Callable[[], None]] = []
    splits: list[dict[str, float]] = []
    try:
        contenders: dict[str, Callable[[], float]] = {}
        # Process pools are started before any thread of ours exists.
        if "metaworld_async" in anchors:
            if not is_metaworld:
                raise ConfigError(f"anchor 'metaworld_async' needs a Meta-World env, got --env {args.env}")
            mw_env = _metaworld_vec(dist, slots)
            closers.append(mw_env.close)
            contenders["metaworld_async"] = lambda: _time_vector(mw_env, policy, steps)
        if "gymnasium_async" in anchors:
            async_env = gym.vector.AsyncVectorEnv([_factory(dist, t) for t in tasks])
            closers.append(async_env.close)
            contenders["gymnasium_async"] = lambda: _time_vector(async_env, policy, steps)
        if "sb3_subproc" in anchors:
            from stable_baselines3.common.vec_env import SubprocVecEnv

            sb3_env = SubprocVecEnv([_factory(dist, t) for t in tasks], start_method="forkserver")
            closers.append(sb3_env.close)
            contenders["sb3_subproc"] = lambda: _time_sb3(sb3_env, policy, steps)
        if "gymnasium_sync" in anchors:
            sync_env = gym.vector.SyncVectorEnv([_factory(dist, t) for t in tasks])
            closers.append(sync_env.close)
            contenders["gymnasium_sync"] = lambda: _time_vector(sync_env, policy, steps)
        env_kwargs = parallel_kwargs(dist, threads)
        sampler = Sampler(dist, seed=_SEED, device=device, env_kwargs=env_kwargs)
        closers.append(sampler.close)

        def time_metarl() -> float:
            batch = sampler.collect(policy, tasks, episodes_per_task=1)
            stats = sampler.stats
            splits.append(stats)
            return int(batch.mask.sum()) / stats["time/sample_s"]

        contenders = {"metarl": time_metarl, **contenders}
        time_metarl()  # warm-up: builds the batched env and its threads
        splits.clear()
        if "ceiling" in anchors:
            actions = random_actions(dist.action_space, steps, slots, rng)
            ceiling = ceiling_contender(sampler._env, actions, threads)
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
    median_rep = sorted(range(len(splits)), key=lambda i: splits[i]["time/sample_s"])[len(splits) // 2]
    split = splits[median_rep]
    total = split["time/sample_s"]
    vector_anchors = [medians[a] for a in ("gymnasium_async", "gymnasium_sync", "sb3_subproc", "metaworld_async") if a in medians]
    ratios: dict[str, float] = {}
    if vector_anchors:
        ratios["metarl_vs_best_vector_env"] = medians["metarl"] / max(vector_anchors)
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
        "device": str(device),
        "steps_per_s": {
            "metarl": medians["metarl"],
            "gymnasium_async": medians.get("gymnasium_async"),
            "gymnasium_sync": medians.get("gymnasium_sync"),
            "sb3_subproc": medians.get("sb3_subproc"),
            "ceiling": medians.get("ceiling"),
            **({"metaworld_async": medians["metaworld_async"]} if "metaworld_async" in medians else {}),
        },
        "ratios": ratios,
        "time_split": {
            "env_fraction": split["time/env_s"] / total,
            "policy_fraction": split["time/policy_s"] / total,
            "sampler_fraction": max(0.0, total - split["time/env_s"] - split["time/policy_s"]) / total,
            "sample_s": total,
        },
    }


def _factory(dist: TaskDistribution, task: Any) -> Callable[[], gym.Env]:
    def factory() -> gym.Env:
        return dist.make_env(task)

    return factory


def _metaworld_vec(dist: TaskDistribution, slots: int) -> gym.vector.VectorEnv:
    """Meta-World's own async vector env for the same benchmark and number of envs."""
    import metaworld  # noqa: F401 - registers the Meta-World/* ids

    family = dist.name
    if family == "metaworld-ml1":
        env = gym.make_vec("Meta-World/ML1-train", env_name=dist.preset, vector_strategy="async", seed=_SEED, meta_batch_size=slots)
    else:
        env_id = {"metaworld-ml10": "Meta-World/ML10-train", "metaworld-ml45": "Meta-World/ML45-train"}[family]
        env = gym.make_vec(env_id, vector_strategy="async", seed=_SEED, meta_batch_size=slots)
    # Meta-World's task-select wrapper has no task until asked to draw one.
    env.call("sample_tasks")
    return env


def _time_vector(env: gym.vector.VectorEnv, policy: MLPPolicy, steps: int) -> float:
    obs, _ = env.reset(seed=_SEED)
    start = time.perf_counter()
    for _ in range(steps):
        obs, *_ = env.step(policy.numpy_act(obs))
    return steps * env.num_envs / (time.perf_counter() - start)


def _time_sb3(env: Any, policy: MLPPolicy, steps: int) -> float:
    env.seed(_SEED)
    obs = env.reset()
    start = time.perf_counter()
    for _ in range(steps):
        obs, *_ = env.step(policy.numpy_act(obs))
    return steps * env.num_envs / (time.perf_counter() - start)
