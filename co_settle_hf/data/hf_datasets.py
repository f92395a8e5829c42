"""Clips from a Hugging Face ``datasets`` dataset whose column holds video paths or bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import datasets

from .base import Clip, ClipReadError
from .discovery import clip_from_path
from .video import VideoFileClip


def _load(name_or_path: str | Path, config: str | None, split: str, streaming: bool) -> tuple[Any, Path | None]:
    """Load the split; a folder written by ``save_to_disk`` goes through ``load_from_disk``."""
    path = Path(name_or_path).expanduser()
    if path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
        if config is not None:
            raise ValueError(f"config {config!r} does not apply to {path}, a dataset saved with save_to_disk")
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(f"split {split!r} not in dataset {path}; it has {sorted(loaded)}")
            loaded = loaded[split]
        return (loaded.to_iterable_dataset() if streaming else loaded), path
    if not path.exists() and str(name_or_path).startswith(("/", "./", "../", "~")):
        raise FileNotFoundError(f"dataset not found: {path}")
    loaded = datasets.load_dataset(str(name_or_path), config, split=split, streaming=streaming)
    return loaded, (path if path.is_dir() else None)


def _without_decoding(dataset: Any, column: str, source: str) -> Any:
    """Keep only the video column and stop ``datasets`` from decoding it (we decode with PyAV)."""
    names = dataset.column_names
    if names is not None and column not in names:
        raise ValueError(f"column {column!r} not in dataset {source}; it has {sorted(names)}")
    dataset = dataset.select_columns([column])
    if isinstance(dataset, datasets.IterableDataset):
        return dataset.decode(False)
    feature = dataset.features[column]
    if isinstance(feature, datasets.Video) and feature.decode:
        dataset = dataset.cast_column(column, datasets.Video(decode=False))
    return dataset


def _row_clip(value: Any, label: str, base_dir: Path | None, sample_fps: float | None) -> Clip:
    """A path (video or frame folder), raw bytes, or a {"path", "bytes"} dict as a clip."""
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data:
            return VideoFileClip(data, name=f"{label} ({path})" if path else label, sample_fps=sample_fps)
        value = path
    if isinstance(value, (bytes, bytearray, memoryview)) and len(value):
        return VideoFileClip(value, name=label, sample_fps=sample_fps)
    if isinstance(value, str) and value:
        if "://" in value:
            return VideoFileClip(value, sample_fps=sample_fps)
        path = Path(value).expanduser()
        if not path.is_absolute() and base_dir is not None and (base_dir / path).exists():
            path = base_dir / path
        try:
            return clip_from_path(path, sample_fps=sample_fps)
        except (FileNotFoundError, ValueError) as err:
            raise ClipReadError(f"{label}: {err}") from err
    raise ClipReadError(f"{label}: the video column holds no path or bytes ({type(value).__name__})")


class DatasetClips:
    """A map-style ``datasets`` split as a lazy sequence of clips (rows are read on access).

    Rows stay in the memory-mapped Arrow table until used, so datasets of video bytes do not
    need to fit in RAM, and the object pickles cheaply to DataLoader workers. An empty or
    unusable row raises ClipReadError, which the pair dataset reports as a bad sample.
    """

    def __init__(self, dataset: datasets.Dataset, column: str, source: str, base_dir: Path | None,
                 sample_fps: float | None = None) -> None:
        self.dataset, self.column, self.source = dataset, column, source
        self.base_dir, self.sample_fps = base_dir, sample_fps

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Clip:
        if not -len(self) <= index < len(self):
            raise IndexError(f"row {index} out of range for {len(self)} rows of {self.source}")
        value = self.dataset[int(index)][self.column]
        return _row_clip(value, f"{self.source}[{index}]", self.base_dir, self.sample_fps)


class StreamingClips:
    """A streaming ``datasets`` split as an iterable of clips, for ``IterableFramePairDataset``.

    Hugging Face iterable datasets split their shards across DataLoader workers themselves
    (hence ``splits_across_workers``), so give them at least as many shards as workers.
    ``set_epoch`` reaches the dataset so that shuffled streams reshuffle per epoch. A row
    that is not a usable path or bytes is yielded as a clip that fails to read, so it is
    counted as bad data rather than ending the stream.
    """

    splits_across_workers = True

    def __init__(self, dataset: datasets.IterableDataset, column: str, source: str, base_dir: Path | None,
                 sample_fps: float | None = None) -> None:
        self.dataset, self.column, self.source = dataset, column, source
        self.base_dir, self.sample_fps = base_dir, sample_fps

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[Clip]:
        for position, row in enumerate(self.dataset):
            label = f"{self.source}[{position}]"
            if self.column not in row:
                raise ValueError(f"column {self.column!r} not in rows of {self.source}; they have {sorted(row)}")
            try:
                yield _row_clip(row[self.column], label, self.base_dir, self.sample_fps)
            except ClipReadError as err:
                yield _UnreadableClip(label, str(err))


class _UnreadableClip:
    """Stands in for a stream row that holds no usable video, so the pair dataset counts it."""

    def __init__(self, name: str, reason: str) -> None:
        self.name, self._reason = name, reason

    @property
    def num_frames(self) -> int:
        raise ClipReadError(self._reason)

    def read(self, indices: Any) -> Any:
        raise ClipReadError(self._reason)


def dataset_clips(
    name_or_path: str | Path,
    config: str | None = None,
    split: str = "train",
    video_column: str = "video",
    streaming: bool = False,
    sample_fps: float | None = None,
) -> DatasetClips | StreamingClips:
    """Clips from a ``datasets`` dataset: a ``save_to_disk`` folder, a local folder or file that
    ``load_dataset`` reads (e.g. a video folder), or a Hub id.

    ``video_column`` may hold paths (video files or frame folders; relative ones are tried
    against a local dataset folder first), bytes, or ``{"path", "bytes"}`` dicts (a ``Video``
    feature, whose decoding is switched off). Returns a lazy sequence for
    ``FramePairDataset``, or with ``streaming=True`` an iterable for ``IterableFramePairDataset``.
    """
    dataset, base_dir = _load(name_or_path, config, split, streaming)
    return clips_from_dataset(dataset, video_column, str(name_or_path), base_dir, sample_fps)


def clips_from_dataset(
    dataset: datasets.Dataset | datasets.IterableDataset,
    video_column: str = "video",
    source: str = "train_dataset",
    base_dir: Path | None = None,
    sample_fps: float | None = None,
) -> DatasetClips | StreamingClips:
    """Clips from a `datasets` object already in hand (in memory, loaded or streamed); `source` names it in errors."""
    if not isinstance(dataset, (datasets.Dataset, datasets.IterableDataset)):
        raise TypeError(f"{source} must be a datasets.Dataset or IterableDataset, got {type(dataset).__name__}")
    dataset = _without_decoding(dataset, video_column, source)
    kind = StreamingClips if isinstance(dataset, datasets.IterableDataset) else DatasetClips
    return kind(dataset, video_column, source, base_dir, sample_fps)
