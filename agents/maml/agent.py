"""MAML-family meta-learners: MAML-TRPO (Finn, Abbeel & Levine 2017), MAML-PPO and Reptile
(Nichol, Achiam & Schulman 2018).

All three share the policy (:mod:`metarl.agents.maml.policy`), the inner loop
(:mod:`metarl.agents.maml.adaptation`) and the test-time adaptation; they differ in the outer
update only:

- :class:`MAMLTRPO`: TRPO on the query episodes through the adaptation, with the exact
  second-order meta-gradient, exact Hessian-vector products of the mean KL, conjugate gradient and
  a backtracking line search (``first_order=True``: FO-MAML, the same code with the inner gradient
  held constant);
- :class:`MAMLPPO`: the clipped surrogate through the adaptation, optimised with Adam for a few
  epochs on the same query data, re-adapting every epoch (the outer loop of ProMP without its KL
  penalty; Rothfuss et al. 2019);
- :class:`Reptile`: ``k`` policy-gradient steps per task, then ``θ ← θ + ε (mean_i φ_i − θ)``.

A meta-training iteration collects, for every task, ``episodes_per_task`` support episodes with the
current parameters, adapts, collects the next batch with the adapted parameters, and so on
(rllab's ``BatchMAMLPolopt``): ``num_inner_steps`` support batches and one query batch.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import gymnasium as gym
import torch

from metarl.agents.maml.adaptation import (
    TaskData,
    adapt_params,
    adaptation_path,
    inner_step,
    meta_kl_hessian_vector_product,
    stack_params,
    task_data,
)
from metarl.agents.maml.policy import (
    GaussianMLP,
    MAMLPolicy,
    gaussian_kl,
    gaussian_log_prob,
    task_distributions,
)
from metarl.config import at_least, positive
from metarl.errors import ConfigError, EnvError
from metarl.optim import backtracking_line_search, flatten, natural_gradient_step, unflatten
from metarl.ppo import approx_kl, clip_fraction, clipped_surrogate_loss
from metarl.seeding import torch_generator
from metarl.types import Agent, Task, TaskDistribution, TrialBatch

__all__ = ["AdaptationConfig", "MAMLAgent", "SupportQueryAgent", "MAMLTRPO", "MAMLTRPOConfig", "MAMLPPO", "MAMLPPOConfig", "Reptile", "ReptileConfig"]

Params = dict[str, torch.Tensor]


@dataclasses.dataclass(frozen=True)
class AdaptationConfig:
    """Policy, inner loop and test-time adaptation shared by the MAML family (Finn et al. 2017
    §5.3 and App. A.2 unless noted)."""

    hidden_sizes: tuple[int, ...] = positive((100, 100))
    """Hidden-layer widths of the policy's mean MLP (paper: two layers of 100)."""

    activation: Literal["relu", "tanh"] = "relu"
    """Hidden activation (paper: ReLU; pytorch-maml-rl and garage: tanh)."""

    init_log_std: float = 0.0
    """Initial log standard deviation of the state-independent policy noise (rllab: 0)."""

    episodes_per_task: int = positive(20)
    """Episodes per task in every support and query batch ("fast batch size"; paper: 20)."""

    num_inner_steps: int = positive(1)
    """Inner policy-gradient steps per task during meta-training (paper: 1)."""

    inner_lr: float = positive(0.1)
    """Inner step size α during meta-training (paper: 0.1)."""

    test_inner_lrs: tuple[float, ...] = positive((0.1, 0.05))
    """Step size of test-time adaptation step k (the last entry repeats); paper: 0.1 for the
    first step and 0.05 for later ones."""

    discount: float = 0.99
    """Discount γ of the returns (rllab default)."""

    gae_lambda: float = 1.0
    """GAE λ of the advantages (rllab default 1: reward-to-go minus the baseline)."""

    normalize_advantages: bool = True
    """Centre and scale advantages per task (rllab ``center_adv``)."""

    baseline_reg_coeff: float = positive(1e-5)
    """Ridge coefficient of the per-task linear feature baseline."""

    vectorized: bool = True
    """Adapt all tasks in one vmapped computation; ``False`` loops over tasks (the reference
    the vectorised path is tested and benchmarked against). Both agree up to float rounding. On a
    CPU the loop is currently the faster one (``metarl bench maml`` at full size, 2 threads: one
    meta-update takes 8.2 s looped, 16.0 s vmapped); vmap is for CUDA, where it replaces one
    small pass per task with one batched pass."""

    def __post_init__(self) -> None:
        if not self.test_inner_lrs:
            raise ConfigError("test_inner_lrs must list at least one step size, got []")
        if not 0.0 < self.discount <= 1.0:
            raise ConfigError(f"discount must lie in (0, 1], got {self.discount}")
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise ConfigError(f"gae_lambda must lie in [0, 1], got {self.gae_lambda}")


