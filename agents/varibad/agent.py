"""VariBAD: a policy that acts on a learned belief over tasks, trained with PPO beside a VAE.

Zintgraf et al. 2020, "VariBAD: A Very Good Method for Bayes-Adaptive Deep RL via
Meta-Learning" (ICLR 2020); repo ``lmzintgraf/varibad`` (``metalearner.py``, ``vae.py``,
``algorithms/ppo.py``). A recurrent encoder turns the trial so far into a Gaussian posterior
``q(m | τ:t)`` over a task embedding (:mod:`~metarl.agents.varibad.encoder`); decoders
reconstruct the trial's rewards (and optionally transitions and task) from samples of it
(:mod:`~metarl.agents.varibad.decoder`); the ELBO trains both on trials from a buffer
(:mod:`~metarl.agents.varibad.vae`). A feed-forward policy acts on the state and the belief's
mean and log-variance, so it can trade exploration against exploitation for the whole trial
(the BAMDP of 4 episodes on the gridworld, 2 on MuJoCo).

One iteration (reads top to bottom):

1. collect ``trials_per_task`` trials per task with the current policy; the policy's state is
   the encoder's GRU state and the belief, from the prior at each trial start and carried across
   the trial's episodes;
2. store the trials in the VAE buffer;
3. PPO on the batch: GAE over each trial (``trial_advantages``, as RL²), advantages standardised
   over the batch, minibatches of steps; the policy reads the beliefs the encoder produced while
   acting, detached, so the RL loss does not reach the encoder (``rl_loss_through_encoder``
   recomputes them with gradient and adds the ELBO loss to every minibatch instead);
4. ``num_vae_updates`` ELBO steps on trials drawn from the buffer;
5. update the normalisers of the policy's inputs and rewards.

PPO's losses, the running normaliser, the recurrent core and the action heads are the shared
ones of :mod:`metarl.ppo` and :mod:`metarl.agents.rl2`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import torch
from torch import nn

from metarl.agents.rl2.agent import trial_advantages, trial_inputs
from metarl.agents.rl2.recurrent import ActionDistribution, action_head, action_input_dim, mlp
from metarl.agents.varibad.config import VariBADConfig
from metarl.agents.varibad.decoder import GridCells, RewardDecoder, StateDecoder, TaskDecoder
from metarl.agents.varibad.encoder import BeliefEncoder
from metarl.agents.varibad.vae import TrialData, VAEBuffer, elbo_loss, task_vector, trial_data
from metarl.errors import CheckpointError, ConfigError
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
from metarl.seeding import numpy_rng, torch_generator
from metarl.types import Policy, StepInputs, Task, TaskDistribution, TrialAgent, TrialBatch

__all__ = ["VariBAD", "VariBADNetwork", "VariBADPolicy", "BeliefState"]

#: ``meta_train/return_episode_k`` is reported for the first this many episodes of a trial.
_LOGGED_EPISODES = 10

#: The policy's state: ``(hidden[1, B, H], mean[B, L], logvar[B, L], started[B])``;
#: ``started`` is False until the first step of the trial has been taken.
BeliefState = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class VariBADNetwork(nn.Module):
    """The actor-critic on ``(state, done flag, posterior mean, posterior log-variance)``.

    As VariBAD's ``models/policy.py``: the state (with the done flag VariBAD's wrapper appends
    to it) and the belief are embedded separately, concatenated, and fed to an actor MLP and a
    critic MLP.

    Args:
        config: the agent's settings.
        obs_dim: flattened observation size.
        action_space: the single-task action space.
        generator: source of the initial weights.
    """

    def __init__(self, config: VariBADConfig, obs_dim: int, action_space: gym.Space, *, generator: torch.Generator):
        super().__init__()

        def embedding(in_dim: int, width: int) -> tuple[nn.Module, int]:
            if width <= 0:
                return nn.Identity(), in_dim
            return mlp(in_dim, (width,), None, activation=config.activation, generator=generator), width

        self.state_embed, d_state = embedding(obs_dim + 1, config.policy_obs_embedding)
        self.latent_embed, d_latent = embedding(2 * config.latent_dim, config.policy_latent_embedding)
        in_dim = d_state + d_latent
        self.actor = action_head(
            action_space,
            in_dim,
            hidden_sizes=config.policy_sizes,
            activation=config.activation,
            init_std=config.init_std,
            generator=generator,
        )
        self.critic = mlp(in_dim, config.policy_sizes, 1, activation=config.activation, generator=generator)

    def forward(self, obs: torch.Tensor, done: torch.Tensor, belief: torch.Tensor) -> tuple[ActionDistribution, torch.Tensor]:
        """Action distribution and value ``[...]`` from ``obs[..., D]`` (normalised),
        ``done[...]`` and ``belief[..., 2L]`` (normalised mean ‖ log-variance)."""
        state = torch.cat([obs, done.to(obs.dtype).unsqueeze(-1)], -1)
        features = torch.cat([self.state_embed(state), self.latent_embed(belief)], -1)
        return self.actor(features), self.critic(features).squeeze(-1)


def _normalize(x: torch.Tensor, normalizer: RunningMeanStd | None, *, center: bool = True) -> torch.Tensor:
    return x if normalizer is None else normalizer.normalize(x, center=center)


class VariBADPolicy(Policy):
    """The batched policy handed to the sampler: updates the belief, then acts on it.

    State (:data:`BeliefState`): the encoder's GRU state and the current posterior; at trial
    start the zero state and the prior. At step ``t ≥ 1`` the encoder first consumes the step's
    inputs ``(s_t, a_{t−1}, r_{t−1}, d_{t−1})``, then the policy acts on ``(s_t, q_t)``. Extras
    per step: ``log_prob``, ``value``, ``latent_mean`` and ``latent_logvar`` (the belief acted
    on, which PPO reuses and :meth:`VariBAD.beliefs` reports).

    Args:
        encoder, network: the shared modules (not copied).
        generator: draws the actions.
        obs_normalizer, latent_normalizer: frozen statistics of the policy's inputs, or ``None``.
        deterministic: act with the distribution's mode.
    """

    def __init__(
        self,
        encoder: BeliefEncoder,
        network: VariBADNetwork,
        *,
        generator: torch.Generator,
        obs_normalizer: RunningMeanStd | None,
        latent_normalizer: RunningMeanStd | None,
        deterministic: bool = False,
    ):
        self.encoder = encoder
        self.network = network
        self.generator = generator
        self.obs_normalizer = obs_normalizer
        self.latent_normalizer = latent_normalizer
        self.deterministic = deterministic
        self.device = next(network.parameters()).device

    def initial_state(self, task_index: torch.Tensor) -> BeliefState:
        slots = int(task_index.shape[0])
        with torch.no_grad():
            hidden, mean, logvar = self.encoder.prior(slots, device=self.device)
        return hidden, mean, logvar, torch.zeros(slots, dtype=torch.bool, device=self.device)

    @torch.no_grad()
    def act(self, inputs: StepInputs, state: BeliefState) -> tuple[torch.Tensor, BeliefState, dict[str, torch.Tensor]]:
        hidden, mean, logvar, started = state
        obs = inputs.obs.to(self.device, torch.float32).reshape(started.shape[0], -1)
        prev_done = inputs.prev_done.to(self.device, torch.float32)
        new_hidden, new_mean, new_logvar = self.encoder.step(
            obs, inputs.prev_action.to(self.device), inputs.prev_reward.to(self.device, torch.float32), prev_done, hidden
        )
        # The trial's first step consumes nothing: the belief stays the prior.
        hidden = torch.where(started.view(1, -1, 1), new_hidden, hidden)
        mean = torch.where(started.unsqueeze(-1), new_mean, mean)
        logvar = torch.where(started.unsqueeze(-1), new_logvar, logvar)
        belief = _normalize(torch.cat([mean, logvar], -1), self.latent_normalizer)
        dist, value = self.network(_normalize(obs, self.obs_normalizer), prev_done, belief)
        action = dist.mode() if self.deterministic else dist.sample(self.generator)
        extras = {"log_prob": dist.log_prob(action), "value": value, "latent_mean": mean, "latent_logvar": logvar}
        return action, (hidden, mean, logvar, torch.ones_like(started)), extras


def _discounted_running_returns(rewards: torch.Tensor, mask: torch.Tensor, *, discount: float) -> torch.Tensor:
    """``R_t = γ R_{t−1} + r_t`` from each trial's start: the statistic VecNormalize (and
    VariBAD's ``norm_rew_for_policy``) scales rewards by."""
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0]):
        running = discount * running + torch.where(mask[t], rewards[t], torch.zeros_like(rewards[t]))
        out[t] = running
    return out


