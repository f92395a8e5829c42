"""Where evaluation results go: one folder, confined, never overwriting data or earlier results by accident.

Every evaluation command writes through :class:`OutputFolder`. It refuses an output folder that
overlaps a data root (so predictions can never replace ground truth) and an existing non-empty
folder unless ``overwrite`` is set; it writes into a fresh staging folder beside the target and
moves it into place only when the run has finished, so a run that fails (or is killed) leaves
the previous results exactly as they were. Every path handed out is resolved and must stay
inside the staging folder, and names taken from list files must be single path components.
"""

from __future__ import annotations

import copy
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any, ContextManager, Sequence

from ..staging import staged_folder


def check_name(name: str, where: str) -> str:
    """A name from a list file that becomes a folder or file name: one plain path component.

    ``where`` (e.g. ``"val.txt, line 3"``) is put in the error, so the user can fix the list.
    """
    bad = (not name or name in (".", "..") or os.path.isabs(name) or "/" in name or "\\" in name
           or "\0" in name or (os.altsep is not None and os.altsep in name))
    if bad:
        raise ValueError(f"{where}: {name!r} is not a plain name (no path separators, '..' or absolute paths); "
                         "results are written under --output-dir by this name")
    return name


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def check_output_dir(output_dir: str | Path, data_roots: Sequence[str | Path], overwrite: bool) -> Path:
    """The resolved output folder, after refusing overlap with a data root and non-empty folders."""
    target = Path(output_dir).expanduser().resolve()
    for root in data_roots:
        data = Path(root).expanduser().resolve()
        if _overlaps(target, data):
            raise ValueError(f"--output-dir {output_dir} overlaps the data root {root}: results could overwrite "
                             "the data set's files; choose a folder outside it")
    if target.exists() and not target.is_dir():
        raise ValueError(f"--output-dir {output_dir} exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise ValueError(f"--output-dir {output_dir} already holds results; pass --overwrite to replace them "
                         "(they are replaced only once the new run has finished)")
    return target


class OutputFolder:
    """A staging folder that becomes ``output_dir`` when the ``with`` block ends without an error.

    With ``processes`` (several evaluation processes, see ``distributed.Processes``) the main
    process creates the staging folder, every process writes into it, and the main process
    moves it into place once all of them are done.
    """

    def __init__(self, output_dir: str | Path, data_roots: Sequence[str | Path] = (), overwrite: bool = False,
                 processes: Any = None):
        self.target = check_output_dir(output_dir, data_roots, overwrite)
        self.root: Path | None = None
        self.processes = processes
        self.is_main = processes is None or processes.is_main
        self._staging: Any = None

    def __enter__(self) -> "OutputFolder":
        root = None
        if self.is_main:
            self._staging = staged_folder(self.target)
            root = str(self._staging.__enter__())
        if self.processes is not None:
            root = self.processes.broadcast(root)
        self.root = Path(root).resolve()
        return self

    def path(self, *parts: str) -> Path:
        """``root / parts`` resolved, refused if it leaves the folder; its parent folder is created."""
        if self.root is None:
            raise RuntimeError("OutputFolder.path() is only valid inside its `with` block")
        path = self.root.joinpath(*parts).resolve()
        if path == self.root or not path.is_relative_to(self.root):
            raise ValueError(f"output path {'/'.join(parts)!r} leaves the output folder {self.target}")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def subfolder(self, name: str) -> "OutputFolder":
        """A view of ``root/name`` (a plain name) for one part of a run, e.g. one model of a comparison.

        Its paths are confined to the sub-folder; it is never entered or exited itself: the folder it
        belongs to moves everything into place at once.
        """
        view = copy.copy(self)
        view.root = self.path(check_name(name, "output sub-folder"))
        view.root.mkdir(exist_ok=True)
        return view

    def __exit__(self, kind, error, traceback) -> None:
        assert self.root is not None
        if kind is None and self.processes is not None:
            self.processes.barrier()  # every process has written its files
        if self.is_main:
            self._staging.__exit__(kind, error, traceback)  # in place when all went well, else removed


def open_output(output: "str | Path | OutputFolder", data_roots: Sequence[str | Path], overwrite: bool
                ) -> ContextManager[OutputFolder]:
    """An open :class:`OutputFolder`: the one given (a command already staging), or a new one for a path."""
    if isinstance(output, OutputFolder):
        return nullcontext(output)
    return OutputFolder(output, data_roots, overwrite)
