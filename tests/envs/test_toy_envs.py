"""The four array task families: navigation-2d, bandit, tabular-mdp, gridworld.

Every family is checked for: gymnasium's env checker, batched == single-task transitions,
train/test disjointness, determinism under a seed and independence from global RNGs,
``gymnasium.make`` of its id, one-line errors on bad input, and its reward formula by hand.
"""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import metarl.envs as menvs
from metarl.envs.bandit import BanditDistribution
from metarl.envs.gridworld import GridworldDistribution
from metarl.envs.navigation import NavigationDistribution
from metarl.envs.tabular import TabularMDPDistribution
from metarl.errors import EnvError
from metarl.types import Task

GYM_ID = {family: env_id for env_id, family in menvs.GYM_IDS.items()}

# (family, preset, overrides): every preset family variant the tests run over.
CONFIGS = [
    ("navigation-2d", "maml", {}),
    ("navigation-2d", "pytorch-maml-rl", {}),
    ("navigation-2d", "maml", {"task_in_obs": True}),
    ("bandit", "k5-n10", {}),
    ("bandit", "k10-n100", {"task_in_obs": True}),
    ("tabular-mdp", "n10", {}),
    ("tabular-mdp", "n25", {"task_in_obs": True}),
    ("gridworld", "varibad", {}),
    ("gridworld", "varibad", {"task_in_obs": True}),
]
CONFIG_IDS = [f"{f}-{p}{'-oracle' if kw else ''}" for f, p, kw in CONFIGS]
FAMILIES = ["navigation-2d", "bandit", "tabular-mdp", "gridworld"]

# check_env warnings that describe a deliberate choice rather than a defect: the navigation
# position is unbounded (as in the reference code) and the bandit observation is a constant.
BENIGN_WARNINGS = ("infinity", "maximum and minimum values are equal")


def _policy(dist, tasks, obs, rng):
    """Random actions, half of the time replaced by a move toward the goal so that navigation
    episodes terminate and gridworld agents reach the goal."""
    n = len(tasks)
    if isinstance(dist, NavigationDistribution):
        pos = obs[:, :2].astype(np.float64)
        goal = np.array([t["goal"] for t in tasks])
        steer = np.clip(goal - pos, -dist.max_speed, dist.max_speed) / dist.action_scale
        bound = float(dist.action_space.high[0])
        noise = rng.normal(0.0, 1.5 * bound, size=(n, 2))  # often outside the box: clipped
        use = rng.random(n) < 0.5
        return np.where(use[:, None], steer, noise).astype(np.float32)
    if isinstance(dist, GridworldDistribution):
        cell = obs[:, :2].astype(np.int64)
        goal = np.array([t["goal"] for t in tasks])
        d = goal - cell
        # up (1) / down (3) along y first, then right (2) / left (4), stay (0) on the goal.
        steer = np.select(
            [d[:, 1] > 0, d[:, 1] < 0, d[:, 0] > 0, d[:, 0] < 0], [1, 3, 2, 4], default=0
        )
        use = rng.random(n) < 0.5
        return np.where(use, steer, rng.integers(5, size=n))
    return rng.integers(dist.action_space.n, size=n)


def _make(family, preset, kwargs):
    return menvs.make(family, preset, **kwargs)


# --------------------------------------------------------------------------- gymnasium checker


