"""VIP human-part parsing by label propagation, scored by mIoU over one dataset-wide confusion matrix.

Layout (VIP_Fine as released)::

    root/Images/<video>/<frame>.jpg
    root/Annotations/Category_ids/<video>/<frame>.png   greyscale (or palette) PNGs whose pixel
                                                        values are class ids 0..19 (0 background)
    root/lists/val_videos.txt                           one video name per line (the default list)

A list file may also hold ``<images folder> <annotations folder>`` pairs per line (the CropMAE
``vip_vallist.txt``); relative paths are resolved against ``root`` from their ``Images`` or
``Annotations`` component on, whatever prefix they carry. Blank and ``#`` lines are skipped.
Frames and annotations are paired by file name (stem) and must match one to one.

Protocol (following the CropMAE / videowalk reference):

- Frames are resized so the long side is ``long_side`` (880), keeping the aspect ratio (short
  side int(short * 880 / long)), then both sides are rounded DOWN to multiples of the encoder's
  patch size (the reference rounds the short side down to a multiple of 64).
- The channels are the classes present in frame 0's annotation (as the reference); ids outside
  0..num_classes-1 vote for no class. Frame 0's annotation is resized to the input size with
  nearest neighbour and to the feature grid bilinearly on its one-hot, then propagated with
  top-k 10. Predictions are upsampled bilinearly to the input size, arg-maxed, mapped back to
  class ids and resized to the annotation's size with nearest neighbour.
- One confusion matrix (rows: ground truth, columns: prediction; ground-truth ids outside
  0..num_classes-1 ignored) is accumulated over every frame of every video, frame 0 included
  as in the reference (its prediction is the first annotation as the propagation sees it, i.e.
  downsampled to the feature grid and back); ``include_first_frame=False`` scores frames
  1..T-1 only. mIoU is the NaN-mean of the per-class IoU (classes absent from both the ground
  truth and the predictions are NaN and do not count).

IoU values are shares in [0, 1] (the paper prints percentages).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from co_settle_hf.data.frames import list_images

from .davis import read_annotation, read_frames
from .features import DenseEncoder, extract_video_features, fit_to_patches
from .jhmdb import read_list_file, resolve_in_root
from .outputs import OutputFolder, check_name, open_output
from .propagation import labels_to_onehot, propagate_labels, resize_ids, upsample_and_argmax
from .results import write_csv, write_summary

NUM_CLASSES = 20
CLASS_NAMES = (
    "background", "hat", "hair", "sun-glasses", "upper-clothes", "dress", "coat", "socks", "pants", "gloves",
    "scarf", "skirt", "torso-skin", "face", "right-arm", "left-arm", "right-leg", "left-leg", "right-shoe",
    "left-shoe",
)
#: Frames upsampled and scored at once (bounds memory at full resolution).
_CHUNK = 8


@dataclass(frozen=True)
class VipVideo:
    """One VIP video: its name and paired frame / annotation files, in frame order."""

    name: str
    frames: tuple[Path, ...]
    annotations: tuple[Path, ...]


def _video(name: str, image_dir: Path, label_dir: Path, where: str) -> VipVideo:
    for folder, kind in ((image_dir, "frame"), (label_dir, "annotation")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{where}: {kind} folder {folder} not found")
    frames = list_images(image_dir)
    labels = [n for n in list_images(label_dir) if n.lower().endswith(".png")]
    if not frames:
        raise FileNotFoundError(f"{where}: no frames in {image_dir}")
    frame_stems, label_stems = [Path(n).stem for n in frames], [Path(n).stem for n in labels]
    if frame_stems != label_stems:
        missing = sorted(set(frame_stems) - set(label_stems))
        extra = sorted(set(label_stems) - set(frame_stems))
        raise ValueError(f"{where}: {len(frames)} frames in {image_dir} but {len(labels)} annotations in {label_dir}; "
                         f"annotations missing for {missing[:5]}, without a frame: {extra[:5]}")
    return VipVideo(name, tuple(image_dir / n for n in frames), tuple(label_dir / n for n in labels))


def list_vip_videos(root: str | Path, list_file: str | Path | None = None) -> list[VipVideo]:
    """Find and check the videos to evaluate; default list ``root/lists/val_videos.txt``.

    Raises ``FileNotFoundError`` / ``ValueError`` naming the list line and folder for a missing
    root, list or folder, an empty folder, frames without annotations (or the reverse) and an
    empty list.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"VIP root {root} is not a directory")
    list_file = Path(list_file) if list_file is not None else root / "lists" / "val_videos.txt"
    videos = []
    for number, tokens in read_list_file(list_file):
        where = f"{list_file}, line {number}"
        if len(tokens) == 1:
            name = check_name(tokens[0].rstrip("/"), where)
            image_dir, label_dir = root / "Images" / name, root / "Annotations" / "Category_ids" / name
        elif len(tokens) == 2:
            first, second = tokens if "Annotations" not in Path(tokens[0]).parts else tokens[::-1]
            image_dir = resolve_in_root(root, first, ("Images", "Annotations"))
            label_dir = resolve_in_root(root, second, ("Images", "Annotations"))
            name = check_name(image_dir.name, where)
        else:
            raise ValueError(f"{where}: expected '<video>' or '<images folder> <annotations folder>', "
                             f"got {len(tokens)} fields")
        videos.append(_video(name, image_dir, label_dir, where))
    return videos


