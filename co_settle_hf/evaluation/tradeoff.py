"""The consistency-separability trade-off of SPEC section 5, measured on raw patch features.

D_intra (how far patches drift between adjacent frames of one video) and D_inter (how far the
same patch position lies apart in different videos), both divided by a diameter of the feature
cloud so that encoders with different feature scales compare; the margin
D = D_inter - gamma * D_intra (gamma = 0.3, higher is better); plus the cycle accuracy on
fixed frame pairs and the effective rank of the middle frames' features.

Distances and the effective rank use the features exactly as the encoder returns them (the
frozen backbone's normed tokens, or the projection's LayerNorm output), NOT L2-normalised, as
the authors' ``cal_metric.py`` does. Only the cycle accuracy L2-normalises, because it is the
training metric of SPEC section 2, which walks on unit-norm tokens (the released script walks
on the raw features). Prefix tokens (CLS, registers) are never part of the features here; the
released script keeps the base backbone's CLS token in its distances. All metric arithmetic
runs in float64 so that near-zero distances between almost identical patches are not rounding
noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from co_settle_hf.evaluation.features import DenseEncoder, encode_images
from co_settle_hf.objective.cycle import cycle_consistency_loss

#: Frame pairs (as fractions of the video length T) for the cycle accuracy, as released.
CYCLE_FRACTIONS: tuple[tuple[float, float], ...] = (
    (0.25, 0.40), (0.35, 0.50), (0.45, 0.60), (0.55, 0.70), (0.65, 0.80)
)
#: Frames dropped at each end of a video before D_intra (fades, cuts and black frames live there).
EDGE_FRAMES = 3
#: Added to every diameter before dividing, as released, so a constant video does not divide by 0.
DIAMETER_EPS = 1e-8


def _as_tokens(features: Tensor, name: str) -> Tensor:
    """A detached float64 copy of a feature tensor (shape unchanged, at least (n, D))."""
    if not isinstance(features, Tensor) or features.ndim < 2:
        got = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"{name} must be a feature tensor (..., h, w, D) or (..., P, D), got {got}")
    return features.detach().to(torch.float64)


def _video_tokens(features: Tensor, name: str) -> Tensor:
    """One video's features (T, h, w, D) or (T, P, D) -> float64 (T, P, D)."""
    f = _as_tokens(features, name)
    if f.ndim == 4:
        f = f.flatten(1, 2)
    if f.ndim != 3:
        raise ValueError(f"{name} must be (T, h, w, D) or (T, P, D), got {tuple(features.shape)}")
    return f


def _radius(points: Tensor) -> Tensor:
    """Largest distance of any row of (n, D) to the rows' mean."""
    return (points - points.mean(dim=0, keepdim=True)).norm(dim=-1).max()


def intra_video_distance(features: Tensor) -> float:
    """D_intra of one video (T, h, w, D): normalised nearest-neighbour drift between adjacent frames.

    Frames 3 .. T-4 are kept; for each adjacent pair every patch's nearest L2 distance in the
    next frame is taken, the smallest 50 % (at least one) are averaged, pairs are averaged, and
    the result is divided by 2 x the largest distance of any patch of the WHOLE video (all T
    frames) to the video's mean patch.
    """
    f = _video_tokens(features, "features")
    t, p, _ = f.shape
    if t < 2 * EDGE_FRAMES + 2:
        raise ValueError(f"D_intra needs at least {2 * EDGE_FRAMES + 2} frames per video, got T={t}")
    kept = f[EDGE_FRAMES : t - EDGE_FRAMES]
    nearest = torch.cdist(kept[:-1], kept[1:]).amin(dim=-1)  # (pairs, P)
    k = max(1, int(p * 0.5))
    per_pair = nearest.topk(k, dim=-1, largest=False).values.mean(dim=-1)
    return float(per_pair.mean() / (2 * _radius(f.reshape(-1, f.shape[-1])) + DIAMETER_EPS))


