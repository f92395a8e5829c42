"""The projection of an authors' training checkpoint (yafeng19/Co-Settle), put on a backbone you name.

`co-settle import-official --checkpoint FILE.pth --backbone ID --output-dir DIR` (the older
`co-settle convert-official`, deprecated, forwards to it).

Their `.pth` files hold the whole training state; the projection sits under
`adapter.adapter.` as `adapter_linear` (linear variant) or `adapter_linear1..3` (MLP variants)
plus `adapter_layer_norm1`, possibly behind a DDP `module.` prefix and, for CLIP, `visual.`.
Files are read by `official.reading.read_checkpoint`: weights-only, bounded, never run as code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ..backbones.encoder import BackboneEncoder
from ..errors import CheckpointError
from ..modeling_co_settle import CoSettleModel
from .reading import CheckpointReadError, read_checkpoint

PREFIX = "adapter.adapter."
_LINEAR = re.compile(r"^adapter_linear(\d*)\.(weight|bias)$")
_NORM = re.compile(r"^adapter_layer_norm1\.(weight|bias)$")


class OfficialCheckpointError(CheckpointError):
    """The file is not a Co-Settle checkpoint this converter understands."""


def extract_projection(checkpoint: dict[str, Any], source: str = "checkpoint") -> tuple[str, dict[str, torch.Tensor]]:
    """(projection kind, state dict in CoSettleModel names) from a released checkpoint dict."""
    state = checkpoint
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    found: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        name = name.removeprefix("module.").removeprefix("visual.")
        if not name.startswith(PREFIX) or not torch.is_tensor(tensor):
            continue
        local = name[len(PREFIX):]
        if match := _LINEAR.match(local):
            index = int(match.group(1) or 1) - 1
            found[f"projection.linears.{index}.{match.group(2)}"] = tensor.float()
        elif match := _NORM.match(local):
            found[f"projection.norm.{match.group(1)}"] = tensor.float()
    linears = {key.split(".")[2] for key in found if ".linears." in key}
    if not linears or "projection.norm.weight" not in found:
        raise OfficialCheckpointError(
            f"{source} holds no Co-Settle projection (expected keys {PREFIX}adapter_linear[1-3].* and "
            f"{PREFIX}adapter_layer_norm1.*, optionally behind 'module.' or 'visual.')."
        )
    kind = {1: "linear", 2: "mlp2", 3: "mlp3"}.get(len(linears))
    if kind is None or linears != {str(i) for i in range(len(linears))}:
        raise OfficialCheckpointError(f"{source}: unexpected projection layers {sorted(linears)}.")
    return kind, found


def convert_official_checkpoint(checkpoint_path: str | Path, backbone: str | BackboneEncoder, output_dir: str | Path, revision: str | None = None) -> Path:
    """Write an adapter folder (config, safetensors, card) for `backbone` from a released `.pth`."""
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist.")
    try:
        checkpoint = read_checkpoint(path)
    except CheckpointReadError as error:
        raise OfficialCheckpointError(str(error)) from None
    if not isinstance(checkpoint, dict):
        raise OfficialCheckpointError(f"{path} does not hold a state dict.")
    kind, state = extract_projection(checkpoint, str(path))
    model = CoSettleModel.from_backbone(backbone, revision=revision, projection=kind)
    width = state["projection.norm.weight"].shape[0]
    if width != model.config.hidden_size:
        raise OfficialCheckpointError(
            f"{path} has a projection of width {width}, but backbone {model.config.base_model_name_or_path!r} "
            f"has hidden size {model.config.hidden_size}."
        )
    model.load_state_dict(state)
    output = Path(output_dir)
    model.save_pretrained(output, model_card={"training": {"source": f"converted from the authors' checkpoint {path.name}"}})
    return output
