"""`co-settle eval davis|jhmdb|vip|tradeoff --model ADAPTER_OR_BACKBONE --data-root DIR --output-dir DIR`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..hub.model_card import add_results_to_card, check_card_target, results_from_summary
from .encoders import LoadedModel, load_for_evaluation
from .outputs import OutputFolder

TASK_DEFAULTS = {"davis": 7, "jhmdb": 7, "vip": 10}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="co-settle eval", description="Evaluate an adapter or a bare backbone.")
    parser.add_argument("task", choices=("davis", "jhmdb", "vip", "tradeoff"))
    parser.add_argument("--model", required=True, help="adapter or backbone: local path or Hub id")
    parser.add_argument("--revision", default=None)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--output-dir", required=True,
                        help="where results go; refused inside --data-root, and if it already holds results")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results already in --output-dir (only once the new run has finished)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--update-card", metavar="ADAPTER", default=None,
                        help="add the results to this saved adapter's model card (model-index entries)")
    group = parser.add_argument_group("label propagation (SPEC section 5)")
    group.add_argument("--topk", type=int, default=None, help="default 7 (DAVIS, JHMDB) or 10 (VIP)")
    group.add_argument("--n-context", type=int, default=20)
    group.add_argument("--radius", type=float, default=20.0)
    group.add_argument("--temperature", type=float, default=0.7)
    group.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                       help="input size (default 480 880 for DAVIS, 320 320 for JHMDB)")
    group.add_argument("--long-side", type=int, default=880, help="VIP input long side")
    group.add_argument("--list-file", default=None, help="JHMDB / VIP list of videos (default: the official one)")
    group.add_argument("--sequences", nargs="*", default=None, help="DAVIS: only these sequences")
    group.add_argument("--video", action="store_true", help="DAVIS: also write an mp4 of the propagated masks")
    group = parser.add_argument_group("trade-off analysis")
    group.add_argument("--num-frames", type=int, default=None, help="evenly spaced frames per video (all if unset)")
    return parser


def print_table(title: str, rows: dict[str, dict[str, Any]]) -> str:
    """A Markdown table, metrics as rows and models as columns; printed and returned."""
    columns = list(rows)
    metrics = [k for k, v in rows[columns[0]].items() if isinstance(v, (int, float))]
    lines = [f"### {title}", "", "| metric | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for metric in metrics:
        cells = [rows[c].get(metric) for c in columns]
        lines.append(f"| {metric} | " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in cells) + " |")
    text = "\n".join(lines)
    print(text)
    return text


def run_davis(args: argparse.Namespace, loaded: LoadedModel, out: OutputFolder) -> dict[str, Any]:
    from .davis import evaluate_davis, list_davis_sequences, read_frames
    from .plots import contact_sheet, feature_pca_figure, write_overlay_video

    size = tuple(args.size or (480, 880))
    summary = evaluate_davis(
        loaded.encoder, args.data_root, out, n_context=args.n_context, radius=args.radius,
        topk=args.topk or TASK_DEFAULTS["davis"], temperature=args.temperature, size=size, sequences=args.sequences,
    )
    first = list_davis_sequences(args.data_root, sequences=args.sequences)[0]
    frames = read_frames(first.frames)
    masks = torch.from_numpy(np.stack([_read_ids(out.path(first.name, p.with_suffix(".png").name)) for p in first.frames]))
    contact_sheet(frames, masks, out.path(f"{first.name}_propagation.png"))
    if args.video:
        write_overlay_video(frames, masks, out.path(f"{first.name}_propagation.mp4"))
    if loaded.adapter is not None:
        feature_figure(loaded, frames[0], size, out.path(f"{first.name}_features_pca.png"), feature_pca_figure)
    return {k: v for k, v in summary.items() if isinstance(v, (int, float))}


def feature_figure(loaded: LoadedModel, frame: torch.Tensor, size: tuple[int, int], path: Path, draw) -> Path:
    """PCA pictures of one frame's patch features before and after the projection."""
    from .features import fit_to_patches

    size = fit_to_patches(size, loaded.encoder.patch_size)
    image = torch.nn.functional.interpolate(frame.permute(2, 0, 1)[None].float(), size=size, mode="bilinear", antialias=True)
    mean = torch.tensor(loaded.encoder.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(loaded.encoder.image_std).view(1, 3, 1, 1)
    with torch.no_grad():
        out = loaded.adapter((image / 255 - mean).div(std).to(loaded.adapter.device))
    return draw(frame, out.backbone_features[0].cpu(), out.features[0].cpu(), path)


def _read_ids(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.array(image)


def run_tradeoff(args: argparse.Namespace, loaded: LoadedModel, out: OutputFolder) -> dict[str, dict[str, Any]]:
    from .plots import tradeoff_scatter
    from .tradeoff import analyze_tradeoff

    encoders = {"adapted": loaded.encoder, "base": loaded.base} if loaded.base is not None else {"model": loaded.encoder}
    results = analyze_tradeoff(encoders, args.data_root, num_frames=args.num_frames, progress=True)
    points = {name: (r["d_intra"], r["d_inter"]) for name, r in results.items()}
    arrows = [("base", "adapted")] if "base" in results else []
    tradeoff_scatter(points, arrows, out.path("tradeoff.png"))
    return results


def cli_main(argv: Sequence[str]) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if not Path(args.data_root).exists():
        raise SystemExit(f"--data-root {args.data_root} does not exist")
    if args.update_card:
        check_card_target(args.update_card, args.task)
    try:
        output = OutputFolder(args.output_dir, [args.data_root], args.overwrite)  # checks; writes nothing yet
        loaded = load_for_evaluation(args.model, args.revision, args.device)  # fails before anything is written
        with output as out:
            rows = run_task(args, loaded, out)
            table = print_table(f"{args.task}: {args.model}", rows)
            out.path("table.md").write_text(table + "\n")
            out.path("results.json").write_text(json.dumps(rows, indent=2, default=float))
    except (ValueError, FileNotFoundError) as error:  # bad data or arguments: the message names them
        raise SystemExit(f"co-settle eval {args.task}: {error}") from None
    if args.update_card:
        add_results_to_card(args.update_card, results_from_summary(args.task, rows[args.model]))
    return rows


def run_task(args: argparse.Namespace, loaded: LoadedModel, out: OutputFolder) -> dict[str, dict[str, Any]]:
    """The task's rows (model -> metrics), its files written into ``out``."""
    if args.task == "tradeoff":
        return run_tradeoff(args, loaded, out)
    if args.task == "davis":
        return {args.model: run_davis(args, loaded, out)}
    from .jhmdb import evaluate_jhmdb
    from .vip import evaluate_vip

    common = dict(list_file=args.list_file, n_context=args.n_context, radius=args.radius,
                  topk=args.topk or TASK_DEFAULTS[args.task], temperature=args.temperature)
    if args.task == "jhmdb":
        summary = evaluate_jhmdb(loaded.encoder, args.data_root, out, size=tuple(args.size or (320, 320)), **common)
    else:
        summary = evaluate_vip(loaded.encoder, args.data_root, out, long_side=args.long_side, **common)
    return {args.model: {k: v for k, v in summary.items() if isinstance(v, (int, float))}}