def d_intra(features_per_video: Sequence[Tensor]) -> float:
    """D_intra over videos: the mean of :func:`intra_video_distance` (each video (T, h, w, D))."""
    if len(features_per_video) == 0:
        raise ValueError("features_per_video is empty: D_intra needs at least one video")
    return sum(intra_video_distance(f) for f in features_per_video) / len(features_per_video)


def middle_frame_index(num_frames: int) -> int:
    """The representative frame of a video of T frames: T // 2, as released."""
    return num_frames // 2


def sample_patch_positions(num_positions: int, num_patches: int = 8, seed: int = 42) -> Tensor:
    """`num_patches` distinct random patch indices out of `num_positions` (all of them if fewer).

    A private generator seeded with `seed` makes the draw depend on nothing but its arguments,
    so every encoder measured on the same grid sees the same positions.
    """
    if num_positions < 1 or num_patches < 1:
        raise ValueError(f"need positive num_positions and num_patches, got {num_positions}, {num_patches}")
    if num_positions <= num_patches:
        return torch.arange(num_positions)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(num_positions, generator=generator)[:num_patches]


def d_inter(
    middle_features: Tensor | Sequence[Tensor],
    positions: Tensor | None = None,
    *,
    num_patches: int = 8,
    seed: int = 42,
) -> float:
    """D_inter: how far apart the same patch positions lie in the middle frames of different videos.

    Args:
        middle_features: (N, h, w, D) or (N, P, D), one middle frame per video (or a sequence
            of (h, w, D) / (P, D) tensors), N >= 2.
        positions: patch indices (row-major over h x w) to compare; default
            :func:`sample_patch_positions` (P, num_patches, seed).

    Returns:
        mean over video pairs of the mean L2 distance between same-position patches, divided by
        2 x the largest distance of those sampled patches to their global mean.
    """
    if not isinstance(middle_features, Tensor):
        if len(middle_features) == 0:
            raise ValueError("middle_features is empty: D_inter needs at least two videos")
        middle_features = torch.stack([_as_tokens(m, "middle_features") for m in middle_features])
    m = _video_tokens(middle_features, "middle_features")
    n, p, d = m.shape
    if n < 2:
        raise ValueError(f"D_inter needs at least two videos, got {n}")
    if positions is None:
        positions = sample_patch_positions(p, num_patches, seed)
    positions = torch.as_tensor(positions, dtype=torch.long)
    if positions.ndim != 1 or positions.numel() == 0 or positions.min() < 0 or positions.max() >= p:
        raise ValueError(f"positions must be a non-empty 1-D index into {p} patches, got {positions.tolist()}")
    sampled = m[:, positions]  # (N, K, D)
    pair_distance = (sampled[:, None] - sampled[None]).norm(dim=-1).mean(dim=-1)  # (N, N)
    i, j = torch.triu_indices(n, n, offset=1)
    mean_distance = pair_distance[i, j].mean()
    return float(mean_distance / (2 * _radius(sampled.reshape(-1, d)) + DIAMETER_EPS))


def tradeoff_margin(d_inter_value: float, d_intra_value: float, gamma: float = 0.3) -> float:
    """D = D_inter - gamma * D_intra (higher is better)."""
    return d_inter_value - gamma * d_intra_value


def _pair_indices(num_frames: int, fractions: Iterable[tuple[float, float]]) -> tuple[list[int], list[int]]:
    first, second = [], []
    for a, b in fractions:
        if not (0 <= a <= 1 and 0 <= b <= 1):
            raise ValueError(f"frame fractions must lie in [0, 1], got ({a}, {b})")
        first.append(min(int(a * num_frames), num_frames - 1))
        second.append(min(int(b * num_frames), num_frames - 1))
    if not first:
        raise ValueError("fractions is empty")
    return first, second


