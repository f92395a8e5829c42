"""Point tracking by feature matching on frozen (or adapted) patch features.

A query is a point (x, y) on its query frame. Its feature is sampled bilinearly from that frame's
unit-norm feature map (cell centres at ((i + 0.5) / w, (j + 0.5) / h) in normalised coordinates,
so the sampling is exact at a cell centre) and normalised again. On every frame, its cosine
similarity with every cell is computed; the best cell is the coarse match, and the position is
refined below the patch size by a soft-argmax over a ``window`` x ``window`` neighbourhood of it:
the mean of the cell centres weighted by softmax(similarity / ``temperature``) (cells outside the
grid take no part). The argmax first keeps the estimate from averaging distant look-alikes; the
local soft-argmax then gives sub-cell precision where neighbouring cells are similar. A point is
predicted occluded where its best similarity is below ``occlusion_threshold``: an occluded point has
no cell that looks like it. The tracker never looks at previous predictions, so it cannot drift,
and one wrong frame does not spoil the next.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .propagation import Knobs


@dataclass(frozen=True)
class TrackingSettings(Knobs):
    """Every knob of the matching tracker (module docstring), declared once."""

    window: int = 5
    temperature: float = 0.05
    occlusion_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.window < 1 or self.window % 2 == 0:
            raise ValueError(f"window must be an odd number of cells >= 1, got {self.window}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not -1 <= self.occlusion_threshold <= 1:
            raise ValueError(f"occlusion_threshold is a cosine similarity in [-1, 1], got {self.occlusion_threshold}")

    def label(self) -> str:
        return f"window{self.window}_temp{self.temperature:g}_occ{self.occlusion_threshold:g}"


def sample_features(feature_map: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Unit-norm features (N, D) at normalised (x, y) ``points`` (N, 2) of one (h, w, D) feature map, bilinearly."""
    grid = (points * 2 - 1).to(feature_map.dtype).view(1, 1, -1, 2)  # grid_sample's [-1, 1], align_corners=False
    sampled = F.grid_sample(feature_map.permute(2, 0, 1)[None], grid, mode="bilinear", padding_mode="border",
                            align_corners=False)
    return F.normalize(sampled[0, :, 0].T, dim=-1)


def _refine(similarity: torch.Tensor, settings: TrackingSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 2) normalised (x, y) and (N,) best similarity from (N, h, w) similarities (module docstring)."""
    n, h, w = similarity.shape
    best, index = similarity.reshape(n, -1).max(dim=1)
    row, col = index // w, index % w
    offsets = torch.arange(settings.window, device=similarity.device) - settings.window // 2
    rows = row[:, None, None] + offsets[None, :, None]  # (N, window, 1)
    cols = col[:, None, None] + offsets[None, None, :]  # (N, 1, window)
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    values = similarity[torch.arange(n, device=similarity.device)[:, None, None], rows.clamp(0, h - 1), cols.clamp(0, w - 1)]
    weights = torch.softmax(torch.where(inside, values / settings.temperature, -torch.inf).reshape(n, -1), dim=1)
    weights = weights.view_as(values)
    x = (weights * cols.to(weights.dtype)).sum(dim=(1, 2))
    y = (weights * rows.to(weights.dtype)).sum(dim=(1, 2))
    return torch.stack([(x + 0.5) / w, (y + 0.5) / h], dim=-1), best


def track_points(features: torch.Tensor, queries: torch.Tensor, settings: TrackingSettings
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Tracks (N, T, 2), normalised (x, y), and predicted occlusion (N, T) of ``queries`` (N, 3): (frame, x, y).

    ``features`` are unit-norm (T, h, w, D); results are on their device.
    """
    if features.ndim != 4:
        raise ValueError(f"features must be (T, h, w, D), got {tuple(features.shape)}")
    if queries.ndim != 2 or queries.shape[1] != 3:
        raise ValueError(f"queries must be (N, 3) rows of (frame, x, y), got {tuple(queries.shape)}")
    t = features.shape[0]
    frames = queries[:, 0].round().long()
    if len(frames) and (frames.min() < 0 or frames.max() >= t):
        raise ValueError(f"query frames must lie in 0..{t - 1}, got {frames.min().item()}..{frames.max().item()}")
    query_features = torch.zeros(len(queries), features.shape[-1], device=features.device, dtype=features.dtype)
    for frame in frames.unique().tolist():
        chosen = frames == frame
        query_features[chosen] = sample_features(features[frame], queries[chosen, 1:].to(features.device))
    positions, scores = zip(*(_refine(torch.einsum("hwd,nd->nhw", features[f], query_features), settings)
                              for f in range(t)))
    tracks, best = torch.stack(positions, dim=1), torch.stack(scores, dim=1)
    return tracks, best < settings.occlusion_threshold
