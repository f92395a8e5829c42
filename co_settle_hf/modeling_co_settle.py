"""CoSettleModel: a trained projection on top of a frozen transformers vision backbone.

The backbone is a registered, frozen submodule, as PEFT holds its base model: `.to()`, `print(model)`
and `num_parameters()` see it; gradients, `train()` and the state dict do not. So `model.safetensors`,
Accelerate checkpoints and the optimizer hold the projection alone. The backbone comes from the
checkpoint the config names (at its pinned commit), from the adapter's own `backbone/` subfolder when
it is bundled, or from the user (checked for fit).
"""

from __future__ import annotations

import logging
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator

import torch
from huggingface_hub import HfApi
from safetensors import SafetensorError
from torch import Tensor, nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput, cached_file

from .backbones.encoder import BackboneEncoder, PositionCrop
from .configuration_co_settle import PROJECTION_DEPTH, CoSettleConfig
from .errors import CoSettleError, SettingsError
from .hub.arguments import ADAPTER_FILE_ARGUMENTS, PUSH_ARGUMENTS, download_kwargs, keyword_parameters
from .hub.model_card import update_card
from .image_processing_co_settle import save_image_processor
from .projection_init import PROJECTION_INITS, RELEASED, resolve_projection_init
from .staging import staged_entries

logger = logging.getLogger(__name__)
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
BACKBONE_SUBFOLDER = "backbone"


class AdapterLoadError(CoSettleError, OSError):
    """An adapter folder or repository could not be read, or its base backbone could not be found."""


class BackboneMismatchError(SettingsError):
    """The backbone given does not fit the adapter (width, patch size or prefix tokens)."""


class LocalBaseError(SettingsError):
    """Pushing an adapter whose base exists only on this machine (use push_backbone=True)."""


@dataclass
class CoSettleOutput(ModelOutput):
    """Projected and frozen patch features.

    Attributes:
        last_hidden_state: projected patch tokens (B, N, D), row-major; what `pipeline` returns.
        pooler_output: their mean over the patches (B, D), for `pipeline(..., pool=True)`.
        features: the same projected features on the patch grid (B, h, w, D).
        backbone_features: the frozen backbone's final normed patch tokens (B, h, w, D).
        grid_size: (h, w), the patch grid of the input.
    """

    last_hidden_state: Tensor | None = None
    pooler_output: Tensor | None = None
    features: Tensor | None = None
    backbone_features: Tensor | None = None
    grid_size: tuple[int, int] | None = None


class CoSettleProjection(nn.Module):
    """g: linear = Linear-Tanh-LayerNorm; mlp2/mlp3 = 2/3 Linears with Tanh between, then LayerNorm."""

    def __init__(self, hidden_size: int, kind: str = "linear") -> None:
        super().__init__()
        self.kind = kind
        self.linears = nn.ModuleList(nn.Linear(hidden_size, hidden_size) for _ in range(PROJECTION_DEPTH[kind]))
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, tokens: Tensor) -> Tensor:
        last = len(self.linears) - 1
        for index, linear in enumerate(self.linears):
            tokens = linear(tokens)
            if index < last or last == 0:  # the single-layer variant keeps its Tanh (released code)
                tokens = torch.tanh(tokens)
        return self.norm(tokens)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, trainable=True"


