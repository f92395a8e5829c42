"""One code path from any supported vision transformer to its final, normed patch tokens.

`BackboneEncoder` wraps a frozen transformers model. It runs the model's own forward (with
positional embeddings interpolated to the input size), drops every prefix token and returns the
patch tokens in row-major grid order. PEA is applied through a short-lived forward hook on the
module that produces the positional information, so the three views of a training step can go
through the backbone as one batch while only the backward copies see cropped positions.
"""

from __future__ import annotations

import inspect
import json
import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F
import transformers
from torch import Tensor, nn
from transformers.models.auto.modeling_auto import MODEL_MAPPING
from transformers.utils import cached_file
from transformers.utils.hub import extract_commit_hash

from ..errors import SettingsError
from ..hub.arguments import download_kwargs
from ..objective.pea import crop_windows, interpolate_and_crop, upsampled_size
from .families import BackboneFamily, family_for
from .inputs import check_pixel_values
from .positions import DEFAULT_POSITION_INTERPOLATION, POSITION_INTERPOLATIONS, interpolation

#: What `--backbone_precision` may ask: the dtype the frozen backbone runs under autocast (None: as loaded).
BACKBONE_PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}


class PEAUnavailableError(SettingsError):
    """PEA was requested for a backbone without positional embeddings to augment."""


@dataclass(frozen=True)
class PositionCrop:
    """PEA for the LAST `len(offsets)` images of a batch.

    Attributes:
        alpha: the grid is upsampled to int((1 + alpha) * h) x int((1 + alpha) * w).
        offsets: (K, 2) long tensor of (row, col) window offsets in the upsampled grid, one per
            image that gets PEA (repeat one row for the released code's per-batch offset).
    """

    alpha: float
    offsets: Tensor


def resolve_attribute(root: Any, path: str | None) -> Any:
    """`root.a.b.c` for path "a.b.c"; None when any step is missing or None."""
    if path is None:
        return None
    for name in path.split("."):
        root = getattr(root, name, None)
        if root is None:
            return None
    return root


