"""Co-Settle training objective on plain tensors: cycle consistency, separability and PEA, and its settings."""

from .cycle import (
    cycle_consistency_loss,
    cycle_identity_similarity,
    cycle_loss_from_matrix,
    cycle_matrix,
    pool_nodes,
)
from .loss import ObjectiveOutput, co_settle_objective
from .pea import crop_windows, interpolate_and_crop, sample_pea_offsets, upsampled_size
from .separability import separability_loss
from .settings import OBJECTIVE, ObjectiveSettings

__all__ = [
    "OBJECTIVE",
    "ObjectiveSettings",
    "ObjectiveOutput",
    "co_settle_objective",
    "crop_windows",
    "cycle_consistency_loss",
    "cycle_identity_similarity",
    "cycle_loss_from_matrix",
    "cycle_matrix",
    "interpolate_and_crop",
    "pool_nodes",
    "sample_pea_offsets",
    "separability_loss",
    "upsampled_size",
]
