"""JHMDB pose tracking by label propagation: 15 joints carried as heat maps, scored by PCK.

Layout (the JHMDB release, as the videowalk / CropMAE evaluations read it)::

    root/Rename_Images/<action>/<video>/00001.png ...          frames, in natural name order
    root/joint_positions/<action>/<video>/joint_positions.mat  variable ``pos_img``: (2, 15, T),
                                                               x then y, MATLAB 1-based pixels

List file (optional; without one every video under ``Rename_Images`` is evaluated). One video
per line, blank lines and lines starting with ``#`` skipped:

- ``<joint_positions.mat> <frames folder>`` (the videowalk / CropMAE ``jhmdb_vallist.txt``;
  either order), or
- ``<action>/<video>``.

Relative paths are resolved against ``root`` starting at their ``Rename_Images`` or
``joint_positions`` component, so the released lists work whatever prefix they carry
(``datasets/jhmdb/Rename_Images/...``); paths without such a component are taken relative to
``root``. The published protocol (SPEC section 5) is the split-1 validation list of those
evaluations (268 videos).

Protocol (following the reference code that produced the published numbers):

- Frames are resized to ``size`` (320 x 320, aspect not kept) and then rounded down to patch
  multiples; joints are mapped to feature cells by the same scale, with pixel and cell
  CENTRES aligned: cell = (pixel + 0.5) * h / H - 0.5 (0-based pixels, ``pos_img - 1``).
- Frame 0's joints become 15 Gaussian heat maps (peak 1, sigma 0.5 cells, zero beyond 3 sigma
  along either axis, as the reference's truncated patch) plus a background channel, first,
  that is 1 on every cell no joint reaches and 0 elsewhere (the reference's rule).
- The heat maps are propagated (``propagate_labels``, top-k 7); a joint's prediction is the
  value-weighted mean cell of the 5 largest values of its propagated map AT FEATURE
  RESOLUTION (as the reference), mapped back to pixels of the original frame.
- PCK@a: a visible joint on frames 1..T-1 is correct when its distance to the ground truth is
  at most a x 0.6 x the diagonal of the box around that frame's visible ground-truth joints.
  JHMDB gives every joint in every frame (puppet fits), so all 15 count as visible, as in the
  reference. Shares are pooled over all scored (joint, frame) pairs of all videos, which is
  the reference's mean of per-joint PCKs whenever every joint is scored equally often.
- One deliberate difference: a joint whose propagated map has vanished (all zeros) has no
  prediction. The reference then drops it from scoring and from that frame's box (its
  visibility flag comes from the prediction), which rewards losing a joint; here it counts as
  a miss by default, and ``summary.json`` reports how many there were (``lost_joints``).
  ``count_lost_as_miss=False`` restores the reference's behaviour.

PCK values are shares in [0, 1] (the paper prints percentages).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import scipy.io
import torch

from co_settle_hf.data.frames import list_images

from .features import DenseEncoder, fit_to_patches
from .loop import evaluate_task
from .outputs import OutputFolder
from .propagation import PropagationSettings
from .results import write_csv, write_summary

NUM_JOINTS = 15
#: JHMDB joint order (pos_img's second axis).
JOINT_NAMES = (
    "neck", "belly", "face", "right_shoulder", "left_shoulder", "right_hip", "left_hip", "right_elbow",
    "left_elbow", "right_knee", "left_knee", "right_wrist", "left_wrist", "right_ankle", "left_ankle",
)
SIGMA = 0.5
BOX_FACTOR = 0.6
PEAK_TOPK = 5
#: PCK is scored at these fractions of the person's box size (SPEC: PCK@0.1 and PCK@0.2).
PCK_THRESHOLDS = (0.1, 0.2)


@dataclass(frozen=True)
class JhmdbVideo:
    """One JHMDB video: its name (``<action>/<video>``), frame files and joint file."""

    name: str
    frames: tuple[Path, ...]
    joints: Path


def read_list_file(list_file: str | Path) -> list[tuple[int, list[str]]]:
    """(line number, whitespace-separated tokens) of each non-empty, non-comment line."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise FileNotFoundError(f"list file {list_file} not found")
    entries = []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        tokens = line.split()
        if tokens and not tokens[0].startswith("#"):
            entries.append((number, tokens))
    if not entries:
        raise ValueError(f"list file {list_file} lists no videos")
    return entries


