"""The table of differences between the vision transformers Co-Settle supports.

Every backbone goes through one code path (`backbones.encoder.BackboneEncoder`); what differs
between families is data, listed here: where the vision tower sits in a checkpoint, how many
prefix tokens precede the patch tokens, where the positional embeddings live and of which kind,
and whether the final norm still has to be applied to the patch tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from transformers import image_utils

from ..errors import SettingsError

PositionKind = Literal["learned", "sincos", "rotary", "relative"]

# transformers' own constants, as tuples (a dataclass default must not be a list).
IMAGENET_MEAN, IMAGENET_STD = tuple(image_utils.IMAGENET_DEFAULT_MEAN), tuple(image_utils.IMAGENET_DEFAULT_STD)
OPENAI_CLIP_MEAN, OPENAI_CLIP_STD = tuple(image_utils.OPENAI_CLIP_MEAN), tuple(image_utils.OPENAI_CLIP_STD)
HALF = tuple(image_utils.IMAGENET_STANDARD_MEAN)


def _cls(config: Any) -> int:
    return 1


def _none(config: Any) -> int:
    return 0


def _cls_and_registers(config: Any) -> int:
    return 1 + int(getattr(config, "num_register_tokens", 0) or 0)


@dataclass(frozen=True)
class BackboneFamily:
    """How one family of transformers vision models differs from the others.

    Attributes:
        name: human-readable family name, used in errors and model cards.
        model_types: the `config.model_type` values of standalone vision models of this family.
        positions: kind of positional information, which decides how PEA is applied.
        pos_embed: attribute path (from the vision model) of the absolute position table, if any.
        pos_prefix: rows of that table before the patch rows (CLS, distillation token).
        prefix_tokens: number of tokens before the patch tokens in the final hidden states.
        final_norm: module (attribute path) to apply to patch tokens the model leaves un-normed.
        multimodal_types: `model_type` of full checkpoints holding this tower as `vision_model`.
        model_class: transformers class to instantiate when `AutoModel` does not know the config.
        image_mean / image_std: fallback normalisation when the checkpoint has no processor file.
        load_kwargs: config overrides needed at load time (ViTMAE must not mask).
        in_order_noise: pass `noise=arange(N)` so ViTMAE keeps every token in order.
    """

    name: str
    model_types: tuple[str, ...]
    positions: PositionKind
    pos_embed: str | None = None
    pos_prefix: int = 1
    prefix_tokens: Callable[[Any], int] = _cls
    final_norm: str | None = None
    multimodal_types: tuple[str, ...] = ()
    model_class: str | None = None
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    load_kwargs: dict[str, Any] = field(default_factory=dict)
    in_order_noise: bool = False


FAMILIES: tuple[BackboneFamily, ...] = (
    BackboneFamily("ViT (incl. DINO v1)", ("vit",), "learned", "embeddings.position_embeddings"),
    BackboneFamily(
        "DeiT", ("deit",), "learned", "embeddings.position_embeddings", pos_prefix=2,
        prefix_tokens=lambda config: 2,
    ),
    BackboneFamily(
        "DINOv2", ("dinov2",), "learned", "embeddings.position_embeddings",
    ),
    BackboneFamily(
        "DINOv2 with registers", ("dinov2_with_registers",), "learned",
        "embeddings.position_embeddings", prefix_tokens=_cls_and_registers,
    ),
    BackboneFamily("DINOv3 ViT", ("dinov3_vit",), "rotary", prefix_tokens=_cls_and_registers),
    BackboneFamily(
        "CLIP vision", ("clip_vision_model",), "learned", "embeddings.position_embedding.weight",
        final_norm="post_layernorm", multimodal_types=("clip",),
        image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD,
    ),
    BackboneFamily(
        "SigLIP vision", ("siglip_vision_model",), "learned",
        "embeddings.position_embedding.weight", pos_prefix=0, prefix_tokens=_none,
        multimodal_types=("siglip",), image_mean=HALF, image_std=HALF,
    ),
    BackboneFamily(
        "BLIP vision", ("blip_vision_model",), "learned", "embeddings.position_embedding",
        multimodal_types=("blip",), model_class="BlipVisionModel",
        image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD,
    ),
    BackboneFamily(
        "ViTMAE", ("vit_mae",), "sincos", "embeddings.position_embeddings",
        load_kwargs={"mask_ratio": 0.0}, in_order_noise=True,
    ),
    BackboneFamily(
        "I-JEPA", ("ijepa",), "learned", "embeddings.position_embeddings", pos_prefix=0,
        prefix_tokens=_none,
    ),
    BackboneFamily(  # absolute embeddings only with use_absolute_position_embeddings=True
        "BEiT / Data2Vec-Vision", ("beit", "data2vec-vision"), "relative", "embeddings.position_embeddings",
        final_norm="pooler.layernorm",
    ),
)


class UnsupportedBackboneError(SettingsError):
    """Raised for a model whose family Co-Settle does not know."""


def supported_model_types() -> list[str]:
    return sorted({t for f in FAMILIES for t in f.model_types + f.multimodal_types})


def family_for(model_type: str, name: str | None = None) -> BackboneFamily:
    """The family of a `config.model_type` (vision tower or full multimodal checkpoint)."""
    for family in FAMILIES:
        if model_type in family.model_types or model_type in family.multimodal_types:
            return family
    families = "; ".join(f"{f.name}: {', '.join(f.model_types + f.multimodal_types)}" for f in FAMILIES)
    subject = f"{name!r} (model_type {model_type!r})" if name else f"model_type {model_type!r}"
    raise UnsupportedBackboneError(
        f"Backbone {subject} is not supported by co-settle-hf. Supported families: {families}."
    )
