"""TAP-Vid-DAVIS data: the published pickle (read through an allow-list) or the same data as one ``.npz`` per video.

The published ``tapvid_davis.pkl`` is a dict, video name -> ``{"video": uint8 (T, H, W, 3),
"points": float (N, T, 2) x then y normalised to [0, 1], "occluded": bool (N, T)}``. A pickle can
run any code on loading, so it is read with an unpickler that resolves only the few NumPy names
that rebuild arrays (:data:`ALLOWED_GLOBALS`); any other name stops the reading with an error
naming the file. The same data converted (:func:`convert_pickle_to_npz`, or
``python -m co_settle_hf.evaluation.tapvid_data tapvid_davis.pkl FOLDER``) is a folder of
``<video>.npz`` files holding the arrays ``video``, ``points`` and ``occluded``; they are read
with ``allow_pickle=False`` and a video's frames only when it is evaluated.
"""

from __future__ import annotations

import argparse
import importlib
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..staging import staged_file
from .outputs import check_name


def _numpy_global(module: str, name: str) -> Any:
    """An allowed NumPy name from this NumPy's home for it (``numpy._core`` in NumPy 2, ``numpy.core`` before),
    whichever NumPy wrote the pickle."""
    for candidate in (module.replace("numpy.core", "numpy._core"), module.replace("numpy._core", "numpy.core")):
        try:
            return getattr(importlib.import_module(candidate), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"this NumPy has no {module}.{name}")


#: The only globals a TAP-Vid pickle may name: array and dtype reconstruction, as NumPy 1 and 2 write them.
ALLOWED_GLOBALS = {(module, name) for prefix in ("numpy.core", "numpy._core")
                   for module, name in ((f"{prefix}.multiarray", "_reconstruct"), (f"{prefix}.multiarray", "scalar"),
                                        (f"{prefix}.numeric", "_frombuffer"))} | {("numpy", "ndarray"), ("numpy", "dtype")}


NPZ_LAYOUT = "a TAP-Vid .npz holds the arrays video, points and occluded"


class _ArraysOnly(pickle.Unpickler):
    def __init__(self, handle, path: Path):
        super().__init__(handle)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise ValueError(f"{self.path}: the pickle names {module}.{name}, which is not an array-rebuilding NumPy "
                             "global; refused (a TAP-Vid pickle holds only dicts of NumPy arrays)")
        return _numpy_global(module, name)


