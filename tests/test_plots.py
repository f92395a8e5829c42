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


def test_overlay_palette_is_the_davis_one():
    pal = plots.davis_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    assert pal[255].tolist() == [224, 224, 192]


def test_overlay_blends_labels_and_keeps_background():
    frames, masks = _video()
    out = plots.overlay_masks(frames, masks)
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert (out[masks == 0] == frames[masks == 0]).all()
    # Inside object 1 (away from its outline): half frame, half palette colour.
    expected = np.round(0.5 * frames[0, 10, 15].astype(float) + 0.5 * np.array([128, 0, 0])).astype(np.uint8)
    assert out[0, 10, 15].tolist() == expected.tolist()
    # Its outline is drawn in full colour.
    assert out[0, 10, 10].tolist() == [128, 0, 0]
    with pytest.raises(ValueError, match="masks must be"):
        plots.overlay_masks(frames, masks[:, :-1])
    with pytest.raises(ValueError, match="palette"):
        plots.overlay_masks(frames, masks, palette=np.zeros((2, 3), dtype=np.uint8))


def test_contact_sheet_png(tmp_path):
    frames, masks = _video(num_frames=12)
    path = plots.contact_sheet(torch.from_numpy(frames), torch.from_numpy(masks), tmp_path / "sub" / "sheet.png")
    assert path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] == 4 * 320  # 4 columns of 3.2 in at 100 dpi
        two_rows = image.size[1]
    small = plots.contact_sheet(frames[:3], masks[:3], tmp_path / "small.png")
    with Image.open(small) as image:
        assert image.size[0] == 3 * 320 and image.size[1] < two_rows  # one row of three panels
    with pytest.raises(ValueError, match="max_frames"):
        plots.contact_sheet(frames, masks, tmp_path / "x.png", max_frames=0)


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
