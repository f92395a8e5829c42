"""The trainer as transformers users expect it: one argument schema, validation, rotation, long videos, a Python API."""

from __future__ import annotations

import ast
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from trainer_fixtures import run, workspace  # noqa: F401 (a fixture)
from video_factory import index_coded_frames, read_frame_index, write_video

from co_settle_hf import CoSettleConfig, CoSettleModel
from co_settle_hf.cli import main as cli
from co_settle_hf.data import sample_generator, sample_pair_indices
from co_settle_hf.errors import DataSourceError, SettingsError
from co_settle_hf.training import CoSettleTrainingArguments, parse_args, train

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- one argument schema
def test_both_spellings_and_settings_files_parse_the_same(tmp_path):
    underscores = ["--model_name_or_path", "vit", "--train_dir", "clips", "--output_dir", "out",
                   "--per_device_train_batch_size", "8", "--cycle_temperature", "0.05", "--no_pea", "--lr_scheduler_type", "linear"]
    hyphens = [re.sub(r"^--(\w+)", lambda m: "--" + m.group(1).replace("_", "-"), a) for a in underscores]
    legacy = ["--backbone", "vit", *underscores[2:]]
    settings = {"model_name_or_path": "vit", "train_dir": "clips", "output_dir": "out", "per_device_train_batch_size": 8,
                "cycle_temperature": 0.05, "no_pea": True, "lr_scheduler_type": "linear"}
    (tmp_path / "run.yaml").write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in settings.items()))
    (tmp_path / "run.json").write_text(json.dumps(settings))
    parsed = [parse_args(a) for a in (underscores, hyphens, legacy, [str(tmp_path / "run.yaml")], [str(tmp_path / "run.json")])]
    assert hyphens[6] == "--per-device-train-batch-size"
    assert all(p == parsed[0] for p in parsed[1:])
    assert parsed[0].per_device_train_batch_size == 8 and parsed[0].no_pea and parsed[0].cycle_temperature == 0.05
    assert parse_args([str(tmp_path / "run.yaml"), "--seed", "3"]).seed == 3  # flags after the file override it
    assert parsed[0] == CoSettleTrainingArguments(**settings)  # the Python API takes the same fields


def test_method_defaults_come_from_the_config(capsys):
    args = CoSettleTrainingArguments(model_name_or_path="vit", output_dir="out")
    config = CoSettleConfig()
    assert (args.projection, args.image_size, args.objective) == (config.projection, config.image_size, config.objective)
    assert CoSettleTrainingArguments(model_name_or_path="vit", output_dir="out", no_pea=True).objective.pea_alpha is None
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "tau of the cycle affinities" in help_text and "--backbone" in help_text  # the config's own words


def test_a_settings_file_trains_through_the_command_line(workspace, tmp_path):
    config = {"model_name_or_path": str(workspace / "vit"), "train_dir": str(workspace / "videos"), "output_dir": str(tmp_path / "out"),
              "max_train_steps": 2, "image_size": 64, "learning_rate": 1e-3, "per_device_train_batch_size": 2, "cpu": True}
    (tmp_path / "run.yaml").write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in config.items()))
    cli(["train", str(tmp_path / "run.yaml")])
    assert json.loads((tmp_path / "out" / "training_summary.json").read_text())["steps"] == 2


# ---------------------------------------------------------------- the schedule
def previous_schedule(step: int, warmup: int, total: int) -> float:
    """The factor the trainer computed itself before it used get_scheduler."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def released_schedule(step: int, warmup: int, total: int) -> float:
    """The released code's per-iteration rule (util/lr_sched.py, min_lr 0), in optimizer steps."""
    return step / warmup if step < warmup else 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def test_cosine_is_the_published_schedule_step_for_step(workspace, tmp_path):
    output = run(workspace, tmp_path / "out", "--num_warmup_steps", "3", steps=10)
    logged = [r["lr"] for r in map(json.loads, (output / "train_log.jsonl").read_text().splitlines())]
    # The log records the rate set for the next step: factor(s) after step s.
    for step, lr in enumerate(logged, start=1):
        assert lr == pytest.approx(1e-3 * released_schedule(step, 3, 10), abs=1e-12), step
        if step >= 3:  # after warm-up the old schedule is the same, step for step
            assert lr == pytest.approx(1e-3 * previous_schedule(step, 3, 10), abs=1e-12), step
        else:  # in warm-up the old one ran one step ahead (it never took a step at lr 0)
            assert lr == pytest.approx(1e-3 * previous_schedule(step - 1, 3, 10), abs=1e-12), step


