"""CoSettleModel: a trained projection on top of a frozen transformers vision backbone.

Only the projection is a registered parameter, so `state_dict`, `save_pretrained`, DDP and the
optimizer all see the projection alone. The backbone is attached at run time: from the checkpoint
named in the config (at its pinned commit), or the one the user passes, checked for fit.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput, cached_file

from .backbones.encoder import BackboneEncoder, PositionCrop
from .configuration_co_settle import CoSettleConfig
from .projection_init import PROJECTION_INITS

logger = logging.getLogger(__name__)
WEIGHTS_NAME = "model.safetensors"
AUTO_MODEL_KWARGS = {"adapter_kwargs", "trust_remote_code"}  # passed by AutoModel, meaningless here
CONFIG_NAME = "config.json"


class AdapterLoadError(OSError):
    """An adapter folder or repository could not be read."""


class BackboneMismatchError(ValueError):
    """The backbone given does not fit the adapter (width or patch size)."""


@dataclass
class CoSettleOutput(ModelOutput):
    """Projected and frozen patch features on the patch grid.

    Attributes:
        features: projected features (B, h, w, D), what downstream tasks use.
        backbone_features: the frozen backbone's final normed patch tokens (B, h, w, D).
        grid_size: (h, w), the patch grid of the input.
    """

    features: Tensor | None = None
    backbone_features: Tensor | None = None
    grid_size: tuple[int, int] | None = None


class CoSettleProjection(nn.Module):
    """g: linear = Linear-Tanh-LayerNorm; mlp2/mlp3 = 2/3 Linears with Tanh between, then LayerNorm."""

    def __init__(self, hidden_size: int, kind: str = "linear") -> None:
        super().__init__()
        depth = {"linear": 1, "mlp2": 2, "mlp3": 3}[kind]
        self.linears = nn.ModuleList(nn.Linear(hidden_size, hidden_size) for _ in range(depth))
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, tokens: Tensor) -> Tensor:
        last = len(self.linears) - 1
        for index, linear in enumerate(self.linears):
            tokens = linear(tokens)
            if index < last or last == 0:  # the single-layer variant keeps its Tanh (released code)
                tokens = torch.tanh(tokens)
        return self.norm(tokens)


class CoSettleModel(PreTrainedModel):
    """A Co-Settle adapter: call it on normalised pixels to get temporally consistent patch features."""

    config_class = CoSettleConfig
    base_model_prefix = "co_settle"
    main_input_name = "pixel_values"
    _no_split_modules: list[str] = []

    def __init__(self, config: CoSettleConfig, backbone: BackboneEncoder | None = None) -> None:
        super().__init__(config)
        self.projection = CoSettleProjection(config.hidden_size, config.projection)
        self._backbone: BackboneEncoder | None = None
        if backbone is not None:
            self.attach_backbone(backbone)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # As the released model of the backbone's family initialises its adapter (config.projection_init).
        if isinstance(module, nn.Linear):
            PROJECTION_INITS[self.config.projection_init](module, self.config.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------ backbone
    @property
    def backbone(self) -> BackboneEncoder:
        if self._backbone is None:
            raise RuntimeError("No backbone attached: use from_backbone(...) or from_pretrained(...).")
        return self._backbone

    def attach_backbone(self, backbone: BackboneEncoder) -> None:
        """Attach a frozen backbone after checking that it fits this projection."""
        problems = []
        if backbone.hidden_size != self.config.hidden_size:
            problems.append(f"hidden size {backbone.hidden_size} != adapter's {self.config.hidden_size}")
        if backbone.patch_size != self.config.patch_size:
            problems.append(f"patch size {backbone.patch_size} != adapter's {self.config.patch_size}")
        if problems:
            raise BackboneMismatchError(
                f"Backbone {backbone.name_or_path or backbone.model_type!r} does not fit this adapter "
                f"(trained on {self.config.base_model_name_or_path!r}): {'; '.join(problems)}."
            )
        backbone.use_feature_settings(self.config.apply_final_norm, self.config.position_interpolation)
        self._backbone = backbone
        backbone.model.to(device=self.projection.norm.weight.device)

    def _apply(self, fn: Any, recurse: bool = True) -> "CoSettleModel":
        # .to()/.cuda()/.half() move the unregistered backbone along with the projection.
        if self._backbone is not None:
            self._backbone.model._apply(fn)
        return super()._apply(fn, recurse)

    @classmethod
    def from_backbone(cls, backbone: BackboneEncoder | nn.Module | str, revision: str | None = None, **config_overrides: Any) -> "CoSettleModel":
        """A fresh (untrained) adapter for a backbone: a model object, a Hub id or a local path."""
        if isinstance(backbone, str):
            backbone = BackboneEncoder.from_pretrained(backbone, revision=revision)
        elif not isinstance(backbone, BackboneEncoder):
            backbone = BackboneEncoder(backbone)
        settings = dict(
            hidden_size=backbone.hidden_size,
            base_model_name_or_path=backbone.name_or_path,
            base_model_revision=backbone.revision,
            base_model_type=backbone.model_type,
            patch_size=backbone.patch_size,
            num_prefix_tokens=backbone.num_prefix_tokens,
            image_mean=list(backbone.image_mean),
            image_std=list(backbone.image_std),
        )
        if backbone.position_kind == "relative":
            settings["pea_alpha"] = None  # nothing to augment: PEA has no meaning here
        settings.update(config_overrides)
        return cls(CoSettleConfig(**settings), backbone=backbone)

    # ------------------------------------------------------------------ forward
    def project(self, tokens: Tensor) -> Tensor:
        """g(z) for frozen tokens of any leading shape (..., D)."""
        return self.projection(tokens.to(self.projection.norm.weight.dtype))

    def forward(self, pixel_values: Tensor, pea: PositionCrop | None = None, return_dict: bool = True) -> CoSettleOutput:
        tokens, (h, w) = self.backbone.patch_tokens(pixel_values, pea=pea)
        features = self.project(tokens)
        shape = (len(tokens), h, w, -1)
        output = CoSettleOutput(features=features.reshape(shape), backbone_features=tokens.reshape(shape), grid_size=(h, w))
        return output if return_dict else output.to_tuple()

    def as_encoder(self) -> "ProjectedEncoder":
        """This adapter as an evaluation encoder (pixels -> projected (B, h, w, D) features)."""
        return ProjectedEncoder(self)

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, save_directory: str | os.PathLike, model_card: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """Write config.json, model.safetensors (projection only) and a README.md model card.

        `model_card` takes `training` (a dict of training settings), `results` (a dict of
        evaluation metrics) and `license`, recorded in the card.
        """
        from .hub.model_card import render_model_card

        kwargs.pop("push_to_hub", None)
        super().save_pretrained(save_directory, **kwargs)
        card = render_model_card(self.config, **(model_card or {}))
        Path(save_directory, "README.md").write_text(card, encoding="utf-8")

    def push_to_hub(
        self,
        repo_id: str,
        revision: str | None = None,
        private: bool | None = None,
        commit_message: str = "Upload Co-Settle adapter",
        token: str | None = None,
        model_card: dict[str, Any] | None = None,
    ) -> Any:
        """Upload config.json, model.safetensors and README.md; `revision` names a branch (created if needed)."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision is not None and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, model_card=model_card)
            return api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision, commit_message=commit_message)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args: Any,
        backbone: BackboneEncoder | nn.Module | str | None = None,
        revision: str | None = None,
        config: CoSettleConfig | None = None,
        cache_dir: str | None = None,
        token: str | None = None,
        local_files_only: bool = False,
        force_download: bool = False,
        **kwargs: Any,
    ) -> "CoSettleModel":
        """Load an adapter (folder or Hub id) and attach its backbone.

        Without `backbone`, the base model named in the adapter's config is loaded at its pinned
        commit. With one (a model, a `BackboneEncoder`, an id or a path) it is checked to fit.
        """
        ignored = sorted(set(kwargs) - AUTO_MODEL_KWARGS)
        if model_args or ignored:
            logger.warning("CoSettleModel.from_pretrained ignores %s", [*map(repr, model_args), *ignored])
        source = str(pretrained_model_name_or_path)
        hub = dict(revision=revision, cache_dir=cache_dir, token=token, local_files_only=local_files_only, force_download=force_download)
        if config is None or not isinstance(config, CoSettleConfig):
            config = CoSettleConfig.from_dict(_read_json(_adapter_file(source, CONFIG_NAME, hub)))
        weights = _adapter_file(source, WEIGHTS_NAME, hub)
        try:
            state = load_file(weights)
        except (SafetensorError, OSError) as error:
            raise AdapterLoadError(f"{weights} is not a readable safetensors file ({error}).") from None
        model = cls(config)
        expected = set(model.state_dict())
        if set(state) != expected:
            raise AdapterLoadError(
                f"{weights} does not hold a {config.projection} Co-Settle projection: "
                f"missing {sorted(expected - set(state))}, unexpected {sorted(set(state) - expected)}."
            )
        model.load_state_dict(state)
        if backbone is None:
            if not config.base_model_name_or_path:
                raise AdapterLoadError(f"{source}: the config names no base model; pass backbone=...")
            backbone = BackboneEncoder.from_pretrained(
                config.base_model_name_or_path, revision=config.base_model_revision,
                cache_dir=cache_dir, token=token, local_files_only=local_files_only,
            )
        elif isinstance(backbone, str):
            backbone = BackboneEncoder.from_pretrained(backbone, cache_dir=cache_dir, token=token, local_files_only=local_files_only)
        elif not isinstance(backbone, BackboneEncoder):
            backbone = BackboneEncoder(backbone)
        model.attach_backbone(backbone)
        return model.eval()


