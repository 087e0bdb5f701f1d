"""Bernoulli multi-armed bandits (Duan et al., "RL²: Fast Reinforcement Learning via Slow
Reinforcement Learning", arXiv 1611.02779, §3.1; reference/papers.md §3.1).

Each task has ``k`` arms with success probabilities ``p_i ~ U[0, 1]``. Pulling arm ``a`` pays 1
with probability ``p_a`` and 0 otherwise. One pull is one episode of a single step (it
terminates); a trial is ``n`` pulls, so ``episodes_per_trial = n`` and the agent learns the arms
from the rewards it is fed. Presets ``k{5,10,50}-n{10,100,500}`` are the nine settings of the
paper's Table 1 (also ``tristandeleu/pytorch-maml-rl: configs/maml/bandit/*.yaml``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from metarl.envs.array import (
    ArrayBatchedEnv,
    CounterStreams,
    HeldOutDistribution,
    check_flag,
    check_int,
    check_render_mode,
    check_task,
    preset_factory,
    seed_key,
)
from metarl.envs.base import check_actions
from metarl.errors import EnvError
from metarl.seeding import numpy_rng
from metarl.types import Task

__all__ = [
    "BanditDistribution",
    "BernoulliBanditEnv",
    "BatchedBernoulliBandit",
    "PRESETS",
    "DEFAULT_PRESET",
    "SUMMARY",
]

FAMILY = "bandit"


class BanditDistribution(HeldOutDistribution):
    """Bernoulli bandits with ``num_arms`` arms, ``p_i ~ U[0, 1]`` (RL² §3.1).

    Train/test rule: the test split is a fixed list of ``num_test_tasks`` arm vectors drawn from
    the seed stream ``metarl.seeding.numpy_rng(0, "bandit", "test", num_arms)`` (1000 by default,
    the number of instances RL²'s Table 1 averages over). ``sample(n, split="test", rng)`` picks
    ``n`` distinct entries of that list with ``rng``; ``split="train"`` draws fresh arm vectors
    with ``rng`` and redraws any equal to a test task, so train and test never overlap.

    Task parameter: ``arm_probs`` ``(num_arms,)`` float. Observation: a constant ``[0.]``
    (float32); with ``task_in_obs`` the arm probabilities follow it. Actions: ``Discrete(k)``.

    Args:
        preset: the preset's name.
        num_arms: k.
        episodes_per_trial: n, pulls per trial.
        num_test_tasks: size of the held-out test list.
        task_in_obs: append the arm probabilities to the observation (an oracle's input).
    """

    name = FAMILY
    max_episode_steps = 1

    def __init__(
        self,
        *,
        preset: str = "k5-n10",
        num_arms: int = 5,
        episodes_per_trial: int = 10,
        num_test_tasks: int = 1000,
        task_in_obs: bool = False,
    ) -> None:
        super().__init__(num_test_tasks=num_test_tasks)
        self.preset = preset
        self.num_arms = check_int("num_arms", num_arms, minimum=2)
        self.episodes_per_trial = check_int("episodes_per_trial", episodes_per_trial)
        self.task_in_obs = check_flag("task_in_obs", task_in_obs)
        low = np.zeros(1 + self.num_arms if self.task_in_obs else 1, dtype=np.float32)
        high = low.copy()
        high[1:] = 1.0
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.action_space = gym.spaces.Discrete(self.num_arms)

    def _draw(self, rng: Any, n: int) -> list[dict[str, Any]]:
        return [{"arm_probs": p} for p in rng.uniform(0.0, 1.0, size=(n, self.num_arms))]

    def _test_generator(self) -> np.random.Generator:
        return numpy_rng(0, self.name, "test", self.num_arms)

    def _pool_config(self) -> tuple[Any, ...]:
        return (self.num_arms,)

    def make_env(self, task: Task, **kwargs: Any) -> gym.Env:
        """A :class:`BernoulliBanditEnv` for ``task`` inside gymnasium's ``TimeLimit`` (H = 1)."""
        check_task(task, self.name, {"arm_probs": (self.num_arms,)})
        env = BernoulliBanditEnv(self, task, **kwargs)
        return gym.wrappers.TimeLimit(env, max_episode_steps=self.max_episode_steps)

    def make_batched(self, tasks: Sequence[Task], **kwargs: Any) -> BatchedBernoulliBandit:
        """A :class:`BatchedBernoulliBandit` with one slot per task."""
        if kwargs:
            raise EnvError(f"unknown option {sorted(kwargs)[0]!r} for make_batched; it takes none")
        return BatchedBernoulliBandit(self, tasks)


class BernoulliBanditEnv(gym.Env):
    """One bandit, one pull per episode (the reference the batched env must match).

    Rewards come from the env's :class:`~metarl.envs.array.CounterStreams` stream, seeded by
    ``reset(seed=...)`` and continued by ``reset()``: the reward of a pull is
    ``1.0 if u < p_a else 0.0`` for the stream's next uniform ``u``.
    """

    metadata = {"render_modes": []}

    def __init__(
        self, dist: BanditDistribution, task: Task, *, render_mode: str | None = None
    ) -> None:
        check_render_mode(render_mode)
        self.render_mode = render_mode
        self.dist = dist
        self.task = task
        self.arm_probs = np.asarray(task["arm_probs"], dtype=np.float64)
        self.observation_space = dist.observation_space
        self.action_space = dist.action_space
        self._stream = CounterStreams(1, width=1)
        self._ready = False

    def _obs(self) -> np.ndarray:
        if self.dist.task_in_obs:
            return np.concatenate([[0.0], self.arm_probs]).astype(np.float32)
        return np.zeros(1, dtype=np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        slot = np.ones(1, dtype=bool)
        if seed is not None:
            self._stream.seed(slot, seed_key([seed]))
        self._stream.ensure_keyed(slot, self.np_random)
        self._ready = True
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self._ready:
            raise EnvError("call reset() before step()")
        arm = int(check_actions(np.asarray(action)[None], self.action_space, 1)[0])
        u = self._stream.uniform()[0, 0]
        reward = 1.0 if u < self.arm_probs[arm] else 0.0
        # A pull ends the episode: the next pull is the next episode of the trial.
        return self._obs(), reward, True, False, {}


class BatchedBernoulliBandit(ArrayBatchedEnv):
    """All slots pulled in one array step; same rewards as :class:`BernoulliBanditEnv` for the
    same tasks and seeds. State: ``arm_probs[B, k]`` and one reward stream per slot."""

    def __init__(self, dist: BanditDistribution, tasks: Sequence[Task]) -> None:
        self.dist = dist
        super().__init__(
            tasks,
            observation_space=dist.observation_space,
            action_space=dist.action_space,
            max_episode_steps=dist.max_episode_steps,
            random_width=1,
        )

    def _bind(self, tasks: list[Task]) -> None:
        for task in tasks:
            check_task(task, self.dist.name, {"arm_probs": (self.dist.num_arms,)})
        self.arm_probs = np.array([task["arm_probs"] for task in tasks], dtype=np.float64)

    def _reset_slots(self, mask: np.ndarray) -> None:
        """A bandit has no state to reset."""

    def _transition(
        self, actions: np.ndarray, uniforms: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, None]:
        assert uniforms is not None
        p = self.arm_probs[np.arange(self.num_slots), actions]
        reward = (uniforms[:, 0] < p).astype(np.float64)
        return reward, np.ones(self.num_slots, dtype=bool), None

    def _observe(self) -> np.ndarray:
        zeros = np.zeros((self.num_slots, 1), dtype=np.float32)
        if self.dist.task_in_obs:
            return np.concatenate([zeros, self.arm_probs.astype(np.float32)], axis=1)
        return zeros


PRESETS = {
    f"k{k}-n{n}": preset_factory(BanditDistribution, f"k{k}-n{n}", num_arms=k, episodes_per_trial=n)
    for k in (5, 10, 50)
    for n in (10, 100, 500)
}
DEFAULT_PRESET = "k5-n10"
SUMMARY = "Bernoulli bandits, p_i ~ U[0,1], k arms, n one-pull episodes per trial (RL2 2016)"
