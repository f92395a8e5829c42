"""The consistency-separability trade-off (the paper's Figure 1), measured on raw patch features.

D_intra (how far patches drift between adjacent frames of one video) and D_inter (how far the
same patch position lies apart in different videos), both divided by a diameter of the feature
cloud so that encoders with different feature scales compare; the margin
D = D_inter - gamma * D_intra (gamma = 0.3, higher is better); plus the cycle accuracy on
fixed frame pairs and the effective rank of the middle frames' features.

Everything uses the features exactly as the encoder returns them (the frozen backbone's normed
tokens, or the projection's LayerNorm output), NOT L2-normalised, as the authors'
``cal_metric.py`` does, the cycle accuracy included (``cycle_features="normalised"`` walks on
unit-norm tokens, the training metric, instead). Prefix tokens (CLS, registers) are never part of
the features here; the released script keeps the base backbone's CLS token in its distances.
D_intra runs in float64 so that near-zero distances between almost identical patches are not
rounding noise; D_inter compares different videos and runs blockwise in the features' precision
with float64 sums, so that Kinetics-scale runs (20,000 videos) fit in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from co_settle_hf.evaluation.distributed import blocks
from co_settle_hf.evaluation.features import DenseEncoder, encode_images, project_backbone_tokens
from co_settle_hf.objective.cycle import cycle_consistency_loss
from co_settle_hf.objective.settings import OBJECTIVE

#: Frame pairs (as fractions of the video length T) for the cycle accuracy, as released.
CYCLE_FRACTIONS: tuple[tuple[float, float], ...] = (
    (0.25, 0.40), (0.35, 0.50), (0.45, 0.60), (0.55, 0.70), (0.65, 0.80)
)
#: Frames dropped at each end of a video before D_intra (fades, cuts and black frames live there).
EDGE_FRAMES = 3
#: Frames a video needs for D_intra: EDGE_FRAMES dropped at each end, then at least one adjacent pair.
MIN_FRAMES = 2 * EDGE_FRAMES + 2
#: What the cycle accuracy walks on: the raw features (as the authors' cal_metric.py) or L2-normalised ones.
CYCLE_FEATURES = ("raw", "normalised")
#: Added to every diameter before dividing, as released, so a constant video does not divide by 0.
DIAMETER_EPS = 1e-8


@dataclass(frozen=True)
class TradeoffSettings:
    """The analysis's knobs (see :func:`analyze_tradeoff`)."""

    num_frames: int | None = None
    resize: int = 256
    crop: int = 224
    num_patches: int = 8
    seed: int = 42
    gamma: float = 0.3
    fractions: tuple[tuple[float, float], ...] = CYCLE_FRACTIONS
    temperature: float = OBJECTIVE.cycle_temperature
    pool: int = OBJECTIVE.pool_size
    cycle_features: str = CYCLE_FEATURES[0]
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.cycle_features not in CYCLE_FEATURES:
            raise ValueError(f"cycle_features must be one of {CYCLE_FEATURES}, got {self.cycle_features!r}")


TRADEOFF = TradeoffSettings()  # the published analysis; every default below reads it


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


def intra_video_distances(features: Tensor) -> dict[str, float]:
    """D_intra of one video (T, h, w, D): normalised nearest-neighbour drift between adjacent frames.

    Frames 3 .. T-4 are kept; for each adjacent pair every patch's nearest L2 distance in the
    next frame is taken, the smallest 50 % (at least one) are averaged, pairs are averaged, and
    the result is divided by 2 x the largest distance of any patch of the WHOLE video (all T
    frames) to the video's mean patch (``d_intra``), or by 2 x the 95 % / 90 % quantile of those
    distances (``d_intra_95``, ``d_intra_90``: the authors' extras).
    """
    f = _video_tokens(features, "features")
    t, p, _ = f.shape
    if t < MIN_FRAMES:
        raise ValueError(f"D_intra needs at least {MIN_FRAMES} frames per video, got T={t}")
    kept = f[EDGE_FRAMES : t - EDGE_FRAMES]
    nearest = torch.cdist(kept[:-1], kept[1:]).amin(dim=-1)  # (pairs, P)
    k = max(1, int(p * 0.5))
    drift = nearest.topk(k, dim=-1, largest=False).values.mean(dim=-1).mean()
    patches = f.reshape(-1, f.shape[-1])
    to_centre = (patches - patches.mean(dim=0, keepdim=True)).norm(dim=-1)
    radii = {"d_intra": to_centre.max(), "d_intra_95": torch.quantile(to_centre, 0.95),
             "d_intra_90": torch.quantile(to_centre, 0.90)}
    return {key: float(drift / (2 * radius + DIAMETER_EPS)) for key, radius in radii.items()}


