"""Torch datasets that turn clips into augmented frame pairs, skipping (and counting) bad data."""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from ..objective.settings import OBJECTIVE
from .base import Clip, ClipReadError
from .sampling import sample_pair_indices

logger = logging.getLogger(__name__)

PairSample = dict[str, Any]
Transform = Callable[..., torch.Tensor]  # (uint8 (2, H, W, 3), generator=...) -> float (2, 3, S, S)


def sample_generator(*keys: int) -> torch.Generator:
    """A generator seeded from non-negative integer keys (seed, epoch, index, ...) by SeedSequence.

    Every sample draws from its own stream, so results do not depend on the worker that
    loads it or on the order of loading: an epoch replays exactly after a resume.
    """
    state = np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


class _PairSampler:
    """Shared logic: read a pair from a clip, augment it, or report the clip as bad once."""

    def __init__(self, transform: Transform, delta: float, seed: int) -> None:
        if not 0.0 <= delta < 1.0:
            raise ValueError(f"delta must be in [0, 1), got {delta}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.transform, self.delta, self.seed = transform, delta, seed
        # Shared memory, so DataLoader workers (persistent ones included) see set_epoch.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self.num_bad = 0  # in this process; with workers use the counts collate_pairs returns
        self._warned: set[str] = set()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def _set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._epoch.fill_(epoch)

    def _pair(self, get_clip: Callable[[], Clip], index: int, generator: torch.Generator) -> PairSample | None:
        clip: Clip | None = None
        try:
            clip = get_clip()
            num_frames = clip.num_frames
            if num_frames < 1:
                raise ClipReadError(f"{clip.name}: no frames")
            t1, t2 = sample_pair_indices(num_frames, self.delta, generator)
            frames = clip.read([t1, t2])
        except ClipReadError as err:
            self.num_bad += 1
            key = clip.name if clip is not None else f"sample {index}"
            if key not in self._warned:
                self._warned.add(key)
                logger.warning("skipping unreadable sample %d (%s): %s", index, key, err)
            return None
        return {"frames": self.transform(frames, generator=generator), "index": index}


class FramePairDataset(Dataset, _PairSampler):
    """Map-style dataset: item ``i`` is an augmented pair from clip ``i``, or None if unreadable.

    Each (seed, epoch, index) fixes the frames and the augmentation, so call ``set_epoch``
    before each epoch to draw new pairs reproducibly. A bad clip logs one warning (per
    process) naming it and yields None; ``collate_pairs`` drops it and counts it.
    """

    def __init__(self, clips: Sequence[Clip], transform: Transform, delta: float = OBJECTIVE.frame_gap, seed: int = 0) -> None:
        _PairSampler.__init__(self, transform, delta, seed)
        self.clips = clips

    def set_epoch(self, epoch: int) -> None:
        self._set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> PairSample | None:
        index = int(index)
        generator = sample_generator(self.seed, self.epoch, index)
        return self._pair(lambda: self.clips[index], index, generator)


class IterableFramePairDataset(IterableDataset, _PairSampler):
    """Iterable dataset over a stream of clips (e.g. ``dataset_clips(..., streaming=True)``).

    DataLoader workers split the stream round-robin and each sample's randomness comes from
    (seed, epoch, position in the stream), whatever the number of workers. A clip source that
    declares ``splits_across_workers = True`` (Hugging Face streaming datasets shard themselves
    by worker) is not split again; its positions count within each worker's share and the
    worker id joins the seed, so it is reproducible for a fixed number of workers.
    ``set_epoch`` also reaches the source (reshuffling HF streams). Items are dicts as in
    ``FramePairDataset`` ("index" is the position), or None for a bad clip.
    """

    def __init__(self, clips: Iterable[Clip], transform: Transform, delta: float = OBJECTIVE.frame_gap, seed: int = 0) -> None:
        _PairSampler.__init__(self, transform, delta, seed)
        self.clips = clips

    def set_epoch(self, epoch: int) -> None:
        self._set_epoch(epoch)
        if hasattr(self.clips, "set_epoch"):
            self.clips.set_epoch(epoch)

    def __iter__(self) -> Iterator[PairSample | None]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        self_sharding = getattr(self.clips, "splits_across_workers", False)
        epoch = self.epoch
        for position, clip in enumerate(self.clips):
            if not self_sharding and position % num_workers != worker:
                continue
            # worker + 1: SeedSequence pads keys with zeros, so a trailing 0 would repeat another key.
            keys = (self.seed, epoch, position, worker + 1) if self_sharding else (self.seed, epoch, position)
            generator = sample_generator(*keys)
            yield self._pair(lambda: clip, position, generator)


def collate_pairs(batch: Sequence[PairSample | None]) -> tuple[torch.Tensor | None, int]:
    """Stack the good samples to (B, 2, 3, S, S) and count the bad (None) ones.

    The frames are None when every sample of the batch was bad, so the trainer can skip it.
    """
    good = [sample["frames"] for sample in batch if sample is not None]
    num_bad = len(batch) - len(good)
    return (torch.stack(good) if good else None), num_bad
