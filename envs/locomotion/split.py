"""Locomotion slots split over processes that hand steps over by spinning on shared memory.

Why processes: a MuJoCo locomotion step is short (about 17 us of physics per cheetah slot), so
how the cores hand work to each other decides the speed. Threads in one process fight over the
GIL around every slot's C calls (two threads were no faster than one), and ``mujoco.rollout``'s C
thread pool pays a thread wake-up at every env step (about 100 us per call on a 2-core machine,
against about 550 us of work). Here each core runs its own process with its own chunk of slots,
stepped by an in-process :class:`~.batched.LocomotionBatchedEnv` with one thread, and the step
hand-over is a counter in shared memory that the waiting side polls:

- the caller writes the actions of worker ``w``'s slots into ``w``'s shared block and bumps the
  block's command counter; it then steps its own chunk (slots ``0 .. k``) in-process, and waits
  for each worker's done counter to catch up;
- a worker polls its command counter, steps its chunk (physics, observation, reward and the info
  arrays all computed there, in parallel with the caller), writes the results into its block and
  sets its done counter.

A waiting side spins for :data:`SPIN_S` seconds, then sleeps between checks, :data:`NAP_S` at first
and longer the longer it waits (up to :data:`MAX_NAP_S`), so an idle env costs next to no CPU;
during a rollout the steps follow each other within the spin window.
Resets, ``set_tasks`` and ``physics_states`` go over a pipe (they are rare). The counters rely on
the stores of one process becoming visible to another in program order, which x86-64 guarantees;
elsewhere :func:`default_parallel` picks the threads of :mod:`.batched` instead.

Transitions are the in-process env's, slot for slot (each slot's state, reset generator and task
live in exactly one process), so this env matches the single-task env exactly like the in-process
one does (the tests run both).

Faults, as in the process pool (:mod:`metarl.envs.procpool`): a worker that dies (SIGKILL, the
OOM killer, a segfault) or stops answering within ``timeout`` seconds is killed, joined and
replaced by a fresh worker for the same slots and tasks, after a back-off of ``restart_backoff *
2**(k - 1)`` seconds for the k-th restart (at most :data:`MAX_BACKOFF_S`). The call that noticed
it raises :class:`~metarl.errors.WorkerLost` naming the lost slots, which must be reset (the
sampler collects the wave's trials again); after a ``step``, ``exc.result`` holds the step's
results with the lost slots zeroed. Once ``max_restarts`` workers have been replaced over the
env's life, the next loss closes the env with a one-line :class:`~metarl.errors.WorkerError`. A
worker that dies or cannot build its env while the env starts closes it with a one-line
:class:`~metarl.errors.EnvError`. An exception inside a worker is raised as a one-line
:class:`~metarl.errors.EnvError` naming the worker and its slots, with the worker's traceback as
``__cause__``.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection as mp_connection
import platform
import signal
import sys
import time
import traceback
import weakref
from collections.abc import Sequence
from multiprocessing import shared_memory
from typing import TYPE_CHECKING, Any

import numpy as np

from metarl.envs.array import check_int, check_real
from metarl.envs.base import check_actions, nonnegative_slot_seeds, reset_mask
from metarl.envs.locomotion.batched import LocomotionBatchedEnv
from metarl.envs.procpool import MAX_BACKOFF_S, START_METHODS, RemoteTraceback
from metarl.errors import EnvError, WorkerError, WorkerLost
from metarl.types import BatchedEnv, Task

if TYPE_CHECKING:
    from metarl.envs.locomotion.distributions import LocomotionDistribution

__all__ = ["SplitLocomotionBatchedEnv", "default_parallel", "SPIN_S", "NAP_S", "MAX_NAP_S", "MAX_BACKOFF_S"]

#: How long a waiting side polls without sleeping, in seconds.
SPIN_S = 0.002
#: The shortest sleep between polls after that, in seconds ...
NAP_S = 0.0001
#: ... up to this.
MAX_NAP_S = 0.002
#: Seconds a worker may take to answer a command before it is declared hung.
DEFAULT_TIMEOUT_S = 120.0
#: Seconds a worker may take to start (a fresh interpreter importing MuJoCo and metarl).
START_TIMEOUT_S = 120.0
#: Worker restarts allowed over an env's life before a loss is fatal.
DEFAULT_MAX_RESTARTS = 5
#: Base of the exponential back-off before a restart, in seconds.
DEFAULT_RESTART_BACKOFF_S = 0.1

# The command block: [command counter, done counter, command code, status].
_SEQ, _DONE, _CODE, _STATUS = range(4)
_STEP, _PIPE, _CLOSE = 1, 2, 3


def default_parallel(num_threads: int) -> str:
    """``"processes"`` on x86-64 with more than one core to use, else ``"threads"`` (also inside
    a daemonic process, such as a ``multiprocessing.Pool`` worker, which may not start
    children)."""
    machine = platform.machine().lower()
    if num_threads <= 1 or machine not in ("x86_64", "amd64") or mp.current_process().daemon:
        return "threads"
    return "processes"


def _chunks(num_slots: int, num_processes: int) -> list[range]:
    """Contiguous slot ranges of (nearly) equal size, the caller's first. (Giving the caller a
    slot less or more, for its extra work of checking actions and assembling results, measured
    slower on 2 cores: 0.79 of the ceiling against 0.82-0.85 with equal chunks.)"""
    bounds = np.linspace(0, num_slots, num_processes + 1).round().astype(int)
    return [range(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]


class _Block:
    """One worker's shared arrays, carved out of one ``SharedMemory``: the command block, the
    actions in, and the step's results out (observation, reward, flags and info arrays)."""

    def __init__(self, layout: dict[str, tuple[tuple[int, ...], str]], name: str | None = None):
        offsets, size = {}, 0
        for key, (shape, dtype) in layout.items():
            offsets[key] = size
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            size += (nbytes + 63) // 64 * 64  # each array on its own cache lines
        self.shm = shared_memory.SharedMemory(name=name, create=name is None, size=max(size, 64))
        self.arrays = {
            key: np.ndarray(shape, dtype=dtype, buffer=self.shm.buf, offset=offsets[key])
            for key, (shape, dtype) in layout.items()
        }
        self.ctrl = self.arrays["ctrl"]

    def close(self, unlink: bool = False) -> None:
        self.arrays = {}
        self.ctrl = None  # type: ignore[assignment]
        self.shm.close()
        if unlink:
            try:
                self.shm.unlink()
            except FileNotFoundError:
                pass


