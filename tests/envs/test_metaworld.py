"""Meta-World ML1/ML10/ML45: Meta-World's own splits, sampling, single env, process-pool equality."""

from __future__ import annotations

import pickle
import warnings

import gymnasium as gym
import metaworld
import metaworld.env_dict as mw_env_dict
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from metaworld.policies import SawyerReachV3Policy

from metarl.envs import family, make
from metarl.envs.metaworld import (
    ML1_ENV_NAMES,
    MetaWorldDistribution,
    MetaWorldTaskEnv,
    _build_benchmark,
)
from metarl.errors import EnvError
from metarl.types import Task

# reference/papers.md §5.1 (Meta-World env_dict ML10_V3 / ML45_V3).
ML10_TRAIN = ["reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-close-v3", "button-press-topdown-v3",
              "peg-insert-side-v3", "window-open-v3", "sweep-v3", "basketball-v3"]
ML10_TEST = ["drawer-open-v3", "door-close-v3", "shelf-place-v3", "sweep-into-v3", "lever-pull-v3"]
ML45_TEST = ["bin-picking-v3", "box-close-v3", "hand-insert-v3", "door-lock-v3", "door-unlock-v3"]


@pytest.fixture(scope="module")
def ml1() -> MetaWorldDistribution:
    dist = make("metaworld-ml1", "reach-v3")
    dist.tasks("train")
    return dist


@pytest.fixture(scope="module")
def ml10() -> MetaWorldDistribution:
    dist = make("metaworld-ml10")
    dist.tasks("train")
    return dist


def rand_vec(task: Task) -> tuple[float, ...]:
    return tuple(np.round(pickle.loads(task["data"])["rand_vec"], 12).tolist())


def scripted_reach_action(env: gym.Env, obs: np.ndarray) -> np.ndarray:
    """Meta-World's scripted reach policy, given the goal the ML observation hides."""
    full = obs.copy()
    full[-3:] = env.unwrapped._target_pos
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SawyerReachV3Policy().get_action(full).astype(np.float32)


def test_presets_defaults_and_registry():
    ml1_family = family("metaworld-ml1")
    assert sorted(ml1_family.presets) == sorted(metaworld.ML1.ENV_NAMES) == sorted(ML1_ENV_NAMES)
    assert len(ml1_family.presets) == 50 and ml1_family.default_preset == "push-v3"
    for name in ("metaworld-ml10", "metaworld-ml45"):
        assert list(family(name).presets) == ["v3"] and family(name).default_preset == "v3"
    dist = make("metaworld-ml1")
    assert (dist.name, dist.preset, dist.seed, dist.max_episode_steps, dist.has_success) == ("metaworld-ml1", "push-v3", 0, 500, True)
    assert dist.episodes_per_trial == 1 and dist.reward_function_version == "v2"
    assert "50 train goals, 50 test goals" in dist.describe()


def test_ml1_splits_equal_metaworld_and_are_disjoint(ml1):
    reference = metaworld.ML1("reach-v3", seed=0)
    train, test = ml1.tasks("train"), ml1.tasks("test")
    assert len(train) == len(reference.train_tasks) == 50
    assert len(test) == len(reference.test_tasks) == 50
    assert [t["data"] for t in train] == [t.data for t in reference.train_tasks]
    assert [t["data"] for t in test] == [t.data for t in reference.test_tasks]
    assert {t["env_name"] for t in train + test} == {"reach-v3"}
    assert [(t.split, t.index, t.family, t.preset) for t in train] == [("train", i, "metaworld-ml1", "reach-v3") for i in range(50)]
    assert not {t["data"] for t in train} & {t["data"] for t in test}
    assert not {rand_vec(t) for t in train} & {rand_vec(t) for t in test}
    assert len({rand_vec(t) for t in train}) == 50 and len(set(train)) == 50


def test_ml10_splits_are_metaworlds_classes_and_goals(ml10):
    assert list(ml10.env_names("train")) == ML10_TRAIN == list(mw_env_dict.ML10_V3["train"])
    assert list(ml10.env_names("test")) == ML10_TEST == list(mw_env_dict.ML10_V3["test"])
    train, test = ml10.tasks("train"), ml10.tasks("test")
    assert len(train) == 10 * metaworld._N_GOALS == 500 and len(test) == 5 * 50 == 250
    for split, tasks, names in (("train", train, ML10_TRAIN), ("test", test, ML10_TEST)):
        assert [t.index for t in tasks] == list(range(len(tasks))) and {t.split for t in tasks} == {split}
        for name in names:
            of_class = [t for t in tasks if t["env_name"] == name]
            assert len(of_class) == 50 and len({rand_vec(t) for t in of_class}) == 50
            data = pickle.loads(of_class[0]["data"])
            assert data["env_cls"] is mw_env_dict.ALL_V3_ENVIRONMENTS[name] and data["partially_observable"] is True
    assert not {t["env_name"] for t in train} & {t["env_name"] for t in test}
    assert not set(train) & set(test)
    first_40 = ml10.tasks("test", goals_per_class=40)
    assert len(first_40) == 200 and first_40[:40] == test[:40] and first_40[40] == test[50]


