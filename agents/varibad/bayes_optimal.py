"""The exact Bayes-optimal return of VariBAD's hidden-goal gridworld, by dynamic programming.

Zintgraf et al. 2020 (§5.1, Fig. 3) compare VariBAD on ``GridNavi`` with the Bayes-optimal
policy. With a uniform prior over a finite set of goal cells and deterministic moves, the belief
after any history is uniform over the goals not yet ruled out (the cells visited without reward);
once the goal is found the belief is the goal alone. The Bayes-adaptive MDP therefore has the
finite state ``(time, position, candidate set)``, and backward induction over the whole trial
(``episodes_per_trial × episode_length`` steps, the agent put back on the start cell after every
episode) gives the Bayes-optimal value exactly.

The candidate set is a bitmask over the ``G`` goals, so a sweep costs ``O(T · cells · actions ·
2^G)``: 16 goals (the train split) take seconds; the test split's 5 goals are instant.

Conventions follow ``metarl.envs.gridworld`` (itself ``lmzintgraf/varibad:
environments/navigation/gridworld.py``): cells ``(x, y)``, actions 0 stay, 1 up (y + 1),
2 right (x + 1), 3 down (y − 1), 4 left (x − 1), clamped at the walls; the reward is given after
the move, ``goal_reward`` on the goal and ``step_reward`` elsewhere, and the episode does not end
at the goal. (The agents package does not import the envs package, so the moves are restated
here; a test checks both agree step by step.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from metarl.errors import EnvError

__all__ = ["MOVES", "BayesOptimalSolution", "solve_gridworld", "random_policy_returns"]

#: ``(dx, dy)`` of actions 0..4: stay, up, right, down, left (VariBAD's order).
MOVES = np.array([[0, 0], [0, 1], [1, 0], [0, -1], [-1, 0]], dtype=np.int64)

#: Q-values within this of the best count as ties (broken towards the lowest action index).
_TIE = 1e-9


def _check_goals(goals: Sequence[Sequence[int]] | np.ndarray, num_cells: int) -> np.ndarray:
    arr = np.asarray(goals, dtype=np.int64).reshape(-1, 2)
    if arr.shape[0] == 0:
        raise EnvError("solve_gridworld needs at least one goal, got none")
    if not np.all((arr >= 0) & (arr < num_cells)):
        raise EnvError(f"goals must lie on the {num_cells}x{num_cells} grid, got {arr.tolist()}")
    if len({tuple(g) for g in arr.tolist()}) != arr.shape[0]:
        raise EnvError(f"goals must be distinct, got {arr.tolist()}")
    if arr.shape[0] > 20:
        raise EnvError(f"the candidate-set DP needs 2^G states; G={arr.shape[0]} goals is too many (at most 20)")
    return arr


def _next_cells(num_cells: int) -> np.ndarray:
    """``[cells, actions]`` index of the cell reached from each cell by each action."""
    xy = np.array([(x, y) for x in range(num_cells) for y in range(num_cells)], dtype=np.int64)
    moved = np.clip(xy[:, None, :] + MOVES[None], 0, num_cells - 1)
    return moved[..., 0] * num_cells + moved[..., 1]


@dataclasses.dataclass(frozen=True)
class BayesOptimalSolution:
    """The Bayes-optimal policy of one gridworld prior and its expected returns.

    Attributes:
        goals: ``[G, 2]`` the prior's goal cells (uniform prior).
        episode_returns: ``[E]`` expected undiscounted return of each episode of the trial under
            the Bayes-optimal policy (average over the prior's goals).
        trial_return: the optimal expected trial return ``V_0(start, all goals)``; equals
            ``episode_returns.sum()``.
        per_goal_returns: ``[G, E]`` the return of each episode when the goal is ``goals[g]``.
        actions: ``[T, cells, 2^G]`` int8, a Bayes-optimal action for every
            ``(time, cell, candidate set)`` (ties go to the lowest action index).
        num_cells, episode_length, episodes_per_trial, start, goal_reward, step_reward: the
            problem solved.
    """

    goals: np.ndarray
    episode_returns: np.ndarray
    trial_return: float
    per_goal_returns: np.ndarray
    actions: np.ndarray
    num_cells: int
    episode_length: int
    episodes_per_trial: int
    start: tuple[int, int]
    goal_reward: float
    step_reward: float

    @property
    def mean_episode_return(self) -> float:
        """The mean return per episode over the trial (the figure VariBAD's score normalises)."""
        return float(self.episode_returns.mean())

    def rollout(self, goal_index: int) -> tuple[list[int], np.ndarray]:
        """Actions of the Bayes-optimal policy on the goal ``goals[goal_index]`` and the return
        of each episode.

        Returns:
            ``(actions[T], episode_returns[E])``.
        """
        n, horizon = self.num_cells, self.episode_length
        nxt = _next_cells(n)
        goal_cell = int(self.goals[goal_index][0] * n + self.goals[goal_index][1])
        cell_goal = np.full(n * n, -1, dtype=np.int64)
        for g, (x, y) in enumerate(self.goals.tolist()):
            cell_goal[x * n + y] = g
        start = self.start[0] * n + self.start[1]
        cand = (1 << len(self.goals)) - 1
        cell = start
        taken: list[int] = []
        returns = np.zeros(self.episodes_per_trial)
        for t in range(horizon * self.episodes_per_trial):
            a = int(self.actions[t, cell, cand])
            taken.append(a)
            cell = int(nxt[cell, a])
            found = cell == goal_cell
            returns[t // horizon] += self.goal_reward if found else self.step_reward
            g = cell_goal[cell]
            if found:
                cand = 1 << int(g)
            elif g >= 0:
                cand &= ~(1 << int(g))
            if t % horizon == horizon - 1:
                cell = start
        return taken, returns


def solve_gridworld(
    goals: Sequence[Sequence[int]] | np.ndarray,
    *,
    num_cells: int = 5,
    episode_length: int = 15,
    episodes_per_trial: int = 4,
    start: tuple[int, int] = (0, 0),
    goal_reward: float = 1.0,
    step_reward: float = -0.1,
) -> BayesOptimalSolution:
    """Solve the Bayes-adaptive gridworld exactly under a uniform prior over ``goals``.

    Backward induction over ``T = episodes_per_trial · episode_length`` steps on the belief
    state ``(position, candidate set)``: moving to cell ``c'`` finds the goal with probability
    ``[c' ∈ C] / |C|`` (belief becomes ``{c'}``), and otherwise removes ``c'`` from ``C``. After
    the last step of an episode the agent is put back on ``start`` with its belief kept.

    Args:
        goals: ``[G, 2]`` distinct goal cells, the support of the uniform prior (e.g.
            ``dist.goals("test")``).
        num_cells: side of the square grid.
        episode_length: steps per episode (H = 15 in VariBAD).
        episodes_per_trial: episodes per trial (4 in VariBAD).
        start: the start cell.
        goal_reward: reward for a step that ends on the goal.
        step_reward: reward for any other step.

    Returns:
        A :class:`BayesOptimalSolution`.
    """
    goals_arr = _check_goals(goals, num_cells)
    if episode_length <= 0 or episodes_per_trial <= 0:
        raise EnvError(f"episode_length and episodes_per_trial must be positive, got {episode_length}, {episodes_per_trial}")
    num_goals = goals_arr.shape[0]
    n_sets = 1 << num_goals
    cells = num_cells * num_cells
    nxt = _next_cells(num_cells)
    start_cell = int(start[0]) * num_cells + int(start[1])
    cell_goal = np.full(cells, -1, dtype=np.int64)
    for g, (x, y) in enumerate(goals_arr.tolist()):
        cell_goal[x * num_cells + y] = g

    sets = np.arange(n_sets, dtype=np.int64)
    size = np.zeros(n_sets, dtype=np.int64)
    for g in range(num_goals):
        size += (sets >> g) & 1
    # Probability that the goal is at goal g given candidate set C (0 for the empty set, which
    # is never reached: a set only shrinks while it still holds the true goal).
    p_found = np.zeros((num_goals, n_sets))
    for g in range(num_goals):
        inside = ((sets >> g) & 1).astype(np.float64)
        p_found[g] = np.divide(inside, size, out=np.zeros(n_sets), where=size > 0)

    horizon = episode_length * episodes_per_trial
    actions = np.zeros((horizon, cells, n_sets), dtype=np.int8)
    value_next = np.zeros((cells, n_sets))
    for t in range(horizon - 1, -1, -1):
        episode_ends = t % episode_length == episode_length - 1
        q = np.empty((len(MOVES), cells, n_sets))
        for c in range(cells):
            for a in range(len(MOVES)):
                landed = int(nxt[c, a])
                after = start_cell if episode_ends else landed
                g = int(cell_goal[landed])
                if g < 0:
                    q[a, c] = step_reward + value_next[after]
                else:
                    bit = 1 << g
                    p = p_found[g]
                    q[a, c] = p * (goal_reward + value_next[after, bit]) + (1.0 - p) * (
                        step_reward + value_next[after, sets & ~bit]
                    )
        best = q.max(axis=0)
        actions[t] = np.argmax(q >= best[None] - _TIE, axis=0)
        value_next = best
    trial_return = float(value_next[start_cell, n_sets - 1])

    solution = BayesOptimalSolution(
        goals=goals_arr,
        episode_returns=np.zeros(episodes_per_trial),
        trial_return=trial_return,
        per_goal_returns=np.zeros((num_goals, episodes_per_trial)),
        actions=actions,
        num_cells=num_cells,
        episode_length=episode_length,
        episodes_per_trial=episodes_per_trial,
        start=(int(start[0]), int(start[1])),
        goal_reward=float(goal_reward),
        step_reward=float(step_reward),
    )
    per_goal = np.stack([solution.rollout(g)[1] for g in range(num_goals)])
    return dataclasses.replace(solution, per_goal_returns=per_goal, episode_returns=per_goal.mean(axis=0))


def random_policy_returns(
    goals: Sequence[Sequence[int]] | np.ndarray,
    *,
    num_cells: int = 5,
    episode_length: int = 15,
    start: tuple[int, int] = (0, 0),
    goal_reward: float = 1.0,
    step_reward: float = -0.1,
) -> float:
    """Expected return of one episode of the uniformly random policy, averaged over ``goals``
    (exact: the distribution over cells is propagated step by step). Every episode of a trial
    has the same expected return, since the random policy ignores its history."""
    goals_arr = _check_goals(goals, num_cells)
    cells = num_cells * num_cells
    nxt = _next_cells(num_cells)
    transition = np.zeros((cells, cells))
    for c in range(cells):
        for a in range(len(MOVES)):
            transition[c, nxt[c, a]] += 1.0 / len(MOVES)
    occupancy = np.zeros(cells)
    occupancy[int(start[0]) * num_cells + int(start[1])] = 1.0
    at_goal = np.zeros(len(goals_arr))
    goal_cells = goals_arr[:, 0] * num_cells + goals_arr[:, 1]
    for _ in range(episode_length):
        occupancy = occupancy @ transition
        at_goal += occupancy[goal_cells]
    per_goal = at_goal * goal_reward + (episode_length - at_goal) * step_reward
    return float(per_goal.mean())
