"""JHMDB (PCK) and VIP (mIoU): metrics on hand-made cases, readers on tiny fabricated datasets."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import scipy.io
import torch
import torch.nn.functional as F
from eval_fixtures import (
    VIP_CLASSES,  # the tiny JHMDB / VIP datasets, shared with test_eval_cli
)
from eval_fixtures import write_jhmdb as _write_jhmdb
from eval_fixtures import write_vip as _write_vip
from PIL import Image

from co_settle_hf.evaluation import jhmdb, vip


class PooledPixelEncoder:
    """Fake encoder: the mean normalised colour of each patch cell (D = 3)."""

    image_mean = (0.5, 0.5, 0.5)
    image_std = (0.25, 0.25, 0.25)
    patch_size = 8

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(pixel_values, self.patch_size).permute(0, 2, 3, 1)


# ----------------------------------------------------------------------------- PCK


def test_pck_hand_made():
    # Box of the visible joints (0,0)-(30,40): diagonal 50, scale 0.6 * 50 = 30 px,
    # so PCK@0.1 allows 3 px and PCK@0.2 allows 6 px.
    gt = np.array([[[0, 0], [30, 40], [10, 10], [500, 500]]] * 2, dtype=float)
    visible = np.array([[True, True, True, False]] * 2)
    pred = gt.copy()
    pred[0] += 1000  # frame 0 is the given frame: never scored by default
    pred[1, 0] += [2, 0]  # 2 px: hit at 0.1 and 0.2
    pred[1, 1] += [3, 4]  # 5 px: hit at 0.2 only
    pred[1, 2] += [0, 10]  # 10 px: miss
    pred[1, 3] = 0  # invisible: not scored, not in the box
    out = jhmdb.pck(pred, gt, visible)
    assert out["PCK@0.1"] == pytest.approx(1 / 3)
    assert out["PCK@0.2"] == pytest.approx(2 / 3)
    assert out["num_scored"] == 3
    with_first = jhmdb.pck(pred, gt, visible, include_first_frame=True)
    assert with_first["num_scored"] == 6 and with_first["PCK@0.2"] == pytest.approx(2 / 6)
    lost = pred.copy()
    lost[1, 0] = np.nan  # no prediction: a miss
    assert jhmdb.pck(lost, gt, visible)["PCK@0.1"] == 0.0
    assert jhmdb.pck(torch.tensor(pred), torch.tensor(gt), torch.tensor(visible), thresholds=(0.5,)) == {
        "PCK@0.5": 1.0, "num_scored": 3}
    with pytest.raises(ValueError, match="visible"):
        jhmdb.pck(pred, gt, visible[:, :2])


def test_heatmaps_and_peaks():
    joints = torch.tensor([[2.0, 1.0]] + [[5.0, 3.0]] * 14)  # (x, y) in cells
    maps = jhmdb.joint_heatmaps(joints, (4, 6))
    assert maps.shape == (16, 4, 6)
    assert maps[1, 1, 2] == 1.0 and maps[1, 1, 3] == pytest.approx(math.exp(-2))
    assert maps[1, 3, 5] == 0.0  # beyond 3 sigma
    assert maps[0, 1, 2] == 0.0 and maps[0, 3, 0] == 1.0  # background only where no joint reaches
    peaks = jhmdb.heatmap_peaks(maps[None, 1:])
    assert torch.allclose(peaks[0, 0], torch.tensor([2.0, 1.0], dtype=torch.float64))
    empty = jhmdb.heatmap_peaks(torch.zeros(1, 1, 3, 3))
    assert torch.isnan(empty).all()


def test_pixel_cell_round_trip():
    pts = torch.tensor([[4.5, 2.5], [79.0, 47.0]], dtype=torch.float64)
    cells = jhmdb.pixels_to_cells(pts, (48, 80), (8, 8))
    assert torch.allclose(cells[0], torch.tensor([0.0, 0.0], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(jhmdb.cells_to_pixels(cells, (48, 80), (8, 8)), pts)


# ----------------------------------------------------------------------------- JHMDB dataset

def test_read_joint_positions(tmp_path):
    _, mat = _write_jhmdb(tmp_path)
    joints = jhmdb.read_joint_positions(mat)
    assert joints.shape == (5, 15, 2)
    raw = scipy.io.loadmat(mat)["pos_img"]
    assert joints[3, 7, 0] == raw[0, 7, 3] - 1 and joints[3, 7, 1] == raw[1, 7, 3] - 1
    bad = tmp_path / "bad.mat"
    scipy.io.savemat(bad, {"other": np.zeros(3)})
    with pytest.raises(ValueError, match="bad.mat.*pos_img"):
        jhmdb.read_joint_positions(bad)


def test_evaluate_jhmdb_tracks_moving_joints(tmp_path):
    root = tmp_path / "jhmdb"
    _write_jhmdb(root, "walk/clip_a", seed=0)
    _write_jhmdb(root, "run/clip_b", seed=3)
    (root / "val.txt").write_text(
        "# videowalk order: mat, frames, with a foreign prefix\n"
        "datasets/jhmdb/joint_positions/walk/clip_a/joint_positions.mat datasets/jhmdb/Rename_Images/walk/clip_a\n"
        "\nrun/clip_b\n")
    out = tmp_path / "out"
    summary = jhmdb.evaluate_jhmdb(PooledPixelEncoder(), root, out, list_file=root / "val.txt", size=(64, 64),
                                   n_context=7, progress=False, mapping="centred")  # the cell-exact fabricated joints
    assert summary["num_videos"] == 2
    assert summary["num_scored"] == 2 * 4 * 15  # frames 1..4 of two videos, all joints visible
    assert summary["PCK@0.1"] == 1.0 and summary["PCK@0.2"] == 1.0
    assert summary["lost_joints"] == 0
    assert set(summary["per_joint"]) == set(jhmdb.JOINT_NAMES)
    saved = json.loads((out / "summary.json").read_text())
    assert saved["PCK@0.1"] == 1.0 and saved["settings"]["size"] == [64, 64]
    with (out / "per-video_results.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["video", "frames", "PCK@0.1", "PCK@0.2"]
    assert [r[0] for r in rows[1:]] == ["walk/clip_a", "run/clip_b"]

    # An encoder that sees nothing (constant features) cannot follow the motion.
    class Blind(PooledPixelEncoder):
        def __call__(self, pixel_values):
            return torch.ones_like(super().__call__(pixel_values))

    blind = jhmdb.evaluate_jhmdb(Blind(), root, tmp_path / "blind", size=(64, 64), n_context=7, progress=False,
                                 mapping="centred")
    assert blind["num_videos"] == 2  # found without a list: every <action>/<video>
    assert blind["PCK@0.2"] < 0.5


def test_jhmdb_lost_joint_is_a_miss_unless_asked(tmp_path):
    root = tmp_path / "jhmdb"
    _write_jhmdb(root, "walk/clip_a", joint0_outside=True)
    kwargs = dict(size=(64, 64), n_context=7, progress=False, mapping="centred")
    miss = jhmdb.evaluate_jhmdb(PooledPixelEncoder(), root, tmp_path / "miss", **kwargs)
    assert miss["lost_joints"] == 4 and miss["num_scored"] == 60
    assert miss["PCK@0.2"] == pytest.approx(56 / 60)
    assert miss["per_joint"]["neck"]["PCK@0.2"] == 0.0
    skip = jhmdb.evaluate_jhmdb(PooledPixelEncoder(), root, tmp_path / "skip", count_lost_as_miss=False, **kwargs)
    assert skip["lost_joints"] == 4 and skip["num_scored"] == 56
    assert skip["PCK@0.1"] == 1.0 and math.isnan(skip["per_joint"]["neck"]["PCK@0.1"])


def test_jhmdb_bad_input(tmp_path):
    root = tmp_path / "jhmdb"
    _write_jhmdb(root, "walk/clip_a")
    (root / "missing.txt").write_text("walk/nothing_here\n")
    with pytest.raises(FileNotFoundError, match="missing.txt, line 1.*nothing_here"):
        jhmdb.list_jhmdb_videos(root, root / "missing.txt")
    (root / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="empty.txt lists no videos"):
        jhmdb.list_jhmdb_videos(root, root / "empty.txt")
    with pytest.raises(FileNotFoundError, match="not_there.txt"):
        jhmdb.list_jhmdb_videos(root, root / "not_there.txt")
    empty_root = tmp_path / "empty_root"
    (empty_root / "Rename_Images").mkdir(parents=True)
    with pytest.raises(ValueError, match="no videos"):
        jhmdb.list_jhmdb_videos(empty_root)
    # Joint file with more frames than the folder.
    root2 = tmp_path / "jhmdb2"
    _write_jhmdb(root2, "walk/clip_a", num_frames=5, mat_frames=6)
    with pytest.raises(ValueError, match=r"joint_positions.mat has 6 frames.*5 frames"):
        jhmdb.evaluate_jhmdb(PooledPixelEncoder(), root2, tmp_path / "o", size=(64, 64), progress=False)


# ----------------------------------------------------------------------------- mIoU


def test_confusion_matrix_and_miou_hand_made():
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 3, 1]])
    conf = vip.confusion_matrix(pred, gt, 4)
    expected = np.zeros((4, 4), dtype=np.int64)
    for g, p in [(0, 0), (0, 1), (1, 1), (1, 1), (2, 2), (2, 0), (1, 1)]:  # 255 ignored
        expected[g, p] += 1
    assert (conf == expected).all()
    mean, per_class = vip.miou(conf)
    # class 0: tp 1, fp 1 (gt 2 -> 0), fn 1 -> 1/3; class 1: tp 3, fp 1 -> 3/4; class 2: 1/2; class 3 never seen: nan
    assert per_class[:3] == pytest.approx([1 / 3, 3 / 4, 1 / 2])
    assert math.isnan(per_class[3])
    assert mean == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert math.isnan(vip.miou(np.zeros((3, 3)))[0])
    with pytest.raises(ValueError, match="differ in size"):
        vip.confusion_matrix(pred[:, :3], gt, 4)
    out_of_range = pred.copy()
    out_of_range[0, 0] = 4
    with pytest.raises(ValueError, match=r"0\.\.3"):
        vip.confusion_matrix(out_of_range, gt, 4)


def test_input_size():
    assert vip.input_size(720, 1280, 880, 16) == (480, 880)  # 495 -> 480
    assert vip.input_size(1280, 720, 880, 14) == (868, 490)  # long side 880 -> 868 on a 14-pixel grid
    assert vip.input_size(100, 100, 880, 16) == (880, 880)


# ----------------------------------------------------------------------------- VIP dataset

def test_evaluate_vip_tracks_moving_parts(tmp_path):
    root = tmp_path / "VIP"
    _write_vip(root, "videos1", seed=0)
    _write_vip(root, "videos2", seed=5)
    (root / "lists").mkdir()
    (root / "lists" / "val_videos.txt").write_text("videos1\nvideos2\n")
    out = tmp_path / "out"
    summary = vip.evaluate_vip(PooledPixelEncoder(), root, out, long_side=64, n_context=10, save_masks=True,
                               progress=False)
    assert summary["mIoU"] == pytest.approx(1.0)
    assert summary["settings"]["input_sizes"] == [[40, 64]]
    per_class = summary["per_class_IoU"]
    assert [per_class[c] for c in ("background", "sun-glasses", "socks", "left-shoe")] == pytest.approx([1.0] * 4)
    assert math.isnan(per_class["hair"])  # absent everywhere: NaN, not counted
    saved = json.loads((out / "summary.json").read_text())
    assert saved["per_class_IoU"]["hair"] is None and saved["mIoU"] == pytest.approx(1.0)
    assert saved["num_frames"] == 8
    mask = np.array(Image.open(out / "videos2" / "000000000026.png"))
    assert mask.shape == (40, 64) and set(np.unique(mask)) <= set(VIP_CLASSES.tolist())
    with (out / "per-video_results.csv").open() as handle:
        assert [r[0] for r in csv.reader(handle)] == ["video", "videos1", "videos2"]
    with (out / "confusion_matrix.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert len(rows) == 21 and rows[0][1] == "background"

    # The CropMAE list format (images folder, annotations folder) with a foreign prefix, and
    # scoring frames 1.. only: a blind encoder scores far lower.
    (root / "pairs.txt").write_text("data/VIP/Images/videos1 data/VIP/Annotations/Category_ids/videos1\n")

    class Blind(PooledPixelEncoder):
        def __call__(self, pixel_values):
            return torch.ones_like(super().__call__(pixel_values))

    blind = vip.evaluate_vip(Blind(), root, tmp_path / "blind", list_file=root / "pairs.txt", long_side=64,
                             n_context=10, include_first_frame=False, progress=False)
    assert blind["num_videos"] == 1 and blind["mIoU"] < 0.6


def test_vip_bad_input(tmp_path):
    root = tmp_path / "VIP"
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        vip.list_vip_videos(root)
    _write_vip(root, "videos1", drop_label=2)
    with pytest.raises(FileNotFoundError, match=r"lists/val_videos.txt"):
        vip.list_vip_videos(root)
    (root / "lists").mkdir()
    (root / "lists" / "val_videos.txt").write_text("videos1\n")
    with pytest.raises(ValueError, match=r"val_videos.txt, line 1.*annotations missing for \['000000000051'\]"):
        vip.list_vip_videos(root)
    (root / "lists" / "val_videos.txt").write_text("videos9\n")
    with pytest.raises(FileNotFoundError, match="videos9"):
        vip.list_vip_videos(root)
    (root / "lists" / "val_videos.txt").write_text("\n")
    with pytest.raises(ValueError, match="lists no videos"):
        vip.list_vip_videos(root)
    root2 = tmp_path / "VIP2"
    _write_vip(root2, "videos1", label_size=(20, 64))
    (root2 / "lists").mkdir()
    (root2 / "lists" / "val_videos.txt").write_text("videos1\n")
    with pytest.raises(ValueError, match=r"000000000026.png is 64x20 but its frame is 64x40"):
        vip.evaluate_vip(PooledPixelEncoder(), root2, tmp_path / "o", long_side=64, progress=False)