def _result_keys(info_keys: Sequence[str]) -> list[str]:
    """The block arrays of a step's results, in the order ``step`` returns them (info last)."""
    return ["obs", "reward", "terminated", "truncated", *("info_" + key for key in info_keys)]


def _nap(waited: float) -> float:
    """The sleep after ``waited`` seconds of waiting: about a fifth of the time already waited
    beyond the spin window, between :data:`NAP_S` and :data:`MAX_NAP_S`."""
    return min(MAX_NAP_S, max(NAP_S, 0.2 * (waited - SPIN_S)))


def _poll(ctrl: np.ndarray, index: int, target: int, check: Any = None) -> None:
    """Wait until ``ctrl[index] == target``: spin, then nap; ``check()`` runs every ~1 ms."""
    start = last_check = time.perf_counter()
    polls = 0
    while ctrl[index] != target:
        polls += 1
        if polls & 63 == 0:
            now = time.perf_counter()
            if check is not None and now - last_check > 0.001:
                check(now - start)
                last_check = now
            if now - start > SPIN_S:
                time.sleep(_nap(now - start))


def _worker_main(
    conn: mp_connection.Connection,
    sys_path: list[str],
    name: str,
    layout: dict[str, tuple[tuple[int, ...], str]],
    dist: LocomotionDistribution,
    tasks: list[Task],
) -> None:
    """A worker process: build the chunk's env, then serve commands until close or orphaned."""
    # Ctrl-C and a SIGTERM sent to the whole process group (by `timeout` or a batch scheduler)
    # are the caller's to handle: the trainer stops at a checkpoint on SIGTERM, and needs its
    # workers for the iteration in progress. A worker whose caller is gone exits by itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.path[:0] = [p for p in sys_path if p not in sys.path]
    block = _Block(layout, name)
    env = None
    try:
        try:
            env = LocomotionBatchedEnv(dist, tasks, num_threads=1)
        except Exception as exc:
            conn.send(("error", (f"{type(exc).__name__}: {exc}", traceback.format_exc())))
            return
        conn.send(("ok", None))
        a = block.arrays
        ctrl, actions = block.ctrl, a["actions"]
        info_keys = [key[5:] for key in a if key.startswith("info_")]
        outs = [a[key] for key in _result_keys(info_keys)]
        parent = mp.parent_process()
        last = int(ctrl[_DONE])  # the last command served (none yet); never read _SEQ here: the
        # caller may have issued its first command already
        idle_since = time.perf_counter()
        while True:
            seq = int(ctrl[_SEQ])
            if seq == last:
                now = time.perf_counter()
                if now - idle_since > SPIN_S:
                    if parent is not None and not parent.is_alive():
                        return
                    time.sleep(_nap(now - idle_since))
                continue
            last = seq
            code = int(ctrl[_CODE])
            if code == _CLOSE:
                return
            status = 0
            try:
                if code == _STEP:
                    *results, info = env.step_checked(actions)
                    results += [info[key] for key in info_keys]
                    for out, value in zip(outs, results):
                        out[...] = value
                else:
                    command, payload = conn.recv()
                    if command == "reset":
                        result: Any = env.reset(seed=payload[0], mask=payload[1])[0]
                    elif command == "set_tasks":
                        result = env.set_tasks(payload)
                    elif command == "physics_states":
                        result = env.physics_states()
                    else:
                        raise ValueError(f"unknown command {command!r}")
                    conn.send(("ok", result))
            except Exception as exc:
                status = 1
                conn.send(("error", (f"{type(exc).__name__}: {exc}", traceback.format_exc())))
            ctrl[_STATUS] = status
            ctrl[_DONE] = seq
            idle_since = time.perf_counter()
    except (EOFError, OSError):
        return
    finally:
        if env is not None:
            env.close()
        block.close()


