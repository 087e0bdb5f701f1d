"""VariBAD's ELBO and the buffer of recent trials it is trained on.

Zintgraf et al. 2020, eq. 8 and §4: for every prefix ``τ:t`` of a trial the posterior
``q(m | τ:t)`` must reconstruct the *whole* trial, past and future (ELBO_t), and is pulled
towards the previous posterior by ``KL(q_t ‖ q_{t−1})``; the loss sums the ELBO_t terms
(repo ``lmzintgraf/varibad: vae.py compute_loss``):

``loss = Σ_t [ c_r Σ_k ℓ_r(m_t; s_k, a_k, r_k, s'_k) + c_s Σ_k ℓ_s(…) + c_k ℓ_k(m_t; task)
+ β KL(q_t ‖ q_{t−1}) ]``, averaged over trials, with ``m_t ~ q_t`` (one reparameterised
sample per ELBO term) and ``q_{−1} = N(0, I)``.

``vae_subsample_elbos`` keeps a random subset of the ``t`` and ``vae_subsample_decodes`` of the
``k`` (drawn with replacement, as the repo does); ``vae_avg_*`` average instead of summing.

The ELBO terms are the ``T`` posteriors the policy acts on, ``q_0`` (the prior) to ``q_{T−1}``;
the repo also has a term for the posterior after the trial's last transition, which no policy
step uses (see :mod:`~metarl.agents.varibad.encoder` for the time indexing). Decoded transitions
use the true next state, also at an episode's last step (the repo decodes the reset state there).

Shapes: ``T`` time, ``B`` trials, ``E`` ELBO terms, ``K`` decodes, ``L`` latent dimension.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import torch
from torch import nn

from metarl.agents.rl2.agent import TrialInputs, trial_inputs
from metarl.agents.varibad.config import VariBADConfig
from metarl.agents.varibad.decoder import RewardDecoder, StateDecoder, TaskDecoder
from metarl.agents.varibad.encoder import consecutive_kls
from metarl.errors import CheckpointError
from metarl.types import Task, TrialBatch

__all__ = ["TrialData", "trial_data", "task_vector", "elbo_loss", "VAEBuffer"]


def task_vector(task: Task) -> torch.Tensor:
    """The task's numeric parameters, flattened in name order: the task decoder's target
    (non-numeric parameters are skipped)."""
    parts = []
    for _, value in task.params:
        if isinstance(value, (str, bytes)):
            continue
        try:
            parts.append(torch.as_tensor(value, dtype=torch.float32).reshape(-1))
        except (TypeError, ValueError, RuntimeError):
            continue
    return torch.cat(parts) if parts else torch.zeros(0)


@dataclasses.dataclass
class TrialData:
    """What the ELBO needs of ``B`` trials, time-major.

    Attributes:
        inputs: the encoder's inputs (the policy's view of every step, raw).
        obs, next_obs: ``[T, B, D]`` state before and after each step (the true final state of
            an episode, before the reset).
        action: ``[T, B, A]`` float (one-hot for discrete actions).
        reward: ``[T, B]``.
        mask: ``[T, B]`` bool, the step is real.
        task: ``[B, K]`` task parameters, or ``None`` when no task decoder is used.
    """

    inputs: TrialInputs
    obs: torch.Tensor
    next_obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    mask: torch.Tensor
    task: torch.Tensor | None = None


def trial_data(batch: TrialBatch, action_space: gym.Space, *, task: torch.Tensor | None = None) -> TrialData:
    """:class:`TrialData` of a batch (or of a sample from :class:`VAEBuffer`)."""
    steps, slots = batch.num_steps, batch.num_slots
    inputs = trial_inputs(batch, action_space)
    if isinstance(action_space, gym.spaces.Discrete):
        action = nn.functional.one_hot(batch.actions.long(), int(action_space.n)).float()
    else:
        action = batch.actions.reshape(steps, slots, -1).float()
    return TrialData(
        inputs=inputs,
        obs=batch.observations.reshape(steps, slots, -1).float(),
        next_obs=batch.next_observations.reshape(steps, slots, -1).float(),
        action=action,
        reward=batch.rewards.float(),
        mask=batch.mask,
        task=task,
    )


def _gather_time(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[index[..., b], b]`` for ``x[T, B, ...]`` and ``index[..., B]``."""
    slots = torch.arange(x.shape[1], device=x.device).expand_as(index)
    return x[index, slots]


