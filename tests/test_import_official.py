"""Importing the paper's eight published models, on checkpoints laid out exactly as the authors' trainer writes them."""

from __future__ import annotations

import pytest
import torch
import transformers
from official_checkpoints import WIDTH, reference_features, trained_checkpoint

from co_settle_hf.modeling_co_settle import CoSettleProjection
from co_settle_hf.official.importing import convert_trained
from co_settle_hf.official.layouts import ConversionError
from co_settle_hf.official.published import PUBLISHED

NAMES = list(PUBLISHED)
SIZES = [(224, 224), (160, 288)]  # the training size, and a DAVIS-like aspect where positions are interpolated


def pixels(size, seed=3):
    return torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(seed))


def projected(encoder, kind, projection, x):
    head = CoSettleProjection(encoder.hidden_size, kind)
    head.load_state_dict({key.removeprefix("projection."): value for key, value in projection.items()})
    tokens, _ = encoder.patch_tokens(x)
    return head(tokens)


@pytest.mark.parametrize("name", NAMES)
def test_backbone_conversion_matches_the_authors_forward(name, tmp_path):
    checkpoint = trained_checkpoint(name)
    encoder, kind, projection = convert_trained(checkpoint, PUBLISHED[name], f"{name}.pth")
    assert type(encoder.model).__name__ == {"dinov2": "Dinov2WithRegistersModel"}.get(name, PUBLISHED[name].layout.model_class)
    # Every backbone value landed: the converted model holds exactly as many values as the
    # authors' backbone minus what is listed as ignored (heads, text tower, CLIP's projection).
    kept = {key: value for key, value in checkpoint["model"].items() if "adapter." not in key}
    if name == "clip":
        kept = {key: value for key, value in kept.items() if key.startswith("visual.") and key != "visual.proj"}
    kept = {key: value for key, value in kept.items() if not key.startswith("head.")}
    assert sum(v.numel() for v in encoder.model.state_dict().values()) == sum(v.numel() for v in kept.values())
    for size in SIZES:
        x = pixels(size)
        assert torch.allclose(projected(encoder, kind, projection, x), reference_features(checkpoint, name, x), atol=2e-5, rtol=0)
    # The converted backbone is a standard transformers checkpoint: it reloads bit-identically.
    encoder.model.save_pretrained(tmp_path / "backbone")
    reloaded = getattr(transformers, type(encoder.model).__name__).from_pretrained(tmp_path / "backbone")
    for key, value in encoder.model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key


def test_architecture_is_read_from_shapes():
    """A ViT-S-like DINO (width 384, 6 heads, 3 blocks) converts as well as a ViT-B."""
    checkpoint = trained_checkpoint("dino", width=384, depth=3, grid=7)
    encoder, _, _ = convert_trained(checkpoint, PUBLISHED["dino"], "vits.pth")
    config = encoder.model.config
    assert (config.hidden_size, config.num_attention_heads, config.num_hidden_layers, config.image_size) == (384, 6, 3, 112)
    x = pixels((112, 112))
    assert torch.allclose(projected(encoder, *convert_trained(checkpoint, PUBLISHED["dino"], "vits.pth")[1:], x),
                          reference_features(checkpoint, "dino", x), atol=2e-5, rtol=0)


def test_file_of_another_family_names_the_family_it_looks_like():
    checkpoint = trained_checkpoint("clip")
    del checkpoint["args"]  # without the trainer's args, the keys alone tell
    with pytest.raises(ConversionError, match=r"clip\.pth looks like CLIP .*not like a DINO checkpoint"):
        convert_trained(checkpoint, PUBLISHED["dino"], "clip.pth")
    with pytest.raises(ConversionError, match=r"was trained on iBOT \(its args.base_model is 'ibot'\), not DINO: import it as 'ibot'"):
        convert_trained(trained_checkpoint("ibot"), PUBLISHED["dino"], "ibot.pth")


def test_leftover_and_missing_keys_are_named():
    checkpoint = trained_checkpoint("dino")
    checkpoint["model"]["blocks.0.attn.extra_bias"] = torch.zeros(3)
    with pytest.raises(ConversionError, match=r"not known to be ignorable: \['blocks.0.attn.extra_bias'\]"):
        convert_trained(checkpoint, PUBLISHED["dino"], "dino.pth")
    checkpoint = trained_checkpoint("dino")
    del checkpoint["model"]["blocks.1.mlp.fc2.bias"]
    with pytest.raises(ConversionError, match=r"lacks \['layers.1.mlp.fc2.bias'\]"):
        convert_trained(checkpoint, PUBLISHED["dino"], "dino.pth")