class _Lost(Exception):
    """A worker died or did not answer in time (internal: becomes WorkerLost or a fatal error)."""

    def __init__(self, worker: _Worker, reason: str):
        super().__init__(reason)
        self.worker = worker
        self.reason = reason


class _Worker:
    """The caller's handle of one worker process and its block."""

    def __init__(self, index: int, slots: range, block: _Block):
        self.index = index
        self.slots = slots
        self.block = block
        self.process: Any = None
        self.conn: mp_connection.Connection | None = None
        self.seq = 0

    def describe(self) -> str:
        return f"locomotion worker {self.index} (slots {self.slots.start}..{self.slots.stop - 1})"


class _Resources:
    """What :meth:`SplitLocomotionBatchedEnv.close` releases, apart from the env so that a
    ``weakref.finalize`` can release it at garbage collection or interpreter exit."""

    def __init__(self) -> None:
        self.workers: list[_Worker] = []

    def release(self) -> None:
        for w in self.workers:
            if w.process is not None and w.process.is_alive() and w.block.ctrl is not None:
                w.seq += 1
                w.block.ctrl[_CODE] = _CLOSE
                w.block.ctrl[_SEQ] = w.seq
        for w in self.workers:
            if w.process is not None and w.process.pid is not None:  # started
                w.process.join(2.0)
                if w.process.is_alive():
                    w.process.kill()
                    w.process.join(5.0)
            if w.conn is not None:
                w.conn.close()
            w.block.close(unlink=True)
        self.workers = []