class VariBAD(TrialAgent):
    """VariBAD (Zintgraf et al. 2020): PPO on a VAE's belief over tasks.

    Args:
        config: :class:`VariBADConfig`.
        dist: the task distribution (spaces, horizon, default episodes per trial).
        device: where the networks live and learn.
        seed: root seed of the initial weights and of every generator the agent draws from.
    """

    Config = VariBADConfig

    def __init__(self, config: VariBADConfig, *, dist: TaskDistribution, device: torch.device | str, seed: int):
        if not isinstance(config, VariBADConfig):
            raise ConfigError(f"VariBAD needs a VariBADConfig, got {type(config).__name__}")
        self.config = config
        self.dist = dist
        self.device = torch.device(device)
        self.action_space = dist.action_space
        self.episodes_per_trial = config.episodes_per_trial or dist.episodes_per_trial
        obs_dim = int(math.prod(dist.observation_space.shape or (1,)))
        action_dim = action_input_dim(dist.action_space)
        init = torch_generator(seed, "varibad", "init")

        self.encoder = BeliefEncoder(
            obs_dim,
            action_dim,
            latent_dim=config.latent_dim,
            hidden_size=config.encoder_hidden_size,
            obs_embedding=config.encoder_obs_embedding,
            action_embedding=config.encoder_action_embedding,
            reward_embedding=config.encoder_reward_embedding,
            layers_before_gru=config.encoder_layers_before_gru,
            activation="relu",
            generator=init,
        ).to(self.device)
        self.decoders = nn.ModuleDict()
        if config.decode_reward:
            cells = GridCells(dist.observation_space) if config.reward_decoder == "bernoulli_multihead" else None
            self.decoders["reward"] = RewardDecoder(
                config.reward_decoder,
                latent_dim=config.latent_dim,
                obs_dim=obs_dim,
                action_dim=action_dim,
                hidden_sizes=config.reward_decoder_sizes,
                obs_embedding=config.encoder_obs_embedding,
                action_embedding=config.encoder_action_embedding,
                prev_obs=config.reward_decoder_prev_obs,
                action=config.reward_decoder_action,
                cells=cells,
                generator=init,
            )
        if config.decode_state:
            self.decoders["state"] = StateDecoder(
                latent_dim=config.latent_dim,
                obs_dim=obs_dim,
                action_dim=action_dim,
                hidden_sizes=config.state_decoder_sizes,
                obs_embedding=config.encoder_obs_embedding,
                action_embedding=config.encoder_action_embedding,
                generator=init,
            )
        if config.decode_task:
            example = dist.sample(1, split="train", rng=numpy_rng(seed, "varibad", "task-shape"))[0]
            task_dim = int(task_vector(example).numel())
            if task_dim == 0:
                raise ConfigError(f"decode_task needs numeric task parameters; tasks of {dist.name!r} have none")
            self.decoders["task"] = TaskDecoder(
                latent_dim=config.latent_dim, task_dim=task_dim, hidden_sizes=config.task_decoder_sizes, generator=init
            )
        self.decoders.to(self.device)
        self.network = VariBADNetwork(config, obs_dim, dist.action_space, generator=init).to(self.device)

        self.policy_optimizer = torch.optim.Adam(self.network.parameters(), lr=config.learning_rate, eps=config.adam_eps)
        self.vae_optimizer = torch.optim.Adam(
            [*self.encoder.parameters(), *self.decoders.parameters()], lr=config.vae_learning_rate
        )
        self.obs_normalizer = RunningMeanStd((obs_dim,), device=self.device) if config.normalize_observations else None
        self.latent_normalizer = RunningMeanStd((2 * config.latent_dim,), device=self.device) if config.normalize_latents else None
        self.reward_normalizer = RunningMeanStd((), device=self.device) if config.normalize_rewards else None
        self.buffer = VAEBuffer(
            config.vae_buffer_size, horizon=self.episodes_per_trial * dist.max_episode_steps, device=self.device
        )
        # Separate streams: evaluating never changes the course of training.
        self.train_generator = torch_generator(seed, "varibad", "train", device=self.device)
        self.eval_generator = torch_generator(seed, "varibad", "eval", device=self.device)
        self.vae_generator = torch_generator(seed, "varibad", "vae", device=self.device)
        self.iteration = 0
        self.env_steps = 0

    # ------------------------------------------------------------------ acting
    def policy(self, context: Any = None, *, deterministic: bool = False) -> VariBADPolicy:
        """The belief-conditioned policy (``context`` is unused)."""
        return self._policy(self.eval_generator, deterministic=deterministic)

    def _policy(self, generator: torch.Generator, *, deterministic: bool) -> VariBADPolicy:
        return VariBADPolicy(
            self.encoder,
            self.network,
            generator=generator,
            obs_normalizer=self.obs_normalizer,
            latent_normalizer=self.latent_normalizer,
            deterministic=deterministic,
        )

    # ------------------------------------------------------------------ learning
    def meta_train_step(self, sampler: Any, tasks: Sequence[Task]) -> dict[str, float]:
        """Collect trials on ``tasks``, then PPO and VAE updates (see the module docstring)."""
        cfg = self.config
        batch = sampler.collect(
            self._policy(self.train_generator, deterministic=False),
            tasks,
            episodes_per_task=cfg.trials_per_task * self.episodes_per_trial,
            episodes_per_trial=self.episodes_per_trial,
        ).to(self.device)
        metrics = self._episode_metrics(batch)
        self.buffer.add(batch, tasks=self._task_vectors(batch))
        self.env_steps += int(batch.mask.sum())
        self.iteration += 1
        if self.env_steps <= cfg.precollect_steps:
            # VariBAD's precollect_len: fill the VAE buffer before the first update.
            return metrics
        metrics.update(self.learn(batch))
        if not cfg.rl_loss_through_encoder:
            sums: dict[str, float] = {}
            for _ in range(cfg.num_vae_updates):
                for key, value in self.vae_update().items():
                    sums[key] = sums.get(key, 0.0) + value
            metrics.update({k: v / cfg.num_vae_updates for k, v in sums.items()})
        self._update_normalizers(batch)
        return metrics

    def _task_vectors(self, batch: TrialBatch) -> torch.Tensor | None:
        if "task" not in self.decoders:
            return None
        vectors = torch.stack([task_vector(t) for t in batch.tasks])
        return vectors[batch.task_index.cpu()].to(self.device)

    def elbo(self, data: TrialData) -> dict[str, torch.Tensor]:
        """The ELBO loss and its parts on ``data`` (encoder run with gradient)."""
        mean, logvar = self.encoder(data.inputs, tbptt=self.config.tbptt)
        return elbo_loss(
            mean,
            logvar,
            data,
            config=self.config,
            reward_decoder=self.decoders["reward"] if "reward" in self.decoders else None,
            state_decoder=self.decoders["state"] if "state" in self.decoders else None,
            task_decoder=self.decoders["task"] if "task" in self.decoders else None,
            generator=self.vae_generator,
        )

    def _buffer_elbo(self) -> dict[str, torch.Tensor]:
        sample, tasks = self.buffer.sample(self.config.vae_batch_num_trajs, generator=self.vae_generator, device=self.device)
        return self.elbo(trial_data(sample, self.action_space, task=tasks))

    def vae_update(self) -> dict[str, float]:
        """One ELBO step of encoder and decoders on trials from the buffer; returns its metrics."""
        parts = self._buffer_elbo()
        self.vae_optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        if self.config.vae_max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.encoder.parameters(), self.config.vae_max_grad_norm)
            nn.utils.clip_grad_norm_(self.decoders.parameters(), self.config.vae_max_grad_norm)
        self.vae_optimizer.step()
        return self._vae_metrics(parts)

    def _vae_metrics(self, parts: Mapping[str, torch.Tensor]) -> dict[str, float]:
        out = {
            "meta_train/vae_loss": float(parts["loss"].detach()),
            "meta_train/elbo": float(parts["elbo"].detach()),
            "meta_train/kl": float(parts["kl"].detach()),
        }
        for key, on in (("reward_recon", "reward"), ("state_recon", "state"), ("task_recon", "task")):
            if on in self.decoders:
                out[f"meta_train/{key}"] = float(parts[key].detach())
        return out

    def policy_inputs(self, batch: TrialBatch, *, with_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The policy's inputs at every step of ``batch``: ``(obs[T, B, D], done[T, B],
        belief[T, B, 2L])``, normalised with the current statistics.

        Without ``with_grad`` the belief is the one stored while acting, detached (VariBAD's
        default); with it, the encoder is rerun over the trials with gradient, so a loss on the
        policy reaches the encoder.
        """
        inputs = trial_inputs(batch, self.action_space)
        if with_grad:
            mean, logvar = self.encoder(inputs, tbptt=self.config.tbptt)
        else:
            mean, logvar = batch.extras["latent_mean"].detach(), batch.extras["latent_logvar"].detach()
        belief = _normalize(torch.cat([mean, logvar], -1), self.latent_normalizer)
        return _normalize(inputs.obs, self.obs_normalizer), inputs.prev_done, belief

    def learn(self, batch: TrialBatch) -> dict[str, float]:
        """PPO epochs on a batch collected by the current policy; returns loss metrics."""
        cfg = self.config
        mask = batch.mask
        rewards = _normalize(batch.rewards.float(), self.reward_normalizer, center=False)
        old_log_prob, old_values = batch.extras["log_prob"], batch.extras["value"]
        advantages, returns = trial_advantages(
            rewards, old_values, trial_done=batch.trial_done, mask=mask, discount=cfg.discount, gae_lambda=cfg.gae_lambda
        )
        if cfg.normalize_advantages:
            advantages = normalize_advantages(advantages, mask=mask)
        flat = mask.reshape(-1).nonzero().squeeze(-1)
        num_minibatches = max(1, min(cfg.num_minibatches, flat.numel()))
        through = cfg.rl_loss_through_encoder
        if not through:
            obs, done, belief = self.policy_inputs(batch, with_grad=False)
        actions = batch.actions.reshape(-1, *batch.actions.shape[2:])
        params = list(self.network.parameters())
        sums: dict[str, float] = {}
        updates = 0
        for _ in range(cfg.epochs):
            order = flat[torch.randperm(flat.numel(), generator=self.train_generator, device=self.train_generator.device).to(flat.device)]
            for rows in order.tensor_split(num_minibatches):
                if through:
                    obs, done, belief = self.policy_inputs(batch, with_grad=True)
                dist, values = self.network(
                    obs.reshape(-1, obs.shape[-1])[rows], done.reshape(-1)[rows], belief.reshape(-1, belief.shape[-1])[rows]
                )
                log_prob = dist.log_prob(actions[rows])
                old = old_log_prob.reshape(-1)[rows]
                policy_loss = clipped_surrogate_loss(log_prob, old, advantages.reshape(-1)[rows], clip=cfg.clip)
                v_loss = value_loss(
                    values,
                    returns.reshape(-1)[rows],
                    old_values=old_values.reshape(-1)[rows],
                    clip=cfg.value_clip,
                    huber_delta=cfg.huber_delta,
                )
                entropy = entropy_bonus(dist.entropy())
                loss = policy_loss + cfg.value_coef * v_loss - cfg.entropy_coef * entropy
                self.policy_optimizer.zero_grad(set_to_none=True)
                if through:
                    self.vae_optimizer.zero_grad(set_to_none=True)
                    parts = self._buffer_elbo()
                    loss = loss + cfg.vae_loss_coef * parts["loss"]
                loss.backward()
                grad_norm = self._clip(params)
                self.policy_optimizer.step()
                if through:
                    self._clip(list(self.encoder.parameters()))
                    self.vae_optimizer.step()
                    for key, value in self._vae_metrics(parts).items():
                        sums[key] = sums.get(key, 0.0) + value
                for key, value in (
                    ("policy_loss", policy_loss),
                    ("value_loss", v_loss),
                    ("entropy", entropy),
                    ("approx_kl", approx_kl(log_prob, old)),
                    ("clip_fraction", clip_fraction(log_prob, old, clip=cfg.clip)),
                    ("grad_norm", grad_norm),
                ):
                    sums[f"meta_train/{key}"] = sums.get(f"meta_train/{key}", 0.0) + float(value.detach())
                updates += 1
        out = {k: v / updates for k, v in sums.items()}
        valid_returns, valid_values = returns[mask], old_values[mask]
        var = valid_returns.var(unbiased=False)
        explained = 1.0 - (valid_returns - valid_values).var(unbiased=False) / var if var > 0 else torch.tensor(float("nan"))
        out["meta_train/explained_variance"] = float(explained)
        out["meta_train/advantage_mean"] = float(masked_mean(advantages, mask))
        return out

    def _clip(self, params: list[torch.Tensor]) -> torch.Tensor:
        if self.config.max_grad_norm is not None:
            return nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
        grads = [p.grad.pow(2).sum() for p in params if p.grad is not None]
        return torch.sqrt(sum(grads)) if grads else torch.zeros(())

    @torch.no_grad()
    def _update_normalizers(self, batch: TrialBatch) -> None:
        mask = batch.mask
        if self.obs_normalizer is not None:
            self.obs_normalizer.update(batch.observations.reshape(batch.num_steps, batch.num_slots, -1), mask)
        if self.latent_normalizer is not None:
            belief = torch.cat([batch.extras["latent_mean"], batch.extras["latent_logvar"]], -1)
            self.latent_normalizer.update(belief, mask)
        if self.reward_normalizer is not None:
            running = _discounted_running_returns(batch.rewards.double(), mask, discount=self.config.discount)
            self.reward_normalizer.update(running, mask)

    def _episode_metrics(self, batch: TrialBatch) -> dict[str, float]:
        episode_returns = batch.episode_returns()  # [B, E]
        out = {
            "meta_train/return": float(episode_returns.mean()),
            "meta_train/return_trial": float(episode_returns.sum(1).mean()),
        }
        for k in range(min(episode_returns.shape[1], _LOGGED_EPISODES)):
            out[f"meta_train/return_episode_{k + 1}"] = float(episode_returns[:, k].mean())
        successes = batch.episode_successes()
        if successes is not None:
            out["meta_train/success"] = float(successes.float().mean())
        out["meta_train/env_steps"] = float(batch.mask.sum())
        return out

    # ------------------------------------------------------------------ beliefs
    @torch.no_grad()
    def beliefs(
        self,
        sampler: Any,
        tasks: Sequence[Task],
        *,
        episodes_per_trial: int | None = None,
        deterministic: bool = True,
    ) -> dict[str, Any]:
        """One trial per task and the belief at every step, as JSON-serialisable data.

        Args:
            sampler: a :class:`~metarl.sampler.Sampler` of the agent's distribution.
            tasks: the tasks, one trial each.
            episodes_per_trial: episodes of each trial (default: the training value).
            deterministic: act with the policy's mode (VariBAD's evaluation protocol).

        Returns:
            ``{"agent", "latent_dim", "episodes_per_trial", "episode_length", "deterministic",
            "trials": [...]}``; each trial holds ``task`` (its string), ``mean`` and ``logvar``
            (``[T][L]``: the posterior the policy acted on at each step, ``[0]`` the prior),
            ``rewards`` ``[T]``, ``episode_index`` ``[T]``, ``episode_starts`` (step indices),
            ``episode_returns``, ``observations`` ``[T][D]`` and ``actions``. With the
            ``bernoulli_multihead`` reward decoder each trial also holds ``cell_probabilities``
            ``[T][C]``: the decoder's p(goal at cell | posterior mean), and the top level
            ``grid_shape``.
        """
        episodes = int(episodes_per_trial or self.episodes_per_trial)
        batch = sampler.collect(
            self._policy(self.eval_generator, deterministic=deterministic),
            list(tasks),
            episodes_per_task=episodes,
            episodes_per_trial=episodes,
        ).to(self.device)
        decoder = self.decoders["reward"] if "reward" in self.decoders else None
        multihead = decoder is not None and decoder.cells is not None
        trials = []
        returns = batch.episode_returns()
        for b in range(batch.num_slots):
            steps = int(batch.mask[:, b].sum())
            mean = batch.extras["latent_mean"][:steps, b]
            trial: dict[str, Any] = {
                "task": str(batch.tasks[int(batch.task_index[b])]),
                "mean": mean.cpu().tolist(),
                "logvar": batch.extras["latent_logvar"][:steps, b].cpu().tolist(),
                "rewards": batch.rewards[:steps, b].cpu().tolist(),
                "episode_index": batch.episode_index[:steps, b].cpu().tolist(),
                "episode_starts": (batch.step_in_episode[:steps, b] == 0).nonzero().squeeze(-1).cpu().tolist(),
                "episode_returns": returns[b].cpu().tolist(),
                "observations": batch.observations[:steps, b].reshape(steps, -1).cpu().tolist(),
                "actions": batch.actions[:steps, b].cpu().tolist(),
            }
            if multihead:
                trial["cell_probabilities"] = torch.sigmoid(decoder.net(mean)).cpu().tolist()
            trials.append(trial)
        out: dict[str, Any] = {
            "agent": "varibad",
            "latent_dim": self.config.latent_dim,
            "episodes_per_trial": episodes,
            "episode_length": int(self.dist.max_episode_steps),
            "deterministic": bool(deterministic),
            "trials": trials,
        }
        if multihead:
            low, high = self.dist.observation_space.low, self.dist.observation_space.high
            out["grid_shape"] = [int(h - lo + 1) for lo, h in zip(low.ravel(), high.ravel())]
        return out

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Weights, both optimisers, normalisers, the VAE buffer, every generator and counters."""
        return {
            "encoder": self.encoder.state_dict(),
            "decoders": self.decoders.state_dict(),
            "network": self.network.state_dict(),
            "policy_optimizer": self.policy_optimizer.state_dict(),
            "vae_optimizer": self.vae_optimizer.state_dict(),
            "obs_normalizer": None if self.obs_normalizer is None else self.obs_normalizer.state_dict(),
            "latent_normalizer": None if self.latent_normalizer is None else self.latent_normalizer.state_dict(),
            "reward_normalizer": None if self.reward_normalizer is None else self.reward_normalizer.state_dict(),
            "buffer": self.buffer.state_dict(contents=self.config.checkpoint_vae_buffer),
            "train_generator": self.train_generator.get_state(),
            "eval_generator": self.eval_generator.get_state(),
            "vae_generator": self.vae_generator.get_state(),
            "iteration": self.iteration,
            "env_steps": self.env_steps,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        required = {"encoder", "decoders", "network", "policy_optimizer", "vae_optimizer", "buffer", "train_generator", "eval_generator", "vae_generator", "iteration"}
        missing = required - set(state)
        if missing:
            raise CheckpointError(f"VariBAD state is missing {sorted(missing)}; it has {sorted(state)}")
        try:
            self.encoder.load_state_dict(state["encoder"])
            self.decoders.load_state_dict(state["decoders"])
            self.network.load_state_dict(state["network"])
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise CheckpointError(f"VariBAD weights do not fit this config ({first})") from None
        self.policy_optimizer.load_state_dict(state["policy_optimizer"])
        self.vae_optimizer.load_state_dict(state["vae_optimizer"])
        for name in ("obs_normalizer", "latent_normalizer", "reward_normalizer"):
            mine, saved = getattr(self, name), state.get(name)
            if (mine is None) != (saved is None):
                raise CheckpointError(f"VariBAD checkpoint {name} is {'absent' if saved is None else 'present'} but the config says otherwise")
            if mine is not None:
                mine.load_state_dict(saved)
        self.buffer.load_state_dict(state["buffer"])
        self.train_generator.set_state(state["train_generator"].cpu())
        self.eval_generator.set_state(state["eval_generator"].cpu())
        self.vae_generator.set_state(state["vae_generator"].cpu())
        self.iteration = int(state["iteration"])
        self.env_steps = int(state.get("env_steps", 0))
