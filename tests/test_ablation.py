"""`co-settle ablate` end to end on a tiny backbone: rows over seeds, shared caches, a table of measured gains."""

from __future__ import annotations

import json
import re

from tiny_backbones import save_backbone

from co_settle_hf.demo.ablation import main as ablate
from co_settle_hf.demo.ablation import recipe_rows
from co_settle_hf.demo.run import build_parser, recipe
from co_settle_hf.training import CoSettleTrainingArguments, parse_args
from co_settle_hf.training.arguments import command_line


def test_rows_change_one_field_each_and_skip_the_recipe_s_own():
    recipe = CoSettleTrainingArguments(model_name_or_path="vit", output_dir="out", learning_rate=2e-4,
                                       projection_init="released", backbone_precision="bf16")
    rows = recipe_rows(recipe)
    assert rows["demo recipe"] == {}
    assert "learning-rate 2e-4" not in rows and rows["learning-rate 5e-4"] == {"learning_rate": 5e-4}
    assert "projection-init released" not in rows and rows["projection-init identity"] == {"projection_init": "identity"}
    assert rows["resize short_side"] == {"resize": "short_side"} and "resize antialiased" not in rows
    assert all(len(changes) == 1 for name, changes in rows.items() if name != "demo recipe")


def test_the_demo_recipe_is_the_trainer_s_arguments_and_its_command_line_parses_back(tmp_path):
    args = build_parser().parse_args(["--steps", "40", "--batch-size", "4", "--no-pea"])
    run = recipe(args, "vit", tmp_path / "train", tmp_path / "out", 3, 64, "fp32", resize="short_side")
    assert (run.max_train_steps, run.per_device_train_batch_size, run.no_pea, run.seed, run.resize) == (40, 4, True, 3, "short_side")
    assert run.num_warmup_steps == 8 and run.feature_cache_pairs == 64
    assert parse_args(command_line(run)) == run  # the report's `co-settle train ...` line gives this very run


def test_ablation_reports_mean_and_spread_over_seeds_from_shared_caches(tmp_path):
    backbone = save_backbone("vit", tmp_path / "vit")
    out = tmp_path / "ablation"
    table = ablate(["--output-dir", str(out), "--backbone", str(backbone), "--steps", "2", "--batch-size", "2",
                    "--cache-pairs", "4", "--seed-list", "0", "1", "--backbone-precision", "bf16", "--num-sequences", "1", "--eval-size", "64", "112",
                    "--rows", "demo recipe", "learning-rate 5e-4", "resize short_side"])
    measured = json.loads((out / "ablation.json").read_text())
    runs = measured["runs"]
    assert len(runs) == 6 and {r["seed"] for r in runs} == {0, 1}
    # The lr row reads the recipe's cache file; the resize row needs its own views.
    built = {(r["row"], r["seed"]): r["cache_built"] for r in runs}
    assert built[("demo recipe", 0)] and not built[("learning-rate 5e-4", 0)] and built[("resize short_side", 0)]
    assert len(list((out / "caches").glob("*.safetensors"))) == 4  # (recipe, resize) x 2 seeds
    text = table.read_text()
    for row in measured["table"]:
        gains = [100 * (r["J&F"] - measured["base"]["bf16"]) for r in runs if r["row"] == row["row"]]
        cell = re.search(rf"^\| {re.escape(row['row'])} \| ([+-][0-9.]+) ± ([0-9.]+) \|", text, re.M)
        assert float(cell.group(1)) == round(sum(gains) / 2, 2)
        assert float(cell.group(2)) == round(abs(gains[0] - gains[1]) / 2**0.5, 2)  # sample std of two
    assert "GFLOP/s" in text
