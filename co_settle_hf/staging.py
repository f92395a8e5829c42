"""One way to write anything the project keeps: stage beside the target, then rename into place.

The rule, for every file and folder (adapters, checkpoints, caches, evaluation outputs, imports,
exports, the converted demo backbone): a target name appears only once its content is complete.
The content is written under a hidden staging name in the same folder (`.NAME.<random>.partial`),
then renamed onto the target in one step; a crash, an error or kill -9 leaves at most a staging
entry, never a half-written target. A folder that already exists is swapped with the new one in one
step where Linux offers it (renameat2 RENAME_EXCHANGE), so no moment lacks either. Staged content
is fsynced before its rename and the folder after it, so the rule holds across a power cut too.

`staged_entries` serves folders that hold more than what is written (a run folder with its
checkpoints and logs, a user's adapter folder): each written entry is renamed in, and a commit file
(e.g. config.json, without which nothing loads) goes last, after the old one is removed first.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

STAGING_SUFFIX = ".partial"


def staging_name(target: Path) -> str:
    return f".{target.name}."


def is_staging(path: Path) -> bool:
    """Whether `path` is a staging entry (left by an interrupted write)."""
    return path.name.startswith(".") and path.name.endswith(STAGING_SUFFIX)


@contextmanager
def staged_file(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `target` to write to; renamed onto `target` when the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=staging_name(target), suffix=STAGING_SUFFIX, dir=target.parent)
    os.close(handle)
    staged = Path(name)
    try:
        yield staged
        flush(staged)
        os.replace(staged, target)
        flush(target.parent)
    finally:
        staged.unlink(missing_ok=True)


@contextmanager
def staged_folder(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder beside `target` to fill; it becomes `target` (replacing an old one) when the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=staging_name(target), suffix=STAGING_SUFFIX, dir=target.parent))
    try:
        yield staged
        flush(staged)
        if target.exists():
            exchange(staged, target)  # `staged` now holds the old folder, removed below
        else:
            os.replace(staged, target)
        flush(target.parent)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


@contextmanager
def staged_entries(folder: str | os.PathLike, commit_file: str) -> Iterator[Path]:
    """A staging folder inside `folder` whose entries move into `folder` (other entries stay), `commit_file` last."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=staging_name(folder), suffix=STAGING_SUFFIX, dir=folder))
    try:
        yield staged
        flush(staged)
        (folder / commit_file).unlink(missing_ok=True)  # from here on, no half-replaced folder passes for complete
        for entry in sorted(staged.iterdir(), key=lambda path: path.name == commit_file):
            destination = folder / entry.name
            if entry.is_dir() and destination.is_dir():
                exchange(entry, destination)  # a folder cannot be renamed over a full one
                shutil.rmtree(entry)
            else:
                os.replace(entry, destination)
        flush(folder)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def flush(path: Path) -> None:
    """fsync a staged file, or a folder and everything in it, before a rename publishes it (and the folder
    holding a rename after it): a power cut then leaves the old content or the new, never empty files."""
    for item in [*path.rglob("*"), path] if path.is_dir() else [path]:
        handle = os.open(item, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def exchange(a: Path, b: Path) -> None:
    """Swap two folders in one step (Linux renameat2 RENAME_EXCHANGE); elsewhere three renames."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        at_fdcwd, rename_exchange = -100, 2
        if libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return
    except (AttributeError, OSError):  # no renameat2 in this C library
        pass
    aside = a.with_name(a.name + ".previous")
    os.replace(b, aside)
    os.replace(a, b)
    os.replace(aside, a)


def remove_leftovers(folder: str | os.PathLike) -> None:
    """Delete the staging entries an interrupted write left in `folder`."""
    for path in Path(folder).glob(f".*{STAGING_SUFFIX}"):
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