def intra_video_distance(features: Tensor) -> float:
    """D_intra of one video (T, h, w, D); see :func:`intra_video_distances`."""
    return intra_video_distances(features)["d_intra"]


def d_intra(features_per_video: Sequence[Tensor]) -> float:
    """D_intra over videos: the mean of :func:`intra_video_distance` (each video (T, h, w, D))."""
    if len(features_per_video) == 0:
        raise ValueError("features_per_video is empty: D_intra needs at least one video")
    return sum(intra_video_distance(f) for f in features_per_video) / len(features_per_video)


def middle_frame_index(num_frames: int) -> int:
    """The representative frame of a video of T frames: T // 2, as released."""
    return num_frames // 2


def sample_patch_positions(num_positions: int, num_patches: int = TRADEOFF.num_patches, seed: int = TRADEOFF.seed) -> Tensor:
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
    num_patches: int = TRADEOFF.num_patches,
    seed: int = TRADEOFF.seed,
) -> float:
    """D_inter: how far apart the same patch positions lie in the middle frames of different videos.

    Args:
        middle_features: (N, h, w, D) or (N, P, D), one middle frame per video (or a sequence
            of (h, w, D) / (P, D) tensors), N >= 2.
        positions: patch indices (row-major over h x w) to compare; default
            :func:`sample_patch_positions` (P, num_patches, seed).

    Returns:
        mean over video pairs of the mean L2 distance between same-position patches, divided by
        2 x the largest distance of those sampled patches to their global mean
        (:func:`inter_video_distances` with its blockwise pair sum).
    """
    if not isinstance(middle_features, Tensor):
        if len(middle_features) == 0:
            raise ValueError("middle_features is empty: D_inter needs at least two videos")
        middle_features = torch.stack([_as_tokens(m, "middle_features") for m in middle_features])
    if not isinstance(middle_features, Tensor) or middle_features.ndim not in (3, 4):
        raise ValueError(f"middle_features must be (N, h, w, D) or (N, P, D), got {tuple(middle_features.shape)}")
    m = middle_features.detach().flatten(1, 2) if middle_features.ndim == 4 else middle_features.detach()
    p = m.shape[1]
    if positions is None:
        positions = sample_patch_positions(p, num_patches, seed)
    positions = torch.as_tensor(positions, dtype=torch.long)
    if positions.ndim != 1 or positions.numel() == 0 or positions.min() < 0 or positions.max() >= p:
        raise ValueError(f"positions must be a non-empty 1-D index into {p} patches, got {positions.tolist()}")
    return inter_video_distances(m[:, positions])["d_inter"]


#: Rows of the pair-distance block (rows x videos) computed at once: bounds D_inter's working memory.
INTER_BLOCK_ROWS = 512
INTER_BLOCK_COLUMNS = 4096


