"""Random tabular MDPs (Duan et al., "RL²: Fast Reinforcement Learning via Slow Reinforcement
Learning", arXiv 1611.02779, §3.2; reference/papers.md §3.1).

Each task is an MDP with |S| = 10 states and |A| = 5 actions: mean rewards
``mu(s, a) ~ N(1, 1)``, rewards ``r ~ N(mu(s, a), 1)``, transition rows ``P(. | s, a)`` drawn
from a flat Dirichlet. Every episode lasts T = 10 steps and starts in state 0; a trial is ``n``
episodes. Presets ``n10``, ``n25``, ``n50``, ``n75``, ``n100`` are the columns of the paper's
Table 2 (also ``tristandeleu/pytorch-maml-rl: maml_rl/envs/mdp.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from scipy.special import ndtri

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
    "TabularMDPDistribution",
    "TabularMDPEnv",
    "BatchedTabularMDP",
    "PRESETS",
    "DEFAULT_PRESET",
    "SUMMARY",
]

FAMILY = "tabular-mdp"


class TabularMDPDistribution(HeldOutDistribution):
    """Random MDPs of RL² §3.2.

    Train/test rule: the test split is a fixed list of ``num_test_tasks`` MDPs drawn from the seed
    stream ``metarl.seeding.numpy_rng(0, "tabular-mdp", "test", num_states, num_actions)``
    (1000 by default). ``sample(n, split="test", rng)`` picks ``n`` distinct MDPs of that list
    with ``rng``; ``split="train"`` draws fresh MDPs with ``rng`` and redraws any equal to a test
    MDP, so train and test never overlap.

    Task parameters: ``reward_means`` ``(S, A)`` and ``transitions`` ``(S, A, S)`` (rows sum to
    1). Observation: the one-hot state ``(S,)`` float32; with ``task_in_obs`` the flattened
    reward means and transitions follow it. Actions: ``Discrete(A)``.

    Args:
        preset: the preset's name.
        episodes_per_trial: n, episodes per trial.
        num_states, num_actions: |S| and |A| (10 and 5).
        max_episode_steps: T (10).
        num_test_tasks: size of the held-out test list.
        task_in_obs: append the MDP's parameters to the observation (an oracle's input).
    """

    name = FAMILY

    def __init__(
        self,
        *,
        preset: str = "n10",
        episodes_per_trial: int = 10,
        num_states: int = 10,
        num_actions: int = 5,
        max_episode_steps: int = 10,
        num_test_tasks: int = 1000,
        task_in_obs: bool = False,
    ) -> None:
        super().__init__(num_test_tasks=num_test_tasks)
        self.preset = preset
        self.num_states = check_int("num_states", num_states, minimum=2)
        self.num_actions = check_int("num_actions", num_actions)
        self.max_episode_steps = check_int("max_episode_steps", max_episode_steps)
        self.episodes_per_trial = check_int("episodes_per_trial", episodes_per_trial)
        self.task_in_obs = check_flag("task_in_obs", task_in_obs)
        s, a = self.num_states, self.num_actions
        low, high = np.zeros(s, dtype=np.float32), np.ones(s, dtype=np.float32)
        if self.task_in_obs:
            low = np.concatenate([low, np.full(s * a, -np.inf), np.zeros(s * a * s)]).astype(
                np.float32
            )
            high = np.concatenate([high, np.full(s * a, np.inf), np.ones(s * a * s)]).astype(
                np.float32
            )
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.action_space = gym.spaces.Discrete(a)

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        s, a = self.num_states, self.num_actions
        return {"reward_means": (s, a), "transitions": (s, a, s)}

    def _draw(self, rng: Any, n: int) -> list[dict[str, Any]]:
        s, a = self.num_states, self.num_actions
        transitions = rng.dirichlet(np.ones(s), size=(n, s, a))
        means = rng.normal(1.0, 1.0, size=(n, s, a))
        return [{"reward_means": m, "transitions": p} for m, p in zip(means, transitions)]

    def _test_generator(self) -> np.random.Generator:
        return numpy_rng(0, self.name, "test", self.num_states, self.num_actions)

    def _pool_config(self) -> tuple[Any, ...]:
        return (self.num_states, self.num_actions)

    def make_env(self, task: Task, **kwargs: Any) -> gym.Env:
        """A :class:`TabularMDPEnv` for ``task`` inside gymnasium's ``TimeLimit`` (H = T)."""
        check_task(task, self.name, self.param_shapes)
        env = TabularMDPEnv(self, task, **kwargs)
        return gym.wrappers.TimeLimit(env, max_episode_steps=self.max_episode_steps)

    def make_batched(self, tasks: Sequence[Task], **kwargs: Any) -> BatchedTabularMDP:
        """A :class:`BatchedTabularMDP` with one slot per task."""
        if kwargs:
            raise EnvError(f"unknown option {sorted(kwargs)[0]!r} for make_batched; it takes none")
        return BatchedTabularMDP(self, tasks)