def cycle_accuracy_at_fractions(
    features_per_video: Sequence[Tensor],
    fractions: Sequence[tuple[float, float]] = CYCLE_FRACTIONS,
    temperature: float = 0.03,
    pool: int = 2,
) -> float:
    """Share of pooled nodes whose walk frame t1 -> t2 -> t1 comes home, over videos and pairs.

    For a video of T frames the pairs are (int(a T), int(b T)) for (a, b) in `fractions`. The
    tokens are L2-normalised and walked as in training (SPEC section 2) but without PEA, so the
    backward view is frame t1 itself. Every video contributes the same number of nodes per pair,
    so the mean over videos equals the share over all nodes.
    """
    if len(features_per_video) == 0:
        raise ValueError("features_per_video is empty: cycle accuracy needs at least one video")
    accuracies = []
    for index, features in enumerate(features_per_video):
        if not isinstance(features, Tensor) or features.ndim != 4:
            got = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
            raise ValueError(f"features_per_video[{index}] must be (T, h, w, D), got {got}")
        t, h, w, d = features.shape
        first, second = _pair_indices(t, fractions)
        tokens = F.normalize(features.detach().float().reshape(t, h * w, d), dim=-1)
        p1, p2 = tokens[first], tokens[second]
        _, accuracy = cycle_consistency_loss(p1, p2, p1, (h, w), temperature=temperature, pool=pool)
        accuracies.append(float(accuracy))
    return sum(accuracies) / len(accuracies)


def effective_rank(features: Tensor) -> float:
    """exp(entropy of the normalised singular values) / min(n, d) of the stacked (n, d) features.

    Accepts (n, d), or any (..., d) stack such as (N, h, w, D) middle frames, which is flattened
    to n = N*h*w rows. 1 means a flat spectrum (full use of the space), 1/min(n, d) rank one.
    """
    f = _as_tokens(features, "features")
    f = f.reshape(-1, f.shape[-1])
    singular = torch.linalg.svdvals(f)
    total = singular.sum()
    if total <= 0:
        raise ValueError("features are all zero: the effective rank is undefined")
    p = singular / total
    p = p[p > 0]
    entropy = -(p * p.log()).sum()
    return float(entropy.exp() / min(f.shape))


def preprocess_frames(frames: Tensor, resize: int = 256, crop: int = 224) -> Tensor:
    """uint8 (T, H, W, 3) -> float (T, 3, crop, crop) in [0, 1]: short side to `resize`, centre crop.

    The short side goes to `resize` and the long side to int(resize * long / short) (bilinear,
    antialiased, like a PIL resize), then the central crop x crop window is kept.
    """
    if not isinstance(frames, Tensor) or frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        got = (tuple(frames.shape), frames.dtype) if isinstance(frames, Tensor) else type(frames).__name__
        raise ValueError(f"frames must be a uint8 (T, H, W, 3) tensor, got {got}")
    if frames.shape[0] == 0:
        raise ValueError("frames is empty (T = 0)")
    if crop > resize:
        raise ValueError(f"crop ({crop}) must not exceed resize ({resize})")
    h, w = frames.shape[1:3]
    if h <= w:
        size = (resize, int(resize * w / h))
    else:
        size = (int(resize * h / w), resize)
    images = frames.permute(0, 3, 1, 2).float() / 255.0
    images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
    top = int(round((size[0] - crop) / 2))
    left = int(round((size[1] - crop) / 2))
    return images[:, :, top : top + crop, left : left + crop].clamp(0, 1)


def encode_raw(encoder: DenseEncoder, images: Tensor, batch_size: int = 8) -> Tensor:
    """Raw (not normalised) features (T, h, w, D), float32 on the CPU, of [0, 1] images (T, 3, H, W)."""
    batches = (images[start : start + batch_size] for start in range(0, images.shape[0], batch_size))
    return torch.cat([feats.cpu() for feats in encode_images(encoder, batches)])


def _frame_indices(total: int, num_frames: int | None) -> list[int]:
    """All frames, or `num_frames` evenly spaced ones (the released analysis uses 40 per video)."""
    if num_frames is None or num_frames >= total:
        return list(range(total))
    return torch.linspace(0, total - 1, num_frames).round().long().tolist()


