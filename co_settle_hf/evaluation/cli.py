"""`co-settle eval davis|jhmdb|vip|tapvid|retrieval|tradeoff --model ADAPTER_OR_BACKBONE --data-root DIR --output-dir DIR`,
and :func:`evaluate`, the same run from Python."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

import torch

from ..backbones.encoder import BACKBONE_PRECISIONS
from ..errors import DataSourceError, SettingsError
from ..hub.model_card import add_results_to_card, check_card_target, results_from_summary
from ..shared_flags import add_shared, default_of
from .cache import FeatureCache
from .compare import compare_models, metrics_of, short_labels
from .davis import evaluate_davis, list_davis_sequences, read_frames
from .davis_report import write_davis_pictures
from .distributed import Processes, current_processes
from .encoders import LoadedModel, load_for_evaluation
from .features import fit_to_patches
from .jhmdb import MAPPINGS, PCK_THRESHOLDS, evaluate_jhmdb
from .outputs import OutputFolder
from .propagation import PROTOCOLS, PropagationSettings
from .retrieval import DATASETS, EMBEDDINGS, SPLITS, evaluate_retrieval
from .tapvid import evaluate_tapvid, write_first_tracks_picture
from .tapvid_metrics import QUERY_MODES
from .tracking import TrackingSettings
from .tradeoff import CYCLE_FEATURES, TRADEOFF, analyze_tradeoff, read_sample_csv
from .vip import VIP_TOPK, evaluate_vip

PROTOCOL_HELP = ("propagation protocol: 'cropmae' (default; the CropMAE / videowalk evaluation behind the "
                 "published DAVIS, JHMDB and VIP tables: temperature 0.7, top-k 7 (10 on VIP), 20 previous frames, "
                 "circular radius 20) or 'dino' (DINO's evaluation: temperature 0.1, top-5, 7 previous frames, "
                 "square neighbourhood of 12 cells, norm_mask)")


TASKS = {
    "davis": "DAVIS-2017 label propagation (J&F)",
    "jhmdb": "JHMDB pose propagation (PCK)",
    "vip": "VIP part propagation (mIoU)",
    "tapvid": "TAP-Vid-DAVIS point tracking (AJ, < delta^x_avg, occlusion accuracy)",
    "retrieval": "UCF101 / HMDB51 clip retrieval (R@k)",
    "tradeoff": "the consistency-separability trade-off (d_intra, d_inter)",
}
PROPAGATION_TASKS = ("davis", "jhmdb", "vip")


def common_flags() -> argparse.ArgumentParser:
    """The flags of every task: the models, the data, the output folder, the device."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--model", required=True, action="append",
                        help="adapter or backbone: local path or Hub id; repeat it to compare several models on "
                             "the same data (one sub-folder each, and comparison.md / comparison.csv)")
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) of --model")
    parser.add_argument("--data-root", "--data_root", required=True,
                        help="the benchmark's folder in its official layout (trade-off: a folder of clips)")
    add_shared(parser, "output_dir", required=True,
               help="where results go; refused inside --data-root, and if it already holds results")
    add_shared(parser, "overwrite", help="replace the results already in --output-dir (only once the new run has finished)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: this process's accelerator)")
    add_shared(parser, "backbone_precision", choices=tuple(BACKBONE_PRECISIONS), default="fp32",
               help="run the frozen backbone under bf16 autocast (CPUs with AVX512-BF16 or AMX, GPUs)")
    parser.add_argument("--update-card", metavar="ADAPTER", default=None,
                        help="add the results to this saved adapter's model card (model-index entries)")
    return parser


def cache_flag() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--feature-cache", "--feature_cache", default=None, metavar="DIR",
                        help="store each video's backbone features here and reuse them (a sweep, or base and "
                             "adapter, compute them once)")
    return parser


