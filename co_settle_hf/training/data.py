"""The trainer's data: clips from the chosen source, cut into windows, sampled reproducibly per epoch."""

from __future__ import annotations

from collections.abc import Sequence as SequenceABC
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import Sampler

from ..data import (
    FramePairDataset,
    IterableFramePairDataset,
    PairTransform,
    clips_from_dataset,
    dataset_clips,
    discover_clips,
    sample_generator,
    split_long_videos,
)
from ..errors import DataSourceError
from .arguments import CoSettleTrainingArguments


class EpochShuffleSampler(Sampler[int]):
    """A permutation keyed on (seed, epoch), cut to `limit` (`--max_train_samples`): the same order whenever an epoch is replayed."""

    def __init__(self, size: int, seed: int, limit: int | None = None) -> None:
        self.size, self.seed, self.epoch = size, seed, 0
        self.limit = size if limit is None else min(limit, size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        # A key no sample index reaches, so the order's stream is not sample 0's augmentation stream.
        order = torch.randperm(self.size, generator=sample_generator(self.seed, self.epoch, 1 << 40))
        return iter(order[: self.limit].tolist())

    def __len__(self) -> int:
        return self.limit


class RepeatedClips(SequenceABC):
    """`clips` seen `repeats` times an epoch, without building any clip twice (a lazy view)."""

    def __init__(self, clips: Sequence, repeats: int) -> None:
        self.clips, self.repeats = clips, repeats

    def __len__(self) -> int:
        return len(self.clips) * self.repeats

    def __getitem__(self, index: int):
        return self.clips[index % len(self.clips)]


def source_clips(args: CoSettleTrainingArguments, train_dataset: Any = None) -> tuple[Any, str]:
    """The clips of the training source and how to name it; a bad source fails here, naming the flag."""
    if train_dataset is not None:  # named by its fingerprint, so a resume notices other data
        fingerprint = getattr(train_dataset, "_fingerprint", None)
        label = f"train_dataset ({fingerprint})" if fingerprint else "train_dataset"
        return clips_from_dataset(train_dataset, args.video_column, "train_dataset"), label
    if not args.sources:
        raise DataSourceError("give one data source: --train_dir, --train_list or --dataset_name (or train(args, train_dataset=...))")
    if args.dataset_name:
        try:
            clips = dataset_clips(args.dataset_name, args.dataset_config_name, args.train_split, args.video_column, args.streaming)
        except (OSError, ValueError) as error:
            raise DataSourceError(f"--dataset_name {args.dataset_name}: {error}") from None
        return clips, args.dataset_name
    source, flag = (args.train_dir, "--train_dir") if args.train_dir else (args.train_list, "--train_list")
    return folder_clips(source, flag), str(Path(source).resolve())


def folder_clips(source: str, flag: str) -> list:
    try:
        return discover_clips(source)
    except (FileNotFoundError, ValueError) as error:
        raise DataSourceError(f"{flag}: {error}") from None


def as_epoch(clips: Any, args: CoSettleTrainingArguments, label: str) -> Sequence:
    """Long videos cut into clips, then repeated: what one epoch goes through (map-style sources)."""
    if len(clips) == 0:
        raise DataSourceError(f"{label}: holds no videos")
    if args.clip_length > 0 or args.split_at_cuts:
        clips = split_long_videos(clips, args.clip_length, args.split_at_cuts)
    return RepeatedClips(clips, args.clip_repeats) if args.clip_repeats > 1 else clips


def training_pairs(args: CoSettleTrainingArguments, transform: PairTransform, train_dataset: Any = None
                   ) -> tuple[FramePairDataset | IterableFramePairDataset, str]:
    """Augmented frame pairs from the training source, and the source's name."""
    clips, label = source_clips(args, train_dataset)
    if hasattr(clips, "__len__"):  # map-style; a stream has no length
        return FramePairDataset(as_epoch(clips, args, label), transform, delta=args.frame_gap, seed=args.seed), label
    return IterableFramePairDataset(clips, transform, delta=args.frame_gap, seed=args.seed), label


def validation_pairs(args: CoSettleTrainingArguments, mean: Sequence[float], std: Sequence[float]) -> FramePairDataset | None:
    """Held-out pairs without augmentation: the whole frame resized, no crop, no flip (and no PEA at use)."""
    if args.validation_dir:
        clips, label = folder_clips(args.validation_dir, "--validation_dir"), "--validation_dir"
    elif args.validation_split:
        try:
            clips = dataset_clips(args.dataset_name, args.dataset_config_name, args.validation_split, args.video_column)
        except (OSError, ValueError) as error:
            raise DataSourceError(f"--validation_split {args.validation_split}: {error}") from None
        label = f"--validation_split {args.validation_split}"
    else:
        return None
    plain = PairTransform(size=args.image_size, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, mean=mean, std=std, resize=args.resize)
    windows = split_long_videos(clips, args.clip_length, args.split_at_cuts) if args.clip_length > 0 else clips
    if len(windows) == 0:
        raise DataSourceError(f"{label}: holds no videos")
    return FramePairDataset(windows, plain, delta=args.frame_gap, seed=args.seed)
