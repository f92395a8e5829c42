"""Load what `--model` names: a Co-Settle adapter or a bare backbone, as evaluation encoders."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AutoConfig

from ..backbones.encoder import BACKBONE_PRECISIONS, BackboneEncoder
from ..errors import SettingsError
from ..modeling_co_settle import CoSettleModel


@dataclass
class LoadedModel:
    """What to measure: the encoder `--model` names, and the frozen base when it is an adapter."""

    name: str
    encoder: CoSettleModel | BackboneEncoder
    base: BackboneEncoder | None
    adapter: CoSettleModel | None


def load_for_evaluation(name_or_path: str, revision: str | None = None, device: str | None = None,
                        precision: str = "fp32") -> LoadedModel:
    """An adapter (path or Hub id; its base comes along) or any supported backbone, its backbone run in ``precision``."""
    try:
        config = AutoConfig.from_pretrained(name_or_path, revision=revision)
    except (OSError, ValueError) as error:
        raise SettingsError(f"--model {name_or_path}: not an adapter or backbone that can be loaded ({error})") from None
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if config.model_type == "co_settle":
        adapter = CoSettleModel.from_pretrained(name_or_path, revision=revision).to(device)
        adapter.backbone.autocast_dtype = BACKBONE_PRECISIONS[precision]
        return LoadedModel(name_or_path, adapter, adapter.backbone, adapter)
    backbone = BackboneEncoder.from_pretrained(name_or_path, revision=revision)
    backbone.model.to(device)
    backbone.autocast_dtype = BACKBONE_PRECISIONS[precision]
    return LoadedModel(name_or_path, backbone, None, None)
