"""Semi-supervised label propagation through feature affinities (the CRW / CropMAE protocol).

Frame 0's labels are given; every later frame gets soft labels from its k most similar
nodes among a context of frame 0 (ground truth) and the ``n_context`` previous frames
(their own predictions). Choices, taken from the videowalk / CropMAE reference code that
produced the published numbers:

- At the start of a video the short-term queue is padded with copies of frame 0 (with its
  ground-truth labels), so frame t always has exactly ``n_context`` short-term frames:
  t - n_context, ..., t - 1, indices below 0 clamped to 0.
- The spatial restriction applies to the short-term frames only; frame 0 as long-term
  memory is searched in full, so an object that moved far from its first position can
  still be re-found. A short-term node is kept when its Euclidean distance (in feature
  cells) to the target node is strictly below ``radius``, as in the reference code. So
  ``radius=0`` propagates from frame 0 alone, and any radius in (0, 1] lets each node see
  only its own position in the short-term frames.
- Affinity = dot product / temperature; the top-k over all unmasked context nodes are
  softmax-weighted and their soft labels averaged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

# Affinity entries (query rows x context nodes) computed at once; bounds peak memory
# (2**25 float32 = 128 MiB) while keeping each matmul large.
_MAX_AFFINITY_ELEMENTS = 2**25


class Knobs:
    """What the evaluation loop asks of a task's settings dataclass (label propagation's, the tracker's)."""

    def with_values(self, **changes: Any):
        """A copy with the given fields changed (``None`` values leave a field as it is)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PropagationSettings(Knobs):
    """Every knob of label propagation, in one place (the CLI, the sweep and the cache read it).

    The defaults are the CropMAE / videowalk protocol (module docstring). ``neighbourhood``
    "circle" keeps context cells closer than ``radius`` (Euclidean, strict); "square" keeps
    cells within ``radius`` rows and columns (inclusive), as DINO's ``restrict_neighborhood``.
    ``pad_context`` repeats frame 0 in the short-term queue at the start of a video (CropMAE);
    without it the queue grows from frame 1 (DINO). ``restrict_first_frame`` applies the
    neighbourhood to frame 0 too (DINO). ``norm_mask`` min-max normalises each upsampled
    channel before the argmax (DINO's ``norm_mask``).
    """

    topk: int = 7
    temperature: float = 0.7
    n_context: int = 20
    radius: float = 20.0
    neighbourhood: str = "circle"
    pad_context: bool = True
    restrict_first_frame: bool = False
    norm_mask: bool = False

    def __post_init__(self) -> None:
        if self.n_context < 0:
            raise ValueError(f"n_context must be >= 0, got {self.n_context}")
        if self.topk < 1:
            raise ValueError(f"topk must be >= 1, got {self.topk}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.radius < 0:
            raise ValueError(f"radius must be >= 0, got {self.radius}")
        if self.neighbourhood not in ("circle", "square"):
            raise ValueError(f"neighbourhood must be 'circle' or 'square', got {self.neighbourhood!r}")

    def label(self) -> str:
        """A short folder-safe name for a sweep row, e.g. ``topk5_temp0.1``."""
        return f"topk{self.topk}_temp{self.temperature:g}"


#: Published protocols. "cropmae": the CropMAE / videowalk evaluation (top-k 7 on DAVIS and
#: JHMDB, 10 on VIP, set per task). "dino": DINO's eval_video_segmentation.py.
PROTOCOLS: dict[str, PropagationSettings] = {
    "cropmae": PropagationSettings(),
    "dino": PropagationSettings(topk=5, temperature=0.1, n_context=7, radius=12, neighbourhood="square",
                                pad_context=False, restrict_first_frame=True, norm_mask=True),
}


def _local_mask(h: int, w: int, radius: float, device: torch.device, square: bool = False) -> torch.Tensor:
    """(N, N) bool: True where two cells of an h x w grid are neighbours (see PropagationSettings)."""
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    coords = torch.stack([ys.flatten(), xs.flatten()], dim=1)
    if square:
        return torch.cdist(coords, coords, p=float("inf")) <= radius
    return torch.cdist(coords, coords) < radius


def _block_size(h: int, w: int, largest: int = 128) -> int:
    """Nodes per block of the two-stage top-k: whole grid rows, as many as divide h and fit ``largest``."""
    rows = max([r for r in range(1, h + 1) if h % r == 0 and r * w <= largest], default=1)
    return rows * w


def _reuse(buffer: torch.Tensor, numel: int) -> torch.Tensor:
    """The first ``numel`` elements of ``buffer`` (grown if needed): no fresh pages per frame.

    Both users start at the buffer's start, so their alignment, which can decide MKL's kernel
    and so the last bits, is that of a fresh tensor, as before this buffer existed.
    """
    return buffer if buffer.numel() >= numel else torch.empty(numel, dtype=buffer.dtype, device=buffer.device)


class _Context:
    """The context of one target frame: its distinct frames and how the slots read them.

    ``topk`` returns exactly what a top-k over the full (n, slots x N) masked affinity returns
    (the values in the same order; only exact ties may pick other nodes) without building that
    array. Each distinct frame's affinity is computed once, by one matmul against their features
    copied into a reused buffer (the same operands as a fresh copy, so the same bits); the mask is
    added in place, only where the neighbourhood excludes nodes. The top-k
    runs in two stages: first the k blocks (whole grid rows) with the largest maxima over all
    slots, then the top k of those k blocks' values. Every value above the k-th block maximum
    lies in those blocks, so the second stage finds the same k values as a full search.
    """

    def __init__(self, feats: torch.Tensor, idx: torch.Tensor, restricted: int, grid: tuple[int, int],
                 buffer: torch.Tensor) -> None:
        distinct, self.slot = torch.unique(idx, return_inverse=True)
        self.grid, self.block, self.num_distinct = grid, _block_size(*grid), len(distinct)
        self.nodes, dim = feats.shape[1:]
        self.buffer = _reuse(buffer, self.num_distinct * self.nodes * dim)
        out = self.buffer[: self.num_distinct * self.nodes * dim].view(-1, self.nodes, dim)
        self.feats = torch.index_select(feats, 0, distinct, out=out).view(-1, dim)  # (U * N, D)
        # Frame 0 (distinct position 0) is searched in full in the first ``restricted`` slots and,
        # early in a padded video, restricted in later ones too: it then needs an unmasked copy.
        self.shared_first = restricted == 1 and bool((self.slot[1:] == 0).any())
        self.first_masked = 0 if restricted == 0 or self.shared_first else 1
        self.variant = self.slot.clone()  # slot -> the block of values it reads: a distinct frame, or the copy
        if self.shared_first:
            self.variant[0] = self.num_distinct

    def topk(self, query: torch.Tensor, bias: torch.Tensor | None, k: int, buffer: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k affinities of ``query`` rows (n, D) and their ids into the (slots x N) context."""
        n, nodes, size = query.shape[0], self.nodes, self.block
        affinity = torch.mm(query, self.feats.T, out=buffer[: n * self.feats.shape[0]].view(n, -1))  # (n, U * N)
        copy = None
        if bias is not None:  # (n, N): 0 where kept, -inf where excluded
            copy = affinity[:, :nodes].clone() if self.shared_first else None
            affinity.view(n, self.num_distinct, nodes)[:, self.first_masked :].add_(bias[:, None, :])
        per_frame = nodes // size
        block_max = affinity.view(n, self.num_distinct * per_frame, size).amax(-1)
        extra = copy.view(n, per_frame, size).amax(-1) if copy is not None else block_max[:, :per_frame]
        block_max = torch.cat([block_max, extra], 1).view(n, self.num_distinct + 1, per_frame)
        num_slots = len(self.slot)
        _, blocks = block_max[:, self.variant].reshape(n, -1).topk(min(k, num_slots * per_frame), dim=1)
        slots, within = blocks // per_frame, blocks % per_frame
        variants = self.variant[slots]
        frames = variants.masked_fill(variants == self.num_distinct, 0)  # the copy's own values, unmasked
        offsets = torch.arange(size, device=query.device)
        values = affinity.gather(1, ((frames * nodes + within * size)[..., None] + offsets).view(n, -1))
        if copy is not None:
            from_copy = copy.gather(1, (within[..., None] * size + offsets).view(n, -1))
            values = torch.where((variants == self.num_distinct).repeat_interleave(size, 1), from_copy, values)
        weights, picks = values.topk(k, dim=1)
        block, col = picks // size, picks % size
        return weights, slots.gather(1, block) * nodes + within.gather(1, block) * size + col


def context_indices(t: int, n_context: int, pad: bool = True) -> list[int]:
    """Frames whose labels predict frame t: frame 0, then the ``n_context`` previous frames.

    With ``pad`` indices below 0 are clamped to 0 (t - n_context .. t - 1, always n_context of
    them); without, only frames 1 .. t - 1 that exist are used (at most n_context).
    """
    if pad:
        return [0] + [max(0, t - n_context + i) for i in range(n_context)]
    return [0] + list(range(max(1, t - n_context), t))


def propagate_labels(
    features: torch.Tensor,
    first_labels: torch.Tensor,
    settings: PropagationSettings | None = None,
    *,
    progress: bool = False,
    **knobs: Any,
) -> torch.Tensor:
    """Propagate frame 0's soft labels through a video (see the module docstring).

    Args:
        features: (T, h, w, D), L2-normalised over D (``extract_video_features``).
        first_labels: (C, h, w) soft labels of frame 0 at feature resolution.
        settings: the propagation protocol (default :class:`PropagationSettings`); keyword
            ``knobs`` (``topk=5``, ...) change single fields of it.
        progress: show a progress bar over frames.

    Returns:
        (T, C, h, w) soft labels on ``features``' device; frame 0 is ``first_labels``.
    """
    settings = (settings or PropagationSettings()).with_values(**knobs)
    if features.ndim != 4:
        raise ValueError(f"features must be (T, h, w, D), got shape {tuple(features.shape)}")
    num_frames, h, w, dim = features.shape
    if first_labels.ndim != 3 or tuple(first_labels.shape[1:]) != (h, w):
        raise ValueError(f"first_labels must be (C, {h}, {w}) to match features, got {tuple(first_labels.shape)}")
    if num_frames == 0:
        raise ValueError("features has no frames")

    device = features.device
    num_nodes, num_classes = h * w, first_labels.shape[0]
    feats = features.reshape(num_frames, num_nodes, dim)
    # Predicted soft labels of every frame, node-major: (T, N, C).
    labels = torch.zeros(num_frames, num_nodes, num_classes, dtype=feats.dtype, device=device)
    labels[0] = first_labels.to(device=device, dtype=feats.dtype).reshape(num_classes, num_nodes).T
    far = _local_mask(h, w, settings.radius, device, settings.neighbourhood == "square").logical_not_()
    excludes = far.any(1)  # rows that exclude some node: only they need the mask
    restricted = 0 if settings.restrict_first_frame else 1  # first context slot the neighbourhood applies to
    context_buffer = affinity_buffer = torch.empty(0, dtype=feats.dtype, device=device)  # reused across frames

    frames = range(1, num_frames)
    if progress:
        frames = tqdm(frames, desc="propagating", unit="frame")
    for t in frames:
        idx = torch.tensor(context_indices(t, settings.n_context, settings.pad_context), device=device)
        k = min(settings.topk, len(idx) * num_nodes)
        chunk = max(1, _MAX_AFFINITY_ELEMENTS // (len(idx) * num_nodes))
        context = _Context(feats, idx, restricted, (h, w), context_buffer)  # frame 0 repeated: computed once
        context_buffer = context.buffer
        affinity_buffer = _reuse(affinity_buffer, min(chunk, num_nodes) * context.num_distinct * num_nodes)
        ctx_labels = labels[idx].reshape(-1, num_classes)  # (M, C), M = len(idx) * N
        for start in range(0, num_nodes, chunk):
            stop = min(start + chunk, num_nodes)
            rows_bias = None  # added to the restricted frames' affinity: 0 where kept, -inf where excluded
            if excludes[start:stop].any():
                rows_bias = torch.zeros(stop - start, num_nodes, dtype=feats.dtype, device=device)
                rows_bias.masked_fill_(far[start:stop], float("-inf"))
            weights, ids = context.topk(feats[t, start:stop] / settings.temperature, rows_bias, k, affinity_buffer)
            weights = torch.softmax(weights, dim=1)  # masked picks (if k > unmasked) get 0
            labels[t, start:stop] = torch.einsum("nk,nkc->nc", weights, ctx_labels[ids])
    return labels.permute(0, 2, 1).reshape(num_frames, num_classes, h, w)


def labels_to_onehot(
    mask: torch.Tensor, num_classes: int, size: tuple[int, int] | None = None
) -> torch.Tensor:
    """One-hot (C, H, W) of an id map, optionally downsampled to the feature grid ``size``.

    Ids outside [0, num_classes) (e.g. the void label 255) give an all-zero column: they
    vote for no class. Downsampling is bilinear on the one-hot without antialiasing
    (align_corners=False), the same operation as the reference code's cv2 INTER_LINEAR
    resize: each cell's soft label is the bilinear blend of the pixels nearest its centre.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {tuple(mask.shape)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    mask = mask.long()
    classes = torch.arange(num_classes, device=mask.device)
    onehot = (mask[None] == classes[:, None, None]).float()
    if size is not None and tuple(size) != tuple(mask.shape):
        onehot = F.interpolate(onehot[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
    return onehot


def upsample_and_argmax(soft: torch.Tensor, size: tuple[int, int], chunk: int = 8, norm_mask: bool = False
                        ) -> torch.Tensor:
    """Hard labels (T, H, W): bilinear upsampling of soft labels (T, C, h, w), then argmax.

    Works ``chunk`` frames at a time so full-resolution soft maps never exist for the
    whole video at once. ``norm_mask`` first rescales each channel of each frame that is not
    all zero to [0, 1] (min-max), as DINO's evaluation does.
    """
    if soft.ndim != 4:
        raise ValueError(f"soft must be (T, C, h, w), got shape {tuple(soft.shape)}")

    def hard(block: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(block.float(), size=tuple(size), mode="bilinear", align_corners=False)
        if norm_mask:
            low = up.amin(dim=(2, 3), keepdim=True)
            span = up.amax(dim=(2, 3), keepdim=True) - low
            scaled = (up - low) / span.clamp_min(torch.finfo(up.dtype).tiny)
            up = torch.where(up.amax(dim=(2, 3), keepdim=True) > 0, scaled, up)
        return up.argmax(1)

    out = [hard(soft[i : i + chunk]) for i in range(0, soft.shape[0], chunk)]
    return torch.cat(out) if out else torch.zeros(0, *size, dtype=torch.long, device=soft.device)


def resize_ids(ids: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of integer label maps (..., H, W) -> (..., *size); no copy if it fits."""
    if tuple(ids.shape[-2:]) == tuple(size):
        return ids
    lead = ids.shape[:-2]
    flat = ids.reshape(-1, 1, *ids.shape[-2:]).float()
    return F.interpolate(flat, size=tuple(size), mode="nearest").long().reshape(*lead, *size)