def test_ml45_class_names_match_metaworld():
    dist = make("metaworld-ml45")
    train, test = dist.env_names("train"), dist.env_names("test")
    assert list(train) == list(mw_env_dict.ML45_V3["train"]) and len(train) == 45
    assert list(test) == ML45_TEST == list(mw_env_dict.ML45_V3["test"])
    assert not set(train) & set(test) and len(set(train) | set(test)) == 50
    assert "45 train / 5 test env classes" in dist.describe()


@pytest.mark.slow
def test_ml45_task_counts_equal_metaworld():
    dist = make("metaworld-ml45")
    train, test = dist.tasks("train"), dist.tasks("test")
    assert len(train) == 45 * 50 and len(test) == 5 * 50
    assert not {t["env_name"] for t in train} & {t["env_name"] for t in test}
    balanced = dist.sample(90, split="train", rng=np.random.default_rng(0))
    assert sorted(np.unique([t["env_name"] for t in balanced], return_counts=True)[1]) == [2] * 45


def test_sample_balances_classes_and_is_deterministic(ml1, ml10):
    state = np.random.get_state()
    batch = ml10.sample(20, split="train", rng=np.random.default_rng(0))
    names, counts = np.unique([t["env_name"] for t in batch], return_counts=True)
    assert sorted(names) == sorted(ML10_TRAIN) and counts.tolist() == [2] * 10
    assert len(set(batch)) == 20 and {t.split for t in batch} == {"train"}
    assert batch == ml10.sample(20, split="train", rng=np.random.default_rng(0))
    assert batch != ml10.sample(20, split="train", rng=np.random.default_rng(1))
    few = ml10.sample(7, split="test", rng=np.random.default_rng(2))
    # 7 tasks over 5 test classes: one full round of classes plus two.
    assert sorted(np.unique([t["env_name"] for t in few], return_counts=True)[1]) == [1, 1, 1, 2, 2]
    assert {t.split for t in few} == {"test"} and {t["env_name"] for t in few} <= set(ML10_TEST)
    all_goals = ml1.sample(50, split="test", rng=np.random.default_rng(3))
    assert sorted(t.index for t in all_goals) == list(range(50)) and all_goals != ml1.tasks("test")
    repeated = ml1.sample(120, split="train", rng=np.random.default_rng(4))
    assert set(np.bincount([t.index for t in repeated], minlength=50).tolist()) == {2, 3}
    after = np.random.get_state()
    assert state[0] == after[0] and np.array_equal(state[1], after[1]) and state[2:] == after[2:]


def test_goal_lists_depend_on_benchmark_seed_only(ml1):
    _build_benchmark.cache_clear()
    np.random.seed(12345)  # the global RNG must not matter (and is restored by Meta-World)
    state = np.random.get_state()
    again = MetaWorldDistribution("metaworld-ml1", "reach-v3", seed=0)
    assert [t["data"] for t in again.tasks("train")] == [t["data"] for t in ml1.tasks("train")]
    assert np.array_equal(np.random.get_state()[1], state[1])
    seed1 = MetaWorldDistribution("metaworld-ml1", "reach-v3", seed=1)
    assert not {rand_vec(t) for t in seed1.tasks("train")} & {rand_vec(t) for t in ml1.tasks("train")}
    # Meta-World draws ML1 test goals with seed + 1: seed 1's train goals are seed 0's test goals.
    assert [rand_vec(t) for t in seed1.tasks("train")] == [rand_vec(t) for t in ml1.tasks("test")]


def test_single_env_checker_success_flag_and_time_limit(ml10):
    task = [t for t in ml10.tasks("train") if t["env_name"] == "reach-v3"][2]
    env = ml10.make_env(task)
    assert isinstance(env, gym.Env) and isinstance(env.env, MetaWorldTaskEnv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # infinite bounds and the wrapper notice are warnings only
        check_env(env)
    assert env.observation_space == ml10.observation_space and env.observation_space.shape == (39,)
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (4,), np.float32) == ml10.action_space
    obs, _ = env.reset(seed=1)
    # Reset is deterministic given the task: the seed does not move objects or goal.
    np.testing.assert_array_equal(obs, env.reset(seed=2)[0])
    assert obs.dtype == np.float64 and np.all(obs[-3:] == 0)  # goal hidden in ML benchmarks
    flags, steps = [], 0
    truncated = terminated = False
    while not (terminated or truncated):
        obs, reward, terminated, truncated, info = env.step(scripted_reach_action(env, obs))
        assert type(info["success"]) is bool and isinstance(reward, float)
        flags.append(info["success"])
        steps += 1
    assert steps == 500 and truncated and not terminated
    assert not flags[0] and any(flags)

    short = MetaWorldDistribution("metaworld-ml10", "v3", max_episode_steps=20).make_env(task)
    short.reset(seed=0)
    ends = [short.step(np.zeros(4, np.float32))[3] for _ in range(20)]
    assert ends == [False] * 19 + [True]

    via_gym = gym.make("metarl/MetaWorldML10-v0", preset="v3", task=task)
    np.testing.assert_array_equal(via_gym.reset(seed=5)[0], env.reset(seed=5)[0])


