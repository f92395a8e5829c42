"""TAP-Vid metrics against a loop-by-loop transcription of the published arithmetic and hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from co_settle_hf.evaluation.tapvid_metrics import METRIC_KEYS, mean_over_videos, scored_pairs, tapvid_metrics


def transcription(query_frames, gt_occ, gt, pred_occ, pred, mode):
    """The TAP-Vid paper's counts, one (query, frame) pair at a time."""
    counts = {"scored": 0, "occ_right": 0, "visible": 0}
    per = {d: {"within": 0, "tp": 0, "fp": 0} for d in (1, 2, 4, 8, 16)}
    for i in range(gt_occ.shape[0]):
        for t in range(gt_occ.shape[1]):
            q = int(round(query_frames[i]))
            if (mode == "first" and t <= q) or (mode == "strided" and t == q):
                continue
            counts["scored"] += 1
            counts["occ_right"] += int(gt_occ[i, t] == pred_occ[i, t])
            counts["visible"] += int(not gt_occ[i, t])
            distance = math.dist(pred[i, t], gt[i, t])
            for d, c in per.items():
                close = distance < d
                c["within"] += int(close and not gt_occ[i, t])
                c["tp"] += int(close and not gt_occ[i, t] and not pred_occ[i, t])
                c["fp"] += int(not pred_occ[i, t] and (gt_occ[i, t] or not close))
    out = {"occlusion_accuracy": counts["occ_right"] / counts["scored"]}
    for d, c in per.items():
        out[f"pts_within_{d}"] = c["within"] / counts["visible"]
        out[f"jaccard_{d}"] = c["tp"] / (counts["visible"] + c["fp"])
    out["average_jaccard"] = sum(out[f"jaccard_{d}"] for d in per) / 5
    out["average_pts_within_thresh"] = sum(out[f"pts_within_{d}"] for d in per) / 5
    return out


def fabricated(seed: int, mode: str):
    """Random tracks with occlusions; in ``first`` mode each query is its track's first visible frame."""
    rng = np.random.default_rng(seed)
    n, t = rng.integers(2, 12), rng.integers(3, 20)
    gt_occ = rng.random((n, t)) < 0.35
    gt_occ[:, rng.integers(0, t)] = False  # every track visible somewhere
    gt = rng.uniform(0, 256, (n, t, 2))
    pred = gt + rng.normal(0, rng.uniform(0.5, 12), (n, t, 2))
    pred_occ = np.where(rng.random((n, t)) < 0.75, gt_occ, ~gt_occ)
    if mode == "first":
        query = np.argmax(~gt_occ, axis=1)
    else:
        query = rng.integers(0, t, n)
    return query, gt_occ, gt, pred_occ, pred


@pytest.mark.parametrize("mode", ["first", "strided"])
@pytest.mark.parametrize("seed", range(12))
def test_metrics_equal_the_transcription(seed, mode):
    case = fabricated(seed, mode)
    got = tapvid_metrics(*case, mode)
    expected = transcription(*case, mode)
    assert list(got) == list(METRIC_KEYS)
    for key in METRIC_KEYS:
        assert got[key] == pytest.approx(expected[key], abs=1e-12), key


def test_first_mode_scores_only_frames_after_the_query():
    assert scored_pairs(np.array([0, 2]), 4, "first").tolist() == [[False, True, True, True], [False, False, False, True]]
    assert scored_pairs(np.array([0, 2]), 4, "strided").tolist() == [[False, True, True, True], [True, True, False, True]]
    # A wrong prediction before the query frame changes strided scores but never first-mode ones.
    gt = np.zeros((1, 4, 2))
    pred = gt.copy()
    pred[0, 0] = 100.0
    occ = np.zeros((1, 4), bool)
    first = tapvid_metrics(np.array([2]), occ, gt, occ, pred, "first")
    assert first["average_jaccard"] == 1.0 and first["occlusion_accuracy"] == 1.0
    strided = tapvid_metrics(np.array([2]), occ, gt, occ, pred, "strided")
    assert strided["pts_within_16"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="query mode"):
        scored_pairs(np.array([0]), 3, "last")


def test_hand_computed_numbers():
    """One track, query at frame 0, frames 1..4 scored (first mode).

    frame 1: visible, off by 1.5 px, predicted visible  -> within 2, 4, 8, 16: TP; at 1: FN + FP
    frame 2: visible, off by 5 px (3-4-5), predicted occluded -> within 8, 16 (FN at every threshold)
    frame 3: occluded, predicted visible                 -> FP at every threshold, occlusion wrong
    frame 4: occluded, predicted occluded                -> nothing but a right occlusion
    """
    gt = np.zeros((1, 5, 2))
    pred = np.array([[[0, 0], [1.5, 0], [3, 4], [0, 0], [0, 0]]], float)
    gt_occ = np.array([[False, False, False, True, True]])
    pred_occ = np.array([[False, False, True, False, True]])
    m = tapvid_metrics(np.array([0]), gt_occ, gt, pred_occ, pred, "first")
    assert m["occlusion_accuracy"] == pytest.approx(2 / 4)
    assert [m[f"pts_within_{d}"] for d in (1, 2, 4, 8, 16)] == pytest.approx([0, 0.5, 0.5, 1, 1])
    # Jaccard = TP / (visible + FP): d=1: 0 / (2 + 2); d=2, 4, 8, 16: 1 / (2 + 1)
    assert [m[f"jaccard_{d}"] for d in (1, 2, 4, 8, 16)] == pytest.approx([0, 1 / 3, 1 / 3, 1 / 3, 1 / 3])
    assert m["average_jaccard"] == pytest.approx(4 / 15)
    assert m["average_pts_within_thresh"] == pytest.approx(3 / 5)


def test_videos_are_averaged_not_pooled():
    perfect = tapvid_metrics(np.array([0]), np.zeros((1, 3), bool), np.zeros((1, 3, 2)), np.zeros((1, 3), bool),
                             np.zeros((1, 3, 2)), "first")
    far = np.full((4, 3, 2), 50.0)
    wrong = tapvid_metrics(np.zeros(4), np.zeros((4, 3), bool), np.zeros((4, 3, 2)), np.zeros((4, 3), bool), far, "first")
    assert mean_over_videos([perfect, wrong])["average_jaccard"] == pytest.approx(0.5)  # pooled it would be 0.2


def test_shapes_are_checked():
    with pytest.raises(ValueError, match=r"pred_tracks must be \(2, 3, 2\)"):
        tapvid_metrics(np.zeros(2), np.zeros((2, 3), bool), np.zeros((2, 3, 2)), np.zeros((2, 3), bool),
                       np.zeros((3, 3, 2)), "first")
