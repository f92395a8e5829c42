"""The one staging rule, under kill -9: a target name holds complete content or does not exist."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

from co_settle_hf.staging import is_staging, remove_leftovers, staged_entries, staged_file, staged_folder

BLOCK = os.urandom(1 << 20)  # 1 MiB, written in pieces so a kill lands mid-write


def write_payload(path: Path, generation: int) -> None:
    with open(path, "wb") as handle:
        for _ in range(8):
            handle.write(BLOCK)
        handle.write(json.dumps({"generation": generation}).encode())


def payload_generation(path: Path) -> int:
    data = path.read_bytes()
    assert len(data) > 8 * len(BLOCK) and data[: 8 * len(BLOCK)] == BLOCK * 8, f"{path} is half-written"
    return json.loads(data[8 * len(BLOCK):])["generation"]


def writer(kind: str, root: Path) -> None:
    """Rewrite the target forever, one generation after another (until killed)."""
    for generation in range(1_000_000):
        if kind == "file":
            with staged_file(root / "target.bin") as staged:
                write_payload(staged, generation)
        elif kind == "folder":
            with staged_folder(root / "target") as staged:
                for name in ("a.bin", "b.bin"):
                    write_payload(staged / name, generation)
        else:  # entries: a folder with other content, committed by config.json
            with staged_entries(root / "adapter", "config.json") as staged:
                write_payload(staged / "model.bin", generation)
                (staged / "config.json").write_text(json.dumps({"generation": generation}))


def check(kind: str, root: Path) -> None:
    if kind == "file":
        if (root / "target.bin").exists():
            payload_generation(root / "target.bin")
    elif kind == "folder":
        if (root / "target").exists():
            assert sorted(p.name for p in (root / "target").iterdir()) == ["a.bin", "b.bin"]
            assert payload_generation(root / "target" / "a.bin") == payload_generation(root / "target" / "b.bin")
    else:
        assert (root / "adapter" / "keep.txt").read_text() == "not ours"  # what the folder held besides stays
        if (root / "adapter" / "config.json").exists():  # committed: the weights of that very generation
            generation = json.loads((root / "adapter" / "config.json").read_text())["generation"]
            assert payload_generation(root / "adapter" / "model.bin") == generation


@pytest.mark.parametrize("kind", ["file", "folder", "entries"])
def test_a_kill_at_any_moment_leaves_the_target_complete_or_absent(kind, tmp_path):
    rng = random.Random(0)
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "keep.txt").write_text("not ours")
    for trial in range(12):
        pid = os.fork()
        if pid == 0:  # the child writes until it is killed
            try:
                writer(kind, tmp_path)
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        check(kind, tmp_path)
        for folder in (tmp_path, tmp_path / "adapter"):
            remove_leftovers(folder)
            assert not [p for p in folder.iterdir() if is_staging(p)]


def test_an_error_inside_the_block_keeps_the_old_target_and_leaves_nothing(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with staged_file(target) as staged:
            staged.write_text("new, half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]
    with staged_folder(tmp_path / "out") as staged:
        (staged / "x").write_text("1")
    with pytest.raises(RuntimeError):
        with staged_folder(tmp_path / "out") as staged:
            raise RuntimeError("interrupted")
    assert (tmp_path / "out" / "x").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["out", "result.json"]
