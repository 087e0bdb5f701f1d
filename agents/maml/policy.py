"""The Gaussian MLP policy of MAML-RL and its batched form over per-task parameters.

Finn et al. 2017 §5.3: a Gaussian policy whose mean is an MLP of the observation (two hidden
layers of 100 ReLU units) and whose log standard deviation is a learned, state-independent
vector. The network is only ever evaluated functionally (``torch.func.functional_call``) on a
parameter dict, so adaptation never mutates it (design §6.5).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import nn
from torch.func import functional_call, vmap

from metarl.errors import ConfigError, choices
from metarl.types import Policy, StepInputs

__all__ = [
    "ACTIVATIONS",
    "GaussianMLP",
    "MAMLPolicy",
    "gaussian_log_prob",
    "gaussian_kl",
    "task_distributions",
    "grouped_distributions",
]

Params = dict[str, torch.Tensor]

#: Hidden-layer activations by config name.
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


class GaussianMLP(nn.Module):
    """``π(a|s) = N(MLP(s), diag(exp(log_std))²)`` with a learned state-independent ``log_std``.

    Weights are Xavier-uniform and biases zero (rllab's and pytorch-maml-rl's initialisation),
    drawn from ``generator`` only, so building a policy never touches torch's global RNG.

    Args:
        obs_dim: observation size D.
        act_dim: action size A.
        hidden_sizes: widths of the hidden layers.
        activation: ``"relu"`` or ``"tanh"``.
        init_log_std: initial value of every entry of ``log_std``.
        generator: the CPU generator of the initial weights.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        *,
        hidden_sizes: Sequence[int],
        activation: Literal["relu", "tanh"],
        init_log_std: float,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {activation!r}; valid activations: {choices(ACTIVATIONS)}")
        sizes = [int(obs_dim), *(int(h) for h in hidden_sizes), int(act_dim)]
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            # skip_init allocates without nn.Linear's default init, which would draw from the global RNG.
            linear = torch.nn.utils.skip_init(nn.Linear, fan_in, fan_out)
            with torch.no_grad():
                nn.init.xavier_uniform_(linear.weight, generator=generator)
                linear.bias.zero_()
            layers.append(linear)
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation]())
        self.mean = nn.Sequential(*layers)
        self.log_std = nn.Parameter(torch.full((int(act_dim),), float(init_log_std)))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``obs [..., D] -> (mean [..., A], log_std [A])``."""
        return self.mean(obs), self.log_std


def gaussian_log_prob(actions: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Log density of a diagonal Gaussian, summed over the last (action) axis.

    Args:
        actions, mean: ``[..., A]``.
        log_std: broadcastable to ``[..., A]``.

    Returns:
        ``[...]``.
    """
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z * z - log_std).sum(-1) - 0.5 * actions.shape[-1] * math.log(2.0 * math.pi)


def gaussian_kl(
    mean_p: torch.Tensor, log_std_p: torch.Tensor, mean_q: torch.Tensor, log_std_q: torch.Tensor
) -> torch.Tensor:
    """``KL(p ‖ q)`` of two diagonal Gaussians, summed over the last (action) axis.

    Args:
        mean_p, mean_q: ``[..., A]``.
        log_std_p, log_std_q: broadcastable to ``[..., A]``.

    Returns:
        ``[...]``.
    """
    var_ratio = torch.exp(2.0 * (log_std_p - log_std_q))
    z = (mean_p - mean_q) * torch.exp(-log_std_q)
    return (0.5 * (var_ratio + z * z - 1.0) - (log_std_p - log_std_q)).sum(-1)


