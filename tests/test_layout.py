"""The package's layering, read from the source: lower layers never import upward, only the CLI exits,
and every subpackage says what it exports."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "co_settle_hf"
#: (importing subpackages, imported subpackage): imports that would point upward, closing a cycle.
FORBIDDEN = [(("data", "objective", "training"), "demo"), (("hub",), "official")]
SUBPACKAGES = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Absolute names of every module `path` imports, function-local imports included."""
    package = _module_name(path).split(".") if path.name == "__init__.py" else _module_name(path).split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            found.add(".".join([*base, node.module] if node.module else base))
    return found


@pytest.mark.parametrize("importers, imported", FORBIDDEN)
def test_no_upward_imports(importers: tuple[str, ...], imported: str) -> None:
    offenders = {str(path.relative_to(PACKAGE)): sorted(name for name in imports(path) if name.startswith(f"co_settle_hf.{imported}"))
                 for sub in importers for path in (PACKAGE / sub).rglob("*.py")}
    assert not {k: v for k, v in offenders.items() if v}


def test_only_the_command_line_exits() -> None:
    """Library code raises exceptions (co_settle_hf.errors); only `co_settle_hf.cli` turns them into exit codes."""
    exits = [f"{path.relative_to(PACKAGE)}:{node.lineno}" for path in PACKAGE.rglob("*.py") if path.name != "cli.py" or path.parent != PACKAGE
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Raise) and node.exc is not None and "SystemExit" in ast.unparse(node.exc)]
    assert exits == []


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_subpackages_declare_their_exports(name: str) -> None:
    module = importlib.import_module(f"co_settle_hf.{name}")
    assert module.__all__, f"co_settle_hf.{name} exports nothing"
    missing = [export for export in module.__all__ if not hasattr(module, export)]
    assert missing == []


def test_the_demo_calls_the_python_api_not_the_commands() -> None:
    """The demo and its ablation train with `train()` and score with the `evaluate_*` functions: no command's parser,
    no `evaluate(task, ...)` (which takes the eval command's flags by name)."""
    commands = {"co_settle_hf.cli", "co_settle_hf.evaluation.cli", "co_settle_hf.training.trainer", "co_settle_hf.evaluate",
                "co_settle_hf.train"}
    used = {}
    for path in (PACKAGE / "demo").glob("*.py"):
        names = {alias.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ImportFrom)
                 and node.module in ("evaluation", "co_settle_hf.evaluation") for alias in node.names}
        used[path.name] = sorted((imports(path) & commands) | ({"evaluate"} & names))
    assert {name: found for name, found in used.items() if found} == {}
    assert "evaluate_davis" in (PACKAGE / "demo" / "scoring.py").read_text()