def mean_pair_distance(sampled: Tensor, block_rows: int = INTER_BLOCK_ROWS) -> float:
    """Mean over video pairs i < j of the mean over k of |sampled[i, k] - sampled[j, k]|, blockwise.

    ``sampled`` is (N, K, D). Each block of rows is compared with every later video through one
    matrix product (|a|^2 + |b|^2 - 2 a.b), in the features' own precision (float32 features stay
    float32; the naive (N, N, K, D) difference tensor is never built); sums run in float64. Memory
    is O(block_rows x INTER_BLOCK_COLUMNS) on top of the input, time O(N^2 K D).
    """
    n, k, _ = sampled.shape
    if n < 2:
        raise ValueError(f"D_inter needs at least two videos, got {n}")
    total = torch.zeros((), dtype=torch.float64)
    points = torch.empty_like(sampled[:, 0], memory_format=torch.contiguous_format)  # one buffer for every position
    for position in range(k):
        points.copy_(sampled[:, position])
        norms = (points * points).sum(dim=-1)
        for start in range(0, n - 1, block_rows):
            stop = min(start + block_rows, n)
            # Pairs (i, j) with start <= i < stop and j >= start, in column blocks of one fixed size, so
            # the allocator reuses one buffer instead of fragmenting its heap with ever smaller ones.
            for first in range(start, n, INTER_BLOCK_COLUMNS):
                last = min(first + INTER_BLOCK_COLUMNS, n)
                squared = torch.addmm(norms[None, first:last], points[start:stop], points[first:last].T, alpha=-2)
                distances = squared.add_(norms[start:stop, None]).clamp_min_(0).sqrt_()
                if first == start:
                    distances[:, : stop - start].triu_(diagonal=1)  # this block's own pairs: i < j only
                total += distances.sum(dim=1).to(torch.float64).sum()  # row sums in place precision, then float64
    return float(total / (n * (n - 1) / 2) / k)


def distances_to_centre(points: Tensor, chunk_rows: int = 1 << 12) -> Tensor:
    """|p - mean| of every row of ``points`` (M, D), a chunk at a time into one reused buffer.

    Fresh per-chunk temporaries fragment the C heap (RSS grew by hundreds of MB at Kinetics scale);
    writing through ``out=`` keeps the extra memory at one chunk.
    """
    centre = points.mean(dim=0)
    result = points.new_empty(len(points))
    buffer = points.new_empty(min(chunk_rows, len(points)), points.shape[1])
    for start in range(0, len(points), chunk_rows):
        rows = points[start : start + chunk_rows]
        work = torch.sub(rows, centre, out=buffer[: len(rows)])
        torch.linalg.vector_norm(work, dim=-1, out=result[start : start + len(rows)])
    return result


def inter_video_distances(sampled: Tensor) -> dict[str, float]:
    """D_inter of sampled patches (N, K, D), plain and normalised by the 100 / 95 / 90 % diameters.

    The diameter is 2 x the largest distance of a sampled patch to their global mean (100 %), or
    of the p % of patches closest to it (the authors' extras, ``d_inter_95`` and ``d_inter_90``).
    """
    if not isinstance(sampled, Tensor) or sampled.ndim != 3:
        raise ValueError(f"sampled patches must be (N, K, D), got {getattr(sampled, 'shape', type(sampled).__name__)}")
    distance = mean_pair_distance(sampled)
    to_centre = distances_to_centre(sampled.reshape(-1, sampled.shape[-1])).sort().values
    result = {"d_inter_raw": distance}
    for share, key in ((100, "d_inter"), (95, "d_inter_95"), (90, "d_inter_90")):
        radius = to_centre[max(1, int(len(to_centre) * share / 100)) - 1]
        result[key] = float(distance / (2 * radius + DIAMETER_EPS))
    return result


