"""Cycle, separability and full objective against float64 transcriptions of SPEC section 2.

The references below re-derive every equation with loops and explicit exp/log: they share no
code with the library.
"""

from __future__ import annotations

import math

import pytest
import torch

from co_settle_hf.objective import (
    co_settle_objective,
    cycle_consistency_loss,
    cycle_identity_similarity,
    cycle_matrix,
    separability_loss,
)

# ---------------------------------------------------------------- float64 references


def ref_unit(x: torch.Tensor) -> torch.Tensor:
    return x / torch.sqrt((x * x).sum(-1, keepdim=True))


def ref_pool(tokens: torch.Tensor, grid: tuple[int, int], pool: int) -> torch.Tensor:
    """(N, D) row-major tokens -> (n, D): explicit block means, trailing partial blocks dropped."""
    h, w = grid
    nodes = []
    for i in range(h // pool):
        for j in range(w // pool):
            cells = [
                tokens[(i * pool + di) * w + (j * pool + dj)]
                for di in range(pool)
                for dj in range(pool)
            ]
            nodes.append(sum(cells) / len(cells))
    return torch.stack(nodes)


def ref_row_softmax(logits: torch.Tensor) -> torch.Tensor:
    e = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
    return e / e.sum(dim=1, keepdim=True)


def ref_cycle(p1, p2, p1b, grid, tau, pool):
    """Returns (loss, accuracy, identity cosine) and the (B, n, n) matrices."""
    mats = []
    for b in range(p1.shape[0]):
        a, c, e = (ref_pool(t[b].double(), grid, pool) for t in (p1, p2, p1b))
        a12 = ref_row_softmax(torch.einsum("id,jd->ij", a, c) / tau)
        a21 = ref_row_softmax(torch.einsum("id,jd->ij", c, e) / tau)
        mats.append(torch.einsum("ij,jk->ik", a12, a21))
    m = torch.stack(mats)
    n = m.shape[-1]
    losses, hits = [], []
    for b in range(m.shape[0]):
        for i in range(n):
            losses.append(-math.log(m[b, i, i].item() + 1e-6))
            hits.append(float(int(m[b, i].argmax()) == i))
    eye = torch.eye(n, dtype=torch.float64).expand_as(m)
    cos = (m * eye).sum() / (m.norm() * eye.norm())
    return sum(losses) / len(losses), sum(hits) / len(hits), cos.item(), m


def ref_log_softmax(x: torch.Tensor) -> torch.Tensor:
    return x - torch.log(torch.exp(x).sum(-1, keepdim=True))


def ref_separability(projected, frozen, kind, direction):
    p, z = ref_unit(projected.double()), ref_unit(frozen.double())
    if kind == "mse":
        return ((p - z) ** 2).mean().item()
    lp, lz = ref_log_softmax(p), ref_log_softmax(z)
    if direction == "code":  # KL(softmax Z || softmax P)
        kl = (torch.exp(lz) * (lz - lp)).sum()
    else:  # KL(softmax P || softmax Z)
        kl = (torch.exp(lp) * (lp - lz)).sum()
    return kl.item() / projected.shape[0]


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


CASES = [  # (B, grid, pool)
    (1, (4, 4), 2),
    (3, (7, 5), 2),
    (2, (7, 5), 1),
    (2, (6, 9), 3),
    (4, (2, 3), 1),
]

# ---------------------------------------------------------------- cycle


@pytest.mark.parametrize("b, grid, pool", CASES)
@pytest.mark.parametrize("tau", [0.03, 0.5])
def test_cycle_matches_reference(b, grid, pool, tau):
    g = torch.Generator().manual_seed(b * 100 + grid[0] * 10 + pool)
    n = grid[0] * grid[1]
    p1, p2, p1b = (unit(torch.randn(b, n, 8, generator=g, dtype=torch.float64)) for _ in range(3))
    loss, acc = cycle_consistency_loss(p1, p2, p1b, grid, temperature=tau, pool=pool)
    r_loss, r_acc, r_cos, r_m = ref_cycle(p1, p2, p1b, grid, tau, pool)
    assert loss.item() == pytest.approx(r_loss, abs=1e-6)
    assert acc.item() == pytest.approx(r_acc, abs=1e-12)
    m = cycle_matrix(p1, p2, p1b, grid, temperature=tau, pool=pool)
    nodes = (grid[0] // pool) * (grid[1] // pool)
    assert m.shape == (b, nodes, nodes)
    torch.testing.assert_close(m, r_m, atol=1e-6, rtol=0)
    assert cycle_identity_similarity(m).item() == pytest.approx(r_cos, abs=1e-6)


def test_cycle_float32_close_to_float64_reference():
    g = torch.Generator().manual_seed(0)
    p1, p2, p1b = (unit(torch.randn(2, 35, 16, generator=g)) for _ in range(3))
    loss, _ = cycle_consistency_loss(p1, p2, p1b, (7, 5))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(ref_cycle(p1, p2, p1b, (7, 5), 0.03, 2)[0], abs=1e-4)


def test_identical_views_return_home():
    g = torch.Generator().manual_seed(1)
    p = unit(torch.randn(3, 12, 16, generator=g))
    loss, acc = cycle_consistency_loss(p, p, p, (3, 4), temperature=0.01, pool=1)
    assert acc.item() == 1.0
    assert loss.item() < 0.05
    m = cycle_matrix(p, p, p, (3, 4), temperature=0.01, pool=1)
    assert cycle_identity_similarity(m).item() > 0.97


def test_permuted_second_frame_still_returns_home():
    g = torch.Generator().manual_seed(2)
    p1 = unit(torch.randn(2, 20, 16, generator=g))
    perm = torch.randperm(20, generator=g)
    loss, acc = cycle_consistency_loss(p1, p1[:, perm], p1, (4, 5), temperature=0.01, pool=1)
    assert acc.item() == 1.0 and loss.item() < 0.05


def test_accuracy_counts_wrong_returns():
    g = torch.Generator().manual_seed(3)
    p1 = unit(torch.randn(2, 20, 16, generator=g))
    swap = torch.arange(20)
    swap[[4, 11]] = swap[[11, 4]]  # the backward view has two tokens exchanged
    _, acc = cycle_consistency_loss(p1, p1, p1[:, swap], (4, 5), temperature=0.01, pool=1)
    assert acc.item() == pytest.approx(18 / 20)
    _, acc = cycle_consistency_loss(p1, p1, p1.roll(1, dims=1), (4, 5), temperature=0.01, pool=1)
    assert acc.item() == 0.0


def test_pooled_block_constant_tokens_return_home():
    """Tokens constant on each 2x2 block (odd 7x5 grid: last row dropped) pool to unit nodes."""
    g = torch.Generator().manual_seed(4)
    nodes = unit(torch.randn(2, 4, 3, 16, generator=g))  # (B, h', w', D) with h'=4, w'=3
    tokens = nodes.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)[:, :7, :5]
    tokens = tokens.reshape(2, 35, 16)
    m = cycle_matrix(tokens, tokens, tokens, (7, 5), temperature=0.01, pool=2)
    assert m.shape == (2, 6, 6)
    _, acc = cycle_consistency_loss(tokens, tokens, tokens, (7, 5), temperature=0.01, pool=2)
    assert acc.item() == 1.0


def test_cycle_rejects_bad_arguments():
    p = unit(torch.randn(2, 12, 8))
    with pytest.raises(ValueError, match="grid"):
        cycle_consistency_loss(p, p, p, (3, 5))
    with pytest.raises(ValueError, match="pool"):
        cycle_consistency_loss(p, p, p, (3, 4), pool=4)
    with pytest.raises(ValueError, match="pool"):
        cycle_consistency_loss(p, p, p, (3, 4), pool=0)
    with pytest.raises(ValueError, match="temperature"):
        cycle_consistency_loss(p, p, p, (3, 4), temperature=0.0)
    with pytest.raises(ValueError, match="p1_back"):
        cycle_consistency_loss(p, p, p[:, :6], (3, 4))
    with pytest.raises(ValueError, match="p2"):
        cycle_consistency_loss(p, p[0], p, (3, 4))


# ---------------------------------------------------------------- separability


@pytest.mark.parametrize("kind, direction", [("kl", "code"), ("kl", "paper"), ("mse", "code")])
@pytest.mark.parametrize("shape", [(2, 3, 10, 8), (1, 3, 6, 5), (4, 12, 7)])
def test_separability_matches_reference(kind, direction, shape):
    g = torch.Generator().manual_seed(len(shape) * 10 + shape[0])
    p = torch.randn(*shape, generator=g, dtype=torch.float64) * 3
    z = torch.randn(*shape, generator=g, dtype=torch.float64)
    got = separability_loss(p, z, kind=kind, direction=direction)
    assert got.ndim == 0
    assert got.item() == pytest.approx(ref_separability(p, z, kind, direction), abs=1e-9)


def test_separability_directions_differ_and_are_scale_invariant():
    g = torch.Generator().manual_seed(5)
    p, z = torch.randn(2, 3, 10, 8, generator=g), torch.randn(2, 3, 10, 8, generator=g)
    code = separability_loss(p, z, direction="code")
    paper = separability_loss(p, z, direction="paper")
    assert code.item() > 0 and paper.item() > 0
    assert abs(code.item() - paper.item()) > 1e-6
    torch.testing.assert_close(separability_loss(p * 7, z * 0.1), code)
    assert separability_loss(z, z).item() == pytest.approx(0.0, abs=1e-7)


def test_separability_rejects_bad_arguments():
    p = torch.randn(2, 3, 4, 8)
    with pytest.raises(ValueError, match="kind"):
        separability_loss(p, p, kind="l1")
    with pytest.raises(ValueError, match="direction"):
        separability_loss(p, p, direction="both")
    with pytest.raises(ValueError, match="differ in shape"):
        separability_loss(p, p[:, :2])
    with pytest.raises(ValueError, match="projected"):
        separability_loss(p[0, 0], p[0, 0])


# ---------------------------------------------------------------- full objective


@pytest.mark.parametrize("b, grid, pool", CASES[:4])
@pytest.mark.parametrize(
    "separability, direction", [("kl", "code"), ("kl", "paper"), ("mse", "code")]
)
def test_objective_matches_reference(b, grid, pool, separability, direction):
    g = torch.Generator().manual_seed(7 + b + pool)
    n = grid[0] * grid[1]
    z = torch.randn(b, 3, n, 8, generator=g, dtype=torch.float64)
    p = torch.randn(b, 3, n, 8, generator=g, dtype=torch.float64) * 2
    out = co_settle_objective(
        z, p, grid, temperature=0.1, pool=pool, separability_weight=3.0,
        separability=separability, direction=direction,
    )
    pu = ref_unit(p)
    r_loss, r_acc, r_cos, _ = ref_cycle(pu[:, 0], pu[:, 1], pu[:, 2], grid, 0.1, pool)
    r_sep = ref_separability(p, z, separability, direction)
    assert out.cycle_loss.item() == pytest.approx(r_loss, abs=1e-6)
    assert out.separability_loss.item() == pytest.approx(r_sep, abs=1e-6)
    assert out.loss.item() == pytest.approx(r_loss + 3.0 * r_sep, abs=1e-6)
    assert out.cycle_accuracy.item() == pytest.approx(r_acc)
    assert out.cycle_identity_similarity.item() == pytest.approx(r_cos, abs=1e-6)


def test_objective_is_differentiable_in_p():
    g = torch.Generator().manual_seed(8)
    z = torch.randn(1, 3, 16, 4, generator=g, dtype=torch.float64)
    p = torch.randn(1, 3, 16, 4, generator=g, dtype=torch.float64, requires_grad=True)

    def f(x: torch.Tensor) -> torch.Tensor:
        return co_settle_objective(z, x, (4, 4), temperature=0.5).loss

    assert torch.autograd.gradcheck(f, (p,))
    p32 = p.detach().float().requires_grad_()
    out = co_settle_objective(z.float(), p32, (4, 4))
    out.loss.backward()
    assert p32.grad is not None and torch.isfinite(p32.grad).all() and p32.grad.abs().sum() > 0
    assert not out.cycle_accuracy.requires_grad and not out.cycle_identity_similarity.requires_grad


def test_half_precision_inputs_give_float32_results():
    g = torch.Generator().manual_seed(9)
    z = torch.randn(2, 3, 49, 32, generator=g)
    p = torch.randn(2, 3, 49, 32, generator=g)
    full = co_settle_objective(z, p, (7, 7))
    zb, pb = z.bfloat16(), p.bfloat16()
    low = co_settle_objective(zb, pb, (7, 7))
    for name in ("loss", "cycle_loss", "separability_loss", "cycle_identity_similarity"):
        assert getattr(low, name).dtype == torch.float32
    # Upcast happens first: bf16 inputs behave exactly like their float32 copies ...
    same = co_settle_objective(zb.float(), pb.float(), (7, 7))
    torch.testing.assert_close(low.loss, same.loss, atol=1e-6, rtol=0)
    # ... and the rounding of the inputs moves the loss only a little.
    assert low.loss.item() == pytest.approx(full.loss.item(), rel=0.05)


def test_autocast_does_not_lower_precision():
    g = torch.Generator().manual_seed(10)
    z = torch.randn(2, 3, 49, 32, generator=g)
    p = torch.randn(2, 3, 49, 32, generator=g)
    ref = co_settle_objective(z, p, (7, 7))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = co_settle_objective(z, p, (7, 7))
    assert got.loss.dtype == torch.float32
    torch.testing.assert_close(got.loss, ref.loss, atol=1e-6, rtol=0)


def test_objective_rejects_bad_arguments():
    z = torch.randn(2, 3, 16, 8)
    with pytest.raises(ValueError, match="z"):
        co_settle_objective(z[:, :2], z[:, :2], (4, 4))
    with pytest.raises(ValueError, match="differ in shape"):
        co_settle_objective(z, z[:1], (4, 4))
    with pytest.raises(ValueError, match="grid"):
        co_settle_objective(z, z, (4, 5))
    with pytest.raises(ValueError, match="separability"):
        co_settle_objective(z, z, (4, 4), separability="cosine")
    with pytest.raises(ValueError, match="direction"):
        co_settle_objective(z, z, (4, 4), direction="reverse")
