"""Where each tensor of the authors' backbones lands in the transformers class of its family.

The authors' model files use timm's names (`blocks.N.attn.qkv`, `norm`, `pos_embed`) or, for
CLIP, OpenAI's (`transformer.resblocks.N.attn.in_proj_weight`, `ln_pre`, `ln_post`). A `Layout`
is the table from those names to one transformers class; the architecture (width, depth, MLP
width, patch size, grid, qkv bias, layer scale, registers) is read from the tensors' shapes, so
ViT-S and ViT-L files convert as well as ViT-B. Every key is either mapped or matched by an
explicitly ignored pattern; anything left over, or any tensor the model still lacks, is an error
that names it.
"""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch
import transformers

from ..errors import CheckpointError


def _pairs(names: dict[str, str]) -> dict[str, str]:
    """{"norm1": "layernorm_before"} -> the same for `.weight` and `.bias`."""
    return {f"{a}.{p}": f"{b}.{p}" for a, b in names.items() for p in ("weight", "bias")}


QKV = "{qkv}"  # in a target name: split the fused tensor into thirds named q, k and v


@dataclass(frozen=True)
class Layout:
    """The names of one authors' layout and of the transformers class it converts to.

    Attributes:
        model_class / config_class: the transformers classes.
        blocks: regex giving (block index, rest) for a block key; DINOv2's chunked blocks
            (`blocks.C.N.`) match it too.
        layer: the transformers prefix of block N.
        block: block-local names, authors' -> transformers (QKV marks a fused tensor to split).
        top: every other name, authors' -> transformers.
        patch_weight / pos_embed: the authors' names that carry width, patch size and grid.
        pos_prefix: rows of the position table before the patch rows.
        config: fixed config values of the family (activation, norm epsilon).
    """

    model_class: str
    config_class: str
    blocks: str
    layer: str
    block: dict[str, str]
    top: dict[str, str]
    patch_weight: str = "patch_embed.proj.weight"
    pos_embed: str = "pos_embed"
    pos_prefix: int = 1
    config: dict[str, Any] = field(default_factory=dict)


_TIMM_BLOCKS = r"blocks\.(?:\d+\.)?(\d+)\.(.+)"
_TIMM_TOP = {"cls_token": "embeddings.cls_token", "pos_embed": "embeddings.position_embeddings",
             **_pairs({"patch_embed.proj": "embeddings.patch_embeddings.projection", "norm": "layernorm"})}
_VIT_BLOCK = {
    **_pairs({"norm1": "layernorm_before", "attn.qkv": f"attention.{QKV}_proj", "attn.proj": "attention.o_proj",
              "norm2": "layernorm_after", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}),
}
_TIMM_CONFIG = {"layer_norm_eps": 1e-6, "hidden_act": "gelu"}

VIT = Layout("ViTModel", "ViTConfig", _TIMM_BLOCKS, "layers.{}.", _VIT_BLOCK, _TIMM_TOP, config=_TIMM_CONFIG)
VIT_MAE = Layout("ViTMAEModel", "ViTMAEConfig", _TIMM_BLOCKS, "layers.{}.", _VIT_BLOCK, _TIMM_TOP,
                 config={**_TIMM_CONFIG, "mask_ratio": 0.0})
IJEPA = Layout("IJepaModel", "IJepaConfig", _TIMM_BLOCKS, "layers.{}.", _VIT_BLOCK,
               {k: v for k, v in _TIMM_TOP.items() if k != "cls_token"}, pos_prefix=0, config=_TIMM_CONFIG)
