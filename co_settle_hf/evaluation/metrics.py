"""DAVIS video-object-segmentation measures: region J, boundary F and their statistics.

Definitions follow the DAVIS benchmark (Perazzi et al. 2016; the davis2017-evaluation
toolkit): J is the intersection over union, F the F-measure of one-pixel-wide boundary
maps matched within a disk-shaped tolerance, and every sequence is summarised by its
mean, recall (share of frames above 0.5) and decay (first quarter minus last quarter).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy import ndimage


def _as_bool(array: Any, name: str) -> np.ndarray:
    """A 2-D boolean numpy array from a numpy array or torch tensor."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D mask, got shape {array.shape}")
    return array.astype(bool)


def _inputs(pred: Any, gt: Any, void: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred, gt = _as_bool(pred, "pred"), _as_bool(gt, "gt")
    void = np.zeros_like(gt) if void is None else _as_bool(void, "void")
    if not pred.shape == gt.shape == void.shape:
        raise ValueError(f"pred {pred.shape}, gt {gt.shape} and void {void.shape} must have the same shape")
    return pred, gt, void


def jaccard(pred: Any, gt: Any, void: Any = None) -> float:
    """Region similarity J: IoU of pred and gt outside void pixels; 1.0 if the union is empty."""
    pred, gt, void = _inputs(pred, gt, void)
    valid = ~void
    union = np.count_nonzero((pred | gt) & valid)
    if union == 0:
        return 1.0
    return np.count_nonzero(pred & gt & valid) / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary of a binary mask (DAVIS ``seg2bmap``).

    A pixel is a boundary pixel when it differs from its right, bottom or bottom-right
    neighbour, counting only neighbours that lie inside the image (so the bottom-right
    corner pixel is never one). Boundaries sit half a pixel towards the origin.
    """
    mask = np.asarray(mask, dtype=bool)
    edges = np.zeros_like(mask)
    edges[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    edges[:-1, :] |= mask[:-1, :] != mask[1:, :]
    edges[:-1, :-1] |= mask[:-1, :-1] != mask[1:, 1:]
    return edges


def _near(edges: np.ndarray, targets: np.ndarray, radius: int) -> int:
    """How many ``edges`` pixels lie within ``radius`` (Euclidean) of a ``targets`` pixel.

    Equal to counting ``edges`` inside the dilation of ``targets`` by a disk of that radius
    (offsets with dy^2 + dx^2 <= radius^2), but through one exact Euclidean distance
    transform on the two maps' bounding box: linear in the pixels, not in the disk's area.
    """
    ys, xs = np.nonzero(edges | targets)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    distance = ndimage.distance_transform_edt(~targets[box])
    return int(np.count_nonzero(edges[box] & (distance <= radius)))


def f_measure(pred: Any, gt: Any, void: Any = None, bound_th: float = 0.008) -> float:
    """Boundary F-measure between pred and gt (DAVIS conventions).

    Void pixels are removed from both masks before their boundaries are taken. The match
    tolerance is ``bound_th`` pixels if ``bound_th >= 1``, else ceil(bound_th * image
    diagonal). Empty boundaries: neither -> 1.0; only one of them -> 0.0.
    """
    pred, gt, void = _inputs(pred, gt, void)
    radius = int(bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*gt.shape)))
    pred_edges = boundary_map(pred & ~void)
    gt_edges = boundary_map(gt & ~void)
    n_pred, n_gt = np.count_nonzero(pred_edges), np.count_nonzero(gt_edges)
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0
    precision = _near(pred_edges, gt_edges, radius) / n_pred
    recall = _near(gt_edges, pred_edges, radius) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def db_statistics(per_frame_values: Any) -> tuple[float, float, float]:
    """(mean, recall, decay) of one object's per-frame scores, as in the DAVIS toolkit.

    Recall is the share of frames scoring above 0.5. Decay splits the frames into 4 bins
    at indices round(linspace(1, n, 5)) - 1 (halves rounded up), each bin running from
    its start index to the next bin's start INCLUSIVE (so neighbouring bins share a
    frame), and returns mean(first bin) - mean(last bin): positive when quality drops
    over time. NaNs are ignored in the means. An empty input gives NaNs.
    """
    values = np.asarray(per_frame_values, dtype=np.float64).reshape(-1)
    n = values.size
    if n == 0:
        return math.nan, math.nan, math.nan
    with np.errstate(invalid="ignore"):
        mean = float(np.nanmean(values)) if not np.all(np.isnan(values)) else math.nan
        recall = float(np.mean(values > 0.5))
    # linspace(1, n, 5) has quarter steps, so +0.5 then floor rounds halves up exactly.
    bounds = [math.floor(1 + (n - 1) * i / 4 + 0.5) - 1 for i in range(5)]
    first, last = values[bounds[0] : bounds[1] + 1], values[bounds[3] : bounds[4] + 1]
    if np.all(np.isnan(first)) or np.all(np.isnan(last)):
        return mean, recall, math.nan
    return mean, recall, float(np.nanmean(first) - np.nanmean(last))
