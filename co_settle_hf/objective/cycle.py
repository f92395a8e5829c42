"""Temporal cycle-consistency: walk frame 1 -> frame 2 -> frame 1 (PEA view) and land home.

SPEC section 2, "The cycle". All softmax / log / matmul work runs in at least float32 with
autocast switched off, so bf16/fp16 activations from a mixed-precision step cannot make the
temperature-0.03 softmax overflow or the log of the return probability underflow.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from numbers import Integral

import torch
import torch.nn.functional as F
from torch import Tensor

from .settings import OBJECTIVE

#: Added inside the log so that a zero return probability gives a finite loss (as released).
LOG_EPS = 1e-6


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float32 for half/bfloat16/float32 inputs, float64 if any is float64: never below float32."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


@contextlib.contextmanager
def full_precision(device: torch.device) -> Iterator[None]:
    """Disable autocast on ``device`` so matmuls are not silently cast back to half precision."""
    if device.type in ("cpu", "cuda", "xpu", "mps"):
        with torch.autocast(device_type=device.type, enabled=False):
            yield
    else:
        yield


def _check_grid(grid: tuple[int, int], num_tokens: int, pool: int) -> tuple[int, int]:
    if not isinstance(grid, (tuple, list)) or len(grid) != 2 or any(
        not isinstance(s, Integral) or s < 1 for s in grid
    ):
        raise ValueError(f"grid must be two positive ints (h, w), got {grid!r}")
    h, w = int(grid[0]), int(grid[1])
    if h * w != num_tokens:
        raise ValueError(f"grid {grid!r} has {h * w} cells but the tokens have N={num_tokens}")
    if not isinstance(pool, Integral) or pool < 1:
        raise ValueError(f"pool must be a positive int, got {pool!r}")
    if pool > min(h, w):
        raise ValueError(f"pool={pool} is larger than the grid {grid!r}: no node would be left")
    return h, w


def pool_nodes(tokens: Tensor, grid: tuple[int, int], pool: int) -> Tensor:
    """(B, N, D) row-major tokens -> (B, n, D) nodes by pool x pool average pooling, stride pool.

    Odd sizes follow ``F.avg_pool2d``: it floors, so a trailing row/column that does not fill a
    whole window is dropped (7x5 with pool=2 -> 3x2 nodes). ``pool=1`` returns the tokens as is.
    Pooled vectors are NOT re-normalised (as released).
    """
    b, n, d = tokens.shape
    h, w = _check_grid(grid, n, pool)
    if pool == 1:
        return tokens
    maps = tokens.transpose(1, 2).reshape(b, d, h, w)
    pooled = F.avg_pool2d(maps, kernel_size=int(pool), stride=int(pool))
    return pooled.flatten(2).transpose(1, 2)


def _check_views(p1: Tensor, p2: Tensor, p1_back: Tensor) -> None:
    for name, t in (("p1", p1), ("p2", p2), ("p1_back", p1_back)):
        if not isinstance(t, Tensor) or t.ndim != 3:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a (B, N, D) tensor, got {got}")
    if not (p1.shape == p2.shape == p1_back.shape):
        raise ValueError(
            "p1, p2 and p1_back must have the same shape, got "
            f"{tuple(p1.shape)}, {tuple(p2.shape)}, {tuple(p1_back.shape)}"
        )


def cycle_matrix(
    p1: Tensor,
    p2: Tensor,
    p1_back: Tensor,
    grid: tuple[int, int],
    temperature: float = OBJECTIVE.cycle_temperature,
    pool: int = OBJECTIVE.pool_size,
) -> Tensor:
    """Round-trip transition matrix A12 @ A21, shape (B, n, n), in at least float32.

    p1, p2, p1_back: (B, N, D) L2-normalised projected tokens of frame 1, frame 2 and frame 1
    with PEA, N = h*w in row-major order of ``grid``. A12 = row-softmax(P1 P2^T / tau),
    A21 = row-softmax(P2 P1b^T / tau), with P the pooled nodes (see :func:`pool_nodes`).
    Entry [i, j] is the probability that a walk from node i of frame 1 ends at node j.
    """
    _check_views(p1, p2, p1_back)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    dtype = compute_dtype(p1, p2, p1_back)
    with full_precision(p1.device):
        n1, n2, n1b = (pool_nodes(t.to(dtype), grid, pool) for t in (p1, p2, p1_back))
        a12 = torch.softmax(torch.bmm(n1, n2.transpose(1, 2)) / temperature, dim=-1)
        a21 = torch.softmax(torch.bmm(n2, n1b.transpose(1, 2)) / temperature, dim=-1)
        return torch.bmm(a12, a21)


def cycle_loss_from_matrix(matrix: Tensor) -> tuple[Tensor, Tensor]:
    """(loss, accuracy) of a (B, n, n) round-trip matrix from :func:`cycle_matrix`.

    loss = mean over batch and nodes of -log(M[i, i] + 1e-6); accuracy = share of rows whose
    argmax is the diagonal (a detached metric; ties go to the lowest index, as torch.argmax).
    """
    if matrix.ndim != 3 or matrix.shape[-1] != matrix.shape[-2]:
        raise ValueError(f"matrix must be (B, n, n), got {tuple(matrix.shape)}")
    with full_precision(matrix.device):
        diag = torch.diagonal(matrix, dim1=-2, dim2=-1)
        loss = -torch.log(diag + LOG_EPS).mean()
        home = torch.arange(matrix.shape[-1], device=matrix.device)
        accuracy = (matrix.detach().argmax(dim=-1) == home).to(matrix.dtype).mean()
    return loss, accuracy


def cycle_identity_similarity(matrix: Tensor) -> Tensor:
    """Cosine similarity between the whole batch of round-trip matrices and identities (detached).

    1 means every walk returns home with certainty; the released code logs the same quantity.
    """
    m = matrix.detach()
    eye = torch.eye(m.shape[-1], dtype=m.dtype, device=m.device).expand_as(m)
    return F.cosine_similarity(m.reshape(1, -1), eye.reshape(1, -1), dim=1)[0]


def cycle_consistency_loss(
    p1: Tensor,
    p2: Tensor,
    p1_back: Tensor,
    grid: tuple[int, int],
    temperature: float = OBJECTIVE.cycle_temperature,
    pool: int = OBJECTIVE.pool_size,
) -> tuple[Tensor, Tensor]:
    """Cycle-consistency loss and cycle accuracy (scalars, at least float32).

    Arguments as :func:`cycle_matrix`. The loss is differentiable w.r.t. all three views;
    the accuracy is a detached metric.
    """
    return cycle_loss_from_matrix(cycle_matrix(p1, p2, p1_back, grid, temperature, pool))
