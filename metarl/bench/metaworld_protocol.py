"""Meta-World's own metalearning_evaluation against our evaluate() under its protocol, on ML1.

``metarl bench metaworld-protocol --json`` evaluates one agent on the first ``--goals`` test goals
of a Meta-World ML1 benchmark in two ways and compares the success rates:

- ``ours``: :func:`metarl.metaworld_eval.metaworld_protocol` (our ``evaluate()`` with episode
  quotas ``[10, 3]``): per goal, 10 adaptation episodes, one adaptation, 3 evaluation episodes of
  500 steps; an episode succeeds when the success flag is set at any step. The goals are
  ``dist.tasks("test", goals_per_class=G)``, one slot each, stepped by our process pool.
- ``metaworld_mbs<M>``, one per ``--meta-batch-sizes`` entry: Meta-World's own
  ``metaworld.evaluation.metalearning_evaluation`` driving the agent through
  :class:`metarl.metaworld_eval.MetaWorldAgent`, on Meta-World's own test envs
  ``gymnasium.make_vec("Meta-World/ML1-test", env_name=PRESET, seed=S, meta_batch_size=M,
  total_tasks_per_cls=G)``. Meta-World builds ``ML1(PRESET, seed=S)`` as our distribution does,
  so its G goals are ours (matched by their task bytes, reported per evaluation). Each of its M
  envs holds G/M goals and its pseudo-random task selector cycles through them, so P·G/M
  evaluations adapt P times on every goal: P = 1 for M = 1 (each goal once, as ours), P =
  ``--pooled-passes`` for M > 1 (Meta-World's own ML1 default is 5: ``num_evals=10`` with M = 20
  and 40 goals). The evaluations are run one per call (``num_evals=1``, P·G/M calls: the same
  sequence of env calls as one call with ``num_evals=P·G/M``) to keep each one's score and
  goals.

How Meta-World counts (metaworld 3.1.1, ``evaluation.py``): after adaptation it turns on
terminate-on-success, groups its envs by env class and scores, per class, the first 3 episodes to
*end*. On ML1 all M envs are one class, so M=1 scores that env's 3 episodes (exactly our count
for that goal), while M=20 (Meta-World's default) scores the 3 earliest finishers among 20 envs:
a success ends an episode early, so whenever 3 of the 20 goals succeed before step 500 the
evaluation scores 3/3. ``prediction`` applies that rule to the M=1 layout's recorded episodes
(their lengths and successes) in 10,000 simulated M-layout runs and says whether the M>1 score is
what the early-finisher rule predicts. Each simulated run resamples the goals twice (a population
that could have given the M=1 episodes, then the run's goals from it), so ``range95`` holds the
noise of both; a gradient agent's episodes on one goal are exchangeable and are shuffled.

Statistics. Intervals are 95% BCa bootstrap intervals over units
(:func:`metarl.evaluation.bootstrap_ci`): goals for ``ours`` and M=1, evaluations for M>1. The
episodes of one goal share its adapted parameters, so they are not independent draws and an
episode-level binomial (Wilson) interval would be too narrow. Ours against M=1 is paired by goal:
the difference's interval is a bootstrap over per-goal differences and its p-value a paired
permutation test (sign flips, ``scipy.stats.permutation_test``); against M>1 the test is a
two-sample permutation test of per-evaluation scores against our per-goal rates.
``within_sampling_error`` is ``p_value >= 0.05``.

The agent is the latest checkpoint of ``--run`` (its config fixes env, preset and agent), or an
untrained ``--agent`` with its default config, seeded by ``--seed``. The default preset is
``drawer-close-v3``: an untrained MAML-TRPO (policy std 1) succeeds in 10-15% of its episodes
there, but in none of 30 on ``reach-v3`` (nor with ``init_log_std`` 1), and 0% against 0% tells
nothing.

Cost: (10 + 3) × 500 env steps per goal and visit. The defaults (40 goals, M = 1 and 20, 2
passes at M = 20) step about 1M env steps: 13.5 minutes with one torch thread and one env worker
on a loaded 2-core machine (docs/metaworld-protocol.md has the measured figures).
``--max-episode-steps``, ``--adaptation-episodes`` and ``--evaluation-episodes`` shrink the
protocol for quick checks only (protocol: 500, 10, 3).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import scipy.stats
import torch

from metarl.errors import ConfigError, choices
from metarl.evaluation import bootstrap_ci
from metarl.seeding import derive_seed, numpy_rng
from metarl.types import Agent, Task

__all__ = ["add_arguments", "run", "first_finishers_rate"]

_ENVS = ("metaworld-ml1",)
_DEFAULT_PRESET = "drawer-close-v3"
#: Meta-World's ML1 test goals per class.
_MAX_GOALS = 50
_PREDICTION_DRAWS = 10_000
_PERMUTATIONS = 9_999
_ALPHA = 0.05


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``metarl bench metaworld-protocol``."""
    parser.add_argument(
        "--env",
        default=None,
        help="task distribution (default: metaworld-ml1, the only one supported)",
    )
    parser.add_argument(
        "--preset",
        default=None,
        help=f"ML1 env name (default: {_DEFAULT_PRESET}; see the text above)",
    )
    parser.add_argument(
        "--run",
        default=None,
        metavar="RUN_DIR",
        help="a trained run: its config and latest checkpoint",
    )
    parser.add_argument(
        "--agent", default="maml-trpo", help="untrained agent when no --run (default: maml-trpo)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the untrained agent, our sampler and the prediction (default: 0)",
    )
    parser.add_argument(
        "--deterministic", action="store_true", help="act with the policy's mode on both sides"
    )
    parser.add_argument(
        "--goals",
        type=int,
        default=40,
        help="first G test goals (default: 40, Meta-World's total_tasks_per_cls)",
    )
    parser.add_argument(
        "--meta-batch-sizes",
        type=int,
        nargs="+",
        default=[1, 20],
        help="Meta-World test-env layouts M, each dividing --goals (default: 1 20; 20 is Meta-World's default)",
    )
    parser.add_argument(
        "--pooled-passes",
        type=int,
        default=2,
        help="visits of every goal in the layouts with M > 1 (default: 2; Meta-World's own "
        "ML1 default, num_evals=10 with M=20 and 40 goals, is 5)",
    )
    parser.add_argument(
        "--adaptation-episodes",
        type=int,
        default=10,
        help="episodes before adapting (protocol: 10)",
    )
    parser.add_argument(
        "--evaluation-episodes",
        type=int,
        default=3,
        help="scored episodes after adapting (protocol: 3)",
    )
    parser.add_argument(
        "--max-episode-steps",
        type=int,
        default=None,
        help="episode horizon, at most 500 (protocol and default: 500)",
    )
    parser.add_argument(
        "--env-workers",
        type=int,
        default=1,
        help="worker processes of our process pool (default: 1)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")


