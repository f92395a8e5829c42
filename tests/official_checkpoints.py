"""Small checkpoints laid out exactly as the authors' trainer saves its eight models, and their features.

`trained_checkpoint(name)` is what `misc.save_model` writes for a model built by the authors'
`main_pretrain.py` (key names as in their model files, the `args` Namespace included), at a small
width. `reference_features` computes what their `forward_features_eval_metric` computes, written
out here directly on those tensors (patch conv, CLS/registers, positions interpolated their way,
pre-norm blocks with a fused qkv, final norm or not, prefix dropped, the adapter), so the import is
checked against a computation that shares nothing with transformers.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
import torch.nn.functional as F

WIDTH = {"mocov3": 96}  # MoCo v3's ViTs have 12 heads whatever the width
HEADS = {"mocov3": 12}
TIMM_EPS, CLIP_EPS = 1e-6, 1e-5


def _ln(state: dict, prefix: str, width: int, generator: torch.Generator) -> None:
    state[f"{prefix}.weight"] = 1 + 0.1 * torch.randn(width, generator=generator)
    state[f"{prefix}.bias"] = 0.1 * torch.randn(width, generator=generator)


def _linear(state: dict, prefix: str, rows: int, cols: int, generator: torch.Generator, bias: bool = True) -> None:
    state[f"{prefix}.weight"] = torch.randn(rows, cols, generator=generator) / math.sqrt(cols)
    if bias:
        state[f"{prefix}.bias"] = 0.1 * torch.randn(rows, generator=generator)


def backbone_state(name: str, depth: int = 2, grid: int = 14, patch: int = 16, seed: int = 0, width: int | None = None) -> dict[str, torch.Tensor]:
    """The backbone part of the authors' model state dict (before the adapter), random values."""
    g = torch.Generator().manual_seed(seed)
    width = width or WIDTH.get(name, 128)
    if name == "clip":
        return _clip_state(width, depth, grid, patch, g)
    state = {"patch_embed.proj.weight": torch.randn(width, 3, patch, patch, generator=g) / (patch * math.sqrt(3)),
             "patch_embed.proj.bias": 0.1 * torch.randn(width, generator=g)}
    cls_rows = 0 if name == "ijepa" else 1
    if cls_rows:
        state["cls_token"] = torch.randn(1, 1, width, generator=g)
    state["pos_embed"] = torch.randn(1, grid * grid + cls_rows, width, generator=g)
    if name == "dinov2":
        state["register_tokens"] = torch.randn(1, 4, width, generator=g)
        state["mask_token"] = torch.zeros(1, width)
    for i in range(depth):
        block = f"blocks.{i}"
        _ln(state, f"{block}.norm1", width, g)
        _linear(state, f"{block}.attn.qkv", 3 * width, width, g)
        _linear(state, f"{block}.attn.proj", width, width, g)
        _ln(state, f"{block}.norm2", width, g)
        _linear(state, f"{block}.mlp.fc1", 4 * width, width, g)
        _linear(state, f"{block}.mlp.fc2", width, 4 * width, g)
        if name == "dinov2":
            state[f"{block}.ls1.gamma"] = 0.5 + torch.rand(width, generator=g)
            state[f"{block}.ls2.gamma"] = 0.5 + torch.rand(width, generator=g)
    _ln(state, "norm", width, g)
    if name == "mocov3":
        _linear(state, "head", 1000, width, g)  # timm's classifier, unused by the features
    return state


