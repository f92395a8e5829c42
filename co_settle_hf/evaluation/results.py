"""Result files every benchmark writes: CSV tables and a JSON summary that stays valid JSON."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]], decimals: int = 4) -> None:
    """A CSV table; floats with `decimals` decimals (the official DAVIS toolkit uses 3)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow([f"{v:.{decimals}f}" if isinstance(v, float) else v for v in row])


def nan_to_none(value: Any) -> Any:
    """NaN (e.g. the decay of a 3-frame sequence) as JSON null, so the file stays valid JSON."""
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    path.write_text(json.dumps(nan_to_none(summary), indent=2))
