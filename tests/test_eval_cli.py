"""`co-settle eval davis|jhmdb|vip|tradeoff` (and comparisons of several models) end to end: tiny backbone and adapter, tiny datasets on disk."""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from eval_fixtures import (
    DAVIS_H,
    DAVIS_T,
    DAVIS_W,
    davis_sequence_ids,
    tradeoff_videos,
    write_davis,
    write_jhmdb,
    write_tradeoff_clips,
    write_vip,
)
from eval_fixtures import eval_cli as cli_main
from PIL import Image
from tiny_backbones import save_backbone

from co_settle_hf import CoSettleModel
from co_settle_hf.errors import SettingsError
from co_settle_hf.evaluation import evaluate
from co_settle_hf.evaluation.cli import build_parser
from co_settle_hf.evaluation.compare import model_folder
from co_settle_hf.evaluation.davis import davis_palette, read_frames
from co_settle_hf.evaluation.plots import overlay_masks

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A tiny ViT (patch 16), an untrained adapter on it, and every dataset the CLI reads."""
    root = tmp_path_factory.mktemp("eval_cli")
    save_backbone("vit", root / "vit")
    CoSettleModel.from_backbone(str(root / "vit")).save_pretrained(root / "adapter")
    write_davis(root / "DAVIS")
    write_jhmdb(root / "jhmdb", "walk/clip_a", seed=0)
    write_jhmdb(root / "jhmdb", "run/clip_b", seed=3)
    write_vip(root / "VIP", "videos1", seed=0)
    write_vip(root / "VIP", "videos2", seed=5)
    (root / "VIP" / "lists").mkdir()
    (root / "VIP" / "lists" / "val_videos.txt").write_text("videos1\nvideos2\n")
    write_tradeoff_clips(root / "clips", tradeoff_videos(2))
    return root


def run_cli(task: str, model: Path, data: Path, out: Path, *extra: str) -> dict:
    return cli_main([task, "--model", str(model), "--data-root", str(data), "--output-dir", str(out), "--device", "cpu", *extra])


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def check_common_outputs(out: Path, rows: dict, printed: str, task: str, columns: list[str]) -> None:
    """Every command: the returned rows in results.json, the Markdown table in table.md and on stdout."""
    assert list(rows) == columns
    assert json.loads((out / "results.json").read_text()) == rows
    table = (out / "table.md").read_text()
    assert table.startswith(f"### {task}: ") and table.strip() in printed
    header = table.splitlines()[2]
    assert header == "| metric | " + " | ".join(columns) + " |"
    for metric, value in rows[columns[0]].items():
        cell = f"{value:.4f}" if isinstance(value, float) else str(value)
        assert f"| {metric} | {cell} |" in table


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


# ----------------------------------------------------------------------------- DAVIS


def test_davis_with_an_adapter(workspace, tmp_path, capsys):
    out = tmp_path / "davis"
    rows = run_cli("davis", workspace / "adapter", workspace / "DAVIS", out,
                   "--size", "64", "96", "--n-context", "3", "--radius", "4", "--video")
    model = str(workspace / "adapter")
    check_common_outputs(out, rows, capsys.readouterr().out, "davis", [model])

    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"] == {"n_context": 3, "radius": 4.0, "topk": 7, "temperature": 0.7, "size": [64, 96],
                                   "split": "val", "resolution": "480p", "neighbourhood": "circle",
                                   "pad_context": True, "restrict_first_frame": False, "norm_mask": False}
    assert summary["num_sequences"] == 2 and summary["num_objects"] == 4
    assert 0.0 <= summary["J&F-Mean"] <= 1.0
    assert rows[model]["J&F-Mean"] == summary["J&F-Mean"] and "per_object" not in rows[model]

    per_sequence = read_csv(out / "per-sequence_results-val.csv")
    assert per_sequence[0] == ["Sequence", "J-Mean", "F-Mean"]
    assert [r[0] for r in per_sequence[1:]] == ["alpha_1", "alpha_2", "beta_1", "beta_2"]
    for name, j_mean, f_mean in per_sequence[1:]:
        assert j_mean == f"{summary['per_object'][name]['J-Mean']:.3f}"
        assert f_mean == f"{summary['per_object'][name]['F-Mean']:.3f}"
    header, values = read_csv(out / "global_results-val.csv")
    assert header == ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
    assert values[0] == f"{summary['J&F-Mean']:.3f}"

    masks = {}
    for variant, name in enumerate(("alpha", "beta")):
        for t in range(DAVIS_T):
            with Image.open(out / name / f"{t:05d}.png") as png:
                assert png.mode == "P" and png.getpalette()[:9] == davis_palette().reshape(-1).tolist()[:9]
                ids = np.array(png)
            assert ids.shape == (DAVIS_H, DAVIS_W) and set(np.unique(ids)) <= {0, 1, 2}
            if t == 0:  # the given annotation comes back unchanged
                assert np.array_equal(ids, davis_sequence_ids(0, variant))
            masks[name, t] = ids

    # Pictures: one sheet of every sequence; the mp4 of the worst one, ground truth beside the prediction.
    with Image.open(out / "propagation_sheet.png") as sheet:
        assert sheet.format == "PNG" and sheet.width > 4 * DAVIS_W and np.array(sheet.convert("L")).std() > 0
        assert sheet.height > 2 * DAVIS_H  # a row per sequence
    scores = {name: np.mean([(summary["per_object"][f"{name}_{i}"]["J-Mean"] + summary["per_object"][f"{name}_{i}"]["F-Mean"]) / 2
                             for i in (1, 2)]) for name in ("alpha", "beta")}
    worst = min(scores, key=scores.get)
    assert [p.name for p in out.glob("*_propagation.mp4")] == [f"{worst}_propagation.mp4"]
    video = decode(out / f"{worst}_propagation.mp4")
    scale = -(-256 // DAVIS_W)  # small frames are shown enlarged, so the labels fit
    assert video.shape == (DAVIS_T, 18 + DAVIS_H * scale, 2 * DAVIS_W * scale, 3)
    frames = read_frames(sorted((workspace / "DAVIS" / "JPEGImages" / "480p" / worst).glob("*.jpg")))
    grow = lambda a: np.asarray(a).repeat(scale, axis=1).repeat(scale, axis=2)  # noqa: E731
    variant = ("alpha", "beta").index(worst)
    truth = overlay_masks(grow(frames), grow(np.stack([davis_sequence_ids(t, variant) for t in range(DAVIS_T)])))
    predicted = overlay_masks(grow(frames), grow(np.stack([masks[worst, t] for t in range(DAVIS_T)])))
    width = DAVIS_W * scale
    for panel, expected in ((0, truth), (1, predicted)):
        shown = video[:, 18:, panel * width:(panel + 1) * width].astype(int)
        error = np.abs(shown - expected).mean(axis=(1, 2, 3))
        assert (error < 8).all(), error  # lossy codec, but the frames are those overlays, in order
    first_error = np.abs(video[0, 18:, :width].astype(int) - truth[0]).mean()
    assert np.abs(video[0, 18:, :width].astype(int) - truth[-1]).mean() > first_error  # frames in order
    assert video[:, :18].mean() < 60  # the label band: white text on black
    with Image.open(out / "alpha_features_pca.png") as pca:
        assert pca.format == "PNG" and pca.width > 2 * pca.height


def test_davis_with_a_bare_backbone_and_chosen_sequences(workspace, tmp_path, capsys):
    out = tmp_path / "davis"
    rows = run_cli("davis", workspace / "vit", workspace / "DAVIS", out, "--size", "64", "96", "--sequences", "beta",
                   "--topk", "3")
    check_common_outputs(out, rows, capsys.readouterr().out, "davis", [str(workspace / "vit")])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_sequences"] == 1 and summary["settings"]["topk"] == 3
    assert [r[0] for r in read_csv(out / "per-sequence_results-val.csv")[1:]] == ["beta_1", "beta_2"]
    assert (out / "propagation_sheet.png").is_file() and not (out / "alpha").exists()
    assert not list(out.glob("*.mp4"))  # only with --video
    assert not list(out.glob("*_features_pca.png"))  # a bare backbone has no projection to show


# ----------------------------------------------------------------------------- JHMDB and VIP


def test_jhmdb_with_an_adapter(workspace, tmp_path, capsys):
    out = tmp_path / "jhmdb"
    rows = run_cli("jhmdb", workspace / "adapter", workspace / "jhmdb", out, "--size", "64", "64")
    model = str(workspace / "adapter")
    check_common_outputs(out, rows, capsys.readouterr().out, "jhmdb", [model])
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["PCK@0.1"] <= summary["PCK@0.2"] <= 1.0
    assert summary["num_videos"] == 2 and summary["num_scored"] == 2 * 4 * 15
    assert summary["settings"]["size"] == [64, 64] and summary["settings"]["topk"] == 7
    assert rows[model]["PCK@0.1"] == summary["PCK@0.1"] and rows[model]["PCK@0.2"] == summary["PCK@0.2"]
    per_video = read_csv(out / "per-video_results.csv")
    assert per_video[0] == ["video", "frames", "PCK@0.1", "PCK@0.2"]
    assert sorted(r[0] for r in per_video[1:]) == ["run/clip_b", "walk/clip_a"]
    assert all(r[1] == "5" and 0.0 <= float(r[2]) <= float(r[3]) <= 1.0 for r in per_video[1:])


def test_jhmdb_with_a_bare_backbone_and_a_list_file(workspace, tmp_path):
    (tmp_path / "list.txt").write_text("run/clip_b\n")
    out = tmp_path / "jhmdb"
    rows = run_cli("jhmdb", workspace / "vit", workspace / "jhmdb", out, "--size", "48", "80",
                   "--list-file", str(tmp_path / "list.txt"), "--n-context", "2")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_videos"] == 1 and summary["settings"]["size"] == [48, 80] and summary["settings"]["n_context"] == 2
    assert [r[0] for r in read_csv(out / "per-video_results.csv")[1:]] == ["run/clip_b"]
    assert rows[str(workspace / "vit")]["num_scored"] == 4 * 15


@pytest.mark.parametrize("model", ["adapter", "vit"])
def test_vip(workspace, tmp_path, capsys, model):
    out = tmp_path / "vip"
    rows = run_cli("vip", workspace / model, workspace / "VIP", out, "--long-side", "64")
    check_common_outputs(out, rows, capsys.readouterr().out, "vip", [str(workspace / model)])
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["mIoU"] <= 1.0 and summary["num_videos"] == 2 and summary["num_frames"] == 8
    assert summary["settings"]["topk"] == 10 and summary["settings"]["input_sizes"] == [[32, 64]]
    assert rows[str(workspace / model)]["mIoU"] == summary["mIoU"]
    confusion = read_csv(out / "confusion_matrix.csv")
    assert len(confusion) == 21 and confusion[0][1] == "background" and all(len(r) == 21 for r in confusion)
    counts = np.array([[int(v) for v in r[1:]] for r in confusion[1:]])
    void_pixels = 2 * 4 * 40 * 8  # the void column of every frame is not scored
    assert counts.sum() == 2 * 4 * 40 * 64 - void_pixels
    assert [r[0] for r in read_csv(out / "per-video_results.csv")[1:]] == ["videos1", "videos2"]


def test_vip_through_the_console_entry_point(workspace, tmp_path):
    """`python -m co_settle_hf.cli eval vip ...` in a fresh process gives what the in-process call gives."""
    out = tmp_path / "subprocess"
    command = [sys.executable, "-m", "co_settle_hf.cli", "eval", "vip", "--model", str(workspace / "vit"),
               "--data-root", str(workspace / "VIP"), "--output-dir", str(out), "--long-side", "64", "--device", "cpu"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"### vip: {workspace / 'vit'}" in result.stdout and "| mIoU |" in result.stdout
    in_process = run_cli("vip", workspace / "vit", workspace / "VIP", tmp_path / "in_process", "--long-side", "64")
    from_subprocess = json.loads((out / "results.json").read_text())
    for key in ("mIoU", "pixel_accuracy", "num_frames"):
        assert from_subprocess[str(workspace / "vit")][key] == pytest.approx(in_process[str(workspace / "vit")][key], abs=1e-6)
    assert (out / "table.md").is_file() and (out / "confusion_matrix.csv").is_file()


# ----------------------------------------------------------------------------- trade-off


def test_tradeoff_adapter_against_its_base(workspace, tmp_path, capsys):
    out = tmp_path / "tradeoff"
    rows = run_cli("tradeoff", workspace / "adapter", workspace / "clips", out)
    check_common_outputs(out, rows, capsys.readouterr().out, "tradeoff", ["adapted", "base"])
    metrics = {"d_intra", "d_inter", "tradeoff_margin", "cycle_accuracy", "effective_rank", "num_videos"}
    extras = {f"{key}_{share}" for key in ("d_intra", "d_inter", "tradeoff_margin") for share in (95, 90)}
    for row in rows.values():
        assert set(row) == metrics | extras and row["num_videos"] == 2
        assert row["tradeoff_margin"] == pytest.approx(row["d_inter"] - 0.3 * row["d_intra"])
        assert row["tradeoff_margin_90"] == pytest.approx(row["d_inter_90"] - 0.3 * row["d_intra_90"])
        assert row["d_inter_90"] > row["d_inter_95"] > row["d_inter"]  # smaller diameters, larger ratios
    assert rows["adapted"]["d_intra"] != rows["base"]["d_intra"]  # two different encoders were measured
    with Image.open(out / "tradeoff.png") as plot:
        assert plot.format == "PNG" and np.array(plot.convert("L")).std() > 0

    # The "base" row is the bare backbone, measured on its own the same way.
    bare = run_cli("tradeoff", workspace / "vit", workspace / "clips", tmp_path / "bare", "--num-frames", "9")
    assert list(bare) == ["model"]
    assert bare["model"] == pytest.approx(rows["base"], rel=1e-5)
    assert (tmp_path / "bare" / "tradeoff.png").is_file()


# ----------------------------------------------------------------------------- bad input


def test_missing_data_root_is_named(workspace, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["davis", "--model", str(workspace / "vit"), "--output-dir", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    assert "--data-root" in capsys.readouterr().err
    ghost = tmp_path / "no_such_dataset"
    with pytest.raises(SystemExit, match=re.escape(f"--data-root {ghost} does not exist")):
        run_cli("davis", workspace / "vit", ghost, tmp_path / "o")


def test_missing_model_is_named(workspace, tmp_path):
    ghost = tmp_path / "no_such_model"
    with pytest.raises(SystemExit, match=re.escape(f"--model {ghost}: not an adapter or backbone")):
        run_cli("jhmdb", ghost, workspace / "jhmdb", tmp_path / "o")


# ----------------------------------------------------------------------------- protocols and flags


def test_dino_protocol_and_flags_reach_the_summary(workspace, tmp_path):
    run_cli("davis", workspace / "vit", workspace / "DAVIS", tmp_path / "dino", "--size", "64", "96",
            "--protocol", "dino")
    settings = json.loads((tmp_path / "dino" / "summary.json").read_text())["settings"]
    assert {k: settings[k] for k in ("topk", "temperature", "n_context", "radius", "neighbourhood", "pad_context",
                                     "restrict_first_frame", "norm_mask")} == {
        "topk": 5, "temperature": 0.1, "n_context": 7, "radius": 12.0, "neighbourhood": "square",
        "pad_context": False, "restrict_first_frame": True, "norm_mask": True}
    rows = run_cli("jhmdb", workspace / "vit", workspace / "jhmdb", tmp_path / "jhmdb", "--size", "64", "64",
                   "--pck-thresholds", "0.1", "0.2", "0.3", "0.4", "0.5", "--no-count-lost-as-miss",
                   "--include-first-frame", "--mapping", "centred", "--temperature", "0.5")
    summary = json.loads((tmp_path / "jhmdb" / "summary.json").read_text())
    assert summary["settings"]["mapping"] == "centred" and summary["settings"]["temperature"] == 0.5
    assert summary["settings"]["count_lost_as_miss"] is False and summary["settings"]["include_first_frame"] is True
    assert summary["num_scored"] == 2 * 5 * 15  # frame 0 scored too
    assert [k for k in rows[str(workspace / "vit")] if k.startswith("PCK")] == [f"PCK@{a}" for a in
                                                                               ("0.1", "0.2", "0.3", "0.4", "0.5")]


def test_tradeoff_reads_the_authors_sample_list(workspace, tmp_path):
    listing = tmp_path / "samples.csv"
    listing.write_text("data/Kinetics-400/frames/val/clip1\ndata/Kinetics-400/frames/val/clip0\n")  # their prefix
    rows = run_cli("tradeoff", workspace / "vit", workspace / "clips", tmp_path / "csv", "--sample_csv", str(listing),
                   "--num-frames", "8")
    assert rows["model"]["num_videos"] == 2
    listing.write_text("clip0\nnot_a_clip\n")
    with pytest.raises(SystemExit, match=re.escape(f"{listing}, line 2: not_a_clip not found")):
        run_cli("tradeoff", workspace / "vit", workspace / "clips", tmp_path / "bad", "--sample_csv", str(listing))


def test_errors_name_what_a_video_needs_not_a_traceback(workspace, tmp_path):
    with pytest.raises(SystemExit, match=r"has 5 frames; the trade-off needs at least 8"):
        run_cli("tradeoff", workspace / "vit", workspace / "clips", tmp_path / "short", "--num-frames", "5")
    assert not (tmp_path / "short").exists()
    with pytest.raises(SystemExit, match="topk must be >= 1"):
        run_cli("davis", workspace / "vit", workspace / "DAVIS", tmp_path / "k", "--topk", "0")
    for text in build_parser().format_help().split():
        assert "SPEC" not in text


def _task_parsers() -> dict:
    (tasks,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return tasks.choices


def test_every_eval_option_of_every_task_is_described():
    parsers = _task_parsers()
    assert set(parsers) == {"davis", "jhmdb", "vip", "tapvid", "retrieval", "tradeoff"}
    for task, parser in parsers.items():
        for action in parser._actions:
            assert action.help, (task, action.option_strings)


def test_each_task_takes_only_its_own_flags_and_the_shared_spellings(tmp_path, capsys):
    common = ["--model", "m", "--data-root", str(tmp_path)]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["davis", *common, "--output-dir", "o", "--pck-thresholds", "0.2"])
    assert "unrecognized arguments: --pck-thresholds" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["jhmdb", *common, "--output-dir", "o", "--query-mode", "first"])
    assert "unrecognized arguments: --query-mode" in capsys.readouterr().err
    for output, overwrite in [("--output-dir", "--overwrite"), ("--output_dir", "--overwrite_output_dir"),
                              ("--output", "--overwrite-output-dir")]:
        args = build_parser().parse_args(["vip", *common, output, "o", overwrite, "--backbone_precision", "bf16"])
        assert (args.output_dir, args.overwrite, args.backbone_precision) == ("o", True, "bf16")
    defaults = {task: parser.parse_args([*common, "--output-dir", "o"]) for task, parser in _task_parsers().items()}
    assert tuple(defaults["davis"].size) == (480, 880)
    assert tuple(defaults["jhmdb"].size) == (320, 320) and tuple(defaults["tapvid"].size) == (448, 448)
    assert defaults["jhmdb"].include_first_frame is False and defaults["vip"].include_first_frame is True
    assert defaults["retrieval"].num_frames == 8 and defaults["tradeoff"].num_frames is None


def test_evaluate_from_python_equals_the_command_and_refuses_another_tasks_setting(workspace, tmp_path):
    model, data = str(workspace / "vit"), workspace / "DAVIS"
    rows = evaluate("davis", [model], data, tmp_path / "api", size=(64, 96), n_context=3, radius=4, device="cpu")
    command = cli_main(["davis", "--model", model, "--data-root", str(data), "--output-dir", str(tmp_path / "cli"),
                        "--size", "64", "96", "--n-context", "3", "--radius", "4", "--device", "cpu"])
    assert rows == command and 0 <= rows[model]["J&F-Mean"] <= 1
    with pytest.raises(SettingsError, match="eval davis has no setting pck_thresholds"):
        evaluate("davis", [model], data, tmp_path / "refused", pck_thresholds=[0.2])
    with pytest.raises(SettingsError, match="no evaluation task 'kinetics'"):
        evaluate("kinetics", [model], data, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


# ----------------------------------------------------------------------------- comparisons of several models

COMPARE_ARGS = ["--size", "64", "96", "--n-context", "3", "--radius", "4", "--device", "cpu"]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_two_model_davis_comparison_equals_two_single_runs(workspace, tmp_path):
    models = [str(workspace / "vit"), str(workspace / "adapter")]
    data = ["--data-root", str(workspace / "DAVIS")]
    both = cli_main(["davis", "--model", models[0], "--model", models[1], *data, "--output-dir", str(tmp_path / "both"),
                     "--feature-cache", str(tmp_path / "cache"), *COMPARE_ARGS])
    singles = [cli_main(["davis", "--model", m, *data, "--output-dir", str(tmp_path / f"one{i}"), *COMPARE_ARGS])
               for i, m in enumerate(models)]
    assert both == {**singles[0], **singles[1]}
    # The adapter is on the same backbone: one backbone pass per sequence serves both models.
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 2
    timing = json.loads((tmp_path / "both" / model_folder(1, models[1]) / "timing.json").read_text())
    assert timing["cache_hits"] == 2 and timing["cache_misses"] == 0
    table = _rows(tmp_path / "both" / "comparison.csv")
    assert [r["item"] for r in table] == ["mean (J&F-Mean)", "alpha_1", "alpha_2", "beta_1", "beta_2"]
    for i, model in enumerate(models):
        single = tmp_path / f"one{i}"
        folder = tmp_path / "both" / model_folder(i, model)
        assert (folder / "per-sequence_results-val.csv").read_bytes() == (single / "per-sequence_results-val.csv").read_bytes()
        per_object = {r["Sequence"]: (float(r["J-Mean"]) + float(r["F-Mean"])) / 2
                      for r in _rows(single / "per-sequence_results-val.csv")}
        column = f"J&F {model}"
        assert table[0][column] == f"{json.loads((single / 'summary.json').read_text())['J&F-Mean']:.4f}"
        assert {r["item"]: r[column] for r in table[1:]} == {k: f"{v:.4f}" for k, v in per_object.items()}
    for row in table:
        delta = float(row[f"J&F {models[1]}"]) - float(row[f"J&F {models[0]}"])
        assert float(row[f"delta {models[1]}"]) == pytest.approx(delta, abs=1.5e-4)
    with Image.open(tmp_path / "both" / "propagation_sheet.png") as sheet:  # ground truth + 2 models, 2 frames
        assert sheet.width == 6 * 240
    markdown = (tmp_path / "both" / "comparison.md").read_text()
    assert markdown.startswith(f"### davis: {models[0]} vs {models[1]}") and markdown.count("\n| ") == 6


def test_comparison_refuses_what_it_cannot_compare(workspace, tmp_path):
    common = ["--data-root", str(workspace / "DAVIS"), "--output-dir", str(tmp_path / "x"), *COMPARE_ARGS]
    a, b = str(workspace / "vit"), str(workspace / "adapter")
    with pytest.raises(SystemExit, match="names a model twice"):
        cli_main(["davis", "--model", a, "--model", a, *common])
    with pytest.raises(SystemExit, match="no sweep"):
        cli_main(["davis", "--model", a, "--model", b, "--topk", "3", "5", *common])
    with pytest.raises(SystemExit, match="give one --model"):
        cli_main(["tradeoff", "--model", a, "--model", b, *common[:4], "--device", "cpu"])
    assert not (tmp_path / "x").exists()
