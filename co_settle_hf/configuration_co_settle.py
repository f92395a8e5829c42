"""Configuration of a Co-Settle adapter: the projection, the frozen base it belongs to, the method."""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any, Mapping

from transformers import PreTrainedConfig

from .backbones.families import IMAGENET_MEAN, IMAGENET_STD
from .backbones.positions import DEFAULT_POSITION_INTERPOLATION, POSITION_INTERPOLATIONS
from .objective.settings import OBJECTIVE, OBJECTIVE_FIELDS, ObjectiveSettings
from .projection_init import PROJECTION_INIT_CHOICES, RELEASED

PROJECTION_DEPTH = {"linear": 1, "mlp2": 2, "mlp3": 3}  # Linear layers of each projection kind
PROJECTIONS = tuple(PROJECTION_DEPTH)


class CoSettleConfig(PreTrainedConfig):
    """Everything needed to rebuild a Co-Settle adapter and to train it again.

    The defaults are the published recipe (SPEC.md section 2): a `linear` projection
    (Linear -> Tanh -> LayerNorm), temperature 0.03, 2x2 pooling, PEA alpha 10 with one random
    crop per batch, the separability KL in the direction of the released code, weight 3, and a
    frame gap of 0.15 of the clip.

    Args:
        projection: `linear`, `mlp2` or `mlp3`.
        hidden_size: width D of the backbone's patch tokens (and of the projection).
        base_model_name_or_path: Hub id of the frozen backbone, or the ABSOLUTE path of a local
            folder (then the adapter loads only where that folder exists). With
            `base_model_subfolder` set it is informative only (the base the bundled copy came from;
            None when that was a local folder).
        base_model_revision: the resolved commit of a Hub backbone, so loading is reproducible.
        base_model_subfolder: set (to "backbone") when the backbone is bundled with the adapter:
            a standard transformers `save_pretrained` folder in that subfolder of the adapter's own
            folder or repository, loaded from the same source at the same revision.
        base_model_type: `model_type` of the backbone's vision tower.
        patch_size: the backbone's patch size in pixels (checked when a backbone is attached).
        num_prefix_tokens: CLS, distillation and register tokens dropped before the projection
            (checked when a backbone is attached).
        image_mean / image_std: normalisation the backbone expects (saved in the image processor).
        image_size: training resolution (square); the image processor resizes to it.
        objective: the method's settings (temperature, pooling, PEA, separability, frame gap), an
            `ObjectiveSettings` or a mapping of the ones that differ from the published recipe;
            saved nested, as `"objective": {...}` in config.json. Adapters saved before the
            nesting kept them as top-level keys (`cycle_temperature=...`); those keys are still read.
        initializer_range: std of the truncated-normal initialisation of the projection's weights.
        projection_init: how a fresh projection's linears start: `released` (as the authors' model
            file of the backbone's family does; `from_backbone` records the concrete name), or
            `trunc_normal`, `xavier`, `default` (PyTorch's), `identity` (W = c I: the untrained
            adapter keeps the frozen features, see `projection_init`).
        apply_final_norm: whether the backbone's final LayerNorm is applied to the patch tokens
            (the authors' I-JEPA evaluation forward does not apply it).
        position_interpolation: how positional embeddings are resized at other input sizes:
            `transformers` (the model's own), or the authors' `dino` / `antialias` variants
            (see `backbones.positions`).
    """

    model_type = "co_settle"

    def __init__(
        self,
        projection: str = "linear",
        hidden_size: int = 768,
        base_model_name_or_path: str | None = None,
        base_model_revision: str | None = None,
        base_model_subfolder: str | None = None,
        base_model_type: str | None = None,
        patch_size: int = 16,
        num_prefix_tokens: int = 1,
        image_mean: list[float] | tuple[float, ...] = IMAGENET_MEAN,
        image_std: list[float] | tuple[float, ...] = IMAGENET_STD,
        image_size: int = 224,
        objective: ObjectiveSettings | Mapping[str, Any] | None = None,
        initializer_range: float = 0.02,
        projection_init: str = RELEASED,
        apply_final_norm: bool = True,
        position_interpolation: str = DEFAULT_POSITION_INTERPOLATION,
        **kwargs: Any,
    ) -> None:
        _check_choice("projection", projection, PROJECTIONS)
        _check_choice("projection_init", projection_init, PROJECTION_INIT_CHOICES)
        _check_choice("position_interpolation", position_interpolation, tuple(POSITION_INTERPOLATIONS))
        self.projection = projection
        self.hidden_size = hidden_size
        self.base_model_name_or_path = base_model_name_or_path
        self.base_model_revision = base_model_revision
        self.base_model_subfolder = base_model_subfolder
        self.base_model_type = base_model_type
        self.patch_size = patch_size
        self.num_prefix_tokens = num_prefix_tokens
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)
        self.image_size = image_size
        self._objective = OBJECTIVE
        self.objective = {**_as_mapping(objective), **{name: kwargs.pop(name) for name in OBJECTIVE_FIELDS if name in kwargs}}
        self.initializer_range = initializer_range
        self.projection_init = projection_init
        self.apply_final_norm = apply_final_norm
        self.position_interpolation = position_interpolation
        super().__init__(**kwargs)

    @property
    def objective(self) -> ObjectiveSettings:
        """This adapter's method settings (`config.objective.cycle_temperature`, ...)."""
        return self._objective

    @objective.setter
    def objective(self, changes: ObjectiveSettings | Mapping[str, Any]) -> None:
        """New settings, or a mapping of the ones to change: `from_pretrained(..., objective={"pool_size": 4})`
        sets a mapping, which changes those settings and keeps the others."""
        changes = _as_mapping(changes)
        unknown = sorted(set(changes) - set(OBJECTIVE_FIELDS))
        if unknown:
            raise ValueError(f"objective: unknown settings {unknown}; the settings are {', '.join(OBJECTIVE_FIELDS)}")
        self._objective = replace(self._objective, **changes)  # ObjectiveSettings checks every value

    def to_dict(self) -> dict[str, Any]:
        """transformers' serialisation, with the method's settings nested under "objective"."""
        output = super().to_dict()
        output["objective"] = asdict(output.pop("_objective"))
        return output


def _as_mapping(objective: ObjectiveSettings | Mapping[str, Any] | None) -> dict[str, Any]:
    return asdict(objective) if isinstance(objective, ObjectiveSettings) else dict(objective or {})


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
