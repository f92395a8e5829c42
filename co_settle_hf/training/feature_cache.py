"""Reuse of the frozen backbone's work: the three views of N augmented pairs, computed once.

The backbone never changes in Co-Settle, so the tokens of [frame 1, frame 2, frame 1 with a PEA
crop] for a pair, with its augmentation and PEA offset fixed, are the same at every step. This
cache computes them once (one backbone pass per batch, as the uncached step does) and trains the
projection on batches sampled from them. It differs from the published recipe, which draws a
fresh pair, fresh augmentations and a fresh PEA offset every step: here each cached pair keeps the
augmentation and offset it was drawn with, and is seen many times.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..objective.loss import ObjectiveOutput
from .forward import draw_pea, views_objective


def backbone_views(model: nn.Module, frames: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """(B, 3, h, w, D) frozen tokens of the three views of pairs ``frames`` (B, 2, 3, H, W).

    The same single 3B-image pass and the same PEA draw from ``generator`` as ``training_forward``.
    """
    core = getattr(model, "module", model)
    batch = frames.shape[0]
    grid = core.backbone.grid_size(*frames.shape[-2:])
    pea = draw_pea(core.config, batch, grid, generator, frames.device)
    with torch.no_grad():
        tokens, (h, w) = core.backbone.patch_tokens(torch.cat([frames[:, 0], frames[:, 1], frames[:, 0]]), pea=pea)
    return tokens.reshape(3, batch, h, w, -1).transpose(0, 1)


def cached_objective(model: nn.Module, views: Tensor) -> ObjectiveOutput:
    """Loss and metrics of one step on cached views (B, 3, h, w, D): only the projection runs."""
    core = getattr(model, "module", model)
    grid = tuple(views.shape[2:4])
    z = views.flatten(2, 3)
    return views_objective(core.config, z, core.project(z), grid)


class FeatureCache:
    """The cached views of N pairs, in memory; ``save``/``load`` keep them as safetensors."""

    def __init__(self, views: Tensor) -> None:
        if views.ndim != 5 or views.shape[1] != 3:
            raise ValueError(f"cached views must be (N, 3, h, w, D), got {tuple(views.shape)}")
        self.views = views

    @classmethod
    def build(cls, model: nn.Module, batches: Iterable[tuple[Tensor, torch.Generator]], num_pairs: int) -> "FeatureCache":
        """The views of the first ``num_pairs`` pairs of ``batches`` ((frames, PEA generator) each)."""
        parts, count = [], 0
        for frames, generator in batches:
            parts.append(backbone_views(model, frames, generator)[: num_pairs - count])
            count += len(parts[-1])
            if count >= num_pairs:
                break
        if count < num_pairs:
            raise ValueError(f"feature_cache_pairs={num_pairs}, but the data gave only {count} pairs")
        return cls(torch.cat(parts))

    def __len__(self) -> int:
        return len(self.views)

    def sample(self, batch: int, generator: torch.Generator) -> Tensor:
        """``batch`` cached pairs drawn uniformly without replacement (with, if the cache is smaller)."""
        if batch <= len(self):
            index = torch.randperm(len(self), generator=generator)[:batch]
        else:
            index = torch.randint(len(self), (batch,), generator=generator)
        return self.views[index.to(self.views.device)]

    def save(self, path: str | Path) -> None:
        save_file({"views": self.views.contiguous().cpu()}, str(path))

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> "FeatureCache":
        return cls(load_file(str(path), device=str(device))["views"])
