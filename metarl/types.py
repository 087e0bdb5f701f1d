"""Data types and protocols shared by envs, the sampler and agents (design §4).

Envs implement :class:`TaskDistribution` and :class:`BatchedEnv`; agents implement
:class:`Agent` and hand out :class:`Policy` objects; the sampler turns a policy and a batched env
into a :class:`TrialBatch`. None of these import an env or an agent.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch

from metarl.errors import EnvError, choices

__all__ = [
    "Split",
    "SPLITS",
    "Task",
    "TaskDistribution",
    "BatchedEnv",
    "StepInputs",
    "Policy",
    "TrialBatch",
    "Agent",
    "TrialAgent",
    "check_split",
    "check_num_tasks",
]

Split = Literal["train", "test"]
SPLITS: tuple[str, ...] = ("train", "test")


def check_split(split: str) -> None:
    """Raise :class:`EnvError` unless ``split`` is ``'train'`` or ``'test'``."""
    if split not in SPLITS:
        raise EnvError(f"unknown split {split!r}; valid splits: {choices(SPLITS)}")


def check_num_tasks(n: object) -> int:
    """Return ``n`` as an int, or raise :class:`EnvError` unless it is a positive integer."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise EnvError(f"number of tasks must be a positive integer, got n={n!r}")
    return int(n)


def _freeze(value: Any) -> Any:
    """Turn arrays and lists into nested tuples so a :class:`Task` is hashable."""
    if isinstance(value, np.ndarray):
        if value.dtype != object:
            # tolist() already gives Python scalars: only its nesting needs converting.
            return _tuplify(value.tolist()) if value.ndim else value.item()
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _tuplify(nested: Any) -> Any:
    """Nested lists of Python scalars (an array's ``tolist()``) as nested tuples."""
    if nested and isinstance(nested[0], list):
        return tuple(_tuplify(v) for v in nested)
    return tuple(nested)


@dataclasses.dataclass(frozen=True)
class Task:
    """One task of a distribution: a frozen, hashable, picklable value.

    Attributes:
        family: the distribution's name, e.g. ``"halfcheetah-vel"``.
        preset: the preset it was drawn from, e.g. ``"maml"``.
        split: ``"train"`` or ``"test"``.
        index: the task's index within its split (a stable id for fixed task lists, the draw
            number for continuous families).
        params: the task parameters as sorted ``(name, value)`` pairs; arrays are stored as
            nested tuples. Read them with ``task["goal_velocity"]`` (sequences come back as
            ``np.ndarray``).
    """

    family: str
    preset: str
    split: str
    index: int
    params: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def make(cls, family: str, preset: str, split: str, index: int, **params: Any) -> Task:
        """Build a task, freezing array-valued parameters."""
        frozen = tuple(sorted((k, _freeze(v)) for k, v in params.items()))
        return cls(family=family, preset=preset, split=split, index=int(index), params=frozen)

    def __getitem__(self, name: str) -> Any:
        for key, value in self.params:
            if key == name:
                return np.asarray(value) if isinstance(value, tuple) else value
        raise KeyError(f"task of {self.family!r} has no parameter {name!r}; it has {choices(k for k, _ in self.params)}")

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return self[name]
        except KeyError:
            return default

    def __str__(self) -> str:
        shown = ", ".join(
            f"{k}={v}" for k, v in self.params if not isinstance(v, (tuple, bytes)) or len(v) <= 4
        )
        return f"{self.family}[{self.preset}]/{self.split}#{self.index}({shown})"


