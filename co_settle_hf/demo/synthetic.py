"""A label-propagation benchmark with exact masks, rendered over real footage (DAVIS-2017 layout).

No video-object-segmentation dataset is reachable offline, so the demo builds one whose ground
truth is exact by construction. Each sequence is:

- a background: ``num_frames`` consecutive frames of a real clip (every ``frame_stride``-th frame),
  cropped at random to the target aspect ratio and resized (bilinear, antialiased) to ``size``;
- 2 or 3 objects (``objects_per_sequence``): an ellipse, a rounded box or a star-shaped polygon,
  each filled with a patch of REAL texture cropped from another image or frame
  (``texture_sources``), sampled with nearest-neighbour lookup so every object pixel is a texture
  pixel;
- smooth seeded motion: each object's centre follows a sinusoid per axis (its own amplitude,
  angular speed of 0.06 to 0.16 rad per frame, and phase) and its size a slow sinusoidal scale
  change of at most +-12 %;
- a fixed random z-order: objects occlude each other and the mask shows the visible part only.

A plan is redrawn (from the same seeded stream) until every object is well visible in frame 0
(the annotated frame) and, with two or more objects, some object is partly occluded at least once.

Point tracks come for free: a point of an object keeps its unit coordinates as the object moves
and scales, so its position on every frame is known, and it is visible where the mask shows its
object at its pixel (:func:`object_point_tracks`). ``TAPVID/<seq>.npz`` holds each sequence in the
TAP-Vid layout that ``co-settle eval tapvid`` reads (the exact render, its tracks and occlusion).

Files: ``JPEGImages/480p/<seq>/00000.jpg`` (JPEG quality 95, so stored pixels differ slightly from
the exact render; masks are exact), ``Annotations/480p/<seq>/00000.png`` (palette PNGs with the
DAVIS palette: 0 background, objects 1..K), ``ImageSets/2017/val.txt`` and ``meta.json``. The folder
is named ``480p`` for loader compatibility; the real resolution is ``size`` (default 240x424, half
of DAVIS 480p with the width rounded to a multiple of 8), recorded in ``meta.json``. Output is a
pure function of the inputs and ``seed``: two runs write identical bytes.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from co_settle_hf.data.video import read_video_frames

from ..evaluation.davis import davis_palette

DEFAULT_SIZE = (240, 424)
JPEG_QUALITY = 95
SHAPES = ("ellipse", "rounded_box", "polygon")
_MAX_TRIES = 100
_MIN_VISIBLE_FIRST = 0.4  # share of an object's in-frame area that must be unoccluded in frame 0
_MIN_AREA_FIRST = 0.01  # share of the frame an object must cover in frame 0


@dataclass(frozen=True)
class ObjectPlan:
    """One textured object: its shape in unit coordinates, texture and per-frame placement."""

    shape: str  # one of SHAPES
    shape_params: torch.Tensor  # rounded_box: (corner,); polygon: (n, 2) vertex (angle, radius)
    texture: torch.Tensor  # uint8 (h, w, 3) patch of real image texture
    half_size: tuple[float, float]  # base half-height and half-width in pixels
    centers: torch.Tensor  # float64 (T, 2) centre (y, x) in pixels
    scales: torch.Tensor  # float64 (T,) size multiplier
    depth: int  # z-order: larger is in front
    source: dict  # provenance of the texture patch, for meta.json


@dataclass(frozen=True)
class SequencePlan:
    """Everything needed to render one sequence; object ``k`` in ``objects[k - 1]`` has mask id k."""

    background: torch.Tensor  # uint8 (T, H, W, 3)
    objects: tuple[ObjectPlan, ...]


def object_layers(plan: SequencePlan) -> tuple[torch.Tensor, torch.Tensor]:
    """Each object rendered alone: coverage (K, T, H, W) bool and colour (K, T, H, W, 3) uint8."""
    t, h, w = plan.background.shape[:3]
    alphas, colours = [], []
    for obj in plan.objects:
        u, v = _unit_coords(obj, t, h, w)
        alphas.append(_inside(obj, u, v))
        th, tw = obj.texture.shape[:2]
        ty = ((v + 1) * (th / 2)).floor().clamp(0, th - 1).long()
        tx = ((u + 1) * (tw / 2)).floor().clamp(0, tw - 1).long()
        colours.append(obj.texture.reshape(-1, 3)[(ty * tw + tx).reshape(-1)].reshape(t, h, w, 3))
    return torch.stack(alphas), torch.stack(colours)


def render_sequence(plan: SequencePlan) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite the objects back to front over the background: frames (T, H, W, 3) uint8 and
    masks (T, H, W) uint8 holding the id of the visible object (0 = background)."""
    alphas, colours = object_layers(plan)
    masks = _visible_ids(alphas, [o.depth for o in plan.objects])
    frames = plan.background.clone()
    for k in range(len(plan.objects)):
        here = masks == k + 1
        frames[here] = colours[k][here]
    return frames, masks


