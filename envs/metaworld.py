"""Meta-World ML1, ML10 and ML45 task distributions (Yu et al., CoRL 2019; Meta-World 3.1.1, v3 envs).

The tasks, splits and goals are Meta-World's own: a distribution builds ``metaworld.ML1(name,
seed)``, ``metaworld.ML10(seed)`` or ``metaworld.ML45(seed)`` and wraps each of the benchmark's
``train_tasks`` / ``test_tasks`` in a :class:`~metarl.types.Task` holding the task's env name and
Meta-World's pickled task bytes unchanged (``task["env_name"]``, ``task["data"]``).

Train/test rule (finite disjoint sets, reference/papers.md §5.1):

- ML1 (one preset per env, e.g. ``push-v3``): one env class; 50 train goals drawn with the
  benchmark seed ``s`` and 50 test goals drawn with ``s + 1``. Consequence of Meta-World's rule:
  the *train* goals of seed ``s + 1`` are the *test* goals of seed ``s``, so never compare runs
  across neighbouring benchmark seeds.
- ML10 (preset ``v3``): 10 train env classes and 5 test env classes, 50 goals each
  (500 / 250 tasks).
- ML45 (preset ``v3``): 45 train env classes and 5 test env classes, 50 goals each
  (2250 / 250 tasks).

Meta-World draws the goals with numpy's global RNG, seeded with the benchmark seed and restored
afterwards; the benchmark is built under a lock, once per (benchmark, env, seed) and process, on
the first call that needs its goals (ML45 takes tens of seconds). Nothing here draws from the
global RNG.

Episodes: ``max_episode_steps = 500`` (Meta-World's ``max_path_length``); Meta-World itself
truncates at that step and never terminates, so an episode ends by truncation only.
Observations are 39-d float64 (the goal entries are zero: goal hidden in ML benchmarks);
actions are 4-d in ``[-1, 1]`` (clipped, as Meta-World's position controller does).
``info["success"]`` is a bool every step; an episode succeeds when it is ``True`` at any step
(paper §4.3).

Determinism: once a task is set, Meta-World's reset places the objects and goal from the task's
frozen ``rand_vec`` and draws nothing, so ``reset`` returns the same observation whatever its
seed; the seed only seeds the env's (unused) ``np_random`` and spaces. MuJoCo stepping is
deterministic, so a process-pool slot and a single env given the same task and actions give
identical transitions (tested).
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal

import gymnasium as gym
import metaworld
import metaworld.env_dict as mw_env_dict
import metaworld.types as mw_types
import numpy as np

from metarl.envs.base import check_actions
from metarl.envs.procpool import ProcessPoolBatchedEnv
from metarl.errors import EnvError, choices
from metarl.types import Task, TaskDistribution, check_num_tasks, check_split

__all__ = [
    "DEFAULT_PRESET",
    "FAMILIES",
    "MAX_PATH_LENGTH",
    "ML1_ENV_NAMES",
    "MetaWorldDistribution",
    "MetaWorldEnvFactory",
    "MetaWorldTaskEnv",
    "PRESETS",
    "SUMMARY",
]

#: family name -> Meta-World benchmark class name.
FAMILIES: dict[str, str] = {
    "metaworld-ml1": "ML1",
    "metaworld-ml10": "ML10",
    "metaworld-ml45": "ML45",
}

#: The 50 Meta-World v3 env names, in Meta-World's order: the ML1 presets.
ML1_ENV_NAMES: tuple[str, ...] = tuple(mw_env_dict.ALL_V3_ENVIRONMENTS)

#: Meta-World's episode horizon (``SawyerXYZEnv.max_path_length``).
MAX_PATH_LENGTH = 500

REWARD_FUNCTION_VERSIONS: tuple[str, ...] = ("v1", "v2")

_SPLIT_CLASSES: dict[str, dict[str, Any]] = {
    "ML10": mw_env_dict.ML10_V3,
    "ML45": mw_env_dict.ML45_V3,
}

_BENCHMARK_LOCK = threading.Lock()

#: ``make_batched`` options passed on to :class:`~metarl.envs.procpool.ProcessPoolBatchedEnv`.
_POOL_OPTIONS: tuple[str, ...] = ("start_timeout", "max_restarts", "restart_backoff", "start_method")


@functools.lru_cache(maxsize=8)
def _build_benchmark(benchmark: str, env_name: str | None, seed: int) -> metaworld.Benchmark:
    if benchmark == "ML1":
        return metaworld.ML1(env_name, seed=seed)
    return getattr(metaworld, benchmark)(seed=seed)


def _load_benchmark(benchmark: str, env_name: str | None, seed: int) -> metaworld.Benchmark:
    """Meta-World's benchmark object, built once per process; the lock serialises Meta-World's
    seeding of numpy's global RNG (it saves and restores the global state around its draws)."""
    with _BENCHMARK_LOCK:
        return _build_benchmark(benchmark, env_name, seed)


