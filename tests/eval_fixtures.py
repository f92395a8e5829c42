"""Tiny evaluation datasets in the official layouts (DAVIS-2017, JHMDB, VIP) and trade-off clips.

Shared by the reader tests (test_davis, test_jhmdb_vip, test_tradeoff) and the command-line
tests (test_eval_cli), so the CLI is exercised on exactly the data the readers are checked on.
Everything is deterministic: frames are built from seeded random cells that move by whole cells.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
import torch
import torch.nn.functional as F
from PIL import Image
from video_factory import write_frame_folder

from co_settle_hf.cli import run
from co_settle_hf.evaluation.davis import davis_palette

# ----------------------------------------------------------------------------- DAVIS

DAVIS_H, DAVIS_W, DAVIS_T, DAVIS_CELL = 64, 96, 5, 8
DAVIS_BACKGROUND = [(40, 70, 200), (20, 30, 140), (60, 110, 230)]
DAVIS_OBJECTS = {1: (230, 30, 20), 2: (30, 220, 40)}


class ColourEncoder:
    """Fake encoder: mean normalised colour of each 8x8 patch (D = 3); near exact on the tiny DAVIS set."""

    image_mean = (0.5, 0.5, 0.5)
    image_std = (0.25, 0.25, 0.25)
    patch_size = DAVIS_CELL

    def __call__(self, pixel_values):
        return F.avg_pool2d(pixel_values, DAVIS_CELL).permute(0, 2, 3, 1)


def davis_sequence_ids(t: int, variant: int) -> np.ndarray:
    """Object ids of frame t: object 1 slides right, object 2 slides down (block aligned)."""
    ids = np.zeros((DAVIS_H, DAVIS_W), dtype=np.uint8)
    ids[8:24, 8 + 8 * t + 8 * variant : 32 + 8 * t + 8 * variant] = 1
    ids[16 + 8 * t : 40 + 8 * t, 64:80] = 2
    return ids


def save_palette_png(path: Path, ids: np.ndarray) -> None:
    """An object-id PNG in DAVIS's palette mode."""
    img = Image.fromarray(ids)
    img.putpalette(davis_palette().reshape(-1).tolist())
    img.save(path)