def plan_sequence(
    background: torch.Tensor,
    texture_sources: Sequence[torch.Tensor],
    num_objects: int,
    rng: np.random.Generator,
) -> SequencePlan:
    """Draw shapes, textures, paths and a z-order over ``background`` (uint8 (T, H, W, 3)), redrawing
    until each object is well visible in frame 0 and (with 2+ objects) some object is occluded."""
    _check_video(background, "background")
    if num_objects < 1:
        raise ValueError(f"num_objects must be >= 1, got {num_objects}")
    _check_textures(texture_sources)
    t, h, w = background.shape[:3]
    for _ in range(_MAX_TRIES):
        depths = rng.permutation(num_objects)
        objects = tuple(_draw_object(rng, t, h, w, texture_sources, int(d)) for d in depths)
        alone = torch.stack([_inside(o, *_unit_coords(o, t, h, w)) for o in objects])
        masks = _visible_ids(alone, [int(d) for d in depths])
        full = alone.sum(dim=(2, 3))  # (K, T) in-frame area of each object alone
        visible = torch.stack([(masks == k + 1).sum(dim=(1, 2)) for k in range(num_objects)])
        first_ok = bool(((visible[:, 0] >= _MIN_VISIBLE_FIRST * full[:, 0])
                         & (full[:, 0] >= _MIN_AREA_FIRST * h * w)).all())
        occluded = num_objects == 1 or bool((visible < full).any())
        if first_ok and occluded:
            return SequencePlan(background=background, objects=objects)
    raise RuntimeError(f"could not place {num_objects} objects in {_MAX_TRIES} tries on a {h}x{w} frame")


