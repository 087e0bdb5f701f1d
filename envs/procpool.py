"""A process-pool :class:`~metarl.types.BatchedEnv` for Python-heavy environments (design §4).

Worker processes each own a contiguous chunk of slots and step their envs one after another;
the chunks run in parallel. Actions go to the workers over pipes; observations come back
through one shared-memory array ``[B, *obs_shape]`` that every worker writes its rows of, so no
observation is pickled per step. Rewards and flags (a few bytes per slot) ride on the reply.

Fault tolerance:

- An exception in an env reaches the caller as :class:`~metarl.errors.WorkerError`, a one-line
  message naming the worker, slot, task and seed and the original exception; the original
  traceback text is its ``__cause__`` (a :class:`RemoteTraceback`) and its ``traceback``
  attribute. The worker stays up; the failed slot needs a reset.
- A worker that dies (SIGKILL, OOM killer, segfault) or does not answer within ``timeout``
  seconds is killed, joined and replaced by a fresh worker for the same slots (envs re-created
  from the current tasks), after a back-off of ``restart_backoff * 2**(k - 1)`` seconds for the
  k-th restart (capped at :data:`MAX_BACKOFF_S`). The call that noticed it raises
  :class:`~metarl.errors.WorkerLost` whose ``slots`` are the lost worker's slots; the caller
  resets them and collects their trials again. ``exc.result`` holds what the call would have
  returned, with the lost slots zeroed (observation 0, reward 0, flags ``False``), so the other
  slots' transitions of that step are not lost. After ``max_restarts`` restarts over the pool's
  life, the next loss closes the pool and raises :class:`~metarl.errors.WorkerError`.

The worker protocol is the small in-process class :class:`SlotWorker` (build, ``set_tasks``,
``reset``, ``step``, ``close``; numpy in, numpy out). The process loop here only adds the pipe
and shared memory around it. A Ray backend would host the same class as an actor
(``ray.remote(SlotWorker)``), call the same methods, map ``ray.wait`` timeouts and dead actors to
the same :class:`~metarl.errors.WorkerLost` / :class:`~metarl.errors.WorkerError`, and callers
(the sampler) would not change.

Workers start with the ``forkserver`` method where available (``spawn`` otherwise), never
``fork``: forking a process that holds MuJoCo, CUDA or threads is unsafe. As with any spawn-based
multiprocessing, a script that builds a pool must guard its entry point with
``if __name__ == "__main__":``.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import signal
import sys
import time
import traceback
import weakref
from collections.abc import Callable, Sequence
from multiprocessing import shared_memory
from typing import Any, Literal, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from metarl.envs.base import check_actions, nonnegative_slot_seeds, reset_mask
from metarl.errors import EnvError, WorkerError, WorkerLost, choices
from metarl.types import BatchedEnv, Task

__all__ = [
    "EnvFactory",
    "MAX_BACKOFF_S",
    "ProcessPoolBatchedEnv",
    "RemoteTraceback",
    "SlotFailure",
    "SlotWorker",
]

#: Upper bound of the back-off before a worker restart, in seconds.
MAX_BACKOFF_S = 10.0

START_METHODS: tuple[str, ...] = ("forkserver", "spawn")


@runtime_checkable
class EnvFactory(Protocol):
    """A picklable callable ``task -> gymnasium.Env`` (a top-level function or an instance of
    a top-level class), called inside the worker.

    Optional members the pool uses when present:

    - ``rebind(env, task) -> bool``: bind an existing env to ``task`` in place and return
      ``True``, or return ``False`` to have the worker close it and build a new one (e.g. when
      the env class changes);
    - ``has_success: bool``: the env reports ``info["success"]`` every step.
    """

    def __call__(self, task: Task) -> gym.Env: ...


class RemoteTraceback(Exception):
    """The traceback text of an exception raised in a worker; the ``__cause__`` of the
    :class:`~metarl.errors.WorkerError` that reports it."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n" + self.text


