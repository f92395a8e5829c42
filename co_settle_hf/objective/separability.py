"""Separability constraint: keep projected tokens close to the frozen ones (SPEC section 2).

The cycle alone would happily collapse videos onto each other; tying each projected token's
channel distribution to the frozen token's keeps the backbone's inter-video separability.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .cycle import compute_dtype, full_precision
from .settings import KL_DIRECTIONS, OBJECTIVE, SEPARABILITY_KINDS

KINDS, DIRECTIONS = SEPARABILITY_KINDS, KL_DIRECTIONS


def separability_loss(
    projected: Tensor,
    frozen: Tensor,
    kind: str = OBJECTIVE.separability,
    direction: str = OBJECTIVE.kl_direction,
) -> Tensor:
    """Distance between projected and frozen tokens, a scalar in at least float32.

    projected, frozen: (B, V, N, D) (V views stacked) or (B, N, D), UNPOOLED. This function
    L2-normalises both over channels itself, so raw or already normalised inputs give the same
    result. With Z, P the normalised frozen / projected tokens:

    - kind="kl", direction="code" (default, as released): KL(softmax_c(Z) || softmax_c(P)),
      summed over views, tokens and channels and divided by B ("batchmean").
    - kind="kl", direction="paper": KL(softmax_c(P) || softmax_c(Z)), same reduction.
    - kind="mse": mean of (P - Z)^2 over every element (B, V, N, D), as F.mse_loss's default;
      ``direction`` is ignored (the distance is symmetric) but still validated.

    No gradient is stopped: ``frozen`` is expected to come from a no-grad backbone pass.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    for name, t in (("projected", projected), ("frozen", frozen)):
        if not isinstance(t, Tensor) or t.ndim not in (3, 4):
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a (B, V, N, D) or (B, N, D) tensor, got {got}")
    if projected.shape != frozen.shape:
        raise ValueError(
            f"projected {tuple(projected.shape)} and frozen {tuple(frozen.shape)} differ in shape"
        )
    dtype = compute_dtype(projected, frozen)
    with full_precision(projected.device):
        p = F.normalize(projected.to(dtype), dim=-1)
        z = F.normalize(frozen.to(dtype), dim=-1)
        return unit_separability(p, z, kind, direction)


def unit_separability(p: Tensor, z: Tensor, kind: str, direction: str) -> Tensor:
    """:func:`separability_loss` on tokens already L2-normalised and upcast (no checks, no copy)."""
    if kind == "mse":
        return F.mse_loss(p, z)
    log_p, log_z = F.log_softmax(p, dim=-1), F.log_softmax(z, dim=-1)
    # F.kl_div(input, target) is KL(target || input), both given as log-probabilities.
    inp, target = (log_p, log_z) if direction == "code" else (log_z, log_p)
    return F.kl_div(inp, target, log_target=True, reduction="sum") / p.shape[0]