class TabularMDPEnv(gym.Env):
    """One random MDP, one step at a time (the reference the batched env must match).

    Each step draws two uniforms ``(u1, u2)`` from the env's
    :class:`~metarl.envs.array.CounterStreams` stream (seeded by ``reset(seed=...)``, continued
    by ``reset()``): the reward is ``mu(s, a) + Phi^-1(u1)`` and the next state is the first
    ``s'`` whose cumulative transition probability exceeds ``u2``.
    """

    metadata = {"render_modes": []}

    def __init__(
        self, dist: TabularMDPDistribution, task: Task, *, render_mode: str | None = None
    ) -> None:
        check_render_mode(render_mode)
        self.render_mode = render_mode
        self.dist = dist
        self.task = task
        self.reward_means = np.asarray(task["reward_means"], dtype=np.float64)
        self.transitions = np.asarray(task["transitions"], dtype=np.float64)
        self._cdf = np.cumsum(self.transitions, axis=-1)
        self.observation_space = dist.observation_space
        self.action_space = dist.action_space
        self._stream = CounterStreams(1, width=2)
        self._state: int | None = None

    def _obs(self) -> np.ndarray:
        assert self._state is not None
        one_hot = np.zeros(self.dist.num_states, dtype=np.float32)
        one_hot[self._state] = 1.0
        if self.dist.task_in_obs:
            return np.concatenate(
                [one_hot, self.reward_means.ravel(), self.transitions.ravel()]
            ).astype(np.float32)
        return one_hot

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        slot = np.ones(1, dtype=bool)
        if seed is not None:
            self._stream.seed(slot, seed_key([seed]))
        self._stream.ensure_keyed(slot, self.np_random)
        # RL² §3.2: "an episode always starts on the first state".
        self._state = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._state is None:
            raise EnvError("call reset() before step()")
        a = int(check_actions(np.asarray(action)[None], self.action_space, 1)[0])
        u1, u2 = self._stream.uniform()[0]
        reward = float(self.reward_means[self._state, a] + ndtri(u1))
        row = self._cdf[self._state, a]
        self._state = min(int(np.searchsorted(row, u2, side="right")), self.dist.num_states - 1)
        return self._obs(), reward, False, False, {}


class BatchedTabularMDP(ArrayBatchedEnv):
    """All slots' MDPs stepped in one array step; same transitions as :class:`TabularMDPEnv`.

    State: ``state[B]`` int; task arrays ``reward_means[B, S, A]`` and the cumulative transition
    rows ``cdf[B, S, A, S]``.
    """

    def __init__(self, dist: TabularMDPDistribution, tasks: Sequence[Task]) -> None:
        self.dist = dist
        self.state = np.zeros(len(tasks), dtype=np.int64)
        super().__init__(
            tasks,
            observation_space=dist.observation_space,
            action_space=dist.action_space,
            max_episode_steps=dist.max_episode_steps,
            random_width=2,
        )

    def _bind(self, tasks: list[Task]) -> None:
        shapes = self.dist.param_shapes
        for task in tasks:
            check_task(task, self.dist.name, shapes)
        self.reward_means = np.array([task["reward_means"] for task in tasks], dtype=np.float64)
        self.transitions = np.array([task["transitions"] for task in tasks], dtype=np.float64)
        self.cdf = np.cumsum(self.transitions, axis=-1)

    def _reset_slots(self, mask: np.ndarray) -> None:
        self.state[mask] = 0

    def _transition(
        self, actions: np.ndarray, uniforms: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, None]:
        assert uniforms is not None
        slots = np.arange(self.num_slots)
        reward = self.reward_means[slots, self.state, actions] + ndtri(uniforms[:, 0])
        rows = self.cdf[slots, self.state, actions]  # [B, S]
        # Counting the cumulative probabilities <= u is searchsorted(side="right") per row.
        nxt = (rows <= uniforms[:, 1:2]).sum(axis=1)
        self.state = np.minimum(nxt, self.dist.num_states - 1)
        return reward, np.zeros(self.num_slots, dtype=bool), None

    def _observe(self) -> np.ndarray:
        one_hot = np.zeros((self.num_slots, self.dist.num_states), dtype=np.float32)
        one_hot[np.arange(self.num_slots), self.state] = 1.0
        if self.dist.task_in_obs:
            flat = [
                self.reward_means.reshape(self.num_slots, -1),
                self.transitions.reshape(self.num_slots, -1),
            ]
            return np.concatenate([one_hot, *flat], axis=1).astype(np.float32)
        return one_hot


PRESETS = {
    f"n{n}": preset_factory(TabularMDPDistribution, f"n{n}", episodes_per_trial=n)
    for n in (10, 25, 50, 75, 100)
}
DEFAULT_PRESET = "n10"
SUMMARY = "random tabular MDPs, |S|=10, |A|=5, T=10, n episodes per trial (RL2 2016)"
