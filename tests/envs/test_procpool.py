"""Process-pool batched env: equality with single envs, env errors, lost workers, cleanup."""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import time
from multiprocessing import shared_memory

import gymnasium as gym
import numpy as np
import pytest

from metarl.envs.procpool import ProcessPoolBatchedEnv, RemoteTraceback, SlotWorker
from metarl.errors import EnvError, WorkerError, WorkerLost
from metarl.types import BatchedEnv, Task


class CounterEnv(gym.Env):
    """A seeded random walk whose horizon, failures and hangs are set by the task.

    Task parameters: ``value`` (scales reward), ``horizon`` (truncation step), ``raise_at`` /
    ``hang_at`` (step at which ``step`` raises / sleeps for an hour).
    """

    observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def __init__(self, task: Task):
        self.task = task
        self.value = float(task["value"])
        self.horizon = int(task.get("horizon", 1000))
        self.raise_at = task.get("raise_at")
        self.hang_at = task.get("hang_at")
        self.t = 0
        self.state = np.zeros(3, dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.state = self.np_random.normal(size=3).astype(np.float32)
        self.state[2] = self.value
        return self.state.copy(), {}

    def step(self, action):
        self.t += 1
        if self.t == self.raise_at:
            raise ValueError(f"boom at step {self.t}")
        if self.t == self.hang_at:
            time.sleep(3600)
        noise = self.np_random.normal(size=2).astype(np.float32)
        self.state[:2] += 0.1 * np.asarray(action, dtype=np.float32) + 0.01 * noise
        reward = self.value * float(self.state[0])
        terminated = bool(self.state[1] > 1.5)
        truncated = self.t >= self.horizon
        return self.state.copy(), reward, terminated, truncated, {"success": bool(self.state[0] > 0.5)}


class CounterFactory:
    """Picklable factory with in-place rebinding when only ``value`` changes."""

    has_success = True

    def __call__(self, task: Task) -> gym.Env:
        return CounterEnv(task)

    def rebind(self, env: gym.Env, task: Task) -> bool:
        if task.get("horizon", 1000) != env.horizon or task.get("raise_at") or task.get("hang_at"):
            return False
        env.task, env.value = task, float(task["value"])
        return True


def failing_factory(task: Task) -> gym.Env:
    if task.get("fail_build"):
        raise RuntimeError(f"cannot build value {task['value']}")
    return CounterEnv(task)


def make_tasks(n: int, **extra: dict[int, dict]) -> list[Task]:
    tasks = []
    for i in range(n):
        params = {"value": 1.0 + i, "horizon": 6 + i}
        for key, per_slot in extra.items():
            if i in per_slot:
                params[key] = per_slot[i]
        tasks.append(Task.make("counter", "test", "train", i, **params))
    return tasks


def is_running(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_gone(pids, limit_s: float = 10.0) -> list[int]:
    """Pids still running after up to ``limit_s`` seconds (a reaped child may linger briefly)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        alive = [p for p in pids if p is not None and is_running(p)]
        if not alive:
            return []
        time.sleep(0.05)
    return alive


class Reference:
    """Single envs stepped in a Python loop with the pool's no-op rule for ended slots."""

    def __init__(self, factory, tasks):
        self.envs = [factory(t) for t in tasks]
        self.obs = np.zeros((len(tasks), 3), dtype=np.float32)
        self.active = np.zeros(len(tasks), dtype=bool)

    def reset(self, seeds, mask):
        for i in np.flatnonzero(mask):
            self.obs[i], _ = self.envs[i].reset(seed=seeds[i])
            self.active[i] = True
        return self.obs.copy()

    def step(self, actions):
        n = len(self.envs)
        rew, term, trunc, succ = np.zeros(n), np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
        for i in np.flatnonzero(self.active):
            self.obs[i], rew[i], term[i], trunc[i], info = self.envs[i].step(actions[i])
            succ[i] = info["success"]
            if term[i] or trunc[i]:
                self.active[i] = False
        return self.obs.copy(), rew, term, trunc, succ


def assert_step_equal(got, want, slots=None):
    obs, rew, term, trunc, info = got
    w_obs, w_rew, w_term, w_trunc, w_succ = want
    s = slice(None) if slots is None else slots
    np.testing.assert_array_equal(obs[s], w_obs[s])
    np.testing.assert_array_equal(rew[s], w_rew[s])
    np.testing.assert_array_equal(term[s], w_term[s])
    np.testing.assert_array_equal(trunc[s], w_trunc[s])
    np.testing.assert_array_equal(info["success"][s], w_succ[s])


def test_batched_equals_single_envs_and_rebinds():
    tasks = make_tasks(5)
    rng = np.random.default_rng(0)
    ref = Reference(CounterFactory(), tasks)
    with ProcessPoolBatchedEnv(CounterFactory(), tasks, num_workers=2, timeout=30) as env:
        assert isinstance(env, BatchedEnv)
        assert env.num_slots == 5 and env.num_workers == 2 and env.has_success
        assert [list(r) for r in env.worker_slots()] == [[0, 1, 2], [3, 4]]
        assert env.single_observation_space == CounterEnv.observation_space
        assert env.single_action_space == CounterEnv.action_space
        obs, info = env.reset(seed=10)
        np.testing.assert_array_equal(obs, ref.reset([10, 11, 12, 13, 14], np.ones(5, bool)))
        assert obs.dtype == np.float32 and obs.shape == (5, 3) and info == {}
        ended_seen = 0
        for t in range(25):
            actions = rng.uniform(-1, 1, size=(5, 2)).astype(np.float32)
            got = env.step(actions)
            want = ref.step(actions)
            assert_step_equal(got, want)
            assert got[1].dtype == np.float64 and got[2].dtype == bool and got[4]["success"].dtype == bool
            ended = got[2] | got[3]
            ended_seen += int(ended.sum())
            if ended.any():
                seeds = [100 + t + i for i in range(5)]
                obs, _ = env.reset(seed=seeds, mask=ended)
                np.testing.assert_array_equal(obs, ref.reset(seeds, ended))
        assert ended_seen >= 5  # horizons 6..10: every slot ended and was reset at least once

        # Rebind: slots 0-1 keep their horizon (rebound in place), the others change it (rebuilt).
        new_tasks = [Task.make("counter", "test", "train", i, value=-2.0 - i, horizon=6 + i + (i >= 2)) for i in range(5)]
        env.set_tasks(new_tasks)
        assert env.tasks == new_tasks
        ref = Reference(CounterFactory(), new_tasks)
        with pytest.raises(EnvError, match="reset"):
            env.step(np.zeros((5, 2), np.float32))
        np.testing.assert_array_equal(env.reset(seed=3)[0], ref.reset([3, 4, 5, 6, 7], np.ones(5, bool)))
        for _ in range(8):
            actions = rng.uniform(-1, 1, size=(5, 2)).astype(np.float32)
            assert_step_equal(env.step(actions), ref.step(actions))


def test_slot_worker_protocol_in_process():
    tasks = make_tasks(3)
    worker = SlotWorker(CounterFactory(), range(4, 7), tasks)
    ref = Reference(CounterFactory(), tasks)
    np.testing.assert_array_equal(worker.reset([1, 2, 3], np.ones(3, bool)), ref.reset([1, 2, 3], np.ones(3, bool)))
    actions = np.full((3, 2), 0.5, np.float32)
    obs, rew, term, trunc, succ = worker.step(actions)
    assert_step_equal((obs, rew, term, trunc, {"success": succ}), ref.step(actions))
    worker.close()


def test_env_exception_reaches_caller_with_task_seed_and_traceback():
    tasks = make_tasks(4, raise_at={2: 3})
    with ProcessPoolBatchedEnv(CounterFactory(), tasks, num_workers=2, timeout=30) as env:
        env.reset(seed=[7, 8, 9, 10])
        env.step(np.zeros((4, 2), np.float32))
        env.step(np.zeros((4, 2), np.float32))
        with pytest.raises(WorkerError) as info:
            env.step(np.zeros((4, 2), np.float32))
        err = info.value
        message = str(err)
        assert "\n" not in message
        assert "ValueError: boom at step 3" in message
        assert str(tasks[2]) in message and "seed 9" in message and "worker 1" in message and "slot 2" in message
        assert (err.worker_id, err.slot, err.seed) == (1, 2, 9)
        assert isinstance(err.__cause__, RemoteTraceback)
        assert "Traceback (most recent call last)" in err.traceback and "boom at step 3" in err.traceback
        assert "in step" in str(err.__cause__)
        assert env.worker_restarts == 0
        # The worker survives an env error: after a reset every slot steps again.
        env.reset(seed=0)
        obs, rew, *_ = env.step(np.zeros((4, 2), np.float32))
        assert obs.shape == (4, 3)


def test_factory_error_at_construction_names_task_and_leaves_no_process():
    tasks = make_tasks(3, fail_build={1: True})
    with pytest.raises(WorkerError, match=r"make raised RuntimeError: cannot build value 2\.0 .*slot 1, task counter\[test\]/train#1"):
        ProcessPoolBatchedEnv(failing_factory, tasks, num_workers=2, timeout=30)
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("metarl-env-worker")]


def test_unpicklable_task_is_rejected_and_closes_the_pool():
    tasks = make_tasks(2)
    with ProcessPoolBatchedEnv(CounterFactory(), tasks, num_workers=1, timeout=30) as env:
        pids = env.worker_pids()
        bad = [Task.make("counter", "test", "train", i, value=1.0, hook=lambda: None) for i in range(2)]
        with pytest.raises(EnvError, match="cannot send 'set_tasks' to worker 0"):
            env.set_tasks(bad)
        assert wait_gone(pids) == []
        with pytest.raises(EnvError, match="closed"):
            env.reset()


def test_sigkilled_worker_is_replaced_and_other_slots_keep_stepping():
    tasks = make_tasks(4)
    for t in tasks:
        assert t["horizon"] >= 6
    ref = Reference(CounterFactory(), tasks)
    with ProcessPoolBatchedEnv(CounterFactory(), tasks, num_workers=2, timeout=30, max_restarts=2, restart_backoff=0.01) as env:
        env.reset(seed=0)
        ref.reset([0, 1, 2, 3], np.ones(4, bool))
        actions = np.full((4, 2), 0.3, np.float32)
        assert_step_equal(env.step(actions), ref.step(actions))
        old_pids = env.worker_pids()
        os.kill(old_pids[0], signal.SIGKILL)
        with pytest.raises(WorkerLost) as info:
            env.step(actions)
        lost = info.value
        assert lost.slots == [0, 1]
        assert "worker 0" in str(lost) and "SIGKILL" in str(lost)
        assert env.worker_restarts == 1
        new_pids = env.worker_pids()
        assert new_pids[0] != old_pids[0] and new_pids[1] == old_pids[1]
        assert wait_gone([old_pids[0]]) == []
        # The other worker's slots were stepped; their results ride on the exception.
        want = ref.step(actions)
        obs, rew, term, trunc, inf = lost.result
        assert_step_equal(lost.result, want, slots=slice(2, 4))
        np.testing.assert_array_equal(obs[:2], 0)
        np.testing.assert_array_equal(rew[:2], 0)
        # Reset the lost slots and keep going: every slot matches the reference again.
        mask = np.array([True, True, False, False])
        obs, _ = env.reset(seed=[50, 51, 0, 0], mask=mask)
        np.testing.assert_array_equal(obs, ref.reset([50, 51, 0, 0], mask))
        for _ in range(3):
            assert_step_equal(env.step(actions), ref.step(actions))

        # A worker lost during reset is reported the same way.
        os.kill(env.worker_pids()[1], signal.SIGKILL)
        with pytest.raises(WorkerLost) as info:
            env.reset(seed=5, mask=np.array([False, False, True, False]))
        assert info.value.slots == [2, 3] and env.worker_restarts == 2
        # The restart budget (2) is spent: the next loss is fatal and closes the pool.
        pids = env.worker_pids()
        os.kill(pids[0], signal.SIGKILL)
        with pytest.raises(WorkerError, match="max_restarts=2"):
            env.step(actions)
        assert wait_gone(pids) == []
        with pytest.raises(EnvError, match="closed"):
            env.step(actions)


def test_hung_worker_times_out_and_is_replaced():
    tasks = make_tasks(4, hang_at={3: 2})
    with ProcessPoolBatchedEnv(CounterFactory(), tasks, num_workers=2, timeout=3.0, start_timeout=120, restart_backoff=0.01) as env:
        env.reset(seed=0)
        actions = np.zeros((4, 2), np.float32)
        env.step(actions)
        hung_pid = env.worker_pids()[1]
        with pytest.raises(WorkerLost, match="did not answer within 3 s") as info:
            env.step(actions)
        assert info.value.slots == [2, 3]
        assert env.worker_restarts == 1
        assert wait_gone([hung_pid]) == []
        obs, rew, *_ = info.value.result
        assert np.all(obs[2:] == 0) and np.any(obs[:2] != 0)
        env.reset(seed=1, mask=np.array([False, False, True, True]))
        obs, *_ = env.step(actions)  # step 1 of the fresh episode: no hang
        assert obs.shape == (4, 3)


def test_bad_input_raises_env_error():
    tasks = make_tasks(3)
    with pytest.raises(EnvError, match="num_workers"):
        ProcessPoolBatchedEnv(CounterFactory(), tasks, num_workers=0)
    with pytest.raises(EnvError, match="start_method 'fork'"):
        ProcessPoolBatchedEnv(CounterFactory(), tasks, start_method="fork")
    with pytest.raises(EnvError, match="timeout"):
        ProcessPoolBatchedEnv(CounterFactory(), tasks, timeout=0)
    with pytest.raises(EnvError, match="at least one task"):
        ProcessPoolBatchedEnv(CounterFactory(), [])
    with ProcessPoolBatchedEnv(CounterFactory(), tasks, num_workers=2, timeout=30) as env:
        env.reset(seed=0)
        with pytest.raises(EnvError, match=r"shape \(3, 2\)"):
            env.step(np.zeros((3, 3), np.float32))
        with pytest.raises(EnvError, match="not finite"):
            env.step(np.array([[0, 0], [np.nan, 0], [0, 0]], np.float32))
        with pytest.raises(EnvError, match="one task per slot"):
            env.set_tasks(tasks[:2])
        with pytest.raises(EnvError, match="expected 3 seeds"):
            env.reset(seed=[1, 2])
        with pytest.raises(EnvError, match="non-negative integers, got -1 for slot 0"):
            env.reset(seed=-1)
        with pytest.raises(EnvError, match="got 1.5 for slot 1"):
            env.reset(seed=[0, 1.5, 2])
        with pytest.raises(EnvError, match="reset mask"):
            env.reset(mask=np.ones(2, bool))
        # The pool still works after rejected input.
        assert env.step(np.zeros((3, 2), np.float32))[0].shape == (3, 3)


def test_close_and_garbage_collection_leave_no_processes_or_shared_memory():
    env = ProcessPoolBatchedEnv(CounterFactory(), make_tasks(3), num_workers=2, timeout=30)
    pids = env.worker_pids()
    shm_name = env._res.shm.name
    assert all(is_running(p) for p in pids)
    env.reset(seed=0)
    env.close()
    env.close()
    assert wait_gone(pids) == []
    with pytest.raises(FileNotFoundError):
        shared_memory.SharedMemory(name=shm_name)
    with pytest.raises(EnvError, match="closed"):
        env.reset()

    env = ProcessPoolBatchedEnv(CounterFactory(), make_tasks(2), num_workers=2, timeout=30)
    pids = env.worker_pids()
    del env
    gc.collect()
    assert wait_gone(pids) == []


def test_workers_outlast_a_sigterm_to_the_process_group():
    # `timeout` and batch schedulers signal the whole group; the caller decides when to stop.
    tasks = make_tasks(4)
    ref = Reference(CounterFactory(), tasks)
    with ProcessPoolBatchedEnv(CounterFactory(), tasks, num_workers=2, timeout=30) as env:
        env.reset(seed=0)
        ref.reset([0, 1, 2, 3], np.ones(4, bool))
        for pid in env.worker_pids():
            os.kill(pid, signal.SIGTERM)
        time.sleep(0.2)
        actions = np.full((4, 2), 0.3, np.float32)
        assert_step_equal(env.step(actions), ref.step(actions))
        assert env.worker_restarts == 0
