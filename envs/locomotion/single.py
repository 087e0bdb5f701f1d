"""Single-task locomotion envs: gymnasium's v5 HalfCheetah and Ant with a task's reward.

These are the reference implementation the batched env (:mod:`.batched`) must reproduce step for
step. They subclass ``gymnasium.envs.mujoco``'s ``HalfCheetahEnv``/``AntEnv`` (v5), keeping their
model (with :meth:`Robot.configure`'s solver option), ``frame_skip``, reset noise,
``do_simulation`` (``ctrl = action``, ``mj_step`` x5, ``mj_rnePostConstraint``) and observation, and replace ``step`` so that the reward and
termination are the preset's (:class:`~metarl.envs.locomotion.rewards.LocomotionReward`). The
task parameters are appended to the observation only when ``task_in_obs`` is set (oracles).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

from metarl.envs.base import check_actions
from metarl.envs.locomotion.rewards import LocomotionReward
from metarl.envs.locomotion.robots import ANT, HALF_CHEETAH, Robot

__all__ = ["HalfCheetahTaskEnv", "AntTaskEnv", "make_task_env"]


class _TaskStepMixin:
    """``step`` and ``_get_obs`` shared by both robots; the v5 parent provides the rest."""

    robot: Robot
    data: Any
    frame_skip: int
    render_mode: str | None

    def _bind_task(
        self, reward: LocomotionReward, task_vector: np.ndarray, task_in_obs: bool
    ) -> None:
        self._task_reward = reward
        self._task_vector = np.asarray(task_vector, dtype=np.float64).reshape(1, -1)
        self._task_in_obs = bool(task_in_obs)

    def _task_observation_space(self) -> gym.spaces.Box:
        dim = self.robot.obs_dim() + (self._task_vector.shape[1] if self._task_in_obs else 0)
        return gym.spaces.Box(low=-np.inf, high=np.inf, shape=(dim,), dtype=np.float64)

    def _tracked_xy(self) -> np.ndarray:
        """The planar position the reward tracks (a copy)."""
        if self.robot.position_source == "root_x":
            return np.array([self.data.qpos[0], 0.0])
        return self.data.body(self.robot.main_body).xpos[:2].copy()

    def _get_obs(self) -> np.ndarray:
        task = self._task_vector if self._task_in_obs else None
        return self.robot.observe(
            self.data.qpos[None], self.data.qvel[None], self.data.cfrc_ext[None], task
        )[0]

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        # The batched env checks actions and reads them as the action space's float32; so does
        # this env, so both refuse the same actions and apply and charge for the same numbers.
        action = check_actions(np.asarray(action)[None], self.action_space, 1)[0]  # type: ignore[attr-defined]
        xy_before = self._tracked_xy()
        self.do_simulation(action, self.frame_skip)  # type: ignore[attr-defined]
        xy_after = self._tracked_xy()
        observation = self._get_obs()
        reward, terminated, parts = self._task_reward.evaluate(
            self._task_vector,
            xy_before=xy_before[None],
            xy_after=xy_after[None],
            dt=self.dt,  # type: ignore[attr-defined]
            action=action.reshape(1, -1),
            qpos=self.data.qpos[None],
            qvel=self.data.qvel[None],
            cfrc_ext=self.data.cfrc_ext[None],
        )
        info = {key: float(value[0]) for key, value in parts.items()}
        info["x_position"] = float(xy_after[0])
        info["y_position"] = float(xy_after[1])
        if self.render_mode == "human":
            self.render()  # type: ignore[attr-defined]
        # Truncation comes from the TimeLimit wrapper that make_env adds.
        return observation, float(reward[0]), bool(terminated[0]), False, info


class HalfCheetahTaskEnv(_TaskStepMixin, HalfCheetahEnv):
    """HalfCheetah-v5 with a task's reward (observation: ``qpos[1:]``, ``qvel`` (17) [+ task]).

    Args:
        reward: the preset's reward.
        task_vector: ``[k]`` the task's parameters (appended to the observation when
            ``task_in_obs``; read by the reward).
        task_in_obs: append the task parameters to the observation.
        render_mode: gymnasium's render mode.
    """

    robot = HALF_CHEETAH

    def __init__(
        self,
        reward: LocomotionReward,
        task_vector: np.ndarray,
        *,
        task_in_obs: bool = False,
        render_mode: str | None = None,
    ) -> None:
        self._bind_task(reward, task_vector, task_in_obs)
        super().__init__(
            xml_file=self.robot.xml_file,
            frame_skip=self.robot.frame_skip,
            reset_noise_scale=self.robot.reset_noise_scale,
            render_mode=render_mode,
        )
        self.robot.configure(self.model)
        # Pickling rebuilds from these arguments, not from the parent's.
        utils.EzPickle.__init__(
            self, reward, task_vector, task_in_obs=task_in_obs, render_mode=render_mode
        )
        self.observation_space = self._task_observation_space()


class AntTaskEnv(_TaskStepMixin, AntEnv):
    """Ant-v5 with a task's reward (observation: ``qpos[2:]``, ``qvel``, clipped ``cfrc_ext[1:]``
    (105) [+ task]).

    Args:
        reward: the preset's reward (its termination replaces v5's healthy check).
        task_vector: ``[k]`` the task's parameters.
        task_in_obs: append the task parameters to the observation.
        render_mode: gymnasium's render mode.
    """

    robot = ANT

    def __init__(
        self,
        reward: LocomotionReward,
        task_vector: np.ndarray,
        *,
        task_in_obs: bool = False,
        render_mode: str | None = None,
    ) -> None:
        self._bind_task(reward, task_vector, task_in_obs)
        super().__init__(
            xml_file=self.robot.xml_file,
            frame_skip=self.robot.frame_skip,
            reset_noise_scale=self.robot.reset_noise_scale,
            main_body=self.robot.main_body,
            contact_force_range=self.robot.contact_force_range,
            include_cfrc_ext_in_observation=self.robot.contact_forces_in_obs,
            render_mode=render_mode,
        )
        self.robot.configure(self.model)
        utils.EzPickle.__init__(
            self, reward, task_vector, task_in_obs=task_in_obs, render_mode=render_mode
        )
        self.observation_space = self._task_observation_space()


_ENV_CLASSES: dict[str, type[HalfCheetahTaskEnv] | type[AntTaskEnv]] = {
    HALF_CHEETAH.name: HalfCheetahTaskEnv,
    ANT.name: AntTaskEnv,
}


def make_task_env(
    robot: Robot,
    reward: LocomotionReward,
    task_vector: np.ndarray,
    *,
    task_in_obs: bool = False,
    render_mode: str | None = None,
) -> HalfCheetahTaskEnv | AntTaskEnv:
    """The single-task env class of ``robot`` (without a time limit)."""
    cls = _ENV_CLASSES[robot.name]
    return cls(reward, task_vector, task_in_obs=task_in_obs, render_mode=render_mode)
