"""Tests for co_settle_hf.data: clips, discovery, pair sampling, augmentation, datasets, bad data."""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
from video_factory import (  # noqa: E402
    encoder_available,
    index_coded_frames,
    moving_pattern_frames,
    read_frame_index,
    write_frame_folder,
    write_video,
)

from co_settle_hf.data import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    BadDataError,
    Clip,
    ClipReadError,
    DatasetClips,
    FrameFolderClip,
    FramePairDataset,
    IterableFramePairDataset,
    PairTransform,
    StreamingClips,
    VideoFileClip,
    check_bad_fraction,
    collate_pairs,
    dataset_clips,
    discover_clips,
    random_resized_crop_params,
    sample_pair_indices,
)
from co_settle_hf.data import frames as frames_module  # noqa: E402
from co_settle_hf.data.transforms import CROP_RULES  # noqa: E402

T, H, W, FPS = 30, 32, 48, 10
FORMATS = [  # (suffix, codec): every container the library promises, each with an encoder PyAV ships
    ("mp4", "mpeg4"),
    ("mp4", "libx264"),
    ("mov", "mpeg4"),
    ("avi", "mpeg4"),
    ("avi", "mjpeg"),
    ("mkv", "libx264"),
    ("webm", "libvpx"),
]


def raw_frames(frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A stand-in transform that returns the decoded frames, to check which frames were read."""
    return frames


def decoded_indices(frames: torch.Tensor, num_frames: int = T) -> list[int]:
    return [read_frame_index(frame, num_frames) for frame in frames]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Index-coded videos in every format, frame folders in Kinetics layout, and bad files."""
    root = tmp_path_factory.mktemp("media")
    coded = index_coded_frames(T, H, W)
    for suffix, codec in FORMATS:
        assert encoder_available(codec), f"PyAV lacks the {codec} encoder"
        write_video(root / "videos" / f"{codec}.{suffix}", coded, fps=FPS, codec=codec, gop_size=10)
    write_video(root / "videos" / "nested" / "deep" / "clip.mp4", coded, fps=FPS, codec="mpeg4", gop_size=10)
    write_frame_folder(root / "kinetics" / "abseiling" / "vid_a", coded[:20], ext="png")
    write_frame_folder(root / "kinetics" / "abseiling" / "vid_b", coded[:12], ext="jpg")
    write_frame_folder(root / "kinetics" / "zumba" / "vid_c", coded[:25], ext="png")
    (root / "kinetics" / "zumba" / "notes.txt").write_text("not a frame")
    bad = root / "bad"
    bad.mkdir()
    (bad / "empty.mp4").write_bytes(b"")
    good_bytes = (root / "videos" / "mpeg4.mp4").read_bytes()
    (bad / "truncated.mp4").write_bytes(good_bytes[: len(good_bytes) // 2])
    (bad / "garbage.mkv").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    (bad / "no_frames").mkdir()
    write_frame_folder(bad / "corrupt_frames", coded[:2], ext="jpg")
    (bad / "corrupt_frames" / "00000.jpg").write_bytes(b"not a jpeg")
    (bad / "corrupt_frames" / "00001.jpg").write_bytes(b"not a jpeg either")
    return root


# ---------------------------------------------------------------- video files


@pytest.mark.parametrize(("suffix", "codec"), FORMATS)
def test_video_reads_requested_frames(media: Path, suffix: str, codec: str) -> None:
    clip = VideoFileClip(media / "videos" / f"{codec}.{suffix}")
    assert isinstance(clip, Clip)
    assert clip.num_frames == T
    assert clip.duration == pytest.approx(T / FPS)
    frames = clip.read([0, 7, 29, 7, 15])
    assert frames.dtype == torch.uint8 and frames.shape == (5, H, W, 3)
    assert decoded_indices(frames) == [0, 7, 29, 7, 15]


def test_video_from_bytes_and_url_match_file(media: Path) -> None:
    path = media / "videos" / "libx264.mkv"
    from_file = VideoFileClip(path).read([3, 21])
    assert torch.equal(VideoFileClip(path.as_uri()).read([3, 21]), from_file)  # URLs open through fsspec
    for source in (path.read_bytes(), io.BytesIO(path.read_bytes())):
        clip = VideoFileClip(source, name="in-memory")
        assert clip.num_frames == T and clip.name == "in-memory"
        assert torch.equal(clip.read([3, 21]), from_file)


def test_video_sample_fps_spaces_indices_in_time(media: Path) -> None:
    clip = VideoFileClip(media / "videos" / "mpeg4.mp4", sample_fps=2)
    assert clip.num_frames == 6  # 3 s at 2 fps
    assert decoded_indices(clip.read(range(6))) == [0, 5, 10, 15, 20, 25]


def test_seek_decodes_only_from_the_previous_keyframe(tmp_path: Path) -> None:
    coded = index_coded_frames(60, H, W)
    seekable = VideoFileClip(write_video(tmp_path / "gop10.mp4", coded, fps=FPS, codec="mpeg4", gop_size=10))
    assert decoded_indices(seekable.read([55]), 60) == [55]
    assert seekable.decoded_frames <= 10  # keyframe 50 .. frame 55, not the 56 frames from the start
    seekable.decoded_frames = 0
    assert decoded_indices(seekable.read([48, 3]), 60) == [48, 3]
    assert seekable.decoded_frames <= 20
    # The counter is real: with one keyframe the same request has to decode from frame 0.
    one_gop = VideoFileClip(write_video(tmp_path / "gop60.mp4", coded, fps=FPS, codec="mpeg4", gop_size=60))
    assert decoded_indices(one_gop.read([55]), 60) == [55]
    assert one_gop.decoded_frames >= 56


class _LateFirstSeek:
    """A container whose first seek before decoding lands two keyframes late, as an inexact demuxer might."""

    def __init__(self, container, ticks_late: int) -> None:  # noqa: ANN001 (a PyAV container)
        self.container, self.ticks_late, self.decoding = container, ticks_late, False

    def seek(self, offset: int, **kwargs) -> None:  # noqa: ANN003
        self.last_seek = (offset, kwargs)
        self.container.seek(offset, **kwargs)

    def demux(self, *args):  # noqa: ANN002, ANN201 (keyframe look-ups are exact)
        return self.container.demux(*args)

    def decode(self, *args):  # noqa: ANN002, ANN201
        if not self.decoding:
            self.decoding = True
            offset, kwargs = self.last_seek
            self.container.seek(offset + self.ticks_late, **kwargs)
        return self.container.decode(*args)


def test_video_recovers_when_seek_lands_after_the_target(media: Path) -> None:
    class LateSeekClip(VideoFileClip):
        @contextlib.contextmanager
        def _opened(self):  # noqa: ANN202
            with super()._opened() as (container, stream):
                ticks_per_frame = round(1 / (FPS * stream.time_base))
                yield _LateFirstSeek(container, 20 * ticks_per_frame), stream

    clip = LateSeekClip(media / "videos" / "mpeg4.mp4")
    assert decoded_indices(clip.read([4])) == [4]
    assert clip.decoded_frames == 1 + 5  # frame 20 after the late seek, then frames 0..4 from the start


def test_video_read_rejects_out_of_range_index(media: Path) -> None:
    clip = VideoFileClip(media / "videos" / "mpeg4.mp4")
    with pytest.raises(IndexError, match="mpeg4.mp4"):
        clip.read([T])


@pytest.mark.parametrize("name", ["empty.mp4", "truncated.mp4", "garbage.mkv"])
def test_unreadable_video_raises_clip_error_naming_file(media: Path, name: str) -> None:
    with pytest.raises(ClipReadError, match=name):
        VideoFileClip(media / "bad" / name).read([0])


def test_video_cut_short_after_header_raises_on_missing_frames(tmp_path: Path) -> None:
    path = write_video(tmp_path / "cut.webm", index_coded_frames(T, H, W), fps=FPS, codec="libvpx")
    data = path.read_bytes()
    cut = tmp_path / "cut_half.webm"
    cut.write_bytes(data[: len(data) // 2])
    clip = VideoFileClip(cut)
    assert clip.num_frames == T  # the header still promises every frame
    assert decoded_indices(clip.read([0])) == [0]
    with pytest.raises(ClipReadError, match="cut_half.webm.*truncated"):
        clip.read([T - 1])


# ---------------------------------------------------------------- frame folders


def test_frame_folder_natural_order_and_only_requested_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    coded = index_coded_frames(12, H, W)
    folder = write_frame_folder(tmp_path / "clip", coded, names=[f"img_{i + 1}.png" for i in range(12)])
    clip = FrameFolderClip(folder)
    assert clip.num_frames == 12 and clip.files[:3] == ["img_1.png", "img_2.png", "img_3.png"]
    opened: list[str] = []
    real_open = frames_module.Image.open
    monkeypatch.setattr(frames_module.Image, "open", lambda path, *a, **k: opened.append(Path(path).name) or real_open(path, *a, **k))
    frames = clip.read([10, 1, 10])
    assert decoded_indices(frames, 12) == [10, 1, 10]
    assert sorted(opened) == ["img_11.png", "img_2.png"]


def test_frame_folder_errors(media: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing_folder"):
        FrameFolderClip(tmp_path / "missing_folder")
    assert FrameFolderClip(media / "bad" / "no_frames").num_frames == 0
    with pytest.raises(ClipReadError, match="00001.jpg"):
        FrameFolderClip(media / "bad" / "corrupt_frames").read([1])


# ---------------------------------------------------------------- discovery


def test_discover_kinetics_frame_folders(media: Path) -> None:
    clips = discover_clips(media / "kinetics")
    assert [Path(c.name).relative_to(media / "kinetics").as_posix() for c in clips] == [
        "abseiling/vid_a", "abseiling/vid_b", "zumba/vid_c"]
    assert all(isinstance(c, FrameFolderClip) for c in clips)
    assert [c.num_frames for c in clips] == [20, 12, 25]
    assert decoded_indices(clips[2].read([24])) == [24]


def test_discover_video_folder_recursively_and_single_file(media: Path) -> None:
    clips = discover_clips(media / "videos", sample_fps=2)
    names = {Path(c.name).relative_to(media / "videos").as_posix() for c in clips}
    assert names == {f"{codec}.{suffix}" for suffix, codec in FORMATS} | {"nested/deep/clip.mp4"}
    assert all(isinstance(c, VideoFileClip) and c.sample_fps == 2 for c in clips)
    single = discover_clips(media / "videos" / "nested" / "deep" / "clip.mp4")
    assert len(single) == 1 and single[0].num_frames == T


def test_discover_list_file(media: Path, tmp_path: Path) -> None:
    listing = tmp_path / "train.txt"
    rel = os.path.relpath(media / "kinetics" / "zumba" / "vid_c", tmp_path)
    listing.write_text(
        f"# training clips\n\n{media / 'videos' / 'mpeg4.avi'}\n  {rel}  \n# the end\n{media / 'bad' / 'no_frames'}\n"
    )
    clips = discover_clips(listing)
    assert [type(c).__name__ for c in clips] == ["VideoFileClip", "FrameFolderClip", "FrameFolderClip"]
    assert clips[1].num_frames == 25 and clips[2].num_frames == 0
    listing.write_text(f"{media / 'videos' / 'mpeg4.avi'}\nmissing/clip.mp4\n")
    with pytest.raises(FileNotFoundError, match=r"train.txt, line 2.*missing/clip.mp4"):
        discover_clips(listing)


def test_discover_errors_name_the_path(tmp_path: Path, media: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        discover_clips(tmp_path / "nowhere")
    (tmp_path / "empty_dir" / "sub").mkdir(parents=True)
    with pytest.raises(ValueError, match="empty_dir"):
        discover_clips(tmp_path / "empty_dir")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="empty.txt"):
        discover_clips(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="single image"):
        discover_clips(media / "kinetics" / "zumba" / "vid_c" / "00000.png")


# ---------------------------------------------------------------- pair sampling


def test_pair_gap_and_bounds_over_many_draws() -> None:
    generator = torch.Generator().manual_seed(0)
    draws = [sample_pair_indices(20, 0.15, generator) for _ in range(2000)]
    assert all(t2 - t1 == 3 for t1, t2 in draws)  # int(0.15 * 20)
    assert {t1 for t1, _ in draws} == set(range(1, 17))  # uniform over [1, n - gap)
    counts = np.bincount([t1 for t1, _ in draws])[1:]
    assert counts.min() > 0.6 * counts.mean()
    zero_based = {sample_pair_indices(20, 0.15, generator, skip_first=False)[0] for _ in range(2000)}
    assert zero_based == set(range(0, 17))


def test_pair_edge_cases() -> None:
    generator = torch.Generator().manual_seed(1)
    assert sample_pair_indices(1, 0.15, generator) == (0, 0)
    pairs_n2 = {sample_pair_indices(2, 0.15, generator) for _ in range(200)}
    assert pairs_n2 == {(0, 0), (1, 1)}  # gap 0: the same random frame twice
    assert all(a == b for a, b in (sample_pair_indices(6, 0.15, generator) for _ in range(100)))
    assert {sample_pair_indices(7, 0.15, generator) for _ in range(300)} == {(t, t + 1) for t in range(1, 6)}
    assert {sample_pair_indices(2, 0.5, generator) for _ in range(20)} == {(0, 1)}  # [1, 1) empty -> [0, 1)
    with pytest.raises(ValueError, match="num_frames"):
        sample_pair_indices(0)
    with pytest.raises(ValueError, match="delta"):
        sample_pair_indices(10, 1.0)


def test_pair_sampling_reproducible() -> None:
    first = [sample_pair_indices(50, 0.15, torch.Generator().manual_seed(7)) for _ in range(3)]
    assert first[0] == first[1] == first[2]


# ---------------------------------------------------------------- augmentation


@pytest.mark.parametrize(("height", "width"), [(224, 224), (240, 320)])
def test_random_resized_crop_params_within_bounds(height: int, width: int) -> None:
    generator = torch.Generator().manual_seed(0)
    scale, ratio = (0.5, 1.0), (3 / 4, 4 / 3)
    areas = []
    for _ in range(300):
        top, left, h, w = random_resized_crop_params(height, width, scale, ratio, generator)
        assert 0 <= top <= height - h and 0 <= left <= width - w
        # round() moves each side by at most half a pixel
        slack = 0.5 * (h + w) + 1
        assert scale[0] * height * width - slack <= h * w <= scale[1] * height * width + slack
        assert ratio[0] * (1 - 1 / h - 1 / w) <= w / h <= ratio[1] * (1 + 1 / h + 1 / w)
        areas.append(h * w / (height * width))
    assert min(areas) < 0.55 and max(areas) > 0.95  # the whole scale range is used


def test_random_resized_crop_params_on_a_tall_image() -> None:
    generator = torch.Generator().manual_seed(1)
    for _ in range(200):
        top, left, h, w = random_resized_crop_params(100, 30, generator=generator)
        assert 0 <= top <= 100 - h and 0 <= left <= 30 - w and 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05


def test_random_resized_crop_fallback_is_centred() -> None:
    # Areas above the image make every try fail, leaving the fallback.
    assert random_resized_crop_params(10, 30, scale=(2.0, 3.0)) == (0, 8, 10, 13)  # too wide: clamp to 4/3
    assert random_resized_crop_params(30, 10, scale=(2.0, 3.0)) == (8, 0, 13, 10)  # too tall: clamp to 3/4
    assert random_resized_crop_params(20, 20, scale=(2.0, 3.0)) == (0, 0, 20, 20)


@pytest.mark.parametrize(("rule", "mean_area", "full_share"), [("torchvision", 0.69, 0.02), ("released", 0.74, 0.27)])
def test_crop_rules_match_the_measured_statistics(rule: str, mean_area: float, full_share: float) -> None:
    # SPEC section 9, over 50k draws: the released single draw clipped to the image gives larger and
    # far more often full-width or full-height crops than torchvision's 10 tries.
    generator, draws = torch.Generator().manual_seed(0), 20_000
    boxes = [CROP_RULES[rule](224, 224, (0.5, 1.0), (3 / 4, 4 / 3), generator) for _ in range(draws)]
    assert all(0 <= top <= 224 - h and 0 <= left <= 224 - w for top, left, h, w in boxes)
    assert sum(h * w for _, _, h, w in boxes) / (draws * 224**2) == pytest.approx(mean_area, abs=0.01)
    assert sum(h == 224 or w == 224 for _, _, h, w in boxes) / draws == pytest.approx(full_share, abs=0.015)


def test_transform_resize_paths() -> None:
    checker = torch.from_numpy(np.kron((np.indices((6, 12)).sum(0) % 2) * 255, np.ones((10, 10))).astype(np.uint8))
    frames = checker[None, :, :, None].expand(1, 60, 120, 3).contiguous()  # sharp edges: bicubic overshoots
    whole = dict(size=32, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, mean=(0, 0, 0), std=(1, 1, 1))
    images = frames.permute(0, 3, 1, 2)
    # short_side: the short side to 256/224 of the size (37) bilinear, then bicubic to the square.
    short = F.interpolate(images, size=(37, 74), mode="bilinear", antialias=True)
    expected = F.interpolate(short, size=(32, 32), mode="bicubic", antialias=True).float() / 255
    torch.testing.assert_close(PairTransform(**whole, resize="short_side")(frames), expected, atol=1e-6, rtol=0)
    # released: bilinear to the square in floats (the full-image crop is then not resized).
    expected = F.interpolate(images.float(), size=(32, 32), mode="bilinear", antialias=True) / 255
    torch.testing.assert_close(PairTransform(**whole, resize="released")(frames), expected, atol=1e-6, rtol=0)
    # The crop runs on floats without clamping under `released`, on uint8 (clamped to [0, 1]) by default.
    cropped = {**whole, "scale": (0.3, 0.3)}
    generator = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    default, released = (PairTransform(**cropped, resize=path)(frames, generator=generator()) for path in ("antialiased", "released"))
    assert 0 <= default.min() and default.max() <= 1 and (released.min() < -0.01 or released.max() > 1.01)
    with pytest.raises(ValueError, match="resize must be one of antialiased, released, short_side; got 'nearest'"):
        PairTransform(resize="nearest")
    with pytest.raises(ValueError, match="crop_rule must be one of torchvision, released; got 'byol'"):
        PairTransform(crop_rule="byol")


def test_transform_shape_and_identical_frames() -> None:
    frame = torch.from_numpy(moving_pattern_frames(1, 60, 80, seed=3))
    out = PairTransform(size=32)(frame.repeat(2, 1, 1, 1), generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and out.shape == (2, 3, 32, 32)
    assert torch.equal(out[0], out[1])


def test_transform_shares_crop_and_flip_between_frames() -> None:
    pattern = torch.from_numpy(moving_pattern_frames(2, 60, 80, seed=4))
    inverted = torch.stack([pattern[0], 255 - pattern[0]])
    transform = PairTransform(size=40, mean=(0, 0, 0), std=(1, 1, 1))
    for seed in range(20):
        out = transform(inverted, generator=torch.Generator().manual_seed(seed))
        # Resampling is linear with weights summing to 1, so only a shared crop and flip keep x and 1 - x
        # paired (up to the 8-bit rounding of the two resizes).
        torch.testing.assert_close(out[1], 1 - out[0], atol=2.5 / 255, rtol=0)
        # Each frame alone with the same random stream gets the same output as in the pair.
        alone = transform(pattern[1:], generator=torch.Generator().manual_seed(seed))
        paired = transform(pattern, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(paired[1:], alone)
    outputs = {transform(pattern, generator=torch.Generator().manual_seed(s))[0].sum().item() for s in range(5)}
    assert len(outputs) == 5  # the crop really is random


def test_transform_flip_mirrors() -> None:
    pattern = torch.from_numpy(moving_pattern_frames(2, 50, 50, seed=5))
    never = PairTransform(size=24, flip_p=0.0)(pattern, generator=torch.Generator().manual_seed(9))
    always = PairTransform(size=24, flip_p=1.0)(pattern, generator=torch.Generator().manual_seed(9))
    assert torch.equal(always, never.flip(-1))
    assert not torch.equal(always, never)


def test_transform_normalisation() -> None:
    gray = torch.full((2, 30, 40, 3), 200, dtype=torch.uint8)
    out = PairTransform(size=16)(gray, generator=torch.Generator().manual_seed(0))
    expected = (200 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(out, expected.view(1, 3, 1, 1).expand(2, 3, 16, 16), atol=1e-5, rtol=0)
    custom = PairTransform(size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.125))(gray)
    torch.testing.assert_close(custom[0, :, 0, 0], (200 / 255 - 0.5) / torch.tensor([0.5, 0.25, 0.125]))


def test_transform_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        PairTransform()(torch.zeros(2, 8, 8, 3))
    with pytest.raises(ValueError, match="scale"):
        PairTransform(scale=(0.0, 1.0))


# ---------------------------------------------------------------- datasets


def test_pair_dataset_reads_gap_pairs_from_videos_and_folders(media: Path) -> None:
    clips = discover_clips(media / "kinetics") + [VideoFileClip(media / "videos" / "libx264.mp4")]
    dataset = FramePairDataset(clips, raw_frames, delta=0.15, seed=0)
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for index, clip in enumerate(clips):
            sample = dataset[index]
            t1, t2 = decoded_indices(sample["frames"])
            assert sample["index"] == index
            assert t2 - t1 == int(0.15 * clip.num_frames) and 1 <= t1 and t2 < clip.num_frames


def test_pair_dataset_epochs_are_reproducible(media: Path) -> None:
    clips = discover_clips(media / "kinetics")
    make = lambda seed: FramePairDataset(clips, PairTransform(size=16), seed=seed)  # noqa: E731
    first, again, other_seed = make(0), make(0), make(1)
    epoch0 = [first[i]["frames"] for i in range(3)]
    assert all(torch.equal(a, again[i]["frames"]) for i, a in enumerate(epoch0))
    assert not all(torch.equal(a, other_seed[i]["frames"]) for i, a in enumerate(epoch0))
    first.set_epoch(1)
    assert not all(torch.equal(a, first[i]["frames"]) for i, a in enumerate(epoch0))
    first.set_epoch(0)
    assert all(torch.equal(a, first[i]["frames"]) for i, a in enumerate(epoch0))


def test_set_epoch_reaches_persistent_workers(media: Path) -> None:
    clips = discover_clips(media / "kinetics")
    dataset = FramePairDataset(clips, PairTransform(size=16), seed=3)
    loader = DataLoader(dataset, batch_size=3, num_workers=1, persistent_workers=True, collate_fn=collate_pairs)
    for epoch in range(2):
        dataset.set_epoch(epoch)
        (frames, num_bad), = list(loader)
        expected = torch.stack([dataset[i]["frames"] for i in range(3)])
        assert num_bad == 0 and torch.equal(frames, expected)
    epoch0 = FramePairDataset(clips, PairTransform(size=16), seed=3)
    assert not torch.equal(frames, torch.stack([epoch0[i]["frames"] for i in range(3)]))


def test_bad_samples_return_none_warn_once_and_count(media: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = media / "bad"
    clips = [
        VideoFileClip(media / "videos" / "mpeg4.mp4"),
        VideoFileClip(bad / "empty.mp4"),
        VideoFileClip(bad / "truncated.mp4"),
        VideoFileClip(bad / "garbage.mkv"),
        FrameFolderClip(bad / "no_frames"),
        FrameFolderClip(bad / "corrupt_frames"),
    ]
    dataset = FramePairDataset(clips, PairTransform(size=16))
    with caplog.at_level(logging.WARNING, logger="co_settle_hf.data.pairs"):
        batch = [dataset[i] for i in range(len(clips))]
        for i in range(1, len(clips)):
            assert batch[i] is None
        assert batch[0] is not None
        assert dataset.num_bad == 5
        for name in ("empty.mp4", "truncated.mp4", "garbage.mkv", "no_frames", "corrupt_frames"):
            assert sum(name in record.getMessage() for record in caplog.records) == 1, name
        dataset[1]  # the same bad clip again: counted, not warned again
    assert dataset.num_bad == 6
    assert sum("empty.mp4" in record.getMessage() for record in caplog.records) == 1
    frames, num_bad = collate_pairs(batch)
    assert frames.shape == (1, 2, 3, 16, 16) and num_bad == 5
    assert collate_pairs([None, None]) == (None, 2)


def test_check_bad_fraction() -> None:
    check_bad_fraction(5, 100)
    check_bad_fraction(0, 1)
    with pytest.raises(BadDataError, match=r"6 of 100 samples \(6.0%\).*5% allowed"):
        check_bad_fraction(6, 100)
    check_bad_fraction(6, 100, limit=0.1)
    with pytest.raises(ValueError, match="num_total"):
        check_bad_fraction(0, 0)
    with pytest.raises(ValueError, match="num_bad"):
        check_bad_fraction(5, 4)


def test_iterable_dataset_splits_stream_across_workers(media: Path) -> None:
    clips = discover_clips(media / "kinetics") + discover_clips(media / "videos")[:3] + [VideoFileClip(media / "bad" / "empty.mp4")]
    dataset = IterableFramePairDataset(clips, PairTransform(size=16), seed=5)
    dataset.set_epoch(2)
    single = list(dataset)
    assert [s["index"] for s in single[:-1]] == list(range(len(clips) - 1)) and single[-1] is None
    loader = DataLoader(dataset, batch_size=None, num_workers=2)
    parallel = {s["index"]: s["frames"] for s in loader if s is not None}
    assert sorted(parallel) == list(range(len(clips) - 1))
    assert all(torch.equal(parallel[s["index"]], s["frames"]) for s in single[:-1])


# ---------------------------------------------------------------- Hugging Face datasets


def test_dataset_clips_from_saved_paths_and_bytes(media: Path, tmp_path: Path) -> None:
    videos = [media / "videos" / "mpeg4.mp4", media / "videos" / "libvpx.webm"]
    by_path = tmp_path / "by_path"
    datasets.Dataset.from_dict({"video": [str(v) for v in videos], "label": [0, 1]}).save_to_disk(str(by_path))
    clips = dataset_clips(by_path)
    assert isinstance(clips, DatasetClips) and len(clips) == 2
    assert decoded_indices(clips[1].read([4, 20])) == [4, 20]

    by_bytes = tmp_path / "by_bytes"
    split = datasets.Dataset.from_dict({"clip": [v.read_bytes() for v in videos] + [b""]})
    datasets.DatasetDict({"validation": split}).save_to_disk(str(by_bytes))
    clips = dataset_clips(by_bytes, split="validation", video_column="clip")
    assert decoded_indices(clips[0].read([9])) == [9]
    dataset = FramePairDataset(clips, raw_frames)
    assert dataset[2] is None and dataset.num_bad == 1  # the empty row is bad data, not a crash
    with pytest.raises(ValueError, match="'train'"):
        dataset_clips(by_bytes)
    with pytest.raises(ValueError, match="'video'.*clip"):
        dataset_clips(by_bytes, split="validation")


def test_dataset_clips_video_feature_is_not_decoded_by_datasets(
    media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    relative = datasets.Dataset.from_dict({"video": ["clips/a.mp4"]}).cast_column("video", datasets.Video())
    (tmp_path / "saved" / "clips").mkdir(parents=True)
    (tmp_path / "saved" / "clips" / "a.mp4").write_bytes((media / "videos" / "mpeg4.mp4").read_bytes())
    with monkeypatch.context() as patch:
        patch.chdir(tmp_path / "saved")  # save_to_disk sizes the file through its path
        relative.save_to_disk(str(tmp_path / "saved"))
    clips = dataset_clips(tmp_path / "saved")
    assert decoded_indices(clips[0].read([12])) == [12]  # relative path resolved against the dataset folder
    assert clips.dataset.features["video"].decode is False
    streamed = list(dataset_clips(tmp_path / "saved", streaming=True))
    assert decoded_indices(streamed[0].read([2])) == [2]
    with pytest.raises(ValueError, match="config 'x'"):
        dataset_clips(tmp_path / "saved", config="x")


def test_dataset_clips_streaming(media: Path, tmp_path: Path) -> None:
    videos = [media / "videos" / "mpeg4.avi", media / "videos" / "libx264.mkv", media / "bad" / "garbage.mkv"]
    datasets.Dataset.from_dict({"video": [str(v) for v in videos]}).save_to_disk(str(tmp_path / "ds"))
    stream = dataset_clips(tmp_path / "ds", streaming=True)
    assert isinstance(stream, StreamingClips)
    assert [Path(c.name).name for c in stream] == ["mpeg4.avi", "libx264.mkv", "garbage.mkv"]
    pairs = IterableFramePairDataset(stream, raw_frames)
    pairs.set_epoch(1)
    frames, num_bad = collate_pairs(list(pairs))
    assert num_bad == 1 and frames.shape[:2] == (2, 2)
    assert all(t2 - t1 == int(0.15 * T) for t1, t2 in (decoded_indices(f) for f in frames))


def test_dataset_clips_video_folder_via_load_dataset(media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    folder = tmp_path / "videofolder" / "train"
    folder.mkdir(parents=True)
    (folder / "a.mp4").write_bytes((media / "videos" / "mpeg4.mp4").read_bytes())
    clips = dataset_clips(tmp_path / "videofolder")
    assert len(clips) == 1 and decoded_indices(clips[0].read([17])) == [17]


def test_dataset_clips_missing_path_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no_such_dataset"):
        dataset_clips(str(tmp_path / "no_such_dataset"))


def test_moving_pattern_factory_moves_one_pixel_per_frame() -> None:
    frames = moving_pattern_frames(4, 16, 20, seed=2)
    assert frames.shape == (4, 16, 20, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames[1][:-1, :-1], frames[0][1:, 1:])
    assert not np.array_equal(frames[0], frames[1]) and math.isfinite(frames.std())


def test_frames_behind_one_keyframe_are_decoded_in_one_pass(media: Path) -> None:
    clip = VideoFileClip(media / "videos" / "mpeg4.mp4")  # a keyframe every 10 frames
    assert decoded_indices(clip.read([7, 3])) == [7, 3]
    assert clip.decoded_frames == 8  # frames 0..7 once, not 0..3 and then 0..7 again
    clip.decoded_frames = 0
    assert decoded_indices(clip.read([3, 24])) == [3, 24]
    assert clip.decoded_frames == 4 + 5  # two keyframes: 0..3, then 20..24
