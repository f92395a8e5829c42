"""Pictures: files exist, have the promised size and content, videos decode; bad input is named."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from PIL import Image

from co_settle_hf.evaluation import plots


def _video(num_frames: int = 5, height: int = 30, width: int = 41):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)
    masks = np.zeros((num_frames, height, width), dtype=np.int64)
    masks[:, 5:20, 10:30] = 1
    masks[:, 22:, :8] = 2
    return frames, masks


def test_overlay_palette_is_colour_blind_safe():
    pal = plots.safe_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal[:3].tolist() == [[0, 0, 0], [230, 159, 0], [86, 180, 233]]  # Okabe-Ito orange, sky blue
    assert pal[8].tolist() == pal[1].tolist()  # seven colours, repeated
    assert len({tuple(c) for c in pal[1:8].tolist()}) == 7


def test_overlay_outlines_labels_and_keeps_background():
    frames, masks = _video()
    out = plots.overlay_masks(frames, masks)
    assert out.shape == frames.shape and out.dtype == np.uint8
    outside = masks == 0
    outside[:, 4, 9:31] = outside[:, 20, 9:31] = outside[:, 4:21, 9] = outside[:, 4:21, 30] = False  # ring
    outside[:, 21, :9] = outside[:, 21:, 8] = False
    assert (out[outside] == frames[outside]).all()
    # Inside object 1, away from its outline: 60 % frame, 40 % palette colour.
    expected = np.round(0.6 * frames[0, 10, 15].astype(float) + 0.4 * np.array([230, 159, 0])).astype(np.uint8)
    assert out[0, 10, 15].tolist() == expected.tolist()
    # Its outline: two pixels of full colour inside the edge, one black pixel outside it.
    assert out[0, 10, 10].tolist() == out[0, 10, 11].tolist() == [230, 159, 0]
    assert out[0, 10, 12].tolist() != [230, 159, 0] and out[0, 10, 9].tolist() == [0, 0, 0]
    # On a background of the label's own colour the outline still shows (the black ring).
    same = np.broadcast_to(np.array([230, 159, 0], dtype=np.uint8), frames.shape).copy()
    assert plots.overlay_masks(same, masks)[0, 10, 9].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="masks must be"):
        plots.overlay_masks(frames, masks[:, :-1])
    with pytest.raises(ValueError, match="palette"):
        plots.overlay_masks(frames, masks, palette=np.zeros((2, 3), dtype=np.uint8))


def _sheet_row(name: str, scores: dict[str, float]) -> plots.SheetRow:
    frames, masks = _video(num_frames=2)
    return plots.SheetRow(name, [1, 4], frames, masks, {m: masks[:, ::-1] for m in scores}, scores)


def test_comparison_sheet_png(tmp_path):
    rows = [_sheet_row("dog", {"base": 0.5, "adapted": 0.7}), _sheet_row("cat", {"base": 0.4, "adapted": 0.3})]
    path = plots.comparison_sheet(rows, tmp_path / "sub" / "sheet.png", "DAVIS: base vs adapted")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width == 6 * 240  # 2 frames x (truth + 2 models), 240 px tiles
        two_rows = image.height
    with Image.open(plots.comparison_sheet(rows[:1], tmp_path / "one.png", "t")) as image:
        assert image.height < two_rows
    with pytest.raises(ValueError, match="rows is empty"):
        plots.comparison_sheet([], tmp_path / "x.png", "t")


def test_sequences_ordered_by_change_then_worst_first():
    from co_settle_hf.evaluation.davis_report import order_sequences

    scores = {"a": {"s1": 0.5, "s2": 0.5, "s3": 0.5, "s4": 0.9}, "b": {"s1": 0.52, "s2": 0.2, "s3": 0.9}}
    assert order_sequences(scores) == ["s3", "s2", "s1"]  # |change| 0.4 (gain), 0.3 (loss), 0.02; s4 unscored by b
    assert order_sequences({"a": scores["a"]}) == ["s1", "s2", "s3", "s4"]


def test_side_by_side_video_is_labelled(tmp_path):
    frames, masks = _video(num_frames=3, height=30, width=40)
    path = plots.write_side_by_side_video(frames, {"ground truth": masks, "model J&F 0.5": masks[:, ::-1]},
                                          tmp_path / "pair.mp4")
    with av.open(str(path)) as container:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    scale = -(-plots.MIN_PANEL_WIDTH // 40)
    assert decoded.shape == (3, 18 + 30 * scale, 2 * 40 * scale, 3)
    band = decoded[0, 2:16]
    assert band.max() > 150 and band.mean() < 60  # white text on black, above each panel
    assert band[:, :40 * scale].max() > 150 and band[:, 40 * scale:].max() > 150
    with pytest.raises(ValueError, match="panels is empty"):
        plots.write_side_by_side_video(frames, {}, tmp_path / "none.mp4")


@pytest.mark.parametrize("without_x264", [False, True])
def test_overlay_video_decodes(tmp_path, monkeypatch, without_x264):
    if without_x264:  # the MPEG-4 fallback
        monkeypatch.setattr(av, "codecs_available", set(av.codecs_available) - {"libx264"})
    frames, masks = _video(num_frames=7, height=31, width=41)  # odd sizes get padded to even
    path = plots.write_overlay_video(frames, masks, tmp_path / "overlay.mp4", fps=5)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == ("mpeg4" if without_x264 else "h264")
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 7
    assert decoded[0].shape == (32, 42, 3)
    # Lossy, but the picture is the overlay: a large uniform region keeps its colour closely.
    flat_frames = np.full_like(frames, 200)
    path = plots.write_overlay_video(flat_frames, masks, tmp_path / "flat.mp4")
    with av.open(str(path)) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    want = plots.overlay_masks(flat_frames, masks)[0, 10:18, 14:26].astype(int)
    assert np.abs(first[10:18, 14:26].astype(int) - want).mean() < 8


def test_pca_rgb():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(6, 8, 16)) * 0.1
    feats[:, :4] += rng.normal(size=16) * 3  # left half one "object", right half another
    rgb = plots.pca_rgb(feats)
    assert rgb.shape == (6, 8, 3) and rgb.dtype == np.uint8
    # The first component separates the halves: red is far apart between them.
    assert abs(rgb[:, :4, 0].astype(int).mean() - rgb[:, 4:, 0].astype(int).mean()) > 150
    # Offsets and positive scales do not change the picture.
    assert (plots.pca_rgb(torch.tensor(feats * 5 + 2)) == rgb).all()
    with pytest.raises(ValueError, match=r"\(h, w, D\)"):
        plots.pca_rgb(feats[0])


def test_feature_pca_figure(tmp_path):
    frames, _ = _video(height=60, width=80)
    rng = np.random.default_rng(2)
    path = plots.feature_pca_figure(frames[0], rng.normal(size=(6, 8, 12)), rng.normal(size=(6, 8, 5)),
                                    tmp_path / "pca.png")
    with Image.open(path) as image:
        assert image.size[0] == 1200  # three 4-inch panels at 100 dpi
    with pytest.raises(ValueError, match="frame must be uint8"):
        plots.feature_pca_figure(frames[0].astype(float), np.zeros((2, 2, 3)), np.zeros((2, 2, 3)), tmp_path / "x.png")


def test_tradeoff_scatter(tmp_path):
    points = {"DINO": (0.12, 0.40), "DINO + Co-Settle": (0.08, 0.41), "MAE": (0.2, 0.3), "MAE + Co-Settle": (0.1, 0.33)}
    path = plots.tradeoff_scatter(points, [("DINO", "DINO + Co-Settle"), ("MAE", "MAE + Co-Settle")],
                                  tmp_path / "tradeoff.png")
    with Image.open(path) as image:
        assert image.size == (700, 500)
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
    # The arrows are drawn in red (tab:red = 214, 39, 40).
    assert (np.abs(pixels - [214, 39, 40]).sum(axis=1) < 30).sum() > 100
    single = plots.tradeoff_scatter({"only": (0.1, 0.2)}, [], tmp_path / "single.png")
    assert single.is_file()
    with pytest.raises(ValueError, match="'missing'"):
        plots.tradeoff_scatter(points, [("DINO", "missing")], tmp_path / "bad.png")