def propagation_flags() -> argparse.ArgumentParser:
    """The label-propagation protocol of DAVIS, JHMDB and VIP, and its sweeps."""
    parser = argparse.ArgumentParser(add_help=False, parents=[cache_flag()])
    group = parser.add_argument_group("label propagation")
    group.add_argument("--protocol", choices=sorted(PROTOCOLS), default="cropmae", help=PROTOCOL_HELP)
    group.add_argument("--topk", type=int, nargs="+", default=None,
                       help="neighbours per node; several values sweep them (default: the protocol's)")
    group.add_argument("--propagation-temperature", "--propagation_temperature", "--temperature",
                       dest="propagation_temperature", type=float, nargs="+", default=None,
                       help="affinity temperature of label propagation; several values sweep them "
                            "(default: the protocol's)")
    group.add_argument("--n-context", type=int, default=None, help="previous frames in the context")
    group.add_argument("--radius", type=float, default=None, help="spatial neighbourhood in feature cells")
    return parser


def size_flag(parser: argparse.ArgumentParser, evaluate: Any) -> None:
    default = default_of(evaluate, "size")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=default,
                        help=f"input size, rounded down to the patch grid (default {default[0]} {default[1]})")


def first_frame_flag(parser: argparse.ArgumentParser, evaluate: Any) -> None:
    default = default_of(evaluate, "include_first_frame")
    parser.add_argument("--include-first-frame", action=argparse.BooleanOptionalAction, default=default,
                        help=f"score the given first frame too (default: {'yes' if default else 'no'}, as published)")


def add_davis(task: argparse.ArgumentParser) -> None:
    size_flag(task, evaluate_davis)
    task.add_argument("--sequences", nargs="*", default=None, help="only these sequences")
    task.add_argument("--sheet-sequences", nargs="+", default=None, metavar="NAME",
                      help="only these sequences in propagation_sheet.png (default: every scored one)")
    task.add_argument("--video", action="store_true",
                      help="also write an mp4 of the ground truth and each model's masks side by side")


def add_jhmdb(task: argparse.ArgumentParser) -> None:
    size_flag(task, evaluate_jhmdb)
    task.add_argument("--list-file", default=None, help="list of videos (default: the official one)")
    task.add_argument("--mapping", choices=MAPPINGS, default=default_of(evaluate_jhmdb, "mapping"),
                      help="joint-to-cell mapping: 'reference' (CropMAE's, behind the published PCK) or "
                           "'centred' (pixel and cell centres aligned, a continuous Gaussian)")
    task.add_argument("--pck-thresholds", type=float, nargs="+", default=list(PCK_THRESHOLDS),
                      help="PCK thresholds, e.g. 0.1 0.2 0.3 0.4 0.5")
    task.add_argument("--count-lost-as-miss", action=argparse.BooleanOptionalAction,
                      default=default_of(evaluate_jhmdb, "count_lost_as_miss"),
                      help="a joint whose map vanished is a miss (default) or, with --no-..., not scored "
                           "(the reference's behaviour)")
    first_frame_flag(task, evaluate_jhmdb)


def add_vip(task: argparse.ArgumentParser) -> None:
    task.add_argument("--long-side", type=int, default=default_of(evaluate_vip, "long_side"), help="input long side")
    task.add_argument("--list-file", default=None, help="list of videos (default: the official one)")
    first_frame_flag(task, evaluate_vip)


def add_tapvid(task: argparse.ArgumentParser) -> None:
    size_flag(task, evaluate_tapvid)
    task.add_argument("--query-mode", choices=QUERY_MODES, default=default_of(evaluate_tapvid, "query_mode"),
                      help="TAP-Vid's queries: 'first' (each track's first visible point, frames after it scored) "
                           "or 'strided' (every 5 frames, every other frame scored)")
    task.add_argument("--videos", nargs="+", default=None, metavar="NAME", help="only these videos")
    task.add_argument("--window", type=int, default=None,
                      help=f"cells (odd) of the soft-argmax around the best match (default {TrackingSettings.window})")
    task.add_argument("--match-temperature", type=float, default=None,
                      help=f"soft-argmax temperature on cosine similarities (default {TrackingSettings.temperature})")
    task.add_argument("--occlusion-threshold", type=float, default=None,
                      help="a point is predicted occluded where its best cosine similarity is below this "
                           f"(default {TrackingSettings.occlusion_threshold})")


