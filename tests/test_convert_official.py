"""Converting the authors' released .pth checkpoints, on checkpoints fabricated with their key layout."""

from __future__ import annotations

import pickle

import pytest
import torch
from tiny_backbones import save_backbone

from co_settle_hf import CoSettleModel
from co_settle_hf.cli import main as cli
from co_settle_hf.official.converting import (
    OfficialCheckpointError,
    convert_official_checkpoint,
)


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    return str(save_backbone("vit", tmp_path_factory.mktemp("vit")))


def fabricate(kind: str, width: int = 32, ddp: bool = True) -> dict:
    prefix = ("module." if ddp else "") + "adapter.adapter."
    torch.manual_seed(1)
    names = ["adapter_linear"] if kind == "linear" else [f"adapter_linear{i}" for i in range(1, {"mlp2": 3, "mlp3": 4}[kind])]
    state = {"module.encoder.blocks.0.attn.qkv.weight": torch.randn(3 * width, width)}  # backbone weights are ignored
    for name in names:
        state[f"{prefix}{name}.weight"] = torch.randn(width, width)
        state[f"{prefix}{name}.bias"] = torch.randn(width)
    state[f"{prefix}adapter_layer_norm1.weight"] = torch.rand(width)
    state[f"{prefix}adapter_layer_norm1.bias"] = torch.randn(width)
    return {"model": state, "epoch": 4}


@pytest.mark.parametrize("kind", ["linear", "mlp2", "mlp3"])
def test_convert_each_variant(kind, vit_dir, tmp_path):
    checkpoint = fabricate(kind, ddp=kind != "mlp2")
    torch.save(checkpoint, tmp_path / "checkpoint.pth")
    out = convert_official_checkpoint(tmp_path / "checkpoint.pth", vit_dir, tmp_path / "adapter")
    model = CoSettleModel.from_pretrained(out)
    assert model.config.projection == kind
    prefix = "module.adapter.adapter." if kind != "mlp2" else "adapter.adapter."
    first = "adapter_linear" if kind == "linear" else "adapter_linear1"
    assert torch.equal(model.projection.linears[0].weight, checkpoint["model"][f"{prefix}{first}.weight"])
    assert torch.equal(model.projection.norm.bias, checkpoint["model"][f"{prefix}adapter_layer_norm1.bias"])
    # The converted projection is what the released code computes: tanh after each hidden linear.
    z = torch.randn(3, 32)
    expected = z
    for index, linear in enumerate(model.projection.linears):
        expected = linear(expected)
        if index < len(model.projection.linears) - 1 or kind == "linear":
            expected = torch.tanh(expected)
    expected = torch.nn.functional.layer_norm(expected, (32,), model.projection.norm.weight, model.projection.norm.bias)
    assert torch.allclose(model.project(z), expected, atol=1e-6)


def test_checkpoint_without_projection_keys(vit_dir, tmp_path):
    torch.save({"model": {"encoder.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    with pytest.raises(OfficialCheckpointError, match="holds no Co-Settle projection"):
        convert_official_checkpoint(tmp_path / "other.pth", vit_dir, tmp_path / "out")


def test_width_mismatch(vit_dir, tmp_path):
    torch.save(fabricate("linear", width=48), tmp_path / "wide.pth")
    with pytest.raises(OfficialCheckpointError, match="width 48.*hidden size 32"):
        convert_official_checkpoint(tmp_path / "wide.pth", vit_dir, tmp_path / "out")


def test_pickled_code_is_never_run(vit_dir, tmp_path):
    class Payload:
        def __reduce__(self):
            return (exec, ("open('/tmp/co_settle_pwned', 'w').write('x')",))

    with open(tmp_path / "evil.pth", "wb") as handle:
        pickle.dump({"model": Payload()}, handle)
    with pytest.raises(OfficialCheckpointError, match="refused by the weights-only reader"):
        convert_official_checkpoint(tmp_path / "evil.pth", vit_dir, tmp_path / "out")
    import os
    assert not os.path.exists("/tmp/co_settle_pwned")


def test_trainer_checkpoint_with_args_and_visual_prefix(vit_dir, tmp_path):
    """The authors' save_model layout: args is an argparse.Namespace; CLIP's projection sits under visual."""
    import argparse

    state = {key.replace("module.", "visual."): value for key, value in fabricate("linear")["model"].items()}
    checkpoint = {"model": state, "optimizer": {"state": {}, "param_groups": []}, "epoch": 4,
                  "scaler": {"scale": 1024.0}, "args": argparse.Namespace(base_model="clip", fusion_net="linear")}
    torch.save(checkpoint, tmp_path / "checkpoint.pth")
    model = CoSettleModel.from_pretrained(convert_official_checkpoint(tmp_path / "checkpoint.pth", vit_dir, tmp_path / "out"))
    assert torch.equal(model.projection.linears[0].weight, state["visual.adapter.adapter.adapter_linear.weight"])


def test_text_file_as_checkpoint_names_it(vit_dir, tmp_path):
    (tmp_path / "readme.pth").write_text("not a checkpoint")
    with pytest.raises(OfficialCheckpointError, match=r"readme\.pth is not a PyTorch checkpoint"):
        convert_official_checkpoint(tmp_path / "readme.pth", vit_dir, tmp_path / "out")


def test_import_official_checkpoint_mode_and_the_deprecated_command(vit_dir, tmp_path, capsys):
    torch.save(fabricate("mlp2"), tmp_path / "checkpoint.pth")
    cli(["import-official", "--checkpoint", str(tmp_path / "checkpoint.pth"), "--backbone", vit_dir, "--output-dir", str(tmp_path / "a")])
    assert CoSettleModel.from_pretrained(tmp_path / "a").config.projection == "mlp2"
    cli(["convert-official", str(tmp_path / "checkpoint.pth"), "--backbone", vit_dir, "--output", str(tmp_path / "b")])
    assert "convert-official is deprecated" in capsys.readouterr().err
    assert CoSettleModel.from_pretrained(tmp_path / "b").config.projection == "mlp2"
    with pytest.raises(SystemExit, match="co-settle import-official: give NAME .*not both"):  # a name and a checkpoint at once
        cli(["import-official", "dino", "--checkpoint", str(tmp_path / "checkpoint.pth"), "--output-dir", str(tmp_path / "c")])
    with pytest.raises(SystemExit, match="co-settle import-official: .*other.pth"):  # a library refusal, named by the CLI
        cli(["import-official", "--checkpoint", str(tmp_path / "other.pth"), "--backbone", vit_dir, "--output-dir", str(tmp_path / "d")])
