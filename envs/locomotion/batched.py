"""Batched MuJoCo locomotion: one ``MjModel``, per-slot states, stepped in C threads.

The locomotion tasks change only the reward, never the physics, so every slot shares one compiled
model. A slot *is* its row of ``states``: the integration state that ``mj_step`` reads. Each env
step advances every live slot by ``frame_skip`` physics steps, in one of two ways:

- ``"rollout"`` (HalfCheetah, whose model runs without the solver's warm start, see
  :attr:`Robot.warm_start`): a row is ``mjSTATE_FULLPHYSICS`` (time, ``qpos``, ``qvel``), and one
  call to ``mujoco.rollout`` steps all live slots in its C thread pool, with no Python and no GIL
  per slot. This is why the cheetah drops the warm start: rollout neither takes a state with it
  nor returns it, and restarting it at every env step would make the batched env differ from the
  single-task env (1e-4 after 50 steps, O(1) after 100).
- ``"threads"`` (the ant, which keeps v5's warm start and whose reward and observation use the
  contact forces ``cfrc_ext``, which rollout does not return): a row is
  ``mjSTATE_FULLPHYSICS | mjSTATE_WARMSTART | mjSTATE_CTRL``. Each live slot is loaded into a
  thread's ``MjData`` (``mj_setState``), stepped (``mj_step(model, data, nstep=frame_skip)``,
  then ``mj_rnePostConstraint`` for the contact forces) and stored back (``mj_getState``). The
  calling thread and a pool of workers take chunks of slots from a shared queue; the MuJoCo
  bindings release the GIL inside these calls, so different slots' physics runs in parallel.

Observations, rewards and terminations are then computed for all slots at once in numpy. In both
modes a step is a function of the row alone (the model has no activations, plugins or mocap
bodies, and applied forces are never set), so the batched env gives the single-task env's
transitions bit for bit (the tests compare them).

On more than one core, :class:`~.split.SplitLocomotionBatchedEnv` (the default on x86-64) runs
one of these envs with one thread per process instead. Measured with ``metarl bench envs --env
halfcheetah-vel --slots 64`` on 2 cores, as a fraction of bare ``mujoco.rollout`` over both
cores (medians of 5 interleaved repetitions): the thread mode 0.51 (two Python threads fight over
the GIL around every slot's three short C calls; one thread alone reached 0.88 of one core's
rollout), the rollout mode 0.69 (rollout's pool wakes its threads at every env step, about
100 us a call), one process per core 0.77-0.91 (median 0.82 over 13 runs; 0.81-0.92, median
0.87 over 7, after resets without MuJoCo calls and leaner result assembly).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import mujoco
import numpy as np
from gymnasium.utils import seeding
from mujoco import rollout

from metarl.envs.base import check_actions, nonnegative_slot_seeds, reset_mask
from metarl.errors import EnvError
from metarl.types import BatchedEnv, Task

if TYPE_CHECKING:
    from metarl.envs.locomotion.distributions import LocomotionDistribution

__all__ = ["LocomotionBatchedEnv"]

# What a slot's row holds in the thread mode: everything mj_step reads that the locomotion envs
# ever change. The rollout mode holds mjSTATE_FULLPHYSICS only (no warm start, ctrl apart).
_SLOT_STATE = (
    mujoco.mjtState.mjSTATE_FULLPHYSICS
    | mujoco.mjtState.mjSTATE_WARMSTART
    | mujoco.mjtState.mjSTATE_CTRL
)


def _state_slice(model: mujoco.MjModel, spec: int, component: int) -> slice:
    """Where ``component`` (one ``mjtState`` bit of ``spec``) sits in a state vector: MuJoCo
    concatenates the components in the order of their bits."""
    start = mujoco.mj_stateSize(model, spec & (int(component) - 1))
    return slice(start, start + mujoco.mj_stateSize(model, int(component)))


# Chunks per thread and step: many small chunks keep the threads finishing together (the last
# chunk is all one thread may wait for), and taking a chunk (a lock, ~1 us) costs nothing next to
# simulating even one slot (~50 us for the cheetah, ~250 us for the ant).
_CHUNKS_PER_THREAD = 16
# The rollout mode's chunks per thread (see _simulate_rollout).
_ROLLOUT_CHUNKS_PER_THREAD = 2


class LocomotionBatchedEnv(BatchedEnv):
    """``B`` locomotion slots with the same transitions as the single-task env.

    Autoreset is disabled. A slot whose episode ended (terminated, or ``max_episode_steps`` steps
    since its reset) is not simulated again until ``reset(mask=...)`` restarts it: stepping it
    returns its final observation, reward 0 and the ``terminated``/``truncated`` flags that ended
    it; ``info["active"]`` marks the slots that were simulated. Resets use gymnasium v5's noise
    drawn from a per-slot ``numpy.random.Generator`` made by ``gymnasium.utils.seeding`` from the
    slot's seed, so ``reset(seed=s)`` puts slot ``i`` exactly where the single-task env is after
    ``reset(seed=s + i)``; without a seed a slot's generator continues.

    Args:
        dist: the task distribution (robot, reward, horizon, spaces, ``task_in_obs``).
        tasks: one task of ``dist`` per slot.
        num_threads: threads that step the physics (default ``os.cpu_count()``; at most ``B``).

    Attributes:
        model: the ``mujoco.MjModel`` all slots share.
        stepper: ``"rollout"`` or ``"threads"`` (module docstring).
        states: ``[B, nstate]`` each slot's state, of the ``mjtState`` spec ``state_spec``
            (``mjSTATE_FULLPHYSICS`` for ``"rollout"``, ``mjSTATE_FULLPHYSICS |
            mjSTATE_WARMSTART | mjSTATE_CTRL`` for ``"threads"``).
        datas: one ``mujoco.MjData`` per thread, loaded with a slot's state to step it.
        elapsed_steps: ``[B]`` steps since each slot's reset.
    """

    def __init__(
        self,
        dist: LocomotionDistribution,
        tasks: Sequence[Task],
        *,
        num_threads: int | None = None,
    ) -> None:
        tasks = list(tasks)
        if not tasks:
            raise EnvError("a batched env needs at least one task, got 0")
        threads = (os.cpu_count() or 1) if num_threads is None else num_threads
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
            raise EnvError(f"num_threads must be a positive integer, got {num_threads!r}")
        self.dist = dist
        self.robot = dist.robot
        self.reward = dist.reward
        self.num_slots = len(tasks)
        self.single_observation_space = dist.observation_space
        self.single_action_space = dist.action_space
        self.max_episode_steps = int(dist.max_episode_steps)
        self.num_threads = min(int(threads), self.num_slots)

        self.model = self.robot.compile()
        m = self.model
        self.dt = float(m.opt.timestep * self.robot.frame_skip)
        self._init_qpos = m.qpos0.copy()
        self._init_qvel = np.zeros(m.nv)
        self._contacts = self.robot.contact_forces_in_obs or self.reward.contact_cost_weight != 0.0
        self._body_xy = self.robot.position_source == "body_xpos"
        if m.na or m.nplugin or m.nmocap:
            raise EnvError(
                f"{self.robot.name}: models with activations, plugins or mocap bodies are not supported"
            )

        warm_start = not (m.opt.disableflags & int(mujoco.mjtDisableBit.mjDSBL_WARMSTART))
        self.stepper = "threads" if (warm_start or self._contacts or self._body_xy) else "rollout"

        # One MjData per thread; datas[0] also serves resets, which never overlap a step.
        self.datas = [mujoco.MjData(m) for _ in range(self.num_threads)]
        full = int(mujoco.mjtState.mjSTATE_FULLPHYSICS)
        self.state_spec = full if self.stepper == "rollout" else int(_SLOT_STATE)
        b = self.num_slots
        self.states = np.zeros((b, mujoco.mj_stateSize(m, self.state_spec)))
        # Row views made once: the hot loop hands them to mj_setState/mj_getState as they are.
        self._state_rows = [self.states[i] for i in range(b)]
        qpos_cols = _state_slice(m, self.state_spec, mujoco.mjtState.mjSTATE_QPOS)
        qvel_cols = _state_slice(m, self.state_spec, mujoco.mjtState.mjSTATE_QVEL)
        self._qpos = self.states[:, qpos_cols]
        self._qvel = self.states[:, qvel_cols]
        # When the observation is just qpos (after the skipped coordinates) and qvel, it is one
        # run of columns of the state rows (qvel follows qpos in MuJoCo's state order): one copy.
        self._obs_cols: slice | None = None
        if not (self.robot.contact_forces_in_obs or dist.task_in_obs) and (
            qvel_cols.start == qpos_cols.stop
        ):
            self._obs_cols = slice(qpos_cols.start + self.robot.skipped_qpos, qvel_cols.stop)
        self._reset_row: np.ndarray | None = None
        if self.stepper == "rollout":
            d = self.datas[0]
            mujoco.mj_resetData(m, d)
            self._reset_row = np.empty(self.states.shape[1])
            mujoco.mj_getState(m, d, self._reset_row, self.state_spec)
            # Buffers of the full-batch call: controls held for frame_skip steps, and the states
            # after each of them.
            self._control = np.zeros((b, self.robot.frame_skip, m.nu))
            self._trajectory = np.zeros((b, self.robot.frame_skip, self.states.shape[1]))
            self._models = [m] * b
            self._roller: rollout.Rollout | None = rollout.Rollout(
                nthread=self.num_threads if self.num_threads > 1 else 0
            )
            self._rollout_chunks = _ROLLOUT_CHUNKS_PER_THREAD * max(1, self._roller.nthread)
        else:
            ctrl = _state_slice(m, self.state_spec, mujoco.mjtState.mjSTATE_CTRL)
            self._ctrl = self.states[:, ctrl]
            self._roller = None
        self._cfrc = np.zeros((b, m.nbody, 6))
        self._xy = np.zeros((b, 2))
        self.elapsed_steps = np.zeros(b, dtype=np.int64)
        self._started = np.zeros(b, dtype=bool)
        self._ended = np.zeros(b, dtype=bool)
        # Summaries of the two masks, kept up to date by reset and step (the hot path reads them).
        self._all_started = False
        self._any_ended = False
        self._final_terminated = np.zeros(b, dtype=bool)
        self._final_truncated = np.zeros(b, dtype=bool)
        self._rngs: list[np.random.Generator | None] = [None] * b

        self._pool = (
            ThreadPoolExecutor(self.num_threads - 1, thread_name_prefix="metarl-mujoco")
            if self.num_threads > 1 and self.stepper == "threads"
            else None
        )
        self._queue_lock = threading.Lock()
        self.tasks: tuple[Task, ...] = ()
        self._task = np.zeros((b, 0))
        self.set_tasks(tasks)

    # -- tasks and resets ---------------------------------------------------------------------

    def set_tasks(self, tasks: Sequence[Task]) -> None:
        """Bind slot ``i`` to ``tasks[i]``; the new rewards apply from the next step, and episodes
        start over only at the next reset."""
        tasks = list(tasks)
        if len(tasks) != self.num_slots:
            raise EnvError(
                f"set_tasks needs {self.num_slots} tasks, one per slot, got {len(tasks)}"
            )
        self._task = np.stack([self.dist.task_vector(task) for task in tasks])
        self.tasks = tuple(tasks)

    def reset(
        self, *, seed: int | Sequence[int] | None = None, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset the slots in ``mask`` (all when ``None``); returns ``(obs[B, obs_dim], {})``.

        ``seed``: one int (slot ``i`` gets ``seed + i``) or one non-negative seed per slot; only
        the masked slots' generators are reseeded.
        """
        mask = reset_mask(mask, self.num_slots)
        seeds = nonnegative_slot_seeds(seed, self.num_slots)
        for i in np.flatnonzero(mask).tolist():
            slot_seed = seeds[i]
            if slot_seed is not None:
                self._rngs[i] = seeding.np_random(slot_seed)[0]
            elif self._rngs[i] is None:
                self._rngs[i] = seeding.np_random(None)[0]
            self._reset_slot(i, self._rngs[i])
        if not self._body_xy:
            self._xy[:, 0] = self._qpos[:, 0]
        self.elapsed_steps[mask] = 0
        self._started |= mask
        self._ended[mask] = False
        self._all_started = bool(self._started.all())
        self._any_ended = bool(self._ended.any())
        self._final_terminated[mask] = False
        self._final_truncated[mask] = False
        return self._observe(), {}

    def _reset_slot(self, i: int, rng: np.random.Generator) -> None:
        # The same draws, in the same order, as gymnasium v5's MujocoEnv.reset + reset_model.
        m, d = self.model, self.datas[0]
        noise = self.robot.reset_noise_scale
        qpos = self._init_qpos + rng.uniform(low=-noise, high=noise, size=m.nq)
        qvel = self._init_qvel + noise * rng.standard_normal(m.nv)
        if self._reset_row is not None:
            # The rollout mode's state is mjSTATE_FULLPHYSICS, which mj_forward leaves as it
            # is: the reset state is mj_resetData's with the drawn qpos and qvel, no MuJoCo call.
            row = self._state_rows[i]
            row[:] = self._reset_row
            self._qpos[i] = qpos
            self._qvel[i] = qvel
            return
        mujoco.mj_resetData(m, d)
        d.qpos[:] = qpos
        d.qvel[:] = qvel
        mujoco.mj_forward(m, d)
        mujoco.mj_getState(m, d, self._state_rows[i], self.state_spec)
        if self._contacts:
            self._cfrc[i] = d.cfrc_ext
        if self._body_xy:
            self._xy[i] = d.xpos[self.robot.main_body, :2]

    def physics_states(self) -> np.ndarray:
        """``[B, nstate]`` every slot's ``mjSTATE_FULLPHYSICS`` state (time, qpos, qvel)."""
        m, d = self.model, self.datas[0]
        spec = int(mujoco.mjtState.mjSTATE_FULLPHYSICS)
        if self.state_spec == spec:
            return self.states.copy()
        out = np.empty((self.num_slots, mujoco.mj_stateSize(m, spec)))
        for i, row in enumerate(self._state_rows):
            mujoco.mj_setState(m, d, row, self.state_spec)
            mujoco.mj_getState(m, d, out[i], spec)
        return out

    # -- stepping -----------------------------------------------------------------------------

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every live slot with ``actions[B, nu]``.

        Returns:
            ``obs[B, obs_dim]`` float64, ``reward[B]`` float64, ``terminated[B]``, ``truncated[B]``
            and ``info`` with ``[B]`` arrays: the reward's parts (``reward_task``,
            ``reward_ctrl``, ``reward_contact``, ``reward_bonus``), ``x_velocity``,
            ``y_velocity``, ``x_position``, ``y_position`` and ``active``.

        Raises:
            EnvError: wrong action shape, NaN/inf actions, or a slot never reset.
        """
        return self.step_checked(check_actions(actions, self.single_action_space, self.num_slots))

    def step_checked(
        self, acts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """:meth:`step` for actions already checked by ``check_actions`` (the process-split env
        checks the whole batch once)."""
        if not self._all_started:
            raise EnvError(
                f"slot {int(np.argmin(self._started))} was never reset; call reset() before step()"
            )
        all_active = not self._any_ended
        active = np.ones(self.num_slots, dtype=bool) if all_active else ~self._ended
        xy_before = self._xy.copy()
        if self.stepper == "rollout":
            self._simulate_rollout(acts, None if all_active else active)
        else:
            self._ctrl[:] = acts
            self._simulate(np.flatnonzero(active).tolist())
        if not self._body_xy:
            self._xy[:, 0] = self._qpos[:, 0]
        reward, terminated, parts = self.reward.evaluate(
            self._task,
            xy_before=xy_before,
            xy_after=self._xy,
            dt=self.dt,
            action=acts,
            qpos=self._qpos,
            qvel=self._qvel,
            cfrc_ext=self._cfrc,
        )
        if all_active:
            # Every slot was simulated (the common case): no idle slot to mask.
            self.elapsed_steps += 1
            truncated = self.elapsed_steps >= self.max_episode_steps
            ended = terminated | truncated
        else:
            self.elapsed_steps[active] += 1
            truncated = active & (self.elapsed_steps >= self.max_episode_steps)
            terminated &= active
            idle = ~active
            reward[idle] = 0.0
            terminated[idle] = self._final_terminated[idle]
            truncated[idle] = self._final_truncated[idle]
            ended = active & (terminated | truncated)
        if ended.any():
            self._any_ended = True
            self._ended |= ended
            self._final_terminated[ended] = terminated[ended]
            self._final_truncated[ended] = truncated[ended]
        info: dict[str, Any] = dict(parts)
        info["x_position"] = self._xy[:, 0].copy()
        info["y_position"] = self._xy[:, 1].copy()
        info["active"] = active
        return self._observe(), reward, terminated, truncated, info

    def _simulate_rollout(self, acts: np.ndarray, active: np.ndarray | None) -> None:
        """Advance the ``active`` slots (all when ``None``) by one env step with ``acts``, in one
        ``mujoco.rollout`` call."""
        assert self._roller is not None
        if active is None:
            n = self.num_slots
            control, trajectory, models, initial = (
                self._control,
                self._trajectory,
                self._models,
                self.states,
            )
            control[:] = acts[:, None]
        else:
            index = np.flatnonzero(active)
            n = len(index)
            if n == 0:
                return
            initial = self.states[index]
            control = np.repeat(acts[index, None].astype(np.float64), self.robot.frame_skip, axis=1)
            trajectory = np.empty((n, *self._trajectory.shape[1:]))
            models = self._models[:n]
        self._roller.rollout(
            models,
            self.datas,
            initial,
            control,
            nstep=self.robot.frame_skip,
            skip_checks=True,
            initial_warmstart=None,
            state=trajectory,
            sensordata=None,
            # Two chunks per thread: fewer hand-offs than rollout's default of ten, and still
            # even enough when slots cost the same.
            chunk_size=max(1, -(-n // self._rollout_chunks)),
        )
        if active is None:
            self.states[:] = trajectory[:, -1]
        else:
            self.states[index] = trajectory[:, -1]

    def _simulate(self, slots: list[int]) -> None:
        """Advance ``slots`` by one env step, on up to ``num_threads`` threads."""
        n = len(slots)
        threads = min(self.num_threads, n)
        if threads <= 1 or self._pool is None:
            self._run(slots, self.datas[0])
            return
        size = max(1, n // (threads * _CHUNKS_PER_THREAD))
        chunks = iter([slots[k : k + size] for k in range(0, n, size)])
        futures = [self._pool.submit(self._drain, chunks, self.datas[t]) for t in range(1, threads)]
        try:
            self._drain(chunks, self.datas[0])
        finally:
            for future in futures:
                future.result()

    def _drain(self, chunks: Iterator[list[int]], data: mujoco.MjData) -> None:
        while True:
            with self._queue_lock:
                chunk = next(chunks, None)
            if chunk is None:
                return
            self._run(chunk, data)

    def _run(self, slots: list[int], d: mujoco.MjData) -> None:
        # The hot loop: a few C calls per slot, each releasing the GIL while it works.
        m, spec, frame_skip, rows = (
            self.model,
            self.state_spec,
            self.robot.frame_skip,
            self._state_rows,
        )
        set_state, get_state, step = mujoco.mj_setState, mujoco.mj_getState, mujoco.mj_step
        if self._contacts or self._body_xy:
            rne = mujoco.mj_rnePostConstraint
            cfrc, xy = self._cfrc, self._xy
            cfrc_view, xy_view = d.cfrc_ext, d.xpos[self.robot.main_body, :2]
            for i in slots:
                row = rows[i]
                set_state(m, d, row, spec)
                step(m, d, frame_skip)
                # gymnasium v5 runs this after every step so that cfrc_ext holds this step's
                # forces; nothing mj_step reads depends on it, so the cheetah skips it.
                rne(m, d)
                cfrc[i] = cfrc_view
                xy[i] = xy_view
                get_state(m, d, row, spec)
        else:
            for i in slots:
                row = rows[i]
                set_state(m, d, row, spec)
                step(m, d, frame_skip)
                get_state(m, d, row, spec)

    def _observe(self) -> np.ndarray:
        if self._obs_cols is not None:
            return self.states[:, self._obs_cols].copy()
        task = self._task if self.dist.task_in_obs else None
        return self.robot.observe(self._qpos, self._qvel, self._cfrc, task)

    def close(self) -> None:
        """Stop the worker threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._roller is not None:
            self._roller.close()
            self._roller = None