def _iter_videos(videos: Any, num_frames: int | None) -> Iterable[tuple[str, Tensor]]:
    """Yield (name, uint8 (T, H, W, 3)) from tensors, clip objects or a path for ``discover_clips``."""
    if isinstance(videos, (str, Path)):
        from co_settle_hf.data import (
            discover_clips,  # here: the data package imports `datasets` (slow)
        )

        videos = discover_clips(videos)
    if isinstance(videos, Tensor):
        raise ValueError("videos must be a sequence of (T, H, W, 3) tensors or clips, not a single tensor")
    for index, video in enumerate(videos):
        if isinstance(video, Tensor):
            yield f"video{index}", video[_frame_indices(video.shape[0], num_frames)]
        elif hasattr(video, "read") and hasattr(video, "num_frames"):
            frames = video.read(_frame_indices(int(video.num_frames), num_frames))
            yield str(getattr(video, "name", f"video{index}")), frames
        else:
            raise ValueError(f"videos[{index}] is neither a (T, H, W, 3) uint8 tensor nor a clip, got {type(video).__name__}")


def analyze_tradeoff(
    encoders: Mapping[str, DenseEncoder],
    videos: Any,
    *,
    num_frames: int | None = None,
    resize: int = 256,
    crop: int = 224,
    num_patches: int = 8,
    seed: int = 42,
    gamma: float = 0.3,
    fractions: Sequence[tuple[float, float]] = CYCLE_FRACTIONS,
    temperature: float = 0.03,
    pool: int = 2,
    batch_size: int = 8,
    progress: bool = False,
) -> dict[str, dict[str, float | int]]:
    """Measure every encoder on the same videos, frames and random patch positions.

    Args:
        encoders: name -> encoder (e.g. {"base": backbone, "co-settle": adapted model}).
        videos: a sequence of uint8 (T, H, W, 3) tensors, of clip objects (``.read(indices)``,
            ``.num_frames``), or a path handed to ``co_settle_hf.data.discover_clips``.
        num_frames: if set, that many evenly spaced frames per video (the released analysis uses
            40); every video must then have at least 8 frames for D_intra.
        The rest as in :func:`d_inter`, :func:`tradeoff_margin` and
        :func:`cycle_accuracy_at_fractions`.

    Returns:
        name -> {"d_intra", "d_inter", "tradeoff_margin", "cycle_accuracy", "effective_rank",
        "num_videos"}. Videos are decoded and preprocessed once and encoded by each encoder in
        turn; only each video's middle frame is kept in memory.
    """
    if not encoders:
        raise ValueError("encoders is empty")
    intra: dict[str, list[float]] = {name: [] for name in encoders}
    cycle: dict[str, list[float]] = {name: [] for name in encoders}
    middles: dict[str, list[Tensor]] = {name: [] for name in encoders}
    for video_name, frames in _iter_videos(videos, num_frames):
        if frames.shape[0] < 2 * EDGE_FRAMES + 2:
            raise ValueError(f"{video_name} has {frames.shape[0]} frames; the trade-off needs at least {2 * EDGE_FRAMES + 2}")
        images = preprocess_frames(frames, resize, crop)
        for name, encoder in encoders.items():
            features = encode_raw(encoder, images, batch_size)
            intra[name].append(intra_video_distance(features))
            cycle[name].append(cycle_accuracy_at_fractions([features], fractions, temperature, pool))
            middles[name].append(features[middle_frame_index(features.shape[0])])
        if progress:
            print(f"trade-off: {video_name} done ({len(intra[next(iter(encoders))])} videos)", flush=True)
    results = {}
    for name in encoders:
        if len(middles[name]) < 2:
            raise ValueError(f"the trade-off analysis needs at least two videos, got {len(middles[name])}")
        stacked = torch.stack(middles[name])
        positions = sample_patch_positions(stacked.shape[1] * stacked.shape[2], num_patches, seed)
        intra_value = sum(intra[name]) / len(intra[name])
        inter_value = d_inter(stacked, positions)
        results[name] = {
            "d_intra": intra_value,
            "d_inter": inter_value,
            "tradeoff_margin": tradeoff_margin(inter_value, intra_value, gamma),
            "cycle_accuracy": sum(cycle[name]) / len(cycle[name]),
            "effective_rank": effective_rank(stacked),
            "num_videos": len(middles[name]),
        }
    return results
