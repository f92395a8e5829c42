"""The paper's eight published models: where they are, how they are built, what the authors report.

One row per model (`PUBLISHED`); everything that differs between the eight is data here, read by
one import path (`official.importing`). The feature settings follow each model file's
`forward_features_eval_metric` in the authors' code (SPEC.md section 8), the numbers are the
paper's (SPEC.md section 4).
"""

from __future__ import annotations

from dataclasses import dataclass

from .layouts import BLIP, CLIP, DINOV2, IJEPA, VIT, VIT_MAE, Layout

AUTHORS_REPO = "yafeng19/Co-Settle"
CODE_REPO = "https://github.com/yafeng19/Co-Settle"

_TEXT_TOWER = (r"positional_embedding", r"text_projection", r"logit_scale", r"token_embedding\.weight",
               r"ln_final\.(weight|bias)", r"transformer\.resblocks\.\d+\..+", r"input_resolution",
               r"context_length", r"vocab_size")


@dataclass(frozen=True)
class PublishedModel:
    """One of the authors' released models.

    Attributes:
        name: the name used on the command line and in `ckpts/ours/<name>+ours/`.
        title: the backbone as the paper names it.
        layout: the authors' key layout and the transformers class it converts to.
        base_file: the untouched base checkpoint under `ckpts/base/`.
        hub_base: the same base on the Hub in transformers format, recorded as `base_model`.
        projection_init: how the authors initialise a fresh projection for this backbone.
        position_interpolation: how their model file interpolates positions at other sizes.
        final_norm: whether their evaluation forward applies the backbone's final norm.
        num_heads: attention heads when the family does not use 64-wide heads.
        ignored: regexes of the model's keys that are not the backbone (decoders, heads, projections).
        outside: regexes of keys allowed beside the vision tower when it sits under `visual.`.
        looks_like: how a file of this family is recognised, for errors about the wrong family.
        reported: (task, metric) -> (base, with Co-Settle), the paper's ViT-B/16 numbers.
    """

    name: str
    title: str
    layout: Layout
    base_file: str
    hub_base: str | None
    projection_init: str
    position_interpolation: str
    reported: dict[tuple[str, str], tuple[float, float]]
    final_norm: bool = True
    num_heads: int | None = None
    ignored: tuple[str, ...] = ()
    outside: tuple[str, ...] = ()
    looks_like: str = "timm"

    @property
    def checkpoint(self) -> str:
        return f"ckpts/ours/{self.name}+ours/checkpoint.pth"


def _reported(davis: tuple[float, float], vip: tuple[float, float], pck1: tuple[float, float], pck2: tuple[float, float]) -> dict:
    return {("davis", "J&F-Mean"): davis, ("vip", "mIoU"): vip, ("jhmdb", "PCK@0.1"): pck1, ("jhmdb", "PCK@0.2"): pck2}


PUBLISHED: dict[str, PublishedModel] = {model.name: model for model in (
    PublishedModel("mae", "MAE", VIT_MAE, "ckpts/base/MAE_INet_vitb16_800ep/checkpoint.pth", None, "xavier", "dino",
                   _reported((52.4, 59.6), (29.3, 33.8), (41.6, 48.4), (69.3, 76.7)),
                   ignored=(r"decoder_.+", r"mask_token")),
    PublishedModel("ijepa", "I-JEPA", IJEPA, "ckpts/base/IJEPA_INet_vitb16_800ep/ijepa-ep800.pth.tar", None, "trunc_normal", "dino",
                   _reported((53.9, 58.7), (31.5, 35.3), (42.6, 44.4), (71.4, 73.2)), final_norm=False, looks_like="ijepa"),
    PublishedModel("clip", "CLIP", CLIP, "ckpts/base/CLIP_vitb16/ViT-B-16.pt", "openai/clip-vit-base-patch16", "default", "antialias",
                   _reported((54.9, 58.3), (38.1, 39.2), (36.9, 40.6), (67.7, 71.4)), ignored=(r"proj",), outside=_TEXT_TOWER, looks_like="clip"),
    PublishedModel("blip", "BLIP", BLIP, "ckpts/base/BLIP_vitb16/model_base_retrieval_coco.pth", "Salesforce/blip-itm-base-coco",
                   "trunc_normal", "antialias", _reported((58.8, 62.0), (37.6, 39.6), (35.1, 38.9), (65.9, 70.2))),
    PublishedModel("mocov3", "MoCo v3", VIT, "ckpts/base/mocov3_INet_vitb16_300ep/vit-b-300ep.pth.tar", None, "xavier", "dino",
                   _reported((62.6, 62.9), (38.8, 39.8), (43.6, 45.3), (73.5, 75.0)), num_heads=12,
                   ignored=(r"head\.(weight|bias)",), looks_like="mocov3"),
    PublishedModel("ibot", "iBOT", VIT, "ckpts/base/iBot_INet_vitb16_400ep/checkpoint_teacher_vitb-16.pth", None, "trunc_normal", "dino",
                   _reported((64.6, 65.1), (39.6, 40.8), (45.7, 46.1), (75.3, 75.8)), ignored=(r"masked_embed",)),
    PublishedModel("dino", "DINO", VIT, "ckpts/base/DINO_vitb16/dino_vitbase16_pretrain.pth", "facebook/dino-vitb16", "trunc_normal", "dino",
                   _reported((63.2, 64.2), (39.1, 39.8), (44.4, 46.2), (74.2, 75.2))),
    PublishedModel("dinov2", "DINOv2", DINOV2, "ckpts/base/DINOv2_INet_vitb16_100ep/checkpoint.pth", None, "trunc_normal", "antialias",
                   _reported((63.1, 63.7), (38.4, 39.9), (46.6, 47.3), (76.3, 76.8)), looks_like="dinov2"),
)}

LOOKS_LIKE = {
    "clip": "CLIP (OpenAI layout: visual.transformer.resblocks.N.attn.in_proj_weight)",
    "dinov2": "DINOv2 (blocks.N.ls1.gamma layer scale or register_tokens)",
    "ijepa": "I-JEPA (pos_embed without a CLS row, no cls_token)",
    "mocov3": "MoCo v3 (a timm ViT with a classifier head.weight)",
    "timm": "a timm-style ViT with a CLS token (MAE, DINO, iBOT or BLIP)",
}


def looks_like(state: dict) -> str:
    """Which family a state dict's keys point to (a key of LOOKS_LIKE), from keys that tell them apart."""
    keys = set(state)
    if any(key.endswith("attn.in_proj_weight") for key in keys) and "conv1.weight" in keys:
        return "clip"
    dinov2_mask = "mask_token" in keys and "cls_token" in keys and getattr(state["mask_token"], "ndim", 0) == 2
    if "register_tokens" in keys or dinov2_mask or any(key.endswith("ls1.gamma") for key in keys):
        return "dinov2"
    if "pos_embed" in keys and "cls_token" not in keys:
        return "ijepa"
    if "head.weight" in keys and "cls_token" in keys:
        return "mocov3"
    return "timm"