class BatchedEnv(abc.ABC):
    """``num_slots`` environment slots, each bound to a task, stepped together.

    Follows gymnasium's ``VectorEnv`` conventions with autoreset disabled: a slot whose episode
    ended stays ended until ``reset(mask=...)`` resets it. Observations, rewards and flags are
    numpy arrays with the slot axis first.
    """

    num_slots: int
    single_observation_space: gym.Space
    single_action_space: gym.Space
    #: True when ``info`` carries a per-slot boolean ``"success"`` array every step.
    has_success: bool = False

    @abc.abstractmethod
    def set_tasks(self, tasks: Sequence[Task]) -> None:
        """Bind slot ``i`` to ``tasks[i]``; ``len(tasks)`` must equal ``num_slots``."""

    @abc.abstractmethod
    def reset(
        self, *, seed: int | Sequence[int] | None = None, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset the slots in ``mask`` (all when ``None``); returns ``(obs[B, ...], info)``.

        ``seed`` is one int (slot ``i`` gets ``seed + i``) or one seed per slot; slots outside
        ``mask`` keep their state and their last observation is returned.
        """

    @abc.abstractmethod
    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every slot; returns ``obs[B, ...], reward[B], terminated[B], truncated[B], info``.

        Slots whose episode already ended are stepped as no-ops or ignored by the caller; the
        sampler never reads them.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release threads, processes or shared memory."""

    def __enter__(self) -> BatchedEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TaskDistribution(abc.ABC):
    """A family of tasks under one preset, with a fixed train/test rule.

    Attributes:
        name: the family, e.g. ``"navigation-2d"``.
        preset: the preset's name, e.g. ``"maml"``.
        max_episode_steps: the episode horizon H.
        episodes_per_trial: the preset's default number of episodes per trial (BAMDP horizon).
        observation_space, action_space: the single-task spaces.
        has_success: whether the env reports a per-step success flag.
    """

    name: str
    preset: str
    max_episode_steps: int
    episodes_per_trial: int = 1
    observation_space: gym.Space
    action_space: gym.Space
    has_success: bool = False

    @abc.abstractmethod
    def sample(self, n: int, *, split: str = "train", rng: np.random.Generator) -> list[Task]:
        """Draw ``n`` tasks of ``split`` with ``rng`` (never a global RNG)."""

    @abc.abstractmethod
    def make_env(self, task: Task, **kwargs: Any) -> gym.Env:
        """A plain single-task ``gymnasium.Env`` bound to ``task`` (with the time limit)."""

    @abc.abstractmethod
    def make_batched(self, tasks: Sequence[Task], **kwargs: Any) -> BatchedEnv:
        """A :class:`BatchedEnv` with one slot per task."""

    def describe(self) -> str:
        """One line for ``metarl envs``."""
        return f"{self.name}[{self.preset}]: H={self.max_episode_steps}, episodes_per_trial={self.episodes_per_trial}"


class StepInputs:
    """What a policy sees at one step, for all ``B`` slots.

    Attributes:
        obs: ``[B, *obs_shape]`` float observations.
        prev_action: ``[B, *act_shape]`` the slot's previous action (zeros at trial start);
            discrete actions are given one-hot ``[B, n]``.
        prev_reward: ``[B]`` the previous reward (0 at trial start).
        prev_done: ``[B]`` float 1.0 when the previous step ended an episode (RL² input).
        episode_index: ``[B]`` long, the episode number within the trial.

    Every input except ``obs`` may also be given as a zero-argument callable that returns the
    tensor: it is called once, on first read. The sampler defers these inputs so that a policy
    that never reads them (a feed-forward MLP) does not pay for building them at every step.
    """

    __slots__ = ("obs", "_prev_action", "_prev_reward", "_prev_done", "_episode_index")

    def __init__(
        self,
        obs: torch.Tensor,
        prev_action: torch.Tensor | Callable[[], torch.Tensor],
        prev_reward: torch.Tensor | Callable[[], torch.Tensor],
        prev_done: torch.Tensor | Callable[[], torch.Tensor],
        episode_index: torch.Tensor | Callable[[], torch.Tensor],
    ) -> None:
        self.obs = obs
        self._prev_action = prev_action
        self._prev_reward = prev_reward
        self._prev_done = prev_done
        self._episode_index = episode_index

    def _resolve(self, slot: str) -> torch.Tensor:
        value = getattr(self, slot)
        if not isinstance(value, torch.Tensor):
            value = value()
            setattr(self, slot, value)
        return value

    @property
    def prev_action(self) -> torch.Tensor:
        return self._resolve("_prev_action")

    @property
    def prev_reward(self) -> torch.Tensor:
        return self._resolve("_prev_reward")

    @property
    def prev_done(self) -> torch.Tensor:
        return self._resolve("_prev_done")

    @property
    def episode_index(self) -> torch.Tensor:
        return self._resolve("_episode_index")

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in _STEP_INPUTS)
        return f"StepInputs({fields})"


_STEP_INPUTS = ("obs", "prev_action", "prev_reward", "prev_done", "episode_index")


