"""Several models on the same data in one run: one table of per-item scores and their deltas.

Each model is evaluated exactly as a single-model run would be, into its own sub-folder of the
output (``model1-<name>/``, ``model2-<name>/``, ...), so its files are those of that run. The
comparison then reads every model's per-item file (DAVIS sequences' objects, JHMDB, VIP and TAP-Vid videos,
retrieval classes) and writes ``comparison.md`` and ``comparison.csv``: one row per item, each
model's score and its delta to the first model, the headline mean first.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .jhmdb import PCK_THRESHOLDS
from .outputs import OutputFolder

#: task -> (per-item file, its item column, the compared metric, the summary's headline key).
COMPARED = {
    "davis": ("per-sequence_results-val.csv", "Sequence", "J&F", "J&F-Mean"),
    "jhmdb": ("per-video_results.csv", "video", "PCK@{threshold:g}", "PCK@{threshold:g}"),
    "vip": ("per-video_results.csv", "video", "mIoU", "mIoU"),
    "tapvid": ("per-video_results.csv", "video", "average_jaccard", "average_jaccard"),
    "retrieval": ("per_class.csv", "class", "R@1", "R@1"),
}


def model_folder(index: int, name: str) -> str:
    """``model<i>-<last part of the name>``: a plain, distinct folder name for any path or Hub id."""
    tail = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name.rstrip("/")).name) or "model"
    return f"model{index + 1}-{tail}"


def metric_names(task: str, threshold: float = PCK_THRESHOLDS[0]) -> tuple[str, str]:
    """(per-item metric, headline key) of a task; JHMDB compares its first PCK threshold."""
    _, _, metric, headline = COMPARED[task]
    return metric.format(threshold=threshold), headline.format(threshold=threshold)


def per_item_scores(task: str, folder: Path, threshold: float = PCK_THRESHOLDS[0]) -> dict[str, float]:
    """item -> score from one model's per-item file (DAVIS: (J + F) / 2 of each object)."""
    file, item, _, _ = COMPARED[task]
    metric = metric_names(task, threshold)[0]
    with (folder / file).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if task == "davis":
        return {r[item]: (float(r["J-Mean"]) + float(r["F-Mean"])) / 2 for r in rows}
    return {r[item]: float(r[metric]) for r in rows}


def comparison_rows(task: str, models: Sequence[str], folders: Sequence[Path], headlines: dict[str, dict[str, Any]],
                    threshold: float = PCK_THRESHOLDS[0]) -> tuple[list[str], list[list[Any]]]:
    """(header, rows): the headline mean, then every item in the first model's order."""
    metric, headline = metric_names(task, threshold)
    scores = [per_item_scores(task, folder, threshold) for folder in folders]
    header = ["item", *(f"{metric} {m}" for m in models), *(f"delta {m}" for m in models[1:])]

    def row(item: str, values: list[float]) -> list[Any]:
        return [item, *values, *(v - values[0] for v in values[1:])]

    rows = [row(f"mean ({headline})", [float(headlines[m][headline]) for m in models])]
    rows += [row(item, [s.get(item, float("nan")) for s in scores]) for item in scores[0]]
    return header, rows


def write_comparison(task: str, models: Sequence[str], folders: Sequence[Path], headlines: dict[str, dict[str, Any]],
                     out: OutputFolder, threshold: float = PCK_THRESHOLDS[0]) -> str:
    """``comparison.csv`` and ``comparison.md``; returns the Markdown table."""
    header, rows = comparison_rows(task, models, folders, headlines, threshold)
    with out.path("comparison.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([[f"{v:.4f}" if isinstance(v, float) else v for v in r] for r in rows])
    lines = [f"### {task}: {' vs '.join(models)} (deltas against {models[0]})", "",
             "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(f"{v:+.4f}" if isinstance(v, float) and h.startswith("delta") else
                                f"{v:.4f}" if isinstance(v, float) else str(v) for h, v in zip(header, r)) + " |"
              for r in rows]
    text = "\n".join(lines)
    out.path("comparison.md").write_text(text + "\n")
    print(text, flush=True)
    return text


def metrics_of(summary: dict[str, Any]) -> dict[str, Any]:
    """The numbers of a summary that belong in the results table (not timing, which varies run to run)."""
    return {k: v for k, v in summary.items() if isinstance(v, (int, float)) and k != "frames_per_second"}


def compare_models(task: str, runs: Mapping[str, Callable[[OutputFolder], dict[str, Any]]], out: OutputFolder, *,
                   threshold: float = PCK_THRESHOLDS[0], is_main: bool = True) -> tuple[dict[str, dict[str, Any]], dict[str, Path]]:
    """Each run (name -> a function evaluating one model into the folder it is given, returning its metrics) in its
    own ``model<i>-<name>/``, then ``comparison.md`` / ``.csv``; returns (name -> metrics, name -> folder)."""
    rows, folders = {}, {}
    for index, (name, run) in enumerate(runs.items()):
        folder = out.subfolder(model_folder(index, name))
        rows[name], folders[name] = run(folder), folder.root
    if is_main:
        write_comparison(task, list(runs), list(folders.values()), rows, out, threshold)
    return rows, folders


def short_labels(models: Sequence[str]) -> dict[str, str]:
    """Model -> the last part of its name, for picture titles (the folder names when two would clash)."""
    tails = [Path(m.rstrip("/")).name or m for m in models]
    if len(set(tails)) < len(tails):
        tails = [model_folder(i, m) for i, m in enumerate(models)]
    return dict(zip(models, tails))
