"""PPO loss terms and the running normaliser against numbers computed by hand."""

import math

import numpy as np
import pytest
import torch

from metarl.errors import ConfigError
from metarl.ppo import (
    RunningMeanStd,
    approx_kl,
    clip_fraction,
    clipped_surrogate_loss,
    entropy_bonus,
    masked_mean,
    normalize_advantages,
    value_loss,
)

# Four steps with ratios 1.5, 0.5, 1.1, 2.0 and advantages 2, 1, -1, 3; the last step is padding.
RATIOS = torch.tensor([1.5, 0.5, 1.1, 2.0], dtype=torch.float64)
OLD = torch.tensor([-1.0, -0.3, -2.0, -0.7], dtype=torch.float64)
ADV = torch.tensor([2.0, 1.0, -1.0, 3.0], dtype=torch.float64)
MASK = torch.tensor([True, True, True, False])


def test_clipped_surrogate_hand_computed():
    log_prob = OLD + RATIOS.log()
    loss = clipped_surrogate_loss(log_prob, OLD, ADV, clip=0.2, mask=MASK)
    # min(ρA, clip(ρ)A): min(3, 2.4)=2.4; min(0.5, 0.8)=0.5; min(-1.1, -1.1)=-1.1; padded step ignored
    assert loss.item() == pytest.approx(-(2.4 + 0.5 - 1.1) / 3, abs=1e-12)
    unmasked = clipped_surrogate_loss(log_prob, OLD, ADV, clip=0.2)
    assert unmasked.item() == pytest.approx(-(2.4 + 0.5 - 1.1 + 3.6) / 4, abs=1e-12)


def test_clipped_surrogate_gradient_is_zero_where_clipped():
    log_prob = (OLD + RATIOS.log()).clone().requires_grad_(True)
    clipped_surrogate_loss(log_prob, OLD, ADV, clip=0.2, mask=MASK).backward()
    # d/dlogπ of −ρA/3 is −ρA/3 where the unclipped branch is active; 0 where clipped or padded.
    expected = [0.0, -0.5 * 1.0 / 3, 1.1 / 3, 0.0]
    np.testing.assert_allclose(log_prob.grad.numpy(), expected, atol=1e-12)


def test_value_loss_hand_computed_plain_and_clipped():
    values = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)
    returns = torch.tensor([2.0, 0.0, 0.5], dtype=torch.float64)
    old = torch.tensor([1.5, 1.0, 0.0], dtype=torch.float64)
    plain = value_loss(values, returns)
    assert plain.item() == pytest.approx(0.5 * (1.0 + 4.0 + 0.25) / 3)
    clipped = value_loss(values, returns, old_values=old, clip=0.2)
    # clipped values: 1.5-0.2=1.3 (err .7), 1.0+0.2=1.2 (err 1.2), 0.0 (err .5); take the larger
    # squared error per element: max(1, .49)=1, max(4, 1.44)=4, .25
    assert clipped.item() == pytest.approx(0.5 * (1.0 + 4.0 + 0.25) / 3)
    old2 = torch.tensor([2.5, 0.1, 0.0], dtype=torch.float64)
    clipped2 = value_loss(values, returns, old_values=old2, clip=0.2, mask=torch.tensor([True, True, False]))
    # clipped values: 2.3 (err .3 -> max(1, .09)=1), 0.3 (err .3 -> max(4, .09)=4)
    assert clipped2.item() == pytest.approx(0.5 * (1.0 + 4.0) / 2)
    old3 = torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64)
    clipped3 = value_loss(values, returns, old_values=old3, clip=0.2)
    # clipped values 0.2 (err 1.8 -> 3.24 > 1), 0.2 (err .2 -> 4 wins), 0.0 (.25)
    assert clipped3.item() == pytest.approx(0.5 * (3.24 + 4.0 + 0.25) / 3)


