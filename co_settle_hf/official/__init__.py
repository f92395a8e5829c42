"""The authors' released models: safe reading (`reading`), conversion to transformers (`layouts`),
the eight published models (`published`), their import as adapters (`importing`) and the
projection of a training checkpoint put on a backbone you name (`converting`)."""

from .converting import OfficialCheckpointError, convert_official_checkpoint, extract_projection
from .importing import import_official
from .layouts import ConversionError
from .published import AUTHORS_REPO, PUBLISHED, PublishedModel
from .reading import MAX_CHECKPOINT_BYTES, CheckpointReadError, read_checkpoint

__all__ = [
    "AUTHORS_REPO",
    "MAX_CHECKPOINT_BYTES",
    "PUBLISHED",
    "CheckpointReadError",
    "ConversionError",
    "OfficialCheckpointError",
    "PublishedModel",
    "convert_official_checkpoint",
    "extract_projection",
    "import_official",
    "read_checkpoint",
]