def _clip_state(width: int, depth: int, grid: int, patch: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    state = {"visual.class_embedding": torch.randn(width, generator=g) / math.sqrt(width),
             "visual.positional_embedding": torch.randn(grid * grid + 1, width, generator=g) / math.sqrt(width),
             "visual.conv1.weight": torch.randn(width, 3, patch, patch, generator=g) / (patch * math.sqrt(3))}
    _ln(state, "visual.ln_pre", width, g)
    for tower, blocks in (("visual.transformer", depth), ("transformer", 1)):
        for i in range(blocks):
            block = f"{tower}.resblocks.{i}"
            _linear(state, f"{block}.attn.in_proj", 3 * width, width, g)
            state[f"{block}.attn.in_proj_weight"] = state.pop(f"{block}.attn.in_proj.weight")
            state[f"{block}.attn.in_proj_bias"] = state.pop(f"{block}.attn.in_proj.bias")
            _linear(state, f"{block}.attn.out_proj", width, width, g)
            _ln(state, f"{block}.ln_1", width, g)
            _linear(state, f"{block}.mlp.c_fc", 4 * width, width, g)
            _linear(state, f"{block}.mlp.c_proj", width, 4 * width, g)
            _ln(state, f"{block}.ln_2", width, g)
    _ln(state, "visual.ln_post", width, g)
    state["visual.proj"] = torch.randn(width, 64, generator=g)
    # The text tower the authors' CLIP keeps beside the vision tower.
    state.update({"positional_embedding": torch.randn(77, width, generator=g), "text_projection": torch.randn(width, 64, generator=g),
                  "logit_scale": torch.tensor(4.6), "token_embedding.weight": torch.randn(100, width, generator=g)})
    _ln(state, "ln_final", width, g)
    return state


def adapter_state(width: int, prefix: str = "", seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    _linear(state, f"{prefix}adapter.adapter.adapter_linear", width, width, g)
    _ln(state, f"{prefix}adapter.adapter.adapter_layer_norm1", width, g)
    return state


def trained_checkpoint(name: str, **shape) -> dict:
    """`{'model', 'optimizer', 'epoch', 'scaler', 'args'}` as the authors' `save_model` writes it."""
    state = backbone_state(name, **shape)
    width = shape.get("width") or WIDTH.get(name, 128)
    state.update(adapter_state(width, prefix="visual." if name == "clip" else ""))
    args = argparse.Namespace(base_model=name, model_type="vitb16", fusion_net="linear", batch_size=64, epochs=5, lr=1.5e-4,
                              temp=0.03, lambda_reg=3.0, asy_pos_ratio=10.0, PEA_crop_mode="random", opts=[], distributed=True)
    optimizer = {"state": {0: {"step": torch.tensor(500.0), "exp_avg": torch.zeros(width), "exp_avg_sq": torch.zeros(width)}},
                 "param_groups": [{"lr": 0.0, "betas": (0.9, 0.95), "weight_decay": 0.0, "params": [0]}]}
    scaler = {"scale": 32768.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000, "_growth_tracker": 113}
    return {"model": state, "optimizer": optimizer, "epoch": 4, "scaler": scaler, "args": args}


def write_layout(folder: Path, names, **shape) -> Path:
    """A folder laid out like the authors' Hub repository, holding `ckpts/ours/<name>+ours/checkpoint.pth`."""
    for name in names:
        path = folder / "ckpts" / "ours" / f"{name}+ours" / "checkpoint.pth"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(trained_checkpoint(name, **shape), path)
    return folder


# ------------------------------------------------------------------ the authors' evaluation forward
def _positions(table: torch.Tensor, prefix: int, grid: tuple[int, int], name: str) -> torch.Tensor:
    rows = table.reshape(-1, table.shape[-1])
    side = math.isqrt(len(rows) - prefix)
    if grid == (side, side):
        return rows
    square = rows[prefix:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    if name in ("clip", "blip", "dinov2"):
        resized = F.interpolate(square, size=grid, mode="bicubic", antialias=True)
    else:
        resized = F.interpolate(square, scale_factor=((grid[0] + 0.1) / side, (grid[1] + 0.1) / side), mode="bicubic")
    return torch.cat([rows[:prefix], resized.permute(0, 2, 3, 1).reshape(-1, rows.shape[-1])])


def _attention(x: torch.Tensor, qkv_w, qkv_b, proj_w, proj_b, heads: int) -> torch.Tensor:
    b, n, d = x.shape
    q, k, v = F.linear(x, qkv_w, qkv_b).reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    attention = (q @ k.transpose(-2, -1) * (d // heads) ** -0.5).softmax(-1)
    return F.linear((attention @ v).transpose(1, 2).reshape(b, n, d), proj_w, proj_b)


def reference_features(checkpoint: dict, name: str, pixels: torch.Tensor) -> torch.Tensor:
    """(B, h*w, D): the authors' `forward_features_eval_metric` (patch tokens), on raw tensors."""
    s = {key.removeprefix("visual."): value for key, value in checkpoint["model"].items()
         if key.startswith("visual.") or name != "clip"}
    clip = name == "clip"
    patch_w = s["conv1.weight" if clip else "patch_embed.proj.weight"]
    width, patch = patch_w.shape[0], patch_w.shape[-1]
    heads = HEADS.get(name, width // 64)
    grid = (pixels.shape[2] // patch, pixels.shape[3] // patch)
    x = F.conv2d(pixels, patch_w, None if clip else s["patch_embed.proj.bias"], stride=patch).flatten(2).transpose(1, 2)
    cls = s["class_embedding"].reshape(1, 1, -1) if clip else s.get("cls_token")
    prefix = 0 if cls is None else 1
    if cls is not None:
        x = torch.cat([cls.expand(len(x), -1, -1), x], dim=1)
    x = x + _positions(s["positional_embedding" if clip else "pos_embed"], prefix, grid, name)
    if "register_tokens" in s:
        x = torch.cat([x[:, :1], s["register_tokens"].expand(len(x), -1, -1), x[:, 1:]], dim=1)
        prefix += s["register_tokens"].shape[1]
    eps = CLIP_EPS if clip else TIMM_EPS
    ln = lambda t, key: F.layer_norm(t, (width,), s[f"{key}.weight"], s[f"{key}.bias"], eps)  # noqa: E731
    if clip:
        x = ln(x, "ln_pre")
    depth = len({key.split(".")[2 if clip else 1] for key in s if key.startswith("transformer.resblocks." if clip else "blocks.")})
    for i in range(depth):
        if clip:
            b = f"transformer.resblocks.{i}"
            x = x + _attention(ln(x, f"{b}.ln_1"), s[f"{b}.attn.in_proj_weight"], s[f"{b}.attn.in_proj_bias"],
                               s[f"{b}.attn.out_proj.weight"], s[f"{b}.attn.out_proj.bias"], heads)
            h = F.linear(ln(x, f"{b}.ln_2"), s[f"{b}.mlp.c_fc.weight"], s[f"{b}.mlp.c_fc.bias"])
            x = x + F.linear(h * torch.sigmoid(1.702 * h), s[f"{b}.mlp.c_proj.weight"], s[f"{b}.mlp.c_proj.bias"])
        else:
            b = f"blocks.{i}"
            y = _attention(ln(x, f"{b}.norm1"), s[f"{b}.attn.qkv.weight"], s[f"{b}.attn.qkv.bias"],
                           s[f"{b}.attn.proj.weight"], s[f"{b}.attn.proj.bias"], heads)
            x = x + s.get(f"{b}.ls1.gamma", 1) * y
            h = F.gelu(F.linear(ln(x, f"{b}.norm2"), s[f"{b}.mlp.fc1.weight"], s[f"{b}.mlp.fc1.bias"]))
            x = x + s.get(f"{b}.ls2.gamma", 1) * F.linear(h, s[f"{b}.mlp.fc2.weight"], s[f"{b}.mlp.fc2.bias"])
    if clip:
        x = ln(x, "ln_post")
    elif name != "ijepa":  # the authors' I-JEPA evaluation forward applies no final norm
        x = ln(x, "norm")
    x = x[:, prefix:]
    a = "adapter.adapter."
    z = torch.tanh(F.linear(x, s[f"{a}adapter_linear.weight"], s[f"{a}adapter_linear.bias"]))
    return F.layer_norm(z, (width,), s[f"{a}adapter_layer_norm1.weight"], s[f"{a}adapter_layer_norm1.bias"])
