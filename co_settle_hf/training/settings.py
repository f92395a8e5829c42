"""What a run records about itself, what a resume must keep, and what never leaves the process.

Every checkpoint records the run's settings. On resume they are compared in three kinds:

- REPLAYED settings define the data, the batches and the model; a change would make the resumed
  run a different run (or crash on load), so it is refused, listing every difference.
- APPLIED settings (learning rate, weight decay, schedule, length) can meaningfully change in
  the middle of a run: the new value is applied from the checkpoint's step on, and reported.
- Everything else (logging, checkpoint cadence, tracking, workers, pushing) is free.

Secrets (any setting named like a token, password, key or credential) are dropped from
everything written: the tracker config, the logs, the model card and the recorded settings.
"""

from __future__ import annotations

import re
from typing import Any

SECRET_NAME = re.compile(r"token|secret|passw|credential|auth|(^|_)(api_?)?keys?($|_)", re.IGNORECASE)

REPLAYED = (
    "processes", "per_device_train_batch_size", "gradient_accumulation_steps", "seed", "clip_repeats",
    "data", "dataset_config_name", "train_split", "video_column", "streaming", "clips", "clip_seconds", "split_at_cuts",
    "max_train_samples", "image_size", "frame_gap", "imagenet_normalization", "resize", "crop_rule",
    "model_name_or_path", "backbone_revision", "hidden_size", "projection", "projection_init", "cycle_temperature", "pool_size",
    "pea_alpha", "no_pea", "pea_mode", "pea_per_sample", "separability", "kl_direction", "separability_weight",
    "mixed_precision", "backbone_precision",
)
#: The replayed settings that decide a feature cache's views (a cache file made with others is refused).
VIEWS = (
    "per_device_train_batch_size", "seed", "clip_repeats", "data", "dataset_config_name", "train_split", "video_column",
    "clips", "clip_seconds", "split_at_cuts", "max_train_samples", "image_size", "frame_gap", "imagenet_normalization",
    "resize", "crop_rule", "model_name_or_path", "backbone_revision", "backbone_precision", "pea_alpha", "no_pea", "pea_mode",
    "pea_per_sample", "feature_cache_pairs",
)
APPLIED = ("learning_rate", "weight_decay", "lr_scheduler_type", "warmup_steps", "max_steps")


def is_secret(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


def public(settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` without secrets: what may be written to disk, trackers or the Hub."""
    return {name: value for name, value in settings.items() if not is_secret(name)}


def differences(saved: dict[str, Any], current: dict[str, Any], names: tuple[str, ...]) -> dict[str, tuple[Any, Any]]:
    """The settings among `names` whose saved and current values differ: {name: (saved, now)}."""
    return {name: (saved.get(name), current.get(name)) for name in names if saved.get(name) != current.get(name)}


def describe(changes: dict[str, tuple[Any, Any]]) -> str:
    return "; ".join(f"{name}: {old!r} -> {new!r}" for name, (old, new) in changes.items())