def test_text_tower_keys_must_be_known():
    checkpoint = trained_checkpoint("clip")
    checkpoint["model"]["some_text_head.weight"] = torch.zeros(2)
    with pytest.raises(ConversionError, match=r"beside the visual\. vision tower.*\['some_text_head.weight'\]"):
        convert_trained(checkpoint, PUBLISHED["clip"], "clip.pth")


def test_ddp_prefix_is_accepted():
    checkpoint = trained_checkpoint("mocov3")
    checkpoint["model"] = {f"module.{key}": value for key, value in checkpoint["model"].items()}
    encoder, _, _ = convert_trained(checkpoint, PUBLISHED["mocov3"], "mocov3.pth")
    assert encoder.model.config.num_attention_heads == 12 and encoder.hidden_size == WIDTH["mocov3"]


def assert_starts_as(linear: torch.nn.Linear, init: str) -> None:
    """The statistics each named initialisation gives a square Linear."""
    weight, bias, width = linear.weight.detach(), linear.bias.detach(), linear.in_features
    if init == "trunc_normal":  # std 0.02, truncated at +-2 (torch's absolute bounds), zero bias
        assert 0.015 < weight.std() < 0.025 and weight.abs().max() <= 2 and abs(weight.mean()) < 0.005 and not bias.any()
    elif init == "xavier":  # uniform in +-sqrt(6 / (fan_in + fan_out))
        bound = (6 / (2 * width)) ** 0.5
        assert weight.abs().max() <= bound and weight.abs().max() > 0.8 * bound and not bias.any()
    else:  # PyTorch's kaiming-uniform default: weights and biases within 1 / sqrt(fan_in)
        bound = width ** -0.5
        assert weight.abs().max() <= bound and weight.abs().max() > 0.8 * bound and bias.abs().max() <= bound and bias.any()


@pytest.mark.parametrize("init", ["trunc_normal", "xavier", "default"])
def test_projection_init_follows_the_family(init, tmp_path):
    from tiny_backbones import build_backbone, save_backbone

    from co_settle_hf import CoSettleModel

    backbone = str(save_backbone("vit", tmp_path / "vit"))
    torch.manual_seed(0)
    model = CoSettleModel.from_backbone(backbone, projection_init=init, projection="mlp2")
    for linear in model.projection.linears:
        assert_starts_as(linear, init)
    assert torch.equal(model.projection.norm.weight, torch.ones(model.config.hidden_size))
    model.save_pretrained(tmp_path / "adapter")
    assert CoSettleModel.from_pretrained(tmp_path / "adapter").config.projection_init == init
    assert f"| projection initialisation | `{init}` |" in (tmp_path / "adapter" / "README.md").read_text()
    with pytest.raises(ValueError, match="projection_init must be one of released, trunc_normal, xavier, default, identity; got 'orthogonal'"):
        CoSettleModel.from_backbone(build_backbone("vit"), projection_init="orthogonal")


@pytest.mark.parametrize(("model_type", "init"), [("dinov2", "trunc_normal"), ("clip_vision_model", "default"), ("vit_mae", "xavier")])
def test_released_init_is_the_family_s_and_recorded_by_name(model_type, init):
    from tiny_backbones import build_backbone

    from co_settle_hf import CoSettleConfig, CoSettleModel

    assert CoSettleConfig().projection_init == "released"  # the default, resolved when the backbone is known
    torch.manual_seed(0)
    model = CoSettleModel.from_backbone(build_backbone(model_type))
    assert model.config.projection_init == init  # what config.json and the card record
    assert_starts_as(model.projection.linears[0], init)
    bare = CoSettleModel(CoSettleConfig(hidden_size=32, base_model_type=model_type))  # built without a backbone
    assert bare.config.projection_init == "released"
    assert_starts_as(bare.projection.linears[0], init)


@pytest.mark.parametrize("projection", ["linear", "mlp2"])
def test_identity_init_starts_at_the_frozen_features(projection):
    from tiny_backbones import build_backbone

    from co_settle_hf import CoSettleModel
    from co_settle_hf.projection_init import PROJECTION_INITS

    backbone = build_backbone("dinov2")
    with torch.no_grad():  # give the tokens a per-token mean and a scale, as real final norms do
        backbone.layernorm.weight.uniform_(0.5, 3.0)
        backbone.layernorm.bias.normal_(0.0, 0.3)
    pixels = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    cosine = {}
    for init in ("identity", "trunc_normal"):
        model = CoSettleModel.from_backbone(backbone, projection_init=init, projection=projection)
        with torch.no_grad():
            output = model(pixels)
        cosine[init] = torch.nn.functional.cosine_similarity(output.features, output.backbone_features, dim=-1).mean()
    assert cosine["identity"] > 0.99 and abs(cosine["trunc_normal"]) < 0.5
    with pytest.raises(ValueError, match="projection_init 'identity' needs a square projection"):
        PROJECTION_INITS["identity"](torch.nn.Linear(4, 6), 0.02)