DINOV2 = Layout(
    "Dinov2Model", "Dinov2Config", _TIMM_BLOCKS, "encoder.layer.{}.",
    {**_pairs({"norm1": "norm1", "attn.qkv": f"attention.{QKV}_proj", "attn.proj": "attention.o_proj",
               "norm2": "norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}),
     "ls1.gamma": "layer_scale1.lambda1", "ls2.gamma": "layer_scale2.lambda1"},
    {**_TIMM_TOP, "mask_token": "embeddings.mask_token", "register_tokens": "embeddings.register_tokens"},
    config=_TIMM_CONFIG,
)
BLIP = Layout(
    "BlipVisionModel", "BlipVisionConfig", _TIMM_BLOCKS, "encoder.layers.{}.",
    _pairs({"norm1": "layer_norm1", "attn.qkv": "self_attn.qkv", "attn.proj": "self_attn.projection",
            "norm2": "layer_norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}),
    {"cls_token": "embeddings.class_embedding", "pos_embed": "embeddings.position_embedding",
     **_pairs({"patch_embed.proj": "embeddings.patch_embedding", "norm": "post_layernorm"})},
    config=_TIMM_CONFIG,
)
CLIP = Layout(
    "CLIPVisionModel", "CLIPVisionConfig", r"transformer\.resblocks\.(\d+)\.(.+)", "encoder.layers.{}.",
    {"attn.in_proj_weight": f"self_attn.{QKV}_proj.weight", "attn.in_proj_bias": f"self_attn.{QKV}_proj.bias",
     **_pairs({"ln_1": "layer_norm1", "attn.out_proj": "self_attn.out_proj", "ln_2": "layer_norm2",
               "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"})},
    {"class_embedding": "embeddings.class_embedding", "positional_embedding": "embeddings.position_embedding.weight",
     "conv1.weight": "embeddings.patch_embedding.weight", **_pairs({"ln_pre": "pre_layrnorm", "ln_post": "post_layernorm"})},
    patch_weight="conv1.weight", pos_embed="positional_embedding",
    config={"layer_norm_eps": 1e-5, "hidden_act": "quick_gelu"},
)


class ConversionError(CheckpointError):
    """The state dict does not fit the layout: the message names the keys."""


def infer_architecture(state: dict[str, torch.Tensor], layout: Layout, num_heads: int | None, source: str) -> dict[str, Any]:
    """The transformers config values of a backbone, read from its tensors' shapes."""
    for key in (layout.patch_weight, layout.pos_embed):
        if key not in state:
            raise ConversionError(f"{source}: no {key!r}, so this is not a {layout.model_class} backbone in the authors' layout.")
    width, patch = state[layout.patch_weight].shape[0], state[layout.patch_weight].shape[-1]
    blocks = _block_keys(state, layout)
    depth = len({index for index, _ in blocks.values()})
    first = {rest: key for key, (index, rest) in blocks.items() if index == 0}
    fc1 = state[first["mlp.fc1.weight" if "mlp.fc1.weight" in first else "mlp.c_fc.weight"]]
    rows = state[layout.pos_embed].reshape(-1, width).shape[0] - layout.pos_prefix
    grid = math.isqrt(rows)
    if grid * grid != rows or depth == 0:
        raise ConversionError(f"{source}: {rows} position rows (not a square grid) or no blocks; not a ViT backbone.")
    values: dict[str, Any] = dict(
        layout.config, hidden_size=width, num_hidden_layers=depth, patch_size=patch, image_size=grid * patch,
        num_attention_heads=num_heads or (16 if width == 1280 else width // 64),
    )
    if layout is DINOV2:
        if fc1.shape[0] % width:
            raise ConversionError(f"{source}: an MLP of {fc1.shape[0]} for width {width}; Dinov2Model needs a whole MLP ratio.")
        values.update(mlp_ratio=fc1.shape[0] // width, qkv_bias="attn.qkv.bias" in first,
                      num_register_tokens=state["register_tokens"].shape[1] if "register_tokens" in state else 0)
    else:
        values["intermediate_size"] = fc1.shape[0]
        if layout is not CLIP:
            values["qkv_bias"] = "attn.qkv.bias" in first
    return values


def _block_keys(state: dict[str, Any], layout: Layout) -> dict[str, tuple[int, str]]:
    pattern = re.compile(layout.blocks)
    return {key: (int(m.group(1)), m.group(2)) for key in state if (m := pattern.fullmatch(key))}


def build_model(layout: Layout, architecture: dict[str, Any]) -> transformers.PreTrainedModel:
    """An empty transformers model of the inferred architecture (registers pick DINOv2's variant)."""
    model_class, config_class = layout.model_class, layout.config_class
    values = dict(architecture)
    if layout is DINOV2 and values["num_register_tokens"]:
        model_class, config_class = "Dinov2WithRegistersModel", "Dinov2WithRegistersConfig"
    elif layout is DINOV2:
        values.pop("num_register_tokens")
    config = getattr(transformers, config_class)(**values)
    model_cls = getattr(transformers, model_class)
    pooler = "add_pooling_layer" in inspect.signature(model_cls.__init__).parameters
    return model_cls(config, **({"add_pooling_layer": False} if pooler else {})).eval()


def convert_state(state: dict[str, torch.Tensor], layout: Layout, ignored: tuple[str, ...], source: str) -> dict[str, torch.Tensor]:
    """The authors' backbone tensors under transformers names; leftover keys are an error."""
    blocks = _block_keys(state, layout)
    converted: dict[str, torch.Tensor] = {}
    leftover = []
    for key, tensor in state.items():
        if key in blocks:
            index, rest = blocks[key]
            target = layout.block.get(rest)
            target = target and layout.layer.format(index) + target
        else:
            target = layout.top.get(key)
        if target is None:
            if not any(re.fullmatch(pattern, key) for pattern in ignored):
                leftover.append(key)
        elif QKV in target:
            for letter, part in zip("qkv", tensor.chunk(3, dim=0)):
                converted[target.replace(QKV, letter)] = part
        else:
            converted[target] = tensor
    if leftover:
        raise ConversionError(f"{source}: keys that belong to no part of a {layout.model_class} and are not known to be ignorable: {sorted(leftover)}")
    return converted


def load_converted(model: transformers.PreTrainedModel, converted: dict[str, torch.Tensor], source: str) -> None:
    """Copy the converted tensors in, in the model's shapes and dtype; a tensor still missing is an error."""
    expected = model.state_dict()
    if "embeddings.mask_token" in expected and "embeddings.mask_token" not in converted:
        converted["embeddings.mask_token"] = torch.zeros_like(expected["embeddings.mask_token"])  # training-only
    for name in ("layer_scale1.lambda1", "layer_scale2.lambda1"):  # a DINOv2 without layer scale multiplies by 1
        for key in expected:
            if key.endswith(name) and key not in converted:
                converted[key] = torch.ones_like(expected[key])
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    if missing or unexpected:
        raise ConversionError(f"{source}: the converted backbone lacks {missing} and has no place for {unexpected}.")
    with torch.no_grad():
        for key, target in expected.items():
            tensor = converted[key]
            if tensor.numel() != target.numel():
                raise ConversionError(f"{source}: {key} has {tuple(tensor.shape)} values, the model expects {tuple(target.shape)}.")
            target.copy_(tensor.reshape(target.shape).to(target.dtype))