class Policy(abc.ABC):
    """A policy over the whole batch of slots: one forward pass per step.

    The sampler calls :meth:`initial_state` at the start of every wave of trials with the
    slot-to-task mapping (again when a wave is collected anew after a lost worker) and :meth:`act`
    once per step. Recurrent state persists across episode boundaries within a trial.
    """

    #: Device the policy computes on; the sampler moves inputs there.
    device: torch.device = torch.device("cpu")

    @abc.abstractmethod
    def initial_state(self, task_index: torch.Tensor) -> Any:
        """State at trial start for slots running tasks ``task_index[B]`` (indices into the
        collected task list)."""

    @abc.abstractmethod
    def act(self, inputs: StepInputs, state: Any) -> tuple[torch.Tensor, Any, dict[str, torch.Tensor]]:
        """Return ``(action[B, ...], new_state, extras)``; ``extras`` values are ``[B, ...]``
        tensors (e.g. ``log_prob``, ``value``) stored time-major in the batch."""


@dataclasses.dataclass
class TrialBatch:
    """Time-major trajectories of ``B`` slots, one trial per slot (design §4, style 3).

    Slots are laid out task-major: slot ``b`` runs task ``task_index[b]``, and the slots of one
    task are contiguous. Each slot's trial is written from ``t = 0``; steps after its trial ended
    have ``mask == False`` and hold zeros.

    Attributes:
        observations: ``[T, B, *obs]`` observation before the action.
        next_observations: ``[T, B, *obs]`` observation after the action (the final observation
            of an episode, before any reset), used to bootstrap through truncation.
        actions: ``[T, B, *act]`` actions as the policy produced them (before clipping).
        rewards: ``[T, B]`` float.
        terminated: ``[T, B]`` bool, the MDP reached a terminal state (no bootstrap).
        truncated: ``[T, B]`` bool, the episode hit its time limit (bootstrap through it).
        trial_done: ``[T, B]`` bool, the last step of the slot's trial.
        episode_index: ``[T, B]`` long, the episode number within the trial.
        step_in_episode: ``[T, B]`` long, the time step within the episode.
        mask: ``[T, B]`` bool, the step is real.
        task_index: ``[B]`` long, index into the collected task list.
        trial_index: ``[B]`` long, the trial number of the slot within its task.
        success: ``[T, B]`` bool or ``None`` when the env has no success flag.
        extras: policy extras, each ``[T, B, ...]`` (e.g. ``log_prob``, ``value``).
        tasks: the collected tasks (``task_index`` points into it).
    """

    observations: torch.Tensor
    next_observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    trial_done: torch.Tensor
    episode_index: torch.Tensor
    step_in_episode: torch.Tensor
    mask: torch.Tensor
    task_index: torch.Tensor
    trial_index: torch.Tensor
    success: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    tasks: tuple[Task, ...] = ()

    _TB_FIELDS = (
        "observations",
        "next_observations",
        "actions",
        "rewards",
        "terminated",
        "truncated",
        "trial_done",
        "episode_index",
        "step_in_episode",
        "mask",
    )

    def __post_init__(self) -> None:
        t, b = self.rewards.shape[:2] if self.rewards.dim() == 2 else (None, None)
        if t is None:
            raise ValueError(f"TrialBatch.rewards must be [T, B], got shape {tuple(self.rewards.shape)}")
        for name in self._TB_FIELDS:
            value = getattr(self, name)
            if value.shape[:2] != (t, b):
                raise ValueError(f"TrialBatch.{name} must start with [T, B] = [{t}, {b}], got {tuple(value.shape)}")
        for name in ("terminated", "truncated", "trial_done", "mask"):
            if getattr(self, name).dtype != torch.bool:
                raise ValueError(f"TrialBatch.{name} must be bool, got {getattr(self, name).dtype}")
        if self.observations.shape != self.next_observations.shape:
            raise ValueError("TrialBatch.observations and next_observations differ in shape")
        for name in ("task_index", "trial_index"):
            if tuple(getattr(self, name).shape) != (b,):
                raise ValueError(f"TrialBatch.{name} must be [B] = [{b}], got {tuple(getattr(self, name).shape)}")
        if self.success is not None and self.success.shape != (t, b):
            raise ValueError(f"TrialBatch.success must be [T, B] = [{t}, {b}], got {tuple(self.success.shape)}")
        for key, value in self.extras.items():
            if value.shape[:2] != (t, b):
                raise ValueError(f"TrialBatch.extras[{key!r}] must start with [T, B] = [{t}, {b}], got {tuple(value.shape)}")

    @property
    def num_steps(self) -> int:
        """T, the padded trial length."""
        return int(self.rewards.shape[0])

    @property
    def num_slots(self) -> int:
        """B, the number of slots (trials)."""
        return int(self.rewards.shape[1])

    @property
    def num_tasks(self) -> int:
        return len(self.tasks) if self.tasks else int(self.task_index.max().item()) + 1

    @property
    def device(self) -> torch.device:
        return self.rewards.device

    @property
    def dones(self) -> torch.Tensor:
        """``[T, B]`` bool, the step ended an episode (terminated or truncated)."""
        return self.terminated | self.truncated

    def to(self, device: str | torch.device) -> TrialBatch:
        """A copy with every tensor on ``device``."""
        moved = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, torch.Tensor):
                value = value.to(device)
            elif field.name == "extras":
                value = {k: v.to(device) for k, v in value.items()}
            moved[field.name] = value
        return TrialBatch(**moved)

    def episode_returns(self) -> torch.Tensor:
        """``[B, E]`` undiscounted return of each episode of each slot's trial."""
        num_episodes = int(self.episode_index[self.mask].max().item()) + 1 if self.mask.any() else 0
        out = torch.zeros(self.num_slots, num_episodes, dtype=self.rewards.dtype, device=self.device)
        rewards = torch.where(self.mask, self.rewards, torch.zeros_like(self.rewards))
        index = self.episode_index.clamp(min=0).T  # [B, T]
        out.scatter_add_(1, index, rewards.T)
        return out

    def episode_successes(self) -> torch.Tensor | None:
        """``[B, E]`` bool, the success flag was set at any step of the episode; ``None`` when
        the env defines no success."""
        if self.success is None:
            return None
        num_episodes = int(self.episode_index[self.mask].max().item()) + 1 if self.mask.any() else 0
        out = torch.zeros(self.num_slots, num_episodes, dtype=torch.long, device=self.device)
        hits = (self.success & self.mask).long().T
        out.scatter_add_(1, self.episode_index.clamp(min=0).T, hits)
        return out > 0

    def select_slots(self, slots: torch.Tensor) -> TrialBatch:
        """The sub-batch of the given slot indices (``[B']`` long)."""
        kwargs: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in self._TB_FIELDS or field.name == "success":
                value = None if value is None else value[:, slots]
            elif field.name in ("task_index", "trial_index"):
                value = value[slots]
            elif field.name == "extras":
                value = {k: v[:, slots] for k, v in value.items()}
            kwargs[field.name] = value
        return TrialBatch(**kwargs)


