"""JHMDB's published protocol: PCK equal to a loop transcription of the reference code's arithmetic.

The reference (CropMAE's ``jhmdb.py``, ``test_utils.process_pose`` and ``eval_pck.py``) maps a
joint to cell ``px * new / ori / patch`` (no half-pixel shift), pastes a 4x4 Gaussian patch at
``int(cell - 1.5)`` (its peak snapped to a cell), reads a prediction as the weighted mean of the 5
largest cells, maps it back with ``cell / grid * ori``, drops lost joints from scoring and boxes,
skips frame 0 and averages the per-joint PCKs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.io
import torch
import torch.nn.functional as F
from eval_fixtures import write_jhmdb

from co_settle_hf.evaluation import jhmdb
from co_settle_hf.evaluation.features import extract_video_features
from co_settle_hf.evaluation.images import read_frames
from co_settle_hf.evaluation.propagation import propagate_labels

THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5)
SIZE = (64, 64)


class PooledPixelEncoder:
    """Mean normalised colour of each 8x8 patch (D = 3)."""

    image_mean = (0.5, 0.5, 0.5)
    image_std = (0.25, 0.25, 0.25)
    patch_size = 8

    def __call__(self, pixel_values):
        return F.avg_pool2d(pixel_values, self.patch_size).permute(0, 2, 3, 1)


def reference_pck(root, names, encoder, sigma=0.5):
    """PCK (in %) per threshold, by the reference's arithmetic written out as loops."""
    dist_all = {j: [] for j in range(15)}
    for name in names:
        frames = read_frames(sorted((root / "Rename_Images" / name).glob("*.png")))
        ori_h, ori_w = frames.shape[1:3]
        new_h, new_w = SIZE
        feats = extract_video_features(encoder, frames, size=SIZE)  # shared with the library: not the mapping
        gh, gw = math.ceil(new_h / encoder.patch_size), math.ceil(new_w / encoder.patch_size)
        gt = scipy.io.loadmat(root / "joint_positions" / name / "joint_positions.mat")["pos_img"] - 1  # (2, 15, T)
        maps = np.zeros((15, gh, gw))
        size = 6 * sigma + 1
        for j in range(15):
            x = gt[0, j, 0] * new_w / ori_w / encoder.patch_size
            y = gt[1, j, 0] * new_h / ori_h / encoder.patch_size
            ul = [int(x - 3 * sigma), int(y - 3 * sigma)]
            br = [int(x + 3 * sigma + 1), int(y + 3 * sigma + 1)]
            if ul[0] >= gw or ul[1] >= gh or br[0] < 0 or br[1] < 0:
                continue
            for cy in range(max(0, ul[1]), min(br[1], gh)):
                for cx in range(max(0, ul[0]), min(br[0], gw)):
                    gx, gy = cx - ul[0], cy - ul[1]
                    maps[j, cy, cx] = math.exp(-((gx - size // 2) ** 2 + (gy - size // 2) ** 2) / (2 * sigma**2))
        background = (maps.sum(0) == 0)[None].astype(float)
        first = torch.from_numpy(np.concatenate([background, maps])).float()
        soft = propagate_labels(feats, first, n_context=20, radius=20, topk=7, temperature=0.7)  # shared, checked elsewhere
        t_len = soft.shape[0]
        pred = np.zeros((2, 15, t_len))
        for t in range(t_len):
            for j in range(15):
                flat = soft[t, j + 1].flatten().double()
                values, ids = flat.topk(5)
                if float(flat.sum()) == 0:
                    pred[:, j, t] = -1
                    continue
                values = values / values.sum()
                px = sum(float(v) * (int(i) % gw) for v, i in zip(values, ids))
                py = sum(float(v) * (int(i) // gw) for v, i in zip(values, ids))
                pred[0, j, t] = px / gw * ori_w
                pred[1, j, t] = py / gh * ori_h
        visible = pred[0] >= 0
        for t in range(1, t_len):
            xs = [gt[0, j, t] for j in range(15) if visible[j, t]]
            ys = [gt[1, j, t] for j in range(15) if visible[j, t]]
            box = 0.6 * math.hypot(max(xs) - min(xs), max(ys) - min(ys))
            for j in range(15):
                if visible[j, t]:
                    dist_all[j].append(math.hypot(pred[0, j, t] - gt[0, j, t], pred[1, j, t] - gt[1, j, t]) / box)
    return {a: float(np.mean([100.0 * sum(d <= a for d in dist_all[j]) / len(dist_all[j]) for j in range(15)]))
            for a in THRESHOLDS}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("jhmdb_reference")
    write_jhmdb(root, "walk/clip_a", num_frames=6, seed=0)
    write_jhmdb(root, "run/clip_b", num_frames=6, seed=3)
    return root


def test_reference_mapping_pck_equals_the_transcription(dataset, tmp_path):
    expected = reference_pck(dataset, ["run/clip_b", "walk/clip_a"], PooledPixelEncoder())
    got = jhmdb.evaluate_jhmdb(PooledPixelEncoder(), dataset, tmp_path / "reference", size=SIZE, progress=False,
                               thresholds=THRESHOLDS, count_lost_as_miss=False)  # mapping="reference" by default
    assert got["settings"]["mapping"] == "reference"
    for a in THRESHOLDS:
        assert 100 * got[f"PCK@{a:g}"] == pytest.approx(expected[a], abs=1e-9), a
    centred = jhmdb.evaluate_jhmdb(PooledPixelEncoder(), dataset, tmp_path / "centred", size=SIZE, progress=False,
                                   thresholds=THRESHOLDS, count_lost_as_miss=False, mapping="centred")
    print("JHMDB PCK on the fabricated case, reference mapping:", {a: round(got[f"PCK@{a:g}"], 4) for a in THRESHOLDS},
          "centred mapping:", {a: round(centred[f"PCK@{a:g}"], 4) for a in THRESHOLDS})
    assert centred["PCK@0.1"] > got["PCK@0.1"]  # the snapped, shifted mapping costs precision at 0.1
    assert all(centred[f"PCK@{a:g}"] >= got[f"PCK@{a:g}"] for a in THRESHOLDS)


def test_reference_heatmap_peaks_are_snapped_to_cells():
    grid = (6, 6)
    for x, y in [(2.0, 3.0), (2.4, 1.6), (2.6, 3.49), (0.3, 4.2)]:
        maps = jhmdb.reference_heatmaps(torch.tensor([[x, y]] * 15, dtype=torch.float64), grid)
        peak = np.unravel_index(int(maps[1].argmax()), grid)
        assert maps[1].max() == 1.0 and peak == (int(y - 1.5) + 2, int(x - 1.5) + 2)
        assert maps[0].sum() == 36 - (maps[1] > 0).sum()  # background: the cells no joint reaches
    outside = jhmdb.reference_heatmaps(torch.tensor([[-9.0, 2.0]] * 15, dtype=torch.float64), grid)
    assert outside[1:].sum() == 0 and outside[0].sum() == 36
