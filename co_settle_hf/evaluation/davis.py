"""DAVIS-2017 semi-supervised video object segmentation by label propagation.

Reads the official layout::

    root/JPEGImages/480p/<seq>/00000.jpg ...
    root/Annotations/480p/<seq>/00000.png ...   (palette PNGs: pixel value = object id,
                                                 0 background, 255 void)
    root/ImageSets/2017/val.txt                 (one sequence name per line)

propagates each sequence's first-frame annotation with a frozen encoder's features, writes
the predictions as palette PNGs in the same layout (so the official toolkit can re-score
them) and scores them the DAVIS way: per object, J and F on every frame except the first
and the last, summarised by mean / recall / decay; J&F-Mean = (mean over objects of
J-Mean + mean over objects of F-Mean) / 2.

Resizing mirrors the CropMAE / videowalk pipeline: the first annotation is resized to the
encoder's input size with nearest neighbour and then to the feature grid (bilinear on its
one-hot); predictions are upsampled bilinearly to the input size, arg-maxed, and resized
to the original frame size with nearest neighbour.

Two deliberate differences from the official toolkit, neither of which changes DAVIS-2017
val scores (its annotations contain no void pixels): void pixels (255) are excluded from
J and F as the benchmark defines (the toolkit maps them to background before testing for
them), and the decay bins use plain integer indices (the toolkit's uint8 indices wrap
around beyond 255 frames).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .features import DenseEncoder, fit_to_patches
from .images import decode_image, image_header, read_annotation, read_frames, write_annotation  # noqa: F401
from .loop import evaluate_task
from .metrics import db_statistics, f_measure, jaccard
from .outputs import OutputFolder, check_name
from .propagation import PropagationSettings, labels_to_onehot, resize_ids, upsample_and_argmax
from .results import write_csv, write_summary

VOID_LABEL = 255
#: The published evaluation's part of DAVIS-2017.
PUBLISHED_SPLIT, PUBLISHED_RESOLUTION = "val", "480p"


@dataclass(frozen=True)
class DavisSequence:
    """One sequence's frame and annotation files, in frame order."""

    name: str
    frames: tuple[Path, ...]
    annotations: tuple[Path, ...]


def davis_palette() -> np.ndarray:
    """The 256-colour PASCAL VOC palette of DAVIS annotations, (256, 3) uint8.

    Colour i spreads bits 0, 1, 2 of i over the most significant bit of red, green and blue,
    bits 3, 4, 5 over the next one, and so on. PIL wants it flat: ``.reshape(-1).tolist()``.
    """
    index = np.arange(256)
    palette = np.zeros((256, 3), dtype=np.int64)
    for shift in range(8):
        for channel in range(3):
            palette[:, channel] |= ((index >> (3 * shift + channel)) & 1) << (7 - shift)
    return palette.astype(np.uint8)


