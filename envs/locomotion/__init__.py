"""MuJoCo locomotion task distributions of MAML-RL and VariBAD, with a fast batched env.

Families (each with paper presets, see :mod:`.distributions`): ``halfcheetah-vel``,
``halfcheetah-dir``, ``ant-vel``, ``ant-dir``, ``ant-goal``. Dynamics and observations are
gymnasium's v5 ``HalfCheetah``/``Ant`` (:mod:`.robots`); rewards are the papers' formulas
(:mod:`.rewards`). Each task has a plain gymnasium single-task env (:mod:`.single`) and all tasks
run together in :class:`LocomotionBatchedEnv` (:mod:`.batched`), one shared ``MjModel`` and one
``MjData`` per slot stepped in C threads, with the same transitions as the single-task env::

    from metarl.envs import make
    dist = make("halfcheetah-vel", "varibad")
    tasks = dist.sample(16, split="train", rng=np.random.default_rng(0))
    env = dist.make_batched(tasks)            # LocomotionBatchedEnv, 16 slots
    obs, _ = env.reset(seed=0)

The task is hidden from the observation unless the distribution is built with
``task_in_obs=True`` (oracle baselines), which appends the task parameters.
"""

from metarl.envs.locomotion.batched import LocomotionBatchedEnv
from metarl.envs.locomotion.distributions import (
    CHEETAH_DIR_REWARD,
    CHEETAH_VEL_REWARD,
    DEFAULT_PRESET,
    MAML_ANT_DIR_REWARD,
    MAML_ANT_GOAL_REWARD,
    MAML_ANT_VEL_REWARD,
    PRESETS,
    SUMMARY,
    VARIBAD_ANT_DIR_REWARD,
    VARIBAD_ANT_GOAL_REWARD,
    AntDirDistribution,
    AntGoalDistribution,
    AntVelDistribution,
    HalfCheetahDirDistribution,
    HalfCheetahVelDistribution,
    LocomotionDistribution,
)
from metarl.envs.locomotion.rewards import LocomotionReward
from metarl.envs.locomotion.robots import ANT, HALF_CHEETAH, Robot
from metarl.envs.locomotion.single import AntTaskEnv, HalfCheetahTaskEnv, make_task_env

__all__ = [
    "PRESETS",
    "DEFAULT_PRESET",
    "SUMMARY",
    "LocomotionDistribution",
    "HalfCheetahVelDistribution",
    "HalfCheetahDirDistribution",
    "AntVelDistribution",
    "AntDirDistribution",
    "AntGoalDistribution",
    "LocomotionBatchedEnv",
    "HalfCheetahTaskEnv",
    "AntTaskEnv",
    "make_task_env",
    "LocomotionReward",
    "Robot",
    "HALF_CHEETAH",
    "ANT",
    "CHEETAH_VEL_REWARD",
    "CHEETAH_DIR_REWARD",
    "MAML_ANT_VEL_REWARD",
    "MAML_ANT_DIR_REWARD",
    "VARIBAD_ANT_DIR_REWARD",
    "MAML_ANT_GOAL_REWARD",
    "VARIBAD_ANT_GOAL_REWARD",
]
