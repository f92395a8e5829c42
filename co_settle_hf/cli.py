"""`co-settle`: one command line for training, evaluation, the demo, benchmarks and conversion.

Each subcommand hands its remaining arguments to the module that owns it, so `co-settle train`
takes exactly the arguments of `accelerate launch -m co_settle_hf.train`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

COMMANDS = {
    "train": ("co_settle_hf.training.trainer", "adapt a backbone on unlabeled video (Accelerate)"),
    "eval": ("co_settle_hf.evaluation.cli", "DAVIS / JHMDB / VIP propagation, TAP-Vid point tracking, UCF101 / HMDB51 retrieval and the trade-off analysis"),
    "demo": ("co_settle_hf.demo.run", "the whole method offline on real weights and real footage"),
    "ablate": ("co_settle_hf.demo.ablation", "what each choice of a short run is worth, over seeds, on the demo's benchmark"),
    "bench": ("co_settle_hf.benchmark", "cost of everything beside the backbone, as ratios"),
    "convert-official": ("co_settle_hf.hub.convert_official", "import the projection of an authors' .pth onto a backbone you name"),
    "export": ("co_settle_hf.export.cli", "an adapter and its backbone as one ONNX graph with dynamic batch and size"),
    "import-official": ("co_settle_hf.official.importing", "one of the paper's eight published models as a self-contained adapter"),
}


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="co-settle", description="Co-Settle: frozen image ViTs made into video models.")
    parser.add_argument("command", choices=sorted(COMMANDS), help="; ".join(f"{k}: {v[1]}" for k, v in COMMANDS.items()))
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        raise SystemExit(0 if argv else 2)
    command = parser.parse_args(argv[:1]).command
    module = __import__(COMMANDS[command][0], fromlist=["cli_main"])
    module.cli_main(argv[1:])


if __name__ == "__main__":
    main()