# ---------------------------------------------------------------- validation, best, rotation, caps
def test_validation_metrics_reach_tensorboard_and_the_best_adapter_is_kept(workspace, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    output = run(workspace, tmp_path / "out", "--validation_dir", str(workspace / "frames"), "--eval_steps", "2", "--save_best",
                 "--with_tracking", steps=4)
    scalars: dict[str, list] = {}
    for events in output.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(accumulator.Scalars(tag))
    assert [e.step for e in scalars["eval/cycle_accuracy"]] == [2, 4] and [e.step for e in scalars["eval/loss"]] == [2, 4]
    logged = [r for r in map(json.loads, (output / "train_log.jsonl").read_text().splitlines()) if "eval_loss" in r]
    assert [r["eval_pairs"] for r in logged] == [6, 6]
    assert [e.value for e in scalars["eval/loss"]] == pytest.approx([r["eval_loss"] for r in logged])
    summary = json.loads((output / "training_summary.json").read_text())
    best = max(logged, key=lambda r: r["eval_cycle_accuracy"])
    assert summary["best"] == {"step": best["step"], "eval_cycle_accuracy": best["eval_cycle_accuracy"]}
    assert CoSettleModel.from_pretrained(output / "best").config.base_model_type == "vit"


def test_validation_split_of_a_dataset(workspace, tmp_path):
    import datasets

    videos = [p.read_bytes() for p in sorted((workspace / "videos").rglob("*.mp4"))]
    splits = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"video": videos[:4]}),
                                   "validation": datasets.Dataset.from_dict({"video": videos[4:]})})
    splits.save_to_disk(tmp_path / "ds")
    output = run(workspace, tmp_path / "out", "--validation_split", "validation", "--eval_steps", "1",
                 source=("--dataset_name", str(tmp_path / "ds")), steps=2)
    logged = [r for r in map(json.loads, (output / "train_log.jsonl").read_text().splitlines()) if "eval_pairs" in r]
    assert [(r["step"], r["eval_pairs"]) for r in logged] == [(1, 2), (2, 2)]
    with pytest.raises(DataSourceError, match="--validation_split nope: split 'nope' not in dataset"):
        run(workspace, tmp_path / "bad", "--validation_split", "nope", source=("--dataset_name", str(tmp_path / "ds")), steps=2)


def test_validation_sees_neither_augmentation_nor_pea(workspace, tmp_path):
    # Same adapter, different training seeds for PEA and crops: validation must not move with them.
    args = ("--validation_dir", str(workspace / "frames"), "--learning_rate", "1e-12")
    first = run(workspace, tmp_path / "a", *args, "--seed", "1", steps=1)
    second = run(workspace, tmp_path / "b", *args, "--seed", "1", "--pea_alpha", "3", "--pea_mode", "edge", steps=1)
    loss = [json.loads((out / "training_summary.json").read_text())["eval_loss"] for out in (first, second)]
    assert loss[0] == pytest.approx(loss[1], abs=1e-6)


def test_save_total_limit_keeps_two_and_latest_still_resumes_exactly(workspace, tmp_path):
    full = run(workspace, tmp_path / "full", "--checkpointing_steps", "1", "--save_total_limit", "2", steps=5)
    assert sorted(p.name for p in (full / "checkpoints").iterdir()) == ["step_4", "step_5"]
    interrupted = tmp_path / "interrupted"
    shutil.copytree(full / "checkpoints" / "step_4", interrupted / "checkpoints" / "step_4")
    resumed = run(workspace, interrupted, "--checkpointing_steps", "1", "--save_total_limit", "2",
                  "--resume_from_checkpoint", "latest", steps=5)
    expected, got = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_max_train_samples_caps_every_epoch(workspace, tmp_path):
    output = run(workspace, tmp_path / "out", "--max_train_samples", "4", "--num_train_epochs", "2", steps=0)
    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["steps"] == 4 and summary["epochs"] == 2 and summary["samples_seen"] == 8  # 2 batches of 2, twice


# ---------------------------------------------------------------- long videos become clips
@pytest.fixture(scope="module")
def long_videos(tmp_path_factory) -> Path:
    """Four 6-second videos (10 fps) whose frames carry their index as stripes."""
    root = tmp_path_factory.mktemp("long")
    for index in range(4):
        write_video(root / f"long{index}.mp4", index_coded_frames(60 + 10 * index, 64, 64))
    return root