def resolve_in_root(root: Path, entry: str, anchors: Sequence[str]) -> Path:
    """A list entry as a path: absolute as is; else under ``root`` from its first anchor component on."""
    path = Path(entry).expanduser()
    if path.is_absolute():
        return path
    for index, part in enumerate(path.parts):
        if part in anchors:
            return root.joinpath(*path.parts[index:])
    return root / path


def _video(name: str, frame_dir: Path, mat: Path, where: str) -> JhmdbVideo:
    if not frame_dir.is_dir():
        raise FileNotFoundError(f"{where}: frame folder {frame_dir} not found")
    frames = list_images(frame_dir)
    if not frames:
        raise FileNotFoundError(f"{where}: no frames (png/jpg) in {frame_dir}")
    if not mat.is_file():
        raise FileNotFoundError(f"{where}: joint file {mat} not found")
    return JhmdbVideo(name, tuple(frame_dir / f for f in frames), mat)


def list_jhmdb_videos(root: str | Path, list_file: str | Path | None = None) -> list[JhmdbVideo]:
    """Find and check the videos to evaluate (see the module docstring for the accepted lists).

    Raises ``FileNotFoundError`` / ``ValueError`` naming the list line, folder or file for a
    missing root, list, frame folder or joint file, an empty folder or an empty dataset.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"JHMDB root {root} is not a directory")
    videos = []
    if list_file is None:
        images = root / "Rename_Images"
        if not images.is_dir():
            raise FileNotFoundError(f"JHMDB frames folder {images} not found")
        for frame_dir in sorted(p for p in images.glob("*/*") if p.is_dir()):
            name = f"{frame_dir.parent.name}/{frame_dir.name}"
            mat = root / "joint_positions" / name / "joint_positions.mat"
            videos.append(_video(name, frame_dir, mat, f"video {name}"))
        if not videos:
            raise ValueError(f"no videos (<action>/<video> folders) under {images}")
        return videos
    anchors = ("Rename_Images", "joint_positions")
    for number, tokens in read_list_file(list_file):
        where = f"{list_file}, line {number}"
        if len(tokens) == 2:
            mat_token, frame_token = tokens if tokens[0].endswith(".mat") else tokens[::-1]
            mat, frame_dir = resolve_in_root(root, mat_token, anchors), resolve_in_root(root, frame_token, anchors)
            name = f"{frame_dir.parent.name}/{frame_dir.name}"
        elif len(tokens) == 1:
            name = tokens[0].strip("/")
            frame_dir = root / "Rename_Images" / name
            mat = root / "joint_positions" / name / "joint_positions.mat"
        else:
            raise ValueError(f"{where}: expected '<joint_positions.mat> <frames folder>' or '<action>/<video>', "
                             f"got {len(tokens)} fields")
        videos.append(_video(name, frame_dir, mat, where))
    return videos


def read_joint_positions(path: str | Path) -> np.ndarray:
    """Joints of every frame from a ``joint_positions.mat``: float64 (T, 15, 2) (x, y), 0-based pixels."""
    path = Path(path)
    try:
        content = scipy.io.loadmat(str(path))
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"cannot read joint file {path}: {err}") from err
    if "pos_img" not in content:
        raise ValueError(f"joint file {path} has no 'pos_img' variable (found {sorted(k for k in content if not k.startswith('__'))})")
    pos = np.asarray(content["pos_img"], dtype=np.float64)
    if pos.ndim != 3 or pos.shape[:2] != (2, NUM_JOINTS) or pos.shape[2] == 0:
        raise ValueError(f"joint file {path}: pos_img must be (2, {NUM_JOINTS}, T), got {pos.shape}")
    return pos.transpose(2, 1, 0) - 1.0


def pixels_to_cells(points: torch.Tensor, image_size: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """(..., 2) pixel (x, y) -> feature-cell (x, y), pixel and cell centres aligned."""
    scale = torch.tensor([grid[1] / image_size[1], grid[0] / image_size[0]], dtype=points.dtype)
    return (points + 0.5) * scale - 0.5


def cells_to_pixels(points: torch.Tensor, image_size: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`pixels_to_cells`."""
    scale = torch.tensor([image_size[1] / grid[1], image_size[0] / grid[0]], dtype=points.dtype)
    return (points + 0.5) * scale - 0.5