class SplitLocomotionBatchedEnv(BatchedEnv):
    """``B`` locomotion slots over ``num_processes`` processes (module docstring).

    The caller's process steps the first chunk; each of the other ``num_processes - 1`` chunks
    has a worker process. Same interface, transitions and seeding as
    :class:`~.batched.LocomotionBatchedEnv`.

    Args:
        dist: the task distribution.
        tasks: one task of ``dist`` per slot.
        num_processes: processes that step slots, the caller's included (at most ``B``).
        timeout: seconds a worker may take to answer before it is declared hung (starting may
            take :data:`START_TIMEOUT_S` or ``timeout``, whichever is longer).
        max_restarts: worker restarts allowed over the env's life before a loss is fatal.
        restart_backoff: base of the exponential back-off before a restart, in seconds.

    Attributes:
        model: the caller's ``mujoco.MjModel`` (every process compiles the same one).
        stepper: ``"processes"``.
        chunks: the slot range of each process, the caller's first.
    """

    stepper = "processes"

    def __init__(
        self,
        dist: LocomotionDistribution,
        tasks: Sequence[Task],
        *,
        num_processes: int,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_restarts: int = DEFAULT_MAX_RESTARTS,
        restart_backoff: float = DEFAULT_RESTART_BACKOFF_S,
    ) -> None:
        tasks = list(tasks)
        if not tasks:
            raise EnvError("a batched env needs at least one task, got 0")
        num_processes = check_int("num_processes", num_processes)
        timeout = check_real("timeout", timeout, positive=True)
        max_restarts = check_int("max_restarts", max_restarts, minimum=0)
        restart_backoff = check_real("restart_backoff", restart_backoff, minimum=0.0)
        self.dist = dist
        self.robot = dist.robot
        self.num_slots = b = len(tasks)
        self.num_threads = min(int(num_processes), b)
        self.single_observation_space = dist.observation_space
        self.single_action_space = dist.action_space
        self.max_episode_steps = int(dist.max_episode_steps)
        self.timeout = float(timeout)
        self.max_restarts = int(max_restarts)
        self.restart_backoff = float(restart_backoff)
        self._restarts = 0
        self.chunks = _chunks(b, self.num_threads)
        for task in tasks:
            dist.task_vector(task)  # every task checked here, with the in-process env's errors
        self._local = LocomotionBatchedEnv(dist, tasks[: self.chunks[0].stop], num_threads=1)
        self.model = self._local.model
        self.tasks: tuple[Task, ...] = tuple(tasks)
        self._info_spec = self._probe_info()
        # The step's results in the order the caller assembles them, with their dtypes.
        layout = self._layout(1)
        self._result_keys = _result_keys(list(self._info_spec))
        self._result_dtypes = {key: np.dtype(layout[key][1]) for key in self._result_keys}
        self._resources = _Resources()
        self._finalizer = weakref.finalize(self, self._resources.release)
        try:
            self._start(tasks)
        except BaseException:
            self.close()
            raise

    # -- set-up -------------------------------------------------------------------------------

    def _probe_info(self) -> dict[str, str]:
        """The info keys and dtypes of a step, from a one-slot env."""
        probe = LocomotionBatchedEnv(self.dist, self.tasks[:1], num_threads=1)
        try:
            probe.reset(seed=0)
            zeros = np.zeros((1, *self.single_action_space.shape), self.single_action_space.dtype)
            info = probe.step(zeros)[4]
        finally:
            probe.close()
        return {key: np.asarray(value).dtype.str for key, value in info.items()}

    def _layout(self, k: int) -> dict[str, tuple[tuple[int, ...], str]]:
        space = self.single_action_space
        layout = {
            "ctrl": ((4,), np.dtype(np.int64).str),
            "actions": ((k, *space.shape), np.dtype(space.dtype).str),
            "obs": ((k, *self.single_observation_space.shape), np.dtype(np.float64).str),
            "reward": ((k,), np.dtype(np.float64).str),
            "terminated": ((k,), np.dtype(bool).str),
            "truncated": ((k,), np.dtype(bool).str),
        }
        layout.update({"info_" + key: ((k,), dtype) for key, dtype in self._info_spec.items()})
        return layout

    def _start(self, tasks: list[Task]) -> None:
        method = next(m for m in START_METHODS if m in mp.get_all_start_methods())
        self._ctx = mp.get_context(method)
        if method == "forkserver":
            # Workers fork from a server that already imported this module (MuJoCo, numpy,
            # torch), so a worker starts in a fraction of a second. The server is shared with
            # the process pool (envs/procpool.py); the preload applies when this starts it.
            self._ctx.set_forkserver_preload([__name__])
        for index, slots in enumerate(self.chunks[1:], start=1):
            worker = _Worker(index, slots, _Block(self._layout(len(slots))))
            self._resources.workers.append(worker)
            self._spawn(worker)
        for worker in self._resources.workers:
            try:
                self._reply(worker, "start")
            except _Lost as lost:
                hint = ""
                if lost.reason.startswith("died"):
                    hint = ' (a script that builds envs when imported needs `if __name__ == "__main__":`)'
                raise EnvError(f"{worker.describe()} {lost.reason}; the env is closed{hint}") from None

    def _spawn(self, worker: _Worker) -> None:
        """Start ``worker``'s process on its block (counters zeroed) for its slots' tasks."""
        worker.block.ctrl[:] = 0
        worker.seq = 0
        parent_conn, child_conn = self._ctx.Pipe()
        worker.conn = parent_conn
        worker.process = self._ctx.Process(
            target=_worker_main,
            args=(
                child_conn,
                list(sys.path),
                worker.block.shm.name,
                self._layout(len(worker.slots)),
                self.dist,
                list(self.tasks[worker.slots.start : worker.slots.stop]),
            ),
            name=f"metarl-locomotion-{worker.index}",
            daemon=True,
        )
        try:
            worker.process.start()
        finally:
            child_conn.close()  # the worker holds its own copy once started

    def _replace(self, lost: _Lost) -> None:
        """Kill, join and restart a lost worker (back-off, capped); the env is closed with a
        :class:`WorkerError` once the restarts are spent, or an :class:`EnvError` when the
        replacement cannot build its env."""
        worker, reason = lost.worker, lost.reason
        while True:
            pid = worker.process.pid
            worker.process.kill()
            worker.process.join(10.0)
            if worker.conn is not None:
                worker.conn.close()
                worker.conn = None
            if self._restarts >= self.max_restarts:
                self.close()
                raise WorkerError(
                    f"{worker.describe()} (pid {pid}) {reason}, and the env already restarted "
                    f"max_restarts={self.max_restarts} workers; the env is closed"
                )
            self._restarts += 1
            time.sleep(min(self.restart_backoff * 2 ** (self._restarts - 1), MAX_BACKOFF_S))
            try:
                self._spawn(worker)
                self._reply(worker, "start")
                return
            except _Lost as again:
                reason = f"{reason}; its replacement {again.reason}"
            except BaseException:
                self.close()
                raise

    # -- the hand-over ------------------------------------------------------------------------

    def _check(self, worker: _Worker, what: str) -> Any:
        limit = max(self.timeout, START_TIMEOUT_S) if what == "start" else self.timeout

        def check(waited: float) -> None:
            if not worker.process.is_alive():
                raise _Lost(worker, f"died with exit code {worker.process.exitcode} during {what}")
            if waited > limit:
                raise _Lost(worker, f"did not answer {what} within {limit:g} s")

        return check

    def _reply(self, worker: _Worker, what: str) -> Any:
        """The worker's answer on the pipe (start-up and pipe commands), raising its error."""
        assert worker.conn is not None
        check = self._check(worker, what)
        start = time.perf_counter()
        while not worker.conn.poll(0.01):
            check(time.perf_counter() - start)
        try:
            status, payload = worker.conn.recv()
        except (EOFError, OSError):
            # The pipe closed: the worker is exiting. Let it finish, so that the error says how
            # it died rather than that it did not answer.
            worker.process.join(5.0)
            check(float("inf"))
            raise
        if status == "error":
            message, text = payload
            raise EnvError(f"{worker.describe()} failed in {what}: {message}") from RemoteTraceback(
                text
            )
        return payload

    @staticmethod
    def _send(worker: _Worker, message: tuple[str, Any]) -> None:
        """Put a pipe command for ``worker``; a dead worker's broken pipe is left for
        :meth:`_collect` to find (its process is gone)."""
        assert worker.conn is not None
        try:
            worker.conn.send(message)
        except (BrokenPipeError, ConnectionResetError, EOFError):
            pass

    def _issue(self, worker: _Worker, code: int) -> None:
        worker.seq += 1
        worker.block.ctrl[_CODE] = code
        worker.block.ctrl[_SEQ] = worker.seq

    def _wait(self, worker: _Worker, what: str) -> None:
        _poll(worker.block.ctrl, _DONE, worker.seq, self._check(worker, what))
        if worker.block.ctrl[_STATUS]:
            self._reply(worker, what)  # raises the worker's error

    def _command(self, command: str, payloads: list[Any]) -> list[Any]:
        """Send a pipe command to every worker, then collect the answers."""
        self._check_open()
        workers = self._resources.workers
        for worker, payload in zip(workers, payloads):
            self._send(worker, (command, payload))
            self._issue(worker, _PIPE)
        return self._collect(workers, command, answer=True)

    def _check_open(self) -> None:
        if self._local is None:
            raise EnvError("this batched env is closed")

    # -- the BatchedEnv interface -------------------------------------------------------------

    def set_tasks(self, tasks: Sequence[Task]) -> None:
        """Bind slot ``i`` to ``tasks[i]`` (see :meth:`LocomotionBatchedEnv.set_tasks`)."""
        self._check_open()
        tasks = list(tasks)
        if len(tasks) != self.num_slots:
            raise EnvError(
                f"set_tasks needs {self.num_slots} tasks, one per slot, got {len(tasks)}"
            )
        for task in tasks:
            self.dist.task_vector(task)  # every task checked here, before any process binds it
        self._local.set_tasks(tasks[: self.chunks[0].stop])
        self.tasks = tuple(tasks)  # a worker replaced during the command starts with these
        try:
            self._command("set_tasks", [tasks[c.start : c.stop] for c in self.chunks[1:]])
        except WorkerLost:
            pass  # no trial is under way: the replacement already holds the new tasks

    def reset(
        self, *, seed: int | Sequence[int] | None = None, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset the slots in ``mask`` (see :meth:`LocomotionBatchedEnv.reset`)."""
        self._check_open()
        mask = reset_mask(mask, self.num_slots)
        seeds = nonnegative_slot_seeds(seed, self.num_slots)

        def part(c: range) -> tuple[list[int] | None, np.ndarray]:
            chunk_seeds = None if seed is None else [int(s) for s in seeds[c.start : c.stop]]
            return chunk_seeds, mask[c.start : c.stop]

        workers = self._resources.workers
        for worker in workers:
            self._send(worker, ("reset", part(worker.slots)))
            self._issue(worker, _PIPE)
        local_seeds, local_mask = part(self.chunks[0])
        obs = np.empty((self.num_slots, *self.single_observation_space.shape))
        obs[self.chunks[0].start : self.chunks[0].stop] = self._local.reset(
            seed=local_seeds, mask=local_mask
        )[0]
        for worker, answer in zip(workers, self._collect(workers, "reset", answer=True)):
            obs[worker.slots.start : worker.slots.stop] = answer
        return obs, {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every live slot (see :meth:`LocomotionBatchedEnv.step`)."""
        self._check_open()
        acts = check_actions(actions, self.single_action_space, self.num_slots)
        workers = self._resources.workers
        for worker in workers:
            worker.block.arrays["actions"][...] = acts[worker.slots.start : worker.slots.stop]
            self._issue(worker, _STEP)
        local = self.chunks[0]
        try:
            *parts, info0 = self._local.step_checked(acts[: local.stop])
            parts += [info0[key] for key in self._info_spec]
            # The caller's rows of the results are filled while the workers finish theirs.
            results = []
            for key, part in zip(self._result_keys, parts):
                array = np.empty((self.num_slots, *part.shape[1:]), self._result_dtypes[key])
                array[: local.stop] = part
                results.append(array)
        except BaseException:
            try:
                self._collect(workers, "step")  # no answer may be left for the next command
            except WorkerLost:
                pass  # replaced; the caller's own error is the one to raise
            raise
        lost: WorkerLost | None = None
        try:
            self._collect(workers, "step")
        except WorkerLost as exc:
            lost = exc
        for worker in workers:
            lo, hi = worker.slots.start, worker.slots.stop
            for array, key in zip(results, self._result_keys):
                if lost is not None and lo in lost.slots:
                    array[lo:hi] = 0  # the replacement's block holds no result of this step
                else:
                    array[lo:hi] = worker.block.arrays[key]
        obs, reward, terminated, truncated = results[:4]
        info = dict(zip(self._info_spec, results[4:]))
        if lost is not None:
            lost.result = (obs, reward, terminated, truncated, info)  # type: ignore[attr-defined]
            raise lost
        return obs, reward, terminated, truncated, info

    def _collect(self, workers: list[_Worker], what: str, *, answer: bool = False) -> list[Any]:
        """Wait for every worker's command (and read its answer from the pipe when ``answer``),
        so that none is left for the next command to read. Then replace the workers that were
        lost and raise :class:`WorkerLost`, else raise the first worker error, if any. Returns
        the answers (``None`` each without ``answer``)."""
        answers: list[Any] = []
        errors: list[BaseException] = []
        lost: list[_Lost] = []
        for worker in workers:
            try:
                self._wait(worker, what)
                answers.append(self._reply(worker, what) if answer else None)
            except _Lost as exc:
                lost.append(exc)
            except EnvError as exc:
                errors.append(exc)
        if lost:
            for exc in lost:
                self._replace(exc)
            raise WorkerLost(
                "; ".join(f"{exc.worker.describe()} {exc.reason}" for exc in lost)
                + f"; replaced ({self._restarts}/{self.max_restarts} restarts used), and its slots"
                " must be reset and their trials collected again",
                slots=[slot for exc in lost for slot in exc.worker.slots],
            )
        if errors:
            raise errors[0]
        return answers

    def physics_states(self) -> np.ndarray:
        """``[B, nstate]`` every slot's ``mjSTATE_FULLPHYSICS`` state, gathered from all
        processes (:class:`~metarl.errors.WorkerLost` if a worker was lost meanwhile)."""
        self._check_open()
        parts = [self._local.physics_states()]
        parts += self._command("physics_states", [None] * len(self._resources.workers))
        return np.concatenate(parts)

    @property
    def worker_restarts(self) -> int:
        """How many workers were replaced over the env's life."""
        return self._restarts

    def worker_pids(self) -> list[int | None]:
        """The worker processes' ids (the caller's chunk has none)."""
        return [w.process.pid if w.process is not None else None for w in self._resources.workers]

    def close(self) -> None:
        """Stop the workers and free the shared memory (idempotent)."""
        self._finalizer()
        if self._local is not None:
            self._local.close()
            self._local = None  # type: ignore[assignment]
