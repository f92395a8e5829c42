"""Small real videos and frame folders for tests (PyAV encodes, PIL writes images).

Everything here is deterministic, so tests can assert exact frame content:
``index_coded_frames`` draws each frame's index as black/white stripes that survive
lossy codecs, and ``read_frame_index`` decodes it back.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import av
import numpy as np
import torch
from PIL import Image

from co_settle_hf.data.video import write_video as library_write_video

# Pixel formats the encoders accept; everything else gets yuv420p.
_PIX_FMT = {"mjpeg": "yuvj420p", "ffv1": "yuv444p", "png": "rgb24", "rawvideo": "yuv420p"}


def _as_uint8_frames(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """Accept numpy or torch (T, H, W, 3) uint8 and return a contiguous numpy array."""
    array = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {array.dtype} {array.shape}")
    return np.ascontiguousarray(array)


def encoder_available(codec: str) -> bool:
    """True when this PyAV build can encode ``codec`` (e.g. libx264 is optional)."""
    try:
        av.codec.Codec(codec, "w")
    except Exception:  # PyAV raises UnknownCodecError or ValueError depending on version
        return False
    return True


def write_video(
    path: str | Path,
    frames: np.ndarray | torch.Tensor,
    fps: int = 10,
    codec: str = "mpeg4",
    gop_size: int | None = None,
    max_b_frames: int | None = None,
) -> Path:
    """Encode ``frames`` (T, H, W, 3) uint8 RGB to ``path``; the container comes from the suffix.

    ``gop_size`` fixes the keyframe interval (no scene-cut keyframes) so tests can check that
    seeking decodes only part of the file. H and W must be even for the yuv420p codecs.
    """
    options = None
    if gop_size is not None and codec in ("libx264", "h264"):
        options = {"g": str(gop_size), "keyint_min": str(gop_size), "sc_threshold": "0"}
    elif gop_size is not None:
        options = {"sc_threshold": "1000000000"}

    def configure(stream) -> None:  # noqa: ANN001 (a PyAV stream)
        if max_b_frames is not None:
            stream.codec_context.max_b_frames = max_b_frames
        if gop_size is not None:
            # Keyframes exactly every gop_size frames: scene-cut detection would add more.
            stream.codec_context.gop_size = gop_size

    return library_write_video(path, _as_uint8_frames(frames), fps=fps, codec=codec,
                               pix_fmt=_PIX_FMT.get(codec, "yuv420p"), options=options, configure=configure)


def moving_pattern_frames(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """A blocky random texture that slides one pixel down and right per frame, uint8 (T, H, W, 3).

    Blocks of 4x4 pixels keep the content compressible, so codecs preserve it well.
    """
    rng = np.random.default_rng(seed)
    block = 4
    coarse = rng.integers(0, 256, size=(
        math.ceil((height + num_frames) / block), math.ceil((width + num_frames) / block), 3),
        dtype=np.uint8)
    texture = coarse.repeat(block, axis=0).repeat(block, axis=1)
    rows = np.arange(height)[None, :, None] + np.arange(num_frames)[:, None, None]
    cols = np.arange(width)[None, None, :] + np.arange(num_frames)[:, None, None]
    return np.ascontiguousarray(texture[rows, cols])


def _num_bits(num_frames: int) -> int:
    return max(1, math.ceil(math.log2(max(num_frames, 2))))


def index_coded_frames(num_frames: int, height: int, width: int) -> np.ndarray:
    """Frames whose index is written in binary as vertical black/white stripes (MSB left).

    Stripes are a whole number of 8-pixel codec blocks wide when ``width`` allows, so lossy
    codecs keep them; ``read_frame_index`` recovers the index.
    """
    bits = _num_bits(num_frames)
    if width < bits:
        raise ValueError(f"width {width} is too small for {bits} index stripes")
    stripe = np.minimum(np.arange(width) * bits // width, bits - 1)  # stripe id of each column
    index = np.arange(num_frames)[:, None]
    on = (index >> (bits - 1 - stripe[None, :])) & 1  # (T, W)
    levels = np.where(on == 1, 235, 20).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(levels[:, None, :, None], (num_frames, height, width, 3)))


def read_frame_index(frame: np.ndarray | torch.Tensor, num_frames: int) -> int:
    """Decode the index that ``index_coded_frames`` drew into ``frame`` (H, W, 3)."""
    array = frame.numpy() if isinstance(frame, torch.Tensor) else np.asarray(frame)
    bits = _num_bits(num_frames)
    width = array.shape[1]
    column_mean = array.astype(np.float64).mean(axis=(0, 2))
    stripe = np.minimum(np.arange(width) * bits // width, bits - 1)
    stripe_mean = np.bincount(stripe, weights=column_mean, minlength=bits) / np.bincount(stripe, minlength=bits)
    value = 0
    for bit in (stripe_mean > 127.5).astype(int):
        value = value * 2 + int(bit)
    return value


def write_frame_folder(
    directory: str | Path,
    frames: np.ndarray | torch.Tensor,
    ext: str = "jpg",
    names: Sequence[str] | None = None,
) -> Path:
    """Write frames as ``00000.jpg, 00001.jpg, ...`` (Kinetics layout) or under ``names``."""
    array = _as_uint8_frames(frames)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if names is None:
        names = [f"{i:05d}.{ext}" for i in range(len(array))]
    if len(names) != len(array):
        raise ValueError(f"{len(names)} names for {len(array)} frames")
    for name, image in zip(names, array):
        Image.fromarray(image).save(directory / name, quality=95)
    return directory
