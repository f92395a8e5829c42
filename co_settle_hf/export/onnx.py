"""An adapter and its frozen backbone as one ONNX graph: pixel_values (B, 3, H, W) -> features (B, h, w, D).

The graph computes `CoSettleModel.forward(...).features`: the backbone, the position interpolation the
adapter records (`config.position_interpolation`) and the projection. Batch, height and width are
dynamic; height and width must be multiples of the patch size, as for the PyTorch model. It is traced
by `torch.export` (`torch.onnx.export(dynamo=True)`), so a size the backbone branches on in Python
would be fixed at trace time: the example traced with is a batch of 2 at a non-square grid that no
backbone is trained at, and `check_onnx` runs the graph at other sizes against PyTorch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from ..errors import SettingsError
from ..modeling_co_settle import CoSettleModel
from ..staging import staged_entries

#: The patch grid the graph is traced at (rows, columns): not square, and no backbone's training grid.
TRACE_GRID = (5, 7)
#: The sizes `co-settle export onnx` checks the graph at, against PyTorch (pixels, height x width).
CHECK_SIZES = ((224, 224), (480, 880))
#: Above this many parameter bytes the weights go to `<output>.data` (protobuf's 2 GiB limit).
INLINE_WEIGHTS_BYTES = 1 << 30


class _Features(nn.Module):
    """The model with its one exported output, the adapted features on the patch grid."""

    def __init__(self, model: CoSettleModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.model(pixel_values).features


def export_onnx(model: CoSettleModel, output: str | os.PathLike, *, overwrite: bool = False, opset: int | None = None) -> Path:
    """Write `model` (fp32, eval) to the ONNX file `output`, staged and renamed into place (`co_settle_hf.staging`)."""
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists: pass overwrite=True (--overwrite) to replace it")
    if output.suffix != ".onnx":
        raise SettingsError(f"the ONNX output should end in .onnx, got {output}")
    graph = _Features(model.float()).eval()  # the wrapper too: the exporter reads its mode
    patch = model.patch_size
    example = torch.zeros(2, 3, TRACE_GRID[0] * patch, TRACE_GRID[1] * patch, device=model.device)
    rows, cols = torch.export.Dim("patch_rows", min=1), torch.export.Dim("patch_cols", min=1)
    weights_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    with staged_entries(output.parent, output.name) as staging:  # the graph moves in last, after its weights file
        staged = staging / output.name
        torch.onnx.export(
            graph, (example,), staged, dynamo=True, opset_version=opset, verbose=False,
            input_names=["pixel_values"], output_names=["features"],
            dynamic_shapes={"pixel_values": {0: torch.export.Dim("batch", min=1), 2: patch * rows, 3: patch * cols}},
            external_data=weights_bytes > INLINE_WEIGHTS_BYTES,
        )
    return output


def check_onnx(model: CoSettleModel, path: str | os.PathLike, sizes: Sequence[tuple[int, int]] = CHECK_SIZES, batch: int = 2) -> dict[tuple[int, int], float]:
    """Max |onnxruntime - PyTorch| of the features on one random batch per (height, width)."""
    try:
        import onnxruntime
    except ImportError:
        raise ImportError("checking an ONNX export needs onnxruntime: pip install 'co-settle-hf[export]'") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    differences = {}
    for height, width in sizes:
        pixels = torch.randn(batch, 3, height, width, generator=generator)
        with torch.no_grad():
            expected = model(pixels.to(model.device)).features.float().cpu()
        (got,) = session.run(None, {"pixel_values": pixels.numpy()})
        if got.shape != tuple(expected.shape):
            raise RuntimeError(f"{path}: features of shape {got.shape} at {height}x{width}, PyTorch gives {tuple(expected.shape)}")
        differences[(height, width)] = float((torch.from_numpy(got) - expected).abs().max())
    return differences