class CoSettleModel(PreTrainedModel):
    """A Co-Settle adapter: call it on normalised pixels to get temporally consistent patch features."""

    config_class = CoSettleConfig
    base_model_prefix = "co_settle"
    main_input_name = "pixel_values"
    _no_split_modules: list[str] = []
    # The projection has no attention: whatever implementation is asked for is the backbone's to use.
    _supports_sdpa = _supports_flash_attn = _supports_flex_attn = True

    def __init__(self, config: CoSettleConfig, backbone: BackboneEncoder | None = None, **unknown: Any) -> None:
        if unknown:  # what transformers' from_pretrained left over: neither its own arguments nor config fields
            raise TypeError(f"CoSettleModel.from_pretrained got unexpected keyword argument(s) {sorted(unknown)}: "
                            "neither CoSettleConfig fields nor arguments of transformers' from_pretrained")
        super().__init__(config)
        self.projection = CoSettleProjection(config.hidden_size, config.projection)
        self.backbone: BackboneEncoder | None = None
        self._model_card: str | None = None  # the card read with the adapter, updated on every save
        self.register_state_dict_post_hook(_drop_backbone_keys)
        self.register_load_state_dict_post_hook(_ignore_missing_backbone_keys)
        self.post_init()  # initialises the projection only: the backbone is attached after
        if backbone is not None:
            self.attach_backbone(backbone)

    def _init_weights(self, module: nn.Module) -> None:
        # As the released model of the backbone's family initialises its adapter (config.projection_init).
        if isinstance(module, nn.Linear):
            init = resolve_projection_init(self.config.projection_init, self.config.base_model_type)
            PROJECTION_INITS[init](module, self.config.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------ backbone
    def attach_backbone(self, backbone: BackboneEncoder) -> None:
        """Hold a frozen backbone after checking that it fits; the projection moves to its device."""
        problems = []
        for what, theirs, ours in (
            ("hidden size", backbone.hidden_size, self.config.hidden_size),
            ("patch size", backbone.patch_size, self.config.patch_size),
            ("prefix tokens", backbone.num_prefix_tokens, self.config.num_prefix_tokens),
        ):
            if theirs != ours:
                problems.append(f"{what} {theirs} != adapter's {ours}")
        if problems:
            raise BackboneMismatchError(
                f"Backbone {backbone.name_or_path or backbone.model_type!r} does not fit this adapter "
                f"(trained on {self.config.base_model_name_or_path!r}): {'; '.join(problems)}."
            )
        backbone.use_feature_settings(self.config.apply_final_norm, self.config.position_interpolation)
        self.backbone = backbone.requires_grad_(False).eval()
        self.projection.to(device=backbone.device)

    def print_trainable_parameters(self) -> None:
        """As PEFT prints it: the projection is trainable, the backbone frozen."""
        trainable, total = self.num_parameters(only_trainable=True), self.num_parameters()
        print(f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / total:.4f}")

    @property
    def image_mean(self) -> tuple[float, ...]:
        return tuple(self.config.image_mean)

    @property
    def image_std(self) -> tuple[float, ...]:
        return tuple(self.config.image_std)

    @property
    def patch_size(self) -> int:
        return int(self.config.patch_size)

    @classmethod
    def from_backbone(cls, backbone: BackboneEncoder | nn.Module | str, revision: str | None = None, **config_overrides: Any) -> "CoSettleModel":
        """A fresh (untrained) adapter for a backbone: a model object, a Hub id or a local path."""
        if isinstance(backbone, (str, os.PathLike)):
            backbone = BackboneEncoder.from_pretrained(str(backbone), revision=revision)
        elif not isinstance(backbone, BackboneEncoder):
            backbone = BackboneEncoder(backbone)
        if backbone.name_or_path and os.path.isabs(backbone.name_or_path):
            logger.warning(
                "The base backbone %s is a local folder: the adapter records its absolute path, so it loads only where "
                "that folder exists. Use a Hub id, or bundle the backbone (push_to_hub(..., push_backbone=True)).",
                backbone.name_or_path,
            )
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
        if not backbone.supports_pea:
            settings["objective"] = {"pea_alpha": None}  # nothing to augment: PEA has no meaning here
        settings.update(config_overrides)
        settings["projection_init"] = resolve_projection_init(settings.get("projection_init", RELEASED), backbone.model_type)
        return cls(CoSettleConfig(**settings), backbone=backbone)

    # ------------------------------------------------------------------ forward
    def project(self, tokens: Tensor) -> Tensor:
        """g(z) for frozen tokens of any leading shape (..., D)."""
        return self.projection(tokens.to(self.projection.norm.weight.dtype))

    def forward(self, pixel_values: Tensor, pea: PositionCrop | None = None, return_dict: bool | None = None) -> CoSettleOutput:
        tokens, (h, w) = self._require_backbone().patch_tokens(pixel_values, pea=pea)
        features = self.project(tokens)
        shape = (tokens.shape[0], h, w, -1)
        output = CoSettleOutput(
            last_hidden_state=features, pooler_output=features.mean(dim=1),
            features=features.reshape(shape), backbone_features=tokens.reshape(shape), grid_size=(h, w),
        )
        return output if return_dict is not False else output.to_tuple()

    # ------------------------------------------------------------------ saving
    def base_is_local(self) -> bool:
        """True when the base backbone exists only on this machine (or is not named at all)."""
        base = self.config.base_model_name_or_path
        return not self.config.base_model_subfolder and (not base or os.path.isabs(base) or os.path.isdir(base))

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        model_card: dict[str, Any] | None = None,
        save_backbone: bool | None = None,
        push_to_hub: bool = False,
        repo_id: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Write config.json, model.safetensors (projection only), preprocessor_config.json and README.md.

        `model_card` takes `training` (dict of settings), `eval_results` (huggingface_hub `EvalResult`s),
        `datasets` and `license`; the card is updated, never re-rendered, so what it held survives.
        `save_backbone` bundles the backbone in `backbone/` (the default for an adapter loaded bundled).
        With `push_to_hub=True` the folder is then uploaded to `repo_id` (default: the folder's name)
        with the arguments of transformers' `push_to_hub`; the commit info is returned.
        """
        hub = {name: kwargs.pop(name) for name in PUSH_ARGUMENTS - {"max_shard_size"} if name in kwargs}
        bundle = bool(self.config.base_model_subfolder) if save_backbone is None else save_backbone
        if push_to_hub:
            if hub.get("create_pr") and hub.get("revision") not in (None, "main"):
                raise ValueError(f"create_pr=True opens a pull request against main: leave revision unset (got {hub['revision']!r}).")
            if self.base_is_local() and not bundle:
                raise LocalBaseError(
                    f"The base backbone {self.config.base_model_name_or_path!r} exists only on this machine, so the pushed "
                    "adapter would not load anywhere else: pass push_backbone=True (push_to_hub) or save_backbone=True "
                    "(save_pretrained) to upload the backbone into the same repository, or build the adapter on a Hub backbone."
                )
            repo_id = _create_repo(repo_id or os.path.basename(os.path.abspath(save_directory)), hub)
        # Staged beside, then moved in with config.json last: a folder with a config.json holds a whole adapter.
        with staged_entries(save_directory, CONFIG_NAME) as folder, _bundled_config(self.config, bundle):
            super().save_pretrained(folder, **kwargs)
            if bundle:
                self._require_backbone().save_pretrained(folder / BACKBONE_SUBFOLDER)
            base_processor = self.backbone.image_processor if self.backbone is not None else None
            save_image_processor(folder, self.config, base_processor)
            card = dict(model_card or {})
            self._model_card = update_card(
                self._model_card, self.config, num_parameters=self.num_parameters(only_trainable=True),
                repo_id=repo_id, tags=hub.get("tags"), **card,
            )
            (folder / CARD_NAME).write_text(self._model_card, encoding="utf-8")
        if push_to_hub:
            return _upload(save_directory, repo_id, hub)
        return None

    def push_to_hub(
        self, repo_id: str, *, push_backbone: bool | None = None, model_card: dict[str, Any] | None = None, **kwargs: Any,
    ) -> Any:
        """Upload the adapter, with the arguments of transformers' `push_to_hub`; returns the commit info.

        `revision` names a branch (created if needed). An adapter whose base is only local is refused
        unless `push_backbone=True`, which uploads the backbone into `backbone/` of the same repository.
        """
        unknown = sorted(set(kwargs) - PUSH_ARGUMENTS)
        if unknown:
            raise TypeError(f"CoSettleModel.push_to_hub got unexpected keyword argument(s) {unknown}")
        kwargs["commit_message"] = kwargs.get("commit_message") or "Upload Co-Settle adapter"
        with tempfile.TemporaryDirectory() as folder:
            return self.save_pretrained(folder, model_card=model_card, save_backbone=push_backbone, push_to_hub=True,
                                        repo_id=repo_id, **kwargs)

    def _require_backbone(self) -> BackboneEncoder:
        if self.backbone is None:
            raise RuntimeError("No backbone attached: use from_backbone(...) or from_pretrained(...).")
        return self.backbone

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args: Any,
        backbone: BackboneEncoder | nn.Module | str | None = None,
        backbone_revision: str | None = None,
        **kwargs: Any,
    ) -> "CoSettleModel":
        """Load an adapter (folder or Hub id) and its frozen backbone, as transformers loads a model.

        The adapter's own files are read by transformers' `PreTrainedModel.from_pretrained`, so it takes
        every argument that does (`revision`, `subfolder`, `cache_dir`, `proxies`, `token`, `dtype`,
        `device_map`, `output_loading_info`, ...), and config fields as overrides. The same arguments,
        less those naming the adapter's own files (`revision`, `subfolder`, `variant`, ...) and config
        fields, load the backbone: the base named in the config at its pinned commit (or
        `backbone_revision`), or the bundled copy in the adapter's own `backbone/` subfolder. A given
        `backbone` (a model, a `BackboneEncoder`, an id or a path) is checked to fit instead.
        """
        if model_args:
            raise TypeError(f"CoSettleModel.from_pretrained takes no extra positional arguments, got {model_args!r}")
        source = str(pretrained_model_name_or_path)
        return_info = kwargs.pop("output_loading_info", False)
        kwargs.setdefault("use_safetensors", True)  # the adapter is a safetensors file: never look for a pickle
        model, info = _load_adapter(cls, source, kwargs)
        model._model_card = _read_card(source, kwargs)
        base_kwargs = {k: v for k, v in kwargs.items() if not _about_adapter_only(k)}
        if backbone is None:
            backbone = _load_base(model.config, source, kwargs, backbone_revision, base_kwargs)
        elif isinstance(backbone, (str, os.PathLike)):
            backbone = BackboneEncoder.from_pretrained(str(backbone), revision=backbone_revision, **base_kwargs)
        elif not isinstance(backbone, BackboneEncoder):
            backbone = BackboneEncoder(backbone)
        model.attach_backbone(backbone)
        model.eval()
        return (model, info) if return_info else model


# ---------------------------------------------------------------------- state dict: projection only
def _drop_backbone_keys(module: CoSettleModel, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """State dict post-hook: the frozen backbone is never part of the adapter's weights."""
    for key in [k for k in state_dict if k.startswith(prefix + "backbone.")]:
        del state_dict[key]


def _ignore_missing_backbone_keys(module: CoSettleModel, incompatible_keys: Any) -> None:
    """Load post-hook: a projection-only state dict loads strictly into a model holding a backbone."""
    if module.backbone is None:
        return
    local = {"backbone." + key for key in module.backbone.state_dict(keep_vars=True)}

    def is_backbone(key: str) -> bool:  # the key, seen from this module (the root may add a prefix)
        return any(key[start:] in local for start in range(len(key)) if key.startswith("backbone.", start))

    incompatible_keys.missing_keys[:] = [k for k in incompatible_keys.missing_keys if not is_backbone(k)]


# ---------------------------------------------------------------------- loading helpers
def _load_adapter(cls: type[CoSettleModel], source: str, kwargs: dict[str, Any]) -> tuple[CoSettleModel, dict[str, Any]]:
    """Config and projection through transformers' loader, its errors naming the adapter."""
    try:
        model, info = super(CoSettleModel, cls).from_pretrained(source, output_loading_info=True, **kwargs)
    except SafetensorError as error:
        raise AdapterLoadError(f"Adapter {source!r}: {WEIGHTS_NAME} is not a readable safetensors file ({error}).") from None
    except OSError as error:
        raise AdapterLoadError(f"Could not load Co-Settle adapter {source!r}: {error}") from None
    wrong = {what: sorted(info[f"{what}_keys"]) for what in ("missing", "unexpected", "mismatched") if info.get(f"{what}_keys")}
    if wrong:
        found = "; ".join(f"{what} {keys}" for what, keys in wrong.items())
        raise AdapterLoadError(f"{WEIGHTS_NAME} of {source!r} does not hold a {model.config.projection} Co-Settle projection: {found}.")
    return model, info


def _read_card(source: str, kwargs: dict[str, Any]) -> str | None:
    """The adapter's model card, if it has one (updated, never re-rendered, on the next save)."""
    path = cached_file(
        source, CARD_NAME, **download_kwargs(kwargs), _raise_exceptions_for_missing_entries=False, _raise_exceptions_for_connection_errors=False,
    )
    if path is None:
        return None
    with open(path, encoding="utf-8") as handle:
        return handle.read()


@lru_cache(maxsize=1)
def _config_fields() -> frozenset[str]:
    """The settings CoSettleConfig declares: overrides for the adapter, never for its base."""
    return keyword_parameters(CoSettleConfig.__init__, "self")


def _about_adapter_only(name: str) -> bool:
    """A `from_pretrained` argument that names the adapter's files, a config field, or a private marker of
    this call (`_from_auto`, `_from_pipeline`, `_commit_hash`): not passed on to the base's loading."""
    return name.startswith("_") or name in ADAPTER_FILE_ARGUMENTS or name in _config_fields()


def _load_base(
    config: CoSettleConfig, source: str, kwargs: dict[str, Any], backbone_revision: str | None, base_kwargs: dict[str, Any],
) -> BackboneEncoder:
    """The backbone the config names: bundled in the adapter's own source, or the base at its commit."""
    if config.base_model_subfolder:
        name = source
        subfolder = kwargs.get("subfolder") or ""
        adapter_commit = getattr(config, "_commit_hash", None) or kwargs.get("revision")
        where = dict(subfolder=os.path.join(subfolder, config.base_model_subfolder) if subfolder else config.base_model_subfolder,
                     revision=backbone_revision or adapter_commit)
    elif config.base_model_name_or_path:
        name = config.base_model_name_or_path
        where = dict(revision=backbone_revision or config.base_model_revision)
    else:
        raise AdapterLoadError(f"Adapter {source!r} names no base backbone: pass backbone=... (a model, a Hub id or a path).")
    try:
        return BackboneEncoder.from_pretrained(name, **where, **base_kwargs)
    except OSError as error:
        described = f"{name!r}" + (f" (subfolder {where['subfolder']!r})" if "subfolder" in where else "")
        raise AdapterLoadError(
            f"The base backbone {described} of adapter {source!r} cannot be found at revision {where['revision']!r}: {error}. "
            "Pass backbone=... (a model, a Hub id or a local path) to from_pretrained."
        ) from None


# ---------------------------------------------------------------------- saving helpers
@contextmanager
def _bundled_config(config: CoSettleConfig, bundle: bool) -> Iterator[None]:
    """While saving, the config says whether the backbone is bundled (a local base path means nothing elsewhere)."""
    saved = (config.base_model_subfolder, config.base_model_name_or_path, config.base_model_revision)
    if bundle:
        base = config.base_model_name_or_path
        if base and (os.path.isabs(base) or os.path.isdir(base)):
            config.base_model_name_or_path, config.base_model_revision = None, None
        config.base_model_subfolder = BACKBONE_SUBFOLDER
    else:
        config.base_model_subfolder = None
    try:
        yield
    finally:
        config.base_model_subfolder, config.base_model_name_or_path, config.base_model_revision = saved


def _create_repo(repo_id: str, hub: dict[str, Any]) -> str:
    api = HfApi(token=hub.get("token"))
    repo_id = api.create_repo(repo_id, private=hub.get("private"), exist_ok=True).repo_id
    revision = hub.get("revision")
    if revision and revision != "main" and not revision.startswith("refs/pr/"):  # a pull request's ref exists already
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    return repo_id


def _upload(folder: str | os.PathLike, repo_id: str, hub: dict[str, Any]) -> Any:
    """Upload a saved adapter folder in one commit; the commit info (with the PR, if one was opened)."""
    return HfApi(token=hub.get("token")).upload_folder(
        repo_id=repo_id, folder_path=folder, revision=hub.get("revision"),
        commit_message=hub.get("commit_message") or "Upload Co-Settle adapter",
        commit_description=hub.get("commit_description"), create_pr=bool(hub.get("create_pr")),
    )