class Agent(abc.ABC):
    """A meta-learner (design §4). Agents never step an environment: they call the sampler.

    The *context* is what adaptation produces: adapted parameters for MAML-family agents, the
    recurrent state or belief for RL² and VariBAD (for those, adaptation happens inside the
    policy's state during a trial and :meth:`adapt` returns the context unchanged).
    """

    #: ``"gradient"``: round k = after k calls to :meth:`adapt` (MAML family).
    #: ``"trial"``: round k = the k-th episode of one trial (RL², VariBAD).
    adaptation: Literal["gradient", "trial"] = "gradient"

    @abc.abstractmethod
    def meta_train_step(self, sampler: Any, tasks: Sequence[Task]) -> dict[str, float]:
        """One meta-training iteration on ``tasks``; returns metrics keyed ``<phase>/<name>``."""

    @abc.abstractmethod
    def initial_context(self, num_tasks: int) -> Any:
        """The context before any adaptation, for ``num_tasks`` tasks."""

    @abc.abstractmethod
    def policy(self, context: Any, *, deterministic: bool = False) -> Policy:
        """A batched policy acting under ``context``."""

    def adapt(self, batch: TrialBatch, context: Any, *, step: int = 0) -> Any:
        """The context after one adaptation on ``batch``; ``step`` is the 0-based adaptation
        step (MAML's test-time learning-rate schedule depends on it)."""
        return context

    def seed_evaluation(self, seed: int) -> None:
        """Restart the random stream that evaluation draws from (the evaluated policy's actions),
        so that an evaluation depends only on the weights, the tasks and ``seed``, not on how
        many evaluations came before. This default reseeds ``self.eval_generator`` (a
        ``torch.Generator``) when the agent has one, which every built-in agent does; an agent
        with other evaluation randomness overrides it."""
        generator = getattr(self, "eval_generator", None)
        if isinstance(generator, torch.Generator):
            generator.manual_seed(int(seed))

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly: weights, optimisers, normalisers."""

    @abc.abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


class TrialAgent(Agent):
    """An agent that adapts inside a trial (RL², VariBAD): its context lives in the policy's
    recurrent state or belief, so there is none outside it and :meth:`adapt` is the identity."""

    adaptation: Literal["gradient", "trial"] = "trial"

    def initial_context(self, num_tasks: int) -> None:
        """No context outside the policy's state."""
        return None
