"""How a fresh projection is initialised: the table of the ways the released models do it.

The authors build the adapter inside each backbone's model file, so it gets that file's weight
initialisation (SPEC.md section 8): truncated normal (std `initializer_range`) with zero bias in the
DINO, iBOT, BLIP, I-JEPA and DINOv2 files, xavier-uniform with zero bias in the MAE and MoCo v3
files, and PyTorch's own `nn.Linear` default in the CLIP file. A LayerNorm always starts at (1, 0).
"""

from __future__ import annotations

from typing import Callable

from torch import nn


def _trunc_normal(linear: nn.Linear, std: float) -> None:
    nn.init.trunc_normal_(linear.weight, std=std)
    nn.init.zeros_(linear.bias)


def _xavier(linear: nn.Linear, std: float) -> None:
    nn.init.xavier_uniform_(linear.weight)
    nn.init.zeros_(linear.bias)


def _pytorch_default(linear: nn.Linear, std: float) -> None:
    linear.reset_parameters()


PROJECTION_INITS: dict[str, Callable[[nn.Linear, float], None]] = {
    "trunc_normal": _trunc_normal,
    "xavier": _xavier,
    "default": _pytorch_default,
}
