"""Reward and termination of the locomotion tasks, one vectorised formula for every family.

Every reward has the form

    r = task term + bonus - ctrl_cost_weight * ||a||^2
          - contact_cost_weight * sum(clip(cfrc_ext, -1, 1)^2)

where ``a`` is the action as passed to ``step`` (read as float32, the action space's dtype; not
clipped, as gymnasium v5 computes its control cost; MuJoCo clamps the applied control to the
actuators' ``ctrlrange`` itself), ``cfrc_ext`` are all bodies' external contact forces after the
step, and the task term is one of:

- ``velocity``: ``-|v_x - v*|`` (goal velocity ``v*``);
- ``direction``: ``d * v_x`` (``d = ±1``, forward/backward along x);
- ``direction_angle``: ``v_x cos g + v_y sin g`` (VariBAD's AntDir: ``g = ±1`` used as an angle in
  radians);
- ``goal``: ``-|x - g_x| - |y - g_y|`` (the L1 distance of the tracked position to a goal).

``v = (p_after - p_before) / dt`` is the finite-difference velocity of the tracked position
(:class:`metarl.envs.locomotion.robots.Robot`), as gymnasium v5 computes it. The formulas and
weights of each preset are cited where the presets are defined
(:mod:`metarl.envs.locomotion.distributions`).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from metarl.errors import EnvError, choices

__all__ = ["LocomotionReward", "OBJECTIVES"]

OBJECTIVES = ("velocity", "direction", "direction_angle", "goal")


@dataclasses.dataclass(frozen=True)
class LocomotionReward:
    """The reward and termination rule of one preset (formula in the module docstring)."""

    #: Which task term: ``"velocity"``, ``"direction"``, ``"direction_angle"`` or ``"goal"``.
    objective: Literal["velocity", "direction", "direction_angle", "goal"]
    #: Weight of the squared action norm.
    ctrl_cost_weight: float
    #: Weight of the summed squared clipped contact forces (0 for the cheetah).
    contact_cost_weight: float = 0.0
    #: Constant added every step (survive bonus and "happy, not suicidal" offsets).
    bonus: float = 0.0
    #: Terminate when the state is non-finite or the torso height leaves ``healthy_z_range``.
    terminate_when_unhealthy: bool = False
    #: Healthy range of ``qpos[2]`` (the ant torso's height).
    healthy_z_range: tuple[float, float] = (0.2, 1.0)
    #: Clip range of the contact forces in the contact cost.
    contact_force_range: tuple[float, float] = (-1.0, 1.0)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise EnvError(
                f"unknown objective {self.objective!r}; valid objectives: {choices(OBJECTIVES)}"
            )

    def evaluate(
        self,
        task: np.ndarray,
        *,
        xy_before: np.ndarray,
        xy_after: np.ndarray,
        dt: float,
        action: np.ndarray,
        qpos: np.ndarray,
        qvel: np.ndarray,
        cfrc_ext: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Rewards and terminations of ``B`` transitions.

        Args:
            task: ``[B, k]`` task parameters (``v*``, ``d``, ``g`` or ``(g_x, g_y)``).
            xy_before, xy_after: ``[B, 2]`` tracked position before and after the step.
            dt: seconds per env step.
            action: ``[B, nu]`` the actions as passed (float32).
            qpos, qvel: ``[B, nq]``, ``[B, nv]`` the state after the step.
            cfrc_ext: ``[B, nbody, 6]`` contact forces after the step (read only when
                ``contact_cost_weight`` is non-zero).

        Returns:
            ``reward[B]`` float64, ``terminated[B]`` bool, and the reward's parts as ``[B]``
            arrays (``reward_task``, ``reward_ctrl``, ``reward_contact``, ``reward_bonus``,
            ``x_velocity``, ``y_velocity``).
        """
        velocity = (xy_after - xy_before) / dt
        vx, vy = velocity[:, 0], velocity[:, 1]
        if self.objective == "velocity":
            task_term = -np.abs(vx - task[:, 0])
        elif self.objective == "direction":
            task_term = task[:, 0] * vx
        elif self.objective == "direction_angle":
            task_term = vx * np.cos(task[:, 0]) + vy * np.sin(task[:, 0])
        else:
            task_term = -(np.abs(xy_after[:, 0] - task[:, 0]) + np.abs(xy_after[:, 1] - task[:, 1]))
        ctrl_cost = self.ctrl_cost_weight * np.add.reduce(
            np.square(action.astype(np.float64)), axis=1
        )
        # A zero bonus or contact cost is left out of the sum rather than added (x + 0 == x).
        reward = (task_term + self.bonus - ctrl_cost) if self.bonus else (task_term - ctrl_cost)
        if self.contact_cost_weight:
            assert cfrc_ext is not None
            low, high = self.contact_force_range
            contact = np.clip(cfrc_ext, low, high)
            contact_cost = self.contact_cost_weight * np.square(contact).reshape(
                len(contact), -1
            ).sum(axis=1)
            reward -= contact_cost
        else:
            contact_cost = np.zeros(len(ctrl_cost))
        if self.terminate_when_unhealthy:
            low_z, high_z = self.healthy_z_range
            z = qpos[:, 2]
            healthy = (
                np.isfinite(qpos).all(axis=1)
                & np.isfinite(qvel).all(axis=1)
                & (z >= low_z)
                & (z <= high_z)
            )
            terminated = ~healthy
        else:
            terminated = np.zeros(len(reward), dtype=bool)
        parts = {
            "reward_task": task_term,
            "reward_ctrl": -ctrl_cost,
            "reward_contact": -contact_cost,
            "reward_bonus": (
                np.full(len(reward), float(self.bonus)) if self.bonus else np.zeros(len(reward))
            ),
            "x_velocity": vx,
            "y_velocity": vy,
        }
        return reward, terminated, parts
