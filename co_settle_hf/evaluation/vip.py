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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from co_settle_hf.data.frames import list_images

from .features import DenseEncoder, fit_to_patches
from .images import read_annotation
from .jhmdb import read_list_file, resolve_in_root
from .loop import evaluate_task
from .outputs import OutputFolder, check_name
from .propagation import PropagationSettings, labels_to_onehot, resize_ids, upsample_and_argmax
from .results import write_csv, write_summary

NUM_CLASSES = 20
CLASS_NAMES = (
    "background", "hat", "hair", "sun-glasses", "upper-clothes", "dress", "coat", "socks", "pants", "gloves",
    "scarf", "skirt", "torso-skin", "face", "right-arm", "left-arm", "right-leg", "left-leg", "right-shoe",
    "left-shoe",
)
#: VIP's published top-k (DAVIS and JHMDB use 7).
VIP_TOPK = 10
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


def compact_classes(first_ids: np.ndarray, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The class ids (K,) present in frame 0, and frame 0 relabelled 0..K-1 (-1 where no class)."""
    first = torch.from_numpy(first_ids.astype(np.int64))
    classes = torch.unique(first[(first >= 0) & (first < num_classes)])
    if classes.numel() == 0:
        raise ValueError(f"the first annotation holds no class id in 0..{num_classes - 1}")
    lookup = torch.full((int(first.max()) + 1,), -1, dtype=torch.long)
    lookup[classes] = torch.arange(classes.numel())
    return classes, torch.where(first >= 0, lookup[first.clamp(min=0)], -1)


@dataclass
class VipTask:
    """VIP for :func:`~co_settle_hf.evaluation.loop.run_propagation` (module docstring)."""

    video_list: list[VipVideo]
    long_side: int
    num_classes: int
    include_first_frame: bool
    save_masks: bool
    name: str = "VIP"
    min_frames: int = 1

    def videos(self) -> list[VipVideo]:
        return self.video_list

    def input_size(self, frame_size: tuple[int, int], patch_size: int) -> tuple[int, int]:
        return input_size(*frame_size, self.long_side, patch_size)

    def first_labels(self, video, frame_size, size, grid):
        gt = np.stack([read_annotation(p, frame_size)[0] for p in video.annotations])
        classes, compact = compact_classes(gt[0], self.num_classes)
        return labels_to_onehot(resize_ids(compact, size), classes.numel(), grid), (gt, classes, size)

    def score(self, video, state, soft, settings, out, folder) -> dict[str, Any]:
        gt, classes, size = state
        frame_size = tuple(gt.shape[1:])
        conf = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        first_scored = 0 if self.include_first_frame else 1
        for i in range(0, soft.shape[0], _CHUNK):
            compact = upsample_and_argmax(soft[i : i + _CHUNK], size, norm_mask=settings.norm_mask).cpu()
            pred = resize_ids(classes[compact], frame_size)
            for offset, ids in enumerate(pred):
                t = i + offset
                if t >= first_scored:
                    conf += confusion_matrix(ids, torch.from_numpy(gt[t].astype(np.int64)), self.num_classes)
                if self.save_masks:
                    path = out.path(folder, video.name, f"{video.annotations[t].stem}.png")
                    Image.fromarray(ids.numpy().astype(np.uint8)).save(path)
        return {"name": video.name, "frames": len(video.frames), "confusion": conf, "size": list(size)}

    def summarise(self, rows, too_short, settings, out, folder) -> dict[str, Any]:
        total = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        for row in rows:
            total += row["confusion"]
        mean_iou, per_class = miou(total)
        names = CLASS_NAMES if self.num_classes == NUM_CLASSES else tuple(str(c) for c in range(self.num_classes))
        summary: dict[str, Any] = {
            "mIoU": mean_iou,
            "per_class_IoU": {name: float(v) for name, v in zip(names, per_class)},
            "pixel_accuracy": _pixel_accuracy(total),
            "num_videos": len(rows),
            "num_frames": sum(r["frames"] for r in rows),
            "too_short": too_short,
            "settings": {**settings.as_dict(), "long_side": self.long_side,
                         "input_sizes": sorted({tuple(r["size"]) for r in rows}), "num_classes": self.num_classes,
                         "include_first_frame": self.include_first_frame},
        }
        summary["settings"]["input_sizes"] = [list(s) for s in summary["settings"]["input_sizes"]]
        write_csv(out.path(folder, "per-video_results.csv"), ["video", "frames", "mIoU", "pixel_accuracy"],
                  [[r["name"], r["frames"], miou(r["confusion"])[0], _pixel_accuracy(r["confusion"])] for r in rows])
        write_csv(out.path(folder, "confusion_matrix.csv"), ["gt \\ pred", *names],
                  ([name, *counts.tolist()] for name, counts in zip(names, total)))
        write_summary(out.path(folder, "summary.json"), summary)
        return summary


def evaluate_vip(
    encoder: DenseEncoder,
    root: str | Path,
    output_dir: str | Path | OutputFolder,
    settings: PropagationSettings | Sequence[PropagationSettings] | None = None,
    *,
    list_file: str | Path | None = None,
    long_side: int = 880,
    num_classes: int = NUM_CLASSES,
    include_first_frame: bool = True,
    save_masks: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    cache: Any = None,
    processes: Any = None,
    **knobs: Any,
) -> dict[str, Any]:
    """Label-propagation VIP evaluation of ``encoder`` (protocol in the module docstring).

    ``settings`` / ``knobs`` as in :func:`~co_settle_hf.evaluation.davis.evaluate_davis` (default:
    CropMAE's protocol with VIP's top-k, 10). Writes under
    ``output_dir``: ``summary.json`` (mIoU, per-class IoU, pixel accuracy, counts, settings),
    ``per-video_results.csv`` (each video's own mIoU and pixel accuracy), ``confusion_matrix.csv``
    and, if ``save_masks``, the predicted class-id PNGs ``<video>/<frame>.png``. Returns the
    summary, with ``timing``.
    """
    task = VipTask(list_vip_videos(root, list_file), long_side, num_classes, include_first_frame, save_masks)
    task.min_frames = 1 if include_first_frame else 2
    settings = PropagationSettings(topk=VIP_TOPK) if settings is None else settings
    return evaluate_task(task, encoder, root, output_dir, settings, knobs, overwrite=overwrite, cache=cache,
                         processes=processes, progress=progress)