class MetaWorldTaskEnv(gym.Wrapper):
    """A Meta-World env bound to one task, made a well-behaved ``gymnasium.Env``.

    - ``reset(seed=s)`` seeds the env's ``np_random`` and spaces (Meta-World's own reset ignores
      its seed argument; its reset is deterministic given the task anyway);
    - actions of the wrong shape or not finite raise :class:`~metarl.errors.EnvError`; the
      others are clipped to ``[-1, 1]``;
    - ``info["success"]`` is a bool (Meta-World reports 0.0/1.0) and the reward a float.

    Attributes:
        task: the metarl task the env is bound to.
    """

    def __init__(self, env: gym.Env, task: Task):
        super().__init__(env)
        self.task = task

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            self.env.unwrapped.seed(seed)
        return self.env.reset(seed=seed, options=options)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        # Refused like the process pool refuses them: MuJoCo would reset the simulation on a NaN.
        action = check_actions(np.asarray(action)[None], self.action_space, 1)[0]
        action = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        obs, reward, terminated, truncated, info = self.env.step(action)
        info = dict(info)
        info["success"] = bool(info.get("success", 0.0))
        return obs, float(reward), bool(terminated), bool(truncated), info


def _metaworld_task(task: Task) -> mw_types.Task:
    return mw_types.Task(env_name=task["env_name"], data=task["data"])


@dataclasses.dataclass(frozen=True)
class MetaWorldEnvFactory:
    """Picklable ``task -> gymnasium.Env`` for Meta-World tasks (used inside pool workers).

    The env is ``TimeLimit(MetaWorldTaskEnv(<Meta-World v3 env with set_task applied>))``.
    """

    #: Episode horizon; Meta-World's own ``max_path_length`` is set to it too.
    max_episode_steps: int = MAX_PATH_LENGTH
    #: Meta-World's reward version: ``"v2"`` (default in 3.x) or ``"v1"``.
    reward_function_version: str = "v2"
    #: gymnasium render mode passed to the env, or ``None``.
    render_mode: str | None = None
    #: Tells the process pool that ``info["success"]`` comes every step.
    has_success: bool = True

    def __call__(self, task: Task) -> gym.Env:
        env_cls = mw_env_dict.ALL_V3_ENVIRONMENTS[task["env_name"]]
        raw = env_cls(reward_function_version=self.reward_function_version, render_mode=self.render_mode)
        raw.max_path_length = self.max_episode_steps
        raw.set_task(_metaworld_task(task))
        return gym.wrappers.TimeLimit(MetaWorldTaskEnv(raw, task), max_episode_steps=self.max_episode_steps)

    def rebind(self, env: gym.Env, task: Task) -> bool:
        """Apply ``set_task`` in place when ``env`` already runs ``task``'s env class."""
        raw = env.unwrapped
        if type(raw) is not mw_env_dict.ALL_V3_ENVIRONMENTS[task["env_name"]]:
            return False
        raw.set_task(_metaworld_task(task))
        inner = env
        while isinstance(inner, gym.Wrapper):
            if isinstance(inner, MetaWorldTaskEnv):
                inner.task = task
            inner = inner.env
        return True


