"""TAP-Vid's metrics of one video (Doersch et al., 2022, section 4), written from the paper's definitions.

All positions are raster (x, y) coordinates of a 256 x 256 frame. A *query* asks for one track
from a point on its query frame; the frames scored for it depend on the query mode:

- ``first``: the frames after the query frame (the query is a track's first visible point, so
  nothing before it is visible: the benchmark assumes that prior and leaves those frames out);
- ``strided``: every frame but the query frame (queries every 5 frames, forwards and backwards).

On the scored (query, frame) pairs:

- occlusion accuracy: the share whose predicted occlusion equals the ground truth;
- ``pts_within_d``: among the pairs visible in the ground truth, the share predicted strictly
  closer than d pixels, whatever occlusion was predicted; ``average_pts_within_thresh``
  (``< delta^x_avg``) is their mean over d = 1, 2, 4, 8, 16;
- ``jaccard_d``: true positives (visible, predicted visible, within d) over true positives +
  false negatives (every visible pair not a true positive) + false positives (predicted visible
  but occluded or not within d). A visible pair predicted visible but too far is both a false
  negative and a false positive, so it counts twice. ``average_jaccard`` (AJ) is their mean
  over the thresholds.

Each video is scored on its own; a benchmark's number is the plain mean over videos.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: Distance thresholds in pixels at 256 x 256.
THRESHOLDS = (1, 2, 4, 8, 16)
QUERY_MODES = ("first", "strided")
#: The frame side the metrics are defined at.
METRIC_SIZE = 256
HEADLINE = ("average_jaccard", "average_pts_within_thresh", "occlusion_accuracy")
METRIC_KEYS = (*HEADLINE, *(f"jaccard_{d}" for d in THRESHOLDS), *(f"pts_within_{d}" for d in THRESHOLDS))


def check_query_mode(query_mode: str) -> str:
    if query_mode not in QUERY_MODES:
        raise ValueError(f"query mode must be one of {QUERY_MODES}, got {query_mode!r}")
    return query_mode


def scored_pairs(query_frames: np.ndarray, num_frames: int, query_mode: str) -> np.ndarray:
    """(N, T) bool: the frames each query is scored on (module docstring)."""
    check_query_mode(query_mode)
    frames = np.arange(num_frames)[None, :]
    query = np.asarray(query_frames).round().astype(np.int64)[:, None]
    return frames > query if query_mode == "first" else frames != query


def _share(numerator: np.ndarray, *denominators: np.ndarray) -> float:
    """The count of ``numerator`` over the summed counts of ``denominators``; NaN over zero (the reference's 0 / 0)."""
    total = sum(int(d.sum()) for d in denominators)
    return float(numerator.sum()) / total if total else float("nan")


def tapvid_metrics(query_frames: np.ndarray, gt_occluded: np.ndarray, gt_tracks: np.ndarray,
                   pred_occluded: np.ndarray, pred_tracks: np.ndarray, query_mode: str) -> dict[str, float]:
    """The metrics of one video (module docstring), keyed as in TAP-Vid's code (:data:`METRIC_KEYS`).

    Args: query frame of each of N queries (N,); occlusion flags (N, T) bool; tracks (N, T, 2),
    x then y, in pixels of a 256 x 256 frame; the predictions in the same shapes.
    """
    gt_occluded, pred_occluded = np.asarray(gt_occluded, bool), np.asarray(pred_occluded, bool)
    gt_tracks, pred_tracks = np.asarray(gt_tracks, np.float64), np.asarray(pred_tracks, np.float64)
    n, t = gt_occluded.shape
    for name, array, shape in (("pred_occluded", pred_occluded, (n, t)), ("gt_tracks", gt_tracks, (n, t, 2)),
                               ("pred_tracks", pred_tracks, (n, t, 2)), ("query_frames", np.asarray(query_frames), (n,))):
        if array.shape != shape:
            raise ValueError(f"{name} must be {shape} to match gt_occluded (N, T) = {(n, t)}, got {array.shape}")
    scored = scored_pairs(query_frames, t, query_mode)
    visible, pred_visible = scored & ~gt_occluded, scored & ~pred_occluded
    squared = ((pred_tracks - gt_tracks) ** 2).sum(axis=-1)
    metrics = {"occlusion_accuracy": _share(scored & (gt_occluded == pred_occluded), scored)}
    for d in THRESHOLDS:
        within = squared < d * d
        hits = visible & within
        metrics[f"pts_within_{d}"] = _share(hits, visible)
        true_positive = hits & pred_visible
        false_positive = pred_visible & ~(visible & within)
        metrics[f"jaccard_{d}"] = _share(true_positive, visible, false_positive)  # visible = TP + FN
    metrics["average_jaccard"] = float(np.mean([metrics[f"jaccard_{d}"] for d in THRESHOLDS]))
    metrics["average_pts_within_thresh"] = float(np.mean([metrics[f"pts_within_{d}"] for d in THRESHOLDS]))
    return {key: metrics[key] for key in METRIC_KEYS}


def mean_over_videos(per_video: Sequence[dict[str, float]]) -> dict[str, float]:
    """The benchmark's numbers: each metric's plain mean over videos (TAP-Vid's averaging)."""
    if not per_video:
        raise ValueError("no video was scored")
    return {key: float(np.mean([row[key] for row in per_video])) for key in per_video[0]}