def tradeoff_margin(d_inter_value: float, d_intra_value: float, gamma: float = TRADEOFF.gamma) -> float:
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
    temperature: float = TRADEOFF.temperature,
    pool: int = TRADEOFF.pool,
    normalise: bool = False,
) -> float:
    """Share of pooled nodes whose walk frame t1 -> t2 -> t1 comes home, over videos and pairs.

    For a video of T frames the pairs are (int(a T), int(b T)) for (a, b) in `fractions`. The
    walk is training's (SPEC section 2) without PEA, so the backward view is frame t1 itself, on
    the raw features as the authors' ``cal_metric.py`` walks, or on L2-normalised ones (the
    training metric) with ``normalise``. Every video contributes the same number of nodes per
    pair, so the mean over videos equals the share over all nodes.
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
        tokens = features.detach().float().reshape(t, h * w, d)
        tokens = F.normalize(tokens, dim=-1) if normalise else tokens
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
    return _rank_from_singular_values(torch.linalg.svdvals(f), min(f.shape))


def effective_rank_from_gram(gram: Tensor, num_rows: int) -> float:
    """:func:`effective_rank` of rows F from their Gram matrix F^T F (D, D) alone, so F is never stacked.

    The singular values of F are the square roots of the eigenvalues of F^T F; summed over videos,
    the Gram matrix streams the effective rank in O(D^2) memory whatever the number of videos.
    """
    eigenvalues = torch.linalg.eigvalsh(gram.to(torch.float64)).clamp_min(0)
    return _rank_from_singular_values(eigenvalues.sqrt(), min(num_rows, gram.shape[0]))


def _rank_from_singular_values(singular: Tensor, rank_bound: int) -> float:
    total = singular.sum()
    if total <= 0:
        raise ValueError("features are all zero: the effective rank is undefined")
    p = singular / total
    p = p[p > 0]
    entropy = -(p * p.log()).sum()
    return float(entropy.exp() / rank_bound)


def preprocess_frames(frames: Tensor, resize: int = TRADEOFF.resize, crop: int = TRADEOFF.crop) -> Tensor:
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


def encode_raw(encoder: DenseEncoder, images: Tensor, batch_size: int = TRADEOFF.batch_size) -> Tensor:
    """Raw (not normalised) features (T, h, w, D), float32 on the CPU, of [0, 1] images (T, 3, H, W)."""
    batches = (images[start : start + batch_size] for start in range(0, images.shape[0], batch_size))
    return torch.cat([feats.cpu() for feats in encode_images(encoder, batches)])


def _frame_indices(total: int, num_frames: int | None) -> list[int]:
    """All frames, or `num_frames` evenly spaced ones (the released analysis uses 40 per video)."""
    if num_frames is None or num_frames >= total:
        return list(range(total))
    return torch.linspace(0, total - 1, num_frames).round().long().tolist()


def read_sample_csv(path: str | Path, root: str | Path) -> list[Any]:
    """The clips of the authors' sample list (``sampling/k400_val_1000_samples.csv``).

    One frame folder or video file per line, no header (only the first comma-separated field is
    read). A relative path is looked up under ``root`` as written, then by its last component
    (the released list carries the authors' own prefix, ``data/Kinetics-400/frames/val/...``).
    """
    from co_settle_hf.data import clip_from_path

    path, root = Path(path), Path(root)
    if not path.is_file():
        raise FileNotFoundError(f"--sample_csv {path} not found")
    clips = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        entry = line.split(",")[0].strip().strip('"')
        if not entry or entry.startswith("#"):
            continue
        candidates = [Path(entry)] if Path(entry).is_absolute() else [root / entry, root / Path(entry).name]
        found = next((c for c in candidates if c.exists()), None)
        if found is None:
            raise FileNotFoundError(f"{path}, line {number}: {entry} not found (looked for "
                                    f"{', '.join(str(c) for c in candidates)})")
        clips.append(clip_from_path(found))
    if not clips:
        raise ValueError(f"{path} lists no videos")
    return clips


def _as_video_list(videos: Any) -> list[Any]:
    """Tensors, clip objects, or a path for ``discover_clips`` / a sample list, as a list."""
    if isinstance(videos, (str, Path)):
        from co_settle_hf.data import discover_clips  # here: the data package imports `datasets` (slow)

        videos = discover_clips(videos)
    if isinstance(videos, Tensor):
        raise ValueError("videos must be a sequence of (T, H, W, 3) tensors or clips, not a single tensor")
    return list(videos)


def _read_video(video: Any, index: int, num_frames: int | None) -> tuple[str, Tensor]:
    """(name, uint8 (T, H, W, 3)) of one video; read errors name the clip."""
    if isinstance(video, Tensor):
        return f"video{index}", video[_frame_indices(video.shape[0], num_frames)]
    if hasattr(video, "read") and hasattr(video, "num_frames"):
        name = str(getattr(video, "name", f"video{index}"))
        try:
            return name, video.read(_frame_indices(int(video.num_frames), num_frames))
        except (OSError, RuntimeError, ValueError) as error:
            raise ValueError(f"cannot read {name}: {error}") from error
    raise ValueError(f"videos[{index}] is neither a (T, H, W, 3) uint8 tensor nor a clip, got {type(video).__name__}")


def _video_record(features: Tensor, settings: TradeoffSettings) -> dict[str, Any]:
    """What the analysis keeps of one video: D_intra's, its cycle accuracy and K middle-frame patches."""
    middle = features[middle_frame_index(features.shape[0])]
    flat = middle.reshape(-1, middle.shape[-1])
    positions = sample_patch_positions(flat.shape[0], settings.num_patches, settings.seed)
    cycle = cycle_accuracy_at_fractions([features], settings.fractions, settings.temperature, settings.pool,
                                        normalise=settings.cycle_features == CYCLE_FEATURES[1])
    return {**intra_video_distances(features), "cycle_accuracy": cycle, "sampled": flat[positions].clone(),
            "gram": flat.to(torch.float64).T @ flat.to(torch.float64), "rows": flat.shape[0]}


def analyze_tradeoff(
    encoders: Mapping[str, DenseEncoder],
    videos: Any,
    *,
    progress: bool = False,
    processes: Any = None,
    **knobs: Any,
) -> dict[str, dict[str, float | int]]:
    """Measure every encoder on the same videos, frames and random patch positions, in O(videos) memory.

    Args:
        encoders: name -> encoder (e.g. {"base": backbone, "co-settle": adapted model}).
        videos: a sequence of uint8 (T, H, W, 3) tensors, of clip objects (``.read(indices)``,
            ``.num_frames``), or a path handed to ``co_settle_hf.data.discover_clips``.
        processes: ``distributed.Processes`` to share the videos among (results on every process).
        knobs: fields of :class:`TradeoffSettings`: ``num_frames`` (evenly spaced frames per video;
            the authors use 40; each video needs at least 8), ``cycle_features`` ("raw", as the
            authors, or "normalised"), and those of :func:`d_inter`, :func:`tradeoff_margin` and
            :func:`cycle_accuracy_at_fractions`.

    Returns:
        name -> {"d_intra", "d_inter", "tradeoff_margin", "cycle_accuracy", "effective_rank",
        "num_videos", and the 95 % / 90 % diameter extras}. Per video only the K sampled patches
        of its middle frame and a few numbers are kept; the effective rank streams through a
        D x D Gram matrix summed block by block in video order.
    """
    if not encoders:
        raise ValueError("encoders is empty")
    settings = TradeoffSettings(**knobs)
    videos = _as_video_list(videos)
    every = blocks(len(videos))
    mine = processes.my_blocks(len(videos)) if processes is not None else every
    accumulator = _Accumulator()
    for block in mine:
        for index in block:
            try:
                accumulator.add(every.index(block), index, _measure_video(encoders, videos[index], index, settings))
            except ValueError as error:
                if processes is None or processes.world == 1:
                    raise
                accumulator.errors.append(str(error))  # raised on every process after the gather, not a hang
            if progress:
                print(f"trade-off: video {index + 1} of {len(videos)} done", flush=True)
    if processes is not None:
        accumulator = accumulator.gathered(processes)
    if accumulator.errors:
        raise ValueError("; ".join(accumulator.errors))
    return {name: accumulator.summarise(name, settings) for name in encoders}


def tradeoff_of_features(features: Iterable[Tensor], **knobs: Any) -> dict[str, float | int]:
    """The analysis on features already computed, one (T, h, w, D) tensor per video, streamed.

    What :func:`analyze_tradeoff` does after the backbone (and what ``co-settle bench`` times):
    per video its D_intra's, cycle accuracy and K sampled patches, a running Gram matrix, then D_inter.
    """
    settings = TradeoffSettings(**knobs)
    accumulator = _Accumulator()
    for index, f in enumerate(features):
        accumulator.add(0, index, {"model": _video_record(f, settings)})
    return accumulator.summarise("model", settings)


class _Accumulator:
    """Per video a few numbers and K patches; per block of videos one Gram matrix per encoder."""

    def __init__(self) -> None:
        self.records: list[tuple[int, dict[str, dict[str, Any]]]] = []  # (video index, name -> record)
        self.grams: dict[tuple[int, str], Tensor] = {}  # (block, name) -> summed in video order
        self.errors: list[str] = []

    def add(self, block: int, index: int, record: dict[str, dict[str, Any]]) -> None:
        for name, one in record.items():
            gram = one.pop("gram")
            key = (block, name)
            self.grams[key] = self.grams[key] + gram if key in self.grams else gram
        self.records.append((index, record))

    def gathered(self, processes: Any) -> "_Accumulator":
        merged = _Accumulator()
        merged.records = processes.gather(self.records)
        merged.grams = dict(processes.gather(list(self.grams.items())))
        merged.errors = processes.gather(self.errors)
        return merged

    def summarise(self, name: str, settings: TradeoffSettings) -> dict[str, float | int]:
        if len(self.records) < 2:
            raise ValueError(f"the trade-off analysis needs at least two videos, got {len(self.records)}")
        per_video = [record[name] for _, record in sorted(self.records, key=lambda r: r[0])]
        gram = sum(self.grams[key] for key in sorted(k for k in self.grams if k[1] == name))  # blocks in order
        inter = inter_video_distances(torch.stack([v["sampled"] for v in per_video]))
        intra = {key: sum(v[key] for v in per_video) / len(per_video) for key in ("d_intra", "d_intra_95", "d_intra_90")}
        result: dict[str, float | int] = {
            "d_intra": intra["d_intra"],
            "d_inter": inter["d_inter"],
            "tradeoff_margin": tradeoff_margin(inter["d_inter"], intra["d_intra"], settings.gamma),
            "cycle_accuracy": sum(v["cycle_accuracy"] for v in per_video) / len(per_video),
            "effective_rank": effective_rank_from_gram(gram, sum(v["rows"] for v in per_video)),
            "num_videos": len(per_video),
        }
        for share in (95, 90):
            i, j = intra[f"d_intra_{share}"], inter[f"d_inter_{share}"]
            result.update({f"d_intra_{share}": i, f"d_inter_{share}": j,
                           f"tradeoff_margin_{share}": tradeoff_margin(j, i, settings.gamma)})
        return result


def _measure_video(encoders: Mapping[str, DenseEncoder], video: Any, index: int, settings: TradeoffSettings
                   ) -> dict[str, dict[str, Any]]:
    name, frames = _read_video(video, index, settings.num_frames)
    if frames.shape[0] < MIN_FRAMES:
        raise ValueError(f"{name} has {frames.shape[0]} frames; the trade-off needs at least {MIN_FRAMES} "
                         f"({EDGE_FRAMES} dropped at each end for D_intra, then two adjacent frames)")
    images = preprocess_frames(frames, settings.resize, settings.crop)
    return {key: _video_record(features, settings)
            for key, features in encode_sharing_backbones(encoders, images, settings.batch_size).items()}


def encode_sharing_backbones(encoders: Mapping[str, DenseEncoder], images: Tensor, batch_size: int = TRADEOFF.batch_size) -> dict[str, Tensor]:
    """Raw features of every encoder; an adapter whose backbone is also measured projects that
    backbone's tokens instead of running it again (the backbone is the cost)."""
    raw: dict[int, Tensor] = {}

    def tokens(encoder: DenseEncoder) -> Tensor:
        if id(encoder) not in raw:
            raw[id(encoder)] = encode_raw(encoder, images, batch_size)
        return raw[id(encoder)]

    ids = {id(encoder) for encoder in encoders.values()}
    out = {}
    for key, encoder in encoders.items():
        backbone = getattr(encoder, "backbone", None)
        if backbone is not None and id(backbone) in ids:
            out[key] = project_backbone_tokens(encoder, tokens(backbone))
        else:
            out[key] = tokens(encoder)
    return out
