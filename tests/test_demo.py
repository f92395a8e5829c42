"""`co-settle demo` end to end on a tiny backbone (the real footage, trainer, evaluation and report)."""

from __future__ import annotations

import json
import re

from tiny_backbones import save_backbone

from co_settle_hf import CoSettleModel
from co_settle_hf.demo.run import main as demo


def test_demo_writes_a_report_of_measured_numbers(tmp_path):
    backbone = save_backbone("vit", tmp_path / "vit")
    out = tmp_path / "demo"
    report = demo(["--output-dir", str(out), "--backbone", str(backbone), "--steps", "3", "--batch-size", "2",
                   "--num-sequences", "1", "--eval-size", "64", "112"])
    text = report.read_text()
    measured = json.loads((out / "report.json").read_text())
    # Every table cell is a number from this run's result files.
    rows = dict(re.findall(r"^\| (J&F \(propagation benchmark\)) \| ([0-9.]+) \|", text, re.M))
    assert float(rows["J&F (propagation benchmark)"]) == round(measured["davis"]["base"]["J&F-Mean"], 4)
    assert f"{measured['tradeoff']['adapted']['d_intra']:.4f}" in text
    assert "Control: " in text and "bikes_shot" in text and "carphone" in text
    for picture in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (out / picture).is_file(), picture
    pictures = re.findall(r"\]\(([^)]+)\)", text)
    assert any("tradeoff.png" in p for p in pictures)
    assert "eval/davis/propagation_sheet.png" in pictures and "eval/retrieval/model2-adapted/confusion.png" in pictures
    # Retrieval: windows of the held-out clips, base and adapted in one comparison run.
    retrieval = dict(re.findall(r"^\| clip retrieval (R@1) [^|]*\| ([0-9.]+) \|", text, re.M))
    assert float(retrieval["R@1"]) == round(measured["retrieval"]["base"]["R@1"], 4)
    split = json.loads((out / "eval" / "retrieval" / "model2-adapted" / "retrieval.json").read_text())
    assert split["gallery"] == 13 and split["queries"] == 7 and split["classes"] == 2  # carphone 120, bunny tail 44
    assert (out / "eval" / "retrieval" / "comparison.md").is_file()
    # Point tracking on the benchmark's object points: base, control and adapter, numbers from the run's files.
    cells = re.findall(r"^\| tracking AJ [^|]*\| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \|", text, re.M)
    assert [float(v) for v in cells[0]] == [round(measured["tracking"][m]["average_jaccard"], 4)
                                            for m in ("base", "untrained", "adapted")]
    assert "eval/tapvid/tracks_000-clip0.png" in pictures and (out / "eval" / "tapvid" / "comparison.md").is_file()
    # Held-out clips are never trained on.
    assert not set(measured["training"]) & {"carphone", "bigbuckbunny_tail"}
    assert sorted(p.name for p in (out / "data" / "train").iterdir()) == [
        "bigbuckbunny_head", "bikes_shot0", "bikes_shot1", "bikes_shot2", "bikes_shot3", "bikes_shot4"
    ]
    assert CoSettleModel.from_pretrained(out / "adapter").config.base_model_type == "vit"
    # The run was sized to the budget from measured speed, trained on cached views, and says so.
    plan = measured["plan"]
    assert 64 <= plan["cache_pairs"] <= 256 and measured["training"]["feature_cache_pairs"] == plan["cache_pairs"]
    assert "Sized to `--time-budget 600` s" in text and f"a cache of {plan['cache_pairs']} pairs" in text
    if plan["seeds"] == 2:  # the seed spread is reported when a second seed fits, else the report says single seed
        assert "Over 2 training seeds the gain is" in text and (out / "adapter_seed1" / "model.safetensors").is_file()
    else:
        assert "single training seed" in text
    card = (out / "adapter" / "README.md").read_text()
    assert f"{measured['davis']['adapted']['J&F-Mean']:.4f}" in card and "global_batch_size" in card