def test_process_pool_equals_single_envs(ml10):
    train, test = ml10.tasks("train"), ml10.tasks("test")
    reach = [t for t in train if t["env_name"] == "reach-v3"]
    tasks = [reach[2], [t for t in train if t["env_name"] == "push-v3"][0], [t for t in test if t["env_name"] == "door-close-v3"][0]]
    rng = np.random.default_rng(0)

    def run(env, singles, steps):
        seeds = [11, 12, 13]
        obs, _ = env.reset(seed=seeds)
        ref_obs = [s.reset(seed=seed)[0] for s, seed in zip(singles, seeds)]
        np.testing.assert_array_equal(obs, np.stack(ref_obs))
        successes = np.zeros(3, dtype=bool)
        for _ in range(steps):
            actions = rng.uniform(-1, 1, size=(3, 4)).astype(np.float32)
            if singles[0].unwrapped.__class__.__name__ == "SawyerReachEnvV3":
                actions[0] = scripted_reach_action(singles[0], ref_obs[0])
            obs, reward, terminated, truncated, info = env.step(actions)
            for i, single in enumerate(singles):
                o, r, te, tr, inf = single.step(actions[i])
                ref_obs[i] = o
                np.testing.assert_array_equal(obs[i], o)
                assert (reward[i], terminated[i], truncated[i], info["success"][i]) == (r, te, tr, inf["success"])
            successes |= info["success"]
        return successes

    with ml10.make_batched(tasks, num_workers=2, timeout=120) as env:
        assert env.num_workers == 2 and env.has_success
        assert env.single_observation_space == ml10.observation_space
        successes = run(env, [ml10.make_env(t) for t in tasks], 55)
        assert successes.tolist() == [True, False, False]  # the scripted reach succeeds
        # Same class -> set_task in place; different classes -> rebuilt envs.
        new_tasks = [reach[7], [t for t in test if t["env_name"] == "lever-pull-v3"][3], [t for t in train if t["env_name"] == "sweep-v3"][1]]
        env.set_tasks(new_tasks)
        run(env, [ml10.make_env(t) for t in new_tasks], 15)
        assert env.worker_restarts == 0


def test_bad_input_raises_env_error(ml1, ml10):
    with pytest.raises(EnvError, match=r"unknown preset 'reach-v9'.*valid presets: .*'push-v3'.*'reach-v3'"):
        make("metaworld-ml1", "reach-v9")
    with pytest.raises(EnvError, match=r"unknown preset 'reach-v9'.*'window-open-v3'"):
        MetaWorldDistribution("metaworld-ml1", "reach-v9")
    with pytest.raises(EnvError, match="valid presets: 'v3'"):
        make("metaworld-ml10", "v2")
    with pytest.raises(EnvError, match="unknown option 'goals'.*'seed'"):
        make("metaworld-ml10", goals=3)
    with pytest.raises(EnvError, match="reward_function_version 'v3'"):
        make("metaworld-ml10", reward_function_version="v3")
    with pytest.raises(EnvError, match="seed=-1"):
        make("metaworld-ml10", seed=-1)
    with pytest.raises(EnvError, match="max_episode_steps"):
        make("metaworld-ml10", max_episode_steps=0)
    for n in (0, -3, 2.5, True):
        with pytest.raises(EnvError, match="positive integer"):
            ml10.sample(n, split="train", rng=np.random.default_rng(0))
    with pytest.raises(EnvError, match=r"unknown split 'valid'.*'test', 'train'"):
        ml10.sample(2, split="valid", rng=np.random.default_rng(0))
    with pytest.raises(EnvError, match="Generator"):
        ml10.sample(2, split="train", rng=np.random.RandomState(0))
    with pytest.raises(EnvError, match="is of env 'metaworld-ml1', not 'metaworld-ml10'"):
        ml10.make_env(ml1.tasks("train")[0])
    with pytest.raises(EnvError, match="env_name 'reach-v3'"):
        make("metaworld-ml1", "push-v3").make_batched(ml1.tasks("train")[:2])
    for option in ("workers", "has_success"):
        with pytest.raises(EnvError, match=rf"unknown option '{option}' for make_batched; valid options: .*'num_workers'.*'start_timeout'"):
            ml1.make_batched(ml1.tasks("train")[:1], **{option: 2})
    # The single env refuses what the process pool refuses (MuJoCo would otherwise reset the
    # simulation on a NaN control without a word).
    env = ml1.make_env(ml1.tasks("train")[0])
    obs, _ = env.reset(seed=0)
    with pytest.raises(EnvError, match="not finite: .*nan"):
        env.step(np.array([0.0, np.nan, 0.0, 0.0], np.float32))
    with pytest.raises(EnvError, match=r"shape \(1, 4\)"):
        env.step(np.zeros(5, np.float32))
    assert np.isfinite(env.step(np.zeros(4, np.float32))[0]).all()
