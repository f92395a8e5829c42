"""The clip interface every data source implements, and the error bad data raises."""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import torch

from ..errors import CoSettleError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".webm", ".mkv", ".mov"})


class ClipReadError(CoSettleError, RuntimeError):
    """A clip's data cannot be read (missing, empty, truncated or corrupt); the message names it.

    Pair datasets catch only this error and skip the sample, so real bugs still surface.
    """


@runtime_checkable
class Clip(Protocol):
    """An ordered sequence of RGB frames with a known length.

    ``num_frames`` may touch the file (video files probe their metadata once) and raises
    ``ClipReadError`` when the data is unreadable. ``read`` returns uint8 (k, H, W, 3) in the
    order of ``indices`` (duplicates allowed) and reads only those frames.
    """

    name: str

    @property
    def num_frames(self) -> int: ...

    def read(self, indices: Sequence[int]) -> torch.Tensor: ...


def check_indices(indices: Sequence[int], num_frames: int, name: str) -> list[int]:
    """Validate frame indices against a clip's length; an out-of-range index is a caller bug."""
    checked = [int(i) for i in indices]
    if not checked:
        raise ValueError(f"{name}: no frame indices requested")
    bad = [i for i in checked if not 0 <= i < num_frames]
    if bad:
        raise IndexError(f"{name}: frame indices {bad} out of range for {num_frames} frames")
    return checked
