"""Positional Encoding Augmentation (PEA) on a patch positional-embedding grid (SPEC section 2).

With absolute positional embeddings a cycle walk can return home by position alone. PEA gives
the backward view (frame 1 again) a positional grid cut from a bicubically upsampled copy of
the original, so positions no longer line up between the views.

Offsets are (row, col) of a crop window's top-left cell in the upsampled grid.
"""

from __future__ import annotations

import math
from numbers import Integral

import torch
import torch.nn.functional as F
from torch import Tensor

from .cycle import compute_dtype, full_precision

MODES = ("random", "center", "edge")


def _check_size(name: str, size: tuple[int, int]) -> tuple[int, int]:
    if not isinstance(size, (tuple, list)) or len(size) != 2 or any(
        not isinstance(s, Integral) or s < 1 for s in size
    ):
        raise ValueError(f"{name} must be two positive ints (h, w), got {size!r}")
    return int(size[0]), int(size[1])


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise ValueError(f"alpha must be a number >= 0, got {alpha!r}")
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
    return float(alpha)


def upsampled_size(h: int, w: int, alpha: float) -> tuple[int, int]:
    """(int((1 + alpha) * h), int((1 + alpha) * w)): Python's truncation, as released."""
    h, w = _check_size("(h, w)", (h, w))
    alpha = _check_alpha(alpha)
    return int((1 + alpha) * h), int((1 + alpha) * w)


def _as_offsets(offsets: Tensor | tuple[int, int]) -> Tensor:
    """Accept a (K, 2) integer tensor, a (2,) tensor or a (row, col) tuple; return (K, 2) long."""
    if not isinstance(offsets, Tensor):
        if not isinstance(offsets, (tuple, list)) or len(offsets) != 2 or any(
            not isinstance(o, Integral) for o in offsets
        ):
            raise ValueError(
                f"offsets must be a (K, 2) tensor or a (row, col) tuple, got {offsets!r}"
            )
        offsets = torch.tensor([offsets], dtype=torch.long)
    if offsets.dtype.is_floating_point or offsets.dtype.is_complex or offsets.dtype == torch.bool:
        raise ValueError(f"offsets must hold integers, got dtype {offsets.dtype}")
    if offsets.ndim == 1:
        offsets = offsets.unsqueeze(0)
    if offsets.ndim != 2 or offsets.shape[1] != 2 or offsets.shape[0] < 1:
        raise ValueError(f"offsets must have shape (K, 2) with K >= 1, got {tuple(offsets.shape)}")
    return offsets.long()


def crop_windows(big: Tensor, offsets: Tensor | tuple[int, int], size: tuple[int, int]) -> Tensor:
    """Cut K windows of ``size`` = (h, w) from ``big`` (H', W', ...) -> (K, h, w, ...).

    One advanced-indexing gather for all windows; trailing dimensions (channels, rotary
    coordinates, ...) are carried along. Raises if a window leaves ``big``.
    """
    h, w = _check_size("size", size)
    if not isinstance(big, Tensor) or big.ndim < 2:
        raise ValueError("big must be a tensor of shape (H', W', ...)")
    offsets = _as_offsets(offsets).to(big.device)
    big_h, big_w = big.shape[0], big.shape[1]
    rows, cols = offsets[:, 0], offsets[:, 1]
    outside = (rows < 0) | (cols < 0) | (rows + h > big_h) | (cols + w > big_w)
    if bool(outside.any()):
        raise ValueError(
            f"offsets {offsets.tolist()} put an {h}x{w} window outside the {big_h}x{big_w} grid"
        )
    row_idx = rows[:, None] + torch.arange(h, device=big.device)  # (K, h)
    col_idx = cols[:, None] + torch.arange(w, device=big.device)  # (K, w)
    return big[row_idx[:, :, None], col_idx[:, None, :]]


def interpolate_and_crop(
    pos_grid: Tensor, alpha: float, offsets: Tensor | tuple[int, int]
) -> Tensor:
    """PEA grids: bicubic upsample of ``pos_grid`` (h, w, D), then h x w crops -> (K, h, w, D).

    The upsample goes to :func:`upsampled_size` with ``F.interpolate(mode="bicubic",
    align_corners=False)`` in at least float32 and is cast back to ``pos_grid``'s dtype. With
    alpha == 0 no interpolation happens: the only valid offset is (0, 0) and each crop is the
    grid itself, exactly.
    """
    if not isinstance(pos_grid, Tensor) or pos_grid.ndim != 3:
        got = tuple(pos_grid.shape) if isinstance(pos_grid, Tensor) else type(pos_grid).__name__
        raise ValueError(f"pos_grid must be an (h, w, D) tensor, got {got}")
    h, w, _ = pos_grid.shape
    big_size = upsampled_size(h, w, alpha)
    if big_size == (h, w):
        return crop_windows(pos_grid, offsets, (h, w))
    with full_precision(pos_grid.device):
        maps = pos_grid.to(compute_dtype(pos_grid)).permute(2, 0, 1).unsqueeze(0)
        big = F.interpolate(maps, size=big_size, mode="bicubic", align_corners=False)
    big = big[0].permute(1, 2, 0).to(pos_grid.dtype)
    return crop_windows(big, offsets, (h, w))


def sample_pea_offsets(
    num: int,
    grid: tuple[int, int],
    alpha: float,
    mode: str = "random",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Draw ``num`` crop offsets (num, 2) long for an h x w window in the upsampled grid.

    mode "random": uniform over every valid offset (the default; the released code draws one
    per batch, num=1; num=B gives per-sample offsets). "center": the middle window (floor).
    "edge": uniform over the valid windows touching the upsampled grid's border. Sampling uses
    ``generator`` (on its device) and the result is moved to ``device`` if given.
    """
    if isinstance(num, bool) or not isinstance(num, Integral) or num < 1:
        raise ValueError(f"num must be a positive int, got {num!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    h, w = _check_size("grid", grid)
    big_h, big_w = upsampled_size(h, w, alpha)
    max_r, max_c = big_h - h, big_w - w
    on = generator.device if generator is not None else torch.device("cpu")
    if mode == "center":
        out = torch.tensor([[max_r // 2, max_c // 2]], dtype=torch.long, device=on).expand(num, 2)
    elif mode == "random":
        rows = torch.randint(0, max_r + 1, (num,), generator=generator, device=on)
        cols = torch.randint(0, max_c + 1, (num,), generator=generator, device=on)
        out = torch.stack([rows, cols], dim=1)
    else:
        r = torch.arange(max_r + 1, device=on)[:, None].expand(max_r + 1, max_c + 1)
        c = torch.arange(max_c + 1, device=on)[None, :].expand(max_r + 1, max_c + 1)
        border = (r == 0) | (r == max_r) | (c == 0) | (c == max_c)
        candidates = torch.stack([r[border], c[border]], dim=1)
        pick = torch.randint(0, candidates.shape[0], (num,), generator=generator, device=on)
        out = candidates[pick]
    return out.contiguous().to(device if device is not None else on)