def add_retrieval(task: argparse.ArgumentParser) -> None:
    task.add_argument("--dataset", choices=DATASETS, default=None,
                      help="default: recognised from the split files under --data-root")
    task.add_argument("--split", type=int, choices=SPLITS, default=default_of(evaluate_retrieval, "split"),
                      help="official split")
    task.add_argument("--embedding", choices=EMBEDDINGS, default=default_of(evaluate_retrieval, "embedding"),
                      help="pool the adapter's projected patch features or its frozen base's")
    task.add_argument("--num-frames", "--num_frames", type=int, default=default_of(evaluate_retrieval, "num_frames"),
                      help="evenly spaced frames per video")


def add_tradeoff(task: argparse.ArgumentParser) -> None:
    task.add_argument("--num-frames", "--num_frames", type=int, default=None,
                      help="evenly spaced frames per video (all if unset; the authors use 40; at least 8)")
    task.add_argument("--sample-csv", "--sample_csv", default=None,
                      help="the authors' sample list: one video (frame folder or file) per line, no header, "
                           "relative to --data-root")
    task.add_argument("--cycle-features", choices=CYCLE_FEATURES, default=TRADEOFF.cycle_features,
                      help="features the cycle accuracy walks on: raw (as the authors) or L2-normalised")


TASK_FLAGS = {"davis": add_davis, "jhmdb": add_jhmdb, "vip": add_vip, "tapvid": add_tapvid,
              "retrieval": add_retrieval, "tradeoff": add_tradeoff}


def build_parser() -> argparse.ArgumentParser:
    """`co-settle eval TASK`: one subcommand per task, each with only its own flags."""
    parser = argparse.ArgumentParser(prog="co-settle eval", description="Evaluate an adapter or a bare backbone. "
                                     "Under `accelerate launch -m co_settle_hf.evaluate ...` videos are shared "
                                     "among the processes; the files are those of one process.")
    tasks = parser.add_subparsers(dest="task", required=True, metavar="TASK", help="the benchmark (`co-settle eval TASK -h`: its flags)")
    for name, add_flags in TASK_FLAGS.items():
        parents = [common_flags()]
        if name in PROPAGATION_TASKS:
            parents.append(propagation_flags())
        elif name in ("tapvid", "retrieval"):
            parents.append(cache_flag())
        task = tasks.add_parser(name, parents=parents, help=TASKS[name], description=TASKS[name])
        add_flags(task)
    return parser


def propagation_settings(args: argparse.Namespace) -> list[PropagationSettings]:
    """The protocol's settings with the command line's changes; one per (top-k, temperature) of a sweep."""
    base = PROTOCOLS[args.protocol]
    if args.protocol == "cropmae" and args.task == "vip":
        base = base.with_values(topk=VIP_TOPK)
    base = base.with_values(n_context=args.n_context, radius=args.radius)
    return [base.with_values(topk=k, temperature=t)
            for k in (args.topk or [base.topk]) for t in (args.propagation_temperature or [base.temperature])]


def print_table(title: str, rows: dict[str, dict[str, Any]]) -> str:
    """A Markdown table, metrics as rows and models as columns; printed and returned."""
    columns = list(rows)
    metrics = [k for k, v in rows[columns[0]].items() if isinstance(v, (int, float))]
    lines = [f"### {title}", "", "| metric | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for metric in metrics:
        cells = [rows[c].get(metric) for c in columns]
        lines.append(f"| {metric} | " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in cells) + " |")
    text = "\n".join(lines)
    print(text)
    return text


def sweep_table(title: str, rows: dict[str, dict[str, Any]]) -> str:
    """A Markdown table with a row per propagation setting of a sweep; printed and returned."""
    columns = [k for k, v in next(iter(rows.values())).items() if isinstance(v, (int, float))]
    lines = [f"### {title}", "", "| setting | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for label, row in rows.items():
        cells = [row.get(c) for c in columns]
        lines.append(f"| {label} | " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in cells) + " |")
    text = "\n".join(lines)
    print(text)
    return text


