"""The Accelerate trainer, run for real on small generated videos and a tiny backbone."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_backbones import build_backbone, save_backbone
from trainer_fixtures import FAST, good_clips_and_one_broken, run, workspace  # noqa: F401 (a fixture)

from co_settle_hf import CoSettleModel
from co_settle_hf.data import BadDataError, PairTransform
from co_settle_hf.errors import CheckpointError, DataSourceError, SettingsError
from co_settle_hf.training.trainer import main as train


def test_two_processes_with_accelerate_launch(workspace, tmp_path):
    output = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--main_process_port", "0", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "co_settle_hf.train",
        "--backbone", str(workspace / "vit"), "--train-dir", str(workspace / "videos"), "--output-dir", str(output),
        "--max-train-steps", "3", "--image-size", "64", "--learning-rate", "1e-3",
        "--per-device-train-batch-size", "1", "--cpu", "--logging-steps", "1",
        "--validation_dir", str(workspace / "frames"), "--eval_steps", "3",  # each process validates its share
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "process 0 of 2" in result.stdout and "process 1 of 2" in result.stdout
    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 3 and summary["global_batch_size"] == 2
    records = [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3] and all(torch.isfinite(torch.tensor(r["loss"])) for r in records if "loss" in r)
    assert [(r["step"], r["eval_pairs"]) for r in records if "eval_pairs" in r] == [(3, 6)]  # 3 + 3 pairs, summed
    model = CoSettleModel.from_pretrained(output)
    assert model(torch.randn(1, 3, 64, 64)).features.shape == (1, 4, 4, 32)


def test_resume_from_latest_matches_an_uninterrupted_run(workspace, tmp_path):
    full = run(workspace, tmp_path / "full", "--checkpointing-steps", "2", steps=5)  # 3 steps an epoch
    # An interrupted run: what was on disk after the step-2 checkpoint, nothing more.
    interrupted = tmp_path / "interrupted"
    shutil.copytree(full / "checkpoints" / "step_2", interrupted / "checkpoints" / "step_2")
    resumed = run(workspace, interrupted, "--checkpointing-steps", "2", "--resume-from-checkpoint", "latest", steps=5)
    expected, got = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    start = load_file(full / "checkpoints" / "step_2" / "model.safetensors")
    assert set(got) == set(expected)
    for key in expected:
        assert torch.allclose(got[key], expected[key], atol=1e-7), key
    assert any(not torch.equal(start[key], expected[key]) for key in expected)  # steps 3-5 really trained
    steps = [json.loads(line)["step"] for line in (interrupted / "train_log.jsonl").read_text().splitlines()]
    assert steps == [3, 4, 5]


@pytest.mark.parametrize("source", ["frames", "videos", "list", "dataset", "streamed dataset"])
def test_every_source_feeds_the_trainer(source, workspace, tmp_path):
    if source == "frames":
        args = ("--train-dir", str(workspace / "frames"))
    elif source == "videos":
        args = ("--train-dir", str(workspace / "videos"))
    elif source == "list":
        listing = tmp_path / "train.txt"
        listing.write_text("\n".join(str(p) for p in sorted((workspace / "frames").glob("*/*"))) + "\n")
        args = ("--train-list", str(listing))
    else:
        import datasets

        videos = sorted(str(p) for p in (workspace / "videos").rglob("*.mp4"))
        datasets.Dataset.from_dict({"video": [Path(v).read_bytes() for v in videos]}).save_to_disk(tmp_path / "ds")
        args = ("--dataset-name", str(tmp_path / "ds"), "--video-column", "video")
        if source == "streamed dataset":
            args += ("--streaming",)
    output = run(workspace, tmp_path / "out", source=args, steps=2)
    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["clips"] == ("streamed" if source == "streamed dataset" else 6)
    assert summary["steps"] == 2 and summary["bad_samples_skipped"] == 0
    assert CoSettleModel.from_pretrained(output).config.base_model_type == "vit"


def test_a_few_bad_videos_are_skipped_and_counted(workspace, tmp_path, caplog):
    data = good_clips_and_one_broken(tmp_path / "mixed", 20)
    with caplog.at_level(logging.WARNING):
        output = run(workspace, tmp_path / "out", "--per-device-train-batch-size", "3", source=("--train-dir", str(data)), steps=7)
    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["bad_samples_skipped"] == 1 and summary["samples_seen"] == 21
    assert sum("video_broken" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING) == 1


def test_too_many_bad_samples_stop_the_run(workspace, tmp_path):
    data = tmp_path / "mostly_bad"
    shutil.copytree(workspace / "videos", data)
    (data / "empty.mp4").write_bytes(b"")
    (data / "garbage.mp4").write_bytes(os.urandom(2000))
    with pytest.raises(BadDataError, match="could not be read"):
        run(workspace, tmp_path / "out", source=("--train-dir", str(data)), steps=4)
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_bad_arguments_fail_before_any_work(workspace, tmp_path):
    with pytest.raises(DataSourceError, match="--train_dir: .*does-not-exist"):
        run(workspace, tmp_path / "a", source=("--train-dir", str(tmp_path / "does-not-exist")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSourceError, match="--train_dir: .*empty"):
        run(workspace, tmp_path / "b", source=("--train-dir", str(tmp_path / "empty")))
    with pytest.raises(SettingsError, match="--model_name_or_path .*no-such-backbone"):
        train(["--backbone", str(tmp_path / "no-such-backbone"), "--train-dir", str(workspace / "videos"), "--output-dir", str(tmp_path / "c"), *FAST])
    with pytest.raises(DataSourceError, match="--dataset_name .*no-such-dataset"):
        run(workspace, tmp_path / "d", source=("--dataset-name", str(tmp_path / "no-such-dataset")))
    with pytest.raises(DataSourceError, match="--dataset_name .*column 'clip' not in dataset"):
        import datasets

        datasets.Dataset.from_dict({"video": ["x.mp4"]}).save_to_disk(tmp_path / "ds")
        run(workspace, tmp_path / "e", source=("--dataset-name", str(tmp_path / "ds"), "--video-column", "clip"))
    assert not any((tmp_path / name).exists() for name in "abcde")


def test_nan_loss_stops_and_saves_nothing(workspace, tmp_path):
    broken = build_backbone("vit")
    with torch.no_grad():
        broken.layernorm.weight.fill_(float("nan"))
    broken.save_pretrained(tmp_path / "nan_vit")
    with pytest.raises(FloatingPointError, match="Loss became nan at step 0"):
        train(["--backbone", str(tmp_path / "nan_vit"), "--train-dir", str(workspace / "videos"), "--output-dir", str(tmp_path / "out"), "--max-train-steps", "3", *FAST])
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_tensorboard_events_and_push_to_hub(workspace, tmp_path, hub_server, hub_repo_id):
    from huggingface_hub import HfApi
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    output = run(workspace, tmp_path / "out", "--with-tracking", "--report-to", "tensorboard", "--push-to-hub", "--hub-model-id", hub_repo_id,
                 "--hub-push-backbone", steps=3)
    events = list(output.rglob("events.out.tfevents.*"))
    assert events, "TensorBoard wrote no event file"
    tags = set()
    for event_file in events:
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    assert {"train/loss", "train/cycle_accuracy", "train/lr"} <= tags
    assert {"config.json", "model.safetensors", "README.md"} <= set(HfApi().list_repo_files(hub_repo_id))
    pulled = CoSettleModel.from_pretrained(hub_repo_id, backbone=str(workspace / "vit"))
    local = CoSettleModel.from_pretrained(output)
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(pulled(x).features, local(x).features)
    assert "global_batch_size" in (output / "README.md").read_text()


def test_gradient_accumulation_matches_the_large_batch(workspace, tmp_path):
    """Two accumulated micro-batches of 1 make the same update as one batch of 2."""
    big = run(workspace, tmp_path / "big", steps=3)
    accumulated = run(workspace, tmp_path / "acc", "--per-device-train-batch-size", "1", "--gradient-accumulation-steps", "2", steps=3)
    summary = json.loads((accumulated / "training_summary.json").read_text())
    assert summary["global_batch_size"] == 2 and summary["steps"] == 3
    steps = [json.loads(line)["step"] for line in (accumulated / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    expected, got = load_file(big / "model.safetensors"), load_file(accumulated / "model.safetensors")
    for key in expected:
        assert torch.allclose(got[key], expected[key], atol=1e-5), key


def test_a_batch_of_only_bad_samples_teaches_nothing(workspace, tmp_path):
    data = good_clips_and_one_broken(tmp_path / "mixed", 20)
    output = run(workspace, tmp_path / "out", "--per-device-train-batch-size", "1", source=("--train-dir", str(data)), steps=21)
    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["steps"] == 21 and summary["bad_samples_skipped"] == 1 and summary["samples_seen"] == 21
    records = [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]
    assert sum(r["loss"] == 0.0 for r in records) == 1  # the bad batch logs no loss of its own
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)


def test_mixed_precision_bf16_runs(workspace, tmp_path):
    # A process of its own: Accelerate's state (mixed precision included) is fixed once per process.
    output = tmp_path / "out"
    command = [sys.executable, "-m", "co_settle_hf.train", "--backbone", str(workspace / "vit"), "--train-dir",
               str(workspace / "videos"), "--output-dir", str(output), "--max-train-steps", "2", "--mixed-precision", "bf16", *FAST]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((output / "training_summary.json").read_text())["mixed_precision"] == "bf16"
    records = [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in records)


def test_a_missing_tracker_is_an_error_not_silence(workspace, tmp_path):
    with pytest.raises(SettingsError, match="--report_to wandb"):
        run(workspace, tmp_path / "out", "--with-tracking", "--report-to", "wandb")


def test_accumulation_with_a_short_last_group_counts_epochs_right(workspace, tmp_path):
    # 6 clips, batch 2: 3 batches an epoch; with 2-step accumulation that is 2 optimizer steps.
    output = run(workspace, tmp_path / "out", "--gradient-accumulation-steps", "2", "--num-train-epochs", "2",
                 source=("--train-dir", str(workspace / "videos")), steps=0)
    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["steps"] == 4 and summary["epochs"] == 2 and summary["samples_seen"] == 12


def test_warm_up_keeps_the_recipe_share_of_a_short_run(workspace, tmp_path):
    output = run(workspace, tmp_path / "out", steps=5)  # default: 1 warm-up epoch of 5 -> 1 step of 5
    assert json.loads((output / "training_summary.json").read_text())["warmup_steps"] == 1


def test_checkpoints_logs_and_resume_settings(workspace, tmp_path):
    out = tmp_path / "out"
    run(workspace, out, "--checkpointing-steps", "2", steps=4)
    assert json.loads((out / "checkpoints" / "step_2" / "co_settle_run.json").read_text())["step"] == 2
    (out / "checkpoints" / "step_9.partial").mkdir()  # an interrupted save is never resumed from
    run(workspace, out, "--checkpointing-steps", "2", "--resume-from-checkpoint", "latest", steps=5)
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]  # the log is this run's history, without duplicates
    run(workspace, out, "--overwrite-output-dir", "--checkpointing-steps", "2", steps=2)  # replacing the old run: a fresh log
    assert [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()] == [1, 2]
    with pytest.raises(CheckpointError, match="other settings, .*per_device_train_batch_size: 2 -> 1"):
        run(workspace, out, "--per-device-train-batch-size", "1", "--resume-from-checkpoint", "latest", steps=6)
    with pytest.raises(CheckpointError, match="--resume_from_checkpoint: .* is not a co-settle checkpoint"):
        run(workspace, out, "--resume-from-checkpoint", str(tmp_path), steps=6)


@pytest.mark.parametrize("bad", [["--num-train-epochs", "0"], ["--checkpointing-steps", "0"], ["--frame-gap", "1.5"],
                                 ["--pool-size", "0"], ["--cycle_temperature", "0"], ["--max-train-steps", "-3"]])
def test_bad_numbers_are_refused_at_parse_time(bad, workspace, tmp_path, capsys):
    with pytest.raises(SystemExit):
        train(["--backbone", str(workspace / "vit"), "--train-dir", str(workspace / "videos"), "--output-dir", str(tmp_path / "o"), *FAST, *bad])
    assert "--" + bad[0][2:].replace("-", "_") in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_rare_bad_clip_never_throws_away_a_finished_run(workspace, tmp_path):
    data = good_clips_and_one_broken(tmp_path / "mixed", 40)
    # 2.4 % bad overall; the last, partial epoch alone may hold 1 bad sample in 10.
    output = run(workspace, tmp_path / "out", "--per-device-train-batch-size", "2", "--seed", "4",
                 source=("--train-dir", str(data)), steps=25)
    assert (output / "model.safetensors").is_file()


def test_relative_position_backbones_need_pea_off_explicitly(workspace, tmp_path):
    save_backbone("beit", tmp_path / "beit")
    args = ["--backbone", str(tmp_path / "beit"), "--train-dir", str(workspace / "videos"), "--max-train-steps", "1", *FAST]
    with pytest.raises(SettingsError, match="relative position bias.*--no_pea"):
        train([*args, "--output-dir", str(tmp_path / "refused")])
    assert not (tmp_path / "refused").exists()
    output = train([*args, "--output-dir", str(tmp_path / "ok"), "--no-pea"])
    assert CoSettleModel.from_pretrained(output).config.objective.pea_alpha is None


def test_projection_init_resize_and_crop_rule_reach_the_run_and_its_card(workspace, tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr("co_settle_hf.training.trainer.PairTransform", lambda **kw: built.append(kw) or PairTransform(**kw))
    output = run(workspace, tmp_path / "out", "--projection-init", "identity", "--resize", "released", "--crop-rule", "released", steps=1)
    assert (built[0]["resize"], built[0]["crop_rule"]) == ("released", "released")
    assert json.loads((output / "config.json").read_text())["projection_init"] == "identity"
    summary = json.loads((output / "training_summary.json").read_text())
    assert (summary["resize"], summary["crop_rule"]) == ("released", "released")
    card = (output / "README.md").read_text()
    assert "| projection initialisation | `identity` |" in card and "| resize | released |" in card and "| crop_rule | released |" in card
