"""Returns, advantages and the linear feature baseline, as pure functions on time-major tensors.

Every function takes ``[T, B]`` tensors (time first, slots second) with a validity ``mask``;
padded steps (``mask == False``) contribute nothing and get zeros.

Two flags steer the recursions, and they are different signals (design §6.6):

- ``terminated[t]``: the MDP reached a terminal state, so the value of the next state is 0;
- ``ends[t]``: the recursion stops after step ``t`` (an episode ended by termination *or*
  time-limit truncation, or, for RL², only the end of the trial). Truncation ends the recursion
  but still bootstraps from ``V(next_observation)``.
"""

from __future__ import annotations

import torch

__all__ = ["discounted_returns", "gae", "linear_baseline_features", "fit_linear_baseline"]


def discounted_returns(
    rewards: torch.Tensor,
    *,
    discount: float,
    ends: torch.Tensor,
    mask: torch.Tensor | None = None,
    bootstrap: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reward-to-go ``G_t = r_t + γ G_{t+1}``, restarting after every step with ``ends``.

    Args:
        rewards: ``[T, B]`` rewards.
        discount: γ.
        ends: ``[T, B]`` bool, the sequence ends after this step.
        mask: ``[T, B]`` bool validity; invalid steps return 0.
        bootstrap: ``[T, B]`` value added as ``γ·bootstrap[t]`` where ``ends[t]`` (e.g. the value
            of the last observation of a truncated episode, 0 where terminated). ``None``: 0.

    Returns:
        ``[T, B]`` discounted returns.
    """
    mask = torch.ones_like(rewards, dtype=torch.bool) if mask is None else mask
    rewards = torch.where(mask, rewards, torch.zeros_like(rewards))
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        tail = torch.zeros_like(running) if bootstrap is None else bootstrap[t]
        running = rewards[t] + discount * torch.where(ends[t], tail, running)
        running = torch.where(mask[t], running, torch.zeros_like(running))
        out[t] = running
    return out


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    *,
    terminated: torch.Tensor,
    ends: torch.Tensor,
    discount: float,
    gae_lambda: float,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16).

    ``δ_t = r_t + γ (1 − terminated_t) V(s_{t+1}) − V(s_t)`` and
    ``A_t = δ_t + γλ (1 − ends_t) A_{t+1}``. Truncation (``ends`` without ``terminated``)
    bootstraps from ``next_values``; termination does not.

    Args:
        rewards, values, next_values: ``[T, B]``; ``next_values[t]`` is ``V(s_{t+1})`` (for an
            episode that ends at ``t``, the value of its final observation).
        terminated: ``[T, B]`` bool.
        ends: ``[T, B]`` bool, the advantage recursion stops after this step.
        discount: γ.
        gae_lambda: λ.
        mask: ``[T, B]`` bool validity.

    Returns:
        ``(advantages, returns)``, each ``[T, B]``, with ``returns = advantages + values``;
        zeros where ``mask`` is False.
    """
    mask = torch.ones_like(rewards, dtype=torch.bool) if mask is None else mask
    zeros = torch.zeros_like(rewards[0])
    not_terminal = (~terminated).to(rewards.dtype)
    deltas = rewards + discount * not_terminal * next_values - values
    advantages = torch.zeros_like(rewards)
    running = zeros
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = deltas[t] + discount * gae_lambda * torch.where(ends[t], zeros, running)
        running = torch.where(mask[t], running, zeros)
        advantages[t] = running
    returns = torch.where(mask, advantages + values, torch.zeros_like(values))
    return advantages, returns


def linear_baseline_features(observations: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """Features ``[o, o², t, t², t³, 1]`` of the linear baseline (Duan et al. 2016, "Benchmarking
    deep RL"; rllab's ``LinearFeatureBaseline``), with observations clipped to [−10, 10] and
    ``t = step / 100``.

    Args:
        observations: ``[T, B, D]``.
        step: ``[T, B]`` time step within the episode.

    Returns:
        ``[T, B, 2D + 4]`` features.
    """
    o = observations.clamp(-10.0, 10.0)
    t = (step.to(o.dtype) / 100.0).unsqueeze(-1)
    return torch.cat([o, o * o, t, t * t, t * t * t, torch.ones_like(t)], dim=-1)


def fit_linear_baseline(
    observations: torch.Tensor,
    step: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    group: torch.Tensor,
    *,
    num_groups: int | None = None,
    reg_coeff: float = 1e-5,
) -> torch.Tensor:
    """Fit one ridge regression of returns on :func:`linear_baseline_features` per group (per
    task, as MAML refits the baseline per task) and return its predictions.

    Solves ``(XᵀX + c I) w = Xᵀy`` for each group with all groups in one batched solve; like rllab,
    ``c`` starts at ``reg_coeff`` and grows ×10 (up to 5 times) while the solution is not finite.

    Args:
        observations: ``[T, B, D]``.
        step: ``[T, B]`` time step within the episode.
        returns: ``[T, B]`` regression targets.
        mask: ``[T, B]`` bool; only valid steps are fitted and predicted.
        group: ``[B]`` long group of each slot (the task index).
        num_groups: number of groups (default ``group.max() + 1``).
        reg_coeff: initial ridge coefficient.

    Returns:
        ``[T, B]`` baseline values (0 where ``mask`` is False).
    """
    dtype = returns.dtype
    feats = linear_baseline_features(observations.to(dtype), step)  # [T, B, F]
    # torch.where, not a product with the mask: a padded NaN times 0 would still be NaN.
    feats_masked = torch.where(mask.unsqueeze(-1), feats, torch.zeros_like(feats))
    returns = torch.where(mask, returns, torch.zeros_like(returns))
    num_groups = int(group.max().item()) + 1 if num_groups is None else num_groups
    nf = feats.shape[-1]
    # Per-slot normal equations, then summed per group with index_add over the slot axis.
    xtx_slot = torch.einsum("tbf,tbg->bfg", feats_masked, feats_masked)
    xty_slot = torch.einsum("tbf,tb->bf", feats_masked, returns)
    xtx = torch.zeros(num_groups, nf, nf, dtype=dtype, device=returns.device).index_add_(0, group, xtx_slot)
    xty = torch.zeros(num_groups, nf, dtype=dtype, device=returns.device).index_add_(0, group, xty_slot)
    eye = torch.eye(nf, dtype=dtype, device=returns.device)
    coeff = reg_coeff
    for _ in range(5):
        weights = torch.linalg.solve(xtx + coeff * eye, xty.unsqueeze(-1)).squeeze(-1)  # [G, F]
        if torch.isfinite(weights).all():
            break
        coeff *= 10.0
    values = torch.einsum("tbf,bf->tb", feats_masked, weights[group])
    return torch.where(mask, values, torch.zeros_like(values))
