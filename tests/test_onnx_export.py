"""ONNX export: one graph from pixels to adapted features, dynamic batch and size, equal to PyTorch."""

from __future__ import annotations

import onnx
import pytest
import torch
import torch.nn.functional as F
from tiny_backbones import build_backbone, save_backbone

from co_settle_hf import BackboneEncoder, CoSettleModel
from co_settle_hf.backbones.positions import authors_position_table
from co_settle_hf.cli import main
from co_settle_hf.export import check_onnx, export_onnx

TOLERANCE = 1e-4  # the bound on max |onnxruntime - PyTorch|

# (family, position interpolation): each family's transformers resize and the released models' own ways.
CASES = [
    ("vit", "transformers"), ("vit", "dino"), ("dinov2", "transformers"), ("dinov2", "antialias"),
    ("clip_vision_model", "antialias"), ("clip", "transformers"),
]


@pytest.mark.parametrize("model_type, interpolation", CASES)
def test_onnx_graph_equals_pytorch_at_two_sizes(tmp_path, model_type, interpolation):
    model = CoSettleModel.from_backbone(BackboneEncoder(build_backbone(model_type)), position_interpolation=interpolation)
    with torch.no_grad():  # a trained projection, not the identity-like initialisation
        for parameter in model.projection.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    path = export_onnx(model, tmp_path / "model.onnx")
    differences = check_onnx(model, path, [(224, 224), (480, 880)], batch=2)
    assert max(differences.values()) < TOLERANCE, differences
    assert check_onnx(model, path, [(224, 224)], batch=1)[(224, 224)] < TOLERANCE  # batch too is dynamic
    graph_input = onnx.load(path).graph.input[0].type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in graph_input] == [True, False, True, True]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # nothing staged is left behind


def test_released_resize_keeps_the_table_at_its_own_grid_and_follows_interpolate_elsewhere():
    torch.manual_seed(0)
    side, width = 14, 16
    table = torch.randn(1, 1 + side * side, width)
    square = table[0, 1:].reshape(1, side, side, width).permute(0, 3, 1, 2)
    assert torch.equal(authors_position_table(table, 1, (side, side), 0.1, False), table)
    assert torch.equal(authors_position_table(table, 1, (side, side), None, True), table)
    for grid in [(30, 55), (16, 16), (1, 3)]:
        factor = ((grid[0] + 0.1) / side, (grid[1] + 0.1) / side)
        expected = F.interpolate(square, scale_factor=factor, mode="bicubic").permute(0, 2, 3, 1).reshape(-1, width)
        resized = authors_position_table(table, 1, grid, 0.1, False)
        assert resized.shape == (1, 1 + grid[0] * grid[1], width)
        assert torch.equal(resized[0, :1], table[0, :1])
        assert torch.allclose(resized[0, 1:], expected, atol=2e-5, rtol=0)


def test_export_command_writes_checks_and_refuses_to_overwrite(tmp_path, capsys):
    adapter = tmp_path / "adapter"
    CoSettleModel.from_backbone(str(save_backbone("vit", tmp_path / "vit"))).save_pretrained(adapter)
    out = tmp_path / "onnx" / "vit.onnx"
    main(["export", "onnx", str(adapter), "--output", str(out), "--check-sizes", "32x48", "64x32"])
    printed = capsys.readouterr().out
    assert f"Wrote {out}" in printed and "features (B, H/16, W/16, 32)" in printed
    reported = [float(line.rsplit("= ", 1)[1]) for line in printed.splitlines() if "max |onnxruntime - PyTorch|" in line]
    assert len(reported) == 2 and max(reported) < TOLERANCE
    before = out.read_bytes()
    with pytest.raises(SystemExit, match=f"{out} exists"):
        main(["export", "onnx", str(adapter), "--output", str(out), "--check-sizes"])
    assert out.read_bytes() == before
    with pytest.raises(SystemExit):
        main(["export", "onnx", str(adapter), "--output", str(out), "--check-sizes", "480-880"])
    assert "HEIGHTxWIDTH" in capsys.readouterr().err
    main(["export", "onnx", str(adapter), "--output", str(out), "--overwrite", "--check-sizes"])
    assert sorted(p.name for p in out.parent.iterdir()) == ["vit.onnx"]
