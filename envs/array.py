"""Shared machinery of the array-based task families (navigation, bandit, tabular MDP, gridworld).

Three pieces:

- :class:`CounterStreams`: one random stream per slot, all drawn in one array operation. A slot's
  numbers depend only on its seed and on how many steps it has drawn, so a batched env and the
  single-task env of the same task and seed produce identical transitions.
- :class:`HeldOutDistribution`: the train/test rule of the continuous families: a fixed pool of
  held-out test tasks drawn from a fixed seed, and fresh training draws that reject any test task.
- :class:`ArrayBatchedEnv`: the bookkeeping every array batched env shares (action validation,
  reset masks, per-slot time limits); a family supplies the dynamics as array operations.
"""

from __future__ import annotations

import abc
import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from metarl.envs.base import check_actions, is_integer, reset_mask, slot_seeds
from metarl.errors import EnvError, choices
from metarl.types import BatchedEnv, Task, TaskDistribution, check_num_tasks, check_split

__all__ = [
    "CounterStreams",
    "HeldOutDistribution",
    "ArrayBatchedEnv",
    "preset_factory",
    "check_rng",
    "check_render_mode",
    "check_task",
    "check_int",
    "check_real",
    "check_flag",
    "seed_key",
]

_MASK64 = (1 << 64) - 1
# SplitMix64 constants (Steele, Lea & Flood, "Fast splittable pseudorandom number generators",
# OOPSLA 2014): the golden-ratio increment and the two multipliers of the output mix.
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on a uint64 array (wraps modulo 2**64 by design)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
    return z ^ (z >> np.uint64(31))


def seed_key(seeds: Sequence[int] | np.ndarray) -> np.ndarray:
    """uint64 stream keys for non-negative integer seeds (reduced modulo 2**64).

    Raises:
        EnvError: a negative or non-integer seed.
    """
    arr = np.asarray(seeds)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.integer) or (arr < 0).any():
        raise EnvError(f"seeds must be non-negative integers below 2**64, got {arr.tolist()!r}")
    return _mix(arr.astype(np.uint64) + np.uint64(_GOLDEN))


class CounterStreams:
    """``num_slots`` independent random streams, drawn together without a loop over slots.

    Slot ``i`` has a 64-bit key and a step counter; its ``j``-th number at step ``c`` is
    SplitMix64's output at position ``c * width + j + 1`` of the sequence keyed by the slot's key.
    Counter-based generation is what lets a batched env draw for every slot in one array operation
    while each slot's numbers stay those of a single env seeded the same way.

    Args:
        num_slots: B, the number of streams.
        width: how many uniforms one :meth:`uniform` call draws per slot.
    """

    def __init__(self, num_slots: int, *, width: int) -> None:
        self.width = int(width)
        self.keys = np.zeros(num_slots, dtype=np.uint64)
        self.counters = np.zeros(num_slots, dtype=np.uint64)
        self.keyed = np.zeros(num_slots, dtype=bool)

    def seed(self, mask: np.ndarray, keys: np.ndarray) -> None:
        """Restart the streams in ``mask[B]`` with ``keys`` (one per masked slot)."""
        self.keys[mask] = keys
        self.counters[mask] = 0
        self.keyed[mask] = True

    def ensure_keyed(self, mask: np.ndarray, entropy: np.random.Generator) -> None:
        """Give the never-seeded slots of ``mask`` a key drawn from ``entropy``; streams that
        already have a key continue where they stopped (gymnasium's ``reset(seed=None)``)."""
        fresh = mask & ~self.keyed
        if fresh.any():
            drawn = entropy.integers(0, 1 << 63, size=int(fresh.sum()), dtype=np.int64)
            self.seed(fresh, seed_key(drawn))

    def uniform(self) -> np.ndarray:
        """``[B, width]`` float64 uniforms in the open interval (0, 1); advances every counter."""
        steps = self.counters[:, None] * np.uint64(self.width) + np.arange(
            1, self.width + 1, dtype=np.uint64
        )
        bits = _mix(self.keys[:, None] + steps * np.uint64(_GOLDEN))
        self.counters += np.uint64(1)
        # The top 53 bits, offset by half a unit, give a double strictly inside (0, 1) so that
        # inverse-CDF transforms never see 0 or 1.
        return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def check_rng(rng: object) -> np.random.Generator:
    """Return ``rng`` or raise :class:`EnvError` unless it is a ``numpy.random.Generator``."""
    if not isinstance(rng, np.random.Generator):
        raise EnvError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def check_int(name: str, value: object, *, minimum: int = 1) -> int:
    """``value`` as an int, or :class:`EnvError` unless it is an integer ``>= minimum`` (a float
    or bool is refused, not truncated)."""
    if not is_integer(value) or value < minimum:
        raise EnvError(f"{name} must be an integer >= {minimum}, got {name}={value!r}")
    return int(value)