# --------------------------------------------------------------------------------------------
# The agent and its distribution


def _load_run(run_dir: str) -> tuple[Any, Any, str, str]:
    """``(dist, agent, agent name, source)`` of a trained run, as ``metarl evaluate`` loads it."""
    from metarl.checkpoint import CheckpointDir, restore_agent
    from metarl.cli import CONFIG_NAME, _build, _check_run_dir, _load
    from metarl.trainer import CHECKPOINT_DIR, resolve_device

    path = Path(run_dir)
    _check_run_dir(path)
    config = _load(path / CONFIG_NAME, [], None, default_name=None)
    ckpt_path, state = CheckpointDir(
        path / CHECKPOINT_DIR, keep=config.run.keep_checkpoints
    ).load_latest()
    dist, agent = _build(config, device=resolve_device(config.run.device))
    restore_agent(agent, state, ckpt_path)
    return dist, agent, config.agent.name, str(ckpt_path)


def _setup(args: argparse.Namespace) -> tuple[Any, Agent, str, str]:
    """The distribution and agent the bench evaluates (raises on bad input before any work)."""
    from metarl import registry

    if args.run is not None:
        if args.max_episode_steps is not None:
            raise ConfigError(
                "--max-episode-steps cannot be combined with --run (the run's env config sets the horizon)"
            )
        dist, agent, name, source = _load_run(args.run)
        for option, given, actual in (
            ("--env", args.env, dist.name),
            ("--preset", args.preset, getattr(dist, "preset", None)),
        ):
            if given is not None and given != actual:
                raise ConfigError(
                    f"{option} {given!r} differs from the run's {actual!r}; leave it out with --run"
                )
        if dist.name not in _ENVS:
            raise ConfigError(
                f"run {args.run!r} trained on env {dist.name!r}; valid envs: {choices(_ENVS)}"
            )
        return dist, agent, name, source
    env = "metaworld-ml1" if args.env is None else args.env
    if env not in _ENVS:
        raise ConfigError(f"unknown --env {env!r} for this bench; valid envs: {choices(_ENVS)}")
    kwargs = {} if args.max_episode_steps is None else {"max_episode_steps": args.max_episode_steps}
    dist = registry.make_env(env, _DEFAULT_PRESET if args.preset is None else args.preset, **kwargs)
    cls = registry.agent_class(args.agent)
    agent = cls(
        cls.Config(), dist=dist, device=torch.device("cpu"), seed=derive_seed(args.seed, "agent")
    )
    return dist, agent, args.agent, f"untrained, default config, seed {args.seed}"