def read_tapvid_pickle(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """The published pickle's dict, read with :data:`ALLOWED_GLOBALS` only (module docstring)."""
    path = Path(path)
    with path.open("rb") as handle:
        try:
            data = _ArraysOnly(handle, path).load()
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as error:
            raise ValueError(f"{path}: not a readable TAP-Vid pickle ({error})") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a non-empty dict of video name -> arrays, got {type(data).__name__}")
    return data


@dataclass
class TapVidVideo:
    """One video for the evaluation loop: its file (``frames``, which keys the feature cache with ``item``),
    size, ground-truth tracks in normalised (x, y) and occlusion flags."""

    name: str
    frames: tuple[Path, ...]
    num_frames: int
    frame_size: tuple[int, int]
    points: np.ndarray
    occluded: np.ndarray
    pixels: np.ndarray | None = field(default=None, repr=False)  # held in memory when read from the pickle

    @property
    def item(self) -> str:
        return self.name

    def read_all(self) -> torch.Tensor:
        """uint8 (T, H, W, 3) frames."""
        video = self.pixels if self.pixels is not None else _npz_array(self.frames[0], "video")
        return torch.from_numpy(np.ascontiguousarray(video))


def _npz_array(path: Path, key: str) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as data:
            return data[key]
    except KeyError:
        raise ValueError(f"{path}: no array {key!r}; {NPZ_LAYOUT}") from None
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a readable .npz ({error})") from None


def _npz_video_shape(path: Path) -> tuple[int, ...]:
    """The shape of ``video`` in an .npz, from its header (no decoding of the frames)."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open("video.npy") as handle:
            version = np.lib.format.read_magic(handle)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(handle)
    except KeyError:
        raise ValueError(f"{path}: no array 'video'; {NPZ_LAYOUT}") from None
    if dtype != np.uint8:
        raise ValueError(f"{path}: video must be uint8, got {dtype}")
    return tuple(shape)


def check_video(name: str, shape: Sequence[int], points: np.ndarray, occluded: np.ndarray, where: str) -> None:
    """Shapes that fit together: video (T, H, W, 3), points (N, T, 2), occluded (N, T)."""
    if len(shape) != 4 or shape[-1] != 3 or shape[0] < 1:
        raise ValueError(f"{where}: video {name!r} must be (T, H, W, 3), got {tuple(shape)}")
    t = shape[0]
    if points.ndim != 3 or points.shape[1:] != (t, 2):
        raise ValueError(f"{where}: points of {name!r} must be (N, {t}, 2) for its {t} frames, got {points.shape}")
    if occluded.shape != points.shape[:2]:
        raise ValueError(f"{where}: occluded of {name!r} must be {points.shape[:2]} (points' N, T), got {occluded.shape}")


def _from_arrays(name: str, arrays: Any, path: Path) -> TapVidVideo:
    if not isinstance(arrays, dict) or not {"video", "points", "occluded"} <= set(arrays):
        raise ValueError(f"{path}: video {name!r} must be a dict with video, points and occluded")
    video = np.asarray(arrays["video"])
    if video.dtype != np.uint8:
        raise ValueError(f"{path}: video {name!r} must be uint8, got {video.dtype}")
    points, occluded = np.asarray(arrays["points"], np.float64), np.asarray(arrays["occluded"]).astype(bool)
    check_video(name, video.shape, points, occluded, str(path))
    return TapVidVideo(name, (path,), video.shape[0], video.shape[1:3], points, occluded, video)


def list_tapvid_videos(root: str | Path, videos: Sequence[str] | None = None) -> list[TapVidVideo]:
    """The videos of a TAP-Vid pickle file or a folder of ``<video>.npz`` (sorted by name), checked;
    ``videos`` keeps only those named."""
    root = Path(root)
    if root.is_file():
        data = read_tapvid_pickle(root)
        found = [_from_arrays(check_name(str(name), f"{root}, video name"), data[name], root) for name in sorted(data)]
    elif root.is_dir():
        files = sorted(root.glob("*.npz"))
        if not files:
            raise FileNotFoundError(f"TAP-Vid root {root} holds no .npz files (nor is it the published .pkl)")
        found = []
        for path in files:
            points = _npz_array(path, "points").astype(np.float64)
            occluded = _npz_array(path, "occluded").astype(bool)
            shape = _npz_video_shape(path)
            check_video(path.stem, shape, points, occluded, str(path))
            found.append(TapVidVideo(path.stem, (path,), shape[0], shape[1:3], points, occluded))
    else:
        raise FileNotFoundError(f"TAP-Vid data {root} not found (the published .pkl or a folder of .npz)")
    if videos is not None:
        missing = sorted(set(videos) - {v.name for v in found})
        if missing:
            raise ValueError(f"{root}: no video named {missing}")
        found = [v for v in found if v.name in set(videos)]
    return found


def convert_pickle_to_npz(pickle_path: str | Path, folder: str | Path) -> list[Path]:
    """Write each video of the published pickle as ``folder/<video>.npz`` (the layout :func:`list_tapvid_videos` reads)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for video in list_tapvid_videos(pickle_path):
        path = folder / f"{video.name}.npz"
        with staged_file(path) as staged, staged.open("wb") as handle:  # a file object: savez adds no second suffix
            np.savez(handle, video=video.pixels, points=video.points, occluded=video.occluded)
        written.append(path)
    return written


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="co-settle convert-tapvid",
                                     description="Convert the published TAP-Vid pickle into one .npz per video.")
    parser.add_argument("pickle", help="tapvid_davis.pkl (read by an unpickler that builds only arrays)")
    parser.add_argument("folder", help="where <video>.npz files go")
    return parser


def execute(args: argparse.Namespace) -> list[Path]:
    written = convert_pickle_to_npz(args.pickle, args.folder)
    print(f"wrote {len(written)} videos to {args.folder}")
    return written
