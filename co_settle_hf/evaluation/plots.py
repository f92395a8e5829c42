"""Pictures for reports: outlined mask overlays (comparison sheets, side-by-side mp4), feature PCA,
the trade-off plot, the retrieval confusion picture and point tracks.

Everything renders off-screen (matplotlib's Agg backend, no display needed); videos are written
with PyAV. Inputs are torch tensors or numpy arrays; nothing here changes them.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .tradeoff import TRADEOFF  # noqa: E402

#: Opacity of the label colours over the frame (the outlines are opaque).
MASK_ALPHA = 0.4

#: Okabe and Ito's colour-blind-safe colours (orange, sky blue, bluish green, yellow, blue,
#: vermillion, reddish purple), used for labels 1, 2, ... in turn; label 0 is the background.
SAFE_COLOURS = ((230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0),
                (204, 121, 167))


def safe_palette() -> np.ndarray:
    """(256, 3) uint8 label colours: black, then :data:`SAFE_COLOURS` repeated."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[1:] = np.array(SAFE_COLOURS, dtype=np.uint8)[np.arange(255) % len(SAFE_COLOURS)]
    return palette


def _to_numpy(array, name: str) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    if isinstance(array, np.ndarray):
        return array
    raise ValueError(f"{name} must be a torch tensor or numpy array, got {type(array).__name__}")


def _check_frames_masks(frames, masks) -> tuple[np.ndarray, np.ndarray]:
    f = _to_numpy(frames, "frames")
    m = _to_numpy(masks, "masks")
    if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {f.dtype} {f.shape}")
    if m.ndim != 3 or m.shape != f.shape[:3]:
        raise ValueError(f"masks must be (T, H, W) = {f.shape[:3]} to match the frames, got {m.shape}")
    if f.shape[0] == 0:
        raise ValueError("frames is empty (T = 0)")
    if np.issubdtype(m.dtype, np.floating) or m.min() < 0 or m.max() > 255:
        raise ValueError(f"masks must hold integer labels in 0..255, got {m.dtype} in [{m.min()}, {m.max()}]")
    return f, m.astype(np.int64)


def overlay_masks(frames, masks, palette: np.ndarray | None = None, alpha: float = MASK_ALPHA) -> np.ndarray:
    """Outlined label colours over frames: uint8 (T, H, W, 3), readable on any background.

    Label 0 (background) leaves the frame as is; other labels tint it with ``alpha``, and each region
    gets an opaque outline: its colour on the 2 pixels inside its edge, black on the pixel outside.
    The colour shows on dark backgrounds, the black ring on light ones, and the default palette
    (:func:`safe_palette`) stays distinct for colour-blind readers, so a red object with a red mask
    still shows its outline.
    """
    from scipy.ndimage import maximum_filter, minimum_filter

    f, m = _check_frames_masks(frames, masks)
    pal = safe_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
    if pal.ndim != 2 or pal.shape[1] != 3 or pal.shape[0] <= m.max():
        raise ValueError(f"palette must be (K, 3) with K > the largest label {m.max()}, got {pal.shape}")
    colours = pal[m].astype(np.float32)
    out = f.astype(np.float32)
    labelled = (m > 0)[..., None]
    out = np.where(labelled, (1 - alpha) * out + alpha * colours, out)
    window = (1, 5, 5)  # within 2 pixels of another label
    edge = (maximum_filter(m, window) != minimum_filter(m, window)) & (m > 0)
    out[edge] = colours[edge]
    out[(m == 0) & (maximum_filter(m, (1, 3, 3)) > 0)] = 0  # the black ring just outside
    return out.round().clip(0, 255).astype(np.uint8)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_overlay_video(frames, masks, path: str | Path, fps: int = 10, palette: np.ndarray | None = None) -> Path:
    """Write the mask overlay of every frame as an mp4 (H.264, or MPEG-4 part 2 without libx264)."""
    return _write_even(overlay_masks(frames, masks, palette), path, fps)


def _write_even(frames: np.ndarray, path: str | Path, fps: int) -> Path:
    """Odd frame sizes padded by one replicated row/column (yuv420p needs even sizes), then encoded."""
    from ..data.video import write_video

    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return write_video(path, frames, fps=fps)


@dataclass
class SheetRow:
    """One sequence of a comparison sheet: a few frames, their ground truth, each model's prediction."""

    name: str
    frame_indices: list[int]
    frames: np.ndarray  # uint8 (k, H, W, 3)
    truth: np.ndarray  # (k, H, W) labels
    predictions: dict[str, np.ndarray]  # model -> (k, H, W) labels
    scores: dict[str, float]  # model -> the sequence's score


def _tile_size(height: int, width: int, tile_width: int) -> tuple[int, int]:
    return max(1, round(height * tile_width / width)), tile_width