def write_davis(root: Path, names: tuple[str, ...] = ("alpha", "beta")) -> None:
    """DAVIS-2017 480p layout: JPEGImages, palette Annotations and ImageSets/2017/val.txt."""
    rng = np.random.default_rng(0)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(names) + "\n")
    cell = DAVIS_CELL
    for variant, name in enumerate(names):
        frame_dir = root / "JPEGImages" / "480p" / name
        mask_dir = root / "Annotations" / "480p" / name
        frame_dir.mkdir(parents=True)
        mask_dir.mkdir(parents=True)
        texture = rng.integers(0, len(DAVIS_BACKGROUND), size=(DAVIS_H // cell, DAVIS_W // cell))
        for t in range(DAVIS_T):
            ids = davis_sequence_ids(t, variant)
            colours = np.array(DAVIS_BACKGROUND, dtype=np.uint8)[texture].repeat(cell, 0).repeat(cell, 1)
            for obj, colour in DAVIS_OBJECTS.items():
                colours[ids == obj] = colour
            Image.fromarray(colours).save(frame_dir / f"{t:05d}.jpg", quality=95, subsampling=0)
            save_palette_png(mask_dir / f"{t:05d}.png", ids)


# ----------------------------------------------------------------------------- JHMDB and VIP


def cell_video(num_frames: int, rows: int, cols: int, cell_h: int, cell_w: int, seed: int = 0) -> np.ndarray:
    """Frames of random cell colours, shifted one cell right per frame (wrapping)."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, (rows, cols, 3), dtype=np.uint8)
    frames = [np.roll(cells, t, axis=1) for t in range(num_frames)]
    return np.stack([f.repeat(cell_h, 0).repeat(cell_w, 1) for f in frames])


JHMDB_CELLS = (8, 8, 6, 10)  # rows, cols, cell height, cell width -> 48 x 80 frames


def write_jhmdb(root: Path, name: str = "walk/clip_a", num_frames: int = 5, mat_frames: int | None = None,
                seed: int = 0, joint0_outside: bool = False) -> tuple[Path, Path]:
    """One JHMDB video: Rename_Images/<name>/00001.png... and joint_positions/<name>/joint_positions.mat."""
    rows, cols, ch, cw = JHMDB_CELLS
    frames = cell_video(num_frames, rows, cols, ch, cw, seed)
    frame_dir = root / "Rename_Images" / name
    frame_dir.mkdir(parents=True)
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(frame_dir / f"{t + 1:05d}.png")
    # Joints at cell centres of columns 1..2; they move one cell (10 px) right per frame and, over
    # 5 frames, never reach the image border, so their cells' surroundings stay the same.
    rng = np.random.default_rng(seed + 1)
    cell_rc = np.stack([rng.integers(0, rows, 15), rng.integers(1, 3, 15)], axis=1)
    t_idx = np.arange(num_frames if mat_frames is None else mat_frames)
    x = (cell_rc[:, 1][:, None] + t_idx[None]) * cw + (cw - 1) / 2
    y = np.repeat((cell_rc[:, 0] * ch + (ch - 1) / 2)[:, None], len(t_idx), axis=1)
    if joint0_outside:  # puppet fits can place a joint outside the frame: it reaches no cell
        x[0] = -100.0
    pos = np.stack([x, y]) + 1.0  # MATLAB 1-based
    mat_dir = root / "joint_positions" / name
    mat_dir.mkdir(parents=True)
    scipy.io.savemat(mat_dir / "joint_positions.mat", {"pos_img": pos, "scale": np.ones(len(t_idx))})
    return frame_dir, mat_dir / "joint_positions.mat"


VIP_CELLS = (5, 8, 8, 8)  # rows, cols, cell size -> 40 x 64 frames
VIP_CLASSES = np.array([0, 3, 7, 19])


def write_vip(root: Path, name: str = "videos1", num_frames: int = 4, seed: int = 0, drop_label: int | None = None,
              label_size: tuple[int, int] | None = None) -> tuple[Path, Path]:
    """One VIP video: Images/<name>/*.jpg and Annotations/Category_ids/<name>/*.png (class ids)."""
    rows, cols, ch, cw = VIP_CELLS
    frames = cell_video(num_frames, rows, cols, ch, cw, seed)
    # One class per cell column (bilinear upsampling of labels is exact along a single axis, so
    # perfect tracking scores exactly 1), and one void column, which scoring ignores.
    cell_ids = np.repeat(np.resize(VIP_CLASSES, cols)[None], rows, axis=0)
    cell_ids[:, 3] = 255
    image_dir, label_dir = root / "Images" / name, root / "Annotations" / "Category_ids" / name
    image_dir.mkdir(parents=True)
    label_dir.mkdir(parents=True)
    for t, frame in enumerate(frames):
        stem = f"{t * 25 + 1:012d}"
        Image.fromarray(frame).save(image_dir / f"{stem}.jpg", quality=98)
        if t == drop_label:
            continue
        ids = np.roll(cell_ids, t, axis=1).repeat(ch, 0).repeat(cw, 1).astype(np.uint8)
        if label_size is not None and t == 1:
            ids = np.zeros(label_size, dtype=np.uint8)
        Image.fromarray(ids, mode="L").save(label_dir / f"{stem}.png")
    return image_dir, label_dir


# ----------------------------------------------------------------------------- trade-off clips


def tradeoff_videos(n: int, frames: int = 9) -> list[torch.Tensor]:
    """`n` uint8 (frames, 32, 40, 3) videos of random pixels drifting one column per frame."""
    g = torch.Generator().manual_seed(5)
    base = [torch.randint(0, 256, (1, 32, 40, 3), generator=g, dtype=torch.uint8) for _ in range(n)]
    # Slowly drifting content so D_intra is small but not zero.
    return [torch.cat([torch.roll(b, shifts=t, dims=2) for t in range(frames)]) for b in base]


def write_tradeoff_clips(root: Path, videos: list[torch.Tensor]) -> Path:
    """Each video as a folder of lossless PNG frames, root/clip<i>/00000.png..., as discover_clips reads."""
    for index, video in enumerate(videos):
        write_frame_folder(root / f"clip{index}", video.numpy(), ext="png")
    return root


# ----------------------------------------------------------------------------- UCF101 / HMDB51 retrieval

#: One colour per class: the classes differ by construction (a colour-pooling encoder separates them).
RETRIEVAL_COLOURS = [(220, 40, 40), (40, 200, 60), (50, 70, 220), (230, 210, 40), (160, 60, 200)]


def retrieval_video(label: int, seed: int, frames: int = 10, size: int = 32) -> np.ndarray:
    """uint8 (frames, size, size, 3): the class colour with seeded texture drifting one pixel a frame."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(-40, 41, (size, size + frames, 3))
    colour = np.array(RETRIEVAL_COLOURS[label])
    return np.stack([np.clip(colour + texture[:, t:t + size], 0, 255) for t in range(frames)]).astype(np.uint8)


def write_ucf101(root: Path, train: int = 4, test: int = 2, classes: int = 5) -> Path:
    """UCF101 layout: <Class>/v_<Class>_gXX_c01.avi and ucfTrainTestlist/{classInd,trainlist01,testlist01}.txt."""
    from video_factory import write_video

    names = [f"Class{c}" for c in range(classes)]
    lists: dict[str, list[str]] = {"train": [], "test": []}
    for c, name in enumerate(names):
        for g in range(train + test):
            relative = f"{name}/v_{name}_g{g + 1:02d}_c01.avi"
            write_video(root / relative, retrieval_video(c, seed=100 * c + g), codec="mpeg4")
            lists["train" if g < train else "test"].append(relative)
    splits = root / "ucfTrainTestlist"
    splits.mkdir(parents=True)
    (splits / "classInd.txt").write_text("".join(f"{c + 1} {n}\n" for c, n in enumerate(names)))
    labels = {n: c + 1 for c, n in enumerate(names)}
    (splits / "trainlist01.txt").write_text("".join(f"{v} {labels[v.split('/')[0]]}\n" for v in lists["train"]))
    (splits / "testlist01.txt").write_text("".join(f"{v}\n" for v in lists["test"]))
    return root


# ----------------------------------------------------------------------------- TAP-Vid

TAPVID_SIZE, TAPVID_T, TAPVID_STEP = 128, 6, (3, 2)  # frame side, frames, content motion (x, y) in px per frame
#: A flat grey square that hides the points under it on every frame (frame pixels: top, bottom, left, right).
TAPVID_OCCLUDER = (8, 40, 80, 112)


def tapvid_video(seed: int = 0, num_points: int = 24) -> dict[str, np.ndarray]:
    """A smooth random texture sliding by TAPVID_STEP px per frame under a fixed grey square, with the true
    tracks of random points: {"video": uint8 (T, S, S, 3), "points": (N, T, 2) normalised x, y, "occluded": (N, T)}.

    A point is occluded on a frame where it has left the frame or lies under the square.
    """
    import scipy.ndimage

    rng = np.random.default_rng(seed)
    margin = max(TAPVID_STEP) * TAPVID_T
    side = TAPVID_SIZE + margin
    noise = rng.normal(size=(side, side, 3))
    texture = np.stack([scipy.ndimage.gaussian_filter(noise[..., c], 3.0, mode="wrap") for c in range(3)], -1)
    texture = (texture - texture.min()) / (texture.max() - texture.min()) * 255
    top, bottom, left, right = TAPVID_OCCLUDER
    frames, tracks = [], []
    start = rng.uniform(4, TAPVID_SIZE - 4, (num_points, 2))  # frame-0 pixel positions (x, y); 0 = left edge
    for t in range(TAPVID_T):
        dx, dy = TAPVID_STEP[0] * t, TAPVID_STEP[1] * t
        frame = texture[dy:dy + TAPVID_SIZE, dx:dx + TAPVID_SIZE].copy()  # content moves by (-dx, -dy)
        frame[top:bottom, left:right] = 128
        frames.append(frame)
        tracks.append(start - np.array([dx, dy]))
    points = np.stack(tracks, axis=1)
    x, y = points[..., 0], points[..., 1]
    occluded = (x < 0) | (y < 0) | ((x >= left) & (x < right) & (y >= top) & (y < bottom))
    return {"video": np.stack(frames).round().astype(np.uint8), "points": points / TAPVID_SIZE, "occluded": occluded}


class PatchPixelEncoder:
    """Fake encoder for point tracking: per 8 px cell, the 2x2-pooled pixels of the 16 x 16 window
    centred on it, minus their mean (D = 192). Overlapping windows make neighbouring cells alike, as
    a ViT's are, and a flat patch has no feature, so it matches nothing (an occluder looks occluded)."""

    image_mean = (0.5, 0.5, 0.5)
    image_std = (0.25, 0.25, 0.25)
    patch_size = 8

    def __call__(self, pixel_values):
        b, _, h, w = pixel_values.shape
        pooled = F.avg_pool2d(pixel_values, 2)
        windows = F.unfold(pooled, 8, stride=4, padding=2).transpose(1, 2)  # (B, h/8 * w/8, 3 * 8 * 8)
        windows = windows - windows.mean(dim=-1, keepdim=True)
        return windows.reshape(b, h // 8, w // 8, -1)


def write_tapvid_npz(root: Path, names: tuple[str, ...] = ("bear", "cows")) -> Path:
    """The converted layout: root/<video>.npz with video, points, occluded."""
    root.mkdir(parents=True)
    for seed, name in enumerate(names):
        np.savez(root / f"{name}.npz", **tapvid_video(seed))
    return root


def write_tapvid_pickle(path: Path, names: tuple[str, ...] = ("bear", "cows")) -> Path:
    """The published layout: one pickle, video name -> {video, points, occluded}."""
    import pickle

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({name: tapvid_video(seed) for seed, name in enumerate(names)}))
    return path


def eval_cli(argv: list[str]) -> dict:
    """`co-settle eval ...` as the command line runs it: a refusal exits with its message."""
    return run("eval", argv)
