"""`metarl bench envs` and `metarl bench sampler`: result layout, ratio arithmetic, and every kind
of family (MuJoCo with a ceiling, a toy family with none)."""

from __future__ import annotations

import pytest
import torch

from metarl.bench import default_args
from metarl.bench import envs as bench_envs
from metarl.bench import sampler as bench_sampler
from metarl.envs import make
from metarl.errors import ConfigError


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    threads = torch.get_num_threads()  # the sampler bench sets 1 for every contender
    yield
    torch.set_num_threads(threads)


def _args(module, **overrides):
    return default_args(module.add_arguments, **overrides)


def test_parallel_kwargs_match_each_familys_make_batched():
    assert bench_envs.parallel_kwargs(make("navigation-2d"), 2) == {}
    assert bench_envs.parallel_kwargs(make("bandit", "k5-n10"), 2) == {}
    assert bench_envs.parallel_kwargs(make("halfcheetah-vel"), 2) == {"num_threads": 2}
    assert bench_envs.parallel_kwargs(make("metaworld-ml10"), 3) == {"num_workers": 3}


def test_env_bench_runs_a_toy_family_without_a_ceiling():
    result = bench_envs.run(_args(bench_envs, env="navigation-2d", slots=4, steps=5, threads=2))
    assert result["steps_per_s"]["ceiling"] is None and "metarl_vs_ceiling" not in result["ratios"]
    rates = result["steps_per_s"]
    assert result["ratios"]["metarl_vs_gymnasium"] == pytest.approx(
        rates["metarl"] / max(rates["gymnasium_sync"], rates["gymnasium_async"])
    )


@pytest.mark.parametrize(
    ("env", "anchors", "has_ceiling"),
    [
        ("navigation-2d", "gymnasium_sync", False),
        ("halfcheetah-vel", "gymnasium_sync,ceiling", True),
    ],
)
def test_sampler_bench_layout_and_ratios(env, anchors, has_ceiling):
    result = bench_sampler.run(
        _args(bench_sampler, env=env, slots=2, repeats=3, threads=2, anchors=anchors)
    )
    rates = result["steps_per_s"]
    assert set(rates) >= {"metarl", "gymnasium_async", "gymnasium_sync", "sb3_subproc", "ceiling"}
    assert rates["metarl"] > 0 and rates["gymnasium_sync"] > 0
    assert rates["gymnasium_async"] is None and rates["sb3_subproc"] is None  # not asked for
    assert result["ratios"]["metarl_vs_best_vector_env"] == pytest.approx(
        rates["metarl"] / rates["gymnasium_sync"]
    )
    if has_ceiling:
        assert result["ratios"]["metarl_vs_ceiling"] == pytest.approx(
            rates["metarl"] / rates["ceiling"]
        )
    else:
        assert rates["ceiling"] is None
    split = result["time_split"]
    assert split["env_fraction"] + split["policy_fraction"] + split["sampler_fraction"] == (
        pytest.approx(1.0)
    )


def test_sampler_bench_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="unknown anchor 'nope'"):
        bench_sampler.run(_args(bench_sampler, env="navigation-2d", anchors="nope"))
    with pytest.raises(ConfigError, match="at least 3"):
        bench_sampler.run(_args(bench_sampler, env="navigation-2d", repeats=2))
    with pytest.raises(ConfigError, match="unknown --device 'gpu'; valid devices: 'auto', 'cpu', 'cuda'"):
        bench_sampler.run(_args(bench_sampler, env="navigation-2d", device="gpu"))
    # A family without threads would otherwise take --threads 0 silently.
    with pytest.raises(ConfigError, match="--threads must be positive, got 0"):
        bench_sampler.run(_args(bench_sampler, env="navigation-2d", threads=0))


def test_default_args_names_an_unknown_option():
    assert default_args(bench_envs.add_arguments, slots=3).slots == 3
    with pytest.raises(ValueError, match="unknown bench option 'slot'.*'slots'"):
        default_args(bench_envs.add_arguments, slot=3)


def test_sampler_bench_policy_is_the_tanh_mlp_with_its_gaussian_log_density():
    policy = bench_sampler.MLPPolicy(5, 3, device=torch.device("cpu"), seed=4)
    obs = torch.randn(7, 5, generator=torch.Generator().manual_seed(1))
    # The [64, 64] tanh MLP written plainly, from the same weights.
    (w1, b1), (w2, b2), (w3, b3) = policy.layers
    assert [tuple(w.shape) for w, _ in policy.layers] == [(5, 64), (64, 64), (64, 3)]
    mean = torch.tanh(torch.tanh(obs @ w1 + b1) @ w2 + b2) @ w3 + b3
    torch.testing.assert_close(policy.mean(obs), mean)
    action, log_prob = policy.forward(obs)
    expected = torch.distributions.Normal(mean, 0.5).log_prob(action).sum(-1)
    torch.testing.assert_close(log_prob, expected, atol=1e-5, rtol=1e-5)
    assert not torch.equal(action, mean)  # sampled, not the mean
    # The same seed draws the same actions.
    again = bench_sampler.MLPPolicy(5, 3, device=torch.device("cpu"), seed=4).forward(obs)[0]
    torch.testing.assert_close(again, action)


def test_maml_bench_times_the_same_update_both_ways():
    from metarl.bench import maml as bench_maml

    result = bench_maml.run(
        _args(bench_maml, num_tasks=3, episodes=2, steps=5, hidden=[8], repeats=3, devices="cpu", threads=1)
    )
    assert result["problem"]["samples_per_batch"] == 3 * 2 * 5 and result["repeats"] == 3
    cpu = result["results"]["cpu"]
    assert set(result["results"]) == {"cpu"}
    assert len(cpu["vmap_runs_s"]) == len(cpu["loop_runs_s"]) == 3
    assert cpu["vmap_s"] == sorted(cpu["vmap_runs_s"])[1] and cpu["loop_s"] == sorted(cpu["loop_runs_s"])[1]
    assert cpu["loop_over_vmap"] == pytest.approx(cpu["loop_s"] / cpu["vmap_s"])
    # Both contenders took the same update from the same parameters on the same data.
    assert cpu["line_search_steps"]["vmap"] == cpu["line_search_steps"]["loop"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"devices": "tpu"}, "unknown device 'tpu' in --devices"),
        ({"devices": ","}, "--devices names no device"),
        ({"repeats": 2}, "at least 3"),
        ({"num_tasks": 0}, "--num-tasks must be a positive integer, got 0"),
    ],
)
def test_maml_bench_rejects_bad_arguments(overrides, message):
    from metarl.bench import maml as bench_maml

    with pytest.raises(ConfigError, match=message):
        bench_maml.run(_args(bench_maml, **overrides))