def _shrink(frames: np.ndarray, labels: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Frames (bilinear) and labels (nearest) at tile size, so outlines are drawn at the size shown."""
    from PIL import Image

    small = [np.asarray(Image.fromarray(f).resize(size[::-1], Image.BILINEAR)) for f in frames]
    ids = [np.asarray(Image.fromarray(m.astype(np.uint8)).resize(size[::-1], Image.NEAREST)) for m in labels]
    return np.stack(small), np.stack(ids)


def comparison_sheet(rows: Sequence[SheetRow], path: str | Path, title: str, metric: str = "J&F",
                     tile_width: int = 240) -> Path:
    """Save a grid: a row per sequence, for each chosen frame the ground truth, then each model's prediction.

    Each prediction tile is titled with its model and the sequence's ``metric`` (and, after the
    first model, the change from it); the row order is the caller's (biggest changes first).
    """
    if not rows:
        raise ValueError("rows is empty: no sequence to draw")
    models = list(rows[0].predictions)
    k = len(rows[0].frame_indices)
    cols = k * (1 + len(models))
    h, w = rows[0].frames.shape[1:3]
    th, tw = _tile_size(h, w, tile_width)
    inch = tw / 100
    fig, axes = plt.subplots(len(rows), cols, figsize=(inch * cols, (inch * th / tw + 0.5) * len(rows) + 0.8),
                             squeeze=False)
    for r, row in enumerate(rows):
        frames, truth = _shrink(row.frames, row.truth, (th, tw))
        panels = [("ground truth", overlay_masks(frames, truth))]
        for model in models:
            panels.append((model, overlay_masks(*_shrink(row.frames, row.predictions[model], (th, tw)))))
        for i, t in enumerate(row.frame_indices):
            for p, (label, picture) in enumerate(panels):
                ax = axes[r, i * len(panels) + p]
                ax.imshow(picture[i], interpolation="nearest")
                ax.set_xticks([]), ax.set_yticks([])
                text = f"{row.name}, frame {t}\nground truth" if p == 0 else f"{label}\n{metric} {row.scores[label]:.3f}"
                if p > 1:
                    text += f" ({row.scores[label] - row.scores[models[0]]:+.3f})"
                ax.set_title(text, fontsize=7, fontweight="bold" if p == 0 else "normal")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(pad=0.3)
    return _save(fig, path)


#: Narrowest panel of a side-by-side video, in pixels (room for its label).
MIN_PANEL_WIDTH = 256


def write_side_by_side_video(frames, panels: Mapping[str, np.ndarray], path: str | Path, fps: int = 10) -> Path:
    """An mp4 with one outlined overlay per labelled panel (ground truth, each model), side by side.

    Each panel carries its label in a black band above it, so the video says what it shows.
    """
    from PIL import Image, ImageDraw

    if not panels:
        raise ValueError("panels is empty: nothing to show")
    frames = _to_numpy(frames, "frames")
    scale = -(-MIN_PANEL_WIDTH // frames.shape[2])  # small frames grow by a whole factor, so labels fit
    grow = (lambda a: a.repeat(scale, axis=1).repeat(scale, axis=2)) if scale > 1 else (lambda a: a)  # noqa: E731
    overlays = [overlay_masks(grow(frames), grow(_to_numpy(masks, "masks"))) for masks in panels.values()]
    band = 18
    t, h, w = overlays[0].shape[:3]
    strip = np.zeros((t, h + band, w * len(overlays), 3), dtype=np.uint8)
    for i, (label, overlay) in enumerate(zip(panels, overlays)):
        strip[:, band:, i * w:(i + 1) * w] = overlay
        text = Image.new("RGB", (w, band))
        ImageDraw.Draw(text).text((4, 3), label, fill=(255, 255, 255))
        strip[:, :band, i * w:(i + 1) * w] = np.asarray(text)
    return _write_even(strip, path, fps)


def pca_rgb(features) -> np.ndarray:
    """Map (h, w, D) features to uint8 (h, w, 3): their first three principal components as RGB.

    Each component is stretched so its 1st..99th percentile spans 0..255 (robust to a few
    extreme patches), and its sign is fixed so the largest-magnitude loading is positive, which
    keeps colours stable when the same features are plotted twice.
    """
    x = torch.as_tensor(_to_numpy(features, "features")).to(torch.float64)
    if x.ndim != 3:
        raise ValueError(f"features must be (h, w, D), got {tuple(x.shape)}")
    h, w, d = x.shape
    flat = x.reshape(-1, d)
    flat = flat - flat.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(flat, full_matrices=False)
    comps = vh[:3]
    signs = torch.sign(comps.gather(1, comps.abs().argmax(dim=1, keepdim=True)))
    comps = comps * torch.where(signs == 0, torch.ones_like(signs), signs)
    proj = flat @ comps.T  # (h*w, k), k <= 3
    if proj.shape[1] < 3:
        proj = torch.cat([proj, proj.new_zeros(proj.shape[0], 3 - proj.shape[1])], dim=1)
    lo = torch.quantile(proj, 0.01, dim=0)
    hi = torch.quantile(proj, 0.99, dim=0)
    scaled = (proj - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    return (scaled.clamp(0, 1) * 255).round().to(torch.uint8).reshape(h, w, 3).numpy()


def feature_pca_figure(
    frame,
    features_before,
    features_after,
    path: str | Path,
    titles: Sequence[str] = ("frame", "backbone features (PCA)", "Co-Settle features (PCA)"),
    title: str | None = None,
) -> Path:
    """Save the frame, the PCA-RGB of the backbone features and that of the projected features.

    The PCA is fitted separately on each feature map: the projection mixes channels, so the two
    sets live in different bases and one shared basis would show the projection, not the
    structure. Feature maps are drawn over the frame's extent with nearest-neighbour cells.
    ``title`` (model and data, say) goes above the three panels.
    """
    image = _to_numpy(frame, "frame")
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"frame must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if len(titles) != 3:
        raise ValueError(f"titles must name the three panels, got {len(titles)}")
    panels = [image, pca_rgb(features_before), pca_rgb(features_after)]
    h, w = image.shape[:2]
    panel_w = 4.0
    fig, axes = plt.subplots(1, 3, figsize=(3 * panel_w, panel_w * h / w + (0.75 if title else 0.45)))
    for ax, panel, name in zip(axes, panels, titles):
        ax.imshow(panel, interpolation="nearest", extent=(0, w, h, 0))
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(pad=0.4)
    return _save(fig, path)


def tradeoff_picture(results: Mapping[str, Mapping[str, float]], path: str | Path, data: str | None = None) -> Path:
    """The plane of `analyze_tradeoff`'s results, an arrow from "base" to "adapted" where both were measured."""
    points = {name: (r["d_intra"], r["d_inter"]) for name, r in results.items()}
    return tradeoff_scatter(points, [("base", "adapted")] if {"base", "adapted"} <= set(points) else [], path, data=data)


