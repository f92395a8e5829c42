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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from .features import DenseEncoder, extract_video_features, fit_to_patches
from .metrics import db_statistics, f_measure, jaccard
from .outputs import OutputFolder, check_name, open_output
from .propagation import labels_to_onehot, propagate_labels, resize_ids, upsample_and_argmax
from .results import write_csv, write_summary

VOID_LABEL = 255


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
    split: str = "val",
    sequences: Sequence[str] | None = None,
    resolution: str = "480p",
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


def read_frames(paths: Sequence[Path]) -> torch.Tensor:
    """RGB frames as a uint8 tensor (T, H, W, 3); all frames must share one size."""
    frames = []
    for path in paths:
        array = decode_image(path, "RGB")
        if frames and array.shape != frames[0].shape:
            raise ValueError(f"frame {path} is {array.shape[1]}x{array.shape[0]}, the sequence's first frame "
                             f"{paths[0]} is {frames[0].shape[1]}x{frames[0].shape[0]}")
        frames.append(array)
    return torch.from_numpy(np.stack(frames))


def read_annotation(path: Path, size: tuple[int, int] | None = None) -> tuple[np.ndarray, list[int] | None]:
    """Object-id map (H, W) uint8 of an annotation PNG and its palette (None if greyscale).

    ``size`` (height, width), when given, is the size of the frame the annotation belongs to.
    """
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise ValueError(f"annotation {path} has mode {image.mode}; expected a palette (P) or greyscale (L) "
                                 "PNG whose pixel values are object ids")
            palette = image.getpalette() if image.mode == "P" else None
            ids = np.array(image)
    except (OSError, SyntaxError) as error:  # PIL's decode errors do not name the file
        raise ValueError(f"cannot decode annotation {path}: {error}") from error
    if palette is not None and ids.size and int(ids.max()) >= len(palette) // 3:
        raise ValueError(f"annotation {path} holds label {int(ids.max())}, outside its {len(palette) // 3}-colour palette")
    if size is not None and ids.shape != tuple(size):
        raise ValueError(f"annotation {path} is {ids.shape[1]}x{ids.shape[0]} but its frame is {size[1]}x{size[0]}")
    return ids, palette


def image_header(path: Path) -> tuple[str, tuple[int, int]]:
    """(mode, (width, height)) from an image file's header; an unreadable header names the file."""
    try:
        with Image.open(path) as image:
            return image.mode, image.size
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from error


def decode_image(path: Path, mode: str) -> np.ndarray:
    """An image file as a numpy array in PIL ``mode``; a decode error names the file."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert(mode))
    except (OSError, SyntaxError, ValueError) as error:  # e.g. "image file is truncated", "Truncated File Read"
        raise ValueError(f"cannot decode image {path}: {error}") from error


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


def write_annotation(path: Path, ids: np.ndarray, palette: list[int]) -> None:
    """Save an object-id map as a palette PNG."""
    image = Image.fromarray(np.asarray(ids, dtype=np.uint8))
    image.putpalette(palette)  # turns the greyscale image into a palette image
    image.save(path, format="PNG")


def predict_sequence(
    encoder: DenseEncoder,
    frames: torch.Tensor,
    first_ids: np.ndarray,
    num_objects: int,
    *,
    size: tuple[int, int],
    n_context: int,
    radius: float,
    topk: int,
    temperature: float,
) -> np.ndarray:
    """Propagate the first frame's object ids through a video: (T, H, W) uint8 at frame size.

    Frame 0 of the result is the given annotation (with ids above ``num_objects``,
    i.e. void, set to background).
    """
    height, width = frames.shape[1:3]
    feats = extract_video_features(encoder, frames, size=size)
    grid = tuple(feats.shape[1:3])
    first = resize_ids(torch.from_numpy(first_ids.astype(np.int64)), size)
    first_labels = labels_to_onehot(first, num_objects + 1, grid).to(feats.device)
    soft = propagate_labels(feats, first_labels, n_context=n_context, radius=radius, topk=topk,
                            temperature=temperature)
    pred = resize_ids(upsample_and_argmax(soft, size), (height, width)).cpu().numpy().astype(np.uint8)
    pred[0] = np.where(first_ids <= num_objects, first_ids, 0)
    return pred


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


def evaluate_davis(
    encoder: DenseEncoder,
    root: str | Path,
    output_dir: str | Path | OutputFolder,
    *,
    n_context: int = 20,
    radius: float = 20,
    topk: int = 7,
    temperature: float = 0.7,
    size: tuple[int, int] = (480, 880),
    sequences: Sequence[str] | None = None,
    save_masks: bool = True,
    progress: bool = True,
    split: str = "val",
    resolution: str = "480p",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Label-propagation DAVIS-2017 evaluation of ``encoder`` (see the module docstring).

    ``size`` is the encoder's input (height, width), rounded down to multiples of its patch
    size so the patch grid tiles the frame. Writes, under ``output_dir`` (see
    :class:`~co_settle_hf.evaluation.outputs.OutputFolder`: refused inside ``root`` and, unless
    ``overwrite``, when it already holds results): the predicted masks ``<seq>/<frame>.png``
    (if ``save_masks``), ``per-sequence_results-<split>.csv`` (one row per object,
    ``<seq>_<id>``), ``global_results-<split>.csv`` and ``summary.json``. Sequences shorter
    than :data:`MIN_FRAMES` are not scored and listed under ``too_short`` in the summary.
    Returns the summary dict (J&F-Mean, J/F Mean, Recall, Decay, per-object means, settings, timing).
    """
    seqs = list_davis_sequences(root, split, sequences, resolution)
    with open_output(output_dir, [root], overwrite) as out:
        summary = _evaluate_sequences(encoder, seqs, out, size=fit_to_patches(tuple(size), int(encoder.patch_size)),
                                      settings=dict(n_context=n_context, radius=radius, topk=topk,
                                                    temperature=temperature),
                                      save_masks=save_masks, progress=progress)
        summary["settings"].update(split=split, resolution=resolution)
        global_keys = ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
        write_csv(out.path(f"global_results-{split}.csv"), global_keys, [[summary[k] for k in global_keys]], decimals=3)
        write_csv(out.path(f"per-sequence_results-{split}.csv"), ["Sequence", "J-Mean", "F-Mean"],
                  [[name, v["J-Mean"], v["F-Mean"]] for name, v in summary["per_object"].items()], decimals=3)
        write_summary(out.path("summary.json"), summary)
    return summary


