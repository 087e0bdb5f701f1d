"""Returns, GAE and the linear baseline against numbers computed by hand."""

import numpy as np
import pytest
import torch

from metarl.returns import discounted_returns, fit_linear_baseline, gae, linear_baseline_features

# One slot: a 2-step episode truncated by the time limit at t=1 (final-observation value 2.0),
# then a 2-step episode that terminates at t=3, then one padded step.
REWARDS = torch.tensor([[1.0], [2.0], [3.0], [4.0], [0.0]], dtype=torch.float64)
TERMINATED = torch.tensor([[False], [False], [False], [True], [False]])
ENDS = torch.tensor([[False], [True], [False], [True], [True]])
MASK = torch.tensor([[True], [True], [True], [True], [False]])


def test_gae_hand_computed_with_truncation_and_termination():
    values = torch.full((5, 1), 0.5, dtype=torch.float64)
    next_values = torch.tensor([[0.5], [2.0], [0.5], [7.0], [0.0]], dtype=torch.float64)
    adv, ret = gae(
        REWARDS, values, next_values, terminated=TERMINATED, ends=ENDS, discount=0.9, gae_lambda=0.8, mask=MASK
    )
    # deltas: 1+.45-.5=.95, 2+1.8-.5=3.3 (bootstrap through truncation), 2.95, 4-.5=3.5 (terminal)
    expected_adv = [0.95 + 0.72 * 3.3, 3.3, 2.95 + 0.72 * 3.5, 3.5, 0.0]
    np.testing.assert_allclose(adv[:, 0].numpy(), expected_adv, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ret[:, 0].numpy(), [3.826, 3.8, 5.97, 4.0, 0.0], atol=1e-12)


def test_gae_lambda_one_equals_discounted_returns_minus_values():
    gen = torch.Generator().manual_seed(0)
    rewards = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    values = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    terminated = torch.zeros(6, 3, dtype=torch.bool)
    terminated[5] = True
    ends = terminated.clone()
    next_values = torch.cat([values[1:], torch.zeros(1, 3, dtype=torch.float64)])
    adv, _ = gae(rewards, values, next_values, terminated=terminated, ends=ends, discount=0.99, gae_lambda=1.0)
    g = discounted_returns(rewards, discount=0.99, ends=ends)
    torch.testing.assert_close(adv, g - values)


def test_advantages_do_not_cut_where_ends_is_false():
    """RL² passes ends = trial end only: an inner episode boundary must not stop the recursion."""
    rewards = torch.tensor([[0.0], [0.0], [1.0]], dtype=torch.float64)
    zeros = torch.zeros(3, 1, dtype=torch.float64)
    trial_end = torch.tensor([[False], [False], [True]])
    adv, _ = gae(rewards, zeros, zeros, terminated=trial_end, ends=trial_end, discount=0.5, gae_lambda=1.0)
    np.testing.assert_allclose(adv[:, 0].numpy(), [0.25, 0.5, 1.0])


def test_discounted_returns_hand_computed():
    bootstrap = torch.tensor([[0.0], [2.0], [0.0], [0.0], [0.0]], dtype=torch.float64)
    g = discounted_returns(REWARDS, discount=0.9, ends=ENDS, mask=MASK, bootstrap=bootstrap)
    np.testing.assert_allclose(g[:, 0].numpy(), [1 + 0.9 * 3.8, 3.8, 3 + 0.9 * 4, 4.0, 0.0], atol=1e-12)


def test_linear_baseline_features_layout():
    obs = torch.tensor([[[2.0, -20.0]]])
    step = torch.tensor([[50]])
    f = linear_baseline_features(obs, step)
    np.testing.assert_allclose(f[0, 0].numpy(), [2, -10, 4, 100, 0.5, 0.25, 0.125, 1.0])


def test_linear_baseline_fits_each_group_separately_and_matches_ridge():
    gen = torch.Generator().manual_seed(3)
    t_len, b, d = 7, 4, 2
    obs = torch.randn(t_len, b, d, generator=gen, dtype=torch.float64)
    step = torch.arange(t_len).unsqueeze(1).expand(t_len, b)
    mask = torch.ones(t_len, b, dtype=torch.bool)
    mask[5:, 3] = False
    group = torch.tensor([0, 0, 1, 1])
    feats = linear_baseline_features(obs, step)
    w_true = torch.randn(2, feats.shape[-1], generator=gen, dtype=torch.float64)
    targets = torch.einsum("tbf,bf->tb", feats, w_true[group])
    values = fit_linear_baseline(obs, step, targets, mask, group, reg_coeff=1e-10)
    # Exactly linear targets are recovered per group; padded steps are 0.
    torch.testing.assert_close(values[mask], targets[mask], atol=1e-6, rtol=1e-6)
    assert torch.all(values[~mask] == 0)
    # Against an explicit numpy ridge solve for group 1 with the default coefficient.
    noisy = targets + torch.randn(t_len, b, generator=gen, dtype=torch.float64)
    values = fit_linear_baseline(obs, step, noisy, mask, group)
    sel = mask[:, 2:]
    x = feats[:, 2:][sel].numpy()
    y = noisy[:, 2:][sel].numpy()
    w = np.linalg.solve(x.T @ x + 1e-5 * np.eye(x.shape[1]), x.T @ y)
    np.testing.assert_allclose(values[:, 2:][sel].numpy(), x @ w, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masked_steps_are_zero(dtype):
    rewards = torch.ones(3, 2, dtype=dtype)
    mask = torch.tensor([[True, True], [True, False], [False, False]])
    ends = torch.tensor([[False, False], [True, True], [True, True]])
    g = discounted_returns(rewards, discount=1.0, ends=ends, mask=mask)
    np.testing.assert_allclose(g.numpy(), [[2, 1], [1, 0], [0, 0]])


def test_linear_baseline_ignores_whatever_padded_steps_hold():
    """Padded steps contribute nothing, even when they hold NaN or huge values."""
    gen = torch.Generator().manual_seed(5)
    obs = torch.randn(6, 3, 2, generator=gen, dtype=torch.float64)
    step = torch.arange(6).unsqueeze(1).expand(6, 3)
    returns = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    mask = torch.ones(6, 3, dtype=torch.bool)
    mask[4:, 1] = False
    group = torch.tensor([0, 0, 1])
    clean = fit_linear_baseline(obs, step, returns, mask, group)
    dirty_obs, dirty_returns = obs.clone(), returns.clone()
    dirty_obs[4:, 1] = float("nan")
    dirty_returns[4:, 1] = float("inf")
    dirty = fit_linear_baseline(dirty_obs, step, dirty_returns, mask, group)
    torch.testing.assert_close(dirty, clean, rtol=0, atol=0)
    assert torch.all(dirty[~mask] == 0)
