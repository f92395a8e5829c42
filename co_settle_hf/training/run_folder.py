"""One run per output folder: a lock, a refusal to mix runs, and an all-or-nothing final save."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Callable

LOCK_FILE = ".co_settle.lock"
FINAL_PARTIAL = ".adapter.partial"
# What a run leaves in its folder; a fresh run refuses to mix with them unless told to overwrite.
RUN_OUTPUTS = ("checkpoints", "train_log.jsonl", "training_summary.json", "config.json", "model.safetensors")
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
            raise SystemExit(f"{self.path}: another run took the lock first")
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
        raise SystemExit(
            f"--output-dir {self.path.parent} is in use by another run (pid {holder.get('pid')} on "
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
        raise SystemExit(
            f"--output-dir {output_dir} already holds another run's outputs ({', '.join(found)}): pass "
            "--resume-from-checkpoint latest to continue it, --overwrite-output-dir to replace it, or choose another folder"
        )
    for name in found:
        path = output_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def save_adapter_atomically(output_dir: Path, write: Callable[[Path], Any]) -> None:
    """Write the final adapter to a temporary folder, then move its files in with config.json last.

    The old config.json goes first, so at every instant the folder either holds a complete,
    loadable adapter (config.json present) or none; each file is renamed whole, never half-written.
    """
    partial = output_dir / FINAL_PARTIAL
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    write(partial)
    for path in partial.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    (output_dir / ADAPTER_COMMIT_FILE).unlink(missing_ok=True)
    names = sorted(p.name for p in partial.iterdir())
    for name in [n for n in names if n != ADAPTER_COMMIT_FILE] + [ADAPTER_COMMIT_FILE]:
        os.replace(partial / name, output_dir / name)
    partial.rmdir()


def clean_leftovers(output_dir: Path) -> None:
    """Remove what a killed run leaves half-done: an unfinished final save or checkpoint."""
    shutil.rmtree(output_dir / FINAL_PARTIAL, ignore_errors=True)
    for partial in (output_dir / "checkpoints").glob("*.partial"):
        shutil.rmtree(partial, ignore_errors=True)