def check_real(name: str, value: object, *, minimum: float | None = None, positive: bool = False) -> float:
    """``value`` as a float, or :class:`EnvError` unless it is a finite real number (``>=
    minimum`` when given, ``> 0`` with ``positive``)."""
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not np.isfinite(value)
        or (minimum is not None and value < minimum)
        or (positive and not value > 0)
    ):
        bound = " > 0" if positive else "" if minimum is None else f" >= {minimum:g}"
        raise EnvError(f"{name} must be a finite number{bound}, got {name}={value!r}")
    return float(value)


def check_flag(name: str, value: object) -> bool:
    """``value`` as a bool, or :class:`EnvError` unless it is ``True`` or ``False``."""
    if not isinstance(value, (bool, np.bool_)):
        raise EnvError(f"{name} must be True or False, got {name}={value!r}")
    return bool(value)


def check_render_mode(render_mode: str | None) -> None:
    """The array families draw nothing; only ``render_mode=None`` is accepted."""
    if render_mode is not None:
        raise EnvError(f"unknown render_mode {render_mode!r}; valid render modes: None")


def check_task(task: object, family: str, shapes: dict[str, tuple[int, ...]]) -> None:
    """Raise :class:`EnvError` unless ``task`` is a :class:`Task` of ``family`` whose parameters
    have the given shapes."""
    if not isinstance(task, Task):
        raise EnvError(f"expected a Task of {family!r}, got {type(task).__name__}")
    if task.family != family:
        raise EnvError(f"task {task} belongs to {task.family!r}, not to {family!r}")
    for name, shape in shapes.items():
        value = task.get(name)
        if value is None or np.shape(value) != shape:
            got = "missing" if value is None else f"shape {np.shape(value)}"
            raise EnvError(f"task {task} parameter {name!r} must have shape {shape}, got {got}")


def preset_factory(
    cls: type[TaskDistribution], preset: str, **defaults: Any
) -> Callable[..., TaskDistribution]:
    """A registry factory: ``cls(preset=preset, **defaults)`` with keyword overrides checked.

    Raises (when called):
        EnvError: an override that ``cls`` does not take; the message lists the valid ones.
    """
    valid = {
        name
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "preset"
    }

    @functools.wraps(cls, updated=())
    def factory(**overrides: Any) -> TaskDistribution:
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise EnvError(
                f"unknown option {unknown[0]!r} for {cls.__name__}[{preset}]; valid options: {choices(valid)}"
            )
        return cls(preset=preset, **{**defaults, **overrides})

    return factory


#: Test lists already built, keyed by everything that determines them.
_TEST_POOLS: dict[
    tuple[Any, ...], tuple[tuple[Task, ...], frozenset[tuple[tuple[str, Any], ...]]]
] = {}


class HeldOutDistribution(TaskDistribution):
    """Train/test rule of the continuous families: held-out draws from a fixed seed.

    The test split is a fixed list of ``num_test_tasks`` draws made by :meth:`_test_generator`
    (a seed owned by the distribution). ``sample(n, split="test", rng)`` picks ``n`` distinct
    entries of that list with ``rng``; ``sample(n, split="train", rng)`` makes fresh i.i.d.
    draws with ``rng`` and redraws any that equal a test task, so the splits are disjoint by
    construction. Train tasks are indexed by their draw number within the call, test tasks by
    their position in the test list.

    Subclasses set ``name``, ``preset`` and the spaces and implement :meth:`_draw`,
    :meth:`_test_generator` and :meth:`_pool_config`.
    """

    def __init__(self, *, num_test_tasks: int) -> None:
        if (
            isinstance(num_test_tasks, bool)
            or not isinstance(num_test_tasks, (int, np.integer))
            or num_test_tasks <= 0
        ):
            raise EnvError(f"num_test_tasks must be a positive integer, got {num_test_tasks!r}")
        self.num_test_tasks = int(num_test_tasks)
        self._test_tasks: tuple[Task, ...] | None = None
        self._test_params: frozenset[tuple[tuple[str, Any], ...]] = frozenset()

    @abc.abstractmethod
    def _draw(self, rng: Any, n: int) -> list[dict[str, Any]]:
        """``n`` i.i.d. task parameter dicts drawn with ``rng``."""

    @abc.abstractmethod
    def _test_generator(self) -> Any:
        """A freshly seeded generator that :meth:`_draw` uses to make the test list."""

    @abc.abstractmethod
    def _pool_config(self) -> tuple[Any, ...]:
        """The settings that determine the test list (besides name, preset and its size)."""

    def test_tasks(self) -> list[Task]:
        """Every held-out test task, in index order."""
        if self._test_tasks is None:
            key = (type(self), self.name, self.preset, self.num_test_tasks, self._pool_config())
            if key not in _TEST_POOLS:
                # The list is a pure function of the key; caching it makes rebuilding a
                # distribution (gymnasium.make, config reloads) cheap.
                params = self._draw(self._test_generator(), self.num_test_tasks)
                tasks = tuple(
                    Task.make(self.name, self.preset, "test", i, **p) for i, p in enumerate(params)
                )
                _TEST_POOLS[key] = (tasks, frozenset(t.params for t in tasks))
            self._test_tasks, self._test_params = _TEST_POOLS[key]
        return list(self._test_tasks)

    def sample(self, n: int, *, split: str = "train", rng: np.random.Generator) -> list[Task]:
        """Draw ``n`` tasks of ``split`` with ``rng`` (see the class docstring for the rule).

        Raises:
            EnvError: ``n`` not a positive integer, an unknown split, ``rng`` not a numpy
                Generator, or more test tasks asked for than the test list holds.
        """
        n = check_num_tasks(n)
        check_split(split)
        check_rng(rng)
        pool = self.test_tasks()
        if split == "test":
            if n > len(pool):
                raise EnvError(
                    f"asked for n={n} distinct test tasks but the test pool holds {len(pool)}; "
                    f"build the distribution with num_test_tasks>={n}"
                )
            picked = rng.choice(len(pool), size=n, replace=False)
            return [pool[int(i)] for i in picked]
        tasks: list[Task] = []
        while len(tasks) < n:
            for params in self._draw(rng, n - len(tasks)):
                task = Task.make(self.name, self.preset, "train", len(tasks), **params)
                if task.params not in self._test_params:
                    tasks.append(task)
        return tasks


