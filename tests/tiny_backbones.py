"""Tiny random backbones of every supported family, saved to disk like real checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers as T

SIZE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=224, patch_size=16)
TEXT = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)

CONFIGS = {
    "vit": lambda: T.ViTConfig(**SIZE),
    "deit": lambda: T.DeiTConfig(**SIZE),
    "dinov2": lambda: T.Dinov2Config(**{**SIZE, "image_size": 518, "patch_size": 14}),
    "dinov2_with_registers": lambda: T.Dinov2WithRegistersConfig(num_register_tokens=4, **SIZE),
    "dinov3_vit": lambda: T.DINOv3ViTConfig(num_register_tokens=4, **SIZE),
    "clip_vision_model": lambda: T.CLIPVisionConfig(**SIZE),
    "clip": lambda: T.CLIPConfig(vision_config=SIZE, text_config=TEXT),
    "siglip_vision_model": lambda: T.SiglipVisionConfig(**SIZE),
    "blip_vision_model": lambda: T.BlipVisionConfig(**SIZE),
    "vit_mae": lambda: T.ViTMAEConfig(**SIZE),
    "ijepa": lambda: T.IJepaConfig(**SIZE),
    "beit": lambda: T.BeitConfig(**SIZE),
    "data2vec-vision": lambda: T.Data2VecVisionConfig(**SIZE),
}


def build_backbone(model_type: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = CONFIGS[model_type]()
    if model_type == "blip_vision_model":  # AutoModel does not map the bare BLIP vision config
        return T.BlipVisionModel(config)
    return T.AutoModel.from_config(config)


def save_backbone(model_type: str, folder: Path, seed: int = 0) -> Path:
    """Write a tiny random checkpoint of `model_type` to `folder` and return the folder."""
    build_backbone(model_type, seed).save_pretrained(folder)
    return folder
