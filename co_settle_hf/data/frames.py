"""Clips stored as folders of image files, one image per frame (e.g. Kinetics at 2 fps)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .base import IMAGE_EXTENSIONS, ClipReadError, check_indices


def natural_key(name: str) -> tuple:
    """Sort key that orders ``img_2`` before ``img_10``; same as plain order for zero-padded names."""
    parts = re.split(r"(\d+)", name)
    return tuple(int(part) if i % 2 else part.lower() for i, part in enumerate(parts))


def list_images(directory: Path) -> list[str]:
    """Names of the image files directly inside ``directory``, in frame order."""
    names = [p.name for p in directory.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
    return sorted(names, key=natural_key)


class FrameFolderClip:
    """A folder whose images (jpg/jpeg/png, natural name order) are the frames of one clip.

    The folder is listed once at construction; ``read`` opens only the requested files. A
    folder without images is a valid object with ``num_frames == 0`` so that the pair dataset
    can report it as bad data instead of failing at discovery.
    """

    def __init__(self, directory: str | Path, name: str | None = None, files: Sequence[str] | None = None) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise FileNotFoundError(f"frame folder not found: {self.directory}")
        self.name = name if name is not None else str(self.directory)
        self.files = list(files) if files is not None else list_images(self.directory)

    @property
    def num_frames(self) -> int:
        return len(self.files)

    def read(self, indices: Sequence[int]) -> torch.Tensor:
        checked = check_indices(indices, self.num_frames, self.name)
        loaded: dict[int, np.ndarray] = {}
        for index in dict.fromkeys(checked):
            path = self.directory / self.files[index]
            try:
                with Image.open(path) as image:
                    loaded[index] = np.asarray(image.convert("RGB"))
            except (OSError, ValueError) as err:  # PIL: missing, truncated, not an image
                raise ClipReadError(f"cannot read frame {path}: {err}") from err
        shapes = {array.shape for array in loaded.values()}
        if len(shapes) > 1:
            raise ClipReadError(f"frames of {self.directory} differ in size: {sorted(shapes)}")
        return torch.from_numpy(np.stack([loaded[i] for i in checked]))

    def __repr__(self) -> str:
        return f"FrameFolderClip({self.name!r}, num_frames={self.num_frames})"