def _evaluate_sequences(encoder: DenseEncoder, seqs: list[DavisSequence], out: OutputFolder, *, size: tuple[int, int],
                        settings: dict[str, Any], save_masks: bool, progress: bool) -> dict[str, Any]:
    stats: dict[str, list[float]] = {key: [] for key in ("J-M", "J-R", "J-D", "F-M", "F-R", "F-D")}
    per_object: dict[str, dict[str, float]] = {}
    too_short: dict[str, int] = {}
    num_frames, seconds = 0, 0.0
    iterator: Any = seqs
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(seqs, desc="DAVIS", unit="seq")
    for seq in iterator:
        if len(seq.frames) < MIN_FRAMES:
            too_short[seq.name] = len(seq.frames)
            print(f"DAVIS: sequence {seq.name!r} has {len(seq.frames)} frame(s); scoring needs at least {MIN_FRAMES} "
                  "(first and last frames are not scored): not scored, listed under too_short", flush=True)
            continue
        frames = read_frames(seq.frames)
        frame_size = tuple(frames.shape[1:3])
        gt_and_palettes = [read_annotation(p, frame_size) for p in seq.annotations]
        gt = np.stack([ids for ids, _ in gt_and_palettes])
        palette = gt_and_palettes[0][1] or davis_palette().reshape(-1).tolist()
        num_objects = object_ids(seq.annotations, gt)

        start = time.perf_counter()
        pred = predict_sequence(encoder, frames, gt[0], num_objects, size=size, **settings)
        seconds += time.perf_counter() - start
        num_frames += len(seq.frames)

        if save_masks:
            for frame_path, ids in zip(seq.frames, pred):
                write_annotation(out.path(seq.name, f"{frame_path.stem}.png"), ids, palette)

        j, f = score_sequence(pred, gt, num_objects)
        for obj in range(num_objects):
            jm, jr, jd = db_statistics(j[obj])
            fm, fr, fd = db_statistics(f[obj])
            for key, value in zip(stats, (jm, jr, jd, fm, fr, fd)):
                stats[key].append(value)
            per_object[f"{seq.name}_{obj + 1}"] = {"J-Mean": jm, "F-Mean": fm}
    if not per_object:
        raise ValueError(f"no DAVIS sequence could be scored: all are shorter than {MIN_FRAMES} frames ({too_short})")

    def mean(values: list[float]) -> float:
        finite = [v for v in values if not math.isnan(v)]
        return float(np.mean(finite)) if finite else math.nan

    j_mean, f_mean = mean(stats["J-M"]), mean(stats["F-M"])
    return {
        "J&F-Mean": (j_mean + f_mean) / 2,
        "J-Mean": j_mean,
        "J-Recall": mean(stats["J-R"]),
        "J-Decay": mean(stats["J-D"]),
        "F-Mean": f_mean,
        "F-Recall": mean(stats["F-R"]),
        "F-Decay": mean(stats["F-D"]),
        "num_sequences": len(seqs) - len(too_short),
        "num_objects": len(per_object),
        "too_short": too_short,
        "per_object": per_object,
        "settings": {**settings, "size": list(size)},
        "frames_per_second": num_frames / seconds if seconds > 0 else math.nan,
    }
