"""The method's settings, declared once: defaults, help and choices.

`CoSettleConfig` nests one (`config.objective`, saved as `"objective": {...}` in config.json), the
trainer's flags take default, help and choices from the fields' metadata (`HfArgumentParser` reads
`metadata["help"]`), and the objective, the trade-off analysis and pair sampling default to the same
values. The defaults are the published recipe (SPEC.md section 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable

SEPARABILITY_KINDS = ("kl", "mse")
KL_DIRECTIONS = ("code", "paper")
PEA_MODES = ("random", "center", "edge")


def _setting(default: Any, help: str, **metadata: Any) -> Any:
    return field(default=default, metadata={"help": help, **metadata})


@dataclass(frozen=True)
class ObjectiveSettings:
    """What the Co-Settle objective is trained with (L = L_cyc + lambda * L_reg, with PEA)."""

    cycle_temperature: float = _setting(
        0.03, "tau of the cycle affinities (named so to stay clear of generation settings, which transformers "
        "forbids in a model config).")
    pool_size: int = _setting(2, "Average-pooling kernel and stride on the patch grid for the cycle.")
    pea_alpha: float | None = _setting(10.0, "PEA upsampling factor; None (--no_pea) turns PEA off, as relative-bias backbones need.")
    pea_mode: str = _setting("random", "Where the PEA window is cropped: random, center or edge.", choices=PEA_MODES)
    pea_per_sample: bool = _setting(False, "One PEA crop per image instead of the released code's one per batch.")
    separability: str = _setting("kl", "The separability constraint: kl or mse.", choices=SEPARABILITY_KINDS)
    kl_direction: str = _setting(
        "code", "code = KL(softmax Z || softmax P) as released; paper = KL(P || Z).", choices=KL_DIRECTIONS)
    separability_weight: float = _setting(3.0, "lambda in L = L_cyc + lambda * L_reg.")
    frame_gap: float = _setting(
        0.15, "delta, the gap between the two frames of a pair as a fraction of the clip (recorded for retraining "
        "and shown in the model card).")

    def __post_init__(self) -> None:
        found = problems({declared.name: getattr(self, declared.name) for declared in fields(self)})
        if found:
            raise ValueError("; ".join(found))


#: The range of each numeric setting (field metadata cannot hold it: HfArgumentParser hands all of it to argparse).
RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "cycle_temperature": (lambda v: v > 0, "must be positive"),
    "pool_size": (lambda v: v >= 1, "must be at least 1"),
    "pea_alpha": (lambda v: v is None or v >= 0, "must be >= 0 or None (PEA off)"),
    "separability_weight": (lambda v: v >= 0, "must be >= 0"),
    "frame_gap": (lambda v: 0.0 <= v < 1.0, "must be in [0, 1) (a fraction of the clip)"),
}


def problems(settings: dict[str, Any]) -> list[str]:
    """What is wrong with these method settings, each naming its setting: the one check that the config and
    the trainer's flags share."""
    found = [f"{name} must be one of {', '.join(OBJECTIVE_FIELDS[name].metadata['choices'])}; got {value!r}"
             for name, value in settings.items() if value not in OBJECTIVE_FIELDS[name].metadata.get("choices", (value,))]
    return found + [f"{name} {rule}, got {settings[name]}" for name, (ok, rule) in RANGES.items()
                    if name in settings and not ok(settings[name])]


OBJECTIVE_FIELDS = {f.name: f for f in fields(ObjectiveSettings)}
#: The published recipe: every default in the package that means one of these settings reads it here.
OBJECTIVE = ObjectiveSettings()
