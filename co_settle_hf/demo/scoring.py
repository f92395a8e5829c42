"""How the demo and its ablation score adapters: the evaluation's Python functions, called directly.

Each benchmark's `evaluate_*` function runs once per model, into the model's own sub-folder
(`model<i>-<name>/`, as `co-settle eval TASK --model A --model B` lays them out), and
`comparison.md` with the pictures then sets the models side by side. The feature cache keys on the
frozen backbone, which the base, the untrained control and the adapters share, so the backbone runs
once per video for all of them. Each model is loaded once (`load_for_evaluation`) and scored by every
benchmark it takes part in. Every folder is regenerated on each run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from ..evaluation import (
    FeatureCache,
    LoadedModel,
    analyze_tradeoff,
    evaluate_davis,
    evaluate_retrieval,
    evaluate_tapvid,
)
from ..evaluation.compare import compare_models, metrics_of
from ..evaluation.davis_report import write_davis_pictures
from ..evaluation.outputs import OutputFolder
from ..evaluation.tapvid import write_first_tracks_picture

#: One model's evaluation: (the loaded model, its output folder) -> the summary of an `evaluate_*` function.
Evaluation = Callable[[LoadedModel, OutputFolder], dict[str, Any]]
#: Pictures of a comparison: (name -> each model's folder, the comparison's folder) -> anything.
Pictures = Callable[[dict[str, Path], OutputFolder], Any]


Models = Mapping[str, LoadedModel]  # name -> a loaded adapter or backbone


def compare(task: str, models: Models, data_root: Path, output: Path, evaluation: Evaluation,
            pictures: Pictures | None = None) -> dict[str, dict[str, Any]]:
    """Every model evaluated into its folder of ``output``, then compared; name -> metrics."""
    def run(model: LoadedModel) -> Callable[[OutputFolder], dict[str, Any]]:
        return lambda folder: metrics_of(evaluation(model, folder))

    with OutputFolder(output, [data_root], overwrite=True) as out:
        rows, folders = compare_models(task, {name: run(model) for name, model in models.items()}, out)
        if pictures:
            pictures(folders, out)
    return rows


def cached(folder: Path, model: LoadedModel) -> FeatureCache:
    """The frozen backbone's features of every video, kept in ``folder`` for the next model on the same backbone."""
    return FeatureCache(folder, model.base or model.encoder)


def davis_scores(models: Models, benchmark: Path, output: Path, size: tuple[int, int], cache: Path,
                 pictures: bool = False) -> dict[str, dict[str, Any]]:
    """J&F of every model on the demo's benchmark; with ``pictures``, the sheet and mp4 of them side by side."""
    return compare("davis", models, benchmark, output,
                   evaluation=lambda model, out: evaluate_davis(model.encoder, benchmark, out, size=size,
                                                                cache=cached(cache, model)),
                   pictures=(lambda folders, out: write_davis_pictures(benchmark, folders, out, video=True)) if pictures else None)


def tracking_scores(models: Models, root: Path, output: Path, size: tuple[int, int], cache: Path
                    ) -> dict[str, dict[str, Any]]:
    """AJ, < delta^x_avg and occlusion accuracy of every model (`first` queries), and the tracks of the first video."""
    return compare("tapvid", models, root, output,
                   evaluation=lambda model, out: evaluate_tapvid(model.encoder, root, out, size=size, cache=cached(cache, model)),
                   pictures=lambda folders, out: write_first_tracks_picture(root, folders, out))


def retrieval_scores(models: Models, root: Path, output: Path) -> dict[str, dict[str, Any]]:
    """R@k of every model on the held-out windows (each model's confusion picture in its folder)."""
    return compare("retrieval", models, root, output,
                   evaluation=lambda model, out: evaluate_retrieval(model.encoder, root, out, title=model.name, progress=True))


def tradeoff_scores(model: LoadedModel, clips: Path, output: Path, num_frames: int) -> dict[str, dict[str, Any]]:
    """D_intra, D_inter and the rest for an adapter and its base on the held-out clips, and their plane."""
    from ..evaluation.plots import tradeoff_picture  # matplotlib, only when drawing

    with OutputFolder(output, [clips], overwrite=True) as out:
        results = analyze_tradeoff({"adapted": model.encoder, "base": model.base}, clips, num_frames=num_frames, progress=True)
        tradeoff_picture(results, out.path("tradeoff.png"), data=clips.name)
    return results
