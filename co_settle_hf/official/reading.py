"""Reading the authors' checkpoint files without running anything they contain.

A `.pth` is a zip archive of a pickle plus raw tensor records (or, for very old files, a bare
pickle). Three rules keep reading it safe and bounded:

- the pickle is read by `torch.load(weights_only=True)`, which rebuilds tensors and plain
  containers only, with an explicit allow-list (`ALLOWED_GLOBALS`) for the few classes the
  authors' trainers really store; anything else is refused and named, never executed;
- the archive is checked before torch opens it: every record must be stored uncompressed (as
  `torch.save` writes them), so no record inflates beyond the file (a deflate zip bomb), and
  the file and its records must fit a size limit; zip tensors are memory-mapped (`mmap=True`);
- a TorchScript archive (OpenAI's `ViT-B-16.pt`) is never handed to `torch.jit.load`, which
  would compile and run its code: its tensors are read from the archive's data records by a
  restricted unpickler that knows only how to rebuild tensors and records module attributes.
"""

from __future__ import annotations

import argparse
import collections
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import CheckpointError

MAX_CHECKPOINT_BYTES = 8 * 2**30
"""Default limit on a checkpoint's size (and on the sum of its records): the largest released
file, BLIP's retrieval checkpoint, is under 2 GiB."""

ALLOWED_GLOBALS: tuple[Any, ...] = (argparse.Namespace,)
"""Classes a weights-only read accepts beyond tensors and plain containers. `argparse.Namespace`:
the Co-Settle trainer (and MAE's, which it derives from) saves `args`, the parsed command line,
in every checkpoint; its fields are strings, numbers, booleans, lists and None."""


class CheckpointReadError(CheckpointError):
    """A checkpoint file could not be read safely; the message names the file and the reason."""


def read_checkpoint(path: str | Path, max_bytes: int = MAX_CHECKPOINT_BYTES) -> Any:
    """The object stored in a `.pth`/`.pt` file, read weights-only (TorchScript: its tensors)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointReadError(f"{path} does not exist or is not a file.")
    size = path.stat().st_size
    if size > max_bytes:
        raise CheckpointReadError(
            f"{path} is {size:,} bytes, over the limit of {max_bytes:,} bytes for a checkpoint "
            "(raise it with max_bytes= / --max-checkpoint-bytes if the file is trusted to be this large)."
        )
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if _is_torchscript(archive):  # its code records (compressed) are never read
                _check_records(path, archive, max_bytes, _is_torchscript_data)
                return read_torchscript_tensors(archive, path)
            _check_records(path, archive, max_bytes)
        return _torch_load(path, mmap=True)
    with open(path, "rb") as handle:
        head = handle.read(2)
    if head[:1] != pickle.PROTO:
        raise CheckpointReadError(
            f"{path} is not a PyTorch checkpoint: neither a zip archive nor a pickle (it starts with {head!r})."
        )
    return _torch_load(path, mmap=False)  # the legacy (pre-1.6) format cannot be memory-mapped


def _check_records(path: Path, archive: zipfile.ZipFile, max_bytes: int, read: Callable[[str], bool] = lambda name: True) -> None:
    """Every record that will be read is stored uncompressed, and together they fit `max_bytes`."""
    total = 0
    for info in filter(lambda info: read(info.filename), archive.infolist()):
        if info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointReadError(
                f"{path}: record {info.filename!r} is compressed ({info.compress_size:,} bytes inflating to "
                f"{info.file_size:,}); torch.save never compresses, so the file is refused rather than inflated."
            )
        total += info.file_size
    if total > max_bytes:
        raise CheckpointReadError(f"{path}: its records add up to {total:,} bytes, over the limit of {max_bytes:,}.")


def _torch_load(path: Path, mmap: bool) -> Any:
    try:
        with torch.serialization.safe_globals(list(ALLOWED_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        refused = _unsafe_globals(path)
        detail = f"it needs {', '.join(refused)}, which is not on the allow-list" if refused else _unpickler_reason(str(error))
        raise CheckpointReadError(f"{path} was refused by the weights-only reader: {detail}. Nothing in it was executed.") from None
    except Exception as error:  # torch raises several types for damaged archives
        raise CheckpointReadError(f"{path} could not be read as a PyTorch checkpoint ({type(error).__name__}: {error}).") from None


def _unpickler_reason(message: str) -> str:
    """The one line of torch's long weights-only error that says what was refused."""
    for line in message.splitlines():
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].split(" Please use")[0].strip().rstrip(".")
    return message.splitlines()[0] if message else "unknown reason"


def _unsafe_globals(path: Path) -> list[str]:
    """The globals a file's pickle names beyond the allow-list (found by scanning, not running)."""
    try:
        with torch.serialization.safe_globals(list(ALLOWED_GLOBALS)):
            return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # the scan is only for the message
        return []


# ---------------------------------------------------------------------------- TorchScript
def _is_torchscript(archive: zipfile.ZipFile) -> bool:
    return any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist())


def _is_torchscript_data(name: str) -> bool:
    """The records a tensor-only read of a TorchScript archive opens: its pickle and tensor data."""
    parts = name.split("/")
    return (len(parts) == 2 and parts[1] == "data.pkl") or (len(parts) == 3 and parts[1] == "data")


class ScriptModuleRecord:
    """Stands in for a TorchScript module class while unpickling: keeps its attributes, runs nothing."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class _StorageType:
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *unused: Any) -> torch.Tensor:
    return storage.as_strided(size, stride, offset)


class _TensorOnlyUnpickler(pickle.Unpickler):
    """Resolves only tensor rebuilding and containers; `__torch__.*` classes become records."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, path: Path) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.path = archive, prefix, path
        self.classes: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "__torch__" or module.startswith("__torch__."):
            qualified = f"{module}.{name}"
            return self.classes.setdefault(qualified, type(name, (ScriptModuleRecord,), {}))
        raise CheckpointReadError(f"{self.path}: the TorchScript archive names {module}.{name}, which a tensor-only read refuses.")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        kind, storage_type, key, _location, numel = pid
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise CheckpointReadError(f"{self.path}: unexpected persistent record {pid!r}.")
        raw = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
        tensor = torch.frombuffer(raw, dtype=storage_type.dtype) if raw else torch.empty(0, dtype=storage_type.dtype)
        return tensor[:numel]


def read_torchscript_tensors(archive: zipfile.ZipFile, path: Path) -> dict[str, torch.Tensor]:
    """Every tensor attribute of a TorchScript archive's modules, by dotted name (as `state_dict`)."""
    (data_name,) = [name for name in archive.namelist() if name.endswith("/data.pkl") and name.count("/") == 1]
    prefix = data_name[: -len("data.pkl")]
    try:
        root = _TensorOnlyUnpickler(archive.read(data_name), archive, prefix, path).load()
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError) as error:
        if isinstance(error, CheckpointReadError):
            raise
        raise CheckpointReadError(f"{path} is a damaged TorchScript archive ({type(error).__name__}: {error}).") from None
    tensors: dict[str, torch.Tensor] = {}
    _collect(root, "", tensors)
    return tensors


def _collect(node: Any, prefix: str, out: dict[str, torch.Tensor]) -> None:
    state = getattr(node, "state", None)
    if not isinstance(state, dict):
        return
    for name, value in state.items():  # flags such as `training` are neither tensors nor records
        if torch.is_tensor(value):
            out[prefix + name] = value
        else:
            _collect(value, f"{prefix}{name}.", out)