def test_value_loss_huber():
    values = torch.tensor([0.0, 0.0], dtype=torch.float64)
    returns = torch.tensor([0.5, 3.0], dtype=torch.float64)
    loss = value_loss(values, returns, huber_delta=1.0)
    assert loss.item() == pytest.approx((0.5 * 0.25 + (3.0 - 0.5)) / 2)


def test_value_loss_clip_needs_old_values():
    with pytest.raises(ConfigError, match="old_values"):
        value_loss(torch.zeros(2), torch.zeros(2), clip=0.2)
    with pytest.raises(ConfigError, match="clip=-0.1"):
        clipped_surrogate_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), clip=-0.1)


def test_entropy_bonus_masked_mean():
    entropy = torch.tensor([[1.0, 2.0], [3.0, 100.0]])
    mask = torch.tensor([[True, True], [True, False]])
    assert entropy_bonus(entropy, mask=mask).item() == pytest.approx(2.0)
    assert entropy_bonus(entropy).item() == pytest.approx(26.5)
    assert masked_mean(entropy, torch.zeros_like(mask)).item() == 0.0


def test_approx_kl_and_clip_fraction():
    log_prob = OLD + RATIOS.log()
    kl = approx_kl(log_prob, OLD, mask=MASK)
    expected = np.mean([r - 1 - math.log(r) for r in (1.5, 0.5, 1.1)])
    assert kl.item() == pytest.approx(expected, abs=1e-12)
    assert clip_fraction(log_prob, OLD, clip=0.2, mask=MASK).item() == pytest.approx(2 / 3)


def test_normalize_advantages_masked():
    out = normalize_advantages(ADV, mask=MASK)
    valid = ADV[:3]
    expected = (valid - valid.mean()) / (valid.var(unbiased=False).sqrt() + 1e-8)
    np.testing.assert_allclose(out[:3].numpy(), expected.numpy(), atol=1e-12)
    assert out[3].item() == 0.0


def test_running_mean_std_matches_numpy_over_batches():
    gen = torch.Generator().manual_seed(0)
    data = torch.randn(50, 3, generator=gen, dtype=torch.float64) * 2.0 + 5.0
    rms = RunningMeanStd((3,), epsilon=0.0, clip=None)
    rms.update(data[:20])
    rms.update(data[20:].reshape(3, 10, 3))
    np.testing.assert_allclose(rms.mean.numpy(), data.mean(0).numpy(), atol=1e-12)
    np.testing.assert_allclose(rms.var.numpy(), data.var(0, unbiased=False).numpy(), atol=1e-12)
    assert rms.count.item() == 50
    x = torch.tensor([[5.0, 5.0, 5.0]])
    expected = (x.double() - data.mean(0)) / torch.sqrt(data.var(0, unbiased=False) + 1e-8)
    torch.testing.assert_close(rms.normalize(x), expected.float())


def test_running_mean_std_mask_clip_and_state_dict():
    rms = RunningMeanStd((), epsilon=0.0, clip=1.0)
    rms.update(torch.tensor([[1.0, 3.0], [1000.0, 5.0]]), mask=torch.tensor([[True, True], [False, True]]))
    assert rms.mean.item() == pytest.approx(3.0)
    assert rms.var.item() == pytest.approx(8.0 / 3.0)
    assert rms.normalize(torch.tensor(100.0)).item() == 1.0
    assert rms.normalize(torch.tensor(1.0), center=False).item() == pytest.approx(1 / math.sqrt(8 / 3 + 1e-8))
    other = RunningMeanStd((), epsilon=0.0, clip=1.0)
    other.load_state_dict(rms.state_dict())
    assert other.mean.item() == rms.mean.item() and other.count.item() == 3
    rms.update(torch.tensor([7.0]))  # the copy does not alias the original's statistics
    assert other.count.item() == 3
    with pytest.raises(ValueError, match="shape"):
        RunningMeanStd((2,)).update(torch.zeros(4, 3))
