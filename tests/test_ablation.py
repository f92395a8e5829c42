"""`co-settle ablate` end to end on a tiny backbone: rows over seeds, shared caches, a table of measured gains."""

from __future__ import annotations

import json
import re

from tiny_backbones import save_backbone

from co_settle_hf.demo.ablation import main as ablate
from co_settle_hf.demo.ablation import recipe_rows


def test_rows_change_one_choice_each_and_skip_the_recipe_s_own():
    rows = recipe_rows(["--learning-rate", "2e-4", "--projection-init", "released", "--backbone-precision", "bf16"])
    assert rows["demo recipe"] == []
    assert "learning-rate 2e-4" not in rows and rows["learning-rate 5e-4"] == ["--learning-rate", "5e-4"]
    assert "projection-init released" not in rows and rows["projection-init identity"] == ["--projection-init", "identity"]
    assert rows["resize short_side"] == ["--resize", "short_side"] and "resize antialiased" not in rows
    assert all(len(flags) == 2 for name, flags in rows.items() if name != "demo recipe")


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
