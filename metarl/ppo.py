"""The maths of proximal policy optimisation as pure functions, plus a running normaliser.

Every loss takes tensors of any matching shape (typically time-major ``[T, B]``) and an optional
boolean validity ``mask`` of the same shape; padded steps contribute nothing and every mean is
taken over the valid elements only. Losses are returned as scalars to *minimise*.

Reference: Schulman et al. 2017, "Proximal Policy Optimization Algorithms" (arXiv 1707.06347),
eq. 7 (clipped surrogate) and eq. 9 (value and entropy terms); the clipped value loss follows the
OpenAI baselines ``ppo2`` implementation, and the ``approx_kl`` estimator is Schulman's
"Approximating KL divergence" (2020) k3 estimator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from metarl.errors import ConfigError

__all__ = [
    "masked_mean",
    "clipped_surrogate_loss",
    "value_loss",
    "entropy_bonus",
    "approx_kl",
    "clip_fraction",
    "normalize_advantages",
    "RunningMeanStd",
]


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``x`` over the elements where ``mask`` is True (all when ``None``).

    Args:
        x: any shape.
        mask: bool, same shape as ``x`` (or broadcastable to it); ``None`` means all valid.

    Returns:
        A scalar; 0 when no element is valid (so an empty minibatch adds no gradient).
    """
    if mask is None:
        return x.mean()
    m = mask.to(x.dtype).expand_as(x)
    return (x * m).sum() / m.sum().clamp(min=1.0)


def clipped_surrogate_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    *,
    clip: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """PPO's clipped surrogate objective, negated (Schulman et al. 2017, eq. 7).

    ``L = −mean[min(ρ A, clip(ρ, 1 − ε, 1 + ε) A)]`` with ``ρ = exp(log π − log π_old)``.

    Args:
        log_prob: log π(a|s) under the current parameters (carries the gradient).
        old_log_prob: log π_old(a|s) from the rollout (treated as a constant).
        advantages: advantage estimates (treated as constants).
        clip: ε, the clipping range (> 0).
        mask: bool validity, same shape.

    Returns:
        Scalar loss to minimise.
    """
    if clip <= 0:
        raise ConfigError(f"PPO clip must be positive, got clip={clip!r}")
    ratio = torch.exp(log_prob - old_log_prob.detach())
    advantages = advantages.detach()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip, 1.0 + clip) * advantages
    return -masked_mean(torch.minimum(unclipped, clipped), mask)


def value_loss(
    values: torch.Tensor,
    returns: torch.Tensor,
    *,
    old_values: torch.Tensor | None = None,
    clip: float | None = None,
    mask: torch.Tensor | None = None,
    huber_delta: float | None = None,
) -> torch.Tensor:
    """Value-function regression loss ``½ mean[(V − R)²]``, optionally clipped and/or Huber.

    With ``clip`` (and ``old_values``) it is the pessimistic clipped form of OpenAI baselines'
    ``ppo2``: ``½ mean[max((V − R)², (V_old + clip(V − V_old, −ε, ε) − R)²)]``. With
    ``huber_delta`` the squared error ``½e²`` is replaced by the Huber loss (quadratic within
    ``δ``, linear beyond), as VariBAD's PPO does (``use_huberloss``).

    Args:
        values: V(s) under the current parameters.
        returns: regression targets (constants).
        old_values: V(s) from the rollout; required when ``clip`` is set.
        clip: ε for value clipping; ``None`` disables it.
        mask: bool validity, same shape.
        huber_delta: δ of the Huber loss; ``None`` gives the squared error.

    Returns:
        Scalar loss to minimise.
    """
    returns = returns.detach()

    def per_element(v: torch.Tensor) -> torch.Tensor:
        err = v - returns
        if huber_delta is None:
            return 0.5 * err * err
        return torch.nn.functional.huber_loss(v, returns, reduction="none", delta=huber_delta)

    loss = per_element(values)
    if clip is not None:
        if old_values is None:
            raise ConfigError("value_loss with clip set needs old_values (the rollout's value estimates)")
        if clip <= 0:
            raise ConfigError(f"value clip must be positive, got clip={clip!r}")
        old_values = old_values.detach()
        clipped = old_values + (values - old_values).clamp(-clip, clip)
        loss = torch.maximum(loss, per_element(clipped))
    return masked_mean(loss, mask)


