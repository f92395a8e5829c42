"""A feature cache: each video's backbone tokens computed once, then reused by every setting and adapter.

The backbone is the cost of an evaluation; a sweep over top-k or temperatures changes nothing
it computes. Entries are safetensors files keyed by the model (its Hub commit, or a digest of
its weights), the input size and the frame files (path, size, modification time), so a changed
model, size or frame never reads stale features. Writes are staged and renamed into place (`co_settle_hf.staging`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from safetensors.torch import load_file, save_file

from ..staging import staged_file

#: Encoder attributes that change its features without changing its weights.
FEATURE_SETTINGS = ("apply_final_norm", "position_interpolation", "autocast_dtype")


def model_fingerprint(encoder: Any) -> str:
    """What identifies the features an encoder computes: its ``cache_key``, or its Hub commit, its
    weights, its feature settings and (for an adapter, whose state dict is the projection) its backbone's."""
    key = getattr(encoder, "cache_key", None)
    if key:
        return str(key)
    modules = [m for m in (encoder, getattr(encoder, "model", None)) if isinstance(m, torch.nn.Module)]
    commit = next((getattr(getattr(m, "config", None), "_commit_hash", None) for m in modules), None)
    digest = hashlib.sha256(type(encoder).__qualname__.encode())
    if commit:
        digest.update(str(commit).encode())
    for setting in FEATURE_SETTINGS:
        digest.update(f"{setting}={getattr(encoder, setting, None)}".encode())
    if isinstance(getattr(encoder, "backbone", None), torch.nn.Module):
        digest.update(model_fingerprint(encoder.backbone).encode())
    for module in modules[:1]:
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class FeatureCache:
    """Features of (model, input size, frames) in ``folder``; see the module docstring."""

    def __init__(self, folder: str | Path, encoder: Any):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.model = model_fingerprint(encoder)
        self.hits = self.misses = 0

    def describe(self, frames: Sequence[Path], size: Sequence[int], item: str | None = None) -> dict[str, Any]:
        """The key's parts; ``item`` names one video of a file that holds several (a TAP-Vid pickle)."""
        stats = [(str(Path(p).resolve()), os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in frames]
        return {"model": self.model, "size": [int(s) for s in size], "frames": stats, **({"item": item} if item else {})}

    def path(self, description: dict[str, Any]) -> Path:
        key = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()
        return self.folder / key[:2] / f"{key}.safetensors"

    def get(self, frames: Sequence[Path], size: Sequence[int], compute: Callable[[], torch.Tensor],
            item: str | None = None) -> torch.Tensor:
        """The cached features of these frames (of ``item`` in them) at this size, or ``compute()`` stored for next time."""
        description = self.describe(frames, size, item)
        path = self.path(description)
        if path.is_file():
            try:
                self.hits += 1
                return load_file(path)["features"]
            except (OSError, ValueError, KeyError) as error:  # a damaged entry is recomputed
                print(f"feature cache: ignoring unreadable {path} ({error})", flush=True)
                self.hits -= 1
        self.misses += 1
        features = compute()
        with staged_file(path) as temporary:
            save_file({"features": features.detach().cpu().contiguous()}, str(temporary),
                      metadata={"description": json.dumps(description)[:60000]})
        return features