def test_long_videos_train_as_many_clips_with_pairs_inside_one_clip(workspace, long_videos, tmp_path):
    with pytest.raises(SettingsError, match=r"4 clips cannot fill one batch of 8.*--clip_seconds.*--clip_repeats.*--per_device_train_batch_size"):
        run(workspace, tmp_path / "whole", "--per_device_train_batch_size", "8", source=("--train_dir", str(long_videos)))
    output = run(workspace, tmp_path / "out", "--per_device_train_batch_size", "8", "--clip_seconds", "1.5",
                 "--num_train_epochs", "2", source=("--train_dir", str(long_videos)), steps=0)
    summary = json.loads((output / "training_summary.json").read_text())
    # 6, 7, 8 and 9 s cut into round(length / 1.5) clips: 4 + 5 + 5 + 6 = 20 clips, 2 batches of 8 an epoch.
    assert summary["clips"] == 20 and summary["steps"] == 4 and summary["samples_seen"] == 32
    from co_settle_hf.data import discover_clips, split_long_videos

    windows = split_long_videos(discover_clips(long_videos), 1.5)
    assert len(windows) == 20
    for index, window in enumerate(windows):
        pair = sample_pair_indices(window.num_frames, 0.15, sample_generator(0, 0, index))
        frames = window.read(list(pair))
        total = int(re.search(r"long(\d)\.mp4", window.name).group(1)) * 10 + 60
        got = [read_frame_index(frame, total) for frame in frames]
        assert all(window.start <= g < window.start + window.num_frames for g in got), (window.name, got)
        assert got[1] - got[0] == int(0.15 * window.num_frames)  # the gap is a share of the clip, not of the video


def test_split_at_cuts_uses_the_shot_changes(workspace, tmp_path):
    # Two still shots (flat, so the codec adds no noise that could pass for a cut) of 3 s and 2 s.
    shots = [np.full((length, 64, 64, 3), level, dtype=np.uint8) for level, length in ((40, 30), (200, 20))]
    write_video(tmp_path / "videos" / "two_shots.mp4", np.concatenate(shots))
    from co_settle_hf.data import discover_clips, split_long_videos

    windows = split_long_videos(discover_clips(tmp_path / "videos"), 0, split_at_cuts=True)
    assert [(w.start, w.num_frames) for w in windows] == [(0, 30), (30, 20)]
    output = run(workspace, tmp_path / "out", "--split_at_cuts", "--clip_seconds", "0", "--per_device_train_batch_size", "1",
                 source=("--train_dir", str(tmp_path / "videos")), steps=2)
    assert json.loads((output / "training_summary.json").read_text())["clips"] == 2


# ---------------------------------------------------------------- the Python API
@pytest.mark.parametrize("kind", ["bytes", "paths", "streamed"])
def test_train_on_an_in_memory_dataset(workspace, tmp_path, kind):
    import datasets

    videos = sorted((workspace / "videos").rglob("*.mp4"))
    column = [p.read_bytes() for p in videos] if kind == "bytes" else [str(p) for p in videos]
    dataset = datasets.Dataset.from_dict({"clip": column})
    if kind == "streamed":
        dataset = dataset.to_iterable_dataset()
    args = CoSettleTrainingArguments(model_name_or_path=str(workspace / "vit"), output_dir=str(tmp_path / "out"), video_column="clip",
                                     max_train_steps=2, image_size=64, learning_rate=1e-3, per_device_train_batch_size=2, cpu=True)
    model, metrics = train(args, train_dataset=dataset)
    assert metrics["steps"] == 2 and metrics["clips"] == (6 if kind != "streamed" else "streamed")
    assert metrics["data"].startswith("train_dataset")
    loaded = CoSettleModel.from_pretrained(tmp_path / "out")
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(loaded(x).features, model.eval()(x).features)


def test_readme_training_snippet_runs(tmp_path, monkeypatch, capsys):
    section = readme_training_section()
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md (training)", "exec"), {})
    steps, clips = capsys.readouterr().out.split()[-2:]
    assert (steps, clips) == ("2", "10")
    assert CoSettleModel.from_pretrained(tmp_path / "my-co-settle-run").config.base_model_type == "dinov2"


def readme_training_section() -> str:
    text = (ROOT / "README.md").read_text()
    return text[text.index("## Train"):text.index("## Evaluate")]


def test_the_readme_shows_the_no_trainer_style_command():
    section = readme_training_section()
    for flag in ("--model_name_or_path", "--per_device_train_batch_size", "--output_dir", "--lr_scheduler_type", "--validation_dir"):
        assert flag in section, flag


# ---------------------------------------------------------------- readable in one sitting
def test_no_function_in_training_is_longer_than_a_screen():
    lengths = {}
    for path in sorted((ROOT / "co_settle_hf" / "training").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lengths[f"{path.name}:{node.name}"] = node.end_lineno - node.lineno + 1
    longest = max(lengths, key=lengths.get)
    print(f"\nlongest function in co_settle_hf/training/: {longest}, {lengths[longest]} lines")
    assert lengths[longest] <= 60, (longest, lengths[longest])
