"""What the trainer tests share: a tiny ViT, six small videos and frame folders, a run helper."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_backbones import save_backbone
from video_factory import moving_pattern_frames, write_frame_folder, write_video

from co_settle_hf.training.trainer import main as train

FAST = ["--image-size", "64", "--learning-rate", "1e-3", "--per-device-train-batch-size", "2", "--cpu", "--logging-steps", "1"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer")
    save_backbone("vit", root / "vit")
    for index in range(6):
        frames = moving_pattern_frames(16, 64, 80, seed=index)
        write_video(root / "videos" / f"class{index % 2}" / f"clip{index}.mp4", frames)
        write_frame_folder(root / "frames" / f"class{index % 2}" / f"video{index}", frames)
    return root


def good_clips_and_one_broken(root: Path, good: int) -> Path:
    """`good` readable frame folders and one, `video_broken`, whose only frame is not an image."""
    for index in range(good):
        write_frame_folder(root / f"video{index:02d}", moving_pattern_frames(4, 64, 64, seed=index))
    (root / "video_broken").mkdir()
    (root / "video_broken" / "00000.jpg").write_bytes(b"not a jpeg")
    return root


def train_argv(workspace: Path, output: Path, *extra: str, source=("--train-dir",), steps: int = 4) -> list[str]:
    data = list(source) if len(source) > 1 else [source[0], str(workspace / "videos")]
    limit = ["--max-train-steps", str(steps)] if steps else []
    return ["--backbone", str(workspace / "vit"), *data, "--output-dir", str(output), *limit, *FAST, *extra]


def run(workspace: Path, output: Path, *extra: str, source=("--train-dir",), steps: int = 4) -> Path:
    return train(train_argv(workspace, output, *extra, source=source, steps=steps))
