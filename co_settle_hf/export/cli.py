"""`co-settle export FORMAT ...`: one subcommand per deployment format (ONNX for now)."""

from __future__ import annotations

import argparse

from ..modeling_co_settle import CoSettleModel
from ..shared_flags import add_shared
from .onnx import CHECK_SIZES, check_onnx, export_onnx


def _size(text: str) -> tuple[int, int]:
    height, _, width = text.partition("x")
    try:
        return int(height), int(width)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a size is HEIGHTxWIDTH in pixels, e.g. 480x880; got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="co-settle export", description="Export an adapter for deployment.")
    formats = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    onnx = formats.add_parser("onnx", help="backbone + projection as one ONNX graph", description=(
        "Export an adapter and its backbone as one ONNX graph: pixel_values (B, 3, H, W) -> features (B, h, w, D)."))
    onnx.add_argument("adapter", help="adapter folder or Hub repository id (CoSettleModel.from_pretrained)")
    add_shared(onnx, "output_dir", required=True, metavar="FILE.onnx", help="the .onnx file to write")
    onnx.add_argument("--revision", default=None, help="branch, tag or commit of the adapter repository")
    add_shared(onnx, "overwrite", help="replace an existing --output")
    onnx.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    onnx.add_argument("--check-sizes", type=_size, nargs="*", default=list(CHECK_SIZES), metavar="HxW",
                      help="compare onnxruntime with PyTorch at these sizes (none: skip); default 224x224 480x880")
    return parser


def execute(args: argparse.Namespace) -> None:
    """`co-settle export onnx` on its parsed command line: export, then compare onnxruntime with PyTorch."""
    model = CoSettleModel.from_pretrained(args.adapter, revision=args.revision)
    path = export_onnx(model, args.output_dir, overwrite=args.overwrite, opset=args.opset)
    patch, dim = model.patch_size, model.config.hidden_size
    print(f"Wrote {path} ({path.stat().st_size / 2**20:.1f} MiB): pixel_values (B, 3, H, W) -> features (B, H/{patch}, W/{patch}, {dim})")
    for (height, width), difference in check_onnx(model, path, args.check_sizes).items():
        print(f"  {height}x{width}: max |onnxruntime - PyTorch| = {difference:.2e}")
