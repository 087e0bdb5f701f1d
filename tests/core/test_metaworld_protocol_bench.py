"""``metarl bench metaworld-protocol``: Meta-World's metalearning_evaluation against ours on ML1."""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import pytest
from scipy.stats import binom

pytest.importorskip("metaworld")

from metarl import cli  # noqa: E402
from metarl.bench import default_args  # noqa: E402
from metarl.bench import metaworld_protocol as bench  # noqa: E402
from metarl.errors import CheckpointError, ConfigError, EnvError  # noqa: E402
from metarl.seeding import numpy_rng  # noqa: E402


def _args(**kw) -> argparse.Namespace:
    return default_args(bench.add_arguments, **kw)


@pytest.fixture(scope="module")
def tiny() -> dict:
    """2 goals, 1 adaptation and 2 evaluation episodes of 20 steps, Meta-World layouts M = 1, 2."""
    return bench.run(
        _args(
            goals=2,
            meta_batch_sizes=[2, 1],
            adaptation_episodes=1,
            evaluation_episodes=2,
            max_episode_steps=20,
        )
    )


def test_tiny_run_structure_and_ranges(tiny):
    assert set(tiny) == {
        "problem",
        "ours",
        "metaworld_mbs1",
        "metaworld_mbs2",
        "comparison",
        "threads",
    }
    problem = tiny["problem"]
    assert (problem["env"], problem["preset"], problem["goals"]) == (
        "metaworld-ml1",
        "drawer-close-v3",
        2,
    )
    assert (
        problem["adaptation_episodes"],
        problem["evaluation_episodes"],
        problem["max_episode_steps"],
    ) == (1, 2, 20)
    assert problem["agent"] == "maml-trpo" and tiny["threads"] == 1

    ours = tiny["ours"]
    assert ours["num_goals"] == 2 and ours["num_scored_episodes"] == 4
    assert len(ours["per_goal_success"]) == 2
    # per-goal rates over 2 episodes are multiples of 1/2
    assert all(r in (0.0, 0.5, 1.0) for r in ours["per_goal_success"])
    assert ours["success_rate"] == pytest.approx(np.mean(ours["per_goal_success"]))
    assert 0.0 <= ours["success_ci95"][0] <= ours["success_rate"] <= ours["success_ci95"][1] <= 1.0

    # M=1: each goal once; M=2: --pooled-passes (default 2) visits of each goal
    for m, passes, evals in ((1, 1, 2), (2, 2, 2)):
        side = tiny[f"metaworld_mbs{m}"]
        assert side["meta_batch_size"] == m and side["passes"] == passes
        assert side["num_evals"] == evals and side["num_scored_episodes"] == evals * 2
        # every one of our goals is adapted on `passes` times, each evaluation on M of them
        assert [len(g) for g in side["goals_per_eval"]] == [m] * evals
        assert sorted(g for goals in side["goals_per_eval"] for g in goals) == sorted(
            [0, 1] * passes
        )

        # our re-count of Meta-World's ended episodes reproduces its own score
        assert side["recount_matches"] is True
        assert all(s in (0.0, 0.5, 1.0) for s in side["per_eval_success"])
        assert side["success_rate"] == pytest.approx(np.mean(side["per_eval_success"]))
        lo, hi = side["success_ci95"]
        assert 0.0 <= lo <= side["success_rate"] <= hi <= 1.0
        assert side["wall_s"] > 0

    for key, side in (("mbs1", "metaworld_mbs1"), ("mbs2", "metaworld_mbs2")):
        comp = tiny["comparison"][key]
        assert comp["difference"] == pytest.approx(
            tiny[side]["success_rate"] - ours["success_rate"]
        )
        assert 0.0 <= comp["p_value"] <= 1.0
        assert comp["within_sampling_error"] == (comp["p_value"] >= 0.05)
    assert "difference_ci95" in tiny["comparison"]["mbs1"]
    prediction = tiny["metaworld_mbs2"]["prediction"]
    lo, hi = prediction["range95"]
    assert 0.0 <= lo <= prediction["success_rate"] <= hi <= 1.0
    assert "prediction" not in tiny["metaworld_mbs1"]


def test_first_finishers_rate_counts_meta_worlds_way():
    # (end step, env, success): a success ends early, so env 1's two successes come first
    ends = [(500, 0, False), (120, 1, True), (500, 2, False), (300, 1, True)]
    assert bench.first_finishers_rate(ends, 3) == pytest.approx(2 / 3)
    assert bench.first_finishers_rate(ends, 1) == 1.0
    # ties at one step go in env order (Meta-World loops over envs in index order)
    assert bench.first_finishers_rate([(500, 2, True), (500, 0, False), (500, 1, False)], 1) == 0.0
    assert bench.first_finishers_rate(
        [(500, 2, True), (500, 0, False), (500, 1, False)], 3
    ) == pytest.approx(1 / 3)


