"""`accelerate launch -m co_settle_hf.evaluate` with 2 real processes writes the files of 1 process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from eval_fixtures import tradeoff_videos, write_davis, write_tapvid_npz, write_tradeoff_clips, write_ucf101
from tiny_backbones import save_backbone

REPO = Path(__file__).resolve().parents[1]
TASKS = {"davis": ("DAVIS", ["--size", "64", "96"]), "tradeoff": ("clips", []),
         "retrieval": ("UCF101", ["--num-frames", "2"]), "tapvid": ("TAPVID", ["--size", "64", "64"])}
#: What each task's results count, and how many there are.
COUNTS = {"davis": ("num_sequences", 5), "tradeoff": ("num_videos", 5), "retrieval": ("gallery", 6), "tapvid": ("num_videos", 5)}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("distributed")
    save_backbone("vit", root / "vit")
    write_davis(root / "DAVIS", names=("a", "b", "c", "d", "e"))  # 5 sequences: 3 and 2 per process
    write_tradeoff_clips(root / "clips", tradeoff_videos(5))
    write_ucf101(root / "UCF101", train=3, test=1, classes=2)  # 8 videos: 4 and 4 per process
    write_tapvid_npz(root / "TAPVID", names=("a", "b", "c", "d", "e"))
    return root


def files(folder: Path) -> dict[str, bytes]:
    """Every result file; timing.json says how long this run took, so it is left out."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "timing.json"}


def launch(launcher: list[str], task: str, data: Path, out: Path) -> subprocess.CompletedProcess:
    folder, extra = TASKS[task]
    command = [*launcher, "-m", "co_settle_hf.evaluate", task, "--model", str(data / "vit"),
               "--data-root", str(data / folder), "--output-dir", str(out), "--device", "cpu", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)


@pytest.mark.parametrize("task", list(TASKS))
def test_two_processes_write_the_files_of_one(data, tmp_path, task):
    two = launch([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                  "--num_machines", "1", "--main_process_port", "0", "--mixed_precision", "no",
                  "--dynamo_backend", "no"], task, data, tmp_path / "two")
    assert two.returncode == 0, two.stderr[-3000:]
    one = launch([sys.executable], task, data, tmp_path / "one")
    assert one.returncode == 0, one.stderr[-3000:]
    got, expected = files(tmp_path / "two"), files(tmp_path / "one")
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert got[name] == expected[name], name  # byte for byte: same numbers, same order
    results = json.loads((tmp_path / "two" / "results.json").read_text())
    key, count = COUNTS[task]
    assert next(iter(results.values()))[key] == count
    if task == "davis":  # the main process evaluated its share of the sequences, 3 of 5
        assert "3/3" in two.stderr and "5/5" in one.stderr
        for folder, processes in (("two", 2), ("one", 1)):
            timing = json.loads((tmp_path / folder / "timing.json").read_text())
            assert timing["processes"] == processes and timing["frames"] == {2: 3 * 5, 1: 5 * 5}[processes]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # no staging folder left


def test_a_bad_video_on_one_process_stops_both_with_its_name(data, tmp_path):
    broken = tmp_path / "DAVIS"
    import shutil

    shutil.copytree(data / "DAVIS", broken)
    jpeg = broken / "JPEGImages" / "480p" / "e" / "00002.jpg"  # sequence e: the second process's share
    jpeg.write_bytes(jpeg.read_bytes()[:-100])
    folder, extra = TASKS["davis"]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--main_process_port", "0", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "co_settle_hf.evaluate", "davis", "--model", str(data / "vit"), "--data-root", str(broken),
               "--output-dir", str(tmp_path / "out"), "--device", "cpu", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert result.returncode != 0
    assert f"co-settle eval davis: cannot decode image {jpeg}" in result.stderr
    assert "co_settle_hf/" not in result.stderr  # a message, not a traceback through our code (the launcher adds its own)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*.partial"))
