"""Trust-region maths as pure functions: flat parameters, Hessian-vector products, conjugate
gradient, the natural-gradient step and the backtracking line search of TRPO.

Reference: Schulman et al. 2015, "Trust Region Policy Optimization" (ICML), §6 and App. C: the
search direction solves ``H x = g`` by conjugate gradient with Hessian-vector products of the
mean KL, is scaled so that the quadratic model of the KL equals the trust-region size δ, and a
backtracking line search accepts the first fraction that improves the surrogate while the exact
KL stays within δ. Finn et al. 2017 (MAML-TRPO) use the same outer step with the KL taken through
the inner adaptation; here every Hessian-vector product is exact (double backward), never a finite
difference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch

__all__ = [
    "flatten",
    "unflatten",
    "hessian_vector_product",
    "conjugate_gradient",
    "natural_gradient_step",
    "LineSearchResult",
    "backtracking_line_search",
]


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate ``tensors`` into one flat vector (differentiable)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(flat: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Split the flat vector ``flat`` into views shaped like ``like`` (inverse of :func:`flatten`).

    Raises:
        ValueError: ``flat`` does not have exactly as many elements as ``like`` together.
    """
    sizes = [t.numel() for t in like]
    if flat.dim() != 1 or flat.numel() != sum(sizes):
        raise ValueError(f"flat vector of shape {tuple(flat.shape)} does not match {sum(sizes)} parameters")
    return [piece.view_as(t) for piece, t in zip(torch.split(flat, sizes), like)]


def hessian_vector_product(
    scalar: torch.Tensor, params: Sequence[torch.Tensor], *, damping: float = 0.0
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Exact Hessian-vector products of ``scalar`` with respect to ``params`` by double backward.

    The gradient is taken once with ``create_graph=True``; each call then differentiates
    ``∇f · v`` (Pearlmutter 1994). The graph of ``scalar`` is kept, so the returned function can
    be called many times (conjugate-gradient iterations).

    Args:
        scalar: a 0-d tensor, e.g. the mean KL between the old and the new policy.
        params: the tensors to differentiate with respect to (leaves or not).
        damping: added as ``damping · v`` (Tikhonov damping of the Fisher matrix).

    Returns:
        ``hvp(v) -> (H + damping I) v`` on flat vectors of the parameters' total size.
    """
    params = list(params)
    grads = torch.autograd.grad(scalar, params, create_graph=True, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    flat_grad = flatten(grads)

    def hvp(vector: torch.Tensor) -> torch.Tensor:
        product = torch.dot(flat_grad, vector.detach())
        hv = torch.autograd.grad(product, params, retain_graph=True, allow_unused=True)
        hv = [torch.zeros_like(p) if h is None else h for p, h in zip(params, hv)]
        return flatten(hv).detach() + damping * vector

    return hvp


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    *,
    iterations: int = 10,
    residual_tol: float = 1e-10,
) -> torch.Tensor:
    """Approximately solve ``A x = b`` for symmetric positive-definite ``A`` given as ``matvec``.

    Hestenes & Stiefel (1952); starts from ``x = 0`` and stops after ``iterations`` steps or when
    the squared residual norm falls below ``residual_tol`` (TRPO uses 10 iterations).

    Args:
        matvec: ``v -> A v`` on vectors shaped like ``b``.
        b: ``[n]`` right-hand side.
        iterations: at most this many iterations.
        residual_tol: stop when ``‖r‖² < residual_tol``.

    Returns:
        ``[n]`` the approximate solution (exact after ``n`` iterations in exact arithmetic).
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    r_dot = torch.dot(r, r)
    for _ in range(iterations):
        if r_dot.item() < residual_tol:
            break
        ap = matvec(p)
        alpha = r_dot / torch.dot(p, ap)
        x = x + alpha * p
        r = r - alpha * ap
        new_r_dot = torch.dot(r, r)
        p = r + (new_r_dot / r_dot) * p
        r_dot = new_r_dot
    return x


def natural_gradient_step(
    loss_grad: torch.Tensor,
    hvp: Callable[[torch.Tensor], torch.Tensor],
    *,
    max_kl: float,
    cg_iterations: int = 10,
) -> torch.Tensor:
    """The full TRPO step ``−√(2δ / xᵀHx) · x`` with ``x ≈ H⁻¹ ∇L`` (TRPO App. C).

    Along this step the quadratic model of the KL, ``½ sᵀ H s``, equals ``max_kl``.

    Args:
        loss_grad: ``[n]`` gradient of the loss to *minimise* at the current parameters.
        hvp: ``v -> H v`` (the KL's Hessian, usually damped).
        max_kl: the trust-region size δ.
        cg_iterations: conjugate-gradient iterations.

    Returns:
        ``[n]`` the parameter change (zeros when the gradient is zero).
    """
    direction = conjugate_gradient(hvp, loss_grad, iterations=cg_iterations)
    curvature = torch.dot(direction, hvp(direction))
    if not torch.isfinite(curvature) or curvature.item() <= 0.0:
        return torch.zeros_like(loss_grad)
    return -torch.sqrt(2.0 * max_kl / curvature) * direction


@dataclasses.dataclass(frozen=True)
class LineSearchResult:
    """Outcome of :func:`backtracking_line_search`.

    Attributes:
        accepted: a fraction of the step was accepted.
        fraction: the accepted fraction of the full step (0.0 when rejected).
        num_steps: how many fractions were evaluated.
        loss_before: the loss at the starting point.
        loss: the loss at the accepted point (``loss_before`` when rejected).
        kl: the KL at the accepted point (0.0 when rejected).
    """

    accepted: bool
    fraction: float
    num_steps: int
    loss_before: float
    loss: float
    kl: float

    @property
    def improvement(self) -> float:
        """How much the loss went down (0.0 when rejected)."""
        return self.loss_before - self.loss


def backtracking_line_search(
    evaluate: Callable[[float], tuple[float, float]],
    *,
    loss_before: float,
    max_kl: float,
    max_steps: int = 15,
    backtrack_ratio: float = 0.8,
) -> LineSearchResult:
    """Try fractions ``1, r, r², …`` of a step; accept the first that lowers the loss and keeps
    the KL within ``max_kl`` (TRPO §6; ratio 0.8 and 15 steps as in rllab and pytorch-maml-rl).

    Args:
        evaluate: ``fraction -> (loss, kl)`` at the parameters moved by ``fraction`` of the step.
        loss_before: the loss at the current parameters.
        max_kl: the largest KL accepted.
        max_steps: how many fractions to try.
        backtrack_ratio: the factor ``r`` in ``(0, 1)`` between successive fractions.

    Returns:
        A :class:`LineSearchResult`; when no fraction qualifies the step is rejected
        (``fraction == 0``) and the caller keeps its parameters.
    """
    if not 0.0 < backtrack_ratio < 1.0:
        raise ValueError(f"backtrack_ratio must lie in (0, 1), got {backtrack_ratio}")
    fraction = 1.0
    for step in range(1, max_steps + 1):
        loss, kl = evaluate(fraction)
        # NaN compares False, so a non-finite loss or KL is never accepted.
        if loss < loss_before and kl <= max_kl:
            return LineSearchResult(True, fraction, step, float(loss_before), float(loss), float(kl))
        fraction *= backtrack_ratio
    return LineSearchResult(False, 0.0, max_steps, float(loss_before), float(loss_before), 0.0)