def _predict(lengths, successes, m, *, shuffle=False, passes=1):
    return bench._predict(
        np.array(lengths),
        np.array(successes, dtype=bool),
        meta_batch_size=m,
        passes=passes,
        quota=3,
        shuffle_episodes=shuffle,
        rng=numpy_rng(0, "test"),
    )


def test_prediction_shows_the_pooled_bias():
    # 4 goals, one succeeding early in all 3 episodes: per goal 25% success. Pooled over 4 envs
    # the first 3 finishers are that goal's episodes whenever the simulated run holds it: with
    # k ~ Bin(4, 1/4) copies in the resampled population, P = 1 - E[(1 - k/4)^4] = 0.5367.
    fast, slow = [10, 10, 10], [500, 500, 500]
    lengths = [fast, slow, slow, slow]
    successes = [[True] * 3, [False] * 3, [False] * 3, [False] * 3]
    pooled = _predict(lengths, successes, 4)
    assert set(np.unique(pooled)) <= {0.0, 1.0}
    assert pooled.mean() == pytest.approx(0.5367, abs=0.015)
    # one env per goal: the per-goal mean, 25%, up to resampling
    one = _predict(lengths, successes, 1)
    assert one.mean() == pytest.approx(0.25, abs=0.01)
    # two passes: two batches per simulated run, the same expected score, a narrower spread
    twice = _predict(lengths, successes, 4, passes=2)
    assert set(np.unique(twice)) <= {0.0, 0.5, 1.0}
    assert twice.mean() == pytest.approx(pooled.mean(), abs=0.02) and twice.std() < pooled.std()


def test_prediction_shuffles_exchangeable_episodes():
    # goal 0 fails its first episode (500 steps) and then succeeds fast twice; the others fail.
    # In the recorded order its successes end after step 500, behind three failures that end at
    # step 500; shuffled, a success comes first 2/3 of the time and the next one too 1/3.
    lengths = [[500, 10, 10], [500] * 3, [500] * 3, [500] * 3]
    successes = [[False, True, True], [False] * 3, [False] * 3, [False] * 3]
    assert _predict(lengths, successes, 4).max() == 0.0
    shuffled = _predict(lengths, successes, 4, shuffle=True)
    # Exact expectation: the population holds k ~ Bin(4, 1/4) copies of goal 0, the run
    # j ~ Bin(4, k/4); each copy's order gives 0, 1 or 2 successes before step 500, equally
    # likely, and the score is min(their sum, 3) / 3.
    expected = 0.0
    for k in range(5):
        for j in range(5):
            p = binom.pmf(k, 4, 0.25) * binom.pmf(j, 4, k / 4)
            counts = [sum(c) for c in itertools.product((0, 1, 2), repeat=j)]
            expected += p * np.mean([min(c, 3) / 3 for c in counts])
    assert shuffled.mean() == pytest.approx(expected, abs=0.015)


def test_unknown_preset_is_one_line_naming_the_valid_ones():
    with pytest.raises(EnvError) as err:
        bench.run(_args(preset="reach-v9"))
    message = str(err.value)
    assert "\n" not in message and "'reach-v9'" in message
    assert "valid presets" in message and "'reach-v3'" in message and "'drawer-close-v3'" in message


def test_bad_options_are_rejected_before_any_work(capsys):
    with pytest.raises(
        ConfigError, match=r"unknown --env 'navigation-2d'.*valid envs: 'metaworld-ml1'"
    ):
        bench.run(_args(env="navigation-2d"))
    with pytest.raises(
        ConfigError,
        match=r"entry 3 does not divide --goals 40; valid sizes: 1, 2, 4, 5, 8, 10, 20, 40$",
    ):
        bench.run(_args(meta_batch_sizes=[1, 3]))
    with pytest.raises(ConfigError, match="--pooled-passes must be a positive integer, got 0"):
        bench.run(_args(pooled_passes=0))
    with pytest.raises(ConfigError, match="at most 50"):
        bench.run(_args(goals=60))
    with pytest.raises(ConfigError, match="--max-episode-steps cannot be combined with --run"):
        bench.run(_args(run="nowhere", max_episode_steps=20))
    with pytest.raises(CheckpointError, match="does not exist"):
        bench.run(_args(run="nowhere"))
    # through the command line: one line on stderr, exit code 2
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "metaworld-protocol", "--preset", "nope-v3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown preset 'nope-v3'" in err and "valid presets" in err
