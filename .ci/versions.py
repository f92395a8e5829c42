"""The dependency versions of a CI job.

`python .ci/versions.py lowest` prints pip constraints pinning every bounded requirement of
pyproject.toml to its lower bound (what `make test-min` installs); `python .ci/versions.py installed`
prints the installed version of each requirement (what a job ran with, for its log).
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

REQUIREMENT = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)(?P<spec>[^;]*)")


def requirements() -> list[tuple[str, str]]:
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    return [(m["name"], m["spec"].strip()) for m in map(REQUIREMENT.match, project["dependencies"])]


def lowest() -> list[str]:
    """`name==low` for each requirement declared as a tested range `>=low,<high`."""
    pins = []
    for name, spec in requirements():
        bounds = dict(re.findall(r"(>=|<)\s*([0-9][^,\s]*)", spec))
        if ">=" in bounds and "<" in bounds:
            pins.append(f"{name}=={bounds['>=']}")
    return pins


def installed() -> list[str]:
    return [f"{name}=={metadata.version(name)}" for name, _ in requirements()]


if __name__ == "__main__":
    modes = {"lowest": lowest, "installed": installed}
    if len(sys.argv) != 2 or sys.argv[1] not in modes:
        raise SystemExit(f"usage: {sys.argv[0]} {'|'.join(modes)}")
    print("\n".join(modes[sys.argv[1]]()))
