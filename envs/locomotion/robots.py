"""The two MuJoCo robots of the locomotion families, as gymnasium's v5 environments define them.

Dynamics and observations follow ``gymnasium.envs.mujoco`` v5 (``half_cheetah_v5.py``,
``ant_v5.py``): the same XML assets, ``frame_skip = 5`` (``dt = 0.05``), reset noise
``U[-0.1, 0.1]`` on ``qpos`` and ``0.1 * N(0, 1)`` on ``qvel``, and the default observations:

- HalfCheetah-v5: ``qpos[1:]`` (8) then ``qvel`` (9): 17 numbers. The tracked position is the
  root slider ``qpos[0]``, as v5 measures forward velocity.
- Ant-v5: ``qpos[2:]`` (13), ``qvel`` (14), then ``clip(cfrc_ext[1:], -1, 1)`` (13 bodies x 6):
  105 numbers. v5's default keeps the contact forces in the observation
  (``include_cfrc_ext_in_observation=True``); they are also what the contact cost of every ant
  reward is made of, so the observation shows the agent the quantity it pays for. The tracked
  position is the torso's ``xpos[:2]`` (``main_body=1``), as v5 measures velocity.

One departure from v5: HalfCheetah runs with the constraint solver's warm start disabled
(``mjDSBL_WARMSTART``, :attr:`Robot.warm_start`). Then a slot's whole state is ``time``, ``qpos`` and
``qvel``, which is what ``mujoco.rollout`` takes and returns, and the batched env can step all
cheetah slots in one call to rollout's C thread pool (:mod:`.batched`). The model, contacts and
solver tolerance are v5's; only the solver's starting point differs, so trajectories agree with
HalfCheetah-v5 to ~1e-10 for the first 50 steps and then part ways as any two solver settings do
in a chaotic system (measured: 7.5e-11 at step 50, 4e-5 at step 100). The ant keeps v5's warm
start: its observation and contact cost need ``cfrc_ext``, which rollout does not return, so it is
stepped by threads and matches Ant-v5 bit for bit.

MAML's rllab envs (``cbfinn/maml_rl: rllab/envs/mujoco/*.py``) used older models and observations
(the torso's subtree centre of mass appended, its ``comvel`` as velocity); here the simulator and
observation are gymnasium v5's and only the reward formulas come from the papers' code.
"""

from __future__ import annotations

import dataclasses
import functools

import mujoco
import numpy as np
from gymnasium.envs.mujoco.mujoco_env import expand_model_path

__all__ = ["Robot", "HALF_CHEETAH", "ANT"]


@dataclasses.dataclass(frozen=True)
class Robot:
    """A locomotion body: its model file, simulation settings and observation layout."""

    #: Short name, ``"halfcheetah"`` or ``"ant"``.
    name: str
    #: The gymnasium asset the model is compiled from.
    xml_file: str
    #: Physics steps per env step (gymnasium v5: 5).
    frame_skip: int = 5
    #: Half-width of the uniform ``qpos`` noise and std of the ``qvel`` noise at reset.
    reset_noise_scale: float = 0.1
    #: Leading ``qpos`` entries left out of the observation (the global x, or x and y).
    skipped_qpos: int = 1
    #: Whether ``clip(cfrc_ext[1:])`` is part of the observation (Ant-v5's default).
    contact_forces_in_obs: bool = False
    #: Where the tracked planar position comes from: the root slider ``qpos[0]`` (y is 0) or the
    #: ``xpos[:2]`` of ``main_body``.
    position_source: str = "root_x"
    #: The body whose ``xpos`` is tracked when ``position_source == "body_xpos"``.
    main_body: int = 1
    #: Clip range of the external contact forces (observation and contact cost).
    contact_force_range: tuple[float, float] = (-1.0, 1.0)
    #: Whether the constraint solver starts from the previous step's accelerations (MuJoCo's
    #: default). ``False`` sets ``mjDSBL_WARMSTART``, so that a step depends on ``time``,
    #: ``qpos``, ``qvel`` and ``ctrl`` alone.
    warm_start: bool = True

    def compile(self) -> mujoco.MjModel:
        """A freshly compiled model, owned by the caller."""
        return self.configure(mujoco.MjModel.from_xml_path(expand_model_path(self.xml_file)))

    def configure(self, model: mujoco.MjModel) -> mujoco.MjModel:
        """Apply this robot's simulation options to ``model`` (in place) and return it."""
        if not self.warm_start:
            model.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_WARMSTART)
        return model

    def sizes(self) -> mujoco.MjModel:
        """A compiled model shared per process, only for reading sizes and ranges."""
        return _reference_model(self.xml_file)

    def obs_dim(self) -> int:
        """Length of the observation before any task parameters."""
        m = self.sizes()
        n = m.nq - self.skipped_qpos + m.nv
        return n + (m.nbody - 1) * 6 if self.contact_forces_in_obs else n

    def observe(
        self,
        qpos: np.ndarray,
        qvel: np.ndarray,
        cfrc_ext: np.ndarray | None,
        task: np.ndarray | None,
    ) -> np.ndarray:
        """The v5 observation of ``B`` states, with the task parameters appended when given.

        Args:
            qpos: ``[B, nq]``.
            qvel: ``[B, nv]``.
            cfrc_ext: ``[B, nbody, 6]`` external forces (only read when they are observed).
            task: ``[B, k]`` task parameters or ``None``.

        Returns:
            ``[B, obs_dim (+ k)]`` float64, a new array.
        """
        parts = [qpos[:, self.skipped_qpos :], qvel]
        if self.contact_forces_in_obs:
            assert cfrc_ext is not None
            low, high = self.contact_force_range
            parts.append(np.clip(cfrc_ext[:, 1:], low, high).reshape(len(qpos), -1))
        if task is not None:
            parts.append(task)
        return np.concatenate(parts, axis=1)


@functools.cache
def _reference_model(xml_file: str) -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_path(expand_model_path(xml_file))


HALF_CHEETAH = Robot(
    name="halfcheetah", xml_file="half_cheetah.xml", skipped_qpos=1, warm_start=False
)
ANT = Robot(
    name="ant",
    xml_file="ant.xml",
    skipped_qpos=2,
    contact_forces_in_obs=True,
    position_source="body_xpos",
    main_body=1,
)
