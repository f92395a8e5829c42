"""The pair augmentation of SPEC section 2 in plain torch: resize, one shared crop and flip, normalise."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from ..backbones.families import IMAGENET_MEAN, IMAGENET_STD
from .sampling import uniform_int


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _draw_box(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
              generator: torch.Generator | None) -> tuple[int, int]:
    """One ``(crop_height, crop_width)``: area fraction uniform in ``scale``, w / h log-uniform in ``ratio``."""
    target_area = height * width * _uniform(scale[0], scale[1], generator)
    aspect = math.exp(_uniform(math.log(ratio[0]), math.log(ratio[1]), generator))
    return round(math.sqrt(target_area / aspect)), round(math.sqrt(target_area * aspect))


def _place(height: int, width: int, crop_h: int, crop_w: int, generator: torch.Generator | None) -> tuple[int, int, int, int]:
    top = uniform_int(0, height - crop_h + 1, generator)
    left = uniform_int(0, width - crop_w + 1, generator)
    return top, left, crop_h, crop_w


def random_resized_crop_params(
    height: int,
    width: int,
    scale: tuple[float, float] = (0.5, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """``(top, left, crop_height, crop_width)`` by the usual RandomResizedCrop rule.

    Up to 10 tries: area fraction uniform in ``scale``, aspect ratio (w / h) log-uniform in
    ``ratio``; the first box that fits is placed uniformly. Otherwise a centred crop of the
    whole image, narrowed to the nearest allowed aspect ratio.
    """
    for _ in range(10):
        crop_h, crop_w = _draw_box(height, width, scale, ratio, generator)
        if 0 < crop_w <= width and 0 < crop_h <= height:
            return _place(height, width, crop_h, crop_w, generator)
    image_ratio = width / height
    if image_ratio < min(ratio):
        crop_w, crop_h = width, round(width / min(ratio))
    elif image_ratio > max(ratio):
        crop_w, crop_h = round(height * max(ratio)), height
    else:
        crop_w, crop_h = width, height
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def single_draw_crop_params(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                            generator: torch.Generator | None = None) -> tuple[int, int, int, int]:
    """The released code's rule (BYOL's, SPEC section 9): one box, clipped to the image, placed uniformly.

    A box larger than the image on one side becomes a full-width or full-height crop, so large
    crops are more frequent than under the 10-try rule (mean area 0.74 vs 0.69 at scale (0.5, 1)).
    """
    crop_h, crop_w = _draw_box(height, width, scale, ratio, generator)
    return _place(height, width, max(1, min(crop_h, height)), max(1, min(crop_w, width)), generator)


CROP_RULES = {"torchvision": random_resized_crop_params, "released": single_draw_crop_params}


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic resize of (k, 3, h, w) to ``size x size``, antialiased when shrinking.

    On uint8, torch's path is PIL's filter (within one grey level) and about ten times faster
    than resizing floats; it rounds and saturates to [0, 255] like any 8-bit pipeline. Floats
    keep the overshoot, as torchvision's tensor transforms do.
    """
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False, antialias=True)


def _released_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """The released code's first resize: bilinear (PIL's, antialiased) to the square, then floats (0-255)."""
    return F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _short_side_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """The usual evaluation resize: short side to 256/224 of ``size`` (bilinear), then bicubic to the square."""
    height, width = images.shape[-2:]
    short = round(size * 256 / 224)
    scaled = (short, max(1, round(width * short / height))) if height <= width else (max(1, round(height * short / width)), short)
    images = F.interpolate(images, size=scaled, mode="bilinear", align_corners=False, antialias=True)
    return _resize(images, size)


# The first resize of each path; the crop is then resized bicubically in the dtype that resize returns.
RESIZE_PATHS = {"antialiased": _resize, "released": _released_resize, "short_side": _short_side_resize}


class PairTransform:
    """SPEC augmentation for the frames of one pair, with every random draw shared by all frames.

    1. resize each frame to ``size x size`` by the ``resize`` path (`RESIZE_PATHS`; default
       bicubic, antialiased, so shrinking does not alias);
    2. one RandomResizedCrop (``scale``, ``ratio``, drawn by ``crop_rule``, `CROP_RULES`) on that
       square, resized bicubically to ``size x size``;
    3. one horizontal flip with probability ``flip_p``;
    4. scale to [0, 1] and normalise with ``mean`` / ``std`` (use the backbone processor's;
       ImageNet constants are the released code's choice).

    By default both resizes stay in uint8 (rounded and saturated, so bicubic overshoot is clamped
    to [0, 255]), like a PIL pipeline, keeping augmentation cheap; ``resize="released"`` crops
    floats without clamping, as the released code does. Input
    uint8 (k, H, W, 3); output float32 (k, 3, size, size). Randomness comes from
    the ``generator`` passed to the call, else the one given here, else torch's global one.
    """

    def __init__(
        self,
        size: int = 224,
        scale: tuple[float, float] = (0.5, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip_p: float = 0.5,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        generator: torch.Generator | None = None,
        resize: str = "antialiased",
        crop_rule: str = "torchvision",
    ) -> None:
        for name, value, table in (("resize", resize, RESIZE_PATHS), ("crop_rule", crop_rule, CROP_RULES)):
            if value not in table:
                raise ValueError(f"{name} must be one of {', '.join(table)}; got {value!r}")
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must satisfy 0 < min <= max, got {scale}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
        if not 0.0 <= flip_p <= 1.0:
            raise ValueError(f"flip_p must be in [0, 1], got {flip_p}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values each with std > 0, got {mean}, {std}")
        self.size, self.scale, self.ratio, self.flip_p = size, tuple(scale), tuple(ratio), flip_p
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.generator, self.resize, self.crop_rule = generator, resize, crop_rule
        std_t = torch.tensor(self.std).view(1, 3, 1, 1)
        # x_norm = (x / 255 - mean) / std = x * gain - offset, applied in one fused step.
        self._gain = 1.0 / (255.0 * std_t)
        self._offset = torch.tensor(self.mean).view(1, 3, 1, 1) / std_t

    def __call__(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
            raise ValueError(f"frames must be uint8 (k, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
        generator = generator if generator is not None else self.generator
        images = RESIZE_PATHS[self.resize](frames.permute(0, 3, 1, 2), self.size)
        top, left, crop_h, crop_w = CROP_RULES[self.crop_rule](self.size, self.size, self.scale, self.ratio, generator)
        images = _resize(images[:, :, top : top + crop_h, left : left + crop_w], self.size)
        if float(torch.rand((), generator=generator)) < self.flip_p:
            images = images.flip(-1)
        return (images.float() * self._gain - self._offset).contiguous()

    def __repr__(self) -> str:
        return (
            f"PairTransform(size={self.size}, scale={self.scale}, ratio={self.ratio}, "
            f"flip_p={self.flip_p}, mean={self.mean}, std={self.std}, resize={self.resize!r}, crop_rule={self.crop_rule!r})"
        )