def joint_heatmaps(joints: torch.Tensor, grid: tuple[int, int], sigma: float = SIGMA) -> torch.Tensor:
    """(16, h, w) float32: background, then one truncated Gaussian per joint (cell coords (15, 2)).

    Joint j's map is exp(-d^2 / (2 sigma^2)) around its (x, y), zero where |dx| or |dy| exceeds
    3 sigma; the background is 1 on the cells no joint reaches and 0 elsewhere.
    """
    h, w = grid
    ys = torch.arange(h, dtype=torch.float64)[None, :, None]
    xs = torch.arange(w, dtype=torch.float64)[None, None, :]
    jx = joints[:, 0].to(torch.float64)[:, None, None]
    jy = joints[:, 1].to(torch.float64)[:, None, None]
    dx, dy = xs - jx, ys - jy
    maps = torch.exp(-(dx**2 + dy**2) / (2 * sigma**2))
    maps = torch.where((dx.abs() <= 3 * sigma) & (dy.abs() <= 3 * sigma), maps, torch.zeros_like(maps))
    maps = torch.nan_to_num(maps, nan=0.0)  # a joint without coordinates reaches no cell
    background = (maps.sum(dim=0, keepdim=True) == 0).to(maps.dtype)
    return torch.cat([background, maps]).float()


def heatmap_peaks(maps: torch.Tensor, topk: int = PEAK_TOPK) -> torch.Tensor:
    """(T, J, h, w) maps -> (T, J, 2) cell (x, y): value-weighted mean of each map's top-k cells.

    A map that is zero everywhere gives NaN (no prediction).
    """
    t, j, h, w = maps.shape
    flat = maps.reshape(t, j, h * w).double()
    values, ids = flat.topk(min(topk, h * w), dim=-1)
    total = values.sum(dim=-1, keepdim=True)
    weights = values / total
    x = (weights * (ids % w)).sum(dim=-1)
    y = (weights * torch.div(ids, w, rounding_mode="floor")).sum(dim=-1)
    out = torch.stack([x, y], dim=-1)
    return torch.where((total > 0), out, torch.full_like(out, math.nan))


