"""The trainer as a hostile or careless user meets it: checkpoints, secrets, shared folders, bad data, kills."""

from __future__ import annotations

import builtins
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from trainer_fixtures import FAST, run, train_argv, workspace  # noqa: F401 (a fixture)
from video_factory import moving_pattern_frames, write_frame_folder

from co_settle_hf import CoSettleModel
from co_settle_hf.data import BadDataError
from co_settle_hf.errors import CheckpointError, RunFolderError
from co_settle_hf.training.settings import APPLIED, REPLAYED, VIEWS
from co_settle_hf.training.trainer import main as train

TESTS = Path(__file__).parent


class Payload:
    """Unpickling this creates `marker`: proof that a file was unpickled with code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def assert_same_weights(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(expected)
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def every_file(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


# ---------------------------------------------------------------- 2. resuming runs no pickled code
ACCELERATE_FILES = ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin", "scheduler.bin", "pytorch_model.bin")


def test_no_file_of_a_checkpoint_is_unpickled(workspace, tmp_path):
    source = run(workspace, tmp_path / "source", "--checkpointing-steps", "2", steps=3)
    checkpoint = source / "checkpoints" / "step_2"
    control = tmp_path / "control.pkl"
    torch.save({"state": Payload(tmp_path / "control_ran")}, control)
    torch.load(control, weights_only=False)
    assert (tmp_path / "control_ran").exists()  # the payload is live: a full unpickle runs it

    names = sorted(p.name for p in checkpoint.iterdir()) + list(ACCELERATE_FILES)
    for name in names:
        target, marker = tmp_path / f"run_{name}", tmp_path / f"ran_{name}"
        shutil.copytree(checkpoint, target / "checkpoints" / "step_2")
        torch.save({"state": Payload(marker)}, target / "checkpoints" / "step_2" / name)
        argv = train_argv(workspace, target, "--resume-from-checkpoint", "latest", steps=3)
        if name in ACCELERATE_FILES:  # not part of a checkpoint: never read
            assert_same_weights(weights(run(workspace, target, "--resume-from-checkpoint", "latest", steps=3)), weights(source))
        else:
            with pytest.raises(CheckpointError, match=name):
                train(argv)
        assert not marker.exists(), f"replacing {name} ran code on resume"


# ---------------------------------------------------------------- 3. secrets stay out of every file
def test_the_hub_token_is_in_no_file_a_run_writes(workspace, tmp_path, hub_server, hub_repo_id):
    from huggingface_hub import HfApi, hf_hub_download

    output = run(workspace, tmp_path / "out", "--with-tracking", "--report-to", "tensorboard", "--checkpointing-steps", "1",
                 "--push-to-hub", "--hub-model-id", hub_repo_id, "--hub-token", hub_server.token, "--hub-push-backbone", steps=2)
    files = every_file(output)
    assert any("tfevents" in p.name for p in files) and any(p.name == "hparams.yml" for p in files)
    pushed = [Path(hf_hub_download(hub_repo_id, name)) for name in HfApi().list_repo_files(hub_repo_id)]
    leaking = [str(p) for p in files + pushed if hub_server.token.encode() in p.read_bytes()]
    assert not leaking, leaking
    settings = json.loads((output / "checkpoints" / "step_2" / "co_settle_run.json").read_text())["settings"]
    assert "hub_token" not in settings and settings["hub_model_id"] == hub_repo_id  # the rest is recorded


# ---------------------------------------------------------------- 5. one run per output folder
def start_forked_runs() -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(TESTS / "fork_trainer.py")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)


def fork_run(runner: subprocess.Popen, argv: list[str], log: Path) -> int:
    runner.stdin.write(json.dumps([argv, str(log)]) + "\n")
    runner.stdin.flush()
    return int(runner.stdout.readline())


def wait_for(path: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"


def test_a_second_concurrent_run_is_refused_and_a_killed_one_frees_the_folder(workspace, tmp_path):
    output = tmp_path / "out"
    runner = start_forked_runs()
    try:
        pid = fork_run(runner, train_argv(workspace, output, "--checkpointing-steps", "1", steps=100000), tmp_path / "first.log")
        wait_for(output / "checkpoints" / "step_1")
        lock = json.loads((output / ".co_settle.lock").read_text())
        assert lock["pid"] == pid and lock["host"]
        with pytest.raises(RunFolderError, match=f"in use by another run \\(pid {pid} on "):
            run(workspace, output, "--resume-from-checkpoint", "latest", steps=100000)
        os.kill(pid, signal.SIGKILL)
        assert int(runner.stdout.readline()) != 0
    finally:
        runner.stdin.close()
        runner.wait(timeout=60)
    logged = len((output / "train_log.jsonl").read_text().splitlines())
    # The killed run's lock is stale (its PID is gone): the folder is free again, for one resumed run.
    resumed = run(workspace, output, "--checkpointing-steps", "1", "--resume-from-checkpoint", "latest", steps=logged + 2)
    assert json.loads((resumed / "training_summary.json").read_text())["steps"] == logged + 2
    assert not (output / ".co_settle.lock").exists()


def test_a_fresh_run_never_mixes_with_an_earlier_one(workspace, tmp_path):
    output = run(workspace, tmp_path / "out", "--checkpointing-steps", "2", steps=4)
    before = {p: p.read_bytes() for p in every_file(output)}
    with pytest.raises(RunFolderError, match="already holds another run's outputs .*--overwrite_output_dir"):
        run(workspace, output, "--seed", "1", "--checkpointing-steps", "2", steps=2)
    assert {p: p.read_bytes() for p in every_file(output)} == before  # nothing lost
    (output / "checkpoints" / "step_4" / "marker").write_text("the old run's")
    run(workspace, output, "--seed", "1", "--overwrite-output-dir", "--checkpointing-steps", "2", steps=4)
    assert not (output / "checkpoints" / "step_4" / "marker").exists()  # the old run's checkpoints are gone
    shutil.rmtree(output / "checkpoints" / "step_4")  # as if the new run had been stopped after step 2
    # `latest` only resolves to a checkpoint written with this run's settings: a stray one is passed over.
    stray = run(workspace, tmp_path / "stray", "--seed", "7", "--checkpointing-steps", "3", steps=3)
    shutil.copytree(stray / "checkpoints" / "step_3", output / "checkpoints" / "step_3")
    resumed = run(workspace, output, "--seed", "1", "--resume-from-checkpoint", "latest", steps=4)
    fresh = run(workspace, tmp_path / "fresh", "--seed", "1", steps=4)
    assert_same_weights(weights(resumed), weights(fresh))
    with pytest.raises(CheckpointError, match="step_3 was written by a run with other settings.*seed: 7 -> 2"):
        run(workspace, output, "--seed", "2", "--resume-from-checkpoint", "latest", steps=4)


# ---------------------------------------------------------------- 6. the 5 % rule, however short the run
def broken_clips(root: Path, count: int) -> Path:
    for index in range(count):
        (root / f"broken{index:02d}").mkdir(parents=True)
        (root / f"broken{index:02d}" / "00000.jpg").write_bytes(b"not a jpeg")
    return root


def test_a_short_run_of_unreadable_samples_fails(workspace, tmp_path):
    # Shorter than an epoch and than the 200-sample early check: caught at the end of the run.
    with pytest.raises(BadDataError, match="6 of 6 samples"):
        run(workspace, tmp_path / "short", source=("--train-dir", str(broken_clips(tmp_path / "all_bad", 30))), steps=3)
    mixed = broken_clips(tmp_path / "mixed", 4)
    for index in range(36):
        write_frame_folder(mixed / f"good{index:02d}", moving_pattern_frames(4, 64, 64, seed=index))
    with pytest.raises(BadDataError, match="more than the 5% allowed"):  # 4 in 40: about 10 %
        run(workspace, tmp_path / "mixed_out", "--per-device-train-batch-size", "4", source=("--train-dir", str(mixed)), steps=5)
    # A long run over a fully unreadable source stops within its first batches.
    with pytest.raises(BadDataError, match="8 of 8 samples"):
        run(workspace, tmp_path / "long", source=("--train-dir", str(tmp_path / "all_bad")), steps=1000)
    assert not any((tmp_path / name / "model.safetensors").exists() for name in ("short", "mixed_out", "long"))


def test_the_command_line_exits_non_zero_on_unreadable_data(workspace, tmp_path):
    command = [sys.executable, "-m", "co_settle_hf.train", *train_argv(workspace, tmp_path / "out", source=(
        "--train-dir", str(broken_clips(tmp_path / "all_bad", 10))), steps=2)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode != 0 and "could not be read" in result.stderr
    assert not (tmp_path / "out" / "config.json").exists()


# ---------------------------------------------------------------- 7. every recorded setting compared on resume
def test_resume_applies_or_refuses_every_changed_setting(workspace, tmp_path):
    output = run(workspace, tmp_path / "out", "--checkpointing-steps", "2", steps=2)
    for flag, value, shown in [("--image-size", "48", "image_size: 64 -> 48"), ("--projection", "mlp2", "projection: 'linear' -> 'mlp2'"),
                               ("--train-dir", str(workspace / "frames"), "data: "), ("--pool-size", "1", "pool_size: 2 -> 1")]:
        with pytest.raises(CheckpointError, match=f"other settings.*{shown}"):
            run(workspace, output, "--resume-from-checkpoint", "latest", flag, value, steps=4)
    with pytest.raises(CheckpointError, match="other settings.*resize: 'antialiased' -> 'short_side'; crop_rule: 'torchvision' -> 'released'; "
                                         "projection_init: 'released' -> 'identity'"):
        run(workspace, output, "--resume-from-checkpoint", "latest", "--resize", "short_side", "--crop-rule", "released",
            "--projection-init", "identity", steps=4)
    resumed = run(workspace, output, "--resume-from-checkpoint", "latest", "--learning-rate", "5e-3", steps=4)
    records = [json.loads(line) for line in (resumed / "train_log.jsonl").read_text().splitlines()]
    # Warm-up 1 step, then cosine over 4: the new peak 5e-3 sets the rate from step 3 on.
    assert records[2]["lr"] == pytest.approx(5e-3 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 2 / 3)).item()))
    summary = json.loads((resumed / "training_summary.json").read_text())
    assert summary["learning_rate"] == 5e-3 and (summary["resize"], summary["crop_rule"]) == ("antialiased", "torchvision")
    assert summary["changed_on_resume"] == [{"step": 2, "learning_rate": [1e-3, 5e-3], "warmup_steps": [0, 1], "max_steps": [2, 4]}]
    assert "changed_on_resume" in (resumed / "README.md").read_text()
    # The resume rules name only settings a checkpoint records: a renamed field cannot silently drop out.
    recorded = json.loads(next((output / "checkpoints").glob("step_*[0-9]/co_settle_run.json")).read_text())["settings"]
    for kind in (REPLAYED, VIEWS, APPLIED):
        assert set(kind) <= set(recorded), sorted(set(kind) - set(recorded))
    assert set(REPLAYED).isdisjoint(APPLIED) and set(VIEWS) - {"feature_cache_pairs"} <= set(REPLAYED)


# ---------------------------------------------------------------- 8 and kill -9: nothing half-written
def kill_when(pid: int, condition, limit: float, delay: float = 0.0) -> bool:
    """SIGKILL `pid` `delay` seconds after `condition()` first holds (polled), or after `limit` seconds; True if it held."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)
            return True
    os.kill(pid, signal.SIGKILL)
    return False


