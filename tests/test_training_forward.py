"""The training forward on real (tiny) backbones: PEA inside the backbone, one 3B pass."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from tiny_backbones import build_backbone

from co_settle_hf import BackboneEncoder, CoSettleModel
from co_settle_hf.backbones.encoder import PEAUnavailableError, PositionCrop
from co_settle_hf.objective import co_settle_objective
from co_settle_hf.training.forward import draw_pea, training_forward

ABSOLUTE = ["vit", "deit", "dinov2_with_registers", "clip_vision_model", "siglip_vision_model", "blip_vision_model", "vit_mae", "ijepa"]


@pytest.mark.parametrize("family", ABSOLUTE + ["dinov3_vit"])
def test_pea_with_alpha_zero_is_the_plain_view(family):
    encoder = BackboneEncoder(build_backbone(family))
    x = torch.randn(3, 3, 224, 224)
    plain, _ = encoder.patch_tokens(x)
    crop = PositionCrop(0.0, torch.zeros(3, 2, dtype=torch.long))
    assert torch.equal(encoder.patch_tokens(x, crop)[0], plain)


@pytest.mark.parametrize("family", ABSOLUTE)
def test_absolute_pea_equals_direct_upsample_and_slice(family):
    encoder = BackboneEncoder(build_backbone(family))
    x = torch.randn(2, 3, 224, 224)
    offsets = torch.tensor([[5, 100], [37, 3]])
    crop = PositionCrop(10.0, offsets)
    with_pea = encoder.patch_tokens(x, crop)[0]

    # Direct: a copy of the backbone whose table holds the upsampled, sliced grid.
    grid = encoder.position_grid((14, 14))
    big = F.interpolate(grid.permute(2, 0, 1)[None], size=(154, 154), mode="bicubic", align_corners=False)[0]
    for index, (row, col) in enumerate(offsets.tolist()):
        direct = BackboneEncoder(copy.deepcopy(encoder.model))
        table = direct._pos_table.data.view(-1, grid.shape[-1])
        table[encoder.family.pos_prefix :] = big[:, row : row + 14, col : col + 14].permute(1, 2, 0).reshape(196, -1)
        expected = direct.patch_tokens(x[index : index + 1])[0]
        assert torch.allclose(with_pea[index], expected[0], atol=1e-5), family
    # Only the images PEA was asked for change.
    partial = encoder.patch_tokens(x, PositionCrop(10.0, offsets[1:]))[0]
    assert torch.equal(partial[0], encoder.patch_tokens(x)[0][0])  # same batch, no PEA for image 0
    assert torch.allclose(partial[1], with_pea[1], atol=1e-6)


def test_rotary_pea_equals_slice_of_a_larger_grid(monkeypatch):
    encoder = BackboneEncoder(build_backbone("dinov3_vit"))
    rope = encoder.model.rope_embeddings
    x = torch.randn(1, 3, 224, 224)
    with_pea = encoder.patch_tokens(x, PositionCrop(10.0, torch.tensor([[60, 17]])))[0]

    big_cos, big_sin = rope.forward(torch.zeros(1, 3, 154 * 16, 154 * 16))
    sliced = [t.view(154, 154, -1)[60:74, 17:31].reshape(196, -1) for t in (big_cos, big_sin)]
    monkeypatch.setattr(rope, "forward", lambda pixel_values: tuple(sliced))
    direct = encoder.patch_tokens(x)[0]
    assert torch.allclose(with_pea, direct, atol=1e-6)
    monkeypatch.undo()
    assert not torch.allclose(with_pea, encoder.patch_tokens(x)[0], atol=1e-6)


def test_relative_position_backbones_refuse_pea_unless_off():
    model = CoSettleModel.from_backbone(build_backbone("beit"))
    assert model.config.objective.pea_alpha is None  # switched off explicitly for a relative-bias backbone
    frames = torch.randn(2, 2, 3, 224, 224)
    assert torch.isfinite(training_forward(model, frames).loss)
    model.config.objective = {"pea_alpha": 10.0}
    with pytest.raises(PEAUnavailableError, match="relative position bias.*turn PEA off"):
        training_forward(model, frames)


@pytest.mark.parametrize("family", ["vit", "dinov3_vit"])
def test_one_3b_pass_equals_three_separate_passes(family):
    torch.manual_seed(0)
    model = CoSettleModel.from_backbone(build_backbone(family), pea_per_sample=True)
    frames = torch.randn(3, 2, 3, 224, 224)
    fused = training_forward(model, frames, torch.Generator().manual_seed(7))

    pea = draw_pea(model.config.objective, 3, (14, 14), torch.Generator().manual_seed(7))
    assert pea is not None and len(set(map(tuple, pea.offsets.tolist()))) > 1
    views = [model(frames[:, 0]), model(frames[:, 1]), model(frames[:, 0], pea=pea)]
    z = torch.stack([v.backbone_features.flatten(1, 2) for v in views], 1)
    p = torch.stack([v.features.flatten(1, 2) for v in views], 1)
    separate = co_settle_objective(z, p, (14, 14))
    for name in ("loss", "cycle_loss", "separability_loss", "cycle_accuracy"):
        assert torch.allclose(getattr(fused, name), getattr(separate, name), atol=1e-5), name
    fused.loss.backward()
    assert model.projection.linears[0].weight.grad is not None


@pytest.mark.parametrize("family", ["vit", "siglip_vision_model"])
def test_pea_breaks_the_positional_shortcut(family):
    """Unrelated, patch-shuffled frames: a fresh projection walks home by position unless PEA is on."""
    backbone = build_backbone(family)
    table = BackboneEncoder(backbone)._pos_table
    with torch.no_grad():
        table.normal_(0.0, 2.0)  # as strong as the tables of pretrained checkpoints
    torch.manual_seed(0)
    pixels = torch.randn(8, 2, 3, 224, 224)
    patches = pixels.unfold(3, 16, 16).unfold(4, 16, 16).flatten(3, 4)  # (B, 2, 3, 196, 16, 16)
    shuffled = patches[:, :, :, torch.randperm(196)].view(8, 2, 3, 14, 14, 16, 16)
    frames = shuffled.permute(0, 1, 2, 3, 5, 4, 6).reshape(8, 2, 3, 224, 224)
    accuracy = {}
    for alpha in (None, 10.0):
        torch.manual_seed(1)
        model = CoSettleModel.from_backbone(backbone, pea_alpha=alpha)
        with torch.no_grad():
            accuracy[alpha] = float(training_forward(model, frames, torch.Generator().manual_seed(0)).cycle_accuracy)
    assert accuracy[None] > 0.4, accuracy  # chance is 1/49
    assert accuracy[10.0] < 0.15, accuracy


def test_beit_with_absolute_embeddings_gets_pea():
    import transformers as T
    from tiny_backbones import SIZE

    model = T.BeitModel(T.BeitConfig(use_absolute_position_embeddings=True, use_relative_position_bias=False, **SIZE))
    with torch.no_grad():
        model.embeddings.position_embeddings.normal_()  # BEiT starts its table at zero
    adapter = CoSettleModel.from_backbone(model)
    assert adapter.backbone.position_kind == "learned" and adapter.config.objective.pea_alpha == 10.0
    x = torch.randn(1, 3, 224, 224)
    plain = adapter.backbone.patch_tokens(x)[0]
    assert not torch.allclose(adapter.backbone.patch_tokens(x, PositionCrop(10.0, torch.tensor([[3, 7]])))[0], plain)


def test_projection_starts_as_the_released_code_initialises_it():
    model = CoSettleModel.from_backbone(build_backbone("vit"))
    torch.manual_seed(0)
    model = type(model)(type(model.config)(hidden_size=768))
    linear = model.projection.linears[0]
    assert abs(float(linear.weight.std()) - 0.02) < 1e-3 and float(linear.bias.abs().max()) == 0.0
    assert torch.equal(model.projection.norm.weight, torch.ones(768))