def tradeoff_scatter(
    points: Mapping[str, tuple[float, float]],
    arrows: Sequence[tuple[str, str]],
    path: str | Path,
    gamma: float = TRADEOFF.gamma,
    num_iso_lines: int = 6,
    data: str | None = None,
) -> Path:
    """Save the consistency-separability plane: D_intra on x, D_inter on y (as Figure 1 of the paper).

    Dashed iso-lines (labelled at the right edge) join points of equal margin
    D = D_inter - gamma * D_intra (slope gamma); the green shading deepens towards higher D
    (up and to the left). Each (from, to) in `arrows` joins a base
    backbone to its adapted version. `data` names the videos measured in the title.
    """
    if not points:
        raise ValueError("points is empty")
    for start, end in arrows:
        for name in (start, end):
            if name not in points:
                raise ValueError(f"arrow ({start!r} -> {end!r}) names {name!r}, which is not in points {sorted(points)}")
    xs = np.array([p[0] for p in points.values()], dtype=float)
    ys = np.array([p[1] for p in points.values()], dtype=float)
    span_x = max(xs.max() - xs.min(), 0.05 * max(abs(xs).max(), 1e-3))
    span_y = max(ys.max() - ys.min(), 0.05 * max(abs(ys).max(), 1e-3))
    x_lim = (xs.min() - 0.25 * span_x, xs.max() + 0.25 * span_x)
    y_lim = (ys.min() - 0.25 * span_y, ys.max() + 0.25 * span_y)

    fig, ax = plt.subplots(figsize=(7.0, 5.0))
    grid_x, grid_y = np.meshgrid(np.linspace(*x_lim, 200), np.linspace(*y_lim, 200))
    margin = grid_y - gamma * grid_x
    levels = MaxNLocator(nbins=num_iso_lines).tick_values(margin.min(), margin.max())
    ax.contourf(grid_x, grid_y, margin, levels=levels, cmap="Greens", alpha=0.35, zorder=0)
    ax.contour(grid_x, grid_y, margin, levels=levels, colors="0.55", linestyles="--", linewidths=0.8, zorder=1)
    for level in levels:
        exit_y = level + gamma * x_lim[1]  # where the iso-line leaves the right edge
        if y_lim[0] < exit_y < y_lim[1]:
            ax.text(x_lim[1], exit_y, f" D={level:g}", fontsize=7, color="0.35", ha="left", va="center", clip_on=False)
    for start, end in arrows:
        ax.annotate(
            "", xy=points[end], xytext=points[start],
            arrowprops=dict(arrowstyle="-|>", color="tab:red", lw=1.6, shrinkA=6, shrinkB=6), zorder=2,
        )
    adapted = {end for _, end in arrows}
    for name, (x, y) in points.items():
        colour = "tab:red" if name in adapted else "tab:blue"
        ax.scatter([x], [y], s=60, color=colour, edgecolor="black", linewidth=0.6, zorder=3)
        right_side = x > x_lim[0] + 0.6 * (x_lim[1] - x_lim[0])  # label inwards so it stays in the axes
        ax.annotate(f"{name}\nD={y - gamma * x:.3f}", (x, y), textcoords="offset points", fontsize=8,
                    xytext=(-7 if right_side else 7, 5), ha="right" if right_side else "left")
    if arrows:
        handles = [
            plt.Line2D([], [], ls="", marker="o", color=c, markeredgecolor="black", label=label)
            for c, label in (("tab:blue", "frozen backbone"), ("tab:red", "adapted"))
        ]
        ax.legend(handles=handles, loc="lower left", fontsize=8, framealpha=0.9)
    ax.set_xlim(*x_lim)
    ax.set_ylim(*y_lim)
    ax.set_xlabel(r"intra-video distance $D_{intra}$ (lower: more consistent)")
    ax.set_ylabel(r"inter-video distance $D_{inter}$ (higher: more separable)")
    on = f" on {data}" if data else ""
    ax.set_title(rf"Consistency-separability trade-off{on} ($D = D_{{inter}} - {gamma:g}\,D_{{intra}}$)", fontsize=10)
    ax.grid(alpha=0.2)
    fig.tight_layout()
    return _save(fig, path)