def complete_checkpoints(output: Path) -> int:
    return len(list((output / "checkpoints").glob("step_*[0-9]"))) if (output / "checkpoints").exists() else 0


def state_after_kill(output: Path) -> str:
    """What a killed run left, checked: every complete file readable, an adapter only if loadable."""
    for path in every_file(output):
        if ".partial" in str(path.relative_to(output)):
            continue  # marked unfinished; the next run removes it
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            load_file(path)
    checkpoints = sorted((output / "checkpoints").glob("step_*[0-9]")) if (output / "checkpoints").exists() else []
    if (output / "config.json").exists():
        CoSettleModel.from_pretrained(output)
        return "complete adapter"
    return f"{len(checkpoints)} checkpoint(s), no adapter" if checkpoints else "nothing"


def test_sigkill_at_any_moment_leaves_a_loadable_adapter_or_none(workspace, tmp_path):
    steps, trials = 8, int(os.environ.get("CO_SETTLE_KILL_TRIALS", "3"))  # one kill of each kind; more on request
    reference = weights(run(workspace, tmp_path / "reference", steps=steps))
    rng, table = random.Random(0), Counter()
    runner = start_forked_runs()
    try:
        for trial in range(trials):
            output = tmp_path / f"trial{trial}"
            argv = train_argv(workspace, output, "--checkpointing-steps", "1", steps=steps)
            pid = fork_run(runner, argv, tmp_path / f"trial{trial}.log")
            wait_for(output / ".co_settle.lock")
            moment, done = ["final save", "checkpoint save", "random"][trial % 3], rng.randrange(steps)
            if moment == "final save":
                hit = kill_when(pid, lambda: any(output.glob(".*.partial")), 60)  # the final adapter staged
            elif moment == "checkpoint save":  # while writing the checkpoint that follows `done` complete ones
                hit = kill_when(pid, lambda: complete_checkpoints(output) >= done and any((output / "checkpoints").glob("*.partial")), 60)
            else:  # a random instant after `done` checkpoints: mid-step, mid-save or mid-log
                hit = kill_when(pid, lambda: complete_checkpoints(output) >= done, 60, delay=rng.uniform(0.0, 0.2))
            status = int(runner.stdout.readline())
            left = state_after_kill(output)
            table[(moment if hit or moment == "random" else f"{moment} (missed)", "killed" if status else "finished", left)] += 1
            resumed = run(workspace, output, "--checkpointing-steps", "1", "--overwrite-output-dir",
                          *(["--resume-from-checkpoint", "latest"] if "checkpoint(s)" in left or "adapter" in left else []), steps=steps)
            assert_same_weights(weights(resumed), reference)
    finally:
        runner.stdin.close()
        runner.wait(timeout=60)
    print("\nkill moment | process | left behind | times")
    for (moment, status, left), count in sorted(table.items()):
        print(f"{moment} | {status} | {left} | {count}")
    assert sum(count for (moment, _, _), count in table.items() if moment == "final save") >= 1
