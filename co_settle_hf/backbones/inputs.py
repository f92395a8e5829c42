"""Checks on the pixels a backbone is given, so bad input fails with a message, not deep in torch.

Integer or bool pixels are refused (they are raw images, not the normalised floats the backbone
expects); so are an empty batch, an image smaller than one patch, and NaN or infinite values
(an error rather than a warning: a NaN spreads through attention and poisons the whole batch).
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_pixel_values(pixel_values: Tensor, patch_size: int) -> None:
    """Raise a ValueError/TypeError naming the problem when `pixel_values` cannot be encoded."""
    if not isinstance(pixel_values, Tensor):
        raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
    if not pixel_values.is_floating_point():
        raise TypeError(
            f"pixel_values are {pixel_values.dtype}, but the backbone expects normalised floats: prepare images with "
            "the adapter's image processor (AutoImageProcessor.from_pretrained(adapter)), or scale to [0, 1] and "
            "normalise with config.image_mean / config.image_std"
        )
    if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
        raise ValueError(f"pixel_values must be (B, 3, H, W), got {tuple(pixel_values.shape)}")
    batch, _, height, width = pixel_values.shape
    if batch == 0:
        raise ValueError(f"pixel_values is an empty batch of size {tuple(pixel_values.shape)}: give at least one image")
    if height < patch_size or width < patch_size:
        raise ValueError(
            f"an image of {height}x{width} pixels is smaller than one {patch_size}x{patch_size} patch: "
            f"resize it to at least {patch_size}x{patch_size}"
        )
    if torch.compiler.is_exporting():
        return  # a value check has no place in a traced graph: its inputs are symbolic
    finite = torch.isfinite(pixel_values)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(f"pixel_values hold {bad} NaN or infinite value(s) of {pixel_values.numel()}: check the image loading")