class MetaWorldDistribution(TaskDistribution):
    """Meta-World ML1 / ML10 / ML45 under one preset (module docstring: splits, episodes).

    Args:
        family: ``"metaworld-ml1"``, ``"metaworld-ml10"`` or ``"metaworld-ml45"``.
        preset: the ML1 env name (e.g. ``"push-v3"``), or ``"v3"`` for ML10/ML45.
        seed: Meta-World's benchmark seed, which fixes the goal lists (ML1 test goals use
            ``seed + 1``).
        max_episode_steps: the horizon H (Meta-World: 500).
        episodes_per_trial: default episodes per trial (RL²-style trials set e.g. 10).
        reward_function_version: Meta-World's ``"v2"`` (default) or ``"v1"`` rewards
            (Meta-World+, reference/papers.md §6).

    Raises:
        EnvError: unknown family, preset or reward version, or a bad number.
    """

    has_success = True

    def __init__(
        self,
        family: str,
        preset: str,
        *,
        seed: int = 0,
        max_episode_steps: int = MAX_PATH_LENGTH,
        episodes_per_trial: int = 1,
        reward_function_version: Literal["v1", "v2"] = "v2",
    ):
        if family not in FAMILIES:
            raise EnvError(f"unknown Meta-World family {family!r}; valid families: {choices(FAMILIES)}")
        valid_presets = ML1_ENV_NAMES if family == "metaworld-ml1" else ("v3",)
        if preset not in valid_presets:
            raise EnvError(f"unknown preset {preset!r} for env {family!r}; valid presets: {choices(valid_presets)}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32 - 1:
            raise EnvError(f"Meta-World benchmark seed must be an integer in [0, 2**32 - 1), got seed={seed!r}")
        for name, value in (("max_episode_steps", max_episode_steps), ("episodes_per_trial", episodes_per_trial)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise EnvError(f"{name} must be a positive integer, got {value!r}")
        if reward_function_version not in REWARD_FUNCTION_VERSIONS:
            raise EnvError(
                f"unknown reward_function_version {reward_function_version!r}; valid versions: {choices(REWARD_FUNCTION_VERSIONS)}"
            )
        self.name = family
        self.preset = preset
        self.benchmark = FAMILIES[family]
        self.seed = int(seed)
        self.max_episode_steps = int(max_episode_steps)
        self.episodes_per_trial = int(episodes_per_trial)
        self.reward_function_version = reward_function_version
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        self._tasks: dict[str, list[Task]] = {}

    # ----------------------------------------------------------------- splits and tasks

    def env_names(self, split: str) -> tuple[str, ...]:
        """The Meta-World env classes of ``split``, in Meta-World's order (no env is built)."""
        check_split(split)
        if self.benchmark == "ML1":
            return (self.preset,)
        return tuple(_SPLIT_CLASSES[self.benchmark][split])

    def tasks(self, split: str, *, goals_per_class: int | None = None) -> list[Task]:
        """Every task of ``split`` in Meta-World's order (class-major, 50 goals per class).

        Args:
            split: ``"train"`` or ``"test"``.
            goals_per_class: keep only the first k goals of each class, as Meta-World's
                ``total_tasks_per_cls`` does (its evaluation uses 40 for ML10 and 45 for ML45
                test classes); ``None`` keeps all.
        """
        check_split(split)
        if split not in self._tasks:
            bench = _load_benchmark(self.benchmark, self.preset if self.benchmark == "ML1" else None, self.seed)
            mw_tasks = bench.train_tasks if split == "train" else bench.test_tasks
            self._tasks[split] = [
                Task.make(self.name, self.preset, split, i, env_name=t.env_name, data=t.data) for i, t in enumerate(mw_tasks)
            ]
        if goals_per_class is None:
            return list(self._tasks[split])
        k = check_num_tasks(goals_per_class)
        return [t for of_class in self._by_class(split) for t in of_class[:k]]

    def _by_class(self, split: str) -> list[list[Task]]:
        """The tasks of ``split`` grouped by env class, classes in Meta-World's order."""
        tasks = self.tasks(split)
        return [[t for t in tasks if t["env_name"] == name] for name in self.env_names(split)]

    def sample(self, n: int, *, split: str = "train", rng: np.random.Generator) -> list[Task]:
        """Draw ``n`` tasks of ``split`` with ``rng``, balanced over env classes.

        Classes are dealt round-robin: each round is a fresh random permutation of the split's
        classes, so every class appears ``floor(n / C)`` or ``ceil(n / C)`` times and, when
        ``n < C``, a random subset of classes appears once. Within a class, goals are drawn
        without replacement (a fresh permutation of its 50 goals whenever they run out). ML1 has
        one class, so its draw is a random permutation of its 50 goals. The tasks come out in
        the order the classes were dealt.

        Raises:
            EnvError: ``n`` not a positive integer, an unknown split, or ``rng`` not a
                ``numpy.random.Generator``.
        """
        check_split(split)
        n = check_num_tasks(n)
        if not isinstance(rng, np.random.Generator):
            raise EnvError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        by_class = self._by_class(split)
        num_classes = len(by_class)
        rounds = -(-n // num_classes)
        class_seq = np.concatenate([rng.permutation(num_classes) for _ in range(rounds)])[:n]
        picks: dict[int, list[int]] = {}
        for c in range(num_classes):
            need = int(np.count_nonzero(class_seq == c))
            size = len(by_class[c])
            if need:
                order = np.concatenate([rng.permutation(size) for _ in range(-(-need // size))])
                picks[c] = order[:need].tolist()
        out = []
        for c in class_seq.tolist():
            out.append(by_class[c][picks[c].pop(0)])
        return out

    # ----------------------------------------------------------------- envs

    @functools.cached_property
    def observation_space(self) -> gym.Space:  # type: ignore[override]
        """The 39-d observation space (the same for every v3 env class)."""
        env = mw_env_dict.ALL_V3_ENVIRONMENTS[self.env_names("train")[0]]()
        try:
            return env.observation_space
        finally:
            env.close()

    def env_factory(self, *, render_mode: str | None = None) -> MetaWorldEnvFactory:
        """The picklable env factory the process pool runs in its workers."""
        return MetaWorldEnvFactory(
            max_episode_steps=self.max_episode_steps,
            reward_function_version=self.reward_function_version,
            render_mode=render_mode,
        )

    def _check_task(self, task: object) -> Task:
        if not isinstance(task, Task):
            raise EnvError(f"expected a metarl Task of {self.name!r}, got {type(task).__name__}")
        if task.family != self.name:
            raise EnvError(f"task {task} is of env {task.family!r}, not {self.name!r}")
        valid = set(self.env_names("train")) | set(self.env_names("test"))
        env_name = task.get("env_name")
        if env_name not in valid or not isinstance(task.get("data"), bytes):
            raise EnvError(f"task {task} has env_name {env_name!r}; valid env names for {self.name}[{self.preset}]: {choices(valid)}")
        return task

    def make_env(self, task: Task, *, render_mode: str | None = None, **kwargs: Any) -> gym.Env:
        """A plain ``gymnasium.Env``: the Meta-World env with ``set_task(task)`` applied, the
        :class:`MetaWorldTaskEnv` fixes and ``TimeLimit(max_episode_steps)``."""
        if kwargs:
            raise EnvError(f"unknown make_env options {sorted(kwargs)}; valid options: 'render_mode'")
        return self.env_factory(render_mode=render_mode)(self._check_task(task))

    def make_batched(
        self,
        tasks: Sequence[Task],
        *,
        num_workers: int | None = None,
        timeout: float = 60.0,
        **pool_kwargs: Any,
    ) -> ProcessPoolBatchedEnv:
        """A :class:`~metarl.envs.procpool.ProcessPoolBatchedEnv` with one slot per task.

        Args:
            tasks: tasks of this distribution.
            num_workers: worker processes (default ``os.cpu_count()``).
            timeout: seconds before a worker that does not answer counts as hung.
            **pool_kwargs: further :class:`~metarl.envs.procpool.ProcessPoolBatchedEnv`
                options (``start_timeout``, ``max_restarts``, ``restart_backoff``,
                ``start_method``).
        """
        unknown = sorted(set(pool_kwargs) - set(_POOL_OPTIONS))
        if unknown:
            valid = ("num_workers", "timeout", *_POOL_OPTIONS)
            raise EnvError(f"unknown option {unknown[0]!r} for make_batched; valid options: {choices(valid)}")
        checked = [self._check_task(t) for t in tasks]
        return ProcessPoolBatchedEnv(
            self.env_factory(), checked, num_workers=num_workers, timeout=timeout, has_success=True, **pool_kwargs
        )

    def describe(self) -> str:
        train, test = self.env_names("train"), self.env_names("test")
        if self.benchmark == "ML1":
            layout = "50 train goals, 50 test goals"
        else:
            layout = f"{len(train)} train / {len(test)} test env classes, 50 goals each"
        return (
            f"{self.name}[{self.preset}]: Meta-World {self.benchmark} v3, {layout}, benchmark seed {self.seed}, "
            f"reward {self.reward_function_version}, H={self.max_episode_steps}, episodes_per_trial={self.episodes_per_trial}, success flag"
        )


_OPTIONS = ("seed", "max_episode_steps", "episodes_per_trial", "reward_function_version")


def _preset(family: str, preset: str) -> Callable[..., MetaWorldDistribution]:
    def make(**overrides: Any) -> MetaWorldDistribution:
        unknown = sorted(set(overrides) - set(_OPTIONS))
        if unknown:
            raise EnvError(f"unknown option {unknown[0]!r} for env {family!r}; valid options: {choices(_OPTIONS)}")
        return MetaWorldDistribution(family, preset, **overrides)

    make.__doc__ = f"Meta-World {FAMILIES[family]} preset {preset!r}; options: {', '.join(_OPTIONS)}."
    return make


PRESETS: dict[str, dict[str, Callable[..., MetaWorldDistribution]]] = {
    "metaworld-ml1": {name: _preset("metaworld-ml1", name) for name in ML1_ENV_NAMES},
    "metaworld-ml10": {"v3": _preset("metaworld-ml10", "v3")},
    "metaworld-ml45": {"v3": _preset("metaworld-ml45", "v3")},
}

DEFAULT_PRESET: dict[str, str] = {
    "metaworld-ml1": "push-v3",
    "metaworld-ml10": "v3",
    "metaworld-ml45": "v3",
}

SUMMARY: dict[str, str] = {
    "metaworld-ml1": "Meta-World ML1: one v3 env, 50 train / 50 test goals (preset = env name); H=500, success flag",
    "metaworld-ml10": "Meta-World ML10: 10 train / 5 test v3 env classes, 50 goals each; H=500, success flag",
    "metaworld-ml45": "Meta-World ML45: 45 train / 5 test v3 env classes, 50 goals each; H=500, success flag",
}
