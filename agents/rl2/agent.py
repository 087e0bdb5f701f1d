"""RL²: a recurrent policy that learns to adapt inside its hidden state, trained with PPO over trials.

Duan et al. 2016, "RL²: Fast Reinforcement Learning via Slow Reinforcement Learning"
(arXiv 1611.02779). The policy is a GRU fed ``(s_t, a_{t−1}, r_{t−1}, d_{t−1})``; its hidden
state persists across the episodes of a trial (all episodes on one task) and resets only when
the trial ends (paper §2.2, Fig. 1). The outer learner treats the whole trial as one episode of
the RL problem. The paper used first-order TRPO with a GRU baseline and GAE; like VariBAD's and
Meta-World+'s RL² baselines (reference/papers.md §3.2, §6.1) this implementation uses PPO with a
value head on the GRU.

One iteration (reads top to bottom):

1. collect ``trials_per_task`` trials of ``episodes_per_trial`` episodes per task with the
   current policy (the sampler carries the state across episode boundaries);
2. rebuild the policy's inputs ``(obs, prev action, prev reward, prev done)`` from the batch,
   with the same observation statistics the policy saw while collecting;
3. advantages by GAE over each trial (rewards divided by the running return scale when
   ``normalize_rewards``): the recursion and the discount run through inner episode
   boundaries and stop only at the trial's end (:func:`trial_advantages`);
4. PPO epochs over minibatches of trials, with truncated BPTT over chunks of ``bptt_chunk``
   steps whose initial hidden states come from running the GRU over the rollout
   (:func:`evaluate_trials`);
5. update the observation and reward normalisers with the new batch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import gymnasium as gym
import torch
from torch import nn

from metarl.agents.rl2.recurrent import (
    ActionDistribution,
    DualCore,
    RecurrentCore,
    action_head,
    action_input_dim,
    mlp,
)
from metarl.config import at_least, positive
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
from metarl.returns import gae
from metarl.seeding import torch_generator
from metarl.types import Policy, StepInputs, Task, TaskDistribution, TrialAgent, TrialBatch

__all__ = [
    "RL2",
    "RL2Config",
    "RL2Network",
    "RL2Policy",
    "TrialInputs",
    "trial_inputs",
    "trial_advantages",
    "evaluate_trials",
]

#: ``meta_train/return_episode_k`` is reported for the first this many episodes of a trial.
_LOGGED_EPISODES = 10


@dataclasses.dataclass(frozen=True)
class RL2Config:
    """Settings of :class:`RL2`. Defaults follow Meta-World+'s RL² (reference/papers.md §6.1:
    GRU 256, clip 0.2, λ 0.95, γ 0.99, 10 epochs, lr 5e-4, grad clip 1.0) except where noted."""

    hidden_size: int = positive(256)
    """H, width of the GRU (RL² paper: a GRU; Meta-World+: 256; VariBAD's RL²: 128)."""

    num_layers: int = positive(1)
    """Stacked GRU layers."""

    cell: Literal["gru", "ln_gru"] = "gru"
    """Recurrent cell: ``gru`` (torch's fused GRU) or ``ln_gru``, a layer-normalised GRU with a
    ReLU candidate and a mostly closed initial update gate
    (:class:`metarl.agents.rl2.recurrent.LayerNormGRU`; the architecture of
    lucaslingle/pytorch_rl2's RL² runs). ``ln_gru`` steps through time in Python: a forward and
    backward pass over 100 steps of 25 trials (H = 128) takes about 4x as long as with ``gru`` on
    a CPU."""

    gate_init: Literal["zero", "chrono"] = "zero"
    """Initial biases of the ``gru`` cell: ``zero``, or ``chrono`` (Tallec & Ollivier 2018): the
    update gate's biases drawn as ``log U[1, T_max − 1]``, spreading the units' initial memory
    time scales up to ``T_max`` = :attr:`chrono_max_steps` steps."""

    chrono_max_steps: int | None = at_least(None, 3)
    """``T_max`` of ``gate_init: chrono``; ``None``: the training trial's length in steps
    (episodes per trial × the episode horizon)."""

    obs_embedding: int = at_least(0, 0)
    """Width of the observation embedding (Linear + activation); 0 feeds the raw observation."""

    action_embedding: int = at_least(0, 0)
    """Width of the previous-action embedding; 0 feeds the raw (one-hot for discrete) action."""

    reward_embedding: int = at_least(0, 0)
    """Width of the previous-reward embedding; 0 feeds the raw reward."""

    encoder_sizes: tuple[int, ...] = positive(())
    """Hidden widths of an MLP between the embeddings and the GRU (Meta-World+: 256, 256)."""

    policy_sizes: tuple[int, ...] = positive(())
    """Hidden widths of the policy head on the GRU output (VariBAD's RL²: 128)."""

    value_sizes: tuple[int, ...] = positive(())
    """Hidden widths of the value head on the GRU output."""

    latent_size: int = at_least(0, 0)
    """Width of a Linear + ReLU layer between the GRU and both heads; 0: none. VariBAD's RL² has
    one: the encoder's mean and log-variance heads (2 × ``latent_dim`` = 256), passed through a
    ReLU (``add_nonlinearity_to_latent``) to the policy and value MLPs. Needs ``value_network:
    shared``."""

    value_network: Literal["shared", "separate"] = "shared"
    """``shared``: the value head sits on the policy's GRU (VariBAD's and Meta-World+'s RL²);
    ``separate``: the value function has its own GRU with the same settings (the RL² paper's
    GRU baseline), so the value loss does not shape the policy's memory."""

    activation: Literal["tanh", "relu"] = "tanh"
    """Nonlinearity of the embeddings, encoder and heads."""

    init_std: float = positive(1.0)
    """Initial standard deviation of the Gaussian head (continuous actions only)."""

    episodes_per_trial: int | None = at_least(None, 1)
    """Episodes per trial while training; ``None``: the task distribution's preset."""

    trials_per_task: int = positive(1)
    """Trials collected per task per iteration (``run.num_tasks`` tasks per iteration)."""

    discount: float = dataclasses.field(default=0.99, metadata={"gt": 0})
    """γ, applied across the whole trial."""

    gae_lambda: float = at_least(0.95, 0.0)
    """λ of GAE over the trial (the RL² paper used GAE; its λ for bandits is 0.3 in replications)."""

    learning_rate: float = positive(5e-4)
    """Adam step size."""

    adam_eps: float = positive(1e-5)
    """Adam ε (VariBAD: 1e-8; CleanRL's PPO: 1e-5)."""

    epochs: int = positive(10)
    """PPO passes over each batch."""

    num_minibatches: int = positive(4)
    """Minibatches per epoch; trials are shuffled and split into this many groups."""

    clip: float = positive(0.2)
    """ε of the clipped surrogate."""

    value_clip: float | None = positive(None)
    """ε of the clipped value loss; ``None`` disables it."""

    huber_delta: float | None = positive(None)
    """δ of a Huber value loss (VariBAD uses one); ``None``: squared error."""

    value_coef: float = at_least(0.5, 0.0)
    """Weight of the value loss."""

    entropy_coef: float = at_least(5e-3, 0.0)
    """Weight of the entropy bonus."""

    max_grad_norm: float | None = positive(1.0)
    """Clip the global gradient norm to this; ``None`` disables clipping."""

    normalize_advantages: bool = True
    """Standardise advantages per minibatch (Meta-World+'s RL² does not: ``False`` there)."""

    normalize_observations: bool = False
    """Feed observations standardised by running statistics."""

    normalize_rewards: bool = False
    """Divide the rewards PPO learns from by the running standard deviation of the discounted
    trial return (SB3's VecNormalize; VariBAD's ``norm_rew_for_policy``). The policy's
    previous-reward input stays raw, as VariBAD's encoder gets the raw reward."""

    bptt_chunk: int | None = at_least(None, 1)
    """Truncated BPTT: backpropagate through chunks of this many steps, each started from the
    rollout's hidden state; ``None``: the whole trial (Meta-World+ uses chunks of 250)."""

    chunk_states: Literal["rollout", "refresh"] = "rollout"
    """Initial state of each BPTT chunk: from the parameters that collected the batch
    (``rollout``) or recomputed with the current parameters before every epoch (``refresh``)."""

    target_kl: float | None = at_least(None, 0.0)
    """Stop the epochs early once the mean approximate KL of an epoch exceeds this."""

    def __post_init__(self) -> None:
        if not 0.0 < self.discount <= 1.0:
            raise ConfigError(f"discount must be in (0, 1], got discount={self.discount!r}")
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise ConfigError(f"gae_lambda must be in [0, 1], got gae_lambda={self.gae_lambda!r}")
        if self.chrono_max_steps is not None and self.gate_init != "chrono":
            raise ConfigError(
                f"chrono_max_steps={self.chrono_max_steps!r} is only read with gate_init 'chrono', got gate_init={self.gate_init!r}"
            )


@dataclasses.dataclass
class TrialInputs:
    """The policy's inputs over whole trials, time-major, as the policy saw them while acting.

    Attributes:
        obs: ``[T, B, D]`` (normalised when observation normalisation is on).
        prev_action: ``[T, B, A]`` (one-hot for discrete actions; zeros at t = 0).
        prev_reward: ``[T, B]`` raw rewards (0 at t = 0).
        prev_done: ``[T, B]`` float, 1 right after an episode ended.
    """

    obs: torch.Tensor
    prev_action: torch.Tensor
    prev_reward: torch.Tensor
    prev_done: torch.Tensor

    def select(self, slots: torch.Tensor) -> TrialInputs:
        """The inputs of the given slots (``[B']`` long)."""
        return TrialInputs(self.obs[:, slots], self.prev_action[:, slots], self.prev_reward[:, slots], self.prev_done[:, slots])


class RL2Network(nn.Module):
    """Recurrent core + action head + value head.

    Args:
        config: the agent's settings.
        observation_space, action_space: single-task spaces.
        generator: source of the initial weights.
        trial_steps: steps in a training trial, the default ``T_max`` of ``gate_init: chrono``.
    """

    def __init__(
        self,
        config: RL2Config,
        observation_space: gym.Space,
        action_space: gym.Space,
        *,
        generator: torch.Generator,
        trial_steps: int | None = None,
    ):
        super().__init__()
        if config.gate_init not in ("zero", "chrono"):
            raise ConfigError(f"unknown gate_init {config.gate_init!r}; valid choices: 'chrono', 'zero'")
        chrono = None
        if config.gate_init == "chrono":
            chrono = config.chrono_max_steps or trial_steps
            if chrono is None:
                raise ConfigError("gate_init 'chrono' needs chrono_max_steps (the trial length is not known here)")
        obs_dim = int(math.prod(observation_space.shape or (1,)))
        if config.value_network not in ("shared", "separate"):
            raise ConfigError(f"unknown value_network {config.value_network!r}; valid choices: 'separate', 'shared'")
        self.separate_value = config.value_network == "separate"
        if config.latent_size and self.separate_value:
            raise ConfigError("latent_size needs value_network 'shared' (the layer feeds both heads)")
        core_cls = DualCore if self.separate_value else RecurrentCore
        self.core = core_cls(
            obs_dim,
            action_input_dim(action_space),
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            obs_embedding=config.obs_embedding,
            action_embedding=config.action_embedding,
            reward_embedding=config.reward_embedding,
            encoder_sizes=config.encoder_sizes,
            activation=config.activation,
            cell=config.cell,
            chrono_max_steps=chrono,
            generator=generator,
        )
        # The shared Linear + ReLU between the GRU and the heads (None without one).
        self.latent = (
            mlp(config.hidden_size, (config.latent_size,), None, activation="relu", generator=generator)
            if config.latent_size
            else None
        )
        head_in = config.latent_size or config.hidden_size
        self.policy_head = action_head(
            action_space,
            head_in,
            hidden_sizes=config.policy_sizes,
            activation=config.activation,
            init_std=config.init_std,
            generator=generator,
        )
        self.value_head = mlp(head_in, config.value_sizes, 1, activation=config.activation, generator=generator)

    def heads(self, features: torch.Tensor) -> tuple[ActionDistribution, torch.Tensor]:
        """Action distribution and value ``[...]`` from GRU features ``[..., H]`` (``[..., 2H]``,
        policy half first, with a separate value network)."""
        if self.separate_value:
            h = features.shape[-1] // 2
            return self.policy_head(features[..., :h]), self.value_head(features[..., h:]).squeeze(-1)
        if self.latent is not None:
            features = self.latent(features)
        return self.policy_head(features), self.value_head(features).squeeze(-1)


class RL2Policy(Policy):
    """The batched recurrent policy handed to the sampler.

    State: the GRU state ``[L, B, H]``, zeros at trial start. Extras per step: ``log_prob`` and
    ``value`` (used as PPO's old log-probabilities and values).

    Args:
        network: the shared network (not copied: the policy acts with the current weights).
        generator: draws the actions.
        obs_normalizer: frozen observation statistics applied to the input, or ``None``.
        deterministic: act with the distribution's mode.
    """

    def __init__(
        self,
        network: RL2Network,
        *,
        generator: torch.Generator,
        obs_normalizer: RunningMeanStd | None,
        deterministic: bool = False,
    ):
        self.network = network
        self.generator = generator
        self.obs_normalizer = obs_normalizer
        self.deterministic = deterministic
        self.device = next(network.parameters()).device

    def initial_state(self, task_index: torch.Tensor) -> torch.Tensor:
        return self.network.core.initial_state(int(task_index.shape[0]), device=self.device)

    @torch.no_grad()
    def act(self, inputs: StepInputs, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        obs = _normalize_obs(inputs.obs.to(self.device, torch.float32).flatten(1), self.obs_normalizer)
        features, state = self.network.core.step(
            obs,
            inputs.prev_action.to(self.device),
            inputs.prev_reward.to(self.device, torch.float32),
            inputs.prev_done.to(self.device),
            state,
        )
        dist, value = self.network.heads(features)
        action = dist.mode() if self.deterministic else dist.sample(self.generator)
        return action, state, {"log_prob": dist.log_prob(action), "value": value}


def _normalize_obs(obs: torch.Tensor, normalizer: RunningMeanStd | None) -> torch.Tensor:
    return obs if normalizer is None else normalizer.normalize(obs)


def _scale_reward(reward: torch.Tensor, normalizer: RunningMeanStd | None) -> torch.Tensor:
    return reward if normalizer is None else normalizer.normalize(reward, center=False)


def trial_inputs(
    batch: TrialBatch,
    action_space: gym.Space,
    *,
    obs_normalizer: RunningMeanStd | None = None,
) -> TrialInputs:
    """Rebuild, from a batch, the inputs the policy saw at every step of every trial.

    The sampler fed ``prev_action``, ``prev_reward`` and ``prev_done`` of step ``t − 1`` (zeros at
    the trial's first step); this shifts the batch's actions, rewards and episode ends by one
    step. Steps after a trial ended (``mask`` False) hold padding and are ignored downstream.

    Args:
        batch: ``[T, B]`` trials.
        action_space: the single-task action space (one-hot width for ``Discrete``).
        obs_normalizer: the observation statistics the policy used while collecting.

    Returns:
        :class:`TrialInputs` on the batch's device.
    """
    steps, slots = batch.num_steps, batch.num_slots
    obs = _normalize_obs(batch.observations.reshape(steps, slots, -1).float(), obs_normalizer)
    if isinstance(action_space, gym.spaces.Discrete):
        actions = nn.functional.one_hot(batch.actions.long(), int(action_space.n)).float()
    else:
        actions = batch.actions.reshape(steps, slots, -1).float()
    prev_action = torch.cat([torch.zeros_like(actions[:1]), actions[:-1]])
    prev_reward = torch.cat([torch.zeros_like(batch.rewards[:1]), batch.rewards[:-1]]).float()
    dones = batch.dones.float()
    prev_done = torch.cat([torch.zeros_like(dones[:1]), dones[:-1]])
    return TrialInputs(
        obs=obs,
        prev_action=prev_action,
        prev_reward=prev_reward,
        prev_done=prev_done,
    )


def trial_advantages(
    rewards: torch.Tensor,
    values: torch.Tensor,
    *,
    trial_done: torch.Tensor,
    mask: torch.Tensor,
    discount: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over whole trials: the trial is one episode of the RL² problem (Duan et al. 2016, §2.2).

    Inside a trial, an episode that ends (terminated or truncated) is followed by a reset and the
    trial goes on with the same hidden state, so the next value is ``V`` at the trial's next step
    — not 0, not ``V(final observation)`` — and the recursion does not stop. Only the trial's end
    stops it, with a next value of 0: the trial has a fixed number of episodes, so nothing follows.

    Args:
        rewards, values: ``[T, B]`` (values as computed while acting).
        trial_done: ``[T, B]`` bool, the last step of each trial.
        mask: ``[T, B]`` bool validity.
        discount: γ.
        gae_lambda: λ.

    Returns:
        ``(advantages, returns)``, each ``[T, B]``, zeros where ``mask`` is False.
    """
    next_values = torch.cat([values[1:], torch.zeros_like(values[:1])])
    next_values = torch.where(trial_done | ~mask, torch.zeros_like(next_values), next_values)
    return gae(
        rewards,
        values,
        next_values,
        terminated=trial_done,
        ends=trial_done,
        discount=discount,
        gae_lambda=gae_lambda,
        mask=mask,
    )


def evaluate_trials(
    network: RL2Network,
    inputs: TrialInputs,
    chunk_states: torch.Tensor,
    *,
    chunk: int,
) -> tuple[ActionDistribution, torch.Tensor]:
    """Run the network over trials with truncated BPTT: all chunks of all trials in one GRU call.

    The time axis is padded to ``C·chunk`` steps and cut into ``C`` chunks that run side by side
    as ``C·B`` sequences of ``chunk`` steps, each started from its stored state; gradients
    therefore flow within a chunk and stop at chunk boundaries.

    Args:
        network: the network.
        inputs: ``[T, B, ...]`` inputs of ``B`` trials.
        chunk_states: ``[C, L, B, H]`` state entering each chunk (``C = ceil(T / chunk)``), detached.
        chunk: chunk length.

    Returns:
        ``(distribution over [T, B], values[T, B])``.
    """
    steps, slots = inputs.prev_reward.shape
    num_chunks = chunk_states.shape[0]
    if num_chunks != math.ceil(steps / chunk):
        raise ValueError(f"{steps} steps in chunks of {chunk} need {math.ceil(steps / chunk)} chunk states, got {num_chunks}")
    pad = num_chunks * chunk - steps

    def fold(x: torch.Tensor) -> torch.Tensor:
        # [T, B, ...] -> [chunk, C·B, ...], chunk c of slot b at column c·B + b.
        if pad:
            x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))])
        x = x.reshape(num_chunks, chunk, *x.shape[1:]).transpose(0, 1)
        return x.reshape(chunk, num_chunks * slots, *x.shape[3:])

    state = chunk_states.detach().permute(1, 0, 2, 3).reshape(chunk_states.shape[1], num_chunks * slots, -1)
    features, _ = network.core(fold(inputs.obs), fold(inputs.prev_action), fold(inputs.prev_reward), fold(inputs.prev_done), state)
    features = features.reshape(chunk, num_chunks, slots, -1).transpose(0, 1).reshape(num_chunks * chunk, slots, -1)[:steps]
    return network.heads(features)


def _discounted_running_returns(rewards: torch.Tensor, mask: torch.Tensor, *, discount: float) -> torch.Tensor:
    """``R_t = γ R_{t−1} + r_t`` from each trial's start (VecNormalize's return statistic)."""
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0]):
        running = discount * running + torch.where(mask[t], rewards[t], torch.zeros_like(rewards[t]))
        out[t] = running
    return out


class RL2(TrialAgent):
    """RL² with PPO over whole trials (Duan et al. 2016).

    Args:
        config: :class:`RL2Config`.
        dist: the task distribution (its spaces and default episodes per trial).
        device: where the network lives and learns.
        seed: root seed of the weight initialisation and the action-sampling generators.
    """

    Config = RL2Config

    def __init__(self, config: RL2Config, *, dist: TaskDistribution, device: torch.device | str, seed: int):
        if not isinstance(config, RL2Config):
            raise ConfigError(f"RL2 needs an RL2Config, got {type(config).__name__}")
        self.config = config
        self.dist = dist
        self.device = torch.device(device)
        self.action_space = dist.action_space
        self.episodes_per_trial = config.episodes_per_trial or dist.episodes_per_trial
        init_gen = torch_generator(seed, "rl2", "init")
        self.network = RL2Network(
            config,
            dist.observation_space,
            dist.action_space,
            generator=init_gen,
            trial_steps=self.episodes_per_trial * dist.max_episode_steps,
        ).to(self.device)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=config.learning_rate, eps=config.adam_eps)
        obs_shape = (int(math.prod(dist.observation_space.shape or (1,))),)
        self.obs_normalizer = RunningMeanStd(obs_shape, device=self.device) if config.normalize_observations else None
        self.reward_normalizer = RunningMeanStd((), device=self.device) if config.normalize_rewards else None
        # Training and evaluation draw actions from separate streams, so evaluating never
        # changes the course of training.
        self.train_generator = torch_generator(seed, "rl2", "train-actions", device=self.device)
        self.eval_generator = torch_generator(seed, "rl2", "eval-actions", device=self.device)
        self.iteration = 0

    # ------------------------------------------------------------------ acting
    def policy(self, context: Any = None, *, deterministic: bool = False) -> RL2Policy:
        """The recurrent policy (``context`` is unused: adaptation happens in its state)."""
        return self._policy(self.eval_generator, deterministic=deterministic)

    def _policy(self, generator: torch.Generator, *, deterministic: bool) -> RL2Policy:
        return RL2Policy(
            self.network,
            generator=generator,
            obs_normalizer=self.obs_normalizer,
            deterministic=deterministic,
        )

    # ------------------------------------------------------------------ learning
    def meta_train_step(self, sampler: Any, tasks: Sequence[Task]) -> dict[str, float]:
        """Collect trials on ``tasks`` and run PPO on them (see the module docstring)."""
        cfg = self.config
        batch = sampler.collect(
            self._policy(self.train_generator, deterministic=False),
            tasks,
            episodes_per_task=cfg.trials_per_task * self.episodes_per_trial,
            episodes_per_trial=self.episodes_per_trial,
        ).to(self.device)
        metrics = self._episode_metrics(batch)
        metrics.update(self.learn(batch))
        self._update_normalizers(batch)
        self.iteration += 1
        return metrics

    def learn(self, batch: TrialBatch) -> dict[str, float]:
        """PPO epochs on a batch collected by this agent's current policy; returns loss metrics."""
        cfg = self.config
        mask = batch.mask
        inputs = trial_inputs(batch, self.action_space, obs_normalizer=self.obs_normalizer)
        rewards = _scale_reward(batch.rewards.float(), self.reward_normalizer)
        old_log_prob = batch.extras["log_prob"]
        old_values = batch.extras["value"]
        advantages, returns = trial_advantages(
            rewards, old_values, trial_done=batch.trial_done, mask=mask, discount=cfg.discount, gae_lambda=cfg.gae_lambda
        )
        steps, slots = batch.num_steps, batch.num_slots
        chunk = min(cfg.bptt_chunk or steps, steps)
        start = self.network.core.initial_state(slots, device=self.device)

        def all_chunk_states() -> torch.Tensor:
            return self.network.core.chunk_states(
                inputs.obs, inputs.prev_action, inputs.prev_reward, inputs.prev_done, start, chunk=chunk
            )

        chunk_states = all_chunk_states()
        num_minibatches = min(cfg.num_minibatches, slots)
        sums: dict[str, float] = {}
        updates = 0
        epochs_run = 0
        for _ in range(cfg.epochs):
            if cfg.chunk_states == "refresh" and epochs_run > 0:
                chunk_states = all_chunk_states()
            order = torch.randperm(slots, generator=self.train_generator, device=self.device)
            epoch_kl = []
            for slot_ids in order.tensor_split(num_minibatches):
                mb_mask = mask[:, slot_ids]
                dist, values = evaluate_trials(self.network, inputs.select(slot_ids), chunk_states[:, :, slot_ids], chunk=chunk)
                actions = batch.actions[:, slot_ids]
                log_prob = dist.log_prob(actions)
                mb_adv = advantages[:, slot_ids]
                if cfg.normalize_advantages:
                    mb_adv = normalize_advantages(mb_adv, mask=mb_mask)
                mb_old = old_log_prob[:, slot_ids]
                policy_loss = clipped_surrogate_loss(log_prob, mb_old, mb_adv, clip=cfg.clip, mask=mb_mask)
                v_loss = value_loss(
                    values,
                    returns[:, slot_ids],
                    old_values=old_values[:, slot_ids],
                    clip=cfg.value_clip,
                    mask=mb_mask,
                    huber_delta=cfg.huber_delta,
                )
                entropy = entropy_bonus(dist.entropy(), mask=mb_mask)
                loss = policy_loss + cfg.value_coef * v_loss - cfg.entropy_coef * entropy
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.max_grad_norm is not None:
                    grad_norm = nn.utils.clip_grad_norm_(self.network.parameters(), cfg.max_grad_norm)
                else:
                    grad_norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in self.network.parameters() if p.grad is not None))
                self.optimizer.step()
                kl = approx_kl(log_prob, mb_old, mask=mb_mask)
                epoch_kl.append(kl.item())
                for key, value in (
                    ("policy_loss", policy_loss),
                    ("value_loss", v_loss),
                    ("entropy", entropy),
                    ("approx_kl", kl),
                    ("clip_fraction", clip_fraction(log_prob, mb_old, clip=cfg.clip, mask=mb_mask)),
                    ("grad_norm", grad_norm),
                ):
                    sums[key] = sums.get(key, 0.0) + float(value.detach())
                updates += 1
            epochs_run += 1
            if cfg.target_kl is not None and sum(epoch_kl) / len(epoch_kl) > cfg.target_kl:
                break
        out = {f"meta_train/{k}": v / updates for k, v in sums.items()}
        valid_returns, valid_values = returns[mask], old_values[mask]
        var = valid_returns.var(unbiased=False)
        explained = 1.0 - (valid_returns - valid_values).var(unbiased=False) / var if var > 0 else torch.tensor(float("nan"))
        out["meta_train/explained_variance"] = float(explained)
        out["meta_train/epochs"] = float(epochs_run)
        out["meta_train/advantage_mean"] = float(masked_mean(advantages, mask))
        return out

    @torch.no_grad()
    def _update_normalizers(self, batch: TrialBatch) -> None:
        if self.obs_normalizer is not None:
            self.obs_normalizer.update(batch.observations.reshape(batch.num_steps, batch.num_slots, -1), batch.mask)
        if self.reward_normalizer is not None:
            running = _discounted_running_returns(batch.rewards.double(), batch.mask, discount=self.config.discount)
            self.reward_normalizer.update(running, batch.mask)

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

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Weights, optimiser, normalisers, both action generators and the iteration count."""
        return {
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "obs_normalizer": None if self.obs_normalizer is None else self.obs_normalizer.state_dict(),
            "reward_normalizer": None if self.reward_normalizer is None else self.reward_normalizer.state_dict(),
            "train_generator": self.train_generator.get_state(),
            "eval_generator": self.eval_generator.get_state(),
            "iteration": self.iteration,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        missing = {"network", "optimizer", "train_generator", "eval_generator", "iteration"} - set(state)
        if missing:
            raise CheckpointError(f"RL2 state is missing {sorted(missing)}; it has {sorted(state)}")
        try:
            self.network.load_state_dict(state["network"])
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise CheckpointError(f"RL2 weights do not fit this config ({first})") from None
        self.optimizer.load_state_dict(state["optimizer"])
        for name in ("obs_normalizer", "reward_normalizer"):
            mine, saved = getattr(self, name), state.get(name)
            if (mine is None) != (saved is None):
                raise CheckpointError(f"RL2 checkpoint {name} is {'absent' if saved is None else 'present'} but the config says otherwise")
            if mine is not None:
                mine.load_state_dict(saved)
        self.train_generator.set_state(state["train_generator"].cpu())
        self.eval_generator.set_state(state["eval_generator"].cpu())
        self.iteration = int(state["iteration"])
