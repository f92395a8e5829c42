"""TAP-Vid-DAVIS point tracking by feature matching (:mod:`.tracking`), scored by :mod:`.tapvid_metrics`.

Queries follow TAP-Vid's two protocols: ``first``, one query per track at its first visible frame
(tracks never visible are dropped), and ``strided``, a query for every track visible on frames
0, 5, 10, ... (so a track can give several). Each query is tracked through the whole video from its
own frame's features; positions are normalised (x, y) in [0, 1], scaled to 256 x 256 for scoring.
Frames are encoded at ``size`` (rounded down to patch multiples; the aspect ratio of the frame is
not kept, as the normalised coordinates do not need it).

Writes, per video, ``<video>.npz`` (``queries`` (M, 3) frame, x, y; ``track_ids`` (M,), the track
each query follows; predicted ``tracks`` (M, T, 2) and ``occluded`` (M, T)), then
``per-video_results.csv`` and ``summary.json``: the mean over videos of each metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .features import DenseEncoder, fit_to_patches
from .loop import evaluate_task
from .outputs import OutputFolder
from .results import write_csv, write_summary
from .tapvid_data import TapVidVideo, list_tapvid_videos
from .tapvid_metrics import METRIC_KEYS, METRIC_SIZE, QUERY_MODES, check_query_mode, mean_over_videos, tapvid_metrics
from .tracking import TrackingSettings, track_points

#: ``strided`` queries every this many frames (TAP-Vid's).
QUERY_STRIDE = 5


def sample_queries(points: np.ndarray, occluded: np.ndarray, query_mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Queries (M, 3) as (frame, x, y) and the track each follows (M,), by TAP-Vid's protocol (module docstring)."""
    if check_query_mode(query_mode) == "first":
        tracks = np.flatnonzero((~occluded).any(axis=1))
        frames = np.argmax(~occluded[tracks], axis=1)
    else:
        pairs = [(t, n) for t in range(0, occluded.shape[1], QUERY_STRIDE) for n in np.flatnonzero(~occluded[:, t])]
        frames, tracks = (np.array(column, dtype=np.int64) for column in zip(*pairs)) if pairs else (np.zeros(0, int),) * 2
    queries = np.concatenate([frames[:, None].astype(np.float64), points[tracks, frames]], axis=1)
    return queries.reshape(-1, 3), tracks


def read_predictions(path: Path) -> dict[str, np.ndarray]:
    """One video's written predictions (module docstring)."""
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@dataclass
class TapVidTask:
    """TAP-Vid-DAVIS for the evaluation loop (module docstring)."""

    video_list: list[TapVidVideo]
    size: tuple[int, int]
    query_mode: str
    name: str = "TAP-Vid"
    min_frames: int = 2

    def videos(self) -> list[TapVidVideo]:
        return self.video_list

    def input_size(self, frame_size: tuple[int, int], patch_size: int) -> tuple[int, int]:
        return fit_to_patches(self.size, patch_size)

    def first_labels(self, video, frame_size, size, grid):
        queries, track_ids = sample_queries(video.points, video.occluded, self.query_mode)
        if not len(queries):
            raise ValueError(f"{video.frames[0]}: video {video.name!r} has no visible point to query")
        return torch.from_numpy(queries).float(), (queries, track_ids)

    def predict(self, features: torch.Tensor, queries: torch.Tensor, settings: TrackingSettings):
        return track_points(features, queries, settings)

    def score(self, video, state, prediction, settings, out: OutputFolder, folder: str) -> dict[str, Any]:
        queries, track_ids = state
        tracks, occluded = (p.cpu().numpy() for p in prediction)
        np.savez(out.path(folder, f"{video.name}.npz"), queries=queries, track_ids=track_ids,
                 tracks=tracks.astype(np.float32), occluded=occluded)
        metrics = tapvid_metrics(queries[:, 0], video.occluded[track_ids], video.points[track_ids] * METRIC_SIZE,
                                 occluded, tracks.astype(np.float64) * METRIC_SIZE, self.query_mode)
        return {"video": video.name, "queries": len(queries), **metrics}

    def summarise(self, rows, too_short, settings, out, folder) -> dict[str, Any]:
        summary: dict[str, Any] = {
            **mean_over_videos([{k: r[k] for k in METRIC_KEYS} for r in rows]),
            "num_videos": len(rows), "num_queries": sum(r["queries"] for r in rows), "too_short": too_short,
            "settings": {**settings.as_dict(), "query_mode": self.query_mode, "query_stride": QUERY_STRIDE,
                         "size": list(self.size), "metric_size": METRIC_SIZE},
        }
        write_csv(out.path(folder, "per-video_results.csv"), ["video", "queries", *METRIC_KEYS],
                  [[r["video"], r["queries"], *(r[k] for k in METRIC_KEYS)] for r in rows])
        write_summary(out.path(folder, "summary.json"), summary)
        return summary


