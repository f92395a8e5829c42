"""`co-settle eval tapvid` end to end: tiny ViT and adapter, a tiny TAP-Vid set as the published pickle and as .npz."""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from eval_fixtures import eval_cli as cli_main
from eval_fixtures import tapvid_video, write_tapvid_npz, write_tapvid_pickle
from PIL import Image
from tiny_backbones import save_backbone

from co_settle_hf import CoSettleModel
from co_settle_hf.evaluation.compare import model_folder
from co_settle_hf.evaluation.tapvid_metrics import METRIC_KEYS, METRIC_SIZE, tapvid_metrics

SMALL = ["--size", "64", "64", "--device", "cpu"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tapvid_cli")
    save_backbone("vit", root / "vit")
    CoSettleModel.from_backbone(str(root / "vit")).save_pretrained(root / "adapter")
    write_tapvid_pickle(root / "tapvid_davis.pkl")
    write_tapvid_npz(root / "npz")
    return root


def run(workspace: Path, data: str, out: Path, *extra: str, models=("adapter",)) -> dict:
    names = [arg for m in models for arg in ("--model", str(workspace / m))]
    return cli_main(["tapvid", *names, "--data-root", str(workspace / data), "--output-dir", str(out), *SMALL, *extra])


def test_pickle_and_npz_give_the_same_results_and_the_files_agree(workspace, tmp_path, capsys):
    rows = run(workspace, "tapvid_davis.pkl", tmp_path / "pkl")
    printed = capsys.readouterr().out
    assert run(workspace, "npz", tmp_path / "npz") == {str(workspace / "adapter"): rows[str(workspace / "adapter")]}
    row = rows[str(workspace / "adapter")]
    assert set(METRIC_KEYS) <= set(row) and row["num_videos"] == 2
    summary = json.loads((tmp_path / "pkl" / "summary.json").read_text())
    assert summary["settings"] == {"window": 5, "temperature": 0.05, "occlusion_threshold": 0.5, "query_mode": "first",
                                   "query_stride": 5, "size": [64, 64], "metric_size": 256}
    assert "| average_jaccard |" in (tmp_path / "pkl" / "table.md").read_text() and "### tapvid:" in printed
    with (tmp_path / "pkl" / "per-video_results.csv").open(newline="") as handle:
        per_video = list(csv.DictReader(handle))
    assert [r["video"] for r in per_video] == ["bear", "cows"]
    # The written predictions rescore to the per-video numbers, and the summary is their mean.
    for seed, r in enumerate(per_video):
        truth, p = tapvid_video(seed), np.load(tmp_path / "pkl" / f"{r['video']}.npz")
        ids = p["track_ids"]
        metrics = tapvid_metrics(p["queries"][:, 0], truth["occluded"][ids], truth["points"][ids] * METRIC_SIZE,
                                 p["occluded"], p["tracks"].astype(np.float64) * METRIC_SIZE, "first")
        assert float(r["average_jaccard"]) == pytest.approx(metrics["average_jaccard"], abs=1e-4)
    assert row["average_jaccard"] == pytest.approx(np.mean([float(r["average_jaccard"]) for r in per_video]), abs=1e-4)
    with Image.open(tmp_path / "pkl" / "tracks_bear.png") as picture:
        assert picture.width > 400 and picture.height > 200


def test_strided_mode_and_tracker_knobs_reach_the_summary(workspace, tmp_path):
    run(workspace, "npz", tmp_path / "s", "--query-mode", "strided", "--window", "3", "--match-temperature", "0.1",
        "--occlusion-threshold", "-1", "--videos", "cows")
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["settings"]["query_mode"] == "strided" and summary["settings"]["window"] == 3
    assert summary["num_videos"] == 1 and summary["num_queries"] > 24  # several queries per track
    assert not np.load(tmp_path / "s" / "cows.npz")["occluded"].any()  # no similarity is below -1


def test_base_and_adapter_compared_from_one_backbone_pass(workspace, tmp_path):
    rows = run(workspace, "tapvid_davis.pkl", tmp_path / "both", "--feature-cache", str(tmp_path / "cache"),
               models=("vit", "adapter"))
    assert len(rows) == 2
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 2  # one entry per video, not per model
    timing = json.loads((tmp_path / "both" / model_folder(1, str(workspace / "adapter")) / "timing.json").read_text())
    assert timing["cache_hits"] == 2 and timing["cache_misses"] == 0
    with (tmp_path / "both" / "comparison.csv").open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["item"] for r in table] == ["mean (average_jaccard)", "bear", "cows"]
    with Image.open(tmp_path / "both" / "tracks_bear.png") as both, \
            Image.open(tmp_path / "both" / model_folder(0, str(workspace / "vit")) / "tracks_bear.png") as one:
        assert both.height > one.height  # ground truth and two models against ground truth and one


def test_a_pickle_with_a_foreign_global_is_refused_naming_it(workspace, tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return (print, ("ran while unpickling",))

    evil = tmp_path / "evil" / "tapvid_davis.pkl"
    evil.parent.mkdir()
    evil.write_bytes(pickle.dumps({"bear": {**tapvid_video(), "note": Payload()}}))
    with pytest.raises(SystemExit, match=r"evil/tapvid_davis.pkl: the pickle names builtins.print"):
        cli_main(["tapvid", "--model", str(workspace / "vit"), "--data-root", str(evil), "--output-dir",
                  str(tmp_path / "out"), *SMALL])
    assert "ran while unpickling" not in capsys.readouterr().out and not (tmp_path / "out").exists()
