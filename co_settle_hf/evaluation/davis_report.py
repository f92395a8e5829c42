"""The pictures of a DAVIS run, for one model or several: what a person looks at after the numbers.

``propagation_sheet.png`` shows every scored sequence (or those chosen), a row each: for a few
frames the ground truth, then each model's prediction, every tile titled with the sequence's J&F
(mean over its objects of (J + F) / 2). With several models the rows are ordered by the change of
the last model against the first, biggest changes (gains and losses alike) first; with one model,
worst sequence first. ``<sequence>_propagation.mp4`` (``--video``) shows the first row's sequence
with ground truth and models side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .compare import per_item_scores
from .davis import DavisSequence, list_davis_sequences
from .images import read_annotation, read_frames
from .outputs import OutputFolder

#: Frames shown per sequence in the sheet: evenly spaced after the given first one.
SHEET_FRAMES = 2


def sequence_scores(folder: Path) -> dict[str, float]:
    """Sequence -> J&F (mean over its objects) from a run's per-sequence CSV (objects ``<seq>_<id>``)."""
    objects: dict[str, list[float]] = {}
    for name, value in per_item_scores("davis", folder).items():
        objects.setdefault(name.rsplit("_", 1)[0], []).append(value)
    return {name: float(np.mean(values)) for name, values in objects.items()}


def order_sequences(scores: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Sequences scored by every model, biggest change (last model - first) first; one model: worst first."""
    models = list(scores)
    names = [n for n in scores[models[0]] if all(n in scores[m] for m in models)]
    if len(models) == 1:
        return sorted(names, key=lambda n: scores[models[0]][n])
    return sorted(names, key=lambda n: -abs(scores[models[-1]][n] - scores[models[0]][n]))


def _labels(paths: Sequence[Path], size: tuple[int, int]) -> np.ndarray:
    ids = np.stack([read_annotation(p, size)[0] for p in paths])
    return np.where(ids == 255, 0, ids)  # void shown as background


def _row(seq: DavisSequence, folders: Mapping[str, Path], scores: Mapping[str, Mapping[str, float]],
         count: int):
    from .plots import SheetRow

    total = len(seq.frames)
    picks = sorted({int(round(i)) for i in np.linspace(1, total - 1, count)})
    frames = read_frames([seq.frames[t] for t in picks]).numpy()
    size = frames.shape[1:3]
    predictions = {m: _labels([folder / seq.name / f"{seq.frames[t].stem}.png" for t in picks], size)
                   for m, folder in folders.items()}
    return SheetRow(seq.name, picks, frames, _labels([seq.annotations[t] for t in picks], size), predictions,
                    {m: scores[m][seq.name] for m in folders})


def write_davis_pictures(root: str | Path, folders: Mapping[str, Path], out: OutputFolder, *,
                         sequences: Sequence[str] | None = None, sheet: Sequence[str] | None = None,
                         video: bool = False) -> list[Path]:
    """The sheet (and mp4) of the models whose run folders are ``folders`` (label -> folder); their paths."""
    from .plots import comparison_sheet, write_side_by_side_video

    scores = {m: sequence_scores(folder) for m, folder in folders.items()}
    order = order_sequences(scores)
    if sheet:
        missing = sorted(set(sheet) - set(order))
        if missing:
            raise ValueError(f"--sheet-sequences {missing}: not scored in this run (scored: {sorted(order)})")
        order = [n for n in order if n in set(sheet)]
    if not order:
        return []
    by_name = {s.name: s for s in list_davis_sequences(root, sequences=sequences)}
    rows = [_row(by_name[name], folders, scores, SHEET_FRAMES) for name in order]
    models = ", ".join(folders)
    how = ("rows by the change of the last model against the first, biggest first" if len(folders) > 1
           else "rows worst first")
    paths = [comparison_sheet(rows, out.path("propagation_sheet.png"),
                              f"DAVIS-2017 val: ground truth, then {models}; J&F per sequence; {how}")]
    if video:
        seq = by_name[order[0]]
        frames = read_frames(seq.frames).numpy()
        size = frames.shape[1:3]
        panels = {f"DAVIS-2017 {seq.name}: ground truth": _labels(seq.annotations, size)}
        for m, folder in folders.items():
            panels[f"{m}  J&F {scores[m][seq.name]:.3f}"] = _labels(
                [folder / seq.name / f"{p.stem}.png" for p in seq.frames], size)
        paths.append(write_side_by_side_video(frames, panels, out.path(f"{seq.name}_propagation.mp4")))
    return paths