class ProjectedEncoder:
    """Evaluation view of an adapter: `image_mean`, `image_std`, `patch_size`, pixels -> features."""

    def __init__(self, model: CoSettleModel) -> None:
        self.model = model
        self.image_mean = tuple(model.config.image_mean)
        self.image_std = tuple(model.config.image_std)
        self.patch_size = model.config.patch_size

    @property
    def device(self) -> torch.device:
        return self.model.device

    @torch.no_grad()
    def __call__(self, pixel_values: Tensor) -> Tensor:
        return self.model(pixel_values).features


def _adapter_file(source: str, filename: str, hub: dict[str, Any]) -> str:
    """Path of one adapter file, local or from the Hub, with an error that names what is missing."""
    if os.path.isdir(source):
        path = os.path.join(source, filename)
        if not os.path.isfile(path):
            raise AdapterLoadError(f"{path} is missing: {source} is not a complete Co-Settle adapter folder.")
        return path
    try:
        path = cached_file(source, filename, **hub)
    except OSError as error:
        raise AdapterLoadError(f"Could not get {filename} of adapter {source!r}: {error}") from None
    if path is None:
        raise AdapterLoadError(f"Adapter {source!r} has no {filename}.")
    return path


def _read_json(path: str) -> dict[str, Any]:
    import json

    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AdapterLoadError(f"{path} is not valid JSON ({error}).") from None