def _check_sizes(args: argparse.Namespace) -> None:
    for option, value in (
        ("--goals", args.goals),
        ("--adaptation-episodes", args.adaptation_episodes),
        ("--evaluation-episodes", args.evaluation_episodes),
        ("--pooled-passes", args.pooled_passes),
        ("--env-workers", args.env_workers),
        ("--threads", args.threads),
    ):
        if int(value) < 1:
            raise ConfigError(f"{option} must be a positive integer, got {value}")
    if args.goals > _MAX_GOALS:
        raise ConfigError(
            f"--goals must be at most {_MAX_GOALS} (Meta-World's test goals per class), got {args.goals}"
        )
    if args.max_episode_steps is not None and not 1 <= args.max_episode_steps <= 500:
        raise ConfigError(
            f"--max-episode-steps must lie in [1, 500] (Meta-World's max_path_length), got {args.max_episode_steps}"
        )
    for m in args.meta_batch_sizes:
        if m < 1 or args.goals % m:
            valid = [d for d in range(1, args.goals + 1) if args.goals % d == 0]
            raise ConfigError(
                f"--meta-batch-sizes entry {m} does not divide --goals {args.goals}; valid sizes: {', '.join(map(str, valid))}"
            )


# --------------------------------------------------------------------------------------------
# Meta-World's side


class _EvaluationRecorder:
    """Meta-World's vector env, passed through, noting how each evaluation-phase episode ended.

    ``metalearning_evaluation`` only uses ``call``, ``get_attr``, ``reset``, ``step`` and
    ``num_envs``. Its ``evaluation()`` turns terminate-on-success on at its start, which marks
    the evaluation phase here; the goals of the envs are read at that moment.

    Attributes:
        ends: ``(end step, env index, success, return)`` of every episode that ended during the
            last evaluation phase, in Meta-World's order (step, then env index).
        goal_data: the task bytes of each env's goal in the last evaluation phase.
    """

    def __init__(self, envs: gym.vector.VectorEnv) -> None:
        self.envs = envs
        self.num_envs = envs.num_envs
        self.evaluating = False
        self.ends: list[tuple[int, int, bool, float]] = []
        self.goal_data: list[bytes] = []
        self._t = 0

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "toggle_terminate_on_success":
            self.evaluating = bool(args[0] if args else kwargs["on"])
            if self.evaluating:
                self.ends, self._t = [], 0
                tasks, current = self.envs.get_attr("tasks"), self.envs.get_attr("current_task_idx")
                self.goal_data = [tasks[i][current[i]].data for i in range(self.num_envs)]
        return self.envs.call(name, *args, **kwargs)

    def get_attr(self, name: str) -> Any:
        return self.envs.get_attr(name)

    def reset(self, **kwargs: Any) -> Any:
        self._t = 0
        return self.envs.reset(**kwargs)

    def step(self, actions: np.ndarray) -> Any:
        out = self.envs.step(actions)
        if self.evaluating:
            self._t += 1
            final = out[4].get("final_info", {})
            for i in np.flatnonzero(np.logical_or(out[2], out[3])):
                self.ends.append(
                    (self._t, int(i), bool(final["success"][i]), float(final["episode"]["r"][i]))
                )
        return out

    def close(self) -> None:
        self.envs.close()


def first_finishers_rate(ends: Sequence[tuple[int, int, bool]], quota: int) -> float:
    """Meta-World's score of one evaluation of one env class: the success rate of the first
    ``quota`` episodes to end, ordered by end step and then env index (metaworld 3.1.1,
    ``evaluation.evaluation``).

    Args:
        ends: ``(end step, env index, success)`` of the ended episodes (extra fields ignored).
        quota: Meta-World's ``num_episodes`` (3 in ``metalearning_evaluation``).
    """
    first = sorted(ends, key=lambda e: (e[0], e[1]))[:quota]
    return sum(bool(e[2]) for e in first) / quota


