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
#: What a bare backbone does, and so what an adapter uses unless it records another way.
DEFAULT_POSITION_INTERPOLATION = "transformers"


def authors_position_table(table: Tensor, prefix: int, grid: tuple[int, int], offset: float | None, antialias: bool) -> Tensor:
    """(1, prefix + h*w, D): `table`'s prefix rows, then its patch rows resized to `grid`."""
    rows = table.reshape(-1, table.shape[-1])
    side = math.isqrt(len(rows) - prefix)
    square = rows[prefix:].reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
    if offset:
        resized = _bicubic_rows(grid[0], side, offset) @ square @ _bicubic_rows(grid[1], side, offset).T
    else:
        resized = F.interpolate(square, size=tuple(grid), mode="bicubic", antialias=antialias)
    patches = _unchanged_at_trained_grid(square, resized).permute(0, 2, 3, 1).reshape(-1, rows.shape[-1])
    return torch.cat([rows[:prefix], patches.to(rows.dtype)])[None]


def _bicubic_rows(size: int, side: int, offset: float) -> Tensor:
    """(size, side): PyTorch's bicubic resize of `side` samples to `size` at the scale factor (size + offset) / side.

    The weights `F.interpolate(..., scale_factor=...)` uses (a = -0.75, half-pixel centres, clamped
    borders), written out because an exported graph's size is symbolic and `interpolate` would fix
    the scale factor at the size it was traced with.
    """
    step = (side / (torch.scalar_tensor(size, dtype=torch.float64) + offset)).float()
    source = (torch.arange(size) + 0.5) * step - 0.5
    first = source.floor()
    fraction = (source - first)[:, None]
    distances = torch.cat([fraction + 1, fraction, 1 - fraction, 2 - fraction], dim=1)  # to taps first-1 .. first+2
    taps = (first.long()[:, None] + torch.arange(-1, 3)).clamp(0, side - 1)
    return ((taps[..., None] == torch.arange(side)) * _cubic(distances)[..., None]).sum(dim=1)


def _cubic(distance: Tensor, a: float = -0.75) -> Tensor:
    """Keys' cubic convolution kernel, the one PyTorch's bicubic mode uses."""
    x = distance.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x <= 1, near, far)


def _unchanged_at_trained_grid(square: Tensor, resized: Tensor) -> Tensor:
    """`square` itself when `resized` has its grid (the released code's shortcut), else `resized`.

    A choice made with tensors, not a Python `if` on the grid: an exported graph (ONNX) has a
    symbolic grid and must keep both ways. The `index` gathers are `square` exactly at its own size.
    """
    side = square.shape[-1]
    rows = torch.arange(resized.shape[-2], device=square.device)
    cols = torch.arange(resized.shape[-1], device=square.device)
    kept = square[:, :, rows.clamp(max=side - 1)][:, :, :, cols.clamp(max=side - 1)]
    at_trained_grid = (rows[-1] == side - 1) & (cols[-1] == side - 1)
    return torch.where(at_trained_grid, kept, resized)


@contextmanager
def interpolation(embeddings: nn.Module, table: Tensor, prefix: int, patch_size: int, mode: str) -> Iterator[None]:
    """While inside, `embeddings.interpolate_pos_encoding` resizes positions as `mode` says."""
    settings = POSITION_INTERPOLATIONS[mode]
    if settings is None:
        yield
        return

    def interpolate_pos_encoding(embedded: Tensor, height: int, width: int) -> Tensor:
        grid = (height // patch_size, width // patch_size)  # no int(): symbolic when exported
        return authors_position_table(table, prefix, grid, **settings).to(embedded.dtype)

    embeddings.interpolate_pos_encoding = interpolate_pos_encoding
    try:
        yield
    finally:
        del embeddings.interpolate_pos_encoding  # the class's own method shows through again
