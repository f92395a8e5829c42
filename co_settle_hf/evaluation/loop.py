"""The one evaluation loop of the propagation benchmarks (DAVIS, JHMDB, VIP, the mask example) and TAP-Vid.

For each video: read its frames, extract features (or take them from the feature cache),
propagate the first frame's labels with every requested :class:`PropagationSettings`, and hand
the soft labels to the task's scorer. Videos are sharded across processes by
:mod:`.distributed`; per-video results are gathered and put back in video order, and the task
summarises them once per setting on the main process. A task only says how to read its ground
truth, build the first labels and score one video (:class:`PropagationTask`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import torch
from tqdm.auto import tqdm

from .cache import FeatureCache
from .distributed import Processes
from .features import DenseEncoder, _encoder_device, extract_video_features, project_backbone_tokens
from .images import image_header, read_frames
from .outputs import OutputFolder, open_output
from .propagation import PropagationSettings, propagate_labels


class PropagationTask(Protocol):
    """What a benchmark tells the loop (one instance per run)."""

    name: str

    def videos(self) -> Sequence[Any]:
        """The videos to evaluate, each with ``.name`` and ``.frames`` (its files, in order).

        A video that is not a folder of frame images (e.g. one mp4, ``.frames = (path,)``) also
        has ``num_frames``, ``frame_size`` (height, width) and ``read_all()`` (uint8 (T, H, W, 3)),
        and, when its file holds several videos (a TAP-Vid pickle), ``item``: its name there,
        which keys the feature cache along with the file.
        """

    #: Fewest frames a video needs to be scored; shorter ones are listed under ``too_short``.
    min_frames: int

    def input_size(self, frame_size: tuple[int, int], patch_size: int) -> tuple[int, int]:
        """The encoder input (height, width) for frames of ``frame_size``."""

    def first_labels(self, video: Any, frame_size: tuple[int, int], size: tuple[int, int],
                     grid: tuple[int, int]) -> tuple[torch.Tensor, Any]:
        """(C, h, w) labels of frame 0 at feature resolution, and what ``score`` needs (ground truth...).

        A task that is not label propagation gives what its ``predict`` starts from (TAP-Vid: its queries).
        """

    # Optional ``predict(features, first, settings)``: what the task predicts from the features and
    # ``first`` (default :func:`propagate_labels`; TAP-Vid tracks its queries by matching).

    def score(self, video: Any, state: Any, soft: torch.Tensor, settings: PropagationSettings,
              out: OutputFolder, folder: str) -> dict[str, Any]:
        """One video's picklable result from ``predict``'s output; may write its predictions under
        ``out.path(folder, ...)``."""

    def summarise(self, rows: list[dict[str, Any]], too_short: dict[str, dict[str, int]], settings: PropagationSettings,
                  out: OutputFolder, folder: str) -> dict[str, Any]:
        """The benchmark's summary of all rows (main process only); writes the result files."""


@dataclass
class RunStats:
    """Timing and cache use of a run (kept out of the result files, which must not depend on them)."""

    frames: int = 0
    seconds: float = 0.0
    cache_hits: int = 0
    cache_misses: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "seconds": self.seconds, "cache_hits": self.cache_hits,
                "cache_misses": self.cache_misses,
                "frames_per_second": self.frames / self.seconds if self.seconds > 0 else math.nan}


def frame_count(video: Any) -> int:
    return int(video.num_frames) if hasattr(video, "num_frames") else len(video.frames)


def frame_size(video: Any) -> tuple[int, int]:
    """(height, width) of a video's frames, from the first file's header (no decoding)."""
    if hasattr(video, "frame_size"):
        return tuple(video.frame_size)
    width, height = image_header(video.frames[0])[1]
    return height, width


def video_features(encoder: DenseEncoder, video: Any, size: tuple[int, int], cache: FeatureCache | None,
                   device: torch.device | None = None) -> torch.Tensor:
    """Unit-norm features (T, h, w, D) of a video's frames at ``size``, from the cache when it has them.

    The cache holds the frozen backbone's raw tokens, so every adapter on one backbone (and the
    backbone itself) reuses a single backbone pass: an adapter only runs its projection on them.
    """
    def frames() -> torch.Tensor:
        return video.read_all() if hasattr(video, "read_all") else read_frames(video.frames)

    if cache is None:
        return extract_video_features(encoder, frames(), size=size)
    backbone = getattr(encoder, "backbone", None) or encoder
    tokens = cache.get(video.frames, size, lambda: extract_video_features(backbone, frames(), size=size, normalise=False),
                       item=getattr(video, "item", None))
    tokens = tokens if device is None else tokens.to(device)
    if backbone is not encoder:
        tokens = project_backbone_tokens(encoder, tokens)
    return torch.nn.functional.normalize(tokens, dim=-1)