#: Points and frames in the tracks picture (one colour each of the colour-blind-safe palette).
PICTURE_POINTS, PICTURE_FRAMES = 7, 4


def write_first_tracks_picture(root: str | Path, folders: dict[str, Path], out: OutputFolder, *,
                               videos: Sequence[str] | None = None, query_mode: str = QUERY_MODES[0]) -> Path:
    """``tracks_<video>.png`` of the first video: ground truth and every model in ``folders``, side by side."""
    video = list_tapvid_videos(root, videos)[0]
    return write_tracks_picture(video, folders, out.path(f"tracks_{video.name}.png"),
                                f"{Path(root).name}: {video.name}, {query_mode} queries")


def write_tracks_picture(video: TapVidVideo, folders: dict[str, Path], path: Path, title: str) -> Path:
    """Ground truth and each model's tracks (``folders``: label -> its output folder) on a few frames of ``video``.

    Shows up to :data:`PICTURE_POINTS` queries of the earliest query frame, on :data:`PICTURE_FRAMES`
    frames from there to the end.
    """
    from .plots import tracks_figure

    predictions = {label: read_predictions(folder / f"{video.name}.npz") for label, folder in folders.items()}
    first = next(iter(predictions.values()))
    start = int(first["queries"][:, 0].min())
    candidates = np.flatnonzero(first["queries"][:, 0] == start)
    chosen = candidates[np.linspace(0, len(candidates) - 1, min(PICTURE_POINTS, len(candidates))).round().astype(int)]
    ids = first["track_ids"][chosen]
    panels = {"ground truth": (video.points[ids], video.occluded[ids]),
              **{label: (p["tracks"][chosen], p["occluded"][chosen]) for label, p in predictions.items()}}
    frames = np.linspace(start, video.num_frames - 1, min(PICTURE_FRAMES, video.num_frames - start)).round().astype(int)
    return tracks_figure(video.read_all().numpy(), panels, sorted(set(frames.tolist())), path, title)


def evaluate_tapvid(
    encoder: DenseEncoder,
    root: str | Path,
    output_dir: str | Path | OutputFolder,
    settings: TrackingSettings | None = None,
    *,
    query_mode: str = QUERY_MODES[0],
    size: tuple[int, int] = (448, 448),
    videos: Sequence[str] | None = None,
    progress: bool = True,
    overwrite: bool = False,
    cache: Any = None,
    processes: Any = None,
    **knobs: Any,
) -> dict[str, Any]:
    """Point tracking on TAP-Vid-DAVIS (``root``: the published .pkl or a folder of .npz) by feature matching.

    ``settings`` are the tracker's (keyword ``knobs`` such as ``temperature=0.1`` change fields).
    Returns the summary (module docstring) with the run's timing under ``timing``.
    """
    task = TapVidTask(list_tapvid_videos(root, videos), fit_to_patches(tuple(size), int(encoder.patch_size)),
                      check_query_mode(query_mode))
    return evaluate_task(task, encoder, root, output_dir, [settings or TrackingSettings()], knobs, overwrite=overwrite,
                         cache=cache, processes=processes, progress=progress)
