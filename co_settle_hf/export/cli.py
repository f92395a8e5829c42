"""`co-settle export FORMAT ...`: one subcommand per deployment format."""

from __future__ import annotations

import argparse

from . import onnx

FORMATS = {"onnx": onnx.cli_main}


def cli_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="co-settle export", description="Export an adapter for deployment.")
    parser.add_argument("format", choices=sorted(FORMATS), help="what to export to")
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        raise SystemExit(0 if argv else 2)
    FORMATS[parser.parse_args(argv[:1]).format](argv[1:])