def _read_processor_dict(name_or_path: str, revision: str | None, subfolder: str, hub_kwargs: dict[str, Any]) -> dict | None:
    """The checkpoint's `preprocessor_config.json` as a dict, if it has one (saved again with adapters)."""
    try:
        path = cached_file(
            name_or_path, "preprocessor_config.json", revision=revision, subfolder=subfolder, **hub_kwargs,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
    except OSError:
        return None
    if path is None:
        return None
    try:
        with open(path) as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from None


def _resolved_commit(name_or_path: str, revision: str | None, subfolder: str, hub_kwargs: dict[str, Any]) -> str | None:
    """The commit a Hub checkpoint was loaded from (None for a local folder), to pin it."""
    if os.path.isdir(name_or_path):
        return None
    config_path = cached_file(name_or_path, "config.json", revision=revision, subfolder=subfolder, **hub_kwargs)
    return extract_commit_hash(config_path, None) or revision


def _has_pooler_option(model_class: type, config: Any) -> bool:
    """Whether the class that will be built takes `add_pooling_layer` (ViT, DeiT, BEiT do)."""
    if model_class is transformers.AutoModel:
        model_class = MODEL_MAPPING.get(type(config), model_class)
    return "add_pooling_layer" in inspect.signature(model_class.__init__).parameters


def _resize_grid(grid: Tensor, size: tuple[int, int]) -> Tensor:
    """Bicubic resize of an (h, w, D) grid; the identity (exactly) when the size already fits."""
    if tuple(grid.shape[:2]) == tuple(size):
        return grid
    resized = F.interpolate(
        grid.permute(2, 0, 1)[None].float(), size=size, mode="bicubic", align_corners=False
    )
    return resized[0].permute(1, 2, 0).to(grid.dtype)


class BackboneEncoder(nn.Module):
    """A frozen transformers vision model seen as a patch-token encoder.

    It is a module, so an adapter can hold it as a registered submodule (moved by `.to`, listed by
    `print`), but it stays frozen: no gradients, and eval mode whatever `train()` asks. It is also an
    evaluation encoder: it has `image_mean`, `image_std` and `patch_size`, and calling it on
    normalised pixels returns (B, h, w, D) patch features.
    """

    def __init__(
        self,
        model: nn.Module,
        name_or_path: str | None = None,
        revision: str | None = None,
        image_mean: tuple[float, ...] | None = None,
        image_std: tuple[float, ...] | None = None,
        image_processor: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        config = model.config
        self.family: BackboneFamily = family_for(config.model_type, name_or_path)
        if config.model_type in self.family.multimodal_types:
            model = model.vision_model
            config = model.config
        for key, value in self.family.load_kwargs.items():  # e.g. ViTMAE must keep every token
            setattr(config, key, value)
        self.model = model.eval().requires_grad_(False)
        self.config = config
        self.name_or_path = name_or_path or getattr(config, "_name_or_path", None) or None
        self.revision = revision
        self.model_type: str = config.model_type
        self.hidden_size: int = int(config.hidden_size)
        patch = config.patch_size
        self.patch_size: int = int(patch[0] if isinstance(patch, (tuple, list)) else patch)
        self.num_prefix_tokens: int = self.family.prefix_tokens(config)
        self.image_mean = tuple(image_mean or self.family.image_mean)
        self.image_std = tuple(image_std or self.family.image_std)
        self.image_processor = image_processor  # the checkpoint's processor settings, if it has them

        self.position_kind = self.family.positions
        if self.position_kind == "relative" and self._pos_table is not None:
            self.position_kind = "learned"  # BEiT with use_absolute_position_embeddings
        self.apply_final_norm = True
        self.position_interpolation = "transformers"
        #: Run the backbone under autocast to this dtype (e.g. bfloat16 where the CPU has bf16 matmuls);
        #: a runtime choice, not part of any saved model; tokens come back as float32.
        self.autocast_dtype: torch.dtype | None = None
        accepted = inspect.signature(self.model.forward).parameters
        self._forward_kwargs = {"interpolate_pos_encoding": True} if "interpolate_pos_encoding" in accepted else {}

    # Looked up on demand, never stored: a module attribute would register them a second time.
    @property
    def _pos_table(self) -> Tensor | None:
        return resolve_attribute(self.model, self.family.pos_embed)

    @property
    def _final_norm(self) -> nn.Module | None:
        return resolve_attribute(self.model, self.family.final_norm)

    @property
    def supports_pea(self) -> bool:
        """Whether PEA has positions to augment: the one place that decides it (not for a relative bias)."""
        return self.position_kind != "relative"

    def train(self, mode: bool = True) -> "BackboneEncoder":
        """Frozen means eval mode too (no dropout, no drop-path), whatever the parent asks."""
        return super().train(False)

    def extra_repr(self) -> str:
        revision = f"@{self.revision[:12]}" if self.revision else ""
        return f"family={self.family.name!r}, name_or_path={self.name_or_path!r}{revision}, frozen=True"

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, name_or_path: str, revision: str | None = None, *, subfolder: str = "", **kwargs: Any) -> "BackboneEncoder":
        """Load a backbone by Hub id or local path through transformers' own `from_pretrained`.

        Every keyword argument goes to the model's `from_pretrained` (`dtype`, `device_map`,
        `attn_implementation`, `proxies`, ...); those a file read takes (`cache_dir`, `token`, `proxies`,
        `local_files_only`, ...) also go to the config and processor reads. The resolved commit is kept
        as `revision`; a local folder is kept as its absolute path.
        """
        if os.path.isdir(name_or_path):
            name_or_path = os.path.abspath(name_or_path)
        files = download_kwargs(kwargs)
        config = transformers.AutoConfig.from_pretrained(name_or_path, revision=revision, subfolder=subfolder, **files)
        family = family_for(config.model_type, name_or_path)
        if family.model_class and config.model_type in family.model_types:
            model_class = getattr(transformers, family.model_class)
        else:
            model_class = transformers.AutoModel
        for key, value in family.load_kwargs.items():  # before loading, as the model may read them in __init__
            setattr(config, key, value)
        if _has_pooler_option(model_class, config):  # patch tokens only: no pooler to build (or to warn about)
            kwargs["add_pooling_layer"] = False
        model = model_class.from_pretrained(name_or_path, config=config, revision=revision, subfolder=subfolder, **kwargs)
        commit = _resolved_commit(name_or_path, revision, subfolder, files)
        processor = _read_processor_dict(name_or_path, commit, subfolder, files)
        stats = processor if processor and "image_mean" in processor and "image_std" in processor else {}
        return cls(
            model, name_or_path=name_or_path, revision=commit, image_processor=processor,
            image_mean=stats.get("image_mean"), image_std=stats.get("image_std"),
        )

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """A standard transformers checkpoint of the frozen model (and its processor settings)."""
        if not isinstance(self.model, transformers.PreTrainedModel):
            raise ValueError(
                f"The {self.family.name} tower of {self.name_or_path!r} is not a transformers model on its own "
                f"({type(self.model).__name__}), so it cannot be bundled: pass a standalone vision model instead."
            )
        self.model.save_pretrained(folder)
        if self.image_processor is not None:
            with open(os.path.join(folder, "preprocessor_config.json"), "w") as handle:
                json.dump(self.image_processor, handle, indent=2)

    # ------------------------------------------------------------------ forward
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        return height // self.patch_size, width // self.patch_size

    @torch.no_grad()
    def patch_tokens(self, pixel_values: Tensor, pea: PositionCrop | None = None) -> tuple[Tensor, tuple[int, int]]:
        """Final normed patch tokens (B, N, D) in row-major order, and the grid (h, w)."""
        check_pixel_values(pixel_values, self.patch_size)
        grid = self.grid_size(*pixel_values.shape[-2:])
        kwargs = dict(self._forward_kwargs)
        if self.family.in_order_noise:
            n = grid[0] * grid[1]
            kwargs["noise"] = torch.arange(n, device=pixel_values.device, dtype=torch.float32).expand(pixel_values.shape[0], n)
        dtype = next(self.model.parameters()).dtype
        inner_norm = self._final_norm is None  # the model applies its final norm itself
        if inner_norm and not self.apply_final_norm:
            kwargs["output_hidden_states"] = True  # the last layer's output, before that norm
        autocast = torch.autocast(pixel_values.device.type, self.autocast_dtype) if self.autocast_dtype else nullcontext()
        with autocast, self._pea_hook(pea, grid, pixel_values.shape[0]), self._interpolation():
            outputs = self.model(pixel_values.to(dtype), **kwargs)
        hidden = outputs.hidden_states[-1] if "output_hidden_states" in kwargs else outputs.last_hidden_state
        if not inner_norm and self.apply_final_norm:
            hidden = self._final_norm(hidden)
        tokens = hidden[:, self.num_prefix_tokens :]
        if self.autocast_dtype:
            tokens = tokens.float()
        if tokens.shape[1] != grid[0] * grid[1]:
            raise RuntimeError(
                f"{self.family.name}: expected {grid[0] * grid[1]} patch tokens for a {grid} grid, "
                f"got {tokens.shape[1]} after dropping {self.num_prefix_tokens} prefix tokens"
            )
        return tokens, grid

    def use_feature_settings(self, apply_final_norm: bool = True, position_interpolation: str = DEFAULT_POSITION_INTERPOLATION) -> None:
        """What an adapter recorded about its features: final norm or not, how positions resize."""
        if position_interpolation not in POSITION_INTERPOLATIONS:
            raise ValueError(f"position_interpolation must be one of {', '.join(POSITION_INTERPOLATIONS)}; got {position_interpolation!r}")
        if position_interpolation != "transformers" and self._pos_table is None:
            raise ValueError(f"{self.family.name} has no absolute position table to interpolate ({position_interpolation!r}).")
        self.apply_final_norm = apply_final_norm
        self.position_interpolation = position_interpolation

    def _interpolation(self):
        return interpolation(self.model.embeddings, self._pos_table, self.family.pos_prefix, self.patch_size, self.position_interpolation)

    def forward(self, pixel_values: Tensor) -> Tensor:
        """(B, h, w, D) patch features, what evaluation encoders return."""
        tokens, (h, w) = self.patch_tokens(pixel_values)
        return tokens.reshape(tokens.shape[0], h, w, -1)

    # ------------------------------------------------------------------ PEA
    def position_grid(self, grid: tuple[int, int]) -> Tensor:
        """The absolute positional embeddings of the patches as an (h, w, D) grid at `grid`."""
        table = self._pos_table
        if table is None:
            raise PEAUnavailableError(f"{self.family.name} has no absolute positional embeddings")
        table = table.detach().reshape(-1, table.shape[-1])[self.family.pos_prefix :]
        side = int(round(table.shape[0] ** 0.5))
        return _resize_grid(table.reshape(side, side, -1), grid)

    @contextmanager
    def _pea_hook(self, pea: PositionCrop | None, grid: tuple[int, int], batch: int) -> Iterator[None]:
        if pea is None:
            yield
            return
        if not self.supports_pea:
            raise PEAUnavailableError(
                f"PEA needs positional embeddings, but {self.family.name} ({self.model_type}) only has a "
                "relative position bias: turn PEA off explicitly (pea_alpha=None / --no-pea)."
            )
        if self.position_kind == "rotary":
            handle = self.model.rope_embeddings.register_forward_hook(self._rotary_hook(pea, grid, batch))
        else:
            handle = self.model.embeddings.register_forward_hook(self._absolute_hook(pea, grid))
        try:
            yield
        finally:
            handle.remove()

    def _absolute_hook(self, pea: PositionCrop, grid: tuple[int, int]):
        plain = self.position_grid(grid)
        n, k = grid[0] * grid[1], len(pea.offsets)
        # One window per distinct offset (one for the released per-batch crop), broadcast to its images.
        distinct, which = torch.unique(pea.offsets, dim=0, return_inverse=True)
        delta = (interpolate_and_crop(plain, pea.alpha, distinct) - plain).reshape(len(distinct), n, -1)
        delta = delta[0] if len(distinct) == 1 else delta[which]

        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            embeddings = output[0] if isinstance(output, tuple) else output
            shifted = embeddings.clone()
            shifted[-k:, -n:] += delta.to(shifted.dtype)
            return (shifted, *output[1:]) if isinstance(output, tuple) else shifted

        return hook

    def _rotary_hook(self, pea: PositionCrop, grid: tuple[int, int], batch: int):
        """Rotary PEA: the rotary tables of a (1 + alpha)-times larger patch grid, cropped."""
        big_h, big_w = upsampled_size(grid[0], grid[1], pea.alpha)
        n, k = grid[0] * grid[1], len(pea.offsets)

        def hook(module: nn.Module, args: Any, output: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            pixels = args[0]
            stand_in = pixels.new_empty(1, 1, 1, 1).expand(1, 3, big_h * self.patch_size, big_w * self.patch_size)
            big = module.forward(stand_in)  # .forward: do not re-enter this hook
            distinct, which = torch.unique(pea.offsets, dim=0, return_inverse=True)
            tables = []
            for plain, large in zip(output, big):
                cropped = crop_windows(large.reshape(big_h, big_w, -1), distinct, grid).reshape(len(distinct), n, -1)
                cropped = cropped.expand(k, n, -1) if len(distinct) == 1 else cropped[which]
                full = torch.cat([plain.expand(batch - k, n, -1), cropped.to(plain.dtype)])
                tables.append(full[:, None])  # (B, 1, N, head_dim) broadcasts over heads
            return tables[0], tables[1]

        return hook
