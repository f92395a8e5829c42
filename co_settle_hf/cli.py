"""`co-settle`: one command tree for training, evaluation, the demo, benchmarks, import and export.

Each subcommand's parser is its module's own `build_parser()`, mounted here as a parent, so
`co-settle train` and `accelerate launch -m co_settle_hf.train` take the same flags with the same
help, and the flags every command shares are spelled once (`shared_flags`). The library raises
exceptions; `main` is the one place where a refusal becomes a message and an exit status.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from . import benchmark
from .demo import ablation
from .demo import run as demo
from .errors import CoSettleError
from .evaluation import cli as evaluation
from .evaluation import tapvid_data
from .export import cli as export
from .official import importing
from .training import arguments as training_arguments
from .training import trainer


@dataclass(frozen=True)
class Command:
    """A subcommand: its one-line summary, its module's parser and what runs on the parsed arguments."""

    summary: str
    build_parser: Callable[[], argparse.ArgumentParser]
    execute: Callable[[argparse.Namespace], Any]


COMMANDS = {
    "train": Command("adapt a backbone on unlabeled video (Accelerate)", training_arguments.build_parser, trainer.execute),
    "eval": Command("DAVIS / JHMDB / VIP propagation, TAP-Vid point tracking, UCF101 / HMDB51 retrieval and the trade-off "
                    "analysis", evaluation.build_parser, evaluation.run_evaluation),
    "demo": Command("the whole method offline on real weights and real footage", demo.build_parser, demo.execute),
    "ablate": Command("what each choice of a short run is worth, over seeds, on the demo's benchmark",
                      ablation.build_parser, ablation.execute),
    "bench": Command("cost of everything beside the backbone, as ratios", benchmark.build_parser, benchmark.execute),
    "export": Command("an adapter and its backbone as one ONNX graph with dynamic batch and size", export.build_parser,
                      export.execute),
    "import-official": Command("one of the paper's eight published models (or an authors' checkpoint) as an adapter",
                               importing.build_parser, importing.execute),
    "convert-tapvid": Command("the published TAP-Vid pickle as one .npz per video (read by an array-only unpickler)",
                              tapvid_data.build_parser, tapvid_data.execute),
}
#: Commands that went: their arguments are forwarded to the command that replaced them, with a notice.
DEPRECATED = {"convert-official": ("import-official", "--checkpoint")}

#: What a command refuses with: the project's errors and the built-in ones they refine (bad settings, files).
REFUSALS = (CoSettleError, ValueError, OSError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="co-settle", description="Co-Settle: frozen image ViTs made into video models.",
                                     epilog="Deprecated: " + ", ".join(f"{old} (now {' '.join(new)})" for old, new in DEPRECATED.items()))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        own = command.build_parser()
        commands.add_parser(name, parents=[own], add_help=False, help=command.summary, description=own.description,
                            formatter_class=own.formatter_class)
    return parser


def forward_deprecated(argv: list[str]) -> list[str]:
    """`co-settle convert-official FILE.pth ...` as `co-settle import-official --checkpoint FILE.pth ...`."""
    if not argv or argv[0] not in DEPRECATED:
        return argv
    command, flag = DEPRECATED[argv[0]]
    rest = argv[1:]
    print(f"co-settle {argv[0]} is deprecated and will go: use `co-settle {command} {flag} ...`", file=sys.stderr)
    return [command, *([flag] if rest and not rest[0].startswith("-") else []), *rest]


def execute(argv: list[str]) -> Any:
    """Parse and run one command line; a refusal exits with `co-settle <command> [<task>]: <message>` (status 1)."""
    args = build_parser().parse_args(forward_deprecated(argv))
    try:
        return COMMANDS[args.command].execute(args)
    except REFUSALS as error:
        task = next((f" {getattr(args, name)}" for name in ("task", "format") if getattr(args, name, None)), "")
        raise SystemExit(f"co-settle {args.command}{task}: {error}") from None


def run(command: str, argv: Sequence[str]) -> Any:
    """`co-settle <command> <argv>` from Python, returning what the command made (a folder, a results table, ...).
    The module entry points and the tests use it."""
    return execute([command, *argv])


def main(argv: Sequence[str] | None = None) -> None:
    """The `co-settle` console script. It returns nothing: a returned value would become the exit status."""
    execute(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