def input_size(height: int, width: int, long_side: int, patch_size: int) -> tuple[int, int]:
    """(h, w) with the long side at ``long_side``, aspect kept, both rounded down to patch multiples."""
    if width >= height:
        size = (int(height * long_side / width), long_side)
    else:
        size = (long_side, int(width * long_side / height))
    return fit_to_patches(size, patch_size)


def confusion_matrix(pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor, num_classes: int) -> np.ndarray:
    """(C, C) int64 pixel counts, rows = ground truth, columns = prediction.

    Ground-truth ids outside 0..C-1 (void, unlabelled) are ignored; predictions must lie in 0..C-1.
    """
    pred_t = torch.as_tensor(pred).long()
    gt_t = torch.as_tensor(gt).long()
    if pred_t.shape != gt_t.shape:
        raise ValueError(f"prediction {tuple(pred_t.shape)} and ground truth {tuple(gt_t.shape)} differ in size")
    keep = (gt_t >= 0) & (gt_t < num_classes)
    p, g = pred_t[keep], gt_t[keep]
    if p.numel() and (p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f"predicted ids must lie in 0..{num_classes - 1}, got [{int(p.min())}, {int(p.max())}]")
    counts = torch.bincount(g * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).numpy().astype(np.int64)


def miou(conf: np.ndarray) -> tuple[float, np.ndarray]:
    """(mean IoU, per-class IoU) of a confusion matrix; classes with an empty union are NaN.

    IoU_c = TP / (TP + FP + FN) = conf[c, c] / (row_c + column_c - conf[c, c]).
    """
    conf = np.asarray(conf, dtype=np.float64)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"conf must be a square (C, C) matrix, got {conf.shape}")
    tp = np.diag(conf)
    union = conf.sum(axis=0) + conf.sum(axis=1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    return (float(np.nanmean(iou)) if np.isfinite(iou).any() else math.nan), iou


def _pixel_accuracy(conf: np.ndarray) -> float:
    total = conf.sum()
    return float(np.trace(conf) / total) if total else math.nan


def propagate_parsing(
    encoder: DenseEncoder,
    frames: torch.Tensor,
    first_ids: np.ndarray,
    num_classes: int,
    *,
    size: tuple[int, int],
    n_context: int,
    radius: float,
    topk: int,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft labels (T, K, h, w) over the K classes present in frame 0, and those class ids (K,)."""
    first = torch.from_numpy(first_ids.astype(np.int64))
    classes = torch.unique(first[(first >= 0) & (first < num_classes)])
    if classes.numel() == 0:
        raise ValueError(f"the first annotation holds no class id in 0..{num_classes - 1}")
    lookup = torch.full((int(first.max()) + 1,), -1, dtype=torch.long)
    lookup[classes] = torch.arange(classes.numel())
    compact = torch.where(first >= 0, lookup[first.clamp(min=0)], -1)
    feats = extract_video_features(encoder, frames, size=size)
    grid = tuple(feats.shape[1:3])
    onehot = labels_to_onehot(resize_ids(compact, size), classes.numel(), grid).to(feats.device)
    soft = propagate_labels(feats, onehot, n_context=n_context, radius=radius, topk=topk, temperature=temperature)
    return soft, classes


def evaluate_vip(
    encoder: DenseEncoder,
    root: str | Path,
    output_dir: str | Path | OutputFolder,
    *,
    list_file: str | Path | None = None,
    long_side: int = 880,
    n_context: int = 20,
    radius: float = 20,
    topk: int = 10,
    temperature: float = 0.7,
    num_classes: int = NUM_CLASSES,
    include_first_frame: bool = True,
    save_masks: bool = False,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Label-propagation VIP evaluation of ``encoder`` (protocol in the module docstring).

    Writes under ``output_dir``: ``summary.json`` (mIoU, per-class IoU, pixel accuracy, counts,
    settings, timing), ``per-video_results.csv`` (each video's own mIoU and pixel accuracy),
    ``confusion_matrix.csv`` and, if ``save_masks``, the predicted class-id PNGs
    ``<video>/<frame>.png``. Returns the summary.
    """
    videos = list_vip_videos(root, list_file)
    with open_output(output_dir, [root], overwrite) as out:
        return _evaluate_videos(encoder, videos, out, long_side=long_side, n_context=n_context, radius=radius,
                                topk=topk, temperature=temperature, num_classes=num_classes,
                                include_first_frame=include_first_frame, save_masks=save_masks, progress=progress)


def _evaluate_videos(encoder, videos, out, *, long_side, n_context, radius, topk, temperature, num_classes,
                     include_first_frame, save_masks, progress) -> dict[str, Any]:
    patch = int(encoder.patch_size)
    total = np.zeros((num_classes, num_classes), dtype=np.int64)
    rows, sizes = [], set()
    num_frames, seconds = 0, 0.0
    iterator: Any = videos
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(videos, desc="VIP", unit="video")
    for video in iterator:
        frames = read_frames(video.frames)
        frame_size = tuple(frames.shape[1:3])
        gt = np.stack([read_annotation(p, frame_size)[0] for p in video.annotations])
        size = input_size(*frame_size, long_side, patch)
        sizes.add(size)
        start = time.perf_counter()
        soft, classes = propagate_parsing(encoder, frames, gt[0], num_classes, size=size, n_context=n_context,
                                          radius=radius, topk=topk, temperature=temperature)
        conf = np.zeros_like(total)
        first_scored = 0 if include_first_frame else 1
        for i in range(0, soft.shape[0], _CHUNK):
            compact = upsample_and_argmax(soft[i : i + _CHUNK], size).cpu()
            pred = resize_ids(classes[compact], frame_size)
            for offset, ids in enumerate(pred):
                t = i + offset
                if t >= first_scored:
                    conf += confusion_matrix(ids, torch.from_numpy(gt[t].astype(np.int64)), num_classes)
                if save_masks:
                    Image.fromarray(ids.numpy().astype(np.uint8)).save(out.path(video.name, f"{video.annotations[t].stem}.png"))
        seconds += time.perf_counter() - start
        num_frames += len(video.frames)
        total += conf
        rows.append([video.name, len(video.frames), miou(conf)[0], _pixel_accuracy(conf)])

    mean_iou, per_class = miou(total)
    names = CLASS_NAMES if num_classes == NUM_CLASSES else tuple(str(c) for c in range(num_classes))
    summary: dict[str, Any] = {
        "mIoU": mean_iou,
        "per_class_IoU": {name: float(v) for name, v in zip(names, per_class)},
        "pixel_accuracy": _pixel_accuracy(total),
        "num_videos": len(videos),
        "num_frames": num_frames,
        "settings": {"long_side": long_side, "input_sizes": sorted(list(s) for s in sizes), "n_context": n_context,
                     "radius": radius, "topk": topk, "temperature": temperature, "num_classes": num_classes,
                     "include_first_frame": include_first_frame},
        "frames_per_second": num_frames / seconds if seconds > 0 else math.nan,
    }
    write_csv(out.path("per-video_results.csv"), ["video", "frames", "mIoU", "pixel_accuracy"], rows)
    write_csv(out.path("confusion_matrix.csv"), ["gt \\ pred", *names], ([name, *counts.tolist()] for name, counts in zip(names, total)))
    write_summary(out.path("summary.json"), summary)
    return summary
