"""Positional-embedding interpolation at sizes other than the training one, as a recorded setting.

At 480x880 (DAVIS) every model resizes its position table to the input's patch grid, and the
released models each do it their own way, which differs from transformers' resize (by about
1.5e-3 relative on DINO ViT-S). `POSITION_INTERPOLATIONS` lists the ways; an adapter records its
choice in `config.position_interpolation` and `authors_position_table` computes it.

- `transformers`: the model's own `interpolate_pos_encoding` (bicubic to the exact grid).
- `dino`: DINO's model file, shared by the authors' MAE, I-JEPA, MoCo v3 and iBOT files: bicubic
  with a scale factor of (n + 0.1) / M per side (the +0.1 avoids a rounding down of the output
  size), no antialiasing.
- `antialias`: the authors' CLIP, BLIP and DINOv2 files: bicubic to the exact grid, antialiased.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

POSITION_INTERPOLATIONS: dict[str, dict[str, Any] | None] = {
    "transformers": None,
    "dino": {"offset": 0.1, "antialias": False},
    "antialias": {"offset": None, "antialias": True},
}


def authors_position_table(table: Tensor, prefix: int, grid: tuple[int, int], offset: float | None, antialias: bool) -> Tensor:
    """(1, prefix + h*w, D): `table`'s prefix rows, then its patch rows resized to `grid`."""
    rows = table.reshape(-1, table.shape[-1])
    side = math.isqrt(len(rows) - prefix)
    if tuple(grid) == (side, side):
        return rows[None]
    square = rows[prefix:].reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
    if offset:
        size: dict[str, Any] = {"scale_factor": ((grid[0] + offset) / side, (grid[1] + offset) / side)}
    else:
        size = {"size": tuple(grid)}
    resized = F.interpolate(square, mode="bicubic", antialias=antialias, **size)
    patches = resized.permute(0, 2, 3, 1).reshape(-1, rows.shape[-1]).to(rows.dtype)
    return torch.cat([rows[:prefix], patches])[None]


@contextmanager
def interpolation(embeddings: nn.Module, table: Tensor, prefix: int, patch_size: int, mode: str) -> Iterator[None]:
    """While inside, `embeddings.interpolate_pos_encoding` resizes positions as `mode` says."""
    settings = POSITION_INTERPOLATIONS[mode]
    if settings is None:
        yield
        return

    def interpolate_pos_encoding(embedded: Tensor, height: int, width: int) -> Tensor:
        grid = (int(height) // patch_size, int(width) // patch_size)
        return authors_position_table(table, prefix, grid, **settings).to(embedded.dtype)

    embeddings.interpolate_pos_encoding = interpolate_pos_encoding
    try:
        yield
    finally:
        del embeddings.interpolate_pos_encoding  # the class's own method shows through again