def list_davis_sequences(
    root: str | Path,
    split: str = PUBLISHED_SPLIT,
    sequences: Sequence[str] | None = None,
    resolution: str = PUBLISHED_RESOLUTION,
) -> list[DavisSequence]:
    """Find and check the sequences of a DAVIS-2017 split (or the ``sequences`` given).

    Raises ``FileNotFoundError`` / ``ValueError`` naming the offending file or folder for:
    a missing root or split list, an empty split, a sequence without frames or
    annotations, frame and annotation files that do not pair up one to one, and an
    annotation that is not an id image (palette or greyscale) or whose size differs from
    its frame's (checked from the file headers, so bad data fails before any encoding).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"DAVIS root {root} is not a directory")
    if sequences is None:
        split_file = root / "ImageSets" / "2017" / f"{split}.txt"
        if not split_file.is_file():
            raise FileNotFoundError(f"DAVIS split list {split_file} not found")
        lines = enumerate(split_file.read_text().splitlines(), start=1)
        names = [check_name(line.strip(), f"{split_file}, line {n}") for n, line in lines if line.strip()]
        if not names:
            raise ValueError(f"DAVIS split list {split_file} lists no sequences")
    else:
        names = [check_name(name, "--sequences") for name in sequences]
        if not names:
            raise ValueError("sequences is empty: nothing to evaluate")

    found = []
    for name in names:
        frame_dir = root / "JPEGImages" / resolution / name
        mask_dir = root / "Annotations" / resolution / name
        frames = sorted(frame_dir.glob("*.jpg")) if frame_dir.is_dir() else []
        masks = sorted(mask_dir.glob("*.png")) if mask_dir.is_dir() else []
        if not frames:
            raise FileNotFoundError(f"sequence {name!r}: no frames (*.jpg) in {frame_dir}")
        if not masks:
            raise FileNotFoundError(f"sequence {name!r}: no annotations (*.png) in {mask_dir}")
        frame_stems, mask_stems = [p.stem for p in frames], [p.stem for p in masks]
        if frame_stems != mask_stems:
            missing = sorted(set(frame_stems) - set(mask_stems))
            extra = sorted(set(mask_stems) - set(frame_stems))
            raise ValueError(
                f"sequence {name!r}: {len(frames)} frames in {frame_dir} but {len(masks)} annotations in "
                f"{mask_dir}; DAVIS scoring needs one annotation per frame "
                f"(annotations missing for {missing[:5]}, without a frame: {extra[:5]})"
            )
        for frame_path, mask_path in zip(frames, masks):
            (_, frame_size), (mode, mask_size) = image_header(frame_path), image_header(mask_path)
            if mode not in ("P", "L"):
                raise ValueError(f"annotation {mask_path} has mode {mode}; expected a palette (P) or "
                                 "greyscale (L) PNG whose pixel values are object ids")
            if frame_size != mask_size:
                raise ValueError(f"annotation {mask_path} is {mask_size[0]}x{mask_size[1]} but its frame "
                                 f"{frame_path} is {frame_size[0]}x{frame_size[1]}")
        found.append(DavisSequence(name, tuple(frames), tuple(masks)))
    return found


def object_ids(annotations: Sequence[Path], gt: np.ndarray) -> int:
    """Number of objects of a sequence: the labels of its first annotation (255, void, excluded).

    DAVIS numbers the objects of a sequence 1..N in its first frame, so any other label there (a
    gap, a stray 200), or a label above N later on, is an error naming the file: it would add
    empty objects that score J = F = 1.
    """
    present = sorted(int(v) for v in np.unique(gt[0]) if v not in (0, VOID_LABEL))
    if not present:
        raise ValueError(f"first annotation {annotations[0]} contains no object (ids 1-254)")
    count = len(present)
    if present != list(range(1, count + 1)):
        raise ValueError(f"first annotation {annotations[0]} holds labels {present}; DAVIS object ids run 1..N "
                         f"without gaps, so label {present[-1]} is beyond the {count} objects it holds")
    for path, ids in zip(annotations[1:], gt[1:]):
        stray = ids[(ids > count) & (ids != VOID_LABEL)]
        if stray.size:
            raise ValueError(f"annotation {path} holds label {int(stray.max())}, but the first annotation "
                             f"{annotations[0]} defines only objects 1..{count}")
    return count


def score_sequence(pred: np.ndarray, gt: np.ndarray, num_objects: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-object, per-frame J and F, (num_objects, T - 2) each, first and last frame excluded."""
    frames = range(1, gt.shape[0] - 1)
    j = np.zeros((num_objects, len(frames)))
    f = np.zeros((num_objects, len(frames)))
    for col, t in enumerate(frames):
        void = gt[t] == VOID_LABEL
        for obj in range(1, num_objects + 1):
            j[obj - 1, col] = jaccard(pred[t] == obj, gt[t] == obj, void)
            f[obj - 1, col] = f_measure(pred[t] == obj, gt[t] == obj, void)
    return j, f


#: DAVIS scores frames 1..T-2 (the first is given, the last excluded), so a sequence needs 3 frames.
MIN_FRAMES = 3
GLOBAL_KEYS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


