"""Reuse of the frozen backbone's work: the three views of N augmented pairs, computed once.

The backbone never changes in Co-Settle, so the tokens of [frame 1, frame 2, frame 1 with a PEA
crop] for a pair, with its augmentation and PEA offset fixed, are the same at every step. This
cache computes them once (one backbone pass per batch, as the uncached step does) and trains the
projection on batches drawn from them (each pair once per pass over the cache). It differs from the published recipe, which draws a
fresh pair, fresh augmentations and a fresh PEA offset every step: here each cached pair keeps the
augmentation and offset it was drawn with, and is seen many times.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..data import sample_generator
from ..errors import CheckpointError
from ..objective.loss import ObjectiveOutput
from ..staging import staged_file
from .forward import draw_pea, views_objective
from .settings import describe, differences


def backbone_views(model: nn.Module, frames: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """(B, 3, h, w, D) frozen tokens of the three views of pairs ``frames`` (B, 2, 3, H, W).

    The same single 3B-image pass and the same PEA draw from ``generator`` as ``training_forward``.
    """
    core = getattr(model, "module", model)
    batch = frames.shape[0]
    grid = core.backbone.grid_size(*frames.shape[-2:])
    pea = draw_pea(core.config.objective, batch, grid, generator, frames.device)
    with torch.no_grad():
        tokens, (h, w) = core.backbone.patch_tokens(torch.cat([frames[:, 0], frames[:, 1], frames[:, 0]]), pea=pea)
    return tokens.reshape(3, batch, h, w, -1).transpose(0, 1)


def cached_objective(model: nn.Module, views: Tensor) -> ObjectiveOutput:
    """Loss and metrics of one step on cached views (B, 3, h, w, D): only the projection runs."""
    core = getattr(model, "module", model)
    grid = tuple(views.shape[2:4])
    z = views.flatten(2, 3)
    return views_objective(core.config.objective, z, core.project(z), grid)


class PairViewCache:
    """The cached views of N training pairs, in memory; ``save``/``load`` keep them as safetensors.

    Not the evaluation's :class:`~co_settle_hf.evaluation.cache.FeatureCache`, which keeps each video's
    tokens on disk keyed by model, size and frame files: these are augmented pairs keyed by the run's settings.
    """

    def __init__(self, views: Tensor) -> None:
        if views.ndim != 5 or views.shape[1] != 3:
            raise ValueError(f"cached views must be (N, 3, h, w, D), got {tuple(views.shape)}")
        self.views = views

    @classmethod
    def build(cls, model: nn.Module, batches: Iterable[tuple[Tensor, torch.Generator]], num_pairs: int) -> "PairViewCache":
        """The views of the first ``num_pairs`` pairs of ``batches`` ((frames, PEA generator) each)."""
        parts, count = [], 0
        with tqdm(total=num_pairs, desc="caching views", unit="pair") as progress:
            for frames, generator in batches:
                parts.append(backbone_views(model, frames, generator)[: num_pairs - count])
                count += len(parts[-1])
                progress.update(len(parts[-1]))
                if count >= num_pairs:
                    break
        if count < num_pairs:
            raise ValueError(f"feature_cache_pairs={num_pairs}, but the data gave only {count} pairs")
        return cls(torch.cat(parts))

    def __len__(self) -> int:
        return len(self.views)

    def epoch_batches(self, batch: int, steps: int, seed: int, epoch: int, skip: int = 0) -> Iterator[Tensor]:
        """Batches ``skip`` to ``steps`` of an epoch: the cached pairs in an order keyed on (seed, epoch),
        each seen once before any is seen again (so a replayed epoch draws the same batches)."""
        generator = sample_generator(seed, epoch, 1 << 41)
        rounds = math.ceil(steps * batch / len(self))
        order = torch.cat([torch.randperm(len(self), generator=generator) for _ in range(rounds)])
        for step in range(skip, steps):
            yield self.views[order[step * batch:(step + 1) * batch].to(self.views.device)]

    def save(self, path: str | Path, settings: dict[str, Any] | None = None) -> None:
        """Write the views (and the ``settings`` they were made with, as metadata) atomically."""
        path = Path(path)
        with staged_file(path) as partial:
            save_file({"views": self.views.contiguous().cpu()}, str(partial), metadata={"settings": json.dumps(settings or {})})

    @classmethod
    def load(cls, path: str | Path, settings: dict[str, Any] | None = None, device: torch.device | str = "cpu") -> "PairViewCache":
        """The views of ``path``; with ``settings``, refused unless they were made with the same ones."""
        if settings is not None:
            with safe_open(str(path), "pt") as handle:
                saved = json.loads((handle.metadata() or {}).get("settings", "{}"))
            changed = differences(saved, settings, tuple(settings))
            if changed:
                raise CheckpointError(f"--feature_cache_file {path} was made with other settings: {describe(changed)}")
        return cls(load_file(str(path), device=str(device))["views"])
