"""Pictures for reports: mask overlays (PNG contact sheets and mp4), feature PCA, trade-off plot.

Everything renders off-screen (matplotlib's Agg backend, no display needed); videos are written
with PyAV. Inputs are torch tensors or numpy arrays; nothing here changes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .davis import davis_palette  # noqa: E402

#: Opacity of the label colours over the frame.
MASK_ALPHA = 0.5


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
    """Blend label colours into frames: uint8 (T, H, W, 3).

    Label 0 (background) leaves the frame as is; other labels tint it with `alpha` and their
    one-pixel outlines are drawn in full colour so thin or touching regions stay readable.
    """
    f, m = _check_frames_masks(frames, masks)
    pal = davis_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
    if pal.ndim != 2 or pal.shape[1] != 3 or pal.shape[0] <= m.max():
        raise ValueError(f"palette must be (K, 3) with K > the largest label {m.max()}, got {pal.shape}")
    colours = pal[m].astype(np.float32)
    out = f.astype(np.float32)
    labelled = (m > 0)[..., None]
    out = np.where(labelled, (1 - alpha) * out + alpha * colours, out)
    edge = np.zeros(m.shape, dtype=bool)
    edge[:, 1:] |= m[:, 1:] != m[:, :-1]
    edge[:, :, 1:] |= m[:, :, 1:] != m[:, :, :-1]
    edge &= m > 0
    out[edge] = colours[edge]
    return out.round().clip(0, 255).astype(np.uint8)


def _pick(total: int, count: int) -> list[int]:
    """`count` evenly spaced indices in [0, total), first and last included."""
    if count >= total:
        return list(range(total))
    return np.linspace(0, total - 1, count).round().astype(int).tolist()


def contact_sheet(
    frames,
    masks,
    path: str | Path,
    palette: np.ndarray | None = None,
    max_frames: int = 8,
    columns: int = 4,
) -> Path:
    """Save a grid PNG of up to `max_frames` evenly spaced frames with their masks overlaid.

    Args:
        frames: uint8 (T, H, W, 3); masks: integer labels (T, H, W), 0 = background.
        palette: (K, 3) uint8 label colours; default: the DAVIS colours.
    Returns:
        the path written.
    """
    if max_frames < 1 or columns < 1:
        raise ValueError(f"max_frames and columns must be >= 1, got {max_frames}, {columns}")
    blended = overlay_masks(frames, masks, palette)
    picks = _pick(blended.shape[0], max_frames)
    cols = min(columns, len(picks))
    rows = -(-len(picks) // cols)
    h, w = blended.shape[1:3]
    panel_w = 3.2
    fig, axes = plt.subplots(rows, cols, figsize=(panel_w * cols, panel_w * h / w * rows + 0.35 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, t in zip(axes.flat, picks):
        ax.imshow(blended[t], interpolation="nearest")
        ax.set_title(f"frame {t}", fontsize=9)
    fig.tight_layout(pad=0.4)
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_overlay_video(frames, masks, path: str | Path, fps: int = 10, palette: np.ndarray | None = None) -> Path:
    """Write the mask overlay of every frame as an mp4 (H.264, or MPEG-4 part 2 without libx264).

    Odd frame sizes are padded by one replicated row/column: yuv420p needs even sizes.
    """
    from ..data.video import write_video

    blended = overlay_masks(frames, masks, palette)
    pad_h, pad_w = blended.shape[1] % 2, blended.shape[2] % 2
    if pad_h or pad_w:
        blended = np.pad(blended, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return write_video(path, blended, fps=fps)


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
) -> Path:
    """Save the frame, the PCA-RGB of the backbone features and that of the projected features.

    The PCA is fitted separately on each feature map: the projection mixes channels, so the two
    sets live in different bases and one shared basis would show the projection, not the
    structure. Feature maps are drawn over the frame's extent with nearest-neighbour cells.
    """
    image = _to_numpy(frame, "frame")
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"frame must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if len(titles) != 3:
        raise ValueError(f"titles must name the three panels, got {len(titles)}")
    panels = [image, pca_rgb(features_before), pca_rgb(features_after)]
    h, w = image.shape[:2]
    panel_w = 4.0
    fig, axes = plt.subplots(1, 3, figsize=(3 * panel_w, panel_w * h / w + 0.45))
    for ax, panel, title in zip(axes, panels, titles):
        ax.imshow(panel, interpolation="nearest", extent=(0, w, h, 0))
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout(pad=0.4)
    return _save(fig, path)


def tradeoff_scatter(
    points: Mapping[str, tuple[float, float]],
    arrows: Sequence[tuple[str, str]],
    path: str | Path,
    gamma: float = 0.3,
    num_iso_lines: int = 6,
) -> Path:
    """Save the consistency-separability plane: D_intra on x, D_inter on y (as Figure 1 of the paper).

    Dashed iso-lines (labelled at the right edge) join points of equal margin
    D = D_inter - gamma * D_intra (slope gamma); the green shading deepens towards higher D
    (up and to the left). Each (from, to) in `arrows` joins a base
    backbone to its adapted version.
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
    ax.set_title(rf"Consistency-separability trade-off ($D = D_{{inter}} - {gamma:g}\,D_{{intra}}$)", fontsize=10)
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
