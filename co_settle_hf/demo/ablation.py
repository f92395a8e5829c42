"""`co-settle ablate`: what each choice of a short run is worth, on the demo's own footage and benchmark.

Every row trains the demo's recipe (cached views, ``--steps`` at batch 8) with ONE choice changed,
for several seeds, and scores each adapter with `co-settle eval davis` on the demo's propagation
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
from pathlib import Path
from typing import Any, Sequence

from ..machine import cpu_model, matmul_rate
from .budget import choose_precision
from .run import build_parser as demo_parser
from .run import prepare_inputs, recipe_argv, run_eval

#: The choices ablated: trainer flag -> the values tried. Each row changes one flag from the demo's recipe.
CHOICES: dict[str, tuple[str, ...]] = {
    "--projection-init": ("released", "default", "identity"),
    "--learning-rate": ("1e-4", "2e-4", "5e-4"),
    "--resize": ("antialiased", "released", "short_side"),
    "--crop-rule": ("torchvision", "released"),
    "--backbone-precision": ("bf16", "fp32"),
}
#: Augmentation flags that change the cached views (with the precision): rows sharing them share a cache file.
VIEW_FLAGS = ("--resize", "--crop-rule")


def recipe_rows(recipe: list[str]) -> dict[str, list[str]]:
    """"demo recipe" first, then one row per choice the recipe does not already make (its flags)."""
    chosen = dict(zip(recipe[::2], recipe[1::2]))
    defaults = {flag: chosen.get(flag, values[0]) for flag, values in CHOICES.items()}
    return {"demo recipe": [], **{f"{flag.strip('-')} {value}": [flag, value] for flag, values in CHOICES.items()
                                  for value in values if float_or(value) != float_or(defaults[flag])}}


def float_or(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = demo_parser()
    parser.prog, parser.description = "co-settle ablate", __doc__.split("\n\n")[0]
    parser.set_defaults(output_dir="outputs/ablation")
    parser.add_argument("--rows", nargs="+", default=None, metavar="ROW", help="rows to run, by name (default all)")
    parser.add_argument("--seed-list", type=int, nargs="+", default=[0, 1, 2], help="training seeds per row (default 0 1 2)")
    parser.add_argument("--cache-pairs", type=int, default=256, help="cached pairs per run (the demo's budget decides its own)")
    return parser


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _cache_file(out: Path, seed: int, values: dict[str, str], precision: str) -> Path:
    key = [f"seed{seed}"] + [f"{flag.strip('-')}-{values[flag]}" for flag in VIEW_FLAGS if flag in values]
    return out / "caches" / f"{'_'.join(key)}_{precision}.safetensors"


def run_row(args: argparse.Namespace, out: Path, backbone: str, footage: dict[str, Any], row: str, flags: list[str],
            seed: int) -> dict[str, Any]:
    """Train one row's recipe (the demo's, with ``flags``) for one seed and score it: J&F and the wall times."""
    from ..training.trainer import main as train

    values = dict(zip(flags[::2], flags[1::2]))
    precision = values.get("--backbone-precision", args.backbone_precision)  # trained and scored in it
    folder = out / "runs" / _slug(row) / f"seed{seed}"
    cache = _cache_file(out, seed, values, precision)
    cache.parent.mkdir(parents=True, exist_ok=True)
    built = not cache.is_file()
    tic = time.perf_counter()
    train(recipe_argv(args, backbone, out / "data" / "train", folder, seed, args.cache_pairs, precision,
                      "--feature-cache-file", str(cache), *flags))
    trained = time.perf_counter() - tic
    scores = run_eval("davis", [folder], footage["benchmark"], out / "eval" / _slug(row) / f"seed{seed}", "--size",
                      *(str(v) for v in args.eval_size), "--feature-cache", str(out / "eval-cache"),
                      "--backbone-precision", precision)
    return {"row": row, "flags": flags, "precision": precision, "seed": seed, "J&F": scores[str(folder)]["J&F-Mean"],
            "train_s": trained, "eval_s": time.perf_counter() - tic - trained, "cache_built": built}


def base_scores(args: argparse.Namespace, out: Path, backbone: str, footage: dict[str, Any]) -> dict[str, float]:
    """J&F of the base backbone in both precisions (the bf16 change must stay within 0.2 points)."""
    scores = {}
    for precision in ("fp32", "bf16"):
        rows = run_eval("davis", [Path(backbone)], footage["benchmark"], out / "eval" / f"base-{precision}", "--size",
                        *(str(v) for v in args.eval_size), "--feature-cache", str(out / "eval-cache"), "--backbone-precision", precision)
        scores[precision] = rows[backbone]["J&F-Mean"]
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
    args = build_parser().parse_args(argv)
    args.backbone_precision = choose_precision(args.backbone_precision)  # the recipe's, as the demo resolves it
    out = Path(args.output_dir)
    rows = recipe_rows(recipe_argv(args, "", out, out, 0, args.cache_pairs, args.backbone_precision))
    unknown = [row for row in args.rows or () if row not in rows]
    if unknown:
        raise SystemExit(f"--rows: no such row {unknown}; the rows are {list(rows)}")
    started = time.perf_counter()
    backbone, label, footage = prepare_inputs(out, args)
    base = base_scores(args, out, backbone, footage)
    runs = []
    for seed in args.seed_list:  # seeds outermost: a partial table still covers every row
        for row in args.rows or rows:
            runs.append(run_row(args, out, backbone, footage, row, rows[row], seed))
            (out / "runs.json").write_text(json.dumps(runs, indent=2))
            print(f"ablation: {row}, seed {seed}: J&F {runs[-1]['J&F']:.4f}", flush=True)
    header = (f"# Ablation of the short-run recipe\n\n{label}; {args.steps} steps at batch {args.batch_size} on the cached "
              f"views of {args.cache_pairs} pairs, backbone in {args.backbone_precision}; seeds {args.seed_list}. Machine: {cpu_model()}, "
              f"fp32 matmul {matmul_rate():.0f} GFLOP/s. {time.perf_counter() - started:.0f} s in all.")
    table = summarise(runs, base)
    (out / "ablation.json").write_text(json.dumps({"base": base, "table": table, "runs": runs}, indent=2))
    path = write_table(out, table, base, header)
    print(path.read_text())
    return path


def cli_main(argv: list[str]) -> None:
    main(argv)
