"""VariBAD's decoders: reward, optional state-transition and optional task decoders.

Zintgraf et al. 2020, §4 (the decoder ``p(τ | m)`` factorises into reward and transition
models conditioned on a task embedding ``m``); repo ``lmzintgraf/varibad: models/decoder.py``
and ``vae.py compute_*_reconstruction_loss``. Each decoder returns a per-element loss (negative
log-likelihood up to constants) and leaves the reduction over ELBO terms, decodes and trials to
:func:`metarl.agents.varibad.vae.elbo_loss`.

Reward decoders:

- ``mse``: ``r̂ = f(m, s')`` (optionally also ``s`` and ``a``) with a squared error, VariBAD's
  ``deterministic`` prediction used on MuJoCo;
- ``bernoulli_multihead``: ``p(r = goal | m, s') = σ(f(m)[cell(s')])`` with one head per cell of
  a discrete grid, VariBAD's gridworld decoder (``multihead_for_reward``, 25 heads on the 5×5
  grid; the Bernoulli target is "the reward is positive": +1 on the goal, −0.1 elsewhere).

Shapes: leading axes ``[...]`` are any mix of ELBO terms, decodes and trials; ``L`` latent
dimension, ``D`` observation size, ``A`` action width.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from metarl.agents.rl2.recurrent import mlp
from metarl.errors import ConfigError

__all__ = ["RewardDecoderKind", "RewardDecoder", "StateDecoder", "TaskDecoder", "GridCells"]

RewardDecoderKind = Literal["mse", "bernoulli_multihead"]

#: Most heads a multi-head reward decoder may have (one per cell of the observation grid).
_MAX_CELLS = 4096


class GridCells:
    """Maps integer-valued observations of a bounded ``Box`` to a cell index (row-major, first
    coordinate slowest): on VariBAD's 5×5 grid ``(x, y) → 5x + y``, its ``task_to_id``.

    Args:
        space: the observation space; must be a ``Box`` with finite integer bounds.
    """

    def __init__(self, space: gym.Space):
        if not isinstance(space, gym.spaces.Box):
            raise ConfigError(f"reward_decoder 'bernoulli_multihead' needs a Box observation space of grid cells, got {space}")
        low, high = np.asarray(space.low, dtype=np.float64).ravel(), np.asarray(space.high, dtype=np.float64).ravel()
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low == np.round(low)) and np.all(high == np.round(high))):
            raise ConfigError(f"reward_decoder 'bernoulli_multihead' needs integer observation bounds, got low={low.tolist()} high={high.tolist()}")
        extents = (high - low + 1).astype(np.int64)
        self.num_cells = int(np.prod(extents))
        if self.num_cells > _MAX_CELLS:
            raise ConfigError(f"reward_decoder 'bernoulli_multihead' would need {self.num_cells} heads (at most {_MAX_CELLS})")
        strides = np.ones_like(extents)
        for i in range(len(extents) - 2, -1, -1):
            strides[i] = strides[i + 1] * extents[i + 1]
        self.low = torch.as_tensor(low, dtype=torch.float32)
        self.strides = torch.as_tensor(strides, dtype=torch.long)

    def index(self, obs: torch.Tensor) -> torch.Tensor:
        """``[...]`` long cell index of observations ``[..., D]``."""
        cells = torch.round(obs - self.low.to(obs.device)).long()
        return (cells * self.strides.to(obs.device)).sum(-1)


def _broadcast_cat(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate along the last axis after broadcasting the leading axes."""
    lead = torch.broadcast_shapes(*(p.shape[:-1] for p in parts))
    return torch.cat([p.expand(*lead, p.shape[-1]) for p in parts], -1)


def _embedding(in_dim: int, width: int, generator: torch.Generator) -> tuple[nn.Module, int]:
    if width <= 0:
        return nn.Identity(), in_dim
    return mlp(in_dim, (width,), None, activation="relu", generator=generator), width


