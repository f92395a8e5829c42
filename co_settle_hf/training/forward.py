"""The training forward: three views, one frozen backbone pass, the projection, the objective."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..backbones.encoder import PositionCrop
from ..objective.loss import ObjectiveOutput, co_settle_objective
from ..objective.pea import sample_pea_offsets
from ..objective.settings import ObjectiveSettings


def draw_pea(objective: ObjectiveSettings, batch: int, grid: tuple[int, int], generator: torch.Generator | None = None, device: torch.device | None = None) -> PositionCrop | None:
    """The PEA crop of one step: one offset shared by the batch (released code) or one per sample."""
    if objective.pea_alpha is None:
        return None
    count = batch if objective.pea_per_sample else 1
    offsets = sample_pea_offsets(count, grid, objective.pea_alpha, objective.pea_mode, generator=generator, device=device)
    return PositionCrop(objective.pea_alpha, offsets.expand(batch, 2))


def training_forward(model: nn.Module, frames: Tensor, generator: torch.Generator | None = None, use_pea: bool = True) -> ObjectiveOutput:
    """Loss and metrics of one Co-Settle step on frame pairs `frames` (B, 2, 3, H, W).

    The views [frame 1, frame 2, frame 1 again] go through the frozen backbone as ONE batch of
    3B images, PEA shifting the positions of the last B only (`use_pea=False`, for validation,
    leaves all three unshifted); `model` may be wrapped by DDP/Accelerate, and is called (not
    bypassed) so gradients are synchronised.
    """
    core = getattr(model, "module", model)
    objective = core.config.objective
    if frames.ndim != 5 or frames.shape[1] != 2:
        raise ValueError(f"frames must be (B, 2, 3, H, W) pairs, got {tuple(frames.shape)}")
    batch = frames.shape[0]
    grid = core.backbone.grid_size(*frames.shape[-2:])
    pixels = torch.cat([frames[:, 0], frames[:, 1], frames[:, 0]])
    pea = draw_pea(objective, batch, grid, generator, frames.device) if use_pea else None
    output = model(pixels, pea=pea)
    z = output.backbone_features.flatten(1, 2).unflatten(0, (3, batch)).transpose(0, 1)
    p = output.features.flatten(1, 2).unflatten(0, (3, batch)).transpose(0, 1)
    return views_objective(objective, z, p, grid)


def views_objective(objective: ObjectiveSettings, z: Tensor, p: Tensor, grid: tuple[int, int]) -> ObjectiveOutput:
    """The objective on the three views' frozen tokens ``z`` and projections ``p``, (B, 3, N, D) each."""
    return co_settle_objective(
        z, p, grid,
        temperature=objective.cycle_temperature,
        pool=objective.pool_size,
        separability_weight=objective.separability_weight,
        separability=objective.separability,
        direction=objective.kl_direction,
    )
