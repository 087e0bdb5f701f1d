"""2D point navigation to a hidden goal (Finn, Abbeel & Levine, "Model-Agnostic Meta-Learning for
Fast Adaptation of Deep Networks", ICML 2017, §5.3; reference/papers.md §1.2).

A point starts at the origin; each step it moves by a velocity clipped to [-0.1, 0.1]², is paid
the negative Euclidean distance to the goal after the move, and the episode terminates when both
coordinates are within 0.01 of the goal. Goals are drawn from U[-0.5, 0.5]², H = 100.

Presets:

- ``maml`` (default): as in ``cbfinn/maml_rl: maml_examples/point_env_randgoal.py`` run through
  rllab's ``normalize()`` (``maml_trpo_point.py``): the agent acts in [-1, 1]² and the env
  moves by ``clip(0.1 * a, -0.1, 0.1)``. The test list starts with the paper's 40 evaluation
  goals (``np.random.seed(1); uniform(-0.5, 0.5, (40, 2))`` in ``test_maml_point.py``).
- ``pytorch-maml-rl``: as in ``tristandeleu/pytorch-maml-rl: maml_rl/envs/navigation.py``
  (``2DNavigation-v0``), which has no action normalisation: the action *is* the velocity,
  ``Box(-0.1, 0.1)``, clipped to it. Same goals, horizon and reward; 100 test tasks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from metarl.envs.array import (
    ArrayBatchedEnv,
    HeldOutDistribution,
    check_flag,
    check_int,
    check_real,
    check_render_mode,
    check_task,
    preset_factory,
)
from metarl.envs.base import check_actions
from metarl.errors import EnvError
from metarl.types import Task

__all__ = [
    "NavigationDistribution",
    "Navigation2DEnv",
    "BatchedNavigation2D",
    "PRESETS",
    "DEFAULT_PRESET",
    "SUMMARY",
]

FAMILY = "navigation-2d"


class NavigationDistribution(HeldOutDistribution):
    """Goals of 2D point navigation (MAML 2017 §5.3).

    Train/test rule: the test split is a fixed list of ``num_test_tasks`` goals drawn by
    ``numpy.random.RandomState(1).uniform(goal_low, goal_high, (num_test_tasks, 2))``; with the
    defaults its first 40 entries are exactly the 40 goals MAML's ``test_maml_point.py`` evaluates
    on (a private ``RandomState``, never the global one). ``sample(n, split="test", rng)`` picks
    ``n`` distinct goals of that list with ``rng``; ``split="train"`` draws fresh goals from
    U[goal_low, goal_high]² with ``rng`` and redraws any equal to a test goal, so train and test
    never overlap.

    Task parameter: ``goal`` ``(2,)`` float. Success: the termination condition was met.

    Args:
        preset: the preset's name.
        num_test_tasks: size of the held-out test list (``maml``: 40, the paper's evaluation).
        action_bound: the agent's action space is ``Box(-action_bound, action_bound, (2,))``;
            the velocity is ``clip(a * max_speed / action_bound, -max_speed, max_speed)``.
        max_speed: the velocity bound per coordinate (0.1).
        goal_low, goal_high: goals are uniform on ``[goal_low, goal_high]²``.
        goal_tolerance: the episode terminates when ``|dx|`` and ``|dy|`` are below it.
        max_episode_steps: the horizon H (100).
        episodes_per_trial: episodes per trial for trial-based agents (1).
        task_in_obs: append the goal to the observation (an oracle's input).
    """

    name = FAMILY
    has_success = True

    def __init__(
        self,
        *,
        preset: str = "maml",
        num_test_tasks: int = 40,
        action_bound: float = 1.0,
        max_speed: float = 0.1,
        goal_low: float = -0.5,
        goal_high: float = 0.5,
        goal_tolerance: float = 0.01,
        max_episode_steps: int = 100,
        episodes_per_trial: int = 1,
        task_in_obs: bool = False,
    ) -> None:
        super().__init__(num_test_tasks=num_test_tasks)
        action_bound, max_speed = check_real("action_bound", action_bound), check_real("max_speed", max_speed)
        goal_low, goal_high = check_real("goal_low", goal_low), check_real("goal_high", goal_high)
        goal_tolerance = check_real("goal_tolerance", goal_tolerance)
        if not (action_bound > 0 and max_speed > 0 and goal_low < goal_high and goal_tolerance > 0):
            raise EnvError(
                f"navigation needs action_bound > 0, max_speed > 0, goal_low < goal_high and goal_tolerance > 0, "
                f"got {action_bound}, {max_speed}, [{goal_low}, {goal_high}], {goal_tolerance}"
            )
        self.preset = preset
        self.action_scale = max_speed / action_bound
        self.max_speed = max_speed
        self.goal_low, self.goal_high = goal_low, goal_high
        self.goal_tolerance = goal_tolerance
        self.max_episode_steps = check_int("max_episode_steps", max_episode_steps)
        self.episodes_per_trial = check_int("episodes_per_trial", episodes_per_trial)
        self.task_in_obs = check_flag("task_in_obs", task_in_obs)
        obs_dim = 4 if self.task_in_obs else 2
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), dtype=np.float32)
        self.action_space = gym.spaces.Box(
            -float(action_bound), float(action_bound), (2,), dtype=np.float32
        )

    def _draw(self, rng: Any, n: int) -> list[dict[str, Any]]:
        goals = rng.uniform(self.goal_low, self.goal_high, size=(n, 2))
        return [{"goal": g} for g in goals]

    def _test_generator(self) -> np.random.RandomState:
        # A legacy RandomState seeded 1 reproduces MAML's np.random.seed(1) test goals exactly.
        return np.random.RandomState(1)

    def _pool_config(self) -> tuple[Any, ...]:
        return (self.goal_low, self.goal_high)

    def make_env(self, task: Task, **kwargs: Any) -> gym.Env:
        """A :class:`Navigation2DEnv` for ``task`` inside gymnasium's ``TimeLimit``."""
        check_task(task, self.name, {"goal": (2,)})
        env = Navigation2DEnv(self, task, **kwargs)
        return gym.wrappers.TimeLimit(env, max_episode_steps=self.max_episode_steps)

    def make_batched(self, tasks: Sequence[Task], **kwargs: Any) -> BatchedNavigation2D:
        """A :class:`BatchedNavigation2D` with one slot per task."""
        if kwargs:
            raise EnvError(f"unknown option {sorted(kwargs)[0]!r} for make_batched; it takes none")
        return BatchedNavigation2D(self, tasks)


class Navigation2DEnv(gym.Env):
    """The single-task point env, one step at a time (the reference the batched env must match).

    Observation: position ``(x, y)`` float32 (and the goal when ``task_in_obs``). Reward:
    ``-||p - g||_2`` after the move. ``info["success"]``: the goal was reached this step.
    """

    metadata = {"render_modes": []}

    def __init__(
        self, dist: NavigationDistribution, task: Task, *, render_mode: str | None = None
    ) -> None:
        check_render_mode(render_mode)
        self.render_mode = render_mode
        self.dist = dist
        self.task = task
        self.goal = np.asarray(task["goal"], dtype=np.float64)
        self.observation_space = dist.observation_space
        self.action_space = dist.action_space
        self._position: np.ndarray | None = None

    def _obs(self) -> np.ndarray:
        assert self._position is not None
        parts = [self._position, self.goal] if self.dist.task_in_obs else [self._position]
        return np.concatenate(parts).astype(np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._position = np.zeros(2, dtype=np.float64)
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._position is None:
            raise EnvError("call reset() before step()")
        action = check_actions(np.asarray(action)[None], self.action_space, 1)[0]
        d = self.dist
        velocity = np.clip(action.astype(np.float64) * d.action_scale, -d.max_speed, d.max_speed)
        self._position = self._position + velocity
        dx = self._position[0] - self.goal[0]
        dy = self._position[1] - self.goal[1]
        reward = -math.sqrt(dx * dx + dy * dy)
        reached = bool(abs(dx) < d.goal_tolerance and abs(dy) < d.goal_tolerance)
        return self._obs(), reward, reached, False, {"success": reached}


class BatchedNavigation2D(ArrayBatchedEnv):
    """All slots' points moved in one array step; same transitions as :class:`Navigation2DEnv`.

    State: ``position[B, 2]`` float64, ``goal[B, 2]``. A slot that terminated keeps moving if
    stepped again (see :class:`ArrayBatchedEnv`).
    """

    has_success = True

    def __init__(self, dist: NavigationDistribution, tasks: Sequence[Task]) -> None:
        self.dist = dist
        self.position = np.zeros((len(tasks), 2), dtype=np.float64)
        super().__init__(
            tasks,
            observation_space=dist.observation_space,
            action_space=dist.action_space,
            max_episode_steps=dist.max_episode_steps,
        )

    def _bind(self, tasks: list[Task]) -> None:
        for task in tasks:
            check_task(task, self.dist.name, {"goal": (2,)})
        self.goal = np.array([task["goal"] for task in tasks], dtype=np.float64)

    def _reset_slots(self, mask: np.ndarray) -> None:
        self.position[mask] = 0.0

    def _transition(
        self, actions: np.ndarray, uniforms: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        d = self.dist
        velocity = np.clip(actions.astype(np.float64) * d.action_scale, -d.max_speed, d.max_speed)
        self.position = self.position + velocity
        delta = self.position - self.goal
        dx, dy = delta[:, 0], delta[:, 1]
        reward = -np.sqrt(dx * dx + dy * dy)
        reached = (np.abs(dx) < d.goal_tolerance) & (np.abs(dy) < d.goal_tolerance)
        return reward, reached, reached.copy()

    def _observe(self) -> np.ndarray:
        parts = [self.position, self.goal] if self.dist.task_in_obs else [self.position]
        return np.concatenate(parts, axis=1).astype(np.float32)


PRESETS = {
    "maml": preset_factory(NavigationDistribution, "maml", num_test_tasks=40, action_bound=1.0),
    "pytorch-maml-rl": preset_factory(
        NavigationDistribution, "pytorch-maml-rl", num_test_tasks=100, action_bound=0.1
    ),
}
DEFAULT_PRESET = "maml"
SUMMARY = "2D point navigation to a hidden goal in [-0.5, 0.5]^2, H=100 (MAML 2017)"
