"""Long videos as many training clips: consecutive windows of about `seconds`, optionally cut at shot changes.

The published frame gap (0.15 of the clip) was defined on 10-second Kinetics clips; on a
10-minute video it would be 90 seconds apart. Cutting a long video into windows and taking the gap
within a window keeps the pairs as the method meant them, and turns an hour of footage into
hundreds of clips an epoch.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from tqdm.auto import tqdm

from .base import Clip, ClipReadError, check_indices
from .video import VideoFileClip

logger = logging.getLogger(__name__)


class ClipWindow:
    """Frames [start, start + length) of clip `index` of `source` (length None: the whole clip).

    The clip is fetched from `source` at each read, so a lazy source (a `datasets` split) stays lazy.
    """

    def __init__(self, source: Sequence[Clip], index: int, name: str, start: int = 0, length: int | None = None) -> None:
        self.source, self.index, self.start, self.length = source, index, start, length
        self.name = name if length is None else f"{name} [frames {start}-{start + length - 1}]"

    @property
    def num_frames(self) -> int:
        return self.length if self.length is not None else self.source[self.index].num_frames

    def read(self, indices: Sequence[int]):
        checked = check_indices(indices, self.num_frames, self.name)
        return self.source[self.index].read([self.start + i for i in checked])

    def __repr__(self) -> str:
        return f"ClipWindow({self.name!r})"


def window_bounds(num_frames: int, frames_per_window: float, cuts: Sequence[int] = ()) -> list[tuple[int, int]]:
    """(start, length) of each window: split at `cuts`, then each part into round(part / frames_per_window) equal windows.

    `frames_per_window` 0 keeps parts whole. A one-frame part between two cuts holds no pair and is dropped.
    """
    edges = [0, *sorted({c for c in cuts if 0 < c < num_frames}), num_frames]
    windows = []
    for first, end in zip(edges[:-1], edges[1:]):
        length = end - first
        if length < 2 and len(edges) > 2:
            continue
        parts = max(1, round(length / frames_per_window)) if frames_per_window > 0 else 1
        bounds = [first + round(i * length / parts) for i in range(parts + 1)]
        windows += [(start, stop - start) for start, stop in zip(bounds[:-1], bounds[1:])]
    return windows


def shot_cuts(clip: Any) -> list[int]:
    """Clip frame indices that start a new shot, found by the demo's detector on a low-resolution decode."""
    from ..demo.footage import find_cuts

    frames, times = clip.decode_small()
    if len(frames) < 2:
        return []
    return [round(times[i] * clip.fps) for i in find_cuts(frames)]


def _windows_of(source: Sequence[Clip], index: int, seconds: float, split_at_cuts: bool) -> list[ClipWindow]:
    try:
        clip = source[index]
    except ClipReadError as error:  # a row without a usable video: counted as a bad sample when read
        return [ClipWindow(source, index, str(error))]
    if not isinstance(clip, VideoFileClip):  # frame folders have no time base: kept whole
        return [ClipWindow(source, index, clip.name)]
    try:
        cuts = shot_cuts(clip) if split_at_cuts else []
        bounds = window_bounds(clip.num_frames, seconds * clip.fps, cuts)
    except ClipReadError as error:  # counted as a bad sample when it is read
        logger.warning("cannot measure %s, kept whole: %s", clip.name, error)
        return [ClipWindow(source, index, clip.name)]
    return [ClipWindow(source, index, clip.name, start, length) for start, length in bounds]


def split_long_videos(source: Sequence[Clip], seconds: float, split_at_cuts: bool = False) -> list[ClipWindow]:
    """Every clip of `source` as one or more windows of about `seconds` (video files only; 0 keeps them whole).

    Reads every video's header (about a millisecond each for local files), and with
    `split_at_cuts` decodes it once at low resolution, with a progress bar for large collections.
    """
    indices = tqdm(range(len(source)), desc="cutting videos into clips", unit="video", disable=len(source) < 100)
    return [window for index in indices for window in _windows_of(source, index, seconds, split_at_cuts)]
