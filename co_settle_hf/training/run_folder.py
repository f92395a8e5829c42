"""One run per output folder: a lock, a refusal to mix runs, and an all-or-nothing final save."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from ..errors import RunFolderError
from ..staging import remove_leftovers

LOCK_FILE = ".co_settle.lock"
# What a run leaves in its folder; a fresh run refuses to mix with them unless told to overwrite.
RUN_OUTPUTS = ("checkpoints", "train_log.jsonl", "training_summary.json", "config.json", "model.safetensors")
# ... and what an overwriting run removes with them: the rest of an adapter folder, the best adapter.
REPLACED_OUTPUTS = (*RUN_OUTPUTS, "README.md", "preprocessor_config.json", "backbone", "best")
ADAPTER_COMMIT_FILE = "config.json"  # moved in last: a folder with it holds a complete adapter


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """`output_dir/.co_settle.lock` holding the owner's PID and host, created atomically.

    The file is written in full beside the lock and hard-linked into place (a link fails when
    the name exists), so a lock is never half-written. A lock left by a process of this host
    that no longer exists (a killed run) is taken over; anything else is refused.
    """

    def __init__(self, output_dir: Path) -> None:
        self.path = output_dir / LOCK_FILE
        self.owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        draft = self.path.with_name(f"{LOCK_FILE}.{os.getpid()}")
        draft.write_text(json.dumps(self.owner))
        try:
            for _ in range(2):
                try:
                    os.link(draft, self.path)
                    return
                except FileExistsError:
                    self._take_over_if_stale()
            raise RunFolderError(f"{self.path}: another run took the lock first")
        finally:
            draft.unlink(missing_ok=True)

    def _take_over_if_stale(self) -> None:
        try:
            holder = json.loads(self.path.read_text())
        except (OSError, ValueError):
            holder = {}
        here = holder.get("host") == self.owner["host"]
        if here and isinstance(holder.get("pid"), int) and not _alive(holder["pid"]):
            self.path.unlink(missing_ok=True)  # its owner died (e.g. killed): the folder is free
            return
        raise RunFolderError(
            f"--output_dir {self.path.parent} is in use by another run (pid {holder.get('pid')} on "
            f"{holder.get('host')}, since {holder.get('started')}; lock {self.path}). One run per output folder: "
            "wait for it, or choose another folder."
        )

    def release(self) -> None:
        try:
            if json.loads(self.path.read_text()).get("pid") == self.owner["pid"]:
                self.path.unlink()
        except (OSError, ValueError):
            pass


def prepare_fresh_folder(output_dir: Path, overwrite: bool) -> None:
    """A fresh run starts in an empty folder: earlier outputs are refused, or removed with `overwrite`."""
    found = [name for name in RUN_OUTPUTS if (output_dir / name).exists()]
    if not found:
        return
    if not overwrite:
        raise RunFolderError(
            f"--output_dir {output_dir} already holds another run's outputs ({', '.join(found)}): pass "
            "--resume_from_checkpoint latest to continue it, --overwrite_output_dir to replace it, or choose another folder"
        )
    for path in (output_dir / name for name in REPLACED_OUTPUTS):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def clean_leftovers(output_dir: Path) -> None:
    """Remove what a killed run leaves half-done: the staging entries of a final save or a checkpoint."""
    remove_leftovers(output_dir)
    remove_leftovers(output_dir / "checkpoints")


class TrainLog:
    """`train_log.jsonl`: one JSON record per logged step, of this run only (a resume keeps the lines up to its step)."""

    def __init__(self, output_dir: Path, resumed_step: int, active: bool) -> None:
        self.path, self.active = output_dir / "train_log.jsonl", active
        if active:
            old = self.path.read_text().splitlines() if resumed_step and self.path.exists() else []
            self.path.write_text("".join(line + "\n" for line in old if _logged_step(line) <= resumed_step))

    def write(self, record: dict[str, Any]) -> None:
        if self.active:
            with self.path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")


def _logged_step(line: str) -> float:
    """The step of a log line; a line a killed run left half-written counts as never logged."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf
