"""Reading frames and id maps for evaluation: every decode error names its file."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image


def read_frames(paths: Sequence[Path]) -> torch.Tensor:
    """RGB frames as a uint8 tensor (T, H, W, 3); all frames must share one size."""
    frames = []
    for path in paths:
        array = decode_image(path, "RGB")
        if frames and array.shape != frames[0].shape:
            raise ValueError(f"frame {path} is {array.shape[1]}x{array.shape[0]}, the sequence's first frame "
                             f"{paths[0]} is {frames[0].shape[1]}x{frames[0].shape[0]}")
        frames.append(array)
    return torch.from_numpy(np.stack(frames))


def read_annotation(path: Path, size: tuple[int, int] | None = None) -> tuple[np.ndarray, list[int] | None]:
    """Object-id map (H, W) uint8 of an annotation PNG and its palette (None if greyscale).

    ``size`` (height, width), when given, is the size of the frame the annotation belongs to.
    """
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise ValueError(f"annotation {path} has mode {image.mode}; expected a palette (P) or greyscale (L) "
                                 "PNG whose pixel values are object ids")
            palette = image.getpalette() if image.mode == "P" else None
            ids = np.array(image)
    except (OSError, SyntaxError) as error:  # PIL's decode errors do not name the file
        raise ValueError(f"cannot decode annotation {path}: {error}") from error
    if palette is not None and ids.size and int(ids.max()) >= len(palette) // 3:
        raise ValueError(f"annotation {path} holds label {int(ids.max())}, outside its {len(palette) // 3}-colour palette")
    if size is not None and ids.shape != tuple(size):
        raise ValueError(f"annotation {path} is {ids.shape[1]}x{ids.shape[0]} but its frame is {size[1]}x{size[0]}")
    return ids, palette


def image_header(path: Path) -> tuple[str, tuple[int, int]]:
    """(mode, (width, height)) from an image file's header; an unreadable header names the file."""
    try:
        with Image.open(path) as image:
            return image.mode, image.size
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from error


def decode_image(path: Path, mode: str) -> np.ndarray:
    """An image file as a numpy array in PIL ``mode``; a decode error names the file."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert(mode))
    except (OSError, SyntaxError, ValueError) as error:  # e.g. "image file is truncated", "Truncated File Read"
        raise ValueError(f"cannot decode image {path}: {error}") from error


def write_annotation(path: Path, ids: np.ndarray, palette: list[int]) -> None:
    """Save an object-id map as a palette PNG."""
    image = Image.fromarray(np.asarray(ids, dtype=np.uint8))
    image.putpalette(palette)  # turns the greyscale image into a palette image
    image.save(path, format="PNG")