@dataclasses.dataclass(frozen=True)
class MAMLTRPOConfig(AdaptationConfig):
    """MAML with a TRPO outer loop (Finn et al. 2017 §5.3; pytorch-maml-rl's TRPO settings)."""

    first_order: bool = False
    """Hold the inner gradient constant (first-order MAML, Finn et al. 2017 §5.2)."""

    max_kl: float = positive(0.01)
    """Trust-region size δ: the largest mean KL of an outer step (paper: 0.01)."""

    cg_iterations: int = positive(10)
    """Conjugate-gradient iterations for the search direction."""

    cg_damping: float = at_least(1e-5, 0.0)
    """Damping added to the KL's Hessian-vector products."""

    line_search_steps: int = positive(15)
    """Backtracking line-search trials before the step is rejected."""

    backtrack_ratio: float = positive(0.8)
    """Shrink factor between line-search trials, in (0, 1)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.backtrack_ratio < 1.0:
            raise ConfigError(f"backtrack_ratio must lie in (0, 1), got {self.backtrack_ratio}")


@dataclasses.dataclass(frozen=True)
class MAMLPPOConfig(AdaptationConfig):
    """MAML with a clipped-surrogate outer loop (ProMP's outer optimiser, Rothfuss et al. 2019)."""

    first_order: bool = False
    """Hold the inner gradient constant (first-order MAML)."""

    outer_lr: float = positive(1e-3)
    """Adam step size of the outer loop (ProMP: 1e-3)."""

    clip: float = positive(0.3)
    """Clipping range ε of the surrogate (ProMP: 0.3)."""

    num_epochs: int = positive(5)
    """Outer optimisation epochs on one query batch, re-adapting every epoch (ProMP: 5)."""


@dataclasses.dataclass(frozen=True)
class ReptileConfig(AdaptationConfig):
    """Reptile with policy-gradient inner steps (Nichol, Achiam & Schulman 2018, Alg. 2).

    Each inner step collects fresh episodes with the current adapted parameters and takes one
    REINFORCE step of size ``inner_lr``. There is no published RL setting; the defaults take
    Nichol et al.'s initial meta step size and a few inner steps (with ``k = 1`` Reptile is joint
    training, §5 of the paper).
    """

    num_inner_steps: int = positive(3)
    """Inner policy-gradient steps ``k`` per task, each on freshly collected episodes."""

    outer_lr: float = positive(1.0)
    """Meta step size ε of ``θ ← θ + ε (mean_i φ_i − θ)`` (Nichol et al. 2018: 1.0 at the start)."""


class MAMLAgent(Agent):
    """What the MAML family shares: the policy, the context and test-time adaptation.

    The context is a parameter dict ``name -> [N, ...]``, one slice per task.

    Args:
        config: the agent's ``Config``.
        dist: the task distribution (for the observation and action sizes).
        device: where learning and the policy run.
        seed: root seed of the initial weights and the action noise.
    """

    adaptation = "gradient"
    Config: type[AdaptationConfig] = AdaptationConfig

    def __init__(self, config: AdaptationConfig, *, dist: TaskDistribution, device: torch.device | str, seed: int) -> None:
        if not isinstance(config, self.Config):
            raise ConfigError(f"{type(self).__name__} needs a {self.Config.__name__}, got {type(config).__name__}")
        obs_space, act_space = dist.observation_space, dist.action_space
        if not isinstance(act_space, gym.spaces.Box) or not isinstance(obs_space, gym.spaces.Box):
            raise EnvError(
                f"{type(self).__name__} needs Box observation and action spaces (a Gaussian policy), "
                f"got {obs_space} and {act_space} for env {dist.name!r}"
            )
        self.config = config
        self.device = torch.device(device)
        self.net = GaussianMLP(
            int(torch.tensor(obs_space.shape).prod()),
            int(torch.tensor(act_space.shape).prod()),
            hidden_sizes=config.hidden_sizes,
            activation=config.activation,
            init_log_std=config.init_log_std,
            generator=torch_generator(seed, "maml", "init"),
        ).to(self.device)
        # Training and evaluation draw action noise from separate streams, so evaluating (how
        # often, on how many tasks) never changes the course of training.
        self.generator = torch_generator(seed, "maml", "actions", device=self.device)
        self.eval_generator = torch_generator(seed, "maml", "eval-actions", device=self.device)
        self.iteration = 0

    # ---------------------------------------------------------------- context and policy
    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    def meta_parameters(self) -> Params:
        """The meta-parameters θ, by name (the live tensors)."""
        return dict(self.net.named_parameters())

    def initial_context(self, num_tasks: int) -> Params:
        """θ copied for each of ``num_tasks`` tasks: name -> ``[N, ...]``."""
        return {k: v.detach().clone() for k, v in stack_params(self.meta_parameters(), num_tasks).items()}

    def policy(self, context: Mapping[str, torch.Tensor], *, deterministic: bool = False) -> MAMLPolicy:
        """The policy of ``context`` for evaluation (its own action-noise stream)."""
        return MAMLPolicy(self.net, context, generator=self.eval_generator, deterministic=deterministic, device=self.device)

    def task_data(self, batch: TrialBatch, num_tasks: int) -> TaskData:
        """``batch`` as per-task support or query data (advantages included)."""
        c = self.config
        return task_data(
            batch,
            num_tasks=num_tasks,
            discount=c.discount,
            gae_lambda=c.gae_lambda,
            normalize_advantages=c.normalize_advantages,
            baseline_reg_coeff=c.baseline_reg_coeff,
            dtype=self.dtype,
            device=self.device,
        )

    def adapt(self, batch: TrialBatch, context: Mapping[str, torch.Tensor], *, step: int = 0) -> Params:
        """One REINFORCE step for every task on ``batch`` with the test-time step size of
        adaptation step ``step`` (``test_inner_lrs[step]``, the last entry repeating)."""
        lrs = self.config.test_inner_lrs
        num_tasks = int(next(iter(context.values())).shape[0])
        return self._inner_step_detached(context, self.task_data(batch, num_tasks), lr=lrs[min(step, len(lrs) - 1)])

    def _inner_step_detached(self, context: Mapping[str, torch.Tensor], data: TaskData, *, lr: float) -> Params:
        with torch.enable_grad():
            adapted = inner_step(
                self.net,
                {k: v.detach() for k, v in context.items()},
                data,
                lr=lr,
                create_graph=False,
                vectorized=self.config.vectorized,
            )
        return {k: v.detach() for k, v in adapted.items()}

    def _collect(self, sampler: Any, tasks: Sequence[Task], context: Mapping[str, torch.Tensor]) -> TaskData:
        policy = MAMLPolicy(self.net, context, generator=self.generator, device=self.device)
        batch = sampler.collect(policy, tasks, episodes_per_task=self.config.episodes_per_task, episodes_per_trial=1)
        return self.task_data(batch, len(tasks))

    def _collect_and_adapt(self, sampler: Any, tasks: Sequence[Task]) -> tuple[list[TaskData], Params]:
        """``num_inner_steps`` batches, each collected with the parameters adapted on the previous
        ones (rllab's ``BatchMAMLPolopt``); returns them and the parameters after the last step."""
        context = self.initial_context(len(tasks))
        batches: list[TaskData] = []
        for _ in range(self.config.num_inner_steps):
            batches.append(self._collect(sampler, tasks, context))
            context = self._inner_step_detached(context, batches[-1], lr=self.config.inner_lr)
        return batches, context

    def _adapted_distributions(
        self, theta: Mapping[str, torch.Tensor], supports: Sequence[TaskData], query: TaskData, *, create_graph: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The adapted policies' Gaussians on the query observations, as functions of ``θ``:
        ``(mean [N, M, A], log_std [N, 1, A])``."""
        adapted = adapt_params(
            self.net,
            stack_params(theta, query.num_tasks),
            supports,
            lrs=[self.config.inner_lr] * len(supports),
            create_graph=create_graph,
            vectorized=self.config.vectorized,
        )
        return task_distributions(self.net, adapted, query.observations, vectorized=self.config.vectorized)

    @staticmethod
    def _return_metrics(supports: Sequence[TaskData], query: TaskData | None) -> dict[str, float]:
        out = {"meta_train/return_pre": supports[0].mean_return}
        if supports[0].mean_success is not None:
            out["meta_train/success_pre"] = supports[0].mean_success
        if query is not None:
            out["meta_train/return_post"] = query.mean_return
            if query.mean_success is not None:
                out["meta_train/success_post"] = query.mean_success
        return out

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Weights, the training and evaluation action-noise generators and the iteration counter."""
        return {
            "net": {k: v.detach().clone() for k, v in self.net.state_dict().items()},
            "generator": self.generator.get_state(),
            "eval_generator": self.eval_generator.get_state(),
            "iteration": self.iteration,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.generator.set_state(state["generator"].cpu())
        # Checkpoints written before evaluation had its own stream keep the fresh one.
        if "eval_generator" in state:
            self.eval_generator.set_state(state["eval_generator"].cpu())
        self.iteration = int(state["iteration"])


class SupportQueryAgent(MAMLAgent):
    """A MAML agent whose outer step learns from query episodes through the adaptation on
    support episodes (MAML-TRPO, MAML-PPO)."""

    def meta_train_step(self, sampler: Any, tasks: Sequence[Task]) -> dict[str, float]:
        """Collect the support batches and the query batch, then take one outer step
        (:meth:`meta_update`)."""
        supports, context = self._collect_and_adapt(sampler, tasks)
        query = self._collect(sampler, tasks, context)
        start = time.perf_counter()
        metrics = self.meta_update(supports, query)
        metrics["time/meta_update_s"] = time.perf_counter() - start
        return {**self._return_metrics(supports, query), **metrics}

    @abc.abstractmethod
    def meta_update(self, supports: Sequence[TaskData], query: TaskData) -> dict[str, float]:
        """The outer step on prepared support and query data (collection excluded)."""


class MAMLTRPO(SupportQueryAgent):
    """MAML-TRPO: exact second-order meta-gradients, vectorised across tasks (Finn et al. 2017)."""

    Config = MAMLTRPOConfig
    config: MAMLTRPOConfig

    def meta_update(self, supports: Sequence[TaskData], query: TaskData) -> dict[str, float]:
        """One TRPO step of θ on the query data through the adaptation on ``supports``.

        The surrogate is ``L(θ) = −mean_i Σ_m w·(π_φi(θ)(a|s) / π_φi(θold)(a|s))·A``; its gradient
        at ``θold`` is the MAML policy gradient. The constraint is the mean over tasks of the
        mean KL between the old and new adapted policies on the query states. Both pass through
        the inner step, so the gradient and the Hessian-vector products are exact second-order
        quantities (or first-order ones when ``first_order``); the products are taken factor by
        factor through the inner steps (:func:`meta_kl_hessian_vector_product`), which equals
        double backward through the whole graph and costs less.

        Returns:
            metrics: ``meta_train/{loss, kl, surrogate_improvement, line_search_steps,
            step_accepted, grad_norm, policy_std}``.
        """
        c = self.config
        params = list(self.net.parameters())
        names = [name for name, _ in self.net.named_parameters()]
        theta = dict(zip(names, params))

        adapted, steps = adaptation_path(
            self.net,
            stack_params(theta, query.num_tasks),
            supports,
            lrs=[c.inner_lr] * len(supports),
            create_graph=not c.first_order,
            vectorized=c.vectorized,
        )
        mean, log_std = task_distributions(self.net, adapted, query.observations, vectorized=c.vectorized)
        old_mean, old_log_std = mean.detach(), log_std.detach()
        old_log_prob = gaussian_log_prob(query.actions, old_mean, old_log_std)

        def surrogate_and_kl(mean: torch.Tensor, log_std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            ratio = torch.exp(gaussian_log_prob(query.actions, mean, log_std) - old_log_prob)
            loss = -(query.weights * ratio * query.advantages).sum(1).mean()
            kl = (query.weights * gaussian_kl(old_mean, old_log_std, mean, log_std)).sum(1).mean()
            return loss, kl

        loss, kl = surrogate_and_kl(mean, log_std)
        flat_grad = flatten(torch.autograd.grad(loss, params, retain_graph=True))
        hvp = meta_kl_hessian_vector_product(kl, adapted, steps, damping=c.cg_damping)
        step = natural_gradient_step(flat_grad, hvp, max_kl=c.max_kl, cg_iterations=c.cg_iterations)

        flat_theta = flatten([p.detach() for p in params])

        def evaluate(fraction: float) -> tuple[float, float]:
            candidate = unflatten(flat_theta + fraction * step, params)
            cand_theta = {n: p.detach().requires_grad_() for n, p in zip(names, candidate)}
            cand_mean, cand_log_std = self._adapted_distributions(cand_theta, supports, query, create_graph=False)
            with torch.no_grad():
                cand_loss, cand_kl = surrogate_and_kl(cand_mean, cand_log_std)
            return float(cand_loss), float(cand_kl)

        result = backtracking_line_search(
            evaluate,
            loss_before=loss.item(),
            max_kl=c.max_kl,
            max_steps=c.line_search_steps,
            backtrack_ratio=c.backtrack_ratio,
        )
        if result.accepted:
            with torch.no_grad():
                for p, delta in zip(params, unflatten(result.fraction * step, params)):
                    p.add_(delta)
        self.iteration += 1
        return {
            "meta_train/loss": result.loss_before,
            "meta_train/kl": result.kl,
            "meta_train/surrogate_improvement": result.improvement,
            "meta_train/line_search_steps": float(result.num_steps),
            "meta_train/step_accepted": float(result.accepted),
            "meta_train/grad_norm": float(flat_grad.norm()),
            "meta_train/policy_std": float(self.net.log_std.detach().exp().mean()),
        }


class MAMLPPO(SupportQueryAgent):
    """MAML-PPO: the clipped surrogate through the adaptation, optimised with Adam."""

    Config = MAMLPPOConfig
    config: MAMLPPOConfig

    def __init__(self, config: MAMLPPOConfig, *, dist: TaskDistribution, device: torch.device | str, seed: int) -> None:
        super().__init__(config, dist=dist, device=device, seed=seed)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.outer_lr)

    def meta_update(self, supports: Sequence[TaskData], query: TaskData) -> dict[str, float]:
        """``num_epochs`` Adam steps on the clipped surrogate of the query data, re-adapting from
        the current θ every epoch; the ratio is against the adapted policy that collected it.

        Returns:
            metrics: ``meta_train/{loss, approx_kl, clip_fraction, policy_std}`` (of the last epoch).
        """
        c = self.config
        theta = self.meta_parameters()
        old_log_prob: torch.Tensor | None = None
        for _ in range(c.num_epochs):
            mean, log_std = self._adapted_distributions(theta, supports, query, create_graph=not c.first_order)
            log_prob = gaussian_log_prob(query.actions, mean, log_std)
            if old_log_prob is None:
                old_log_prob = log_prob.detach()
            loss = clipped_surrogate_loss(log_prob, old_log_prob, query.advantages, clip=c.clip, mask=query.mask)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        self.iteration += 1
        return {
            "meta_train/loss": loss.item(),
            "meta_train/approx_kl": float(approx_kl(log_prob, old_log_prob, mask=query.mask)),
            "meta_train/clip_fraction": float(clip_fraction(log_prob, old_log_prob, clip=c.clip, mask=query.mask)),
            "meta_train/policy_std": float(self.net.log_std.detach().exp().mean()),
        }

    def state_dict(self) -> dict[str, Any]:
        """Weights, Adam's state, the action-noise generators and the iteration counter."""
        # A deep copy: Adam's state tensors are updated in place by later steps.
        return {**super().state_dict(), "optimizer": copy.deepcopy(self.optimizer.state_dict())}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])


class Reptile(MAMLAgent):
    """Reptile: ``k`` policy-gradient steps per task, then ``θ ← θ + ε (mean_i φ_i − θ)``."""

    Config = ReptileConfig
    config: ReptileConfig

    def meta_train_step(self, sampler: Any, tasks: Sequence[Task]) -> dict[str, float]:
        """``k`` batches and inner steps per task, then the Reptile update."""
        batches, adapted = self._collect_and_adapt(sampler, tasks)
        start = time.perf_counter()
        metrics = self.meta_update(adapted)
        metrics["time/meta_update_s"] = time.perf_counter() - start
        # With k >= 2 the last batch was collected after k - 1 inner steps.
        return {**self._return_metrics(batches, batches[-1] if len(batches) > 1 else None), **metrics}

    def meta_update(self, adapted: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """``θ ← θ + ε (mean_i φ_i − θ)`` (Nichol et al. 2018, Alg. 2, batched version).

        Args:
            adapted: name -> ``[N, ...]`` the tasks' parameters after the inner steps.
        """
        with torch.no_grad():
            sq_norm = 0.0
            for name, p in self.net.named_parameters():
                delta = adapted[name].mean(0) - p
                sq_norm += float((delta * delta).sum())
                p.add_(self.config.outer_lr * delta)
        self.iteration += 1
        return {
            "meta_train/update_norm": self.config.outer_lr * sq_norm**0.5,
            "meta_train/policy_std": float(self.net.log_std.detach().exp().mean()),
        }
