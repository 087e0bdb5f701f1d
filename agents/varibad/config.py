"""Settings of :class:`metarl.agents.varibad.VariBAD`.

Defaults are VariBAD's shared MuJoCo settings (``lmzintgraf/varibad: config/mujoco/
args_cheetah_vel_varibad.py``; reference/papers.md §4.2); ``experiments/varibad/*.yaml`` set
each environment's values and cite their file.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from metarl.config import at_least, positive
from metarl.errors import ConfigError

__all__ = ["VariBADConfig"]


@dataclasses.dataclass(frozen=True)
class VariBADConfig:
    """Settings of :class:`~metarl.agents.varibad.VariBAD` (Zintgraf et al. 2020). Names follow
    the repo's arguments where one exists (``latent_dim``, ``kl_weight``, ``vae_subsample_elbos``…)."""

    # ---------------------------------------------------------------- encoder q(m | τ:t)
    latent_dim: int = positive(5)
    """L, dimension of the task embedding m (``latent_dim``)."""

    encoder_hidden_size: int = positive(128)
    """Width of the encoder's GRU (``encoder_gru_hidden_size``)."""

    encoder_obs_embedding: int = at_least(32, 0)
    """Width of the encoder's state embedding (``state_embedding_size``); 0 feeds the raw state."""

    encoder_action_embedding: int = at_least(16, 0)
    """Width of the encoder's action embedding (``action_embedding_size``); 0 feeds the raw
    (one-hot) action, where VariBAD drops the action altogether."""

    encoder_reward_embedding: int = at_least(16, 0)
    """Width of the encoder's reward embedding (``reward_embedding_size``); 0 feeds the raw reward."""

    encoder_layers_before_gru: tuple[int, ...] = positive(())
    """Hidden widths of an MLP between the embeddings and the GRU (``encoder_layers_before_gru``)."""

    # ---------------------------------------------------------------- decoders p(τ | m)
    decode_reward: bool = True
    """Reconstruct rewards (``decode_reward``)."""

    reward_decoder: Literal["mse", "bernoulli_multihead"] = "mse"
    """``mse``: regress r from (m, s'); ``bernoulli_multihead``: one Bernoulli head per grid cell
    on m alone (VariBAD's gridworld, ``multihead_for_reward``)."""

    reward_decoder_sizes: tuple[int, ...] = positive((64, 32))
    """Hidden widths of the reward decoder (``reward_decoder_layers``)."""

    reward_decoder_prev_obs: bool = False
    """Also condition the ``mse`` reward decoder on the previous state (``input_prev_state``)."""

    reward_decoder_action: bool = False
    """Also condition the ``mse`` reward decoder on the action (``input_action``)."""

    reward_loss_coef: float = at_least(1.0, 0.0)
    """Weight of the reward reconstruction term (``rew_loss_coeff``)."""

    decode_state: bool = False
    """Reconstruct next states with a deterministic transition decoder (``decode_state``)."""

    state_decoder_sizes: tuple[int, ...] = positive((64, 32))
    """Hidden widths of the state decoder (``state_decoder_layers``)."""

    state_loss_coef: float = at_least(1.0, 0.0)
    """Weight of the state reconstruction term (``state_loss_coeff``)."""

    decode_task: bool = False
    """Regress the task's parameters from m (``decode_task`` with ``task_description``)."""

    task_decoder_sizes: tuple[int, ...] = positive((64, 32))
    """Hidden widths of the task decoder (``task_decoder_layers``)."""

    task_loss_coef: float = at_least(1.0, 0.0)
    """Weight of the task reconstruction term (``task_loss_coeff``)."""

    # ---------------------------------------------------------------- ELBO and VAE updates
    kl_weight: float = at_least(0.1, 0.0)
    """Weight of Σ_t KL(q_t ‖ q_{t−1}) (``kl_weight``)."""

    vae_learning_rate: float = positive(1e-3)
    """Adam step size of encoder and decoders (``lr_vae``)."""

    vae_buffer_size: int = positive(10000)
    """Trials kept in the VAE buffer, newest replacing oldest (``size_vae_buffer``)."""

    vae_batch_num_trajs: int = positive(10)
    """Trials per VAE update, drawn without replacement from the buffer (``vae_batch_num_trajs``)."""

    vae_subsample_elbos: int | None = at_least(None, 1)
    """ELBO terms per trial per update, drawn with replacement (``vae_subsample_elbos``);
    ``None``: every step's posterior."""

    vae_subsample_decodes: int | None = at_least(None, 1)
    """Reconstructed transitions per ELBO term, drawn with replacement
    (``vae_subsample_decodes``); ``None``: the whole trial, past and future."""

    vae_avg_elbo_terms: bool = False
    """Average over ELBO terms instead of summing (``vae_avg_elbo_terms``)."""

    vae_avg_reconstruction_terms: bool = False
    """Average over reconstructed transitions instead of summing (``vae_avg_reconstruction_terms``)."""

    num_vae_updates: int = positive(1)
    """VAE gradient steps per iteration, after the policy update (``num_vae_updates``)."""

    vae_max_grad_norm: float | None = positive(None)
    """Clip the gradient norm of the encoder and, separately, of the decoders in VAE updates
    (``encoder_max_grad_norm``/``decoder_max_grad_norm`` of later repo versions); ``None``: no
    clipping (the original code)."""

    tbptt: int | None = at_least(None, 1)
    """Truncated BPTT of the encoder in the ELBO, in chunks of this many steps
    (``tbptt_stepsize``); ``None``: the whole trial."""

    precollect_steps: int = at_least(0, 0)
    """Env steps collected into the VAE buffer before any update (``precollect_len``)."""

    checkpoint_vae_buffer: bool = True
    """Save the VAE buffer's contents in checkpoints (exact resume); without it a resumed run
    starts from an empty buffer (its sampling generator is restored either way)."""

    # ---------------------------------------------------------------- policy π(a | s, q_t)
    policy_obs_embedding: int = at_least(64, 0)
    """Width of the policy's state embedding (``policy_state_embedding_dim``); 0: raw state."""

    policy_latent_embedding: int = at_least(64, 0)
    """Width of the policy's embedding of (mean, log-variance) (``policy_latent_embedding_dim``);
    0: raw."""

    policy_sizes: tuple[int, ...] = positive((128, 128))
    """Hidden widths of the actor and of the critic (``policy_layers``)."""

    activation: Literal["tanh", "relu"] = "tanh"
    """Nonlinearity of the policy (``policy_activation_function``)."""

    init_std: float = positive(1.0)
    """Initial standard deviation of the Gaussian head (continuous actions; ``policy_init_std``)."""

    rl_loss_through_encoder: bool = False
    """Backpropagate the PPO loss into the encoder (``rlloss_through_encoder``); then each PPO
    minibatch also takes a VAE step on ``vae_loss_coef`` × the ELBO loss and the separate VAE
    updates are skipped, as in VariBAD's PPO."""

    vae_loss_coef: float = at_least(1.0, 0.0)
    """Weight of the ELBO loss added to the PPO loss when ``rl_loss_through_encoder``."""

    normalize_observations: bool = True
    """Standardise the policy's state input by running statistics (``norm_state_for_policy``)."""

    normalize_latents: bool = True
    """Standardise the policy's (mean, log-variance) input (``norm_latent_for_policy``)."""

    normalize_rewards: bool = True
    """Divide the PPO rewards by the running std of the discounted return (``norm_rew_for_policy``);
    the encoder always sees raw rewards."""

    # ---------------------------------------------------------------- PPO
    episodes_per_trial: int | None = at_least(None, 1)
    """Episodes per trial (BAMDP horizon) while training; ``None``: the distribution's preset."""

    trials_per_task: int = positive(1)
    """Trials collected per task per iteration (``run.num_tasks`` tasks per iteration)."""

    discount: float = dataclasses.field(default=0.97, metadata={"gt": 0})
    """γ over the whole trial (``policy_gamma``)."""

    gae_lambda: float = at_least(0.9, 0.0)
    """λ of GAE over the trial (``policy_tau``)."""

    learning_rate: float = positive(7e-4)
    """Adam step size of the policy (``lr_policy``)."""

    adam_eps: float = positive(1e-8)
    """Adam ε of the policy (``policy_eps``)."""

    epochs: int = positive(2)
    """PPO passes over each batch (``ppo_num_epochs``)."""

    num_minibatches: int = positive(4)
    """Minibatches per epoch over the batch's steps (``ppo_num_minibatch``)."""

    clip: float = positive(0.1)
    """ε of the clipped surrogate (``ppo_clip_param``)."""

    value_clip: float | None = positive(0.1)
    """ε of the clipped value loss (VariBAD clips with ``ppo_clip_param``); ``None``: no clipping."""

    huber_delta: float | None = positive(1.0)
    """δ of the Huber value loss (``ppo_use_huberloss``); ``None``: squared error."""

    value_coef: float = at_least(0.5, 0.0)
    """Weight of the value loss (``policy_value_loss_coef``)."""

    entropy_coef: float = at_least(0.01, 0.0)
    """Weight of the entropy bonus (``policy_entropy_coef``)."""

    max_grad_norm: float | None = positive(0.5)
    """Clip the policy's (and, with ``rl_loss_through_encoder``, the encoder's) gradient norm."""

    normalize_advantages: bool = True
    """Standardise advantages over the whole batch, as VariBAD's PPO does."""

    def __post_init__(self) -> None:
        if not 0.0 < self.discount <= 1.0:
            raise ConfigError(f"discount must be in (0, 1], got discount={self.discount!r}")
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise ConfigError(f"gae_lambda must be in [0, 1], got gae_lambda={self.gae_lambda!r}")
        if not (self.decode_reward or self.decode_state or self.decode_task):
            raise ConfigError("VariBAD needs a decoder: set decode_reward, decode_state or decode_task to true")
