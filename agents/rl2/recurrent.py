"""The recurrent core of RL²-style agents: embeddings of ``(obs, previous action, previous reward,
previous done)`` → GRU → policy and value heads.

RL² (Duan et al. 2016, §2.2 and Fig. 1) feeds a recurrent policy the tuple
``(s_t, a_{t−1}, r_{t−1}, d_{t−1})`` and keeps its hidden state across the episodes of a trial;
VariBAD's encoder (Zintgraf et al. 2020, §4; repo ``lmzintgraf/varibad: models/encoder.py``)
embeds state, action and reward separately (32/16/16) before a GRU of 128. This module provides
those pieces as plain ``nn.Module`` s with explicit, generator-driven initialisation:

- :class:`RecurrentCore`: input embeddings and the GRU, with a one-step call for acting and a
  sequence call for learning, plus :meth:`RecurrentCore.chunk_states` for truncated BPTT;
- :func:`mlp`: a multilayer perceptron;
- :class:`CategoricalHead`, :class:`GaussianHead` (:func:`action_head` picks one from a gymnasium
  space) returning :class:`Categorical` / :class:`DiagGaussian` action distributions that sample
  with an explicit ``torch.Generator``.

Shapes: ``T`` time, ``B`` slots, ``L`` GRU layers, ``H`` hidden size, ``A`` action dimension
(the number of actions for discrete spaces, whose previous action comes one-hot).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from metarl.errors import ConfigError, EnvError, choices

__all__ = [
    "Activation",
    "ACTIVATIONS",
    "mlp",
    "init_linear_",
    "RecurrentCore",
    "DualCore",
    "LayerNormGRU",
    "CELLS",
    "ActionDistribution",
    "Categorical",
    "DiagGaussian",
    "CategoricalHead",
    "GaussianHead",
    "action_head",
    "action_input_dim",
]

Activation = Literal["tanh", "relu"]
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; valid activations: {choices(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def _linear(in_features: int, out_features: int, *, bias: bool = True) -> nn.Linear:
    """An ``nn.Linear`` allocated without torch's default initialisation, which would draw from
    the global RNG; the caller initialises every weight from its own generator."""
    return nn.utils.skip_init(nn.Linear, in_features, out_features, bias=bias)


def init_linear_(layer: nn.Linear, *, gain: float, generator: torch.Generator) -> None:
    """Orthogonal weights with ``gain`` and zero bias (Saxe et al. 2014; the PPO default of
    OpenAI baselines and CleanRL), drawn from ``generator``."""
    nn.init.orthogonal_(layer.weight, gain=gain, generator=generator)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def mlp(
    in_dim: int,
    hidden_sizes: Sequence[int],
    out_dim: int | None,
    *,
    activation: str,
    generator: torch.Generator,
    out_gain: float = 1.0,
) -> nn.Sequential:
    """``Linear → act`` for each hidden size, then an optional output ``Linear`` (no activation).

    Hidden layers get orthogonal init with gain √2; the output layer gets ``out_gain`` (0.01 for
    policy logits/means so the initial policy is near uniform, 1 for values).

    Args:
        in_dim: input features.
        hidden_sizes: widths of the hidden layers (may be empty).
        out_dim: output features; ``None``: no output layer (the last hidden layer is the output).
        activation: ``"tanh"`` or ``"relu"``.
        generator: source of the initial weights.
        out_gain: orthogonal gain of the output layer.
    """
    layers: list[nn.Module] = []
    dim = in_dim
    for width in hidden_sizes:
        layer = _linear(dim, int(width))
        init_linear_(layer, gain=math.sqrt(2.0), generator=generator)
        layers += [layer, _activation(activation)]
        dim = int(width)
    if out_dim is not None:
        layer = _linear(dim, out_dim)
        init_linear_(layer, gain=out_gain, generator=generator)
        layers.append(layer)
    return nn.Sequential(*layers)


def action_input_dim(space: gym.Space) -> int:
    """Width of the previous-action input: ``n`` (one-hot) for ``Discrete(n)``, ``prod(shape)``
    for ``Box``."""
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    if isinstance(space, gym.spaces.Box):
        return int(np.prod(space.shape))
    raise EnvError(f"unsupported action space {space}; valid spaces: 'Box', 'Discrete'")


class LayerNormGRU(nn.Module):
    """A GRU with layer normalisation (Ba et al. 2016, §3.2) on each gate's input and recurrent
    projections, a ReLU candidate and a negative update-gate bias, with ``nn.GRU``'s call
    signature (time-major, state ``[L, B, H]``).

    Per layer and step, with ``LN`` a learned layer normalisation::

        z, r = split(LN(W_xzr x) + LN(W_hzr h))
        z = sigmoid(z - update_bias);  r = sigmoid(r)
        n = relu(LN(W_xn x) + r * LN(W_hn h))
        h = (1 - z) * h + z * n

    The ReLU candidate keeps the state non-negative from the zero trial-start state and lets it
    grow past tanh's [-1, 1] (it is still a gated average of candidates, bounded by them), and
    ``update_bias`` starts the update gate mostly closed, so the state is kept across steps until
    learning opens it. This is the recurrent architecture of ``lucaslingle/pytorch_rl2``'s GRU,
    which reports RL²'s tabular-MDP figures; its initialisation here is orthogonal, with torch's
    LayerNorm epsilon. The input projections of all steps are computed at once; the recurrence is
    a loop over steps.

    Args:
        input_size: D, features per step.
        hidden_size: H.
        num_layers: L, stacked layers (layer ``l > 0`` reads layer ``l - 1``'s output).
        update_bias: subtracted from the update gate's pre-activation.
        generator: source of every initial weight (orthogonal; layer norms start at identity).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        update_bias: float = 1.0,
        generator: torch.Generator,
    ):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = int(input_size), int(hidden_size), int(num_layers)
        self.update_bias = float(update_bias)
        h = self.hidden_size
        self.layers = nn.ModuleList()
        for layer in range(self.num_layers):
            d = self.input_size if layer == 0 else h
            cell = nn.ModuleDict(
                {
                    "x_zr": _linear(d, 2 * h, bias=False),
                    "h_zr": _linear(h, 2 * h, bias=False),
                    "x_n": _linear(d, h, bias=False),
                    "h_n": _linear(h, h, bias=False),
                    "ln_x_zr": nn.LayerNorm(2 * h),
                    "ln_h_zr": nn.LayerNorm(2 * h),
                    "ln_x_n": nn.LayerNorm(h),
                    "ln_h_n": nn.LayerNorm(h),
                }
            )
            for name in ("x_zr", "h_zr", "x_n", "h_n"):
                for block in cell[name].weight.data.chunk(cell[name].out_features // h, dim=0):
                    nn.init.orthogonal_(block, generator=generator)
            self.layers.append(cell)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x[T, B, D]``, ``state[L, B, H]`` -> ``(outputs[T, B, H], state[L, B, H])``."""
        finals = []
        for layer, cell in enumerate(self.layers):
            x_zr = cell["ln_x_zr"](cell["x_zr"](x))
            x_n = cell["ln_x_n"](cell["x_n"](x))
            h = state[layer]
            outputs = []
            for t in range(x.shape[0]):
                z, r = (x_zr[t] + cell["ln_h_zr"](cell["h_zr"](h))).chunk(2, dim=-1)
                z = torch.sigmoid(z - self.update_bias)
                n = torch.relu(x_n[t] + torch.sigmoid(r) * cell["ln_h_n"](cell["h_n"](h)))
                h = h + z * (n - h)
                outputs.append(h)
            x = torch.stack(outputs)
            finals.append(h)
        return x, torch.stack(finals)


#: Recurrent cells of :class:`RecurrentCore`.
CELLS: tuple[str, ...] = ("gru", "ln_gru")


class RecurrentCore(nn.Module):
    """Embeds ``(obs, prev_action, prev_reward, prev_done)`` and runs a GRU over them.

    Each of observation, previous action and previous reward goes through its own
    ``Linear → activation`` embedding (width 0: the raw input is used, as in RL²'s original
    concatenation); the done flag is appended raw. The concatenation feeds an optional shared
    MLP (``encoder_sizes``, Meta-World+'s 2×256 tanh encoder) and then an ``L``-layer GRU.

    Args:
        obs_dim: flattened observation size.
        action_dim: previous-action input size (see :func:`action_input_dim`).
        hidden_size: H, the GRU width.
        num_layers: L, stacked GRU layers.
        obs_embedding, action_embedding, reward_embedding: embedding widths (0 = raw input).
        encoder_sizes: hidden widths of the MLP between the embeddings and the GRU.
        activation: nonlinearity of embeddings and encoder.
        cell: ``"gru"`` (``nn.GRU``) or ``"ln_gru"`` (:class:`LayerNormGRU`).
        chrono_max_steps: ``None``: zero GRU biases. An integer ``T_max >= 3``: chrono
            initialisation (Tallec & Ollivier 2018, "Can recurrent neural networks warp time?",
            §3): the bias of each unit's update ("keep") gate is ``log(u)`` with
            ``u ~ U[1, T_max − 1]``, so at initialisation the units forget on time scales spread
            between about 2 and ``T_max`` steps instead of all about 2. ``gru`` cell only.
        generator: source of every initial weight (the GRU's included).
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        *,
        hidden_size: int,
        num_layers: int = 1,
        obs_embedding: int = 0,
        action_embedding: int = 0,
        reward_embedding: int = 0,
        encoder_sizes: Sequence[int] = (),
        activation: str = "tanh",
        cell: str = "gru",
        chrono_max_steps: int | None = None,
        generator: torch.Generator,
    ):
        super().__init__()
        if cell not in CELLS:
            raise ConfigError(f"unknown recurrent cell {cell!r}; valid cells: {choices(CELLS)}")
        if chrono_max_steps is not None:
            if cell != "gru":
                raise ConfigError(f"chrono initialisation needs cell 'gru', got cell {cell!r}")
            if int(chrono_max_steps) < 3:
                raise ConfigError(f"chrono initialisation needs a horizon of at least 3 steps, got {chrono_max_steps}")
        self.cell = cell
        self.obs_dim = int(obs_dim)
        self.action_dim = int(action_dim)
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)

        def embedding(in_dim: int, width: int) -> tuple[nn.Module, int]:
            if width <= 0:
                return nn.Identity(), in_dim
            return mlp(in_dim, (width,), None, activation=activation, generator=generator), width

        self.obs_embed, d_obs = embedding(self.obs_dim, obs_embedding)
        self.action_embed, d_act = embedding(self.action_dim, action_embedding)
        self.reward_embed, d_rew = embedding(1, reward_embedding)
        in_dim = d_obs + d_act + d_rew + 1
        self.encoder = mlp(in_dim, encoder_sizes, None, activation=activation, generator=generator)
        gru_in = int(encoder_sizes[-1]) if len(encoder_sizes) else in_dim
        if cell == "ln_gru":
            self.gru: nn.Module = LayerNormGRU(gru_in, self.hidden_size, self.num_layers, generator=generator)
        else:
            # Allocated on the meta device and materialised uninitialised, which skips torch's
            # default init (it draws from the global RNG); every weight is set below: orthogonal
            # recurrent and input matrices, zero biases (the usual recurrent-PPO init).
            self.gru = nn.GRU(gru_in, self.hidden_size, num_layers=self.num_layers, device="meta").to_empty(device="cpu")
            for name, param in self.gru.named_parameters():
                if name.startswith("weight_hh") or name.startswith("weight_ih"):
                    for block in param.data.chunk(3, dim=0):
                        nn.init.orthogonal_(block, generator=generator)
                else:
                    nn.init.zeros_(param)
            if chrono_max_steps is not None:
                h = self.hidden_size
                for layer in range(self.num_layers):
                    # torch's gate order in the biases: reset, update, candidate.
                    u = torch.rand(h, generator=generator) * (int(chrono_max_steps) - 2) + 1.0
                    getattr(self.gru, f"bias_ih_l{layer}").data[h : 2 * h] = torch.log(u)

    def initial_state(self, batch_size: int, *, device: torch.device | str | None = None) -> torch.Tensor:
        """Zeros ``[L, B, H]``: the state at trial start."""
        device = next(self.gru.parameters()).device if device is None else device
        return torch.zeros(self.num_layers, batch_size, self.hidden_size, device=device)

    def embed(
        self,
        obs: torch.Tensor,
        prev_action: torch.Tensor,
        prev_reward: torch.Tensor,
        prev_done: torch.Tensor,
    ) -> torch.Tensor:
        """GRU inputs ``[..., D]`` from ``obs[..., *obs_shape]``, ``prev_action[..., A]``,
        ``prev_reward[...]`` and ``prev_done[...]`` sharing the leading axes."""
        lead = prev_reward.shape
        obs = obs.reshape(*lead, self.obs_dim)
        prev_action = prev_action.reshape(*lead, self.action_dim).to(obs.dtype)
        parts = [
            self.obs_embed(obs),
            self.action_embed(prev_action),
            self.reward_embed(prev_reward.to(obs.dtype).unsqueeze(-1)),
            prev_done.to(obs.dtype).unsqueeze(-1),
        ]
        return self.encoder(torch.cat(parts, dim=-1))

    def forward(
        self,
        obs: torch.Tensor,
        prev_action: torch.Tensor,
        prev_reward: torch.Tensor,
        prev_done: torch.Tensor,
        state: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the GRU over a time-major sequence.

        The state is never reset inside the sequence: a sequence is (a piece of) one trial,
        and RL² keeps the hidden state across the trial's episode boundaries.

        Args:
            obs: ``[T, B, *obs_shape]``.
            prev_action: ``[T, B, A]``.
            prev_reward, prev_done: ``[T, B]``.
            state: ``[L, B, H]`` the state before step 0.

        Returns:
            ``(features[T, B, H], state[L, B, H])``: the top layer's output at every step and the
            state after the last step.
        """
        x = self.embed(obs, prev_action, prev_reward, prev_done)
        return self.gru(x, state)

    def step(
        self,
        obs: torch.Tensor,
        prev_action: torch.Tensor,
        prev_reward: torch.Tensor,
        prev_done: torch.Tensor,
        state: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step for all slots: inputs ``[B, ...]``, state ``[L, B, H]``; returns
        ``(features[B, H], state[L, B, H])``."""
        out, state = self.forward(
            obs.unsqueeze(0), prev_action.unsqueeze(0), prev_reward.unsqueeze(0), prev_done.unsqueeze(0), state
        )
        return out.squeeze(0), state

    @torch.no_grad()
    def chunk_states(
        self,
        obs: torch.Tensor,
        prev_action: torch.Tensor,
        prev_reward: torch.Tensor,
        prev_done: torch.Tensor,
        state: torch.Tensor,
        *,
        chunk: int,
    ) -> torch.Tensor:
        """The state at the start of every ``chunk`` steps, for truncated BPTT.

        Runs the sequence without gradient, chunk by chunk, and records the state entering each
        chunk: ``out[c]`` is the state before step ``c·chunk``.

        Args:
            obs, prev_action, prev_reward, prev_done: the whole sequence, ``[T, B, ...]``.
            state: ``[L, B, H]`` state before step 0.
            chunk: chunk length.

        Returns:
            ``[ceil(T / chunk), L, B, H]``.
        """
        steps = prev_reward.shape[0]
        states = []
        for start in range(0, steps, chunk):
            states.append(state)
            end = min(start + chunk, steps)
            if end < steps:
                _, state = self.forward(
                    obs[start:end], prev_action[start:end], prev_reward[start:end], prev_done[start:end], state
                )
        return torch.stack(states)


class DualCore(nn.Module):
    """Two :class:`RecurrentCore` s side by side on the same inputs: one for the policy, one for
    the value function (the RL² paper's separate GRU baseline, Duan et al. 2016 §2.2), so the
    value loss does not shape the policy's memory.

    It has :class:`RecurrentCore`'s interface. The state is the two cores' states concatenated
    on the last axis, ``[L, B, 2H]``, and so are the features ``[..., 2H]``: the policy's in
    ``[..., :H]``, the value function's in ``[..., H:]``.

    Args:
        obs_dim, action_dim: as :class:`RecurrentCore`.
        generator: source of every initial weight (the policy core's drawn first).
        **kwargs: :class:`RecurrentCore` settings shared by both cores.
    """

    def __init__(self, obs_dim: int, action_dim: int, *, generator: torch.Generator, **kwargs):
        super().__init__()
        self.policy = RecurrentCore(obs_dim, action_dim, generator=generator, **kwargs)
        self.value = RecurrentCore(obs_dim, action_dim, generator=generator, **kwargs)
        self.obs_dim = self.policy.obs_dim
        self.action_dim = self.policy.action_dim
        self.core_size = self.policy.hidden_size
        self.hidden_size = 2 * self.core_size
        self.num_layers = self.policy.num_layers

    def initial_state(self, batch_size: int, *, device: torch.device | str | None = None) -> torch.Tensor:
        """Zeros ``[L, B, 2H]``: the state at trial start."""
        return torch.cat([self.policy.initial_state(batch_size, device=device), self.value.initial_state(batch_size, device=device)], -1)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both cores over a time-major sequence: ``inputs`` are :meth:`RecurrentCore.forward`'s
        ``(obs, prev_action, prev_reward, prev_done, state)`` with the state ``[L, B, 2H]``.

        Returns:
            ``(features[T, B, 2H], state[L, B, 2H])``.
        """
        *sequence, state = inputs
        h = self.core_size
        f_pi, s_pi = self.policy(*sequence, state[..., :h])
        f_v, s_v = self.value(*sequence, state[..., h:])
        return torch.cat([f_pi, f_v], -1), torch.cat([s_pi, s_v], -1)

    step = RecurrentCore.step
    chunk_states = RecurrentCore.chunk_states


class ActionDistribution(abc.ABC):
    """A batch of action distributions over leading axes ``[...]``."""

    @abc.abstractmethod
    def sample(self, generator: torch.Generator) -> torch.Tensor:
        """Draw one action per element with ``generator``."""

    @abc.abstractmethod
    def mode(self) -> torch.Tensor:
        """The most likely action (the deterministic policy)."""

    @abc.abstractmethod
    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        """``[...]`` log-probability (density for continuous actions) of ``actions``."""

    @abc.abstractmethod
    def entropy(self) -> torch.Tensor:
        """``[...]`` entropy."""


class Categorical(ActionDistribution):
    """Categorical over ``n`` actions from ``logits[..., n]``; actions are long ``[...]``."""

    def __init__(self, logits: torch.Tensor):
        self.log_probs = torch.log_softmax(logits, dim=-1)

    def sample(self, generator: torch.Generator) -> torch.Tensor:
        probs = self.log_probs.exp().reshape(-1, self.log_probs.shape[-1])
        draws = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        return draws.reshape(self.log_probs.shape[:-1])

    def mode(self) -> torch.Tensor:
        return self.log_probs.argmax(dim=-1)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return self.log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> torch.Tensor:
        return -(self.log_probs.exp() * self.log_probs).sum(-1)


class DiagGaussian(ActionDistribution):
    """Diagonal Gaussian from ``mean[..., A]`` and ``log_std[A]`` (or ``[..., A]``); log-probs
    and entropies sum over the action dimensions."""

    def __init__(self, mean: torch.Tensor, log_std: torch.Tensor):
        self.mean = mean
        self.log_std = log_std.expand_as(mean)

    def sample(self, generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.log_std.exp() * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        z = (actions - self.mean) * torch.exp(-self.log_std)
        return (-0.5 * z * z - self.log_std - 0.5 * math.log(2.0 * math.pi)).sum(-1)

    def entropy(self) -> torch.Tensor:
        return (self.log_std + 0.5 * (1.0 + math.log(2.0 * math.pi))).sum(-1)


class CategoricalHead(nn.Module):
    """MLP → logits → :class:`Categorical`."""

    def __init__(self, in_dim: int, num_actions: int, *, hidden_sizes: Sequence[int], activation: str, generator: torch.Generator):
        super().__init__()
        self.net = mlp(in_dim, hidden_sizes, num_actions, activation=activation, generator=generator, out_gain=0.01)

    def forward(self, features: torch.Tensor) -> Categorical:
        return Categorical(self.net(features))


class GaussianHead(nn.Module):
    """MLP → mean, with a state-independent learned log-std (VariBAD's and garage's default) →
    :class:`DiagGaussian`."""

    def __init__(
        self,
        in_dim: int,
        action_dim: int,
        *,
        hidden_sizes: Sequence[int],
        activation: str,
        init_std: float,
        generator: torch.Generator,
    ):
        super().__init__()
        if init_std <= 0:
            raise ConfigError(f"init_std must be positive, got init_std={init_std!r}")
        self.net = mlp(in_dim, hidden_sizes, action_dim, activation=activation, generator=generator, out_gain=0.01)
        self.log_std = nn.Parameter(torch.full((action_dim,), math.log(init_std)))

    def forward(self, features: torch.Tensor) -> DiagGaussian:
        return DiagGaussian(self.net(features), self.log_std)


def action_head(
    space: gym.Space,
    in_dim: int,
    *,
    hidden_sizes: Sequence[int],
    activation: str,
    init_std: float,
    generator: torch.Generator,
) -> CategoricalHead | GaussianHead:
    """The head for ``space``: categorical for ``Discrete``, diagonal Gaussian for ``Box``."""
    if isinstance(space, gym.spaces.Discrete):
        return CategoricalHead(in_dim, int(space.n), hidden_sizes=hidden_sizes, activation=activation, generator=generator)
    if isinstance(space, gym.spaces.Box):
        return GaussianHead(
            in_dim,
            int(np.prod(space.shape)),
            hidden_sizes=hidden_sizes,
            activation=activation,
            init_std=init_std,
            generator=generator,
        )
    raise EnvError(f"unsupported action space {space}; valid spaces: 'Box', 'Discrete'")
