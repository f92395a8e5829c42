"""The flags every command spells the same way, declared once.

`co-settle train`, `eval`, `export`, `import-official`, `demo` and `ablate` all accept each
spelling below (the first is the one the help shows); each command gives its own default and help.
The trainer's `HfArgumentParser` takes the same spellings as aliases of its fields.
"""

from __future__ import annotations

import argparse
import inspect
from typing import Any, Callable

SPELLINGS: dict[str, tuple[str, ...]] = {
    "output_dir": ("--output-dir", "--output_dir", "--output"),
    "overwrite": ("--overwrite", "--overwrite-output-dir", "--overwrite_output_dir"),
    "backbone_precision": ("--backbone-precision", "--backbone_precision"),
    "seed": ("--seed",),
}


def add_shared(parser: argparse.ArgumentParser | Any, name: str, **options: Any) -> None:
    """Add the shared flag `name` with all its spellings; `options` are argparse's (help, default, ...)."""
    if name == "overwrite":
        options.setdefault("action", "store_true")
    parser.add_argument(*SPELLINGS[name], dest=name, **options)


def aliases(name: str, field_name: str) -> list[str]:
    """The spellings of `name` that HfArgumentParser does not derive from the field `field_name` itself."""
    derived = {f"--{field_name}", f"--{field_name.replace('_', '-')}"}
    return [spelling for spelling in SPELLINGS[name] if spelling not in derived]


def default_of(function: Callable[..., Any], parameter: str) -> Any:
    """The default of one of `function`'s parameters: a flag that sets it shows the API's own default."""
    return inspect.signature(function).parameters[parameter].default
