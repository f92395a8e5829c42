"""The image processor saved with every adapter: the base's own, with the adapter's normalisation and size.

Saving `preprocessor_config.json` next to the adapter makes `AutoImageProcessor.from_pretrained(adapter)`
and `pipeline("image-feature-extraction", model=adapter)` prepare images exactly as the adapter was
trained: the base checkpoint's processor class and options, with the adapter's mean, std and a square
resize to its training size (no centre crop, so the whole frame is encoded).
"""

from __future__ import annotations

import json
import os
from typing import Any

from .configuration_co_settle import CoSettleConfig

PROCESSOR_NAME = "preprocessor_config.json"
# For a base without a processor file: the plain ViT processor (resize, rescale to [0, 1], normalise).
FALLBACK = {"image_processor_type": "ViTImageProcessor", "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255}


def adapter_processor_settings(config: CoSettleConfig, base: dict[str, Any] | None) -> dict[str, Any]:
    """The base processor's settings (or the ViT fallback) with the adapter's mean/std and resize."""
    settings = dict(base or FALLBACK)
    size = int(config.image_size)
    settings.update(
        do_resize=True, size={"height": size, "width": size},
        do_normalize=True, image_mean=list(config.image_mean), image_std=list(config.image_std),
    )
    if "do_center_crop" in settings:
        settings["do_center_crop"] = False
    return settings


def save_image_processor(folder: str | os.PathLike, config: CoSettleConfig, base: dict[str, Any] | None) -> None:
    with open(os.path.join(folder, PROCESSOR_NAME), "w", encoding="utf-8") as handle:
        json.dump(adapter_processor_settings(config, base), handle, indent=2)