def normalized_distances(
    pred: np.ndarray | torch.Tensor,
    gt: np.ndarray | torch.Tensor,
    visible: np.ndarray | torch.Tensor,
    include_first_frame: bool = False,
) -> np.ndarray:
    """(T', J) distance / (0.6 x box diagonal) of every scored joint, NaN where not scored.

    A missing prediction (NaN) scores +inf (a miss). Frames without a non-degenerate box (fewer
    than two distinct visible joints) are not scored.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    visible = np.asarray(visible, dtype=bool)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"pred and gt must both be (T, J, 2), got {pred.shape} and {gt.shape}")
    if visible.shape != gt.shape[:2]:
        raise ValueError(f"visible must be (T, J) = {gt.shape[:2]}, got {visible.shape}")
    if not include_first_frame:
        pred, gt, visible = pred[1:], gt[1:], visible[1:]
    visible = visible & np.isfinite(gt).all(axis=-1)
    lo = np.where(visible[..., None], gt, np.inf).min(axis=1)
    hi = np.where(visible[..., None], gt, -np.inf).max(axis=1)
    with np.errstate(invalid="ignore"):
        scale = BOX_FACTOR * np.linalg.norm(hi - lo, axis=-1)  # (T',), nan/inf without visible joints
    dist = np.linalg.norm(pred - gt, axis=-1)
    dist = np.where(np.isnan(dist), np.inf, dist)
    scored = visible & (np.isfinite(scale) & (scale > 0))[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(scored, dist / scale[:, None], np.nan)


def pck_from_distances(distances: np.ndarray, thresholds: Sequence[float] = PCK_THRESHOLDS) -> dict[str, float]:
    """{"PCK@a": share of scored entries (non-NaN) with distance <= a}; NaN if nothing is scored."""
    scored = distances[~np.isnan(distances)]
    return {f"PCK@{a:g}": float((scored <= a).mean()) if scored.size else math.nan for a in thresholds}


def pck(
    pred: np.ndarray | torch.Tensor,
    gt: np.ndarray | torch.Tensor,
    visible: np.ndarray | torch.Tensor,
    thresholds: Sequence[float] = PCK_THRESHOLDS,
    include_first_frame: bool = False,
) -> dict[str, float]:
    """PCK of one video: pred, gt (T, J, 2) pixel (x, y), visible (T, J) bool.

    A visible joint counts as correct when within a x 0.6 x the diagonal of the box around the
    frame's visible ground-truth joints. Frame 0 (the given one) is skipped unless
    ``include_first_frame``. Returns {"PCK@0.1": share, "PCK@0.2": share, "num_scored": n}.
    """
    distances = normalized_distances(pred, gt, visible, include_first_frame)
    result: dict[str, float] = pck_from_distances(distances, thresholds)
    result["num_scored"] = int((~np.isnan(distances)).sum())
    return result


MAPPINGS = ("reference", "centred")


def reference_heatmaps(joints: torch.Tensor, grid: tuple[int, int], sigma: float = SIGMA) -> torch.Tensor:
    """(16, h, w) float32 heat maps of joints (15, 2) in cell units, drawn as the reference code draws them.

    A (6 sigma + 1)-wide Gaussian patch, peak 1, is pasted with its top-left cell at
    ``trunc(joint - 3 sigma)`` (truncation towards zero), so the peak lands on cell
    ``trunc(joint - 3 sigma) + floor((6 sigma + 1) / 2)``: snapped to a cell, not at the joint's
    continuous position. Cells outside the grid are cut off; a patch entirely outside draws
    nothing. Background first: 1 on every cell no joint reaches.
    """
    h, w = grid
    size = 6 * sigma + 1
    centre = size // 2
    maps = torch.zeros(NUM_JOINTS, h, w, dtype=torch.float64)
    for j, (x, y) in enumerate(joints.tolist()):
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        left, top = int(x - 3 * sigma), int(y - 3 * sigma)
        right, bottom = int(x + 3 * sigma + 1), int(y + 3 * sigma + 1)
        if left >= w or top >= h or right < 0 or bottom < 0:
            continue
        xs = torch.arange(max(0, left), min(right, w), dtype=torch.float64)
        ys = torch.arange(max(0, top), min(bottom, h), dtype=torch.float64)
        patch = torch.exp(-((xs[None] - left - centre) ** 2 + (ys[:, None] - top - centre) ** 2) / (2 * sigma**2))
        maps[j, max(0, top) : min(bottom, h), max(0, left) : min(right, w)] = patch
    background = (maps.sum(dim=0, keepdim=True) == 0).to(maps.dtype)
    return torch.cat([background, maps]).float()


def map_joints(points: torch.Tensor, image_size: tuple[int, int], grid: tuple[int, int], mapping: str,
               to_cells: bool) -> torch.Tensor:
    """Pixels -> cells (``to_cells``) or back, as the ``mapping`` says (see the module docstring)."""
    if mapping == "centred":
        return (pixels_to_cells if to_cells else cells_to_pixels)(points, image_size, grid)
    if mapping != "reference":
        raise ValueError(f"mapping must be one of {MAPPINGS}, got {mapping!r}")
    scale = torch.tensor([grid[1] / image_size[1], grid[0] / image_size[0]], dtype=points.dtype)
    return points * scale if to_cells else points / scale


@dataclass
class JhmdbTask:
    """JHMDB for :func:`~co_settle_hf.evaluation.loop.run_propagation` (module docstring)."""

    video_list: list[JhmdbVideo]
    size: tuple[int, int]
    mapping: str
    thresholds: Sequence[float]
    count_lost_as_miss: bool
    include_first_frame: bool
    name: str = "JHMDB"
    min_frames: int = 2

    def videos(self) -> list[JhmdbVideo]:
        return self.video_list

    def input_size(self, frame_size: tuple[int, int], patch_size: int) -> tuple[int, int]:
        return fit_to_patches(self.size, patch_size)

    def first_labels(self, video, frame_size, size, grid):
        gt = read_joint_positions(video.joints)
        if gt.shape[0] != len(video.frames):
            raise ValueError(f"joint file {video.joints} has {gt.shape[0]} frames but {video.frames[0].parent} "
                             f"holds {len(video.frames)} frames")
        cells = map_joints(torch.from_numpy(gt[0]), frame_size, grid, self.mapping, to_cells=True)
        draw = reference_heatmaps if self.mapping == "reference" else joint_heatmaps
        return draw(cells, grid), (gt, frame_size, grid)

    def score(self, video, state, soft, settings, out, folder) -> dict[str, Any]:
        gt, frame_size, grid = state
        peaks = heatmap_peaks(soft[:, 1:].cpu())
        pred = map_joints(peaks, frame_size, grid, self.mapping, to_cells=False).numpy()
        visible = np.isfinite(gt).all(axis=-1)
        lost_mask = np.isnan(pred).any(axis=-1) & visible
        if not self.count_lost_as_miss:
            visible = visible & ~lost_mask
        distances = normalized_distances(pred, gt, visible, self.include_first_frame)
        first = 0 if self.include_first_frame else 1
        return {"name": video.name, "frames": len(video.frames), "distances": distances,
                "lost": int(lost_mask[first:].sum())}

    def summarise(self, rows, too_short, settings, out, folder) -> dict[str, Any]:
        pooled = np.concatenate([r["distances"] for r in rows])
        per_joint = {name: pck_from_distances(pooled[:, j], self.thresholds) for j, name in enumerate(JOINT_NAMES)}
        # The reference's PCK is the mean over joints of each joint's PCK.
        summary: dict[str, Any] = {key: float(np.nanmean([v[key] for v in per_joint.values()]))
                                   for key in next(iter(per_joint.values()))}
        summary.update({
            "per_joint": per_joint,
            "num_videos": len(rows),
            "too_short": too_short,
            "num_scored": int((~np.isnan(pooled)).sum()),
            "lost_joints": sum(r["lost"] for r in rows),
            "settings": {**settings.as_dict(), "size": list(self.size), "mapping": self.mapping, "sigma": SIGMA,
                         "peak_topk": PEAK_TOPK, "thresholds": list(self.thresholds),
                         "count_lost_as_miss": self.count_lost_as_miss,
                         "include_first_frame": self.include_first_frame},
        })
        write_csv(out.path(folder, "per-video_results.csv"), ["video", "frames", *(f"PCK@{a:g}" for a in self.thresholds)],
                  [[r["name"], r["frames"], *pck_from_distances(r["distances"], self.thresholds).values()] for r in rows])
        write_summary(out.path(folder, "summary.json"), summary)
        return summary


def evaluate_jhmdb(
    encoder: DenseEncoder,
    root: str | Path,
    output_dir: str | Path | OutputFolder,
    settings: PropagationSettings | Sequence[PropagationSettings] | None = None,
    *,
    list_file: str | Path | None = None,
    size: tuple[int, int] = (320, 320),
    mapping: str = MAPPINGS[0],
    thresholds: Sequence[float] = PCK_THRESHOLDS,
    count_lost_as_miss: bool = True,
    include_first_frame: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    cache: Any = None,
    processes: Any = None,
    **knobs: Any,
) -> dict[str, Any]:
    """Label-propagation JHMDB evaluation of ``encoder`` (protocol in the module docstring).

    ``settings`` / ``knobs`` as in :func:`~co_settle_hf.evaluation.davis.evaluate_davis`.
    Writes ``summary.json`` (PCK, per-joint PCK, counts, settings) and ``per-video_results.csv``
    (one row per video) under ``output_dir``; returns the summary, with ``timing``.
    """
    if mapping not in MAPPINGS:
        raise ValueError(f"mapping must be one of {MAPPINGS}, got {mapping!r}")
    task = JhmdbTask(list_jhmdb_videos(root, list_file), fit_to_patches(tuple(size), int(encoder.patch_size)),
                     mapping, tuple(thresholds), count_lost_as_miss, include_first_frame)
    return evaluate_task(task, encoder, root, output_dir, settings, knobs, overwrite=overwrite, cache=cache,
                         processes=processes, progress=progress)