@dataclass
class DavisTask:
    """DAVIS-2017 for :func:`~co_settle_hf.evaluation.loop.run_propagation` (module docstring)."""

    sequences: list[DavisSequence]
    size: tuple[int, int]
    save_masks: bool
    split: str
    resolution: str
    name: str = "DAVIS"

    def videos(self) -> list[DavisSequence]:
        return self.sequences

    min_frames: int = MIN_FRAMES

    def input_size(self, frame_size: tuple[int, int], patch_size: int) -> tuple[int, int]:
        return fit_to_patches(self.size, patch_size)

    def first_labels(self, seq, frame_size, size, grid):
        gt_and_palettes = [read_annotation(p, frame_size) for p in seq.annotations]
        gt = np.stack([ids for ids, _ in gt_and_palettes])
        num_objects = object_ids(seq.annotations, gt)
        first = resize_ids(torch.from_numpy(gt[0].astype(np.int64)), size)
        palette = gt_and_palettes[0][1] or davis_palette().reshape(-1).tolist()
        return labels_to_onehot(first, num_objects + 1, grid), (gt, num_objects, palette, size)

    def score(self, seq, state, soft, settings: PropagationSettings, out: OutputFolder, folder: str) -> dict[str, Any]:
        gt, num_objects, palette, size = state
        pred = upsample_and_argmax(soft, size, norm_mask=settings.norm_mask)
        pred = resize_ids(pred, gt.shape[1:]).cpu().numpy().astype(np.uint8)
        pred[0] = np.where(gt[0] <= num_objects, gt[0], 0)  # the given annotation, void as background
        if self.save_masks:
            for frame_path, ids in zip(seq.frames, pred):
                write_annotation(out.path(folder, seq.name, f"{frame_path.stem}.png"), ids, palette)
        j, f = score_sequence(pred, gt, num_objects)
        return {f"{seq.name}_{obj + 1}": (db_statistics(j[obj]), db_statistics(f[obj])) for obj in range(num_objects)}

    def summarise(self, rows, too_short, settings, out, folder) -> dict[str, Any]:
        objects = {name: value for row in rows for name, value in row.items()}
        stats = {key: [v[part][stat] for v in objects.values()] for part, letter in enumerate("JF")
                 for stat, key in enumerate((f"{letter}-M", f"{letter}-R", f"{letter}-D"))}

        def mean(values: list[float]) -> float:
            finite = [v for v in values if not math.isnan(v)]
            return float(np.mean(finite)) if finite else math.nan

        j_mean, f_mean = mean(stats["J-M"]), mean(stats["F-M"])
        summary: dict[str, Any] = {
            "J&F-Mean": (j_mean + f_mean) / 2, "J-Mean": j_mean, "J-Recall": mean(stats["J-R"]),
            "J-Decay": mean(stats["J-D"]), "F-Mean": f_mean, "F-Recall": mean(stats["F-R"]),
            "F-Decay": mean(stats["F-D"]), "num_sequences": len(rows), "num_objects": len(objects),
            "too_short": too_short,
            "per_object": {name: {"J-Mean": j[0], "F-Mean": f[0]} for name, (j, f) in objects.items()},
            "settings": {**settings.as_dict(), "size": list(self.size), "split": self.split,
                         "resolution": self.resolution},
        }
        write_csv(out.path(folder, f"global_results-{self.split}.csv"), GLOBAL_KEYS,
                  [[summary[k] for k in GLOBAL_KEYS]], decimals=3)
        write_csv(out.path(folder, f"per-sequence_results-{self.split}.csv"), ["Sequence", "J-Mean", "F-Mean"],
                  [[name, v["J-Mean"], v["F-Mean"]] for name, v in summary["per_object"].items()], decimals=3)
        write_summary(out.path(folder, "summary.json"), summary)
        return summary


def evaluate_davis(
    encoder: DenseEncoder,
    root: str | Path,
    output_dir: str | Path | OutputFolder,
    settings: PropagationSettings | Sequence[PropagationSettings] | None = None,
    *,
    size: tuple[int, int] = (480, 880),
    sequences: Sequence[str] | None = None,
    save_masks: bool = True,
    progress: bool = True,
    split: str = PUBLISHED_SPLIT,
    resolution: str = PUBLISHED_RESOLUTION,
    overwrite: bool = False,
    cache: Any = None,
    processes: Any = None,
    **knobs: Any,
) -> dict[str, Any]:
    """Label-propagation DAVIS-2017 evaluation of ``encoder`` (see the module docstring).

    ``settings`` is the propagation protocol (default CropMAE's; keyword ``knobs`` such as
    ``topk=5`` change single fields), or a list of them for a sweep (files per setting in
    sub-folders). ``size`` is the encoder's input (height, width), rounded down to multiples of
    its patch size so the patch grid tiles the frame. Writes, under ``output_dir`` (see
    :class:`~co_settle_hf.evaluation.outputs.OutputFolder`: refused inside ``root`` and, unless
    ``overwrite``, when it already holds results): the predicted masks ``<seq>/<frame>.png``
    (if ``save_masks``), ``per-sequence_results-<split>.csv`` (one row per object,
    ``<seq>_<id>``), ``global_results-<split>.csv`` and ``summary.json``. Sequences shorter
    than :data:`MIN_FRAMES` are not scored and listed under ``too_short`` in the summary.
    Returns the summary (the first one for a sweep; ``summaries`` holds them all), with the
    run's timing under ``timing``.
    """
    seqs = list_davis_sequences(root, split, sequences, resolution)
    task = DavisTask(seqs, fit_to_patches(tuple(size), int(encoder.patch_size)), save_masks, split, resolution)
    return evaluate_task(task, encoder, root, output_dir, settings, knobs, overwrite=overwrite, cache=cache,
                         processes=processes, progress=progress)