def _draw_steps(lengths: torch.Tensor, shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """Uniform step indices ``[*shape, B]`` below each trial's length ``lengths[B]``."""
    u = torch.rand((*shape, lengths.shape[0]), generator=generator, device=generator.device).to(lengths.device)
    return torch.minimum((u * lengths).long(), lengths - 1)


def elbo_loss(
    mean: torch.Tensor,
    logvar: torch.Tensor,
    data: TrialData,
    *,
    config: VariBADConfig,
    reward_decoder: RewardDecoder | None,
    state_decoder: StateDecoder | None,
    task_decoder: TaskDecoder | None,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """The negative ELBO of ``B`` trials (module docstring), with its parts.

    Random draws, in order, from ``generator``: the latent noise ``[T, B, L]``, then the ELBO
    indices ``[E, B]`` (with ``vae_subsample_elbos``), then the decode indices ``[E, K, B]``
    (with ``vae_subsample_decodes``).

    Args:
        mean, logvar: ``[T, B, L]`` posteriors, ``[t]`` the one the policy acts on at step t
            (``[0]`` the prior), from :meth:`BeliefEncoder.forward`.
        data: the trials.
        config: weights, subsampling and reductions.
        reward_decoder, state_decoder, task_decoder: the decoders in use (``None``: off).
        generator: latent noise and subsampling.

    Returns:
        ``loss`` (the weighted objective to minimise), ``reward_recon``, ``state_recon``,
        ``task_recon`` and ``kl`` (each summed or averaged over ELBO terms and decodes as
        configured, averaged over trials), and ``elbo`` = −(sum of the unweighted parts).
    """
    steps, slots = data.reward.shape
    mask = data.mask
    lengths = mask.sum(0).clamp(min=1)
    noise = torch.randn(mean.shape, generator=generator, device=generator.device).to(mean.device)
    samples = mean + torch.exp(0.5 * logvar) * noise
    kls = consecutive_kls(mean, logvar)  # [T, B]

    if config.vae_subsample_elbos is not None:
        elbo_index = _draw_steps(lengths, (config.vae_subsample_elbos,), generator)  # [E, B]
        latents = _gather_time(samples, elbo_index)
        kls = _gather_time(kls, elbo_index)
        elbo_valid = torch.ones_like(elbo_index, dtype=torch.bool)
    else:
        latents, elbo_valid = samples, mask
    num_elbos = latents.shape[0]

    if config.vae_subsample_decodes is not None:
        decode_index = _draw_steps(lengths, (num_elbos, config.vae_subsample_decodes), generator)  # [E, K, B]

        def decoded(x: torch.Tensor) -> torch.Tensor:
            return _gather_time(x, decode_index)

        decode_valid = torch.ones_like(decode_index, dtype=torch.bool)
    else:

        def decoded(x: torch.Tensor) -> torch.Tensor:
            return x.unsqueeze(0)  # [1, T, B, ...], broadcast against the E axis

        decode_valid = mask.unsqueeze(0).expand(num_elbos, steps, slots)
    z = latents.unsqueeze(1)  # [E, 1, B, L]

    def reduce(per_decode: torch.Tensor | None, per_elbo: torch.Tensor | None = None) -> torch.Tensor:
        """[E, K, B] (or [E, B]) losses → scalar: over decodes, over ELBO terms, mean over trials."""
        if per_decode is not None:
            valid = decode_valid.to(per_decode.dtype)
            per_elbo = (per_decode * valid).sum(1)
            if config.vae_avg_reconstruction_terms:
                per_elbo = per_elbo / valid.sum(1).clamp(min=1.0)
        assert per_elbo is not None
        valid_e = elbo_valid.to(per_elbo.dtype)
        per_trial = (per_elbo * valid_e).sum(0)
        if config.vae_avg_elbo_terms:
            per_trial = per_trial / valid_e.sum(0).clamp(min=1.0)
        return per_trial.mean()

    zero = mean.new_zeros(())
    out: dict[str, torch.Tensor] = {"reward_recon": zero, "state_recon": zero, "task_recon": zero}
    if reward_decoder is not None:
        per = reward_decoder.loss(z, decoded(data.obs), decoded(data.action), decoded(data.next_obs), decoded(data.reward))
        out["reward_recon"] = reduce(per.expand(*decode_valid.shape))
    if state_decoder is not None:
        per = state_decoder.loss(z, decoded(data.obs), decoded(data.action), decoded(data.next_obs))
        out["state_recon"] = reduce(per.expand(*decode_valid.shape))
    if task_decoder is not None:
        if data.task is None:
            raise ValueError("the task decoder needs TrialData.task")
        out["task_recon"] = reduce(None, task_decoder.loss(latents, data.task.unsqueeze(0).expand(num_elbos, -1, -1)))
    out["kl"] = reduce(None, kls)
    out["loss"] = (
        config.reward_loss_coef * out["reward_recon"]
        + config.state_loss_coef * out["state_recon"]
        + config.task_loss_coef * out["task_recon"]
        + config.kl_weight * out["kl"]
    )
    out["elbo"] = -(out["reward_recon"] + out["state_recon"] + out["task_recon"] + out["kl"])
    return out


class VAEBuffer:
    """A ring buffer of recent trials for the ELBO updates (VariBAD's ``RolloutStorageVAE``).

    Trials are stored whole, zero-padded to ``horizon`` steps with a validity mask; when full,
    the newest trial replaces the oldest. :meth:`sample` draws trials uniformly without
    replacement (as the repo's ``get_batch``) and returns them as a :class:`TrialBatch`.

    Args:
        capacity: most trials kept.
        horizon: steps of the longest trial (episodes per trial × episode length).
        device: where the buffer lives.
    """

    _FIELDS = ("observations", "next_observations", "actions", "rewards", "dones", "mask")

    def __init__(self, capacity: int, *, horizon: int, device: torch.device | str = "cpu"):
        self.capacity = int(capacity)
        self.horizon = int(horizon)
        self.device = torch.device(device)
        self.storage: dict[str, torch.Tensor] = {}
        self.tasks: torch.Tensor | None = None
        self.size = 0
        self.insert_at = 0

    def __len__(self) -> int:
        return self.size

    @property
    def num_steps(self) -> int:
        """Valid steps held."""
        return int(self.storage["mask"][:, : self.size].sum()) if self.storage else 0

    def _allocate(self, batch: TrialBatch, tasks: torch.Tensor | None) -> None:
        def empty(like: torch.Tensor) -> torch.Tensor:
            return torch.zeros((self.horizon, self.capacity, *like.shape[2:]), dtype=like.dtype, device=self.device)

        dones = batch.dones
        self.storage = {
            "observations": empty(batch.observations),
            "next_observations": empty(batch.next_observations),
            "actions": empty(batch.actions),
            "rewards": empty(batch.rewards),
            "dones": empty(dones),
            "mask": empty(batch.mask),
        }
        if tasks is not None:
            self.tasks = torch.zeros((self.capacity, tasks.shape[-1]), device=self.device)

    def add(self, batch: TrialBatch, *, tasks: torch.Tensor | None = None) -> None:
        """Store every trial of ``batch`` (``tasks``: ``[B, K]`` task vectors, optional)."""
        if batch.num_steps > self.horizon:
            raise ValueError(f"trials of {batch.num_steps} steps do not fit a buffer of horizon {self.horizon}")
        if not self.storage:
            self._allocate(batch, tasks)
        # A batch larger than the buffer leaves only its last `capacity` trials: write just
        # those, so that no slot is written twice in one indexed store (whose order is undefined
        # on CUDA).
        first = max(0, batch.num_slots - self.capacity)
        slots = (self.insert_at + torch.arange(first, batch.num_slots)) % self.capacity
        steps = batch.num_steps
        values = {
            "observations": batch.observations,
            "next_observations": batch.next_observations,
            "actions": batch.actions,
            "rewards": batch.rewards,
            "dones": batch.dones,
            "mask": batch.mask,
        }
        slots_d = slots.to(self.device)
        for name, value in values.items():
            store = self.storage[name]
            store[:, slots_d] = 0
            store[:steps, slots_d] = value[:, first:].to(self.device, store.dtype)
        if self.tasks is not None and tasks is not None:
            self.tasks[slots_d] = tasks[first:].to(self.device)
        self.insert_at = int((self.insert_at + batch.num_slots) % self.capacity)
        self.size = min(self.capacity, self.size + batch.num_slots)

    def sample(self, n: int, *, generator: torch.Generator, device: torch.device | str) -> tuple[TrialBatch, torch.Tensor | None]:
        """``min(n, len)`` trials drawn without replacement, as a :class:`TrialBatch` on
        ``device`` (episode ends in ``terminated``), and their task vectors."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty VAE buffer")
        count = min(int(n), self.size)
        index = torch.randperm(self.size, generator=generator, device=generator.device)[:count].to(self.device)
        picked = {name: self.storage[name][:, index].to(device) for name in self._FIELDS}
        length = int(picked["mask"].any(1).nonzero().max().item()) + 1 if picked["mask"].any() else 1
        picked = {name: value[:length] for name, value in picked.items()}
        zeros_bool = torch.zeros_like(picked["mask"])
        zeros_long = torch.zeros(picked["mask"].shape, dtype=torch.long, device=picked["mask"].device)
        batch = TrialBatch(
            observations=picked["observations"],
            next_observations=picked["next_observations"],
            actions=picked["actions"],
            rewards=picked["rewards"],
            terminated=picked["dones"],
            truncated=zeros_bool,
            trial_done=zeros_bool,
            episode_index=zeros_long,
            step_in_episode=zeros_long,
            mask=picked["mask"],
            task_index=torch.arange(count, device=picked["mask"].device),
            trial_index=torch.zeros(count, dtype=torch.long, device=picked["mask"].device),
        )
        tasks = None if self.tasks is None else self.tasks[index].to(device)
        return batch, tasks

    def state_dict(self, *, contents: bool = True) -> dict[str, Any]:
        """Position and fill, and (with ``contents``) the stored trials."""
        state: dict[str, Any] = {"size": self.size, "insert_at": self.insert_at, "contents": None}
        if contents and self.storage:
            # Only the filled part, so an early checkpoint stays small.
            state["contents"] = {
                "storage": {k: v[:, : self.size].cpu().clone() for k, v in self.storage.items()},
                "tasks": None if self.tasks is None else self.tasks[: self.size].cpu().clone(),
            }
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; without contents the buffer starts empty."""
        contents = state.get("contents")
        self.storage, self.tasks = {}, None
        if contents is None:
            self.size, self.insert_at = 0, 0
            return
        size = int(state["size"])
        stored = contents["storage"]
        if set(stored) != set(self._FIELDS):
            raise CheckpointError(f"VAE buffer state has fields {sorted(stored)}; expected {sorted(self._FIELDS)}")
        if stored["mask"].shape[0] != self.horizon or size > self.capacity:
            raise CheckpointError(
                f"VAE buffer state holds {size} trials of {stored['mask'].shape[0]} steps; this buffer takes {self.capacity} of {self.horizon}"
            )
        for name, value in stored.items():
            full = torch.zeros((self.horizon, self.capacity, *value.shape[2:]), dtype=value.dtype, device=self.device)
            full[:, :size] = value.to(self.device)
            self.storage[name] = full
        if contents.get("tasks") is not None:
            self.tasks = torch.zeros((self.capacity, contents["tasks"].shape[-1]), device=self.device)
            self.tasks[:size] = contents["tasks"].to(self.device)
        self.size = size
        self.insert_at = int(state["insert_at"])
