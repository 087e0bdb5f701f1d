"""The sampler: the only code that steps environments (design §4).

:meth:`Sampler.collect` runs a batched :class:`~metarl.types.Policy` on one slot per trial, calls
it once per step for all slots, and returns a time-major :class:`~metarl.types.TrialBatch`.

Layout. For ``tasks = [t_0, …, t_{N-1}]``, ``episodes_per_task = K`` and
``episodes_per_trial = E``, there are ``N·K/E`` slots, task-major: slots ``[i·K/E, (i+1)·K/E)``
run task ``t_i``. Each slot runs one trial of ``E`` episodes of its task; when an episode ends
inside the trial the slot's env is reset and the trial goes on at the next time index, so a
trial is contiguous in time and the policy's state carries across its episode boundaries. The
state starts from :meth:`Policy.initial_state` at each trial start and is never reset inside one.

Waves. With ``max_slots`` set, at most that many slots are stepped at once. Slots run in waves
of whole tasks when one task's trials fit in ``max_slots`` (so every wave holds the same number of
slots per task), else in waves of ``max_slots`` consecutive slots; either way ``task_index`` is
non-decreasing within a wave and the batch is laid out as without waves.

Faults. A worker-process backend that loses a worker raises :class:`~metarl.errors.WorkerLost`
after replacing it; the sampler then discards the whole wave's partial trials and runs the wave
again from fresh resets, so no partial or duplicate trial enters a batch. Restarts are counted in
``faults/worker_restarts``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metarl.envs.base import is_integer
from metarl.errors import EnvError, WorkerError, WorkerLost
from metarl.seeding import numpy_rng
from metarl.types import BatchedEnv, Policy, StepInputs, Task, TaskDistribution, TrialBatch

__all__ = ["Sampler", "CollectStats"]

logger = logging.getLogger(__name__)

#: Waves restarted at most this many times in one collection before giving up.
MAX_WAVE_RESTARTS = 10


# Tensor dtypes whose CPU tensors share memory with an equivalent numpy array (bfloat16, complex
# and the float8 types do not, or not always: their extras are written through torch).
_NUMPY_DTYPES = frozenset(
    {
        torch.float64,
        torch.float32,
        torch.float16,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
    }
)


@dataclasses.dataclass
class CollectStats:
    """Timings of collections, accumulated until :meth:`Sampler.pop_stats`."""

    sample_s: float = 0.0
    env_s: float = 0.0
    policy_s: float = 0.0
    env_steps: int = 0
    worker_restarts: int = 0

    def as_metrics(self) -> dict[str, float]:
        return {
            "time/sample_s": self.sample_s,
            "time/env_s": self.env_s,
            "time/policy_s": self.policy_s,
            "time/env_steps_per_s": self.env_steps / self.sample_s if self.sample_s > 0 else 0.0,
            "faults/worker_restarts": float(self.worker_restarts),
        }


def _tensor(array: np.ndarray, device: torch.device, dtype: type | None = None) -> torch.Tensor:
    """``array`` as a tensor on ``device`` (cast to ``dtype`` first when given).

    On the CPU a contiguous, writable array of the right type is wrapped without a copy, as
    ``torch.as_tensor`` would, but through ``torch.from_numpy``, which costs a fifth as much.
    """
    array = np.asarray(array, dtype=dtype)
    if device.type == "cpu" and array.flags.c_contiguous and array.flags.writeable:
        return torch.from_numpy(array)
    return torch.as_tensor(array, device=device)


def _prev_action_tensor(actions: np.ndarray, one_hot: np.ndarray | None, device: torch.device) -> torch.Tensor:
    """The previous actions as the policy sees them: one-hot rows for a discrete space."""
    return _tensor(actions if one_hot is None else one_hot[actions], device)


class Sampler:
    """Collects trials of a policy on tasks of one distribution.

    Args:
        dist: the task distribution whose batched envs are stepped.
        seed: root seed of the env reset seeds.
        device: where observations are sent for the policy and where the batch is returned.
        max_slots: at most this many slots are stepped at once (``None``: all).
        env_kwargs: keyword arguments for ``dist.make_batched`` (threads, workers, timeouts).
    """

    def __init__(
        self,
        dist: TaskDistribution,
        *,
        seed: int,
        device: torch.device | str = "cpu",
        max_slots: int | None = None,
        env_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if not is_integer(seed):
            raise EnvError(f"seed must be an integer, got {seed!r}")
        if max_slots is not None and max_slots <= 0:
            raise EnvError(f"max_slots must be positive or None, got {max_slots}")
        self.dist = dist
        self.device = torch.device(device)
        self.max_slots = max_slots
        self.env_kwargs = dict(env_kwargs or {})
        self._seed_rng = numpy_rng(seed, "sampler", "reset-seeds")
        self._env: BatchedEnv | None = None
        self.total_env_steps = 0
        self._last = CollectStats()
        self._pending = CollectStats()
        self._space = dist.action_space
        self._discrete = isinstance(self._space, gym.spaces.Discrete)

    # ------------------------------------------------------------------ public API
    @property
    def stats(self) -> dict[str, float]:
        """Timings of the last :meth:`collect`."""
        return self._last.as_metrics()

    def pop_stats(self) -> dict[str, float]:
        """Timings accumulated over every :meth:`collect` since the previous call, then reset."""
        out = self._pending.as_metrics()
        self._pending = CollectStats()
        return out

    def collect(
        self,
        policy: Policy,
        tasks: Sequence[Task],
        *,
        episodes_per_task: int,
        episodes_per_trial: int | None = None,
    ) -> TrialBatch:
        """Run ``policy`` for ``episodes_per_task`` episodes of every task.

        Args:
            policy: the batched policy; called once per step for all slots of a wave.
            tasks: the tasks; ``batch.task_index`` indexes this list.
            episodes_per_task: episodes per task, a multiple of ``episodes_per_trial``.
            episodes_per_trial: episodes per trial (default: the distribution's).

        Returns:
            A :class:`TrialBatch` on the sampler's device with one slot per trial and ``T`` the
            longest trial's length (at most ``episodes_per_trial × max_episode_steps``).

        Raises:
            EnvError: bad arguments, a non-finite observation or reward, or an episode that ran
                past ``max_episode_steps`` without being truncated.
        """
        tasks = tuple(tasks)
        if not tasks:
            raise EnvError("collect needs at least one task, got an empty list")
        per_trial = self.dist.episodes_per_trial if episodes_per_trial is None else episodes_per_trial
        if isinstance(per_trial, bool) or not isinstance(per_trial, int) or per_trial <= 0:
            raise EnvError(f"episodes_per_trial must be a positive integer, got {per_trial!r}")
        if isinstance(episodes_per_task, bool) or not isinstance(episodes_per_task, int) or episodes_per_task <= 0:
            raise EnvError(f"episodes_per_task must be a positive integer, got {episodes_per_task!r}")
        if episodes_per_task % per_trial:
            raise EnvError(
                f"episodes_per_task={episodes_per_task} is not a multiple of episodes_per_trial={per_trial}"
            )
        trials_per_task = episodes_per_task // per_trial
        num_slots = len(tasks) * trials_per_task
        all_task_index = np.repeat(np.arange(len(tasks), dtype=np.int64), trials_per_task)
        all_trial_index = np.tile(np.arange(trials_per_task, dtype=np.int64), len(tasks))
        wave_size = num_slots
        if self.max_slots is not None:
            # Whole tasks per wave when a task's trials fit, else max_slots slots per wave.
            wave_size = self.max_slots
            if trials_per_task <= self.max_slots:
                wave_size = self.max_slots // trials_per_task * trials_per_task
        start = time.perf_counter()
        stats = CollectStats()
        pieces: list[dict[str, Any]] = []
        for first in range(0, num_slots, wave_size):
            wave = slice(first, first + wave_size)
            pieces.append(
                self._collect_wave(policy, tasks, all_task_index[wave], all_trial_index[wave], per_trial, stats)
            )
        stats.sample_s = time.perf_counter() - start
        batch = self._assemble(pieces, tasks, num_slots)
        self.total_env_steps += stats.env_steps
        self._last = stats
        for field in dataclasses.fields(CollectStats):
            setattr(self._pending, field.name, getattr(self._pending, field.name) + getattr(stats, field.name))
        return batch

    def state_dict(self) -> dict[str, Any]:
        """The reset-seed generator and the step counter, for exact resume."""
        return {"seed_rng": self._seed_rng.bit_generator.state, "total_env_steps": self.total_env_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._seed_rng.bit_generator.state = state["seed_rng"]
        self.total_env_steps = int(state["total_env_steps"])

    def close(self) -> None:
        """Close the cached batched env (threads, worker processes)."""
        if self._env is not None:
            self._env.close()
            self._env = None

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _batched_env(self, slot_tasks: list[Task]) -> BatchedEnv:
        """The cached batched env rebound to ``slot_tasks`` (rebuilt when the size changes)."""
        if self._env is not None and self._env.num_slots == len(slot_tasks):
            self._env.set_tasks(slot_tasks)
            return self._env
        self.close()
        self._env = self.dist.make_batched(slot_tasks, **self.env_kwargs)
        return self._env

    def _collect_wave(
        self,
        policy: Policy,
        tasks: tuple[Task, ...],
        task_index: np.ndarray,
        trial_index: np.ndarray,
        episodes_per_trial: int,
        stats: CollectStats,
    ) -> dict[str, Any]:
        slot_tasks = [tasks[i] for i in task_index]
        env = self._batched_env(slot_tasks)
        for attempt in range(MAX_WAVE_RESTARTS + 1):
            seeds = self._seed_rng.integers(0, 2**31 - 1, size=len(slot_tasks))
            try:
                return self._run_wave(env, policy, slot_tasks, task_index, trial_index, episodes_per_trial, seeds, stats)
            except WorkerLost as lost:
                stats.worker_restarts += 1
                logger.warning(
                    "worker lost (%s); discarding the wave's partial trials and collecting them again (attempt %d)",
                    lost,
                    attempt + 1,
                )
        raise WorkerError(f"workers were lost {MAX_WAVE_RESTARTS + 1} times in one collection; giving up")

    def _run_wave(
        self,
        env: BatchedEnv,
        policy: Policy,
        slot_tasks: list[Task],
        task_index: np.ndarray,
        trial_index: np.ndarray,
        episodes_per_trial: int,
        seeds: np.ndarray,
        stats: CollectStats,
    ) -> dict[str, Any]:
        num = len(slot_tasks)
        horizon = self.dist.max_episode_steps * episodes_per_trial
        obs_shape = env.single_observation_space.shape
        act_shape = () if self._discrete else self._space.shape
        buf_obs = np.zeros((horizon, num, *obs_shape), dtype=np.float32)
        buf_next = np.zeros_like(buf_obs)
        buf_act = np.zeros((horizon, num, *act_shape), dtype=np.int64 if self._discrete else np.float32)
        buf_rew = np.zeros((horizon, num), dtype=np.float32)
        buf_term = np.zeros((horizon, num), dtype=bool)
        buf_trunc = np.zeros((horizon, num), dtype=bool)
        buf_trial_done = np.zeros((horizon, num), dtype=bool)
        buf_episode = np.zeros((horizon, num), dtype=np.int64)
        buf_step = np.zeros((horizon, num), dtype=np.int64)
        buf_mask = np.zeros((horizon, num), dtype=bool)
        buf_success = np.zeros((horizon, num), dtype=bool) if env.has_success else None
        extras: dict[str, torch.Tensor] = {}
        extras_np: dict[str, np.ndarray] = {}
        buffers = (buf_obs, buf_next, buf_act, buf_rew, buf_term, buf_trunc, buf_episode, buf_step, buf_mask, buf_success)

        t0 = time.perf_counter()
        obs, _ = env.reset(seed=[int(s) for s in seeds])
        stats.env_s += time.perf_counter() - t0
        self._check_finite(obs, "observation", slot_tasks, seeds)

        device = torch.device(policy.device) if hasattr(policy, "device") else self.device
        task_index_t = torch.as_tensor(task_index, device=device)
        state = policy.initial_state(task_index_t)
        cursor = np.zeros(num, dtype=np.int64)
        episode = np.zeros(num, dtype=np.int64)
        step_in_episode = np.zeros(num, dtype=np.int64)
        active = np.ones(num, dtype=bool)
        act_dim = self._space.n if self._discrete else int(np.prod(act_shape))
        # The previous step's action, reward and done flag, kept in numpy; each step's arrays are
        # fresh (never written again), so the deferred tensors built from them stay correct.
        # Discrete actions are kept as indices; -1 (no action yet) picks one_hot's zero last row.
        prev_action_np = np.full(num, -1, dtype=np.int64) if self._discrete else np.zeros((num, act_dim), dtype=np.float32)
        prev_reward_np = np.zeros(num, dtype=np.float32)
        prev_done_np = np.zeros(num, dtype=np.float32)
        last_episode = episodes_per_trial - 1
        one_hot = np.eye(act_dim + 1, act_dim, dtype=np.float32) if self._discrete else None
        slots = np.arange(num)
        low = high = None
        if isinstance(self._space, gym.spaces.Box):
            low, high = self._space.low, self._space.high

        # Every active slot is at time index t (a slot stays active from its trial's start on).
        for t in itertools.count():
            if not active.any():
                break
            if t >= horizon:
                slot = int(np.argmax(active))
                raise EnvError(
                    f"an episode ran past max_episode_steps={self.dist.max_episode_steps} without truncation "
                    f"in slot {slot} (task {slot_tasks[slot]}, reset seed {int(seeds[slot])})"
                )
            t_policy = time.perf_counter()
            # Inputs other than the observation are built only if the policy reads them.
            inputs = StepInputs(
                obs=_tensor(obs, device, np.float32),
                prev_action=functools.partial(_prev_action_tensor, prev_action_np, one_hot, device),
                prev_reward=functools.partial(_tensor, prev_reward_np, device),
                prev_done=functools.partial(_tensor, prev_done_np, device),
                episode_index=functools.partial(_tensor, np.minimum(episode, last_episode), device),
            )
            with torch.no_grad():
                action, state, step_extras = policy.act(inputs, state)
            action_np = action.detach().cpu().numpy()
            stats.policy_s += time.perf_counter() - t_policy

            # np.maximum/np.minimum: the same values as np.clip, without its per-call overhead.
            env_action = action_np if low is None else np.minimum(np.maximum(action_np, low), high)
            t_env = time.perf_counter()
            next_obs, reward, terminated, truncated, info = env.step(env_action)
            stats.env_s += time.perf_counter() - t_env
            self._check_finite(next_obs, "observation", slot_tasks, seeds)
            self._check_finite(reward, "reward", slot_tasks, seeds)

            if active.all() and (cursor == cursor[0]).all():
                # Fast path: every slot is at the same time index (no episode ended early).
                self._write_row(buffers, int(cursor[0]), obs, next_obs, action_np, reward, terminated, truncated, episode, step_in_episode, info)
                for key, value in step_extras.items():
                    if key not in extras:
                        extras[key] = torch.zeros((horizon, num, *value.shape[1:]), dtype=value.dtype, device=device)
                        if extras[key].device.type == "cpu" and extras[key].dtype in _NUMPY_DTYPES:
                            # A view of the tensor: rows are written through numpy, cheaper per step.
                            extras_np[key] = extras[key].numpy()
                    if key in extras_np:
                        extras_np[key][int(cursor[0])] = value.detach().numpy()
                    else:
                        extras[key][int(cursor[0])] = value.detach()
            else:
                rows, cols = cursor[active], slots[active]
                buf_obs[rows, cols] = obs[active]
                buf_next[rows, cols] = next_obs[active]
                buf_act[rows, cols] = action_np[active]
                buf_rew[rows, cols] = reward[active]
                buf_term[rows, cols] = terminated[active]
                buf_trunc[rows, cols] = truncated[active]
                buf_episode[rows, cols] = episode[active]
                buf_step[rows, cols] = step_in_episode[active]
                buf_mask[rows, cols] = True
                if buf_success is not None:
                    buf_success[rows, cols] = np.asarray(info["success"], dtype=bool)[active]
                if step_extras:
                    active_t = torch.as_tensor(active, device=device)
                    rows_t = torch.as_tensor(rows, device=device)
                    cols_t = torch.as_tensor(cols, device=device)
                    for key, value in step_extras.items():
                        if key not in extras:
                            extras[key] = torch.zeros((horizon, num, *value.shape[1:]), dtype=value.dtype, device=device)
                        extras[key][rows_t, cols_t] = value.detach()[active_t]
            stats.env_steps += int(active.sum())

            ended = (terminated | truncated) & active
            cursor += active
            step_in_episode += 1
            episode += ended
            trial_end = ended & (episode >= episodes_per_trial)
            buf_trial_done[cursor[trial_end] - 1, slots[trial_end]] = True
            active &= ~trial_end
            restart = ended & active
            obs = next_obs
            if restart.any():
                t_env = time.perf_counter()
                reset_obs, _ = env.reset(mask=restart)
                stats.env_s += time.perf_counter() - t_env
                self._check_finite(reset_obs, "observation", slot_tasks, seeds)
                obs = np.where(restart.reshape(-1, *([1] * len(obs_shape))), reset_obs, next_obs)
                step_in_episode[restart] = 0

            # Copies: an env may hand back the same reward buffer at every step.
            prev_reward_np = np.array(reward, dtype=np.float32)
            prev_done_np = ended.astype(np.float32)
            if self._discrete:
                prev_action_np = action_np.astype(np.int64)
            else:
                prev_action_np = action_np.astype(np.float32).reshape(num, -1)
        return {
            "observations": buf_obs,
            "next_observations": buf_next,
            "actions": buf_act,
            "rewards": buf_rew,
            "terminated": buf_term,
            "truncated": buf_trunc,
            "trial_done": buf_trial_done,
            "episode_index": buf_episode,
            "step_in_episode": buf_step,
            "mask": buf_mask,
            "success": buf_success,
            "task_index": task_index,
            "trial_index": trial_index,
            "extras": extras,
            "length": int(cursor.max()),
        }

    def _assemble(self, pieces: list[dict[str, Any]], tasks: tuple[Task, ...], num_slots: int) -> TrialBatch:
        """Concatenate waves along the slot axis, trimmed to the longest trial."""
        length = max(p["length"] for p in pieces)

        def cat(key: str, time_major: bool = True) -> torch.Tensor:
            if time_major:
                return torch.as_tensor(np.concatenate([p[key][:length] for p in pieces], axis=1))
            return torch.as_tensor(np.concatenate([p[key] for p in pieces], axis=0))

        extras: dict[str, torch.Tensor] = {}
        for key in pieces[0]["extras"]:
            extras[key] = torch.cat([p["extras"][key][:length] for p in pieces], dim=1).to(self.device)
        success = None
        if pieces[0]["success"] is not None:
            success = cat("success").to(self.device)
        batch = TrialBatch(
            observations=cat("observations").to(self.device),
            next_observations=cat("next_observations").to(self.device),
            actions=cat("actions").to(self.device),
            rewards=cat("rewards").to(self.device),
            terminated=cat("terminated").to(self.device),
            truncated=cat("truncated").to(self.device),
            trial_done=cat("trial_done").to(self.device),
            episode_index=cat("episode_index").to(self.device),
            step_in_episode=cat("step_in_episode").to(self.device),
            mask=cat("mask").to(self.device),
            task_index=cat("task_index", time_major=False).to(self.device),
            trial_index=cat("trial_index", time_major=False).to(self.device),
            success=success,
            extras=extras,
            tasks=tasks,
        )
        assert batch.num_slots == num_slots
        return batch

    @staticmethod
    def _write_row(buffers: tuple, t: int, obs, next_obs, action, reward, terminated, truncated, episode, step, info) -> None:
        b_obs, b_next, b_act, b_rew, b_term, b_trunc, b_episode, b_step, b_mask, b_success = buffers
        b_obs[t] = obs
        b_next[t] = next_obs
        b_act[t] = action
        b_rew[t] = reward
        b_term[t] = terminated
        b_trunc[t] = truncated
        b_episode[t] = episode
        b_step[t] = step
        b_mask[t] = True
        if b_success is not None:
            b_success[t] = np.asarray(info["success"], dtype=bool)

    @staticmethod
    def _check_finite(values: np.ndarray, what: str, slot_tasks: list[Task], seeds: np.ndarray) -> None:
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            bad = np.argwhere(~np.isfinite(values.reshape(len(slot_tasks), -1)).all(axis=1)) if values.ndim > 1 else np.argwhere(~np.isfinite(values))
            slot = int(bad[0][0])
            raise EnvError(
                f"env returned a non-finite {what} in slot {slot} (task {slot_tasks[slot]}, reset seed {int(seeds[slot])})"
            )