def object_point_tracks(plan: SequencePlan, masks: torch.Tensor, points_per_object: int,
                        rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """True tracks of ``points_per_object`` random pixel centres of each object's visible part in frame 0:
    positions (N, T, 2) as normalised (x, y) and occlusion (N, T): off the frame, or another object's pixel."""
    t, h, w = masks.shape
    ids = masks.numpy()
    tracks, hidden = [], []
    for k, obj in enumerate(plan.objects):
        ys, xs = np.nonzero(ids[0] == k + 1)
        pick = rng.choice(len(ys), size=min(points_per_object, len(ys)), replace=False)
        centres, scales = obj.centers.numpy(), obj.scales.numpy()
        half_h, half_w = obj.half_size[0] * scales, obj.half_size[1] * scales  # (T,) each
        u = (xs[pick] + 0.5 - centres[0, 1]) / half_w[0]
        v = (ys[pick] + 0.5 - centres[0, 0]) / half_h[0]
        x = centres[None, :, 1] + u[:, None] * half_w[None]  # (P, T)
        y = centres[None, :, 0] + v[:, None] * half_h[None]
        inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
        rows, cols = np.clip(np.floor(y), 0, h - 1).astype(int), np.clip(np.floor(x), 0, w - 1).astype(int)
        hidden.append(~(inside & (ids[np.arange(t)[None], rows, cols] == k + 1)))
        tracks.append(np.stack([x / w, y / h], axis=-1))
    return np.concatenate(tracks), np.concatenate(hidden)


def benchmark_sequence_plan(
    clip: torch.Tensor,
    texture_sources: Sequence[torch.Tensor],
    seed: int,
    index: int,
    num_frames: int = 20,
    size: tuple[int, int] = DEFAULT_SIZE,
    objects_per_sequence: tuple[int, int] = (2, 3),
    frame_stride: int = 1,
) -> tuple[SequencePlan, dict]:
    """The plan of sequence ``index`` of a benchmark (and where its background came from), drawn from
    ``numpy.random.default_rng([seed, index])``: what :func:`make_propagation_benchmark` renders."""
    _check_params(num_frames, size, objects_per_sequence, frame_stride)
    _check_clip(clip, "clip", num_frames, frame_stride)
    rng = np.random.default_rng([seed, index])
    background, placement = _background(clip, num_frames, frame_stride, tuple(size), rng)
    num_objects = int(rng.integers(objects_per_sequence[0], objects_per_sequence[1] + 1))
    return plan_sequence(background, texture_sources, num_objects, rng), placement


def make_propagation_benchmark(
    output_root: str | Path,
    background_clips: Sequence[torch.Tensor | str | Path],
    texture_sources: Sequence[torch.Tensor],
    num_sequences: int,
    num_frames: int = 20,
    size: tuple[int, int] = DEFAULT_SIZE,
    objects_per_sequence: tuple[int, int] = (2, 3),
    seed: int = 0,
    frame_stride: int = 1,
    overwrite: bool = False,
    points_per_object: int = 8,
) -> Path:
    """Write a DAVIS-2017-style benchmark of ``num_sequences`` rendered sequences and return its root.

    Sequence i uses background clip ``i % len(background_clips)`` (uint8 (T, H, W, 3) tensors or video
    paths, decoded once) and draws everything else from ``numpy.random.default_rng([seed, i])``
    (see :func:`benchmark_sequence_plan`).
    ``texture_sources`` are uint8 images (H, W, 3) or clips (T, H, W, 3): each object's texture is a
    crop of a random frame of a random source. ``overwrite`` replaces an earlier benchmark in place.
    ``points_per_object`` point tracks per object go to ``TAPVID/<seq>.npz`` (drawn from
    ``default_rng([seed, i, 1])``, so the masks and frames do not depend on them).
    """
    root = Path(output_root)
    _check_params(num_frames, size, objects_per_sequence, frame_stride)
    if num_sequences < 1:
        raise ValueError(f"num_sequences must be >= 1, got {num_sequences}")
    if not background_clips:
        raise ValueError("background_clips is empty")
    _check_textures(texture_sources)
    clips, names = [], []
    for j, clip in enumerate(background_clips):
        if isinstance(clip, (str, Path)):
            names.append(re.sub(r"[^a-z0-9]+", "-", Path(clip).stem.lower()).strip("-") or f"clip{j}")
            clip = read_video_frames(clip)
        else:
            names.append(f"clip{j}")
        _check_clip(clip, f"background_clips[{j}] ({names[j]})", num_frames, frame_stride)
        clips.append(clip)
    _prepare_root(root, overwrite)

    palette = davis_palette().reshape(-1).tolist()
    sequences = {}
    for i in range(num_sequences):
        j = i % len(clips)
        plan, placement = benchmark_sequence_plan(clips[j], texture_sources, seed, i, num_frames, size,
                                                  objects_per_sequence, frame_stride)
        frames, masks = render_sequence(plan)
        name = f"{i:03d}-{names[j]}"
        _write_sequence(root, name, frames, masks, palette)
        points, occluded = object_point_tracks(plan, masks, points_per_object, np.random.default_rng([seed, i, 1]))
        (root / "TAPVID").mkdir(exist_ok=True)
        np.savez(root / "TAPVID" / f"{name}.npz", video=frames.numpy(), points=points, occluded=occluded)
        sequences[name] = {"background": names[j], **placement, "objects": [
            {"id": k + 1, "shape": o.shape, "depth": o.depth, **o.source} for k, o in enumerate(plan.objects)]}

    (root / "ImageSets" / "2017").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("".join(f"{n}\n" for n in sequences), encoding="utf-8")
    meta = {
        "generator": "co_settle_hf.demo.synthetic.make_propagation_benchmark",
        "seed": seed, "num_sequences": num_sequences, "num_frames": num_frames, "size": list(size),
        "objects_per_sequence": list(objects_per_sequence), "frame_stride": frame_stride, "jpeg_quality": JPEG_QUALITY,
        "points_per_object": points_per_object,
        "background_clips": names, "num_texture_sources": len(texture_sources), "sequences": sequences,
    }
    (root / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return root


def _check_params(num_frames: int, size: tuple[int, int], objects_per_sequence: tuple[int, int],
                  frame_stride: int) -> None:
    if num_frames < 2 or frame_stride < 1:
        raise ValueError(f"need num_frames >= 2 and frame_stride >= 1, got {num_frames} and {frame_stride}")
    if len(size) != 2 or min(size) < 16:
        raise ValueError(f"size must be (height, width), both >= 16, got {size}")
    lo, hi = objects_per_sequence
    if not 1 <= lo <= hi <= 255:
        raise ValueError(f"objects_per_sequence must satisfy 1 <= min <= max <= 255, got {objects_per_sequence}")


def _check_clip(clip: torch.Tensor, what: str, num_frames: int, stride: int) -> None:
    _check_video(clip, what)
    need = (num_frames - 1) * stride + 1
    if clip.shape[0] < need:
        raise ValueError(f"{what} has {clip.shape[0]} frames; {num_frames} frames at stride {stride} need {need}")


def _check_textures(texture_sources: Sequence[torch.Tensor]) -> None:
    if not texture_sources:
        raise ValueError("texture_sources is empty: objects need real image texture")
    for i, src in enumerate(texture_sources):
        if not isinstance(src, torch.Tensor) or src.dtype != torch.uint8 or src.ndim not in (3, 4) or src.shape[-1] != 3:
            got = f"{src.dtype} {tuple(src.shape)}" if isinstance(src, torch.Tensor) else type(src).__name__
            raise ValueError(f"texture_sources[{i}] must be a uint8 tensor (H, W, 3) or (T, H, W, 3), got {got}")


def _check_video(video: torch.Tensor, what: str) -> None:
    if not isinstance(video, torch.Tensor) or video.dtype != torch.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        got = f"{video.dtype} {tuple(video.shape)}" if isinstance(video, torch.Tensor) else type(video).__name__
        raise ValueError(f"{what} must be a uint8 tensor (T, H, W, 3), got {got}")


def _unit_coords(obj: ObjectPlan, t: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel centres in the object's unit frame, (T, H, W) each: the shape fills [-1, 1]^2."""
    ys = torch.arange(h, dtype=torch.float64).view(1, h, 1) + 0.5
    xs = torch.arange(w, dtype=torch.float64).view(1, 1, w) + 0.5
    u = (xs - obj.centers[:, 1].view(t, 1, 1)) / (obj.half_size[1] * obj.scales.view(t, 1, 1))
    v = (ys - obj.centers[:, 0].view(t, 1, 1)) / (obj.half_size[0] * obj.scales.view(t, 1, 1))
    return u, v


def _visible_ids(alphas: torch.Tensor, depths: Sequence[int]) -> torch.Tensor:
    """Per pixel, the id (k + 1) of the front-most covering object, 0 where none covers: (T, H, W) uint8."""
    masks = torch.zeros(alphas.shape[1:], dtype=torch.uint8)
    for k in sorted(range(len(depths)), key=lambda i: depths[i]):  # back to front
        masks[alphas[k]] = k + 1
    return masks


def _inside(obj: ObjectPlan, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Point-in-shape test on unit coordinates (shapes fill [-1, 1]^2)."""
    if obj.shape == "ellipse":
        return u * u + v * v <= 1
    if obj.shape == "rounded_box":
        corner = float(obj.shape_params[0])
        du = (u.abs() - (1 - corner)).clamp_min(0)
        dv = (v.abs() - (1 - corner)).clamp_min(0)
        return (u.abs() <= 1) & (v.abs() <= 1) & (du * du + dv * dv <= corner * corner)
    # Star-shaped polygon around the origin, vertices sorted by angle: a point is inside when it lies
    # on the origin's side of the edge spanning its angular sector.
    angles, radii = obj.shape_params[:, 0].contiguous(), obj.shape_params[:, 1]
    pu, pv = radii * torch.cos(angles), radii * torch.sin(angles)
    phi = torch.atan2(v, u) % (2 * math.pi)
    j = (torch.searchsorted(angles, phi.contiguous(), right=True) - 1) % len(angles)
    k = (j + 1) % len(angles)
    au, av, bu, bv = pu[j], pv[j], pu[k], pv[k]
    return (bu - au) * (v - av) - (bv - av) * (u - au) >= 0


def _draw_object(rng: np.random.Generator, t: int, h: int, w: int, sources: Sequence[torch.Tensor],
                 depth: int) -> ObjectPlan:
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    if shape == "ellipse":
        params = torch.zeros(0, dtype=torch.float64)
    elif shape == "rounded_box":
        params = torch.tensor([rng.uniform(0.2, 0.6)], dtype=torch.float64)
    else:
        n = int(rng.integers(5, 10))
        angles = np.sort((2 * np.pi * (np.arange(n) + rng.uniform(-0.35, 0.35, n)) / n + rng.uniform(0, 2 * np.pi))
                         % (2 * np.pi))  # jitter < half a step keeps every angular gap below pi
        params = torch.tensor(np.stack([angles, rng.uniform(0.55, 1.0, n)], axis=1), dtype=torch.float64)
    half_h = rng.uniform(0.14, 0.26) * h
    half_w = min(half_h * rng.uniform(0.7, 1.6), 0.35 * w)
    frames = torch.arange(t, dtype=torch.float64)
    centre = (rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w)
    amplitude = (rng.uniform(0.08, 0.25) * h, rng.uniform(0.08, 0.3) * w)
    speed, phase = rng.uniform(0.06, 0.16, 2), rng.uniform(0, 2 * np.pi, 2)
    centers = torch.stack([centre[a] + amplitude[a] * torch.sin(speed[a] * frames + phase[a]) for a in (0, 1)], dim=1)
    scale_amp, scale_speed, scale_phase = rng.uniform(0.04, 0.12), rng.uniform(0.05, 0.12), rng.uniform(0, 2 * np.pi)
    scales = 1 + scale_amp * torch.sin(scale_speed * frames + scale_phase)
    texture, source = _texture_patch(rng, sources, (2 * half_h * (1 + scale_amp), 2 * half_w * (1 + scale_amp)))
    return ObjectPlan(shape=shape, shape_params=params, texture=texture, half_size=(half_h, half_w),
                      centers=centers, scales=scales, depth=depth, source=source)


def _texture_patch(rng: np.random.Generator, sources: Sequence[torch.Tensor],
                   extent: tuple[float, float]) -> tuple[torch.Tensor, dict]:
    """A crop of a random source (and frame) about as large as the object's largest extent."""
    index = int(rng.integers(len(sources)))
    image, frame = sources[index], None
    if image.ndim == 4:
        frame = int(rng.integers(image.shape[0]))
        image = image[frame]
    ch, cw = (max(1, min(math.ceil(e), s)) for e, s in zip(extent, image.shape[:2]))
    y0, x0 = int(rng.integers(image.shape[0] - ch + 1)), int(rng.integers(image.shape[1] - cw + 1))
    source = {"texture_source": index, "texture_frame": frame, "texture_crop": [y0, x0, ch, cw]}
    return image[y0:y0 + ch, x0:x0 + cw].contiguous(), source


def _background(clip: torch.Tensor, num_frames: int, stride: int, size: tuple[int, int],
                rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
    """Consecutive frames at a random start, the largest crop of the target aspect at a random offset,
    resized to ``size`` (bilinear, antialiased)."""
    n, h, w = clip.shape[:3]
    start = int(rng.integers(n - (num_frames - 1) * stride))
    ch, cw = min(h, round(w * size[0] / size[1])), min(w, round(h * size[1] / size[0]))
    y0, x0 = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
    frames = clip[start:start + (num_frames - 1) * stride + 1:stride, y0:y0 + ch, x0:x0 + cw]
    x = F.interpolate(frames.permute(0, 3, 1, 2).float(), size=size, mode="bilinear", antialias=True,
                      align_corners=False)
    background = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    return background, {"start_frame": start, "crop": [y0, x0, ch, cw]}


def _prepare_root(root: Path, overwrite: bool) -> None:
    ours = [root / "JPEGImages" / "480p", root / "Annotations" / "480p", root / "ImageSets" / "2017" / "val.txt",
            root / "meta.json", root / "TAPVID"]
    existing = [p for p in ours if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{root} already holds a benchmark ({existing[0]}); pass overwrite=True to replace it")
    for p in existing:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


def _write_sequence(root: Path, name: str, frames: torch.Tensor, masks: torch.Tensor, palette: list[int]) -> None:
    image_dir, mask_dir = root / "JPEGImages" / "480p" / name, root / "Annotations" / "480p" / name
    image_dir.mkdir(parents=True)
    mask_dir.mkdir(parents=True)
    for i, (frame, mask) in enumerate(zip(frames.numpy(), masks.numpy())):
        Image.fromarray(frame).save(image_dir / f"{i:05d}.jpg", quality=JPEG_QUALITY)
        png = Image.fromarray(mask)
        png.putpalette(palette)  # turns the L image into a P (palette) image with the same indices
        png.save(mask_dir / f"{i:05d}.png")