def entropy_bonus(entropy: torch.Tensor, *, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean policy entropy over valid steps: the bonus to *maximise* (subtract ``c·bonus`` from
    the loss; Schulman et al. 2017, eq. 9).

    Args:
        entropy: per-step entropy of π(·|s).
        mask: bool validity, same shape.

    Returns:
        Scalar mean entropy.
    """
    return masked_mean(entropy, mask)


def approx_kl(log_prob: torch.Tensor, old_log_prob: torch.Tensor, *, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Estimate of KL(π_old ‖ π) from samples of π_old: ``mean[(ρ − 1) − log ρ]`` (the unbiased,
    non-negative k3 estimator), a diagnostic that carries no gradient.

    Args:
        log_prob: log π(a|s) under the current parameters.
        old_log_prob: log π_old(a|s) from the rollout.
        mask: bool validity, same shape.

    Returns:
        Scalar, detached.
    """
    with torch.no_grad():
        log_ratio = log_prob - old_log_prob
        return masked_mean(torch.expm1(log_ratio) - log_ratio, mask)


def clip_fraction(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, *, clip: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Share of valid steps whose ratio ``ρ`` lies outside ``[1 − ε, 1 + ε]`` (a diagnostic)."""
    with torch.no_grad():
        ratio = torch.exp(log_prob - old_log_prob)
        outside = ((ratio - 1.0).abs() > clip).to(log_prob.dtype)
        return masked_mean(outside, mask)


def normalize_advantages(
    advantages: torch.Tensor, *, mask: torch.Tensor | None = None, eps: float = 1e-8
) -> torch.Tensor:
    """Advantages shifted and scaled to mean 0 and standard deviation 1 over the valid steps;
    invalid steps are set to 0.

    Args:
        advantages: any shape.
        mask: bool validity, same shape.
        eps: added to the standard deviation.

    Returns:
        Tensor of the same shape.
    """
    mean = masked_mean(advantages, mask)
    var = masked_mean((advantages - mean) ** 2, mask)
    out = (advantages - mean) / (var.sqrt() + eps)
    return out if mask is None else torch.where(mask, out, torch.zeros_like(out))


class RunningMeanStd:
    """Running mean and variance of a stream of batches, for observation and reward normalisation.

    Batches are merged with the parallel algorithm of Chan, Golub and LeVeque (1979), the same
    update as OpenAI baselines' ``RunningMeanStd`` and SB3's ``VecNormalize``. Statistics are kept
    in float64. For rewards, the usual recipe (VecNormalize, VariBAD) feeds the discounted
    returns to :meth:`update` and divides rewards by :attr:`std` without centring
    (``normalize(r, center=False)``).

    Args:
        shape: the shape of one sample (``()`` for scalars, ``(D,)`` for observations).
        epsilon: initial pseudo-count, so the first normalisations are finite.
        clip: normalised values are clipped to ``[−clip, clip]``; ``None`` disables clipping.
        device: where the statistics live.
    """

    def __init__(
        self,
        shape: Sequence[int] = (),
        *,
        epsilon: float = 1e-4,
        clip: float | None = 10.0,
        device: str | torch.device = "cpu",
    ):
        self.shape = tuple(int(s) for s in shape)
        self.epsilon = float(epsilon)
        self.clip = clip
        self.mean = torch.zeros(self.shape, dtype=torch.float64, device=device)
        self.var = torch.ones(self.shape, dtype=torch.float64, device=device)
        self.count = torch.tensor(self.epsilon, dtype=torch.float64, device=device)

    @property
    def std(self) -> torch.Tensor:
        """``sqrt(var + 1e-8)``, float64, of shape ``shape``."""
        return torch.sqrt(self.var + 1e-8)

    @torch.no_grad()
    def update(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Merge the samples of ``x`` (``[..., *shape]``) into the statistics.

        Args:
            x: samples; leading axes are batch axes.
            mask: bool over the batch axes of ``x``; only True samples are counted.
        """
        nd = len(self.shape)
        if tuple(x.shape[x.dim() - nd :]) != self.shape:
            raise ValueError(f"RunningMeanStd of shape {self.shape} got samples of shape {tuple(x.shape)}")
        flat = x.reshape(-1, *self.shape).to(self.mean)
        if mask is not None:
            flat = flat[mask.reshape(-1).to(flat.device)]
        n = flat.shape[0]
        if n == 0:
            return
        batch_mean = flat.mean(0)
        batch_var = flat.var(0, unbiased=False)
        delta = batch_mean - self.mean
        total = self.count + n
        self.mean = self.mean + delta * (n / total)
        m2 = self.var * self.count + batch_var * n + delta * delta * (self.count * n / total)
        self.var = m2 / total
        self.count = total

    def normalize(self, x: torch.Tensor, *, center: bool = True) -> torch.Tensor:
        """``(x − mean) / std`` (or ``x / std`` without ``center``), clipped, in ``x``'s dtype."""
        mean = self.mean.to(device=x.device, dtype=x.dtype)
        std = self.std.to(device=x.device, dtype=x.dtype)
        out = (x - mean) / std if center else x / std
        return out if self.clip is None else out.clamp(-self.clip, self.clip)

    def state_dict(self) -> dict[str, Any]:
        """The statistics, as tensors (checkpointable with ``torch.save``)."""
        return {"mean": self.mean.clone(), "var": self.var.clone(), "count": self.count.clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (onto this normaliser's device)."""
        mean = torch.as_tensor(state["mean"], dtype=torch.float64)
        if tuple(mean.shape) != self.shape:
            raise ValueError(f"RunningMeanStd of shape {self.shape} cannot load statistics of shape {tuple(mean.shape)}")
        device = self.mean.device
        self.mean = mean.to(device).clone()
        self.var = torch.as_tensor(state["var"], dtype=torch.float64).to(device).clone()
        self.count = torch.as_tensor(state["count"], dtype=torch.float64).to(device).clone()