def run_propagation_task(args: argparse.Namespace, loaded: LoadedModel, out: OutputFolder, processes: Processes
                         ) -> dict[str, dict[str, Any]]:
    """DAVIS, JHMDB or VIP, for every propagation setting asked; rows on the main process ({} elsewhere)."""
    settings = propagation_settings(args)
    cache = FeatureCache(args.feature_cache, loaded.base or loaded.encoder) if args.feature_cache else None  # backbone tokens
    common = dict(cache=cache, processes=processes, progress=processes.is_main)
    if args.task == "davis":
        summary = evaluate_davis(loaded.encoder, args.data_root, out, settings, size=tuple(args.size),
                                 sequences=args.sequences, **common)
    elif args.task == "jhmdb":
        summary = evaluate_jhmdb(loaded.encoder, args.data_root, out, settings, list_file=args.list_file,
                                 size=tuple(args.size), mapping=args.mapping,
                                 thresholds=args.pck_thresholds, count_lost_as_miss=args.count_lost_as_miss,
                                 include_first_frame=args.include_first_frame, **common)
    else:
        summary = evaluate_vip(loaded.encoder, args.data_root, out, settings, list_file=args.list_file,
                               long_side=args.long_side, include_first_frame=args.include_first_frame, **common)
    if not processes.is_main:
        return {}
    write_timing(args.task, summary, out, processes)
    if args.task == "davis":
        davis_pictures(args, loaded, out, "" if len(settings) == 1 else settings[0].label())
    if len(settings) == 1:
        return {args.model: metrics_of(summary)}
    return {s.label(): {"topk": s.topk, "temperature": s.temperature, **metrics_of(one)}
            for s, one in zip(settings, summary["summaries"])}


def write_timing(task: str, summary: dict[str, Any], out: OutputFolder, processes: Processes) -> None:
    """``timing.json`` (kept apart from the results, which must not depend on it), and a line saying it."""
    timing = {**summary["timing"], "processes": processes.world}
    print(f"{task}: {timing['frames']} frames in {timing['seconds']:.1f} s on the main process of "
          f"{processes.world} ({timing['frames_per_second']:.2f} frames/s); feature cache: {timing['cache_hits']} hits, "
          f"{timing['cache_misses']} misses", flush=True)
    out.path("timing.json").write_text(json.dumps(timing, indent=2, default=float))


def run_tapvid(args: argparse.Namespace, loaded: LoadedModel, out: OutputFolder, processes: Processes
               ) -> dict[str, dict[str, Any]]:
    """TAP-Vid-DAVIS point tracking by matching; rows on the main process ({} elsewhere)."""
    cache = FeatureCache(args.feature_cache, loaded.base or loaded.encoder) if args.feature_cache else None
    settings = TrackingSettings().with_values(window=args.window, temperature=args.match_temperature,
                                              occlusion_threshold=args.occlusion_threshold)
    summary = evaluate_tapvid(loaded.encoder, args.data_root, out, settings, query_mode=args.query_mode,
                              size=tuple(args.size), videos=args.videos, cache=cache,
                              processes=processes, progress=processes.is_main)
    if not processes.is_main:
        return {}
    write_timing(args.task, summary, out, processes)
    tracks_picture(args, {short_labels([args.model])[args.model]: out.root}, out)
    return {args.model: metrics_of(summary)}


def tracks_picture(args: argparse.Namespace, folders: dict[str, Path], out: OutputFolder) -> Path:
    """The tracks picture of the command's first video, with its query mode in the title."""
    return write_first_tracks_picture(args.data_root, folders, out, videos=args.videos, query_mode=args.query_mode)


def davis_pictures(args: argparse.Namespace, loaded: LoadedModel, out: OutputFolder, folder: str) -> None:
    """The sheet of every scored sequence with its ground truth (and mp4), and the feature PCA of an adapter."""
    from .plots import feature_pca_figure

    label = short_labels([args.model])[args.model]
    write_davis_pictures(args.data_root, {label: out.root / folder}, out, sequences=args.sequences,
                         sheet=args.sheet_sequences, video=args.video)
    first = list_davis_sequences(args.data_root, sequences=args.sequences)[0]
    if loaded.adapter is not None:
        feature_figure(loaded, read_frames(first.frames[:1])[0], tuple(args.size), out.path(f"{first.name}_features_pca.png"),
                       feature_pca_figure, f"{label} on DAVIS-2017 {first.name}")