def task_distributions(
    net: GaussianMLP, params: Mapping[str, torch.Tensor], obs: torch.Tensor, *, vectorized: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The policy's Gaussian on every task's observations, each task under its own parameters.

    Args:
        net: the network whose structure is evaluated.
        params: name -> ``[N, ...]`` parameters stacked along a task axis.
        obs: ``[N, M, D]`` observations of each task.
        vectorized: one ``vmap`` over tasks (``True``) or a Python loop over tasks (the
            reference the vectorised path is tested and benchmarked against).

    Returns:
        ``(mean [N, M, A], log_std [N, 1, A])``.
    """

    def one_task(p: Mapping[str, torch.Tensor], o: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return functional_call(net, dict(p), (o,))

    if vectorized:
        mean, log_std = vmap(one_task)(dict(params), obs)
    else:
        outs = [one_task({k: v[i] for k, v in params.items()}, obs[i]) for i in range(obs.shape[0])]
        mean = torch.stack([m for m, _ in outs])
        log_std = torch.stack([s for _, s in outs])
    return mean, log_std.unsqueeze(1)


def grouped_distributions(
    net: GaussianMLP, params: Mapping[str, torch.Tensor], obs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`task_distributions` for acting: the same values, through one batched matrix
    product per layer (``baddbmm`` over the task axis) instead of ``vmap`` over
    ``functional_call``, whose per-call overhead dominates a step of a small MLP.

    Args:
        net: the network whose structure is evaluated (its ``mean`` stack of linear layers and
            activations).
        params: name -> ``[N, ...]`` parameters stacked along a task axis.
        obs: ``[N, M, D]`` observations of each task.

    Returns:
        ``(mean [N, M, A], log_std [N, 1, A])``.
    """
    hidden = obs
    for index, layer in enumerate(net.mean):
        if isinstance(layer, nn.Linear):
            weight, bias = params[f"mean.{index}.weight"], params[f"mean.{index}.bias"]
            hidden = torch.baddbmm(bias.unsqueeze(1), hidden, weight.transpose(1, 2))
        else:
            hidden = layer(hidden)
    return hidden, params["log_std"].unsqueeze(1)


@dataclasses.dataclass(frozen=True)
class _SlotGroups:
    """The policy state: slots grouped into ``G`` contiguous groups of ``S`` slots that share a
    task, with the parameters of each group gathered once per collection (``[G, ...]``)."""

    params: Params
    group_size: int


class MAMLPolicy(Policy):
    """The Gaussian MLP acting on all slots with per-task parameters, in one batched forward.

    Slots are task-major, so the ``B`` observations are reshaped to ``[G, B / G, D]`` (one group
    per task) and the network is ``vmap``-ed over the groups with each task's parameters. Actions
    are sampled with the agent's generator, never torch's global RNG.

    Args:
        net: the network (only its structure is used).
        params: name -> ``[N, ...]`` per-task parameters (the context).
        generator: draws the action noise; lives on ``device``.
        deterministic: act with the mean.
        device: where the policy computes.
    """

    def __init__(
        self,
        net: GaussianMLP,
        params: Mapping[str, torch.Tensor],
        *,
        generator: torch.Generator,
        deterministic: bool = False,
        device: torch.device,
    ) -> None:
        self.net = net
        self.params = {k: v.detach() for k, v in params.items()}
        self.num_tasks = int(next(iter(self.params.values())).shape[0])
        self.generator = generator
        self.deterministic = deterministic
        self.device = torch.device(device)
        self._dtype = next(iter(self.params.values())).dtype

    def initial_state(self, task_index: torch.Tensor) -> _SlotGroups:
        """Group the slots ``task_index[B]`` by task; slots of one task must be contiguous for
        the reshape, otherwise every slot is its own group."""
        task_index = task_index.to(self.device)
        if task_index.numel() and int(task_index.max()) >= self.num_tasks:
            raise ConfigError(
                f"slot task index {int(task_index.max())} out of range for a context of {self.num_tasks} tasks"
            )
        groups, counts = torch.unique_consecutive(task_index, return_counts=True)
        if bool((counts == counts[0]).all()):
            size = int(counts[0])
        else:
            groups, size = task_index, 1
        if groups.numel() == self.num_tasks and bool((groups == torch.arange(self.num_tasks, device=self.device)).all()):
            params = self.params
        else:
            params = {k: v.index_select(0, groups) for k, v in self.params.items()}
        return _SlotGroups(params=params, group_size=size)

    def act(
        self, inputs: StepInputs, state: _SlotGroups
    ) -> tuple[torch.Tensor, _SlotGroups, dict[str, torch.Tensor]]:
        """``obs [B, D] -> action [B, A]`` with extras ``{"log_prob": [B]}``."""
        obs = inputs.obs.to(device=self.device, dtype=self._dtype)
        num_slots = obs.shape[0]
        grouped = obs.reshape(num_slots // state.group_size, state.group_size, *obs.shape[1:])
        with torch.no_grad():
            mean, log_std = grouped_distributions(self.net, state.params, grouped)
            mean = mean.reshape(num_slots, -1)
            log_std = log_std.expand(-1, state.group_size, -1).reshape(num_slots, -1)
            if self.deterministic:
                action = mean
            else:
                noise = torch.randn(mean.shape, generator=self.generator, device=self.device, dtype=mean.dtype)
                action = mean + torch.exp(log_std) * noise
            log_prob = gaussian_log_prob(action, mean, log_std)
        return action, state, {"log_prob": log_prob}