def _evaluate_video(task: PropagationTask, encoder: DenseEncoder, video: Any, settings: Sequence[PropagationSettings],
                    out: OutputFolder | None, folders: Sequence[str], cache: FeatureCache | None
                    ) -> list[dict[str, Any]]:
    shape = frame_size(video)
    size = task.input_size(shape, int(encoder.patch_size))
    features = video_features(encoder, video, size, cache, _encoder_device(encoder))
    grid = tuple(features.shape[1:3])
    first, state = task.first_labels(video, shape, size, grid)
    predict = getattr(task, "predict", propagate_labels)
    rows = []
    for setting, folder in zip(settings, folders):
        prediction = predict(features, first.to(features.device), setting)
        rows.append(task.score(video, state, prediction, setting, out, folder))
    return rows


def _run_my_share(task: PropagationTask, encoder: DenseEncoder, videos: list[Any], settings: Sequence[PropagationSettings],
                  out: OutputFolder | None, folders: Sequence[str], cache: FeatureCache | None,
                  processes: Processes | None, progress: bool) -> tuple[list[tuple[int, str, Any]], RunStats]:
    """(video index, "rows" | "too_short" | "error", value) for this process's videos, and its stats."""
    mine = [i for block in (processes.my_blocks(len(videos)) if processes else [range(len(videos))]) for i in block]
    stats, results = RunStats(), []
    iterator: Any = mine
    if progress:
        iterator = tqdm(mine, desc=task.name, unit="video")
    for index in iterator:
        video = videos[index]
        count = frame_count(video)
        if count < task.min_frames:
            print(f"{task.name}: {video.name} has {count} frame(s), scoring needs at least "
                  f"{task.min_frames}: not scored, listed under too_short", flush=True)
            results.append((index, "too_short", {"frames": count, "needs": task.min_frames}))
            continue
        start = time.perf_counter()
        try:
            rows = _evaluate_video(task, encoder, video, settings, out, folders, cache)
        except (ValueError, OSError) as error:
            if processes is None or processes.world == 1:
                raise
            results.append((index, "error", str(error)))  # raised on every process after the gather, not a hang
            continue
        stats.seconds += time.perf_counter() - start
        stats.frames += count
        results.append((index, "rows", rows))
    if cache is not None:
        stats.cache_hits, stats.cache_misses = cache.hits, cache.misses
    return results, stats


def run_propagation(
    task: PropagationTask,
    encoder: DenseEncoder,
    settings: Sequence[PropagationSettings],
    out: OutputFolder | None,
    *,
    cache: FeatureCache | None = None,
    processes: Processes | None = None,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], RunStats]:
    """Evaluate ``task`` once per setting; returns the summaries (main process; [] elsewhere) and stats.

    With one setting the task writes its files at the top of ``out``; with several (a sweep),
    each setting's files go to ``out/<setting label>/``.
    """
    if not settings:
        raise ValueError("settings is empty: nothing to evaluate")
    videos = list(task.videos())
    folders = [""] if len(settings) == 1 else [s.label() for s in settings]
    if len(set(folders)) != len(folders):
        raise ValueError(f"two propagation settings share the label {folders}: sweep distinct values")
    results, stats = _run_my_share(task, encoder, videos, settings, out, folders, cache, processes, progress)
    gathered = sorted(processes.gather(results) if processes else results, key=lambda r: r[0])
    errors = [value for _, kind, value in gathered if kind == "error"]
    if errors:
        raise ValueError(errors[0] if len(errors) == 1 else f"{len(errors)} videos failed: " + "; ".join(errors))
    if processes is not None and not processes.is_main:
        return [], stats
    too_short = {videos[i].name: value for i, kind, value in gathered if kind == "too_short"}
    per_video = [value for _, kind, value in gathered if kind == "rows"]
    if not per_video:
        raise ValueError(f"no {task.name} video could be scored: {too_short}")
    summaries = [task.summarise([rows[s] for rows in per_video], too_short, setting, out, folder)
                 for s, (setting, folder) in enumerate(zip(settings, folders))]
    return summaries, stats


def settings_list(settings: Any, knobs: dict[str, Any]) -> list[PropagationSettings]:
    """One setting or a sweep, as a list; keyword knobs change fields of each."""
    if settings is None or isinstance(settings, PropagationSettings):
        settings = [settings or PropagationSettings()]
    return [s.with_values(**knobs) for s in settings]


def evaluate_task(task: PropagationTask, encoder: DenseEncoder, root: Any, output_dir: Any, settings: Any,
                  knobs: dict[str, Any], *, overwrite: bool, cache: FeatureCache | None, processes: Processes | None,
                  progress: bool) -> dict[str, Any]:
    """What every ``evaluate_<benchmark>`` function does: confined output folder, the loop, timing.

    Returns the (first) setting's summary with ``summaries`` (all of them, for a sweep) and
    ``timing`` (frames, seconds, cache hits) added; empty on processes other than the main one.
    """
    with open_output(output_dir, [root], overwrite) as out:
        summaries, stats = run_propagation(task, encoder, settings_list(settings, knobs), out, cache=cache,
                                           processes=processes, progress=progress)
    if not summaries:
        return {}
    timing = stats.as_dict()
    return {**summaries[0], "timing": timing, "frames_per_second": timing["frames_per_second"], "summaries": summaries}