def feature_figure(loaded: LoadedModel, frame: torch.Tensor, size: tuple[int, int], path: Path, draw,
                   title: str) -> Path:
    """PCA pictures of one frame's patch features before and after the projection."""
    size = fit_to_patches(size, loaded.encoder.patch_size)
    image = torch.nn.functional.interpolate(frame.permute(2, 0, 1)[None].float(), size=size, mode="bilinear", antialias=True)
    mean = torch.tensor(loaded.encoder.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(loaded.encoder.image_std).view(1, 3, 1, 1)
    with torch.no_grad():
        out = loaded.adapter((image / 255 - mean).div(std).to(loaded.adapter.device))
    return draw(frame, out.backbone_features[0].cpu(), out.features[0].cpu(), path, title=title)


def run_retrieval(args: argparse.Namespace, loaded: LoadedModel, out: OutputFolder, processes: Processes
                  ) -> dict[str, dict[str, Any]]:
    """R@k of the split's test videos against its train videos; rows on the main process ({} elsewhere)."""
    encoder = loaded.encoder
    if args.embedding == "base":
        if loaded.base is None:
            raise ValueError(f"--embedding base needs an adapter; {args.model} is a bare backbone")
        encoder = loaded.base
    cache = FeatureCache(args.feature_cache, encoder) if args.feature_cache else None
    summary = evaluate_retrieval(encoder, args.data_root, out, split=args.split, dataset=args.dataset,
                                 num_frames=args.num_frames, embedding=args.embedding,
                                 title=f"{args.model} ({args.embedding} features)", cache=cache,
                                 processes=processes, progress=processes.is_main)
    return {args.model: metrics_of(summary)} if processes.is_main else {}


def run_tradeoff(args: argparse.Namespace, loaded: LoadedModel, out: OutputFolder, processes: Processes
                 ) -> dict[str, dict[str, Any]]:
    from .plots import tradeoff_picture

    encoders = {"adapted": loaded.encoder, "base": loaded.base} if loaded.base is not None else {"model": loaded.encoder}
    videos = read_sample_csv(args.sample_csv, args.data_root) if args.sample_csv else args.data_root
    results = analyze_tradeoff(encoders, videos, num_frames=args.num_frames, progress=processes.is_main,
                               cycle_features=args.cycle_features, processes=processes)
    if not processes.is_main:
        return {}
    tradeoff_picture(results, out.path("tradeoff.png"), data=Path(args.sample_csv or args.data_root).name)
    return results


RUNNERS = {"tapvid": run_tapvid, "retrieval": run_retrieval, "tradeoff": run_tradeoff}  # else propagation


def run_model(args: argparse.Namespace, loaded: LoadedModel, out: OutputFolder, processes: Processes,
              settings: Sequence[PropagationSettings]) -> dict[str, dict[str, Any]]:
    """One model's evaluation, with its ``table.md`` and ``results.json``; rows on the main process."""
    rows = RUNNERS.get(args.task, run_propagation_task)(args, loaded, out, processes)
    if processes.is_main:
        write_tables(f"{args.task}: {args.model}", rows, out, sweep=len(settings) > 1)
    return rows


def write_tables(title: str, rows: dict[str, dict[str, Any]], out: OutputFolder, sweep: bool = False) -> None:
    table = sweep_table(title, rows) if sweep else print_table(title, rows)
    out.path("table.md").write_text(table + "\n")
    out.path("results.json").write_text(json.dumps(rows, indent=2, default=float))


def check_comparison(args: argparse.Namespace, models: Sequence[str], settings: Sequence[PropagationSettings]) -> None:
    """Several --model: a benchmark with per-item scores, one setting, no card to update, distinct names."""
    if args.task == "tradeoff":
        raise ValueError("tradeoff compares an adapter with its base in one run already: give one --model")
    if len(settings) > 1 or args.update_card:
        raise ValueError("several --model compare one setting: no sweep and no --update-card")
    if len(set(models)) != len(models):
        raise ValueError(f"--model names a model twice: {list(models)}")


def run_comparison(args: argparse.Namespace, models: Sequence[str], out: OutputFolder, processes: Processes,
                   device: str | None, settings: Sequence[PropagationSettings]) -> dict[str, dict[str, Any]]:
    """Every model as its own run into ``model<i>-<name>/``, then one table of per-item deltas."""
    def run(name: str):
        one = argparse.Namespace(**{**vars(args), "model": name})
        return lambda sub: run_model(one, load_for_evaluation(name, args.revision, device, args.backbone_precision), sub,
                                     processes, settings).get(name, {})

    rows, folders = compare_models(args.task, {name: run(name) for name in models}, out, is_main=processes.is_main,
                                   threshold=getattr(args, "pck_thresholds", PCK_THRESHOLDS)[0])
    if processes.is_main:
        write_tables(f"{args.task}: {len(models)} models", rows, out)
        labelled = {short_labels(models)[m]: folder for m, folder in folders.items()}
        if args.task == "davis":
            write_davis_pictures(args.data_root, labelled, out, sequences=args.sequences, sheet=args.sheet_sequences,
                                 video=args.video)
        if args.task == "tapvid":
            tracks_picture(args, labelled, out)
    return rows


def task_parser(task: str) -> argparse.ArgumentParser:
    """The parser of one task's subcommand (`co-settle eval TASK`)."""
    if task not in TASK_FLAGS:
        raise SettingsError(f"no evaluation task {task!r}; the tasks are {sorted(TASK_FLAGS)}")
    (tasks,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return tasks.choices[task]


def evaluate(task: str, models: Sequence[str | Path], data_root: str | Path, output_dir: str | Path,
             **settings: Any) -> dict[str, dict[str, Any]]:
    """`co-settle eval TASK` from Python: ``settings`` are the task's flags by name (``size=(240, 424)``,
    ``overwrite=True``, ``feature_cache=...``), with the command line's defaults. Several ``models`` are
    compared as repeating ``--model`` does. Returns the results table: model (or setting) -> metrics."""
    args = task_parser(task).parse_args(["--model", "-", "--data-root", str(data_root), "--output-dir", str(output_dir)])
    unknown = sorted(set(settings) - set(vars(args)) - {"model", "data_root", "output_dir"})
    if unknown:
        raise SettingsError(f"eval {task} has no setting {', '.join(unknown)}; it takes {sorted(vars(args))}")
    vars(args).update(settings, task=task, model=[str(m) for m in models])
    return run_evaluation(args)


def run_evaluation(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """One evaluation (or comparison of several ``args.model``) as parsed; the results table on the main process."""
    models, args.model = args.model, args.model[0]
    if not Path(args.data_root).exists():
        raise DataSourceError(f"{args.task}: --data-root {args.data_root} does not exist")
    if args.update_card:
        check_card_target(args.update_card, args.task)
    settings = propagation_settings(args) if args.task in PROPAGATION_TASKS else []  # argument errors first
    if args.update_card and len(settings) > 1:
        raise SettingsError("--update-card records one setting's results: give one --topk and one --propagation-temperature")
    if len(models) > 1:
        check_comparison(args, models, settings)
    processes = current_processes(cpu=args.device == "cpu" or not torch.cuda.is_available())
    output = OutputFolder(args.output_dir, [args.data_root], args.overwrite, processes)  # checks; writes nothing
    device = str(processes.device) if args.device in (None, "cuda") else args.device  # cuda:<rank> when launched
    if len(models) > 1:
        with output as out:
            return run_comparison(args, models, out, processes, device, settings)
    loaded = load_for_evaluation(args.model, args.revision, device, args.backbone_precision)
    with output as out:
        rows = run_model(args, loaded, out, processes, settings)
    if args.update_card and processes.is_main:
        add_results_to_card(args.update_card, results_from_summary(args.task, rows[args.model]))
    return rows
