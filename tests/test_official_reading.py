"""Reading checkpoint files safely and within bounds: one test per way a file can be hostile or wrong."""

from __future__ import annotations

import argparse
import pickle
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch

from co_settle_hf.official.reading import CheckpointReadError, read_checkpoint

MARKER_CODE = "open({marker!r}, 'w').write('executed')"


def trainer_checkpoint() -> dict:
    """What the authors' `save_model` writes: the whole model, optimizer, epoch, scaler and args."""
    args = argparse.Namespace(base_model="dino", fusion_net="linear", lr=1.5e-4, opts=[], resume="x.pth", distributed=True)
    return {
        "model": {"adapter.adapter.adapter_linear.weight": torch.randn(4, 4)},
        "optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(4, 4)}}, "param_groups": [{"lr": 1e-4, "params": [0]}]},
        "epoch": 4,
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000, "_growth_tracker": 7},
        "args": args,
    }


def test_trainer_checkpoint_with_namespace_is_read(tmp_path):
    checkpoint = trainer_checkpoint()
    torch.save(checkpoint, tmp_path / "checkpoint.pth")
    with pytest.raises(pickle.UnpicklingError):  # plain weights-only reading stops at the Namespace
        torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    loaded = read_checkpoint(tmp_path / "checkpoint.pth")
    assert loaded["args"] == checkpoint["args"] and loaded["epoch"] == 4
    assert torch.equal(loaded["model"]["adapter.adapter.adapter_linear.weight"], checkpoint["model"]["adapter.adapter.adapter_linear.weight"])


def test_size_limit_names_the_file(tmp_path):
    torch.save(trainer_checkpoint(), tmp_path / "big.pth")
    with pytest.raises(CheckpointReadError, match=r"big\.pth is [\d,]+ bytes, over the limit of 1,000 bytes"):
        read_checkpoint(tmp_path / "big.pth", max_bytes=1000)


def test_text_file_names_the_file(tmp_path):
    (tmp_path / "notes.pth").write_text("these are not weights\n")
    with pytest.raises(CheckpointReadError, match=r"notes\.pth is not a PyTorch checkpoint"):
        read_checkpoint(tmp_path / "notes.pth")


def test_truncated_archive_names_the_file(tmp_path):
    torch.save(trainer_checkpoint(), tmp_path / "cut.pth")
    data = (tmp_path / "cut.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointReadError, match=r"cut\.pth"):
        read_checkpoint(tmp_path / "cut.pth")


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (MARKER_CODE.format(marker=str(self.marker)),))


@pytest.mark.parametrize("layout", ["bare pickle", "inside a torch.save archive"])
def test_malicious_pickle_is_refused_unexecuted(tmp_path, layout):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    if layout == "bare pickle":
        path.write_bytes(pickle.dumps({"model": _Payload(marker)}, protocol=2))
    else:
        torch.save({"model": {}}, path)
        _replace_record(path, "data.pkl", pickle.dumps({"model": _Payload(marker)}, protocol=2))
    with pytest.raises(CheckpointReadError, match=r"evil\.pth was refused.*exec.*Nothing in it was executed"):
        read_checkpoint(path)
    assert not marker.exists()


def _replace_record(path: Path, suffix: str, data: bytes) -> None:
    """Rewrite one record of a zip archive (stored, as torch writes them)."""
    with zipfile.ZipFile(path) as archive:
        records = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in records:
            archive.writestr(name, data if name.endswith(suffix) else content)


BOMB = textwrap.dedent(
    """
    import collections, io, pickle, sys, zipfile
    import torch
    from co_settle_hf.official.reading import CheckpointReadError, read_checkpoint

    def peak_kib():  # this process image's peak RSS (ru_maxrss would include the parent's, from before exec)
        return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM'))

    class Storage: pass
    class Tensor:
        def __reduce__(self):
            return (torch._utils._rebuild_tensor_v2, (Storage(), 0, (2**28,), (1,), False, collections.OrderedDict()))
    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", 2**28) if isinstance(obj, Storage) else None

    path = sys.argv[1]
    pkl = io.BytesIO(); Pickler(pkl, protocol=2).dump({"w": Tensor()})
    with zipfile.ZipFile(path, "w") as out:  # a torch.save archive whose 1 GiB tensor record is deflated
        out.writestr("archive/data.pkl", pkl.getvalue())
        out.writestr("archive/byteorder", "little")
        info = zipfile.ZipInfo("archive/data/0"); info.compress_type = zipfile.ZIP_DEFLATED
        with out.open(info, "w", force_zip64=True) as record:
            for _ in range(64): record.write(bytes(16 * 2**20))
        out.writestr("archive/version", "3\\n")
    before = peak_kib()
    try:
        read_checkpoint(path)
        print("READ")
    except CheckpointReadError as error:
        print("REFUSED", error)
    print("GROWTH_KIB", peak_kib() - before)
    """
)


def test_deflate_zip_bomb_is_refused_without_inflating(tmp_path):
    path = tmp_path / "bomb.pth"
    result = subprocess.run([sys.executable, "-c", BOMB, str(path)], capture_output=True, text=True, check=True)
    assert path.stat().st_size < 1.1 * 2**20  # a 1 MB file standing for a 1 GiB tensor
    assert "REFUSED" in result.stdout and "bomb.pth: record 'archive/data/0' is compressed" in result.stdout
    growth_mib = int(result.stdout.split("GROWTH_KIB")[1]) / 1024
    assert growth_mib < 64, result.stdout  # torch.load itself takes over 1 GiB on this file


class _Scripted(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln_pre = torch.nn.LayerNorm(8)
        self.attn = torch.nn.MultiheadAttention(8, 2)
        self.proj = torch.nn.Parameter(torch.randn(8, 4).half())
        self.register_buffer("steps", torch.arange(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln_pre(x) @ self.proj.float()


def test_torchscript_tensors_read_without_its_code(tmp_path):
    module = torch.jit.trace(_Scripted(), torch.randn(2, 8))
    module.save(str(tmp_path / "ViT-B-16.pt"))
    expected = module.state_dict()
    # Break its code: TorchScript would have to compile it, a tensor-only read never opens it.
    with zipfile.ZipFile(tmp_path / "ViT-B-16.pt") as archive:
        code = [name for name in archive.namelist() if "/code/" in name]
    for name in code:
        _replace_record(tmp_path / "ViT-B-16.pt", name, b"raise SystemExit('code ran')\n")
    with pytest.raises(Exception):
        torch.jit.load(str(tmp_path / "ViT-B-16.pt"))
    tensors = read_checkpoint(tmp_path / "ViT-B-16.pt")
    assert set(tensors) == set(expected)
    for name, tensor in expected.items():
        assert tensors[name].dtype == tensor.dtype and torch.equal(tensors[name], tensor), name


def test_torchscript_archive_naming_foreign_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.jit.trace(_Scripted(), torch.randn(2, 8)).save(str(tmp_path / "evil.pt"))
    _replace_record(tmp_path / "evil.pt", "/data.pkl", pickle.dumps(_Payload(marker), protocol=2))
    with pytest.raises(CheckpointReadError, match=r"evil\.pt: the TorchScript archive names (__builtin__|builtins)\.exec"):
        read_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()
