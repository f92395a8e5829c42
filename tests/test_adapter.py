"""Adapter core: every backbone family, save/load, projection-only weights, clear errors."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from tiny_backbones import CONFIGS, save_backbone
from transformers import AutoModel

from co_settle_hf import (
    BackboneEncoder,
    CoSettleConfig,
    CoSettleModel,
    supported_model_types,
)
from co_settle_hf.backbones.families import UnsupportedBackboneError
from co_settle_hf.modeling_co_settle import AdapterLoadError, BackboneMismatchError

FAMILIES = sorted(CONFIGS)


@pytest.fixture(scope="module")
def backbone_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("backbones")
    return {name: save_backbone(name, root / name) for name in FAMILIES}


def safetensors_layout(path):
    """(header length, tensor entries) read straight from the file format."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    header.pop("__metadata__", None)
    return length, header, len(raw)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_shapes_and_round_trip(family, backbone_dirs, tmp_path):
    adapter = CoSettleModel.from_backbone(str(backbone_dirs[family]))
    patch = adapter.config.patch_size
    torch.manual_seed(0)
    square = torch.randn(2, 3, 224, 224)
    wide = torch.randn(1, 3, 480, 880)
    out = adapter(square)
    assert out.features.shape == (2, 224 // patch, 224 // patch, 32)
    assert out.backbone_features.shape == out.features.shape
    assert out.grid_size == (224 // patch, 224 // patch)
    assert adapter(wide).features.shape == (1, 480 // patch, 880 // patch, 32)
    # The projection really changes the features; the frozen ones are the backbone's alone.
    assert not torch.allclose(out.features, out.backbone_features)

    adapter.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "config.json", "model.safetensors", "preprocessor_config.json"]
    length, header, size = safetensors_layout(tmp_path / "model.safetensors")
    assert set(header) == {"projection.linears.0.weight", "projection.linears.0.bias", "projection.norm.weight", "projection.norm.bias"}
    assert size == 8 + length + (32 * 32 + 3 * 32) * 4  # nothing but the float32 projection

    loaded = CoSettleModel.from_pretrained(tmp_path)
    assert loaded.config.base_model_type == adapter.config.base_model_type
    assert torch.equal(loaded(square).features, out.features)
    assert torch.equal(loaded(wide).features, adapter(wide).features)


def test_prefix_tokens_and_positions_per_family(backbone_dirs):
    expected = {  # family -> (prefix tokens, kind of positions)
        "vit": (1, "learned"), "deit": (2, "learned"), "dinov2": (1, "learned"),
        "dinov2_with_registers": (5, "learned"), "dinov3_vit": (5, "rotary"),
        "clip_vision_model": (1, "learned"), "clip": (1, "learned"), "siglip_vision_model": (0, "learned"),
        "blip_vision_model": (1, "learned"), "vit_mae": (1, "sincos"), "ijepa": (0, "learned"),
        "beit": (1, "relative"), "data2vec-vision": (1, "relative"),
    }
    for family, (prefix, kind) in expected.items():
        encoder = BackboneEncoder.from_pretrained(str(backbone_dirs[family]))
        assert (encoder.num_prefix_tokens, encoder.position_kind) == (prefix, kind), family


def test_vit_tokens_are_final_normed_patch_tokens(backbone_dirs):
    """For ViT the tokens must be last_hidden_state without CLS, in order."""
    encoder = BackboneEncoder.from_pretrained(str(backbone_dirs["vit"]))
    x = torch.randn(1, 3, 224, 224)
    tokens, grid = encoder.patch_tokens(x)
    reference = encoder.model(x).last_hidden_state[:, 1:]
    assert grid == (14, 14) and torch.equal(tokens, reference)


def test_clip_from_full_checkpoint_uses_vision_tower_and_post_layernorm(backbone_dirs):
    encoder = BackboneEncoder.from_pretrained(str(backbone_dirs["clip"]))
    assert encoder.model_type == "clip_vision_model"
    x = torch.randn(1, 3, 224, 224)
    hidden = encoder.model(x).last_hidden_state
    assert torch.allclose(encoder.patch_tokens(x)[0], encoder.model.post_layernorm(hidden)[:, 1:])


def test_vit_mae_is_deterministic_and_in_order(backbone_dirs):
    encoder = BackboneEncoder.from_pretrained(str(backbone_dirs["vit_mae"]))
    assert encoder.model.config.mask_ratio == 0.0
    x = torch.randn(2, 3, 224, 224)
    first, second = encoder.patch_tokens(x)[0], encoder.patch_tokens(x)[0]
    assert torch.equal(first, second) and first.shape[1] == 196
    # In order: the noise we pass makes the (unmasked) shuffle the identity permutation.
    noise = torch.arange(196, dtype=torch.float32).expand(2, 196)
    _, mask, ids_restore = encoder.model.embeddings(x, noise=noise, interpolate_pos_encoding=True)
    assert torch.equal(ids_restore, torch.arange(196).expand(2, 196)) and mask.sum() == 0


def test_projection_variants_parameter_counts():
    for kind, linears in [("linear", 1), ("mlp2", 2), ("mlp3", 3)]:
        model = CoSettleModel(CoSettleConfig(projection=kind, hidden_size=768))
        assert sum(p.numel() for p in model.parameters()) == linears * (768 * 768 + 768) + 2 * 768
    assert sum(p.numel() for p in CoSettleModel(CoSettleConfig()).parameters()) == 592_128  # "about 0.59 M"


def test_config_defaults_are_the_published_recipe():
    config = CoSettleConfig()
    objective = config.objective
    assert (config.projection, objective.cycle_temperature, objective.pool_size, objective.pea_alpha) == ("linear", 0.03, 2, 10.0)
    assert (objective.separability, objective.kl_direction, objective.separability_weight, objective.frame_gap) == ("kl", "code", 3.0, 0.15)
    with pytest.raises(ValueError, match="projection"):
        CoSettleConfig(projection="mlp9")


def test_auto_model_loads_an_adapter(backbone_dirs, tmp_path):
    CoSettleModel.from_backbone(str(backbone_dirs["vit"])).save_pretrained(tmp_path)
    model = AutoModel.from_pretrained(tmp_path)
    assert isinstance(model, CoSettleModel)
    assert model(torch.randn(1, 3, 224, 224)).features.shape == (1, 14, 14, 32)


def test_backbone_is_frozen_and_not_trained(backbone_dirs):
    adapter = CoSettleModel.from_backbone(str(backbone_dirs["dinov2"]))
    adapter.train()
    assert not adapter.backbone.model.training
    assert all(not p.requires_grad for p in adapter.backbone.model.parameters())
    projection = {"projection.linears.0.weight", "projection.linears.0.bias", "projection.norm.weight", "projection.norm.bias"}
    assert {name for name, p in adapter.named_parameters() if p.requires_grad} == projection
    assert set(adapter.state_dict()) == projection  # the frozen backbone is never part of the adapter's weights
    assert adapter.num_parameters(only_trainable=True) == 32 * 32 + 3 * 32
    assert adapter.num_parameters() == 32 * 32 + 3 * 32 + sum(p.numel() for p in adapter.backbone.parameters())
    adapter.to(torch.float64)  # a registered submodule: .to() moves it, with no override
    assert next(adapter.backbone.model.parameters()).dtype == torch.float64


def test_mismatched_backbone_is_refused(backbone_dirs, tmp_path):
    CoSettleModel.from_backbone(str(backbone_dirs["vit"])).save_pretrained(tmp_path)
    with pytest.raises(BackboneMismatchError, match="patch size 14 != adapter's 16"):
        CoSettleModel.from_pretrained(tmp_path, backbone=str(backbone_dirs["dinov2"]))
    wide = CoSettleModel(CoSettleConfig(hidden_size=64, patch_size=16))
    with pytest.raises(BackboneMismatchError, match="hidden size 32 != adapter's 64"):
        wide.attach_backbone(BackboneEncoder.from_pretrained(str(backbone_dirs["vit"])))


def test_missing_and_corrupt_adapter_files(backbone_dirs, tmp_path):
    CoSettleModel.from_backbone(str(backbone_dirs["vit"])).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[: len(original) // 2])
    with pytest.raises(AdapterLoadError, match="model.safetensors is not a readable safetensors file"):
        CoSettleModel.from_pretrained(tmp_path)
    weights.write_bytes(b"\x00" * 64)
    with pytest.raises(AdapterLoadError, match="not a readable safetensors file"):
        CoSettleModel.from_pretrained(tmp_path)
    weights.unlink()
    with pytest.raises(AdapterLoadError, match="no file named model.safetensors"):
        CoSettleModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(AdapterLoadError, match="config.json.* is not a valid JSON file"):
        CoSettleModel.from_pretrained(tmp_path)
    assert not (tmp_path / "adapter_config.json").exists()


def test_unsupported_backbone_names_itself_and_lists_families(tmp_path):
    import transformers as T

    T.ResNetModel(T.ResNetConfig(hidden_sizes=[8, 8, 8, 8], embedding_size=8, depths=[1, 1, 1, 1])).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedBackboneError) as error:
        CoSettleModel.from_backbone(str(tmp_path))
    message = str(error.value)
    assert "'resnet'" in message and str(tmp_path) in message
    for model_type in ("vit", "dinov2_with_registers", "dinov3_vit", "siglip_vision_model", "vit_mae", "ijepa", "beit"):
        assert model_type in message
    assert "clip" in supported_model_types()