class ArrayBatchedEnv(BatchedEnv):
    """Bookkeeping shared by the array batched envs: validation, masks, per-slot time limits.

    Autoreset is disabled. A slot whose episode ended (terminated or past its time limit) keeps
    going when stepped again: its dynamics run on, its step count grows and ``truncated`` stays
    true until ``reset(mask=...)`` restarts it. Subclasses hold their state in arrays with the
    slot axis first and implement :meth:`_bind`, :meth:`_reset_slots`, :meth:`_transition` and
    :meth:`_observe` without a Python loop over slots.

    Args:
        tasks: one task per slot.
        observation_space, action_space: the single-slot spaces.
        max_episode_steps: the time limit H applied to every slot.
        random_width: uniforms per slot per step the dynamics draw (0 for deterministic
            families); when positive, each slot owns a :class:`CounterStreams` stream seeded by
            :meth:`reset`.
    """

    def __init__(
        self,
        tasks: Sequence[Task],
        *,
        observation_space: gym.Space,
        action_space: gym.Space,
        max_episode_steps: int,
        random_width: int = 0,
    ) -> None:
        tasks = list(tasks)
        if not tasks:
            raise EnvError("a batched env needs at least one task, got 0")
        self.num_slots = len(tasks)
        self.single_observation_space = observation_space
        self.single_action_space = action_space
        self.max_episode_steps = int(max_episode_steps)
        self.elapsed_steps = np.zeros(self.num_slots, dtype=np.int64)
        self._started = np.zeros(self.num_slots, dtype=bool)
        self._streams = CounterStreams(self.num_slots, width=random_width) if random_width else None
        # Keys for slots reset without a seed come from fresh OS entropy, never a global RNG.
        self._entropy = np.random.default_rng()
        self.tasks: tuple[Task, ...] = ()
        self.set_tasks(tasks)

    def set_tasks(self, tasks: Sequence[Task]) -> None:
        """Bind slot ``i`` to ``tasks[i]``; episodes in the new tasks start at the next reset."""
        tasks = list(tasks)
        if len(tasks) != self.num_slots:
            raise EnvError(
                f"set_tasks needs {self.num_slots} tasks, one per slot, got {len(tasks)}"
            )
        self._bind(tasks)
        self.tasks = tuple(tasks)

    def reset(
        self, *, seed: int | Sequence[int] | None = None, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset the slots in ``mask`` (all when ``None``); returns ``(obs[B, ...], {})``.

        ``seed`` seeds the reward/transition streams of random families (slot ``i`` gets
        ``seed + i`` for an int seed, or the given per-slot seed; only masked slots are
        reseeded); without a seed a slot's stream continues.
        """
        m = reset_mask(mask, self.num_slots)
        # Seeds are validated even for deterministic families, so bad seeds fail everywhere.
        keys = None if seed is None else seed_key(slot_seeds(seed, self.num_slots))
        if self._streams is not None:
            if keys is not None:
                self._streams.seed(m, keys[m])
            self._streams.ensure_keyed(m, self._entropy)
        self.elapsed_steps[m] = 0
        self._started |= m
        self._reset_slots(m)
        return self._observe(), {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every slot; returns ``obs[B, ...], reward[B] float64, terminated[B], truncated[B],
        info`` where ``info["success"]`` is a ``[B]`` bool array for families that define it.

        Raises:
            EnvError: wrong action shape, NaN/inf or out-of-range actions, or a slot never reset.
        """
        acts = check_actions(actions, self.single_action_space, self.num_slots)
        if not self._started.all():
            raise EnvError(
                f"slot {int(np.argmin(self._started))} was never reset; call reset() before step()"
            )
        uniforms = self._streams.uniform() if self._streams is not None else None
        reward, terminated, success = self._transition(acts, uniforms)
        self.elapsed_steps += 1
        truncated = self.elapsed_steps >= self.max_episode_steps
        info: dict[str, Any] = {} if success is None else {"success": success}
        return self._observe(), reward.astype(np.float64), terminated, truncated, info

    @abc.abstractmethod
    def _bind(self, tasks: list[Task]) -> None:
        """Validate ``tasks`` and store their parameters as ``[B, ...]`` arrays."""

    @abc.abstractmethod
    def _reset_slots(self, mask: np.ndarray) -> None:
        """Put the slots in ``mask[B]`` at their start state."""

    @abc.abstractmethod
    def _transition(
        self, actions: np.ndarray, uniforms: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Advance every slot; returns ``reward[B]``, ``terminated[B]`` bool and ``success[B]``
        bool (or ``None``). ``uniforms`` is ``[B, random_width]`` in (0, 1) or ``None``."""

    @abc.abstractmethod
    def _observe(self) -> np.ndarray:
        """A new ``[B, *obs_shape]`` float32 array of the current observations."""
