"""The five locomotion task families and their paper presets.

Each family is a :class:`~metarl.types.TaskDistribution` over one robot
(:mod:`.robots`, gymnasium v5 dynamics and observations) with the reward of the paper's code
(:mod:`.rewards`). Presets (reference/papers.md §1.2, §2, §4.1, §7):

======================  ==================================================  ===  ==================
family [preset]         tasks and reward                                    H    episodes per trial
======================  ==================================================  ===  ==================
halfcheetah-vel maml    v* ~ U[0, 2]; -|v_x - v*| - 0.05|a|^2               200  1
halfcheetah-vel varibad v* ~ U[0, 3]; same reward                           200  2
halfcheetah-vel         v* ~ U[0, 2]; same reward                           100  1
  pytorch-maml-rl
halfcheetah-dir maml    d = ±1; d v_x - 0.05|a|^2                           200  1
halfcheetah-dir varibad d = ±1; same reward                                 200  2
ant-vel maml            v* ~ U[0, 3]; -|v_x - v*| + 1.0 - 0.005|a|^2        200  1
                        - contact + 0.05; ends when z leaves [0.2, 1]
ant-dir maml            d = ±1 along x; d v_x - 0.005|a|^2 - contact        200  1
                        + 0.05; ends when z leaves [0.2, 1]
ant-dir varibad         g = ±1 *radians*; v·(cos g, sin g) - 0.5|a|^2       200  2
                        - contact + 1.0; ends when z leaves [0.2, 1]
ant-goal maml           g ~ U[-3, 3]^2; -|xy - g|_1 + 4.0 - 0.005|a|^2      200  1
                        - contact + 0.05; ends when z leaves [0.2, 1]
ant-goal varibad        g on the disc of radius 3 (r = 3 sqrt(U),           200  2
                        θ = 2πU); -|xy - g|_1 - 0.1|a|^2 - contact
======================  ==================================================  ===  ==================

``contact = 5e-4 * sum(clip(cfrc_ext, -1, 1)^2)`` over all bodies (0.5 * 1e-3 in both codebases).
MAML's ant control cost ``0.5e-2 * |a / scaling|^2`` has ``scaling = 1`` for the ant's
``ctrlrange`` of [-1, 1]. Where MAML's rllab envs differ from gymnasium v5 (older XML, their
``comvel`` velocity, extra observation entries, the cheetah's control cost on the clipped action)
the simulator, observation and v5's finite-difference velocity of the tracked position are used
with the paper's formula; rllab's ``normalize()`` clipped every action into the box before the
env saw it, so for actions inside the box the costs agree.

Train/test rules. Continuous families (``*-vel``, ``ant-goal``): the test split is a fixed list of
``num_test_tasks`` (default 40) draws from a seed stream the distribution owns
(``metarl.seeding.numpy_rng(0, "locomotion", family, "test", <range>)``, so presets with the same
range share it and a longer list extends a shorter one); ``sample(n, split="test", rng)`` picks
``n`` distinct entries with ``rng``; ``split="train"`` makes fresh i.i.d. draws with ``rng`` and
redraws any draw equal to a test task, so the splits never overlap. Direction families
(``*-dir``) have exactly two tasks, so there is nothing to hold out: train and test are the same
two directions (``disjoint_splits = False``); train draws them i.i.d. with probability 1/2 each,
test picks them in balanced order (a fresh random permutation of both for every two tasks).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np

from metarl.envs.array import (
    HeldOutDistribution,
    check_flag,
    check_real,
    check_rng,
    check_task,
    preset_factory,
)
from metarl.envs.locomotion.batched import LocomotionBatchedEnv
from metarl.envs.locomotion.rewards import LocomotionReward
from metarl.envs.locomotion.robots import ANT, HALF_CHEETAH, Robot
from metarl.envs.locomotion.single import make_task_env
from metarl.envs.locomotion.split import SplitLocomotionBatchedEnv, default_parallel
from metarl.errors import EnvError, choices
from metarl.seeding import numpy_rng
from metarl.types import Task, TaskDistribution, check_num_tasks, check_split

__all__ = [
    "LocomotionDistribution",
    "HalfCheetahVelDistribution",
    "HalfCheetahDirDistribution",
    "AntVelDistribution",
    "AntDirDistribution",
    "AntGoalDistribution",
    "CHEETAH_VEL_REWARD",
    "CHEETAH_DIR_REWARD",
    "MAML_ANT_VEL_REWARD",
    "MAML_ANT_DIR_REWARD",
    "VARIBAD_ANT_DIR_REWARD",
    "MAML_ANT_GOAL_REWARD",
    "VARIBAD_ANT_GOAL_REWARD",
    "PRESETS",
    "DEFAULT_PRESET",
    "SUMMARY",
]

#: ``cbfinn/maml_rl: rllab/envs/mujoco/half_cheetah_env_rand.py`` (``run_cost + 0.5 * 1e-1 *
#: |a|^2``); the same in ``lmzintgraf/varibad: environments/mujoco/half_cheetah_vel.py`` and
#: ``tristandeleu/pytorch-maml-rl: maml_rl/envs/mujoco/half_cheetah.py``.
CHEETAH_VEL_REWARD = LocomotionReward(objective="velocity", ctrl_cost_weight=0.05)
#: ``cbfinn/maml_rl: rllab/envs/mujoco/half_cheetah_env_rand_direc.py``; the same in
#: ``lmzintgraf/varibad: environments/mujoco/half_cheetah_dir.py``.
CHEETAH_DIR_REWARD = LocomotionReward(objective="direction", ctrl_cost_weight=0.05)
#: ``cbfinn/maml_rl: rllab/envs/mujoco/ant_env_rand.py``: ``-|v_x - v*| + 1.0`` ("make it happy,
#: not suicidal") ``- 0.5e-2 |a|^2 - 0.5e-3 sum(clip(cfrc_ext)^2) + 0.05`` (survive reward).
MAML_ANT_VEL_REWARD = LocomotionReward(
    objective="velocity",
    ctrl_cost_weight=0.005,
    contact_cost_weight=5e-4,
    bonus=1.0 + 0.05,
    terminate_when_unhealthy=True,
)
#: ``cbfinn/maml_rl: rllab/envs/mujoco/ant_env_rand_direc.py``: ``d v_x - 0.5e-2 |a|^2 - contact
#: + 0.05``.
MAML_ANT_DIR_REWARD = LocomotionReward(
    objective="direction",
    ctrl_cost_weight=0.005,
    contact_cost_weight=5e-4,
    bonus=0.05,
    terminate_when_unhealthy=True,
)
#: ``lmzintgraf/varibad: environments/mujoco/ant_dir.py``: ``v_xy · (cos g, sin g) - 0.5 |a|^2 -
#: contact + 1.0`` with ``g = ±1`` taken as an angle in radians (directions at ±57.3° from x).
VARIBAD_ANT_DIR_REWARD = LocomotionReward(
    objective="direction_angle",
    ctrl_cost_weight=0.5,
    contact_cost_weight=5e-4,
    bonus=1.0,
    terminate_when_unhealthy=True,
)
#: ``cbfinn/maml_rl: rllab/envs/mujoco/ant_env_rand_goal.py``: ``-|xy - g|_1 + 4.0 - 0.5e-2 |a|^2
#: - contact + 0.05``.
MAML_ANT_GOAL_REWARD = LocomotionReward(
    objective="goal",
    ctrl_cost_weight=0.005,
    contact_cost_weight=5e-4,
    bonus=4.0 + 0.05,
    terminate_when_unhealthy=True,
)
#: ``lmzintgraf/varibad: environments/mujoco/ant_goal.py``: ``-|xy - g|_1 - 0.1 |a|^2 - contact``;
#: it never terminates.
VARIBAD_ANT_GOAL_REWARD = LocomotionReward(
    objective="goal", ctrl_cost_weight=0.1, contact_cost_weight=5e-4
)

_TEST_ROOT_SEED = 0


class LocomotionDistribution(TaskDistribution):
    """What every locomotion family shares: spaces, the single-task env and the batched env.

    Subclasses set the class attributes below and a ``sample`` rule.

    Attributes:
        robot: the MuJoCo body (:data:`~.robots.HALF_CHEETAH` or :data:`~.robots.ANT`).
        task_param: the task parameter's name.
        task_shape: its shape (``()`` or ``(2,)``).
        reward: the preset's :class:`~.rewards.LocomotionReward`.
        task_in_obs: the task parameters are appended to the observation (oracles).
        disjoint_splits: train and test tasks never coincide.
    """

    robot: ClassVar[Robot]
    task_param: ClassVar[str]
    task_shape: ClassVar[tuple[int, ...]] = ()
    disjoint_splits: ClassVar[bool] = True

    def _setup(
        self,
        *,
        preset: str,
        reward: LocomotionReward,
        max_episode_steps: int,
        episodes_per_trial: int,
        task_in_obs: bool,
    ) -> None:
        for label, value in (
            ("max_episode_steps", max_episode_steps),
            ("episodes_per_trial", episodes_per_trial),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise EnvError(f"{label} must be a positive integer, got {value!r}")
        if not isinstance(reward, LocomotionReward):
            raise EnvError(f"reward must be a LocomotionReward, got {type(reward).__name__}")
        self.preset = preset
        self.reward = reward
        self.max_episode_steps = int(max_episode_steps)
        self.episodes_per_trial = int(episodes_per_trial)
        self.task_in_obs = check_flag("task_in_obs", task_in_obs)
        model = self.robot.sizes()
        task_dim = int(np.prod(self.task_shape)) if self.task_in_obs else 0
        self.observation_space = gym.spaces.Box(
            -np.inf, np.inf, (self.robot.obs_dim() + task_dim,), dtype=np.float64
        )
        low, high = model.actuator_ctrlrange.astype(np.float32).T
        self.action_space = gym.spaces.Box(low=low, high=high, dtype=np.float32)

    def task_vector(self, task: Task) -> np.ndarray:
        """``[k]`` float64 parameters of ``task`` (what the reward reads and oracles observe).

        Raises:
            EnvError: ``task`` is not a task of this family.
        """
        check_task(task, self.name, {self.task_param: self.task_shape})
        return np.asarray(task[self.task_param], dtype=np.float64).reshape(-1)

    def make_env(self, task: Task, **kwargs: Any) -> gym.Env:
        """The single-task gymnasium env of ``task`` inside ``TimeLimit(max_episode_steps)``.

        Keyword arguments: ``render_mode`` (gymnasium's MuJoCo render modes).
        """
        unknown = sorted(set(kwargs) - {"render_mode"})
        if unknown:
            raise EnvError(
                f"unknown option {unknown[0]!r} for make_env; valid options: 'render_mode'"
            )
        env = make_task_env(
            self.robot,
            self.reward,
            self.task_vector(task),
            task_in_obs=self.task_in_obs,
            render_mode=kwargs.get("render_mode"),
        )
        return gym.wrappers.TimeLimit(env, max_episode_steps=self.max_episode_steps)

    def make_batched(
        self, tasks: Sequence[Task], **kwargs: Any
    ) -> LocomotionBatchedEnv | SplitLocomotionBatchedEnv:
        """A batched env with one slot per task.

        Keyword arguments:

        - ``num_threads``: cores to step the slots on (default ``os.cpu_count()``).
        - ``parallel``: ``"processes"`` (:class:`~.split.SplitLocomotionBatchedEnv`, one process
          per core, the caller's included) or ``"threads"``
          (:class:`~.batched.LocomotionBatchedEnv`, one process); the default is
          :func:`~.split.default_parallel`: processes on x86-64 when more than one core is used.
          One core always steps in-process.
        - ``timeout``, ``max_restarts``, ``restart_backoff``: how long a worker process may take
          to answer, how many lost workers are replaced, and the back-off base in seconds (see
          :class:`~.split.SplitLocomotionBatchedEnv`); they apply to processes only.
        """
        process_options = ("timeout", "max_restarts", "restart_backoff")
        valid = ("num_threads", "parallel", *process_options)
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            raise EnvError(
                f"unknown option {unknown[0]!r} for make_batched; valid options: "
                + ", ".join(repr(v) for v in valid)
            )
        threads = kwargs.get("num_threads")
        threads = (os.cpu_count() or 1) if threads is None else threads
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
            raise EnvError(f"num_threads must be a positive integer, got {threads!r}")
        parallel = kwargs.get("parallel") or default_parallel(int(threads))
        if parallel not in ("processes", "threads"):
            raise EnvError(f"unknown parallel {parallel!r}; valid: 'processes', 'threads'")
        if parallel == "processes" and threads > 1 and len(tasks) > 1:
            options = {key: kwargs[key] for key in process_options if kwargs.get(key) is not None}
            return SplitLocomotionBatchedEnv(self, tasks, num_processes=int(threads), **options)
        return LocomotionBatchedEnv(self, tasks, num_threads=int(threads))


class _HeldOutLocomotion(LocomotionDistribution, HeldOutDistribution):
    """A continuous family: held-out test draws, fresh train draws (module docstring)."""

    def _test_generator(self) -> np.random.Generator:
        # The stream is named by the sampling range, so presets that share a range share a list.
        names = [str(value) for value in self._pool_config()]
        return numpy_rng(_TEST_ROOT_SEED, "locomotion", self.name, "test", *names)


class _GoalVelocity(_HeldOutLocomotion):
    """Goal velocities ``v* ~ U[velocity_low, velocity_high]`` along x."""

    task_param = "goal_velocity"

    def _init_velocity(
        self,
        *,
        preset: str,
        velocity_low: float,
        velocity_high: float,
        max_episode_steps: int,
        episodes_per_trial: int,
        num_test_tasks: int,
        reward: LocomotionReward,
        task_in_obs: bool,
    ) -> None:
        HeldOutDistribution.__init__(self, num_test_tasks=num_test_tasks)
        velocity_low = check_real("velocity_low", velocity_low)
        velocity_high = check_real("velocity_high", velocity_high)
        if not velocity_low < velocity_high:
            raise EnvError(
                f"velocity_low must be below velocity_high, got [{velocity_low}, {velocity_high}]"
            )
        self.velocity_low, self.velocity_high = velocity_low, velocity_high
        self._setup(
            preset=preset,
            reward=reward,
            max_episode_steps=max_episode_steps,
            episodes_per_trial=episodes_per_trial,
            task_in_obs=task_in_obs,
        )

    def _pool_config(self) -> tuple[str, float, float]:
        return ("uniform", self.velocity_low, self.velocity_high)

    def _draw(self, rng: Any, n: int) -> list[dict[str, Any]]:
        return [
            {"goal_velocity": float(v)}
            for v in rng.uniform(self.velocity_low, self.velocity_high, size=n)
        ]


class _TwoDirections(LocomotionDistribution):
    """A direction family: the two tasks ``direction = -1`` (index 0) and ``+1`` (index 1).

    Train and test are the same two tasks (there is nothing to hold out). ``split="train"``
    draws each direction i.i.d. with probability 1/2 (MAML: ``U[0, 2] < 1``; VariBAD:
    ``random.choice``); ``split="test"`` takes them in balanced order.
    """

    task_param = "direction"
    disjoint_splits = False
    directions: ClassVar[tuple[float, float]] = (-1.0, 1.0)

    def test_tasks(self) -> list[Task]:
        """Both tasks, in index order."""
        return [
            Task.make(self.name, self.preset, "test", k, direction=d)
            for k, d in enumerate(self.directions)
        ]

    def sample(self, n: int, *, split: str = "train", rng: np.random.Generator) -> list[Task]:
        """``n`` tasks of ``split`` drawn with ``rng`` (see the class docstring).

        Raises:
            EnvError: ``n`` not a positive integer, an unknown split, or ``rng`` not a numpy
                Generator.
        """
        n = check_num_tasks(n)
        check_split(split)
        check_rng(rng)
        if split == "train":
            picks = rng.integers(0, 2, size=n)
        else:
            picks = np.concatenate([rng.permutation(2) for _ in range(math.ceil(n / 2))])[:n]
        return [
            Task.make(self.name, self.preset, split, int(k), direction=self.directions[int(k)])
            for k in picks
        ]


class HalfCheetahVelDistribution(_GoalVelocity):
    """HalfCheetah running at a goal velocity ``v* ~ U[velocity_low, velocity_high]``.

    Reward (:data:`CHEETAH_VEL_REWARD`): ``-|v_x - v*| - 0.05 |a|^2``, from ``cbfinn/maml_rl:
    rllab/envs/mujoco/half_cheetah_env_rand.py`` (MAML §5.3); VariBAD's
    ``environments/mujoco/half_cheetah_vel.py`` and pytorch-maml-rl's
    ``maml_rl/envs/mujoco/half_cheetah.py`` use the same formula. Never terminates. Task
    parameter: ``goal_velocity`` (float).

    Args:
        preset: the preset's name.
        velocity_low, velocity_high: the goal velocity range (MAML and pytorch-maml-rl [0, 2];
            VariBAD [0, 3], papers.md §7.2).
        max_episode_steps: H.
        episodes_per_trial: episodes per trial for trial-based agents.
        num_test_tasks: size of the held-out test list.
        reward: the reward (default :data:`CHEETAH_VEL_REWARD`).
        task_in_obs: append ``v*`` to the observation.
    """

    name = "halfcheetah-vel"
    robot = HALF_CHEETAH

    def __init__(
        self,
        *,
        preset: str = "maml",
        velocity_low: float = 0.0,
        velocity_high: float = 2.0,
        max_episode_steps: int = 200,
        episodes_per_trial: int = 1,
        num_test_tasks: int = 40,
        reward: LocomotionReward = CHEETAH_VEL_REWARD,
        task_in_obs: bool = False,
    ) -> None:
        self._init_velocity(
            preset=preset,
            velocity_low=velocity_low,
            velocity_high=velocity_high,
            max_episode_steps=max_episode_steps,
            episodes_per_trial=episodes_per_trial,
            num_test_tasks=num_test_tasks,
            reward=reward,
            task_in_obs=task_in_obs,
        )


class AntVelDistribution(_GoalVelocity):
    """Ant running at a goal velocity ``v* ~ U[0, 3]`` along x.

    Reward (:data:`MAML_ANT_VEL_REWARD`): ``-|v_x - v*| + 1.0 - 0.005 |a|^2 - 5e-4 sum(clip(cfrc_ext,
    -1, 1)^2) + 0.05``, terminated when the state is non-finite or the torso height leaves
    [0.2, 1.0]; from ``cbfinn/maml_rl: rllab/envs/mujoco/ant_env_rand.py`` (MAML App. A.2). Task
    parameter: ``goal_velocity`` (float). Arguments as :class:`HalfCheetahVelDistribution`.
    """

    name = "ant-vel"
    robot = ANT

    def __init__(
        self,
        *,
        preset: str = "maml",
        velocity_low: float = 0.0,
        velocity_high: float = 3.0,
        max_episode_steps: int = 200,
        episodes_per_trial: int = 1,
        num_test_tasks: int = 40,
        reward: LocomotionReward = MAML_ANT_VEL_REWARD,
        task_in_obs: bool = False,
    ) -> None:
        self._init_velocity(
            preset=preset,
            velocity_low=velocity_low,
            velocity_high=velocity_high,
            max_episode_steps=max_episode_steps,
            episodes_per_trial=episodes_per_trial,
            num_test_tasks=num_test_tasks,
            reward=reward,
            task_in_obs=task_in_obs,
        )


class HalfCheetahDirDistribution(_TwoDirections):
    """HalfCheetah running forward (``direction = +1``) or backward (``-1``).

    Reward (:data:`CHEETAH_DIR_REWARD`): ``d v_x - 0.05 |a|^2``, from ``cbfinn/maml_rl:
    rllab/envs/mujoco/half_cheetah_env_rand_direc.py`` (MAML §5.3, Table 5) and
    ``lmzintgraf/varibad: environments/mujoco/half_cheetah_dir.py``. Never terminates. Task
    parameter: ``direction`` (±1.0). Train/test rule: see :class:`_TwoDirections`.

    Args:
        preset: the preset's name.
        max_episode_steps: H.
        episodes_per_trial: episodes per trial for trial-based agents.
        reward: the reward (default :data:`CHEETAH_DIR_REWARD`).
        task_in_obs: append ``d`` to the observation.
    """

    name = "halfcheetah-dir"
    robot = HALF_CHEETAH

    def __init__(
        self,
        *,
        preset: str = "maml",
        max_episode_steps: int = 200,
        episodes_per_trial: int = 1,
        reward: LocomotionReward = CHEETAH_DIR_REWARD,
        task_in_obs: bool = False,
    ) -> None:
        self._setup(
            preset=preset,
            reward=reward,
            max_episode_steps=max_episode_steps,
            episodes_per_trial=episodes_per_trial,
            task_in_obs=task_in_obs,
        )


class AntDirDistribution(_TwoDirections):
    """Ant running in one of two directions; what ``direction = ±1`` means depends on the reward.

    - ``maml`` (:data:`MAML_ANT_DIR_REWARD`): forward/backward along x, ``d v_x - 0.005 |a|^2 -
      contact + 0.05``, from ``cbfinn/maml_rl: rllab/envs/mujoco/ant_env_rand_direc.py``.
    - ``varibad`` (:data:`VARIBAD_ANT_DIR_REWARD`): ``g = ±1`` is an *angle in radians*, as
      ``lmzintgraf/varibad: environments/mujoco/ant_dir.py`` uses it (papers.md §4.1, §7.3):
      ``v_xy · (cos g, sin g) - 0.5 |a|^2 - contact + 1.0``, i.e. directions at ±57.3° from x.

    Both terminate when the state is non-finite or the torso height leaves [0.2, 1.0].
    ``contact = 5e-4 sum(clip(cfrc_ext, -1, 1)^2)``. Arguments as
    :class:`HalfCheetahDirDistribution` (default reward :data:`MAML_ANT_DIR_REWARD`).
    """

    name = "ant-dir"
    robot = ANT

    def __init__(
        self,
        *,
        preset: str = "maml",
        max_episode_steps: int = 200,
        episodes_per_trial: int = 1,
        reward: LocomotionReward = MAML_ANT_DIR_REWARD,
        task_in_obs: bool = False,
    ) -> None:
        self._setup(
            preset=preset,
            reward=reward,
            max_episode_steps=max_episode_steps,
            episodes_per_trial=episodes_per_trial,
            task_in_obs=task_in_obs,
        )


class AntGoalDistribution(_HeldOutLocomotion):
    """Ant walking to a goal position ``g`` in the plane.

    - ``maml`` (:data:`MAML_ANT_GOAL_REWARD`): ``g ~ U[-3, 3]^2``; ``-|xy - g|_1 + 4.0 - 0.005
      |a|^2 - contact + 0.05``, terminated when the torso height leaves [0.2, 1.0]; from
      ``cbfinn/maml_rl: rllab/envs/mujoco/ant_env_rand_goal.py``.
    - ``varibad`` (:data:`VARIBAD_ANT_GOAL_REWARD`): ``g`` uniform on the disc of radius 3
      (``r = 3 sqrt(U)``, ``θ = 2πU``); ``-|xy - g|_1 - 0.1 |a|^2 - contact``, never terminates;
      from ``lmzintgraf/varibad: environments/mujoco/ant_goal.py``.

    ``xy`` is the torso's ``xpos`` after the step (what both codebases' ``get_body_com("torso")``
    reads in gym). Task parameter: ``goal_position`` (2 floats).

    Args:
        preset: the preset's name.
        goal_region: ``"square"`` (``U[-goal_range, goal_range]^2``) or ``"disc"`` (uniform on
            the disc of radius ``goal_range``).
        goal_range: half-width of the square or radius of the disc (3).
        max_episode_steps: H.
        episodes_per_trial: episodes per trial for trial-based agents.
        num_test_tasks: size of the held-out test list.
        reward: the reward (default :data:`MAML_ANT_GOAL_REWARD`).
        task_in_obs: append ``g`` to the observation.
    """

    name = "ant-goal"
    robot = ANT
    task_param = "goal_position"
    task_shape = (2,)

    def __init__(
        self,
        *,
        preset: str = "maml",
        goal_region: Literal["square", "disc"] = "square",
        goal_range: float = 3.0,
        max_episode_steps: int = 200,
        episodes_per_trial: int = 1,
        num_test_tasks: int = 40,
        reward: LocomotionReward = MAML_ANT_GOAL_REWARD,
        task_in_obs: bool = False,
    ) -> None:
        HeldOutDistribution.__init__(self, num_test_tasks=num_test_tasks)
        if goal_region not in ("square", "disc"):
            raise EnvError(
                f"unknown goal_region {goal_region!r}; valid goal regions: {choices(['square', 'disc'])}"
            )
        if not check_real("goal_range", goal_range) > 0:
            raise EnvError(f"goal_range must be positive, got {goal_range!r}")
        self.goal_region = goal_region
        self.goal_range = float(goal_range)
        self._setup(
            preset=preset,
            reward=reward,
            max_episode_steps=max_episode_steps,
            episodes_per_trial=episodes_per_trial,
            task_in_obs=task_in_obs,
        )

    def _pool_config(self) -> tuple[str, float]:
        return (self.goal_region, self.goal_range)

    def _draw(self, rng: Any, n: int) -> list[dict[str, Any]]:
        if self.goal_region == "square":
            goals = rng.uniform(-self.goal_range, self.goal_range, size=(n, 2))
        else:
            u = rng.random((n, 2))
            angle = 2.0 * np.pi * u[:, 0]
            radius = self.goal_range * np.sqrt(u[:, 1])
            goals = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
        return [{"goal_position": g} for g in goals]


PRESETS = {
    "halfcheetah-vel": {
        "maml": preset_factory(HalfCheetahVelDistribution, "maml"),
        "varibad": preset_factory(
            HalfCheetahVelDistribution, "varibad", velocity_high=3.0, episodes_per_trial=2
        ),
        "pytorch-maml-rl": preset_factory(
            HalfCheetahVelDistribution, "pytorch-maml-rl", max_episode_steps=100
        ),
    },
    "halfcheetah-dir": {
        "maml": preset_factory(HalfCheetahDirDistribution, "maml"),
        "varibad": preset_factory(HalfCheetahDirDistribution, "varibad", episodes_per_trial=2),
    },
    "ant-vel": {
        "maml": preset_factory(AntVelDistribution, "maml"),
    },
    "ant-dir": {
        "maml": preset_factory(AntDirDistribution, "maml"),
        "varibad": preset_factory(
            AntDirDistribution, "varibad", reward=VARIBAD_ANT_DIR_REWARD, episodes_per_trial=2
        ),
    },
    "ant-goal": {
        "maml": preset_factory(AntGoalDistribution, "maml"),
        "varibad": preset_factory(
            AntGoalDistribution,
            "varibad",
            goal_region="disc",
            reward=VARIBAD_ANT_GOAL_REWARD,
            episodes_per_trial=2,
        ),
    },
}
DEFAULT_PRESET = {family: "maml" for family in PRESETS}
SUMMARY = {
    "halfcheetah-vel": "HalfCheetah-v5 at a goal velocity v* ~ U[0,2] (varibad: U[0,3]), H=200 (MAML 2017)",
    "halfcheetah-dir": "HalfCheetah-v5 running forward or backward, H=200 (MAML 2017)",
    "ant-vel": "Ant-v5 at a goal velocity v* ~ U[0,3], H=200 (MAML 2017)",
    "ant-dir": "Ant-v5 running forward or backward (varibad: at +-1 radian), H=200 (MAML 2017)",
    "ant-goal": "Ant-v5 walking to a goal in [-3,3]^2 (varibad: disc of radius 3), H=200",
}
