"""VariBAD's belief encoder: a GRU over the trial that outputs the Gaussian posterior q(m | τ:t).

Zintgraf et al. 2020, §4 and Fig. 2; repo ``lmzintgraf/varibad: models/encoder.py``. Each step's
``(state, previous action, previous reward)`` is embedded separately and fed to a GRU; two linear
heads on the GRU state give the mean and log-variance of the posterior over the task embedding
``m``. The embeddings and the GRU are :class:`metarl.agents.rl2.recurrent.RecurrentCore` (the
same core RL² uses), fed the same per-step tuple the sampler hands a policy, so the belief a
policy computes while acting and the belief recomputed from a stored trial are the same numbers.

The prior. VariBAD's ``RNNEncoder.prior`` is the output of the heads on the zero initial hidden
state, and its ELBO takes the KL of that output to N(0, I). Here the heads have no bias and no
layers follow the GRU, so the output on the zero state *is* N(0, I) exactly: ``q_0 = N(0, I)``
for any weights, and the first KL term vanishes by construction.

Time indexing. ``q_t`` is the belief the policy acts on at step ``t``: ``q_0`` is the prior and
``q_t`` (t ≥ 1) has consumed the policy inputs of steps ``1..t``, i.e. ``(a_{k−1}, r_{k−1},
d_{k−1}, s_k)``. Inside an episode ``s_k`` is the next state of transition ``k − 1``, which is
VariBAD's transition tuple; right after an episode ends it is the reset state with the done flag
set, which is what VariBAD's ``VariBadWrapper`` feeds its encoder too. The belief persists
across the episodes of a trial (the BAMDP horizon) and restarts from the prior at each trial.

Shapes: ``T`` time, ``B`` trials, ``H`` GRU width, ``L`` latent dimension.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from metarl.agents.rl2.agent import TrialInputs, evaluate_trials
from metarl.agents.rl2.recurrent import RecurrentCore

__all__ = ["BeliefEncoder", "gaussian_kl", "consecutive_kls"]


class BeliefEncoder(nn.Module):
    """Embeddings → GRU → (mean, log-variance) of q(m | τ:t).

    Args:
        obs_dim: flattened observation size.
        action_dim: previous-action input width (one-hot width for discrete actions).
        latent_dim: L.
        hidden_size: H, the GRU width.
        obs_embedding, action_embedding, reward_embedding: embedding widths (0: raw input).
        layers_before_gru: hidden widths of an MLP between the embeddings and the GRU.
        activation: nonlinearity of the embeddings (VariBAD: ReLU).
        generator: source of every initial weight.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        *,
        latent_dim: int,
        hidden_size: int,
        obs_embedding: int,
        action_embedding: int,
        reward_embedding: int,
        layers_before_gru: Sequence[int] = (),
        activation: str = "relu",
        generator: torch.Generator,
    ):
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.core = RecurrentCore(
            obs_dim,
            action_dim,
            hidden_size=hidden_size,
            num_layers=1,
            obs_embedding=obs_embedding,
            action_embedding=action_embedding,
            reward_embedding=reward_embedding,
            encoder_sizes=layers_before_gru,
            activation=activation,
            generator=generator,
        )
        # Bias-free heads: the output on the zero initial state is N(0, I) exactly (module doc).
        # skip_init: torch's default init would draw from the global RNG; the weights are set below.
        self.mean_head = nn.utils.skip_init(nn.Linear, hidden_size, self.latent_dim, bias=False)
        self.logvar_head = nn.utils.skip_init(nn.Linear, hidden_size, self.latent_dim, bias=False)
        for head in (self.mean_head, self.logvar_head):
            bound = 1.0 / math.sqrt(hidden_size)
            nn.init.uniform_(head.weight, -bound, bound, generator=generator)

    @property
    def hidden_size(self) -> int:
        return self.core.hidden_size

    def heads(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, logvar)``, each ``[..., L]``, from GRU states ``[..., H]``."""
        return self.mean_head(features), self.logvar_head(features)

    def prior(self, batch_size: int, *, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The belief at trial start: ``(hidden[1, B, H] = 0, mean[B, L], logvar[B, L])``, the
        heads' output on the zero state (N(0, I))."""
        hidden = self.core.initial_state(batch_size, device=device)
        mean, logvar = self.heads(hidden[0])
        return hidden, mean, logvar

    def step(
        self,
        obs: torch.Tensor,
        prev_action: torch.Tensor,
        prev_reward: torch.Tensor,
        prev_done: torch.Tensor,
        hidden: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Consume one step's policy inputs ``[B, ...]``; returns ``(hidden[1, B, H], mean[B, L],
        logvar[B, L])``."""
        features, hidden = self.core.step(obs, prev_action, prev_reward, prev_done, hidden)
        mean, logvar = self.heads(features)
        return hidden, mean, logvar

    def forward(self, inputs: TrialInputs, *, tbptt: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The belief the policy acts on at every step of whole trials.

        Args:
            inputs: ``[T, B, ...]`` policy inputs of ``B`` trials (``trial_inputs`` of a batch,
                without normalisers: the encoder sees raw observations and rewards).
            tbptt: truncated backpropagation through time in chunks of this many steps (VariBAD's
                ``tbptt_stepsize``); ``None``: through the whole trial.

        Returns:
            ``(mean[T, B, L], logvar[T, B, L])`` with ``[0]`` the prior and ``[t]`` the posterior
            after the inputs of steps ``1..t``.
        """
        steps, slots = inputs.prev_reward.shape
        _, prior_mean, prior_logvar = self.prior(slots, device=inputs.prev_reward.device)
        if steps == 1:
            return prior_mean.unsqueeze(0), prior_logvar.unsqueeze(0)
        rest = TrialInputs(inputs.obs[1:], inputs.prev_action[1:], inputs.prev_reward[1:], inputs.prev_done[1:])
        start = self.core.initial_state(slots, device=inputs.prev_reward.device)
        chunk = min(tbptt or (steps - 1), steps - 1)
        chunk_states = self.core.chunk_states(rest.obs, rest.prev_action, rest.prev_reward, rest.prev_done, start, chunk=chunk)
        # evaluate_trials runs any module with `core` and `heads` over the chunks side by side.
        mean, logvar = evaluate_trials(self, rest, chunk_states, chunk=chunk)  # type: ignore[arg-type]
        return torch.cat([prior_mean.unsqueeze(0), mean]), torch.cat([prior_logvar.unsqueeze(0), logvar])