class RewardDecoder(nn.Module):
    """``p(r_{t+1} | m, s_t, a_t, s_{t+1})``.

    Args:
        kind: ``"mse"`` or ``"bernoulli_multihead"`` (module docstring).
        latent_dim: L.
        obs_dim, action_dim: D and A.
        hidden_sizes: hidden widths (ReLU).
        obs_embedding, action_embedding: embedding widths of ``s'``/``s`` and ``a`` (0: raw).
        prev_obs, action: also condition on ``s`` / ``a`` (``mse`` only; VariBAD's
            ``input_prev_state`` / ``input_action``).
        cells: the grid of the multi-head decoder (``bernoulli_multihead`` only).
        generator: source of the initial weights.
    """

    def __init__(
        self,
        kind: str,
        *,
        latent_dim: int,
        obs_dim: int,
        action_dim: int,
        hidden_sizes: Sequence[int],
        obs_embedding: int,
        action_embedding: int,
        prev_obs: bool,
        action: bool,
        cells: GridCells | None,
        generator: torch.Generator,
    ):
        super().__init__()
        self.kind = kind
        self.use_prev_obs = bool(prev_obs)
        self.use_action = bool(action)
        if kind == "bernoulli_multihead":
            if cells is None:
                raise ConfigError("reward_decoder 'bernoulli_multihead' needs the observation grid")
            self.cells = cells
            self.net = mlp(latent_dim, hidden_sizes, cells.num_cells, activation="relu", generator=generator)
        elif kind == "mse":
            self.cells = None
            self.obs_embed, d_obs = _embedding(obs_dim, obs_embedding, generator)
            self.action_embed, d_act = _embedding(action_dim, action_embedding, generator)
            in_dim = latent_dim + d_obs + (d_obs if self.use_prev_obs else 0) + (d_act if self.use_action else 0)
            self.net = mlp(in_dim, hidden_sizes, 1, activation="relu", generator=generator)
        else:
            raise ConfigError(f"unknown reward_decoder {kind!r}; valid choices: 'bernoulli_multihead', 'mse'")

    def forward(
        self, latent: torch.Tensor, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor
    ) -> torch.Tensor:
        """The prediction: the reward (``mse``) or the logit of ``p(r = goal)``
        (``bernoulli_multihead``), ``[...]``, from inputs ``[..., L]``, ``[..., D]``, ``[..., A]``
        and ``[..., D]`` whose leading axes broadcast (the latent of an ELBO term is decoded
        against many transitions without being copied first)."""
        if self.cells is not None:
            # The heads depend on the latent alone: run them once per latent, then pick the
            # head of each transition's next cell.
            logits = self.net(latent)
            index = self.cells.index(next_obs)
            lead = torch.broadcast_shapes(logits.shape[:-1], index.shape)
            picked = logits.expand(*lead, logits.shape[-1]).gather(-1, index.expand(lead).unsqueeze(-1))
            return picked.squeeze(-1)
        parts = [latent, self.obs_embed(next_obs)]
        if self.use_prev_obs:
            parts.append(self.obs_embed(obs))
        if self.use_action:
            parts.append(self.action_embed(action))
        return self.net(_broadcast_cat(parts)).squeeze(-1)

    def loss(
        self, latent: torch.Tensor, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor, reward: torch.Tensor
    ) -> torch.Tensor:
        """Per-element loss ``[...]``: squared error, or binary cross-entropy with target
        ``reward > 0``."""
        pred = self.forward(latent, obs, action, next_obs)
        if self.cells is not None:
            target = (reward > 0).to(pred.dtype).expand_as(pred)
            return F.binary_cross_entropy_with_logits(pred, target, reduction="none")
        return (pred - reward).pow(2)


class StateDecoder(nn.Module):
    """``ŝ_{t+1} = f(m, s_t, a_t)`` with a squared error averaged over the state dimensions
    (VariBAD's ``StateTransitionDecoder``, ``deterministic``)."""

    def __init__(
        self,
        *,
        latent_dim: int,
        obs_dim: int,
        action_dim: int,
        hidden_sizes: Sequence[int],
        obs_embedding: int,
        action_embedding: int,
        generator: torch.Generator,
    ):
        super().__init__()
        self.obs_embed, d_obs = _embedding(obs_dim, obs_embedding, generator)
        self.action_embed, d_act = _embedding(action_dim, action_embedding, generator)
        self.net = mlp(latent_dim + d_obs + d_act, hidden_sizes, obs_dim, activation="relu", generator=generator)

    def loss(self, latent: torch.Tensor, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """Per-element loss ``[...]``."""
        pred = self.net(_broadcast_cat([latent, self.obs_embed(obs), self.action_embed(action)]))
        return (pred - next_obs).pow(2).mean(-1)


class TaskDecoder(nn.Module):
    """``k̂ = f(m)``: regresses the task's parameters from the embedding (VariBAD's
    ``TaskDecoder`` with ``task_description``, after Humplik et al. 2019)."""

    def __init__(self, *, latent_dim: int, task_dim: int, hidden_sizes: Sequence[int], generator: torch.Generator):
        super().__init__()
        self.net = mlp(latent_dim, hidden_sizes, task_dim, activation="relu", generator=generator)

    def loss(self, latent: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Per-element loss ``[...]`` from ``latent[..., L]`` and ``task[..., K]``."""
        return (self.net(latent) - task).pow(2).mean(-1)
