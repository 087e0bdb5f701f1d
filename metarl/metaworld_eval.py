"""Meta-World's own evaluation on metarl agents.

:class:`MetaWorldAgent` wraps any :class:`~metarl.types.Agent` as a Meta-World
``metaworld.evaluation.MetaLearningAgent``, so ``metaworld.evaluation.metalearning_evaluation``
runs on it unchanged. :func:`metaworld_protocol` is our :func:`~metarl.evaluation.evaluate` under
Meta-World's protocol (10 adaptation episodes, one adaptation step, then 3 evaluation episodes per
task and goal).

How the two count. Meta-World's ``evaluation`` turns on terminate-on-success, groups the envs by
env class and takes, per class, the first ``num_episodes`` episodes *to finish* among all its
envs: a successful episode ends early, so successes are over-represented whenever a class has
more than one env. In ``Meta-World/ML1-test`` every env is the same class, so with its default
``meta_batch_size=20`` an evaluation scores the 3 earliest finishers of 20 goals; with
``meta_batch_size=1`` it scores that env's 3 episodes, exactly what ours counts for the goal
(``metarl bench metaworld-protocol`` measures both; docs/metaworld-protocol.md). Ours gives every
task exactly its quota of episodes, whatever their length.

The adapter's episodes: during adaptation, each env's stream of steps is split at episode ends;
every env contributes its first ``min`` complete episodes (the same count for every env, because
MAML's batched policy holds the same number of episodes per task), and these are handed to
``agent.adapt`` as one :class:`~metarl.types.TrialBatch`. Meta-World's vector env resets in the
same step (``SAME_STEP`` autoreset) and does not show the final observation, so the last
``next_observation`` of an episode repeats its last observation; the MAML family's REINFORCE with
a linear baseline does not use it. In the evaluation phase Meta-World hands the agent observations
and episode ends but no rewards: a trial agent's previous-action, done and episode inputs follow
its own steps there, and its previous-reward input is 0.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metarl.evaluation import EvalReport, evaluate
from metarl.types import Agent, StepInputs, Task, TrialBatch

__all__ = ["MetaWorldAgent", "metaworld_protocol"]


class MetaWorldAgent:
    """A metarl agent behind Meta-World's ``MetaLearningAgent`` protocol.

    Args:
        agent: the metarl agent.
        action_space: the single-env action space (actions are clipped to it).
        deterministic: act with the policy's mode.
        device: where the policy computes.
    """

    def __init__(self, agent: Agent, *, action_space: gym.Space, deterministic: bool = False, device: str | torch.device = "cpu") -> None:
        self.agent = agent
        self.action_space = action_space
        self.deterministic = deterministic
        self.device = torch.device(device)
        self._num_envs: int | None = None
        self.adapt_steps = 0

    # Meta-World's MetaLearningAgent protocol --------------------------------------------
    def init(self) -> None:
        """Start a new evaluation: back to the meta-learned initial context."""
        self._num_envs = None
        self.adapt_steps = 0

    def adapt_action(self, observations: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        self._ensure_started(observations)
        action = self._act(observations)
        self._record_obs = observations
        self._record_action = action
        return self._env_action(action), {}

    def step(self, timestep: Any) -> None:
        """Record one transition of the adaptation phase."""
        done = np.logical_or(timestep.terminated, timestep.truncated)
        self._steps.append(
            (
                np.asarray(timestep.observation, dtype=np.float32),
                np.asarray(self._record_action, dtype=np.float32),
                np.asarray(timestep.reward, dtype=np.float32),
                np.asarray(timestep.terminated, dtype=bool),
                np.asarray(timestep.truncated, dtype=bool),
            )
        )
        self._after_step(timestep.action, timestep.reward, done)

    def adapt(self) -> None:
        """One adaptation on the recorded episodes (gradient agents); trial agents carry their
        state into the evaluation episodes instead."""
        if self.agent.adaptation == "gradient" and self._steps:
            batch = self._batch_from_steps()
            self._context = self.agent.adapt(batch, self._context, step=self.adapt_steps)
            self._policy = self.agent.policy(self._context, deterministic=self.deterministic)
            self._state = self._policy.initial_state(torch.arange(self._num_envs, device=self.device))
            self._reset_inputs()
        self.adapt_steps += 1
        self._steps = []

    def eval_action(self, observations: np.ndarray) -> np.ndarray:
        self._ensure_started(observations)
        action = self._act(observations)
        self._record_action = action
        # The next step's inputs: this action, and (until reset says otherwise) no episode end.
        # Meta-World's evaluation phase shows the agent no rewards, so the reward input is 0.
        self._prev_action = torch.as_tensor(
            np.asarray(action), dtype=torch.float32, device=self.device
        ).reshape(self._num_envs, -1)
        self._prev_reward = torch.zeros_like(self._prev_reward)
        self._prev_done = torch.zeros_like(self._prev_done)
        return self._env_action(action)

    def reset(self, env_mask: np.ndarray) -> None:
        """Meta-World calls this after every step of the evaluation phase with the envs whose
        episode ended (and once with every env before the phase's first step). The recurrent
        state of a trial agent must survive episode ends (the trial goes on), and MAML has no
        state, so it only updates the previous-step inputs: the done flag and episode index of
        the ended envs (an episode already ended by the last adaptation step counts once)."""
        if self._num_envs is None:
            return
        mask = torch.as_tensor(np.asarray(env_mask, dtype=bool), device=self.device)
        self._episode = self._episode + (mask & (self._prev_done == 0)).long()
        self._prev_done = torch.where(mask, torch.ones_like(self._prev_done), self._prev_done)

    # internals ------------------------------------------------------------------------
    def _ensure_started(self, observations: np.ndarray) -> None:
        if self._num_envs is not None:
            return
        self._num_envs = int(observations.shape[0])
        self._context = self.agent.initial_context(self._num_envs)
        self._policy = self.agent.policy(self._context, deterministic=self.deterministic)
        self._state = self._policy.initial_state(torch.arange(self._num_envs, device=self.device))
        self._steps: list[tuple[np.ndarray, ...]] = []
        self._reset_inputs()

    def _reset_inputs(self) -> None:
        n = self._num_envs
        discrete = isinstance(self.action_space, gym.spaces.Discrete)
        dim = self.action_space.n if discrete else int(np.prod(self.action_space.shape))
        self._prev_action = torch.zeros(n, dim, device=self.device)
        self._prev_reward = torch.zeros(n, device=self.device)
        self._prev_done = torch.zeros(n, device=self.device)
        self._episode = torch.zeros(n, dtype=torch.long, device=self.device)

    def _act(self, observations: np.ndarray) -> np.ndarray:
        inputs = StepInputs(
            obs=torch.as_tensor(observations, dtype=torch.float32, device=self.device),
            prev_action=self._prev_action,
            prev_reward=self._prev_reward,
            prev_done=self._prev_done,
            episode_index=self._episode,
        )
        with torch.no_grad():
            action, self._state, _ = self._policy.act(inputs, self._state)
        return action.cpu().numpy()

    def _env_action(self, action: np.ndarray) -> np.ndarray:
        if isinstance(self.action_space, gym.spaces.Box):
            return np.clip(action, self.action_space.low, self.action_space.high)
        return action

    def _after_step(self, action: np.ndarray, reward: np.ndarray, done: np.ndarray) -> None:
        self._prev_action = torch.as_tensor(np.asarray(self._record_action), dtype=torch.float32, device=self.device).reshape(self._num_envs, -1)
        self._prev_reward = torch.as_tensor(np.asarray(reward), dtype=torch.float32, device=self.device)
        done_t = torch.as_tensor(np.asarray(done, dtype=bool), device=self.device)
        self._prev_done = done_t.float()
        self._episode = self._episode + done_t.long()

    def _batch_from_steps(self) -> TrialBatch:
        """Recorded steps -> a TrialBatch with one slot per complete episode, env-major."""
        obs = np.stack([s[0] for s in self._steps])  # [S, N, D]
        act = np.stack([s[1] for s in self._steps])
        rew = np.stack([s[2] for s in self._steps])
        term = np.stack([s[3] for s in self._steps])
        trunc = np.stack([s[4] for s in self._steps])
        done = term | trunc
        n = self._num_envs
        episodes: list[list[tuple[int, int]]] = []
        for i in range(n):
            ends = np.flatnonzero(done[:, i])
            starts = np.concatenate([[0], ends[:-1] + 1])
            episodes.append(list(zip(starts.tolist(), (ends + 1).tolist())))
        per_env = min(len(e) for e in episodes)
        if per_env == 0:
            raise RuntimeError("no env finished an episode during adaptation; nothing to adapt on")
        length = max(b - a for e in episodes for a, b in e[:per_env])
        slots = n * per_env
        shape = (length, slots)
        out = {
            "observations": np.zeros((*shape, *obs.shape[2:]), np.float32),
            "actions": np.zeros((*shape, *act.shape[2:]), act.dtype),
            "rewards": np.zeros(shape, np.float32),
            "terminated": np.zeros(shape, bool),
            "truncated": np.zeros(shape, bool),
            "mask": np.zeros(shape, bool),
            "step": np.zeros(shape, np.int64),
        }
        for i in range(n):
            for j, (a, b) in enumerate(episodes[i][:per_env]):
                slot, span = i * per_env + j, b - a
                out["observations"][:span, slot] = obs[a:b, i]
                out["actions"][:span, slot] = act[a:b, i]
                out["rewards"][:span, slot] = rew[a:b, i]
                out["terminated"][:span, slot] = term[a:b, i]
                out["truncated"][:span, slot] = trunc[a:b, i]
                out["mask"][:span, slot] = True
                out["step"][:span, slot] = np.arange(span)
        observations = torch.as_tensor(out["observations"])
        next_observations = torch.cat([observations[1:], observations[-1:]])
        mask = torch.as_tensor(out["mask"])
        last = mask & ~torch.cat([mask[1:], torch.zeros_like(mask[:1])])
        next_observations = torch.where(last.unsqueeze(-1), observations, next_observations)
        return TrialBatch(
            observations=observations.to(self.device),
            next_observations=next_observations.to(self.device),
            actions=torch.as_tensor(out["actions"]).to(self.device),
            rewards=torch.as_tensor(out["rewards"]).to(self.device),
            terminated=torch.as_tensor(out["terminated"]).to(self.device),
            truncated=torch.as_tensor(out["truncated"]).to(self.device),
            trial_done=last.to(self.device),
            episode_index=torch.zeros(shape, dtype=torch.long, device=self.device),
            step_in_episode=torch.as_tensor(out["step"]).to(self.device),
            mask=mask.to(self.device),
            task_index=torch.arange(n, device=self.device).repeat_interleave(per_env),
            trial_index=torch.arange(per_env, device=self.device).repeat(n),
        )


def metaworld_protocol(
    agent: Agent,
    sampler: Any,
    tasks: list[Task],
    *,
    adaptation_episodes: int = 10,
    evaluation_episodes: int = 3,
    deterministic: bool = False,
) -> EvalReport:
    """Our :func:`~metarl.evaluation.evaluate` under Meta-World's meta-learning protocol.

    Gradient agents: ``adaptation_episodes`` support episodes per (task, goal), one adaptation,
    then ``evaluation_episodes`` episodes. Trial agents: one trial of ``adaptation_episodes +
    evaluation_episodes`` episodes per (task, goal), scored on its last ``evaluation_episodes``.
    Round 1 of the report is the evaluation phase.
    """
    return evaluate(
        agent,
        sampler,
        tasks,
        rounds=2,
        episodes_per_round=[adaptation_episodes, evaluation_episodes],
        deterministic=deterministic,
    )
