"""Any supported transformers vision model as a frozen patch-token encoder: the table of differences
between families (`families`), the one code path (`encoder`), input checks and position resizing."""

from .encoder import BACKBONE_PRECISIONS, BackboneEncoder, PEAUnavailableError, PositionCrop
from .families import FAMILIES, BackboneFamily, UnsupportedBackboneError, family_for, supported_model_types
from .positions import POSITION_INTERPOLATIONS

__all__ = [
    "BACKBONE_PRECISIONS",
    "FAMILIES",
    "POSITION_INTERPOLATIONS",
    "BackboneEncoder",
    "BackboneFamily",
    "PEAUnavailableError",
    "PositionCrop",
    "UnsupportedBackboneError",
    "family_for",
    "supported_model_types",
]
