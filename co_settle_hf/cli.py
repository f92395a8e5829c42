"""`co-settle`: one command line for training, evaluation, the demo, benchmarks and conversion.

Each subcommand hands its remaining arguments to the module that owns it, so `co-settle train`
takes exactly the arguments of `accelerate launch -m co_settle_hf.train`. The library raises
exceptions; `run` is the one place where a refusal becomes a message and an exit status.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, Sequence

from .errors import CoSettleError

COMMANDS = {
    "train": ("co_settle_hf.training.trainer", "adapt a backbone on unlabeled video (Accelerate)"),
    "eval": ("co_settle_hf.evaluation.cli", "DAVIS / JHMDB / VIP propagation, TAP-Vid point tracking, UCF101 / HMDB51 retrieval and the trade-off analysis"),
    "demo": ("co_settle_hf.demo.run", "the whole method offline on real weights and real footage"),
    "ablate": ("co_settle_hf.demo.ablation", "what each choice of a short run is worth, over seeds, on the demo's benchmark"),
    "bench": ("co_settle_hf.benchmark", "cost of everything beside the backbone, as ratios"),
    "convert-official": ("co_settle_hf.official.importing:deprecated_convert_main", "deprecated: import-official --checkpoint FILE.pth --backbone ID"),
    "export": ("co_settle_hf.export.cli", "an adapter and its backbone as one ONNX graph with dynamic batch and size"),
    "import-official": ("co_settle_hf.official.importing", "one of the paper's eight published models as a self-contained adapter"),
}


#: What a command refuses with: the project's errors and the built-in ones they refine (bad settings, files).
REFUSALS = (CoSettleError, ValueError, OSError)


def run(command: str, argv: Sequence[str]) -> Any:
    """Run one subcommand on `argv`; a refusal exits with `co-settle <command> [<task>]: <message>` (status 1)."""
    module, _, function = COMMANDS[command][0].partition(":")
    try:
        return getattr(importlib.import_module(module), function or "cli_main")(list(argv))
    except REFUSALS as error:
        task = f" {argv[0]}" if argv and not argv[0].startswith("-") else ""  # e.g. `co-settle eval davis`
        raise SystemExit(f"co-settle {command}{task}: {error}") from None


def main(argv: Sequence[str] | None = None) -> Any:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="co-settle", description="Co-Settle: frozen image ViTs made into video models.")
    parser.add_argument("command", choices=sorted(COMMANDS), help="; ".join(f"{k}: {v[1]}" for k, v in COMMANDS.items()))
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        raise SystemExit(0 if argv else 2)
    return run(parser.parse_args(argv[:1]).command, argv[1:])


if __name__ == "__main__":
    main()