class SlotFailure(Exception):
    """An env of one slot raised; picklable, carries what the caller needs to find it.

    Attributes:
        phase: ``"make"``, ``"set_task"``, ``"reset"`` or ``"step"``.
        slot: the batched-env slot index.
        task: ``str(task)`` of the slot's task.
        seed: the seed of the slot's last (or failing) reset, ``None`` if never seeded.
        error: ``"ExceptionType: message"`` of the original exception, on one line.
        traceback: the original traceback text.
    """

    def __init__(self, phase: str, slot: int, task: str, seed: int | None, error: str, tb: str):
        super().__init__(phase, slot, task, seed, error, tb)
        self.phase = phase
        self.slot = slot
        self.task = task
        self.seed = seed
        self.error = error
        self.traceback = tb

    @classmethod
    def from_exception(cls, exc: BaseException, *, phase: str, slot: int, task: Task | None, seed: int | None) -> SlotFailure:
        message = " ".join(str(exc).split())
        if len(message) > 300:
            message = message[:297] + "..."
        error = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(phase, slot, str(task), seed, error, tb)


class SlotWorker:
    """The envs of a contiguous chunk of slots, stepped one after another (the worker protocol).

    Lives inside a worker process here; a Ray actor can host it unchanged. Slots whose episode
    ended (or were never reset since their task was set) are not stepped: :meth:`step` leaves
    their observation unchanged and reports reward 0 and ``False`` flags for them.

    Args:
        env_factory: a :class:`EnvFactory`.
        slots: the global slot indices this worker owns, ``range(lo, hi)``.
        tasks: one task per slot of ``slots``.
    """

    def __init__(self, env_factory: Callable[[Task], gym.Env], slots: range, tasks: Sequence[Task]):
        self.env_factory = env_factory
        self.slots = slots
        self.envs: list[gym.Env | None] = [None] * len(slots)
        self.tasks: list[Task] = list(tasks)
        self.seeds: list[int | None] = [None] * len(slots)
        self.active = np.zeros(len(slots), dtype=bool)
        try:
            for i, task in enumerate(self.tasks):
                self.envs[i] = self._build(i, task)
        except SlotFailure:
            self.close()
            raise
        env0 = self.envs[0]
        assert env0 is not None
        self.observation_space = env0.observation_space
        self.action_space = env0.action_space
        self.obs = np.zeros((len(slots), *self.observation_space.shape), dtype=self.observation_space.dtype)

    def _build(self, i: int, task: Task) -> gym.Env:
        try:
            return self.env_factory(task)
        except Exception as exc:
            raise SlotFailure.from_exception(exc, phase="make", slot=self.slots[i], task=task, seed=None) from exc

    def spaces(self) -> tuple[gym.Space, gym.Space]:
        """``(observation_space, action_space)`` of one env."""
        return self.observation_space, self.action_space

    def set_tasks(self, tasks: Sequence[Task]) -> None:
        """Bind slot ``i`` to ``tasks[i]``: rebind in place when the factory can, else rebuild.
        Every slot then needs a reset."""
        rebind = getattr(self.env_factory, "rebind", None)
        for i, task in enumerate(tasks):
            env = self.envs[i]
            try:
                done = rebind is not None and env is not None and bool(rebind(env, task))
            except Exception as exc:
                raise SlotFailure.from_exception(exc, phase="set_task", slot=self.slots[i], task=task, seed=None) from exc
            if not done:
                if env is not None:
                    env.close()
                self.envs[i] = None
                self.envs[i] = self._build(i, task)
            self.tasks[i] = task
            self.seeds[i] = None
        self.active[:] = False

    def reset(self, seeds: Sequence[int | None], mask: np.ndarray) -> np.ndarray:
        """Reset the slots in ``mask[n]`` with ``seeds[n]``; returns ``obs[n, *obs_shape]``
        (last observation for slots outside ``mask``)."""
        for i in np.flatnonzero(mask):
            env = self.envs[i]
            assert env is not None
            try:
                obs, _ = env.reset(seed=seeds[i])
            except Exception as exc:
                self.active[i] = False
                raise SlotFailure.from_exception(exc, phase="reset", slot=self.slots[i], task=self.tasks[i], seed=seeds[i]) from exc
            self.obs[i] = obs
            self.seeds[i] = seeds[i]
            self.active[i] = True
        return self.obs

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step every active slot with ``actions[n, *act_shape]``.

        Returns:
            ``obs[n, *obs_shape], reward[n] float64, terminated[n], truncated[n], success[n]``
            (bool; ``False`` where the env reports no success).

        Raises:
            SlotFailure: the first slot whose env raised; the other slots were still stepped.
        """
        n = len(self.slots)
        reward = np.zeros(n, dtype=np.float64)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        success = np.zeros(n, dtype=bool)
        failure: SlotFailure | None = None
        for i in np.flatnonzero(self.active):
            env = self.envs[i]
            assert env is not None
            try:
                obs, r, term, trunc, info = env.step(actions[i])
            except Exception as exc:
                self.active[i] = False
                if failure is None:
                    failure = SlotFailure.from_exception(exc, phase="step", slot=self.slots[i], task=self.tasks[i], seed=self.seeds[i])
                continue
            self.obs[i] = obs
            reward[i] = float(r)
            terminated[i] = bool(term)
            truncated[i] = bool(trunc)
            success[i] = bool(info.get("success", False))
            if term or trunc:
                self.active[i] = False
        if failure is not None:
            raise failure
        return self.obs, reward, terminated, truncated, success

    def close(self) -> None:
        """Close every env."""
        for i, env in enumerate(self.envs):
            if env is not None:
                env.close()
                self.envs[i] = None


def _worker_main(worker_id: int, conn: mp_connection.Connection, sys_path: list[str]) -> None:
    """Entry point of a worker process: serve commands from ``conn`` until ``close`` or EOF.

    The factory and tasks arrive over the pipe after ``sys.path`` is aligned with the parent's,
    so factories defined in the caller's modules unpickle whatever the start method.
    """
    # Ctrl-C goes to the parent, which shuts the pool down; workers must not die half-way. So
    # does a SIGTERM sent to the whole process group (by `timeout` or a batch scheduler): the
    # trainer stops at a checkpoint on it, and needs its workers for the iteration in progress.
    # A worker whose parent is gone sees its pipe close and exits.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.path[:0] = [p for p in sys_path if p not in sys.path]
    worker: SlotWorker | None = None
    shm: shared_memory.SharedMemory | None = None
    rows: np.ndarray | None = None
    try:
        while True:
            try:
                command, payload = conn.recv()
            except (EOFError, OSError):
                break  # the parent is gone
            if command == "close":
                conn.send(("ok", None))
                break
            try:
                result: Any = None
                if command == "init":
                    factory, slots, tasks = payload
                    worker = SlotWorker(factory, slots, tasks)
                    result = worker.spaces()
                elif command == "attach":
                    name, shape, dtype = payload
                    shm = shared_memory.SharedMemory(name=name)
                    assert worker is not None
                    full = np.ndarray(shape, dtype=dtype, buffer=shm.buf)
                    rows = full[worker.slots.start : worker.slots.stop]
                elif command == "set_tasks":
                    assert worker is not None
                    worker.set_tasks(payload)
                elif command == "reset":
                    assert worker is not None and rows is not None
                    rows[...] = worker.reset(*payload)
                elif command == "step":
                    assert worker is not None and rows is not None
                    obs, reward, terminated, truncated, success = worker.step(payload)
                    rows[...] = obs
                    result = (reward, terminated, truncated, success)
                else:
                    raise ValueError(f"unknown worker command {command!r}")
                reply: tuple[str, Any] = ("ok", result)
            except SlotFailure as failure:
                reply = ("error", failure)
            except Exception as exc:
                reply = ("error", SlotFailure.from_exception(exc, phase=command, slot=-1, task=None, seed=None))
            conn.send(reply)
    finally:
        if worker is not None:
            worker.close()
        rows = None
        if shm is not None:
            shm.close()


class _Worker:
    """Parent-side handle of one worker process."""

    def __init__(self, worker_id: int, slots: range):
        self.worker_id = worker_id
        self.slots = slots
        self.process: Any = None
        self.conn: mp_connection.Connection | None = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def request_close(self) -> None:
        """Ask the worker to close its envs and exit (no answer awaited)."""
        if self.conn is not None and self.process is not None and self.process.is_alive():
            try:
                self.conn.send(("close", None))
            except (OSError, ValueError):
                pass

    def kill(self, *, grace_s: float = 0.0) -> None:
        """Wait up to ``grace_s`` seconds for the worker to exit, then SIGKILL it, join it and
        close the pipe."""
        process, conn = self.process, self.conn
        if process is not None:
            if grace_s > 0:
                process.join(grace_s)
            if process.is_alive():
                process.kill()
            process.join(MAX_BACKOFF_S)
            try:
                process.close()
            except ValueError:
                pass  # a process that would not exit even after SIGKILL stays unreaped
        if conn is not None:
            conn.close()
        self.process = None
        self.conn = None


class _PoolResources:
    """What must be released when the pool goes away; owned apart from the env so a
    ``weakref.finalize`` can release it after the env is collected or at interpreter exit."""

    def __init__(self) -> None:
        self.workers: list[_Worker] = []
        self.shm: shared_memory.SharedMemory | None = None
        self.obs_buffer: np.ndarray | None = None

    def release(self, grace_s: float = 2.0) -> None:
        for worker in self.workers:
            worker.request_close()
        deadline = time.monotonic() + grace_s
        for worker in self.workers:
            worker.kill(grace_s=max(0.0, deadline - time.monotonic()))
        self.obs_buffer = None
        if self.shm is not None:
            shm, self.shm = self.shm, None
            try:
                shm.close()
            except BufferError:
                pass  # a view still exists somewhere; unlinking below still frees the name
            try:
                shm.unlink()
            except FileNotFoundError:
                pass


class ProcessPoolBatchedEnv(BatchedEnv):
    """``len(tasks)`` env slots run by ``num_workers`` processes (autoreset disabled).

    Slot ``i`` is bound to ``tasks[i]``; worker ``w`` owns the ``w``-th contiguous chunk of
    slots (``numpy.array_split`` sizes). A slot whose episode ended stays ended until
    ``reset(mask=...)`` resets it; :meth:`step` leaves it alone (observation unchanged, reward 0,
    flags ``False``).

    Args:
        env_factory: a picklable :class:`EnvFactory` ``task -> gymnasium.Env``.
        tasks: one task per slot (picklable).
        num_workers: worker processes; default ``os.cpu_count()``; capped at ``len(tasks)``.
        timeout: seconds to wait for every worker's answer to ``reset``/``step``/``set_tasks``
            before it counts as hung.
        start_timeout: seconds to wait for a worker to start and build its envs.
        max_restarts: worker restarts allowed over the pool's life before a loss is fatal.
        restart_backoff: base of the exponential back-off before a restart, in seconds.
        start_method: ``"forkserver"`` (default where available) or ``"spawn"``.
        has_success: whether ``info["success"]`` is reported; default the factory's
            ``has_success`` attribute, else ``False``.

    Raises:
        EnvError: bad arguments, or a factory or task that cannot be pickled.
        WorkerError: an env failed to build.
    """

    def __init__(
        self,
        env_factory: Callable[[Task], gym.Env],
        tasks: Sequence[Task],
        *,
        num_workers: int | None = None,
        timeout: float = 60.0,
        start_timeout: float = 300.0,
        max_restarts: int = 5,
        restart_backoff: float = 0.1,
        start_method: Literal["forkserver", "spawn"] | None = None,
        has_success: bool | None = None,
    ):
        tasks = list(tasks)
        if not tasks:
            raise EnvError("a process-pool batched env needs at least one task, got 0")
        if not callable(env_factory):
            raise EnvError(f"env_factory must be callable task -> gymnasium.Env, got {env_factory!r}")
        num_workers = (os.cpu_count() or 1) if num_workers is None else num_workers
        if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers <= 0:
            raise EnvError(f"num_workers must be a positive integer, got {num_workers!r}")
        for name, value in (("timeout", timeout), ("start_timeout", start_timeout)):
            if not isinstance(value, (int, float)) or not value > 0:
                raise EnvError(f"{name} must be a positive number of seconds, got {value!r}")
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise EnvError(f"max_restarts must be a non-negative integer, got {max_restarts!r}")
        if not isinstance(restart_backoff, (int, float)) or restart_backoff < 0:
            raise EnvError(f"restart_backoff must be a non-negative number of seconds, got {restart_backoff!r}")
        available = [m for m in START_METHODS if m in mp.get_all_start_methods()]
        if start_method is None:
            start_method = available[0]  # type: ignore[assignment]
        if start_method not in available:
            raise EnvError(f"unknown start_method {start_method!r}; valid start methods: {choices(available)}")

        self.num_slots = len(tasks)
        self.num_workers = min(int(num_workers), self.num_slots)
        self.timeout = float(timeout)
        self.start_timeout = float(start_timeout)
        self.max_restarts = max_restarts
        self.restart_backoff = float(restart_backoff)
        self.start_method = start_method
        self.has_success = bool(getattr(env_factory, "has_success", False) if has_success is None else has_success)
        self._factory = env_factory
        self._tasks = tasks
        self._restarts = 0
        self._closed = False
        self._active = np.zeros(self.num_slots, dtype=bool)
        self._ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            # Workers fork from a server that already imported this module (numpy, gymnasium,
            # torch), so a worker start does not pay for those imports again.
            self._ctx.set_forkserver_preload([__name__])

        bounds = np.cumsum([0] + [len(c) for c in np.array_split(np.arange(self.num_slots), self.num_workers)])
        self._res = _PoolResources()
        self._res.workers = [_Worker(w, range(int(bounds[w]), int(bounds[w + 1]))) for w in range(self.num_workers)]
        # Runs on close(), when the env is garbage-collected, and at interpreter exit.
        self._finalizer = weakref.finalize(self, self._res.release)
        try:
            self._start_all()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ public API

    @property
    def worker_restarts(self) -> int:
        """How many workers were restarted over the pool's life."""
        return self._restarts

    @property
    def tasks(self) -> list[Task]:
        """The task of each slot."""
        return list(self._tasks)

    def worker_pids(self) -> list[int | None]:
        """The process id of each worker (``None`` for a worker not running)."""
        return [w.pid for w in self._res.workers]

    def worker_slots(self) -> list[range]:
        """The slots each worker owns."""
        return [w.slots for w in self._res.workers]

    def set_tasks(self, tasks: Sequence[Task]) -> None:
        """Bind slot ``i`` to ``tasks[i]``; every slot then needs a reset.

        A worker lost during the call is restarted with the new tasks (no
        :class:`~metarl.errors.WorkerLost`: no trial was under way).
        """
        self._check_open()
        tasks = list(tasks)
        if len(tasks) != self.num_slots:
            raise EnvError(f"set_tasks needs one task per slot ({self.num_slots}), got {len(tasks)}")
        self._tasks = tasks
        self._active[:] = False
        payloads = {w.worker_id: tasks[w.slots.start : w.slots.stop] for w in self._res.workers}
        replies, lost = self._call("set_tasks", payloads)
        self._restart_lost(lost)
        self._raise_errors(replies)

    def reset(
        self, *, seed: int | Sequence[int] | None = None, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset the slots in ``mask`` (all when ``None``); slot ``i`` gets ``seed + i`` or
        ``seed[i]``.

        Returns:
            ``(obs[B, *obs_shape], info)``: slots outside ``mask`` keep their last observation.

        Raises:
            WorkerError: an env raised.
            WorkerLost: a worker died or hung and was replaced; ``exc.slots`` need a reset,
                ``exc.result`` is this call's return value with those slots zeroed.
        """
        self._check_open()
        seeds = nonnegative_slot_seeds(seed, self.num_slots)
        m = reset_mask(mask, self.num_slots)
        payloads = {
            w.worker_id: (seeds[w.slots.start : w.slots.stop], m[w.slots.start : w.slots.stop])
            for w in self._res.workers
            if m[w.slots.start : w.slots.stop].any()
        }
        replies, lost = self._call("reset", payloads)
        self._active |= m
        lost_slots = self._restart_lost(lost)
        self._raise_errors(replies)
        obs = self._observations(lost_slots)
        result = (obs, {})
        self._raise_lost(lost, lost_slots, result, "reset")
        return result

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every active slot with ``actions[B, *act_shape]``.

        Returns:
            ``obs[B, *obs_shape], reward[B] float64, terminated[B] bool, truncated[B] bool, info``;
            ``info["success"]`` is ``[B]`` bool when the env reports success. Slots whose
            episode had ended report their last observation, reward 0 and ``False`` flags.

        Raises:
            EnvError: actions of the wrong shape or not finite, or no slot was reset.
            WorkerError: an env raised (the other slots were stepped).
            WorkerLost: a worker died or hung and was replaced; ``exc.slots`` need a reset,
                ``exc.result`` is this call's return value with those slots zeroed.
        """
        self._check_open()
        acts = check_actions(actions, self.single_action_space, self.num_slots)
        if not self._active.any():
            raise EnvError("no slot has a running episode; call reset() before step()")
        payloads = {w.worker_id: acts[w.slots.start : w.slots.stop] for w in self._res.workers}
        replies, lost = self._call("step", payloads)
        reward = np.zeros(self.num_slots, dtype=np.float64)
        terminated = np.zeros(self.num_slots, dtype=bool)
        truncated = np.zeros(self.num_slots, dtype=bool)
        success = np.zeros(self.num_slots, dtype=bool)
        for worker_id, (status, body) in replies.items():
            if status == "ok":
                s = self._res.workers[worker_id].slots
                reward[s.start : s.stop], terminated[s.start : s.stop], truncated[s.start : s.stop], success[s.start : s.stop] = body
        self._active &= ~(terminated | truncated)
        lost_slots = self._restart_lost(lost)
        self._raise_errors(replies)
        obs = self._observations(lost_slots)
        info: dict[str, Any] = {"success": success} if self.has_success else {}
        result = (obs, reward, terminated, truncated, info)
        self._raise_lost(lost, lost_slots, result, "step")
        return result

    def close(self) -> None:
        """Stop every worker (SIGKILL after a short grace period) and free the shared memory.
        Safe to call twice; also runs when the env is collected and at interpreter exit."""
        self._closed = True
        self._finalizer()

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise EnvError("this process-pool batched env is closed")

    def _start_all(self) -> None:
        for worker in self._res.workers:
            self._spawn(worker)
        replies, lost = self._gather({w.worker_id: w for w in self._res.workers}, self.start_timeout)
        self._raise_errors(replies)
        if len(replies) == 0:
            raise WorkerError(f"no worker started within start_timeout={self.start_timeout} s ({len(lost)} lost)")
        obs_space, act_space = next(iter(replies.values()))[1]
        for worker_id, (_, (other_obs, other_act)) in replies.items():
            if other_obs != obs_space or other_act != act_space:
                raise EnvError(
                    f"envs of worker {worker_id} have spaces {other_obs}, {other_act}; worker 0 has {obs_space}, {act_space}; every slot must share them"
                )
        shape = getattr(obs_space, "shape", None)
        if shape is None or not isinstance(obs_space, (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)):
            raise EnvError(f"observation space {obs_space} is not supported; use a Box, Discrete, MultiDiscrete or MultiBinary space")
        self.single_observation_space = obs_space
        self.single_action_space = act_space
        dtype = np.dtype(obs_space.dtype)
        size = max(1, int(np.prod((self.num_slots, *shape))) * dtype.itemsize)
        self._res.shm = shared_memory.SharedMemory(create=True, size=size)
        self._res.obs_buffer = np.ndarray((self.num_slots, *shape), dtype=dtype, buffer=self._res.shm.buf)
        self._res.obs_buffer[...] = 0
        self._obs_spec = (self._res.shm.name, (self.num_slots, *shape), dtype.str)
        live = {w.worker_id: w for w in self._res.workers if w.worker_id in replies}
        for worker in live.values():
            self._send(worker, "attach", self._obs_spec)
        replies, lost_attach = self._gather(live, self.start_timeout)
        self._raise_errors(replies)
        # Workers lost while starting carry no trial: replace them without WorkerLost.
        self._restart_lost({**lost, **lost_attach})

    def _spawn(self, worker: _Worker) -> None:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_worker_main,
            args=(worker.worker_id, child_conn, list(sys.path)),
            name=f"metarl-env-worker-{worker.worker_id}",
            daemon=True,
        )
        process.start()
        # Drop the parent's copy of the child's end, so the parent sees EOF when the child dies.
        child_conn.close()
        worker.process, worker.conn = process, parent_conn
        self._send(worker, "init", (self._factory, worker.slots, self._tasks[worker.slots.start : worker.slots.stop]))

    def _send(self, worker: _Worker, command: str, payload: Any) -> bool:
        """Send a command; ``False`` when the pipe is broken (the worker died)."""
        assert worker.conn is not None
        try:
            worker.conn.send((command, payload))
        except (BrokenPipeError, ConnectionResetError, EOFError, OSError):
            return False
        except Exception as exc:  # pickling failed: the caller's factory or tasks are at fault
            raise EnvError(f"cannot send {command!r} to worker {worker.worker_id}: {type(exc).__name__}: {exc}") from exc
        return True

    def _call(self, command: str, payloads: dict[int, Any]) -> tuple[dict[int, tuple[str, Any]], dict[int, str]]:
        """Send ``command`` to the workers in ``payloads`` and gather every answer.

        An interruption half-way (Ctrl-C, a payload that cannot be pickled) would leave answers
        unread in the pipes and every later call out of step, so it closes the pool.
        """
        targets: dict[int, _Worker] = {}
        lost: dict[int, str] = {}
        try:
            for worker_id, payload in payloads.items():
                worker = self._res.workers[worker_id]
                if self._send(worker, command, payload):
                    targets[worker_id] = worker
                else:
                    lost[worker_id] = self._death_reason(worker)
            replies, more_lost = self._gather(targets, self.timeout)
        except BaseException:
            self.close()
            raise
        lost.update(more_lost)
        return replies, lost

    def _gather(self, workers: dict[int, _Worker], timeout: float) -> tuple[dict[int, tuple[str, Any]], dict[int, str]]:
        """Wait (at most ``timeout`` seconds in all) for one reply from each worker.

        Returns:
            ``(replies, lost)``: worker id -> ``(status, body)``, and worker id -> why it is
            lost (died, or no answer in time).
        """
        replies: dict[int, tuple[str, Any]] = {}
        lost: dict[int, str] = {}
        pending = dict(workers)
        deadline = time.monotonic() + timeout
        while pending:
            remaining = deadline - time.monotonic()
            waitables: dict[Any, _Worker] = {}
            for w in pending.values():
                waitables[w.conn] = w
                waitables[w.process.sentinel] = w
            ready = mp_connection.wait(list(waitables), timeout=max(0.0, remaining)) if remaining > 0 else []
            if not ready:
                for worker_id in pending:
                    lost[worker_id] = f"did not answer within {timeout:g} s"
                break
            for obj in ready:
                w = waitables[obj]
                if w.worker_id not in pending:
                    continue
                conn = w.conn
                assert conn is not None
                try:
                    # A worker may answer and then die: read the answer first if it is there.
                    if obj is conn or conn.poll():
                        replies[w.worker_id] = conn.recv()
                    else:
                        lost[w.worker_id] = self._death_reason(w)
                except (EOFError, OSError):
                    lost[w.worker_id] = self._death_reason(w)
                del pending[w.worker_id]
        return replies, lost

    @staticmethod
    def _death_reason(worker: _Worker) -> str:
        process = worker.process
        if process is not None:
            process.join(1.0)
            code = process.exitcode
            if code is not None and code < 0:
                try:
                    return f"died from signal {signal.Signals(-code).name}"
                except ValueError:
                    return f"died from signal {-code}"
            if code is not None:
                return f"exited with code {code}"
        return "closed its pipe"

    def _restart_lost(self, lost: dict[int, str]) -> list[int]:
        """Replace every lost worker; returns the slots they owned.

        Raises:
            WorkerError: the restart budget is spent (the pool is closed), or a fresh worker's
                envs failed to build.
        """
        slots: list[int] = []
        pending = dict(lost)
        while pending:
            worker_id, reason = next(iter(pending.items()))
            del pending[worker_id]
            worker = self._res.workers[worker_id]
            pid = worker.pid
            slots.extend(worker.slots)
            worker.kill()
            if self._restarts >= self.max_restarts:
                self.close()
                raise WorkerError(
                    f"worker {worker_id} (pid {pid}, slots {worker.slots.start}-{worker.slots.stop - 1}) {reason}, and the pool already restarted max_restarts={self.max_restarts} workers"
                )
            self._restarts += 1
            time.sleep(min(self.restart_backoff * 2 ** (self._restarts - 1), MAX_BACKOFF_S))
            self._spawn(worker)
            replies, again = self._gather({worker_id: worker}, self.start_timeout)
            self._raise_errors(replies)
            if not again:
                self._send(worker, "attach", self._obs_spec)
                replies, again = self._gather({worker_id: worker}, self.start_timeout)
                self._raise_errors(replies)
            if again:
                pending[worker_id] = f"{reason}; its replacement {again[worker_id]}"
        for s in slots:
            self._active[s] = False
        return sorted(set(slots))

    def _raise_errors(self, replies: dict[int, tuple[str, Any]]) -> None:
        for worker_id, (status, body) in sorted(replies.items()):
            if status != "error":
                continue
            failure: SlotFailure = body
            worker = self._res.workers[worker_id]
            where = f"slot {failure.slot}, " if failure.slot >= 0 else ""
            err = WorkerError(
                f"{failure.phase} raised {failure.error} [worker {worker_id}, pid {worker.pid}, {where}task {failure.task}, seed {failure.seed}]"
            )
            err.worker_id = worker_id  # type: ignore[attr-defined]
            err.slot = failure.slot  # type: ignore[attr-defined]
            err.task = failure.task  # type: ignore[attr-defined]
            err.seed = failure.seed  # type: ignore[attr-defined]
            err.traceback = failure.traceback  # type: ignore[attr-defined]
            raise err from RemoteTraceback(failure.traceback)

    def _observations(self, lost_slots: list[int]) -> np.ndarray:
        assert self._res.obs_buffer is not None
        obs = self._res.obs_buffer.copy()
        obs[lost_slots] = 0
        return obs

    def _raise_lost(self, lost: dict[int, str], lost_slots: list[int], result: tuple, call: str) -> None:
        if not lost:
            return
        what = "; ".join(f"worker {w} {reason}" for w, reason in sorted(lost.items()))
        exc = WorkerLost(
            f"{call}: {what}; restarted ({self._restarts}/{self.max_restarts} restarts used); slots {lost_slots} must be reset and their trials collected again",
            slots=lost_slots,
        )
        exc.result = result  # type: ignore[attr-defined]
        raise exc