def gaussian_kl(
    mean_q: torch.Tensor, logvar_q: torch.Tensor, mean_p: torch.Tensor, logvar_p: torch.Tensor
) -> torch.Tensor:
    """KL(q ‖ p) between diagonal Gaussians, summed over the last axis.

    ``½ Σ_i [log σ²_p − log σ²_q − 1 + σ²_q / σ²_p + (μ_q − μ_p)² / σ²_p]`` (the form of
    ``lmzintgraf/varibad: vae.py compute_kl_loss``).
    """
    var_ratio = torch.exp(logvar_q - logvar_p)
    sq = (mean_q - mean_p).pow(2) * torch.exp(-logvar_p)
    return 0.5 * (logvar_p - logvar_q - 1.0 + var_ratio + sq).sum(-1)


def consecutive_kls(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(q_t ‖ q_{t−1})`` for every step, with ``q_{−1} = N(0, I)``.

    VariBAD's ELBO_t regularises the posterior at ``t`` towards the previous posterior, which
    acts as the prior of step ``t`` (paper eq. 8; ``vae.py compute_kl_loss``: ``mu`` = current,
    ``m`` = previous, ``KL(N(mu, E) ‖ N(m, S))``).

    Args:
        mean, logvar: ``[T, ..., L]`` posteriors in time order.

    Returns:
        ``[T, ...]``.
    """
    prev_mean = torch.cat([torch.zeros_like(mean[:1]), mean[:-1]])
    prev_logvar = torch.cat([torch.zeros_like(logvar[:1]), logvar[:-1]])
    return gaussian_kl(mean, logvar, prev_mean, prev_logvar)