def _metaworld_side(
    agent: Agent,
    dist: Any,
    goals: Sequence[Task],
    *,
    meta_batch_size: int,
    passes: int,
    adaptation_episodes: int,
    evaluation_episodes: int,
    deterministic: bool,
) -> dict[str, Any]:
    """Meta-World's ``metalearning_evaluation`` on its ML1 test envs, one evaluation per call."""
    from metaworld.evaluation import metalearning_evaluation

    from metarl.metaworld_eval import MetaWorldAgent

    index = {task["data"]: k for k, task in enumerate(goals)}
    start = time.perf_counter()
    envs = gym.make_vec(
        "Meta-World/ML1-test",
        env_name=dist.preset,
        seed=dist.seed,
        meta_batch_size=meta_batch_size,
        total_tasks_per_cls=len(goals),
        max_episode_steps=dist.max_episode_steps,
        reward_function_version=dist.reward_function_version,
    )
    recorder = _EvaluationRecorder(envs)
    wrapped = MetaWorldAgent(
        agent,
        action_space=envs.single_action_space,
        deterministic=deterministic,
        device=getattr(agent, "device", "cpu"),
    )
    scores, recounts, returns, eval_goals, ends = [], [], [], [], []
    try:
        for _ in range(passes * len(goals) // meta_batch_size):
            success, mean_return, _ = metalearning_evaluation(
                wrapped,
                recorder,
                num_evals=1,
                adaptation_steps=1,
                adaptation_episodes=adaptation_episodes,
                evaluation_episodes=evaluation_episodes,
            )
            missing = [d for d in recorder.goal_data if d not in index]
            if missing:
                raise ConfigError(
                    f"Meta-World's test env ran a goal that is not among our first {len(goals)} test goals of {dist.preset!r}"
                )
            scores.append(float(success))
            returns.append(float(mean_return))
            recounts.append(first_finishers_rate(recorder.ends, evaluation_episodes))
            eval_goals.append([index[d] for d in recorder.goal_data])
            ends.append([e[:3] for e in recorder.ends])
    finally:
        recorder.close()
    wall = time.perf_counter() - start
    return {
        "scores": np.asarray(scores),
        "recounts": np.asarray(recounts),
        "returns": np.asarray(returns),
        "goals": eval_goals,
        "ends": ends,
        "wall_s": wall,
    }


def _one_env_episodes(side: dict[str, Any], num_goals: int) -> tuple[np.ndarray, np.ndarray]:
    """``(lengths, successes)``, each ``[G, E]``: the scored episodes of every goal in an M=1
    layout, in the order they ran."""
    ends = np.zeros((num_goals, len(side["ends"][0])), dtype=np.int64)
    successes = np.zeros(ends.shape, dtype=bool)
    for (goal,), episodes in zip(side["goals"], side["ends"]):
        ends[goal] = [t for t, _, _ in episodes]
        successes[goal] = [s for _, _, s in episodes]
    return np.diff(ends, axis=1, prepend=0), successes


def _predict(
    lengths: np.ndarray,
    successes: np.ndarray,
    *,
    meta_batch_size: int,
    passes: int,
    quota: int,
    shuffle_episodes: bool,
    rng: np.random.Generator,
) -> np.ndarray:
    """Mean scores of simulated M-env layout runs, built from the episodes of an M=1 layout.

    Each draw resamples the goals twice with replacement: once for a population that could have
    given the M=1 episodes (their own sampling noise), once for the goals of one run of the M
    layout drawn from it (that run's noise). The run's goals are dealt into batches of M envs;
    each env plays its goal's episodes back to back (in a random order when
    ``shuffle_episodes``: a gradient agent's episodes on one goal are exchangeable) and each
    batch is scored by :func:`first_finishers_rate`, vectorised.

    Args:
        lengths, successes: ``[G, E]`` per goal, its episodes' lengths and successes.
        meta_batch_size: M, dividing G.
        passes: visits of every goal in the simulated run (its size is ``passes × G`` goals).
        quota: episodes scored per batch (Meta-World's ``evaluation_episodes``).
        shuffle_episodes: shuffle each goal's episodes in every draw.
        rng: the draws' generator.

    Returns:
        ``[draws]`` simulated mean scores.
    """
    num_goals, per_goal = lengths.shape
    draws, m = _PREDICTION_DRAWS, meta_batch_size
    population = rng.integers(0, num_goals, size=(draws, num_goals))
    run_goals = np.take_along_axis(
        population, rng.integers(0, num_goals, size=(draws, passes * num_goals)), axis=1
    )
    lens, succ = lengths[run_goals], successes[run_goals]  # [D, passes × G, E]
    if shuffle_episodes:
        order = np.argsort(rng.random(lens.shape), axis=-1)
        lens, succ = np.take_along_axis(lens, order, -1), np.take_along_axis(succ, order, -1)
    shape = (draws, passes * num_goals // m, m * per_goal)
    ends = np.cumsum(lens, axis=-1).reshape(shape)
    env = np.repeat(np.arange(m), per_goal)
    # Meta-World's order: end step, then env index
    first = np.argsort(ends * m + env, axis=-1, kind="stable")[..., :quota]
    return np.take_along_axis(succ.reshape(shape), first, axis=-1).sum(-1).mean(-1) / quota


# --------------------------------------------------------------------------------------------
# Our side


def _our_side(
    agent: Agent,
    dist: Any,
    goals: Sequence[Task],
    *,
    adaptation_episodes: int,
    evaluation_episodes: int,
    deterministic: bool,
    seed: int,
    workers: int,
) -> dict[str, Any]:
    from metarl.metaworld_eval import metaworld_protocol
    from metarl.sampler import Sampler

    start = time.perf_counter()
    sampler = Sampler(
        dist,
        seed=derive_seed(seed, "bench", "metaworld-protocol"),
        device=getattr(agent, "device", "cpu"),
        env_kwargs={"num_workers": workers},
    )
    try:
        report = metaworld_protocol(
            agent,
            sampler,
            goals,
            adaptation_episodes=adaptation_episodes,
            evaluation_episodes=evaluation_episodes,
            deterministic=deterministic,
        )
    finally:
        sampler.close()
    if report.successes is None:
        raise ConfigError(f"env {dist.name!r} reported no success flag")
    return {
        "per_goal": np.nanmean(report.successes[:, 1], axis=1),
        "return_mean": float(np.nanmean(report.returns[:, 1])),
        "wall_s": time.perf_counter() - start,
    }


# --------------------------------------------------------------------------------------------
# Statistics


def _mean_diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def _p_value(x: np.ndarray, y: np.ndarray, *, paired: bool, seed: int) -> float:
    """Two-sided permutation-test p-value of ``mean(x) - mean(y)``."""
    if np.all(np.concatenate([x, y]) == x[0]):
        return 1.0
    res = scipy.stats.permutation_test(
        (x, y),
        _mean_diff,
        permutation_type="samples" if paired else "independent",
        vectorized=True,
        n_resamples=_PERMUTATIONS,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return float(res.pvalue)


def _summary(values: np.ndarray, *, seed: int) -> dict[str, Any]:
    return {
        "success_rate": float(values.mean()),
        "success_ci95": list(bootstrap_ci(values, seed=seed)),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate the agent both ways and compare (prints nothing).

    Returns:
        ``{"problem": {...}, "ours": {...}, "metaworld_mbs<M>": {...} per layout,
        "comparison": {"mbs<M>": {...}}, "threads"}``. Each side has ``success_rate``,
        ``success_ci95``, ``num_goals``, ``num_scored_episodes``, ``wall_s``; Meta-World's sides
        also ``per_eval_success``, ``goals_per_eval`` (indices into our goal list),
        ``recount_matches`` (our re-count of its episodes gives its score) and, for M>1,
        ``prediction``. Each comparison has ``difference`` (Meta-World − ours), its
        ``p_value``, ``test`` and ``within_sampling_error``.

    Raises:
        ConfigError: an unsupported env, a bad size, a layout that does not divide the goals,
            or options that contradict ``--run``.
        EnvError: an unknown preset (the message lists the valid ones).
        CheckpointError: a bad run directory.
    """
    _check_sizes(args)
    torch.set_num_threads(int(args.threads))
    dist, agent, agent_name, source = _setup(args)
    goals = dist.tasks("test", goals_per_class=args.goals)
    quota, adapt_eps = int(args.evaluation_episodes), int(args.adaptation_episodes)
    common = {
        "adaptation_episodes": adapt_eps,
        "evaluation_episodes": quota,
        "deterministic": bool(args.deterministic),
    }

    ours = _our_side(agent, dist, goals, seed=args.seed, workers=int(args.env_workers), **common)
    result: dict[str, Any] = {
        "problem": {
            "env": dist.name,
            "preset": dist.preset,
            "benchmark_seed": dist.seed,
            "agent": agent_name,
            "agent_source": source,
            "goals": len(goals),
            **common,
            "max_episode_steps": dist.max_episode_steps,
            "interval": "95% BCa bootstrap over goals (ours, M=1) or evaluations (M>1): metarl.evaluation.bootstrap_ci",
        },
        "ours": {
            **_summary(ours["per_goal"], seed=0),
            "num_goals": len(goals),
            "num_scored_episodes": len(goals) * quota,
            "per_goal_success": ours["per_goal"].tolist(),
            "return_mean": ours["return_mean"],
            "wall_s": ours["wall_s"],
        },
    }
    comparison: dict[str, Any] = {}
    one_env: tuple[np.ndarray, np.ndarray] | None = None
    for m in sorted(set(args.meta_batch_sizes)):
        passes = 1 if m == 1 else int(args.pooled_passes)
        side = _metaworld_side(agent, dist, goals, meta_batch_size=m, passes=passes, **common)
        key = f"metaworld_mbs{m}"
        entry: dict[str, Any] = {
            **_summary(side["scores"], seed=m),
            "meta_batch_size": m,
            "passes": passes,
            "num_evals": len(side["scores"]),
            "num_goals": len(goals),
            "num_scored_episodes": len(side["scores"]) * quota,
            "per_eval_success": side["scores"].tolist(),
            "goals_per_eval": side["goals"],
            "recount_matches": bool(np.allclose(side["recounts"], side["scores"])),
            "return_mean": float(side["returns"].mean()),
            "wall_s": side["wall_s"],
        }
        if m == 1:
            # Pair Meta-World's evaluations with our goals (each goal is visited exactly once).
            per_goal = np.full(len(goals), np.nan)
            for (goal,), score in zip(side["goals"], side["scores"]):
                per_goal[goal] = score
            one_env = _one_env_episodes(side, len(goals))
            diff = per_goal - ours["per_goal"]
            comparison[f"mbs{m}"] = {
                "difference": float(diff.mean()),
                "difference_ci95": list(bootstrap_ci(diff, seed=7)),
                "p_value": _p_value(per_goal, ours["per_goal"], paired=True, seed=args.seed),
                "test": "paired permutation test over goals (sign flips of per-goal differences)",
            }
        else:
            comparison[f"mbs{m}"] = {
                "difference": float(side["scores"].mean() - ours["per_goal"].mean()),
                "p_value": _p_value(side["scores"], ours["per_goal"], paired=False, seed=args.seed),
                "test": "two-sample permutation test, per-evaluation scores against our per-goal rates",
            }
            if one_env is not None:
                draws = _predict(
                    *one_env,
                    meta_batch_size=m,
                    passes=passes,
                    quota=quota,
                    shuffle_episodes=agent.adaptation == "gradient",
                    rng=numpy_rng(args.seed, "bench", "pooled", m),
                )
                centre = float(draws.mean())
                observed = float(side["scores"].mean())
                # equal-tailed two-sided Monte-Carlo p-value (the draws are skewed and discrete)
                tol = 1e-9
                tails = (np.mean(draws <= observed + tol), np.mean(draws >= observed - tol))
                p = float(min(1.0, 2.0 * min(tails)))
                entry["prediction"] = {
                    "method": "Meta-World's first-finisher rule on the M=1 episodes, goals resampled twice "
                    "(population, run) and dealt into batches of M",
                    "success_rate": centre,
                    "range95": [float(np.quantile(draws, 0.025)), float(np.quantile(draws, 0.975))],
                    "p_value": p,
                    "within_prediction": p >= _ALPHA,
                }
        comparison[f"mbs{m}"]["within_sampling_error"] = comparison[f"mbs{m}"]["p_value"] >= _ALPHA
        result[key] = entry
    result["comparison"] = comparison
    result["threads"] = torch.get_num_threads()
    return result
