"""Grid navigation to a hidden goal cell (Zintgraf et al., "VariBAD: A Very Good Method for
Bayes-Adaptive Deep RL via Meta-Learning", ICLR 2020, §5.1; reference/papers.md §4.1).

Follows ``lmzintgraf/varibad: environments/navigation/gridworld.py`` (``GridNavi-v0``,
``num_cells=5, num_steps=15``): a 5x5 grid, the agent starts at (0, 0), the goal is any cell
except the start and its three neighbours (0, 1), (1, 0), (1, 1), leaving 21 goals. Actions are
0 stay, 1 up (y + 1), 2 right (x + 1), 3 down (y - 1), 4 left (x - 1), clamped at the walls.
After the move the reward is +1 on the goal and -0.1 elsewhere; reaching the goal does not end
the episode (the agent may stay and keep collecting +1). Episodes last 15 steps (a time limit,
so they are truncated, never terminated); a trial is 4 episodes. The observation is the agent's
cell ``(x, y)`` as float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from metarl.envs.array import (
    ArrayBatchedEnv,
    check_flag,
    check_int,
    check_render_mode,
    check_rng,
    check_task,
    preset_factory,
)
from metarl.envs.base import check_actions
from metarl.errors import EnvError
from metarl.types import Task, TaskDistribution, check_num_tasks, check_split

__all__ = [
    "GridworldDistribution",
    "GridNaviEnv",
    "BatchedGridNavi",
    "PRESETS",
    "DEFAULT_PRESET",
    "SUMMARY",
]

FAMILY = "gridworld"

#: (dx, dy) of actions 0..4: stay, up, right, down, left (VariBAD's order).
MOVES = np.array([[0, 0], [0, 1], [1, 0], [0, -1], [-1, 0]], dtype=np.int64)


class GridworldDistribution(TaskDistribution):
    """Hidden-goal grid navigation (VariBAD §5.1, ``GridNavi-v0``).

    Train/test rule: the goal set is finite, so it is partitioned once. A goal cell ``(x, y)``
    is a test goal when ``(x + 2y) mod 5 == 4``: on the 5x5 grid that is (4, 0), (2, 1), (0, 2),
    (3, 3), (1, 4), one cell in every row and every column, so the test goals spread over the
    whole grid (near, middle and far from the start). The other 16 goals are the train goals.
    ``sample(n, split, rng)`` draws ``n`` goals of the split uniformly with replacement, as
    VariBAD draws a goal per task (``random.choice``); :meth:`goals` and :meth:`tasks` list them
    all. Note that VariBAD trains and evaluates on all 21 goals; a Bayes-optimal comparison must
    use the prior of the split it is evaluated on.

    Task parameter: ``goal`` ``(2,)`` int; the task index is VariBAD's goal id
    ``x * num_cells + y``. Success: the agent is on the goal after the step.

    Args:
        preset: the preset's name.
        num_cells: the grid's side (5).
        max_episode_steps: steps per episode (15).
        episodes_per_trial: episodes per trial (4).
        task_in_obs: append the goal to the observation (VariBAD's ``GridNaviOracle``).
    """

    name = FAMILY
    has_success = True

    def __init__(
        self,
        *,
        preset: str = "varibad",
        num_cells: int = 5,
        max_episode_steps: int = 15,
        episodes_per_trial: int = 4,
        task_in_obs: bool = False,
    ) -> None:
        self.preset = preset
        self.num_cells = check_int("num_cells", num_cells, minimum=3)
        self.max_episode_steps = check_int("max_episode_steps", max_episode_steps)
        self.episodes_per_trial = check_int("episodes_per_trial", episodes_per_trial)
        self.task_in_obs = check_flag("task_in_obs", task_in_obs)
        obs_dim = 4 if self.task_in_obs else 2
        self.observation_space = gym.spaces.Box(
            0.0, float(self.num_cells - 1), (obs_dim,), dtype=np.float32
        )
        self.action_space = gym.spaces.Discrete(len(MOVES))
        cells = np.array(
            [(x, y) for x in range(self.num_cells) for y in range(self.num_cells)], dtype=np.int64
        )
        # VariBAD removes the start (0, 0) and its neighbours (0, 1), (1, 0), (1, 1).
        allowed = ~((cells[:, 0] <= 1) & (cells[:, 1] <= 1))
        test = (cells[:, 0] + 2 * cells[:, 1]) % 5 == 4
        self._goals = {"train": cells[allowed & ~test], "test": cells[allowed & test]}

    def goals(self, split: str | None = None) -> np.ndarray:
        """``[G, 2]`` int goal cells of ``split`` (all goals of both splits when ``None``),
        sorted by goal id."""
        if split is None:
            both = np.concatenate([self._goals["train"], self._goals["test"]])
            return both[np.argsort(both[:, 0] * self.num_cells + both[:, 1])]
        check_split(split)
        return self._goals[split].copy()

    def goal_id(self, goal: Sequence[int] | np.ndarray) -> int:
        """VariBAD's id of a goal cell: ``x * num_cells + y``."""
        return int(goal[0]) * self.num_cells + int(goal[1])

    def _task(self, goal: np.ndarray, split: str) -> Task:
        return Task.make(self.name, self.preset, split, self.goal_id(goal), goal=goal)

    def tasks(self, split: str) -> list[Task]:
        """One task per goal of ``split``, sorted by goal id."""
        return [self._task(g, split) for g in self.goals(split)]

    def test_tasks(self) -> list[Task]:
        """Every test task (one per test goal)."""
        return self.tasks("test")

    def sample(self, n: int, *, split: str = "train", rng: np.random.Generator) -> list[Task]:
        """``n`` tasks whose goals are drawn uniformly, with replacement, from ``split``'s goals.

        Raises:
            EnvError: ``n`` not a positive integer, an unknown split or ``rng`` not a Generator.
        """
        n = check_num_tasks(n)
        check_split(split)
        check_rng(rng)
        goals = self._goals[split]
        return [self._task(goals[i], split) for i in rng.integers(len(goals), size=n)]

    def _check(self, task: Task) -> None:
        check_task(task, self.name, {"goal": (2,)})
        goal = task["goal"]
        if not np.all((goal >= 0) & (goal < self.num_cells)):
            raise EnvError(
                f"task {task} has goal {goal.tolist()} outside the {self.num_cells}x{self.num_cells} grid"
            )

    def make_env(self, task: Task, **kwargs: Any) -> gym.Env:
        """A :class:`GridNaviEnv` for ``task`` inside gymnasium's ``TimeLimit`` (H = 15)."""
        self._check(task)
        env = GridNaviEnv(self, task, **kwargs)
        return gym.wrappers.TimeLimit(env, max_episode_steps=self.max_episode_steps)

    def make_batched(self, tasks: Sequence[Task], **kwargs: Any) -> BatchedGridNavi:
        """A :class:`BatchedGridNavi` with one slot per task."""
        if kwargs:
            raise EnvError(f"unknown option {sorted(kwargs)[0]!r} for make_batched; it takes none")
        return BatchedGridNavi(self, tasks)


class GridNaviEnv(gym.Env):
    """One goal, one step at a time (the reference the batched env must match)."""

    metadata = {"render_modes": []}

    def __init__(
        self, dist: GridworldDistribution, task: Task, *, render_mode: str | None = None
    ) -> None:
        check_render_mode(render_mode)
        self.render_mode = render_mode
        self.dist = dist
        self.task = task
        self.goal = (int(task["goal"][0]), int(task["goal"][1]))
        self.observation_space = dist.observation_space
        self.action_space = dist.action_space
        self._cell: tuple[int, int] | None = None

    def _obs(self) -> np.ndarray:
        assert self._cell is not None
        parts = [*self._cell, *self.goal] if self.dist.task_in_obs else list(self._cell)
        return np.array(parts, dtype=np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._cell = (0, 0)
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._cell is None:
            raise EnvError("call reset() before step()")
        a = int(check_actions(np.asarray(action)[None], self.action_space, 1)[0])
        x, y = self._cell
        top = self.dist.num_cells - 1
        if a == 1:
            y = min(y + 1, top)
        elif a == 2:
            x = min(x + 1, top)
        elif a == 3:
            y = max(y - 1, 0)
        elif a == 4:
            x = max(x - 1, 0)
        self._cell = (x, y)
        at_goal = self._cell == self.goal
        reward = 1.0 if at_goal else -0.1
        return self._obs(), reward, False, False, {"success": at_goal}


class BatchedGridNavi(ArrayBatchedEnv):
    """All slots moved in one array step; same transitions as :class:`GridNaviEnv`.

    State: ``cell[B, 2]`` int and ``goal[B, 2]`` int.
    """

    has_success = True

    def __init__(self, dist: GridworldDistribution, tasks: Sequence[Task]) -> None:
        self.dist = dist
        self.cell = np.zeros((len(tasks), 2), dtype=np.int64)
        super().__init__(
            tasks,
            observation_space=dist.observation_space,
            action_space=dist.action_space,
            max_episode_steps=dist.max_episode_steps,
        )

    def _bind(self, tasks: list[Task]) -> None:
        for task in tasks:
            self.dist._check(task)
        self.goal = np.array([task["goal"] for task in tasks], dtype=np.int64)

    def _reset_slots(self, mask: np.ndarray) -> None:
        self.cell[mask] = 0

    def _transition(
        self, actions: np.ndarray, uniforms: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.cell = np.clip(self.cell + MOVES[actions], 0, self.dist.num_cells - 1)
        at_goal = (self.cell == self.goal).all(axis=1)
        reward = np.where(at_goal, 1.0, -0.1)
        return reward, np.zeros(self.num_slots, dtype=bool), at_goal

    def _observe(self) -> np.ndarray:
        parts = [self.cell, self.goal] if self.dist.task_in_obs else [self.cell]
        return np.concatenate(parts, axis=1).astype(np.float32)


PRESETS = {"varibad": preset_factory(GridworldDistribution, "varibad")}
DEFAULT_PRESET = "varibad"
SUMMARY = "5x5 grid, hidden goal, 15 steps x 4 episodes per trial, -0.1 per step / +1 at goal (VariBAD 2020)"
