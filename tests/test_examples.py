"""Every script in examples/ run as a user would, in a fresh process, on a tiny backbone and a small mp4."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from tiny_backbones import save_backbone
from video_factory import moving_pattern_frames, write_video

from co_settle_hf import CoSettleModel
from co_settle_hf.data import VideoFileClip
from co_settle_hf.evaluation.features import extract_video_features
from co_settle_hf.evaluation.plots import overlay_masks

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NUM_FRAMES, HEIGHT, WIDTH = 6, 64, 96


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A tiny ViT (patch 16) with an untrained adapter, a 6-frame mp4, its first-frame mask, training videos."""
    root = tmp_path_factory.mktemp("examples")
    save_backbone("vit", root / "vit")
    CoSettleModel.from_backbone(str(root / "vit")).save_pretrained(root / "adapter")
    write_video(root / "clip.mp4", moving_pattern_frames(NUM_FRAMES, HEIGHT, WIDTH))
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[16:48, 16:48] = 1  # on the 16-pixel patch grid, so frame 0 comes back as drawn
    mask[32:64, 64:96] = 2
    Image.fromarray(mask).save(root / "mask.png")
    for index in range(2):
        write_video(root / "videos" / f"clip{index}.mp4", moving_pattern_frames(16, 64, 80, seed=index))
    return root


def run(command: list[str], cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    # The scripts call `accelerate` like a user with this environment activated would.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_features_from_video(workspace, tmp_path):
    output = tmp_path / "features.pt"
    result = run([sys.executable, str(EXAMPLES / "features_from_video.py"), "--adapter", str(workspace / "adapter"),
                  "--video", str(workspace / "clip.mp4"), "--size", "64", "96", "--output", str(output)], tmp_path)
    assert f"{NUM_FRAMES} frames -> features ({NUM_FRAMES}, 4, 6, 32)" in result.stdout
    features = torch.load(output, weights_only=True)
    assert features.shape == (NUM_FRAMES, 4, 6, 32) and features.dtype == torch.float32
    assert torch.allclose(features.norm(dim=-1), torch.ones(NUM_FRAMES, 4, 6), atol=1e-5)
    # The adapter's projected features, not the backbone's.
    adapter = CoSettleModel.from_pretrained(workspace / "adapter")
    clip = VideoFileClip(workspace / "clip.mp4")
    frames = clip.read(range(clip.num_frames))
    assert torch.allclose(features, extract_video_features(adapter, frames, size=(64, 96)), atol=1e-5)
    assert not torch.allclose(features, extract_video_features(adapter.backbone, frames, size=(64, 96)), atol=1e-2)


@pytest.mark.parametrize("model,mask_kind", [("adapter", "ids"), ("vit", "ids"), ("vit", "colours")])
def test_propagate_mask(workspace, tmp_path, model, mask_kind):
    output = tmp_path / "propagated.mp4"
    mask_file = workspace / "mask.png"
    if mask_kind == "colours":  # a colour mask: green (sorted first) becomes object 1, red object 2
        ids = np.array(Image.open(mask_file))
        colours = np.zeros((*ids.shape, 3), dtype=np.uint8)
        colours[ids == 1] = (0, 255, 0)
        colours[ids == 2] = (255, 0, 0)
        mask_file = tmp_path / "colour_mask.png"
        Image.fromarray(colours).save(mask_file)
    result = run([sys.executable, str(EXAMPLES / "propagate_mask.py"), "--model", str(workspace / model),
                  "--video", str(workspace / "clip.mp4"), "--mask", str(mask_file), "--size", "64", "96",
                  "--output", str(output)], tmp_path)
    assert f"{NUM_FRAMES} frames, 2 object(s)" in result.stdout
    video, source = decode(output), decode(workspace / "clip.mp4")
    assert video.shape == (NUM_FRAMES, HEIGHT, WIDTH, 3)
    # Frame 0 is the source frame with the given mask overlaid (inside the objects, away from the
    # rounded corners that bilinear upsampling of the patch grid leaves).
    mask = np.array(Image.open(workspace / "mask.png"))
    expected = overlay_masks(source[:1], mask[None])[0].astype(int)
    inside = np.zeros_like(mask, dtype=bool)
    inside[20:44, 20:44] = inside[36:60, 68:92] = True
    to_overlay = np.abs(video[0].astype(int) - expected)[inside].mean()
    to_source = np.abs(video[0].astype(int) - source[0])[inside].mean()
    assert to_overlay < 8 and to_source > 3 * to_overlay, (to_overlay, to_source)


def test_train_on_mp4_folder(workspace, tmp_path):
    output = tmp_path / "trained"
    run(["bash", str(EXAMPLES / "train_on_mp4_folder.sh"), str(workspace / "vit"), str(workspace / "videos"), str(output),
         "--max-train-steps", "2", "--cpu", "--per-device-train-batch-size", "2", "--image-size", "64",
         "--learning-rate", "1e-3"], tmp_path, timeout=180)
    summary = json.loads((output / "training_summary.json").read_text())
    # The appended flags win over the script's defaults; the rest of its recipe stays.
    assert summary["steps"] == 2 and summary["global_batch_size"] == 2 and summary["learning_rate"] == 1e-3
    assert summary["weight_decay"] == 0.05 and summary["clips"] == 2
    assert list(output.rglob("events.out.tfevents.*")), "--with-tracking wrote no TensorBoard events"
    assert (output / "checkpoints").is_dir()  # --checkpointing-steps epoch
    model = CoSettleModel.from_pretrained(output)
    assert model.config.base_model_name_or_path == str(workspace / "vit")
    assert model(torch.randn(1, 3, 64, 64)).features.shape == (1, 4, 4, 32)
    untrained = CoSettleModel.from_pretrained(workspace / "adapter")
    assert not torch.equal(model.projection.linears[0].weight, untrained.projection.linears[0].weight)


def test_train_on_mp4_folder_names_a_missing_argument(tmp_path):
    result = subprocess.run(["bash", str(EXAMPLES / "train_on_mp4_folder.sh"), "vit"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "folder of videos" in result.stderr


@pytest.mark.parametrize("branch", [None, "dev"])
def test_push_to_hub(workspace, tmp_path, hub_repo_id, branch):
    from huggingface_hub import HfApi

    # HF_ENDPOINT, HF_HOME, HF_TOKEN and HF_HUB_DISABLE_XET (set by conftest) reach the script through os.environ.
    command = [sys.executable, str(EXAMPLES / "push_to_hub.py"), "--adapter", str(workspace / "adapter"), "--repo-id", hub_repo_id,
               "--push-backbone"]  # the base is a local folder: without its backbone the pushed adapter would not load
    result = run(command + (["--branch", branch] if branch else []), tmp_path)
    assert f"pushed {workspace / 'adapter'} to {hub_repo_id} at commit " in result.stdout
    assert (f"revision={branch!r}" in result.stdout) == (branch is not None)
    files = set(HfApi().list_repo_files(hub_repo_id, revision=branch))
    adapter_files = {"config.json", "model.safetensors", "README.md", "preprocessor_config.json"}
    assert adapter_files <= files and {f for f in files if f.startswith("backbone/")} >= {"backbone/config.json", "backbone/model.safetensors"}
    pulled = CoSettleModel.from_pretrained(hub_repo_id, revision=branch)
    local = CoSettleModel.from_pretrained(workspace / "adapter")
    for name, tensor in local.state_dict().items():
        assert torch.equal(pulled.state_dict()[name], tensor), name
