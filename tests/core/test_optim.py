"""Trust-region maths against numbers computed directly: flat parameters, exact Hessian-vector
products, conjugate gradient, the natural-gradient step and the backtracking line search."""

import math

import pytest
import torch

from metarl.optim import (
    backtracking_line_search,
    conjugate_gradient,
    flatten,
    hessian_vector_product,
    natural_gradient_step,
    unflatten,
)


def spd_matrix(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    return a @ a.T + n * torch.eye(n, dtype=torch.float64)


def test_flatten_unflatten_round_trip():
    like = [torch.zeros(2, 3), torch.zeros(4), torch.zeros(1, 1, 2)]
    flat = torch.arange(12.0)
    pieces = unflatten(flat, like)
    assert [tuple(p.shape) for p in pieces] == [(2, 3), (4,), (1, 1, 2)]
    assert pieces[1].tolist() == [6.0, 7.0, 8.0, 9.0]
    assert torch.equal(flatten(pieces), flat)
    with pytest.raises(ValueError, match="13"):
        unflatten(torch.zeros(13), like)


def test_conjugate_gradient_solves_spd_system():
    a = spd_matrix(6, seed=0)
    b = torch.linspace(-1.0, 2.0, 6, dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, iterations=6)
    torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-9, atol=1e-9)
    # A 2x2 system by hand: [[4, 1], [1, 3]] x = [1, 2] -> x = [1/11, 7/11].
    small = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    x2 = conjugate_gradient(lambda v: small @ v, torch.tensor([1.0, 2.0], dtype=torch.float64), iterations=2)
    torch.testing.assert_close(x2, torch.tensor([1 / 11, 7 / 11], dtype=torch.float64), rtol=0, atol=1e-12)


def test_conjugate_gradient_stops_on_zero_residual():
    calls = []

    def matvec(v):
        calls.append(1)
        return v

    x = conjugate_gradient(matvec, torch.zeros(3, dtype=torch.float64), iterations=10)
    assert torch.equal(x, torch.zeros(3, dtype=torch.float64)) and not calls


def test_hessian_vector_product_matches_explicit_hessian():
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)
    m = torch.randn(2, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    a = spd_matrix(3, seed=2)

    def f(w, m):
        # Non-quadratic, with cross terms between the two tensors.
        return 0.5 * w @ a @ w + (w[:2] @ m @ w[:2]) + torch.sin(m).sum() * w.sum() ** 2

    hvp = hessian_vector_product(f(w, m), [w, m], damping=0.1)
    hessian = torch.autograd.functional.hessian(lambda flat: f(flat[:3], flat[3:].view(2, 2)), flatten([w, m]).detach())
    for seed in range(3):
        v = torch.randn(7, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        torch.testing.assert_close(hvp(v), hessian @ v + 0.1 * v, rtol=1e-10, atol=1e-10)


def test_natural_gradient_step_fills_the_trust_region():
    a = spd_matrix(4, seed=3)
    g = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
    step = natural_gradient_step(g, lambda v: a @ v, max_kl=0.01, cg_iterations=4)
    # Direction -A^{-1} g, scaled so that 1/2 s^T A s = max_kl.
    direction = -torch.linalg.solve(a, g)
    torch.testing.assert_close(step / step.norm(), direction / direction.norm(), rtol=1e-9, atol=1e-9)
    assert math.isclose(float(0.5 * step @ a @ step), 0.01, rel_tol=1e-9)
    assert float(step @ g) < 0  # a descent direction of the loss
    assert torch.equal(natural_gradient_step(torch.zeros(4, dtype=torch.float64), lambda v: a @ v, max_kl=0.01), torch.zeros(4, dtype=torch.float64))


def test_line_search_accepts_first_improving_fraction_within_kl():
    # loss(f) = (f - 0.3)^2, kl(f) = f^2 / 10, loss at f = 0 is 0.09: f = 1 breaks the KL bound
    # (0.1 > 0.05); f = 0.8 and f = 0.64 are worse than f = 0 (0.25, 0.1156 > 0.09); f = 0.512
    # gives loss 0.0449 and KL 0.0262: accepted at the 4th evaluation.
    seen = []

    def evaluate(fraction):
        seen.append(fraction)
        return (fraction - 0.3) ** 2, fraction**2 / 10

    result = backtracking_line_search(evaluate, loss_before=0.09, max_kl=0.05, max_steps=15, backtrack_ratio=0.8)
    assert result.accepted
    assert result.num_steps == 4 and seen == pytest.approx([1.0, 0.8, 0.64, 0.512])
    assert result.fraction == pytest.approx(0.512)
    assert result.loss == pytest.approx((0.512 - 0.3) ** 2) and result.kl == pytest.approx(0.512**2 / 10)
    assert result.kl <= 0.05
    assert result.improvement == pytest.approx(0.09 - (0.512 - 0.3) ** 2)


def test_line_search_rejects_a_step_that_worsens_the_surrogate():
    result = backtracking_line_search(lambda f: (1.0 + f, 0.0), loss_before=1.0, max_kl=0.01, max_steps=5)
    assert not result.accepted
    assert result.fraction == 0.0 and result.num_steps == 5
    assert result.loss == 1.0 and result.improvement == 0.0


def test_line_search_rejects_kl_violations_and_nan():
    too_far = backtracking_line_search(lambda f: (0.0, 1.0), loss_before=1.0, max_kl=0.01, max_steps=3)
    assert not too_far.accepted
    not_finite = backtracking_line_search(lambda f: (math.nan, 0.0), loss_before=1.0, max_kl=0.01, max_steps=3)
    assert not not_finite.accepted
    with pytest.raises(ValueError, match="backtrack_ratio"):
        backtracking_line_search(lambda f: (0.0, 0.0), loss_before=1.0, max_kl=0.01, backtrack_ratio=1.5)
