"""The full Co-Settle objective L = L_cyc + lambda * L_reg on plain tensors (SPEC section 2)."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from .cycle import (
    compute_dtype,
    cycle_identity_similarity,
    cycle_loss_from_matrix,
    cycle_matrix,
    full_precision,
)
from .separability import DIRECTIONS, KINDS, unit_separability
from .settings import OBJECTIVE


@dataclass
class ObjectiveOutput:
    """Scalars of one step. ``loss`` carries the gradient; the two metrics are detached."""

    loss: Tensor
    cycle_loss: Tensor
    separability_loss: Tensor
    cycle_accuracy: Tensor
    cycle_identity_similarity: Tensor


def co_settle_objective(
    z: Tensor,
    p: Tensor,
    grid: tuple[int, int],
    temperature: float = OBJECTIVE.cycle_temperature,
    pool: int = OBJECTIVE.pool_size,
    separability_weight: float = OBJECTIVE.separability_weight,
    separability: str = OBJECTIVE.separability,
    direction: str = OBJECTIVE.kl_direction,
) -> ObjectiveOutput:
    """Co-Settle loss from frozen tokens ``z`` and projections ``p = g(z)``, both (B, 3, N, D).

    The three views are [frame 1, frame 2, frame 1 with PEA]. ``p`` is NOT yet normalised: this
    function L2-normalises it over channels (SPEC: p = L2norm(g(z))), walks the cycle on
    (p[:, 0], p[:, 1], p[:, 2]) over ``grid`` (h, w) and ties all three unpooled views to ``z``
    exactly as ``separability_loss(p, z, separability, direction)`` does ("kl" or "mse";
    "code" or "paper"). Everything runs in at least float32 with autocast off.
    """
    for name, t in (("z", z), ("p", p)):
        if not isinstance(t, Tensor) or t.ndim != 4 or t.shape[1] != 3:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a (B, 3, N, D) tensor, got {got}")
    if z.shape != p.shape:
        raise ValueError(f"z {tuple(z.shape)} and p {tuple(p.shape)} differ in shape")
    if separability not in KINDS:
        raise ValueError(f"separability must be one of {KINDS}, got {separability!r}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    dtype = compute_dtype(z, p)
    with full_precision(p.device):
        p_unit = F.normalize(p.to(dtype), dim=-1)
        z_unit = F.normalize(z.to(dtype), dim=-1)
        matrix = cycle_matrix(p_unit[:, 0], p_unit[:, 1], p_unit[:, 2], grid, temperature, pool)
        cycle_loss, accuracy = cycle_loss_from_matrix(matrix)
        reg = unit_separability(p_unit, z_unit, separability, direction)
        return ObjectiveOutput(
            loss=cycle_loss + separability_weight * reg,
            cycle_loss=cycle_loss,
            separability_loss=reg,
            cycle_accuracy=accuracy,
            cycle_identity_similarity=cycle_identity_similarity(matrix),
        )