def confusion_figure(counts: np.ndarray, classes: Sequence[str], path: str | Path, title: str) -> Path:
    """Save the (query class, top-1 class) counts as a row-normalised heat map, titled by model and data.

    Rows are normalised so a class with few queries is as readable as one with many; the diagonal is
    R@1 per class. Class names label the axes up to 40 classes (UCF101's 101 would be unreadable).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != len(classes):
        raise ValueError(f"counts must be (C, C) for the {len(classes)} classes, got {counts.shape}")
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = min(14.0, 4.0 + 0.12 * len(classes))
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(shares, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    named = len(classes) <= 40
    if named:
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
    key = "" if named else " (index in the sorted class names of per_class.csv)"
    ax.set_xlabel(f"class of the top-1 gallery video{key}")
    ax.set_ylabel(f"class of the query (test video){key}")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the class's queries")
    fig.tight_layout()
    return _save(fig, path)


def tracks_figure(frames, panels: Mapping[str, tuple[np.ndarray, np.ndarray]], frame_indices: Sequence[int],
                  path: str | Path, title: str) -> Path:
    """Point tracks on a few frames: a row per panel (ground truth, each model), a column per frame.

    ``panels`` maps a row label to (tracks (M, T, 2) normalised x, y; occluded (M, T)) of the same M
    points, drawn in :data:`SAFE_COLOURS` in turn: each point's trail up to the frame, and a marker
    where it is, filled when visible and hollow when occluded (black edges keep markers readable on any
    background).
    """
    f = _to_numpy(frames, "frames")
    if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {f.dtype} {f.shape}")
    if not panels or not frame_indices:
        raise ValueError("tracks_figure needs at least one panel and one frame")
    h, w = f.shape[1:3]
    colours = np.array(SAFE_COLOURS, dtype=float) / 255
    size = 2.6
    fig, axes = plt.subplots(len(panels), len(frame_indices), squeeze=False,
                             figsize=(size * len(frame_indices), size * h / w * len(panels) + 0.5))
    for row, (label, (tracks, occluded)) in enumerate(panels.items()):
        xy = np.asarray(tracks, dtype=float) * np.array([w, h])
        for col, t in enumerate(frame_indices):
            ax = axes[row, col]
            ax.imshow(f[t], extent=(0, w, h, 0))
            for m in range(xy.shape[0]):
                colour = colours[m % len(colours)]
                ax.plot(xy[m, frame_indices[0]:t + 1, 0], xy[m, frame_indices[0]:t + 1, 1], color=colour, lw=1.2)
                ax.scatter([xy[m, t, 0]], [xy[m, t, 1]], s=28, edgecolors="black", linewidths=0.8,
                           facecolors="none" if occluded[m, t] else [colour], zorder=3)
            ax.set_xlim(0, w)
            ax.set_ylim(h, 0)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(textwrap.fill(label, 22), fontsize=8)  # a long model name wraps at its hyphens
            if row == 0:
                ax.set_title(f"frame {t}", fontsize=9)
    fig.suptitle(f"{title} (hollow: occluded)", fontsize=10)
    fig.tight_layout(pad=0.4)
    return _save(fig, path)