@pytest.mark.parametrize(("family", "preset", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_gymnasium_env_checker(family, preset, kwargs):
    dist = _make(family, preset, kwargs)
    task = dist.sample(1, split="train", rng=np.random.default_rng(0))[0]
    for env in (dist.make_env(task), gym.make(GYM_ID[family], preset=preset, task=task, **kwargs)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env.unwrapped)
        bad = [
            str(w.message) for w in caught if not any(b in str(w.message) for b in BENIGN_WARNINGS)
        ]
        # Only the plain make_env copy lacks a spec, so the checker cannot re-make it.
        bad = [m for m in bad if "not having a spec" not in m]
        assert bad == []
    assert isinstance(dist.make_env(task), gym.wrappers.TimeLimit)


# ------------------------------------------------------------------- batched == single-task env


@pytest.mark.parametrize(("family", "preset", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_batched_matches_single_envs(family, preset, kwargs):
    dist = _make(family, preset, kwargs)
    num = 5
    tasks = dist.sample(num - 2, split="train", rng=np.random.default_rng(1)) + dist.sample(
        2, split="test", rng=np.random.default_rng(2)
    )
    batched = dist.make_batched(tasks)
    singles = [dist.make_env(t) for t in tasks]
    rng = np.random.default_rng(3)

    obs_b, _ = batched.reset(seed=100)
    obs_s = np.stack([env.reset(seed=100 + i)[0] for i, env in enumerate(singles)])
    np.testing.assert_array_equal(obs_b, obs_s)
    assert obs_b.dtype == np.float32 and obs_b.shape == (num, *dist.observation_space.shape)

    episodes = np.zeros(num, dtype=int)
    target = 3 if family != "bandit" else 25
    counts = {"terminated": 0, "truncated": 0, "success": 0}
    for _ in range(10_000):
        if episodes.min() >= target:
            break
        actions = _policy(dist, tasks, obs_b, rng)
        obs_b, rew_b, term_b, trunc_b, info_b = batched.step(actions)
        results = [env.step(a) for env, a in zip(singles, actions)]
        np.testing.assert_array_equal(obs_b, np.stack([r[0] for r in results]))
        np.testing.assert_array_equal(rew_b, np.array([r[1] for r in results]))
        np.testing.assert_array_equal(term_b, np.array([r[2] for r in results]))
        np.testing.assert_array_equal(trunc_b, np.array([r[3] for r in results]))
        assert rew_b.dtype == np.float64 and term_b.dtype == bool and trunc_b.dtype == bool
        if dist.has_success:
            np.testing.assert_array_equal(
                info_b["success"], np.array([r[4]["success"] for r in results])
            )
            counts["success"] += int(info_b["success"].sum())
        counts["terminated"] += int(term_b.sum())
        counts["truncated"] += int(trunc_b.sum())
        done = term_b | trunc_b
        if done.any():
            episodes += done
            obs_b, _ = batched.reset(mask=done)
            for i in np.flatnonzero(done):
                obs_b_i = singles[i].reset()[0]
                np.testing.assert_array_equal(obs_b[i], obs_b_i)
    assert episodes.min() >= target
    # The run must exercise the interesting paths, not only time limits.
    if family == "navigation-2d":
        assert counts["terminated"] > 0 and counts["success"] == counts["terminated"]
    if family == "gridworld":
        assert counts["success"] > 0 and counts["terminated"] == 0
    if family == "bandit":
        assert counts["terminated"] == counts["truncated"] == episodes.sum()


@pytest.mark.parametrize("family", FAMILIES)
def test_set_tasks_rebinds_slots_and_reset_mask_is_partial(family):
    dist = menvs.make(family)
    first = dist.sample(3, split="train", rng=np.random.default_rng(0))
    second = dist.sample(3, split="train", rng=np.random.default_rng(1))
    batched = dist.make_batched(first)
    batched.reset(seed=7)
    rng = np.random.default_rng(0)
    for _ in range(min(3, dist.max_episode_steps - 1) if family != "bandit" else 1):
        before, *_ = batched.step(_policy(dist, first, batched._observe(), rng))
    batched.set_tasks(second)
    assert batched.tasks == tuple(second)
    mask = np.array([True, False, True])
    obs, _ = batched.reset(seed=[10, 11, 12], mask=mask)
    np.testing.assert_array_equal(obs[1], before[1])  # the unmasked slot kept its state
    singles = [dist.make_env(t) for t in second]
    for i in (0, 2):
        np.testing.assert_array_equal(obs[i], singles[i].reset(seed=10 + i)[0])
    actions = _policy(dist, second, obs, rng)
    _, rew, *_ = batched.step(actions)
    for i in (0, 2):
        assert rew[i] == singles[i].step(actions[i])[1]
    with pytest.raises(EnvError, match="needs 3 tasks"):
        batched.set_tasks(second[:2])


@pytest.mark.parametrize("family", FAMILIES)
def test_stepping_an_ended_slot_keeps_going(family):
    dist = menvs.make(family)
    tasks = dist.sample(2, split="train", rng=np.random.default_rng(0))
    batched = dist.make_batched(tasks)
    batched.reset(seed=0)
    actions = np.zeros((2, *dist.action_space.shape), dtype=dist.action_space.dtype)
    for _ in range(dist.max_episode_steps):
        _, _, _, truncated, _ = batched.step(actions)
    assert truncated.all()
    _, reward, _, truncated, _ = batched.step(actions)
    assert truncated.all() and np.isfinite(reward).all()
    np.testing.assert_array_equal(batched.elapsed_steps, dist.max_episode_steps + 1)


# -------------------------------------------------------------------------- train/test splits


@pytest.mark.parametrize("family", ["navigation-2d", "bandit", "tabular-mdp"])
def test_continuous_train_and_test_never_overlap(family, monkeypatch):
    dist = menvs.make(family)
    test = dist.test_tasks()
    assert len(test) == dist.num_test_tasks and [t.index for t in test] == list(range(len(test)))
    assert {t.split for t in test} == {"test"}
    test_params = {t.params for t in test}
    assert len(test_params) == len(test)
    train = dist.sample(300, split="train", rng=np.random.default_rng(0))
    assert {t.split for t in train} == {"train"} and [t.index for t in train] == list(range(300))
    assert not test_params & {t.params for t in train}

    # Disjoint by construction: a generator that reproduces test tasks is redrawn from.
    real_draw = dist._draw
    pool = [dict(t.params) for t in test[:3]]

    def draw_test_first(rng, n):
        # The first call returns three test tasks; later calls draw normally.
        out = [{k: np.asarray(v) for k, v in p.items()} for p in pool[:n]]
        del pool[: len(out)]
        return out + real_draw(rng, n - len(out))

    monkeypatch.setattr(dist, "_draw", draw_test_first)
    forced = dist.sample(5, split="train", rng=np.random.default_rng(0))
    assert len(forced) == 5 and not test_params & {t.params for t in forced}


@pytest.mark.parametrize("family", ["navigation-2d", "bandit", "tabular-mdp"])
def test_test_split_picks_distinct_pool_entries(family):
    dist = menvs.make(family)
    pool = dist.test_tasks()
    picked = dist.sample(len(pool), split="test", rng=np.random.default_rng(5))
    assert sorted(t.index for t in picked) == list(range(len(pool)))
    some = dist.sample(7, split="test", rng=np.random.default_rng(5))
    assert len({t.index for t in some}) == 7 and all(pool[t.index] == t for t in some)
    with pytest.raises(EnvError, match=rf"n={len(pool) + 1}.*holds {len(pool)}") as err:
        dist.sample(len(pool) + 1, split="test", rng=np.random.default_rng(0))
    assert "\n" not in str(err.value)


def test_navigation_maml_test_goals_are_the_papers():
    dist = menvs.make("navigation-2d", "maml")
    goals = np.array([t["goal"] for t in dist.test_tasks()])
    assert goals.shape == (40, 2)
    # np.random.seed(1); np.random.uniform(-0.5, 0.5, (40, 2)) in cbfinn/maml_rl test_maml_point.py:
    # rand() under seed 1 starts 0.417022005, 0.720324493, 0.000114375, 0.302332573.
    np.testing.assert_allclose(goals[0], [0.417022005 - 0.5, 0.720324493 - 0.5], atol=1e-9)
    np.testing.assert_allclose(goals[1], [0.000114375 - 0.5, 0.302332573 - 0.5], atol=1e-9)
    bigger = menvs.make("navigation-2d", "maml", num_test_tasks=100)
    assert [t.params for t in bigger.test_tasks()[:40]] == [t.params for t in dist.test_tasks()]
    assert len(menvs.make("navigation-2d", "pytorch-maml-rl").test_tasks()) == 100


def test_gridworld_goal_partition():
    dist = menvs.make("gridworld")
    train, test, every = dist.goals("train"), dist.goals("test"), dist.goals()
    assert len(every) == 21 and len(train) == 16 and len(test) == 5
    as_set = lambda goals: {tuple(g) for g in goals.tolist()}  # noqa: E731
    assert not as_set(train) & as_set(test)
    assert as_set(train) | as_set(test) == as_set(every)
    # VariBAD's GridNavi: no goal on the start (0, 0) or its neighbours.
    assert not as_set(every) & {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert as_set(test) == {(4, 0), (2, 1), (0, 2), (3, 3), (1, 4)}
    # Spread: one test goal in every row and every column.
    assert sorted(test[:, 0].tolist()) == list(range(5))
    assert sorted(test[:, 1].tolist()) == list(range(5))
    for split, goals in (("train", train), ("test", test)):
        sampled = dist.sample(400, split=split, rng=np.random.default_rng(0))
        assert {t.split for t in sampled} == {split}
        assert as_set(np.array([t["goal"] for t in sampled])) == as_set(goals)  # all reached
        assert all(t.index == 5 * t["goal"][0] + t["goal"][1] for t in sampled)
    assert [tuple(t["goal"]) for t in dist.tasks("test")] == [tuple(g) for g in test.tolist()]
    assert dist.test_tasks() == dist.tasks("test")


# --------------------------------------------------------------- determinism and global RNGs


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_tasks_and_rollouts_whatever_the_global_rngs(family):
    def run(global_seed):
        np.random.seed(global_seed)
        torch.manual_seed(global_seed)
        dist = menvs.make(family)
        train = dist.sample(4, split="train", rng=np.random.default_rng(42))
        test = dist.sample(3, split="test", rng=np.random.default_rng(42))
        state = np.random.get_state()[1].copy()
        batched = dist.make_batched(train + test)
        batched.reset(seed=9)
        rng = np.random.default_rng(0)
        obs, rewards = batched._observe(), []
        for _ in range(12):
            obs, reward, *_ = batched.step(_policy(dist, train + test, obs, rng))
            rewards.append(reward)
        # Nothing above touched numpy's global RNG.
        np.testing.assert_array_equal(np.random.get_state()[1], state)
        return train, test, np.stack(rewards)

    a, b = run(0), run(12345)
    assert a[0] == b[0] and a[1] == b[1]
    np.testing.assert_array_equal(a[2], b[2])
    other = menvs.make(family).sample(4, split="train", rng=np.random.default_rng(43))
    assert other != a[0]


@pytest.mark.parametrize("family", ["bandit", "tabular-mdp"])
def test_reward_streams_follow_reset_seeds(family):
    dist = menvs.make(family)
    tasks = dist.sample(4, split="train", rng=np.random.default_rng(0))
    env = dist.make_batched(tasks)
    actions = np.zeros(4, dtype=np.int64)

    def rollout(seed):
        env.reset(seed=seed)
        out = []
        for _ in range(dist.max_episode_steps):
            out.append(env.step(actions)[1])
        return np.stack(out)

    np.testing.assert_array_equal(rollout(3), rollout(3))
    assert not np.array_equal(rollout(3), rollout(4))
    # Unseeded resets continue the stream instead of repeating it.
    first = rollout(3)
    env.reset()
    again = np.stack([env.step(actions)[1] for _ in range(dist.max_episode_steps)])
    assert not np.array_equal(first, again)
    # Adjacent slot seeds give unrelated streams (slot i gets seed + i).
    same_task = dist.make_batched([tasks[0]] * 4)
    same_task.reset(seed=0)
    draws = np.stack([same_task.step(actions)[1] for _ in range(50)])
    assert len({tuple(col) for col in draws.T}) == 4


# ------------------------------------------------------------------------------ gymnasium ids


@pytest.mark.parametrize(("family", "preset", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_gymnasium_make_runs_the_task(family, preset, kwargs):
    dist = _make(family, preset, kwargs)
    task = dist.sample(1, split="test", rng=np.random.default_rng(0))[0]
    env = gym.make(GYM_ID[family], preset=preset, task=task, **kwargs)
    assert env.spec.id == GYM_ID[family]
    assert env.unwrapped.task == task
    ref = dist.make_env(task)
    obs, _ = env.reset(seed=5)
    np.testing.assert_array_equal(obs, ref.reset(seed=5)[0])
    env.action_space.seed(0)
    steps = 0
    while True:
        action = env.action_space.sample()
        got, want = env.step(action), ref.step(action)
        steps += 1
        np.testing.assert_array_equal(got[0], want[0])
        assert got[1:4] == want[1:4]
        if got[2] or got[3]:
            break
    # The registered env carries the time limit exactly once.
    assert got[3] == (steps == dist.max_episode_steps) and steps <= dist.max_episode_steps
    # Without a task the id draws one of the split with task_seed.
    plain = gym.make(GYM_ID[family], preset=preset, split="test", task_seed=3, **kwargs)
    assert plain.unwrapped.task.split == "test"


# ---------------------------------------------------------------------------------- bad input


def _one_line(err):
    text = str(err.value)
    assert "\n" not in text and text
    return text


@pytest.mark.parametrize("family", FAMILIES)
def test_bad_input_raises_one_line_env_errors(family):
    with pytest.raises(EnvError) as err:
        menvs.make(family, "no-such-preset")
    text = _one_line(err)
    assert "'no-such-preset'" in text and all(repr(p) in text for p in menvs.names()[family])
    with pytest.raises(EnvError) as err:
        menvs.make(family, bogus_option=1)
    assert "'bogus_option'" in _one_line(err)

    dist = menvs.make(family)
    rng = np.random.default_rng(0)
    for n in (0, -3, 2.5, True):
        with pytest.raises(EnvError) as err:
            dist.sample(n, split="train", rng=rng)
        assert repr(n) in _one_line(err)
    with pytest.raises(EnvError) as err:
        dist.sample(2, split="validation", rng=rng)
    assert "'validation'" in _one_line(err) and "'test'" in str(err.value)
    with pytest.raises(EnvError) as err:
        dist.sample(2, split="train", rng=np.random.RandomState(0))
    assert "RandomState" in _one_line(err)

    tasks = dist.sample(3, split="train", rng=rng)
    batched = dist.make_batched(tasks)
    with pytest.raises(EnvError, match="never reset"):
        batched.step(np.zeros((3, *dist.action_space.shape), dtype=dist.action_space.dtype))
    batched.reset(seed=0)
    shape = dist.action_space.shape
    with pytest.raises(EnvError) as err:
        batched.step(np.zeros((2, *shape)))
    assert "(2" in _one_line(err)
    single = dist.make_env(tasks[0])
    single.reset(seed=0)
    if isinstance(dist.action_space, gym.spaces.Box):
        bad_shape = np.zeros(3)
        for value in (np.nan, np.inf, -np.inf):
            acts = np.zeros((3, 2))
            acts[1, 0] = value
            with pytest.raises(EnvError) as err:
                batched.step(acts)
            assert "slot 1" in _one_line(err) and str(value) in str(err.value)
            with pytest.raises(EnvError):
                single.step(np.array([0.0, value]))
    else:
        bad_shape = np.zeros(2, dtype=np.int64)
        for value in (np.nan, np.inf):
            with pytest.raises(EnvError) as err:
                batched.step(np.array([0.0, value, 0.0]))
            _one_line(err)
            with pytest.raises(EnvError):
                single.step(value)
        with pytest.raises(EnvError) as err:
            batched.step(np.array([0, dist.action_space.n, 0]))
        assert str(dist.action_space.n) in _one_line(err)
    with pytest.raises(EnvError) as err:
        single.step(bad_shape)
    _one_line(err)

    alien = Task.make("not-this-family", "x", "train", 0, goal=(0, 0))
    with pytest.raises(EnvError, match="not-this-family"):
        dist.make_env(alien)
    with pytest.raises(EnvError, match="not-this-family"):
        dist.make_batched([alien])
    with pytest.raises(EnvError, match="render_mode"):
        dist.make_env(tasks[0], render_mode="human")
    with pytest.raises(EnvError, match="seeds must be non-negative"):
        batched.reset(seed=-1)
    # Seeds that are not integers are refused, not truncated or taken as 1.
    for seed, named in ((1.5, "1.5"), ("7", "'7'"), (True, "True"), ([0, 1.5, 2], "1.5"), ([0, None, 2], "None")):
        with pytest.raises(EnvError) as err:
            batched.reset(seed=seed)
        assert named in _one_line(err)
    # Actions that are not real numbers are refused with the dtype named.
    dtype_shape = (3, *shape)
    for bad in (np.full(dtype_shape, "a"), np.full(dtype_shape, 1 + 1j), np.ones(dtype_shape, bool), np.full(dtype_shape, None)):
        with pytest.raises(EnvError) as err:
            batched.step(bad)
        assert str(bad.dtype) in _one_line(err)
    with pytest.raises(EnvError, match="call reset"):
        dist.make_env(tasks[0]).unwrapped.step(dist.action_space.sample())


# Options of the wrong type are refused, never truncated (100.7 -> 100) or coerced ("no" -> True).
BAD_OPTIONS = {
    "navigation-2d": [("max_episode_steps", 100.7), ("episodes_per_trial", True), ("max_speed", "0.1"), ("goal_high", np.inf), ("task_in_obs", "no")],
    "bandit": [("num_arms", 5.5), ("episodes_per_trial", "10"), ("task_in_obs", 1)],
    "tabular-mdp": [("num_states", 10.9), ("num_actions", 0), ("max_episode_steps", None), ("task_in_obs", "yes")],
    "gridworld": [("num_cells", 5.0), ("max_episode_steps", "15"), ("episodes_per_trial", 0), ("task_in_obs", "no")],
}


@pytest.mark.parametrize("family", FAMILIES)
def test_options_of_the_wrong_type_are_one_line_env_errors(family):
    for name, value in BAD_OPTIONS[family]:
        with pytest.raises(EnvError) as err:
            menvs.make(family, **{name: value})
        text = _one_line(err)
        assert name in text and repr(value) in text, text


def test_task_shape_mismatch_is_rejected():
    five = menvs.make("bandit", "k5-n10").sample(1, rng=np.random.default_rng(0))[0]
    with pytest.raises(EnvError, match=r"arm_probs.*\(10,\)"):
        menvs.make("bandit", "k10-n10").make_batched([five])
    with pytest.raises(EnvError, match="outside"):
        menvs.make("gridworld").make_env(Task.make("gridworld", "varibad", "test", 0, goal=(7, 1)))


# ------------------------------------------------------------------------- formulas by hand


def test_navigation_reward_and_termination_by_hand():
    for preset, scale, bound in (("maml", 0.1, 1.0), ("pytorch-maml-rl", 1.0, 0.1)):
        dist = menvs.make("navigation-2d", preset)
        assert dist.action_space == gym.spaces.Box(-bound, bound, (2,), dtype=np.float32)
        assert (dist.max_episode_steps, dist.episodes_per_trial) == (100, 1)
        task = Task.make("navigation-2d", preset, "test", 0, goal=(0.25, -0.3))
        env = dist.make_env(task)
        obs, _ = env.reset(seed=0)
        np.testing.assert_array_equal(obs, [0.0, 0.0])
        # A huge action is clipped to the 0.1 speed limit; a small one is scaled.
        a = np.array([50.0, -0.5 * bound], dtype=np.float32)
        obs, reward, terminated, truncated, info = env.step(a)
        v = np.clip(a.astype(np.float64) * scale, -0.1, 0.1)
        assert v[0] == 0.1 and v[1] == pytest.approx(-0.05)
        np.testing.assert_allclose(obs, v, rtol=1e-6)
        assert reward == pytest.approx(-math.hypot(v[0] - 0.25, v[1] + 0.3), rel=1e-12)
        assert not terminated and not truncated and info == {"success": False}
        # Walk straight to the goal: it terminates once both offsets are below 0.01.
        pos = v.copy()
        for _ in range(10):
            step = np.clip(np.array([0.25, -0.3]) - pos, -0.1, 0.1)
            pos = pos + step
            obs, reward, terminated, truncated, info = env.step((step / scale).astype(np.float32))
            if terminated:
                break
        assert terminated and info["success"] and reward == pytest.approx(0.0, abs=1e-6)
    oracle = menvs.make("navigation-2d", task_in_obs=True)
    env = oracle.make_env(Task.make("navigation-2d", "maml", "test", 0, goal=(0.25, -0.3)))
    np.testing.assert_array_equal(env.reset()[0], np.array([0, 0, 0.25, -0.3], dtype=np.float32))


def test_navigation_truncates_at_the_horizon():
    dist = menvs.make("navigation-2d")
    env = dist.make_env(Task.make("navigation-2d", "maml", "test", 0, goal=(0.5, 0.5)))
    env.reset()
    flags = [env.step(np.array([-1.0, 0.0], dtype=np.float32))[2:4] for _ in range(100)]
    assert flags[-1] == (False, True) and all(f == (False, False) for f in flags[:-1])


def test_bandit_rewards_by_hand():
    presets = menvs.names()["bandit"]
    assert sorted(presets) == sorted(f"k{k}-n{n}" for k in (5, 10, 50) for n in (10, 100, 500))
    for name in presets:
        dist = menvs.make("bandit", name)
        k, n = (int(x[1:]) for x in name.split("-"))
        assert (dist.num_arms, dist.episodes_per_trial, dist.max_episode_steps) == (k, n, 1)
        assert dist.action_space == gym.spaces.Discrete(k)
    assert menvs.family("bandit").default_preset == "k5-n10"
    dist = menvs.make("bandit")
    task = Task.make("bandit", "k5-n10", "test", 0, arm_probs=(0.0, 1.0, 0.3, 1.0, 0.0))
    env = dist.make_env(task)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.tolist() == [0.0]
    assert env.step(1)[1:4] == (1.0, True, True)  # terminated (one pull) and at the H=1 limit
    env.reset()
    assert env.step(0)[1] == 0.0
    batched = dist.make_batched([task] * 4000)
    batched.reset(seed=0)
    rewards = np.concatenate([batched.step(np.full(4000, 2))[1] for _ in range(5)])
    # Bernoulli(0.3) over 20000 pulls: standard error 0.0032.
    assert abs(rewards.mean() - 0.3) < 0.015 and set(np.unique(rewards)) == {0.0, 1.0}
    probs = dist.sample(2000, rng=np.random.default_rng(0))
    values = np.array([t["arm_probs"] for t in probs])
    assert values.shape == (2000, 5) and 0 <= values.min() and values.max() < 1
    assert abs(values.mean() - 0.5) < 0.01  # U[0, 1]


def test_tabular_rewards_and_transitions_by_hand():
    assert sorted(menvs.names()["tabular-mdp"]) == ["n10", "n100", "n25", "n50", "n75"]
    for n in (10, 25, 50, 75, 100):
        dist = menvs.make("tabular-mdp", f"n{n}")
        assert (dist.episodes_per_trial, dist.max_episode_steps) == (n, 10)
        assert dist.action_space == gym.spaces.Discrete(5) and dist.observation_space.shape == (10,)
    dist = menvs.make("tabular-mdp")
    means = np.arange(50, dtype=np.float64).reshape(10, 5) / 10.0
    transitions = np.zeros((10, 5, 10))
    transitions[:, :, :] = np.eye(10)[(np.arange(10)[:, None] + np.arange(5)[None, :] + 1) % 10]
    transitions[0, 0] = [0.2, 0.5, 0.3, 0, 0, 0, 0, 0, 0, 0]
    task = Task.make("tabular-mdp", "n10", "test", 0, reward_means=means, transitions=transitions)
    env = dist.make_env(task)
    obs, _ = env.reset(seed=0)
    assert obs.tolist() == np.eye(10)[0].tolist()
    # Deterministic rows: state s, action a -> (s + a + 1) mod 10.
    env.step(1)  # 0 -> 2
    obs, *_ = env.step(3)  # 2 -> 6
    assert np.argmax(obs) == 6
    batched = dist.make_batched([task] * 5000)
    batched.reset(seed=1)
    obs, reward, terminated, truncated, _ = batched.step(np.zeros(5000, dtype=np.int64))
    # reward ~ N(mu(0, 0) = 0, 1); next state ~ (0.2, 0.5, 0.3).
    assert abs(reward.mean()) < 0.06 and abs(reward.std() - 1.0) < 0.05
    np.testing.assert_allclose(obs.mean(axis=0)[:3], [0.2, 0.5, 0.3], atol=0.03)
    assert not terminated.any() and not truncated.any()
    obs, reward, *_ = batched.step(np.full(5000, 4))  # from s in {0,1,2}: mean (s*5 + 4) / 10
    expected = (np.argmax(obs, axis=1) - 5) % 10 * 5 / 10.0 + 0.4
    assert abs((reward - expected).mean()) < 0.06
    drawn = dist.sample(200, rng=np.random.default_rng(0))
    mus = np.array([t["reward_means"] for t in drawn])
    rows = np.array([t["transitions"] for t in drawn])
    assert abs(mus.mean() - 1.0) < 0.05 and abs(mus.std() - 1.0) < 0.05  # N(1, 1)
    np.testing.assert_allclose(rows.sum(-1), 1.0, atol=1e-12)
    # Flat Dirichlet over 10 states: mean 1/10, variance 9 / (10^2 * 11).
    assert abs(rows.mean() - 0.1) < 1e-12 and abs(rows.var() - 9 / (100 * 11)) < 0.001


def test_gridworld_rewards_and_moves_by_hand():
    dist = menvs.make("gridworld")
    assert (dist.max_episode_steps, dist.episodes_per_trial) == (15, 4)
    assert dist.action_space == gym.spaces.Discrete(5) and dist.observation_space.shape == (2,)
    env = dist.make_env(Task.make("gridworld", "varibad", "train", 12, goal=(2, 2)))
    obs, _ = env.reset(seed=0)
    assert obs.tolist() == [0.0, 0.0]
    # left and down at the wall stay; right, right, up, up reach (2, 2); stay keeps +1; leave.
    script = [
        (4, (0, 0), -0.1),
        (3, (0, 0), -0.1),
        (2, (1, 0), -0.1),
        (2, (2, 0), -0.1),
        (1, (2, 1), -0.1),
        (1, (2, 2), 1.0),
        (0, (2, 2), 1.0),
        (1, (2, 3), -0.1),
        (3, (2, 2), 1.0),
    ]
    for action, cell, reward in script:
        obs, r, terminated, truncated, info = env.step(action)
        assert obs.tolist() == list(cell) and r == reward and info["success"] == (reward == 1.0)
        assert not terminated and not truncated
    for _ in range(15 - len(script) - 1):
        assert env.step(0)[1:4] == (1.0, False, False)
    assert env.step(0)[1:4] == (1.0, False, True)  # truncated at 15 steps; never terminated
    far = dist.make_env(Task.make("gridworld", "varibad", "train", 24, goal=(4, 4)))
    far.reset()
    for _ in range(6):
        obs = far.step(1)[0]  # up, up, ... stops at the top wall
    assert obs.tolist() == [0.0, 4.0]
    oracle = menvs.make("gridworld", task_in_obs=True)
    env = oracle.make_env(Task.make("gridworld", "varibad", "test", 21, goal=(4, 1)))
    assert env.reset()[0].tolist() == [0.0, 0.0, 4.0, 1.0]


def test_registry_metadata():
    for family, module in (
        ("navigation-2d", "navigation"),
        ("bandit", "bandit"),
        ("tabular-mdp", "tabular"),
        ("gridworld", "gridworld"),
    ):
        fam = menvs.family(family)
        assert fam.summary and "\n" not in fam.summary
        assert fam.default_preset in fam.presets
        dist = menvs.make(family)
        assert dist.name == family and dist.preset == fam.default_preset
        assert type(dist).__module__ == f"metarl.envs.{module}"
    assert isinstance(menvs.make("navigation-2d"), NavigationDistribution)
    assert isinstance(menvs.make("bandit"), BanditDistribution)
    assert isinstance(menvs.make("tabular-mdp"), TabularMDPDistribution)
    assert menvs.make("navigation-2d").has_success and menvs.make("gridworld").has_success
    assert not menvs.make("bandit").has_success and not menvs.make("tabular-mdp").has_success
