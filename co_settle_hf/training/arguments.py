"""The trainer's settings: three dataclasses parsed by transformers' `HfArgumentParser`.

Every flag is accepted in both spellings (`--per_device_train_batch_size` and
`--per-device-train-batch-size`), and a single JSON or YAML file may stand for the command line
(`co-settle train config.yaml`, optionally followed by flags that override it). The method's
settings take their defaults, help and choices from `ObjectiveSettings`, where they are declared once.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import yaml
from transformers import HfArgumentParser

from ..backbones.encoder import BACKBONE_PRECISIONS
from ..configuration_co_settle import PROJECTIONS, CoSettleConfig
from ..data.transforms import CROP_RULES, RESIZE_PATHS, PairTransform
from ..objective.settings import OBJECTIVE_FIELDS, ObjectiveSettings
from ..objective.settings import problems as objective_problems
from ..projection_init import PROJECTION_INIT_CHOICES
from ..shared_flags import aliases

_CONFIG = CoSettleConfig()
SCHEDULERS = ("cosine", "linear", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt")
CONFIG_SUFFIXES = (".json", ".yaml", ".yml")


def method(name: str, **metadata: Any) -> Any:
    """A field of the method's settings: default, help and choices from `ObjectiveSettings`, where they are declared."""
    declared = OBJECTIVE_FIELDS[name]
    return field(default=declared.default, metadata={**declared.metadata, **metadata})


def adapter(name: str, help: str, **metadata: Any) -> Any:
    """A field whose default is CoSettleConfig's `name` (the adapter records it under that name)."""
    return arg(getattr(_CONFIG, name), help, **metadata)


def arg(default: Any, help: str, **metadata: Any) -> Any:
    return field(default=default, metadata={"help": help, **metadata})


def augmentation(name: str, help: str, **metadata: Any) -> Any:
    """A field whose default is PairTransform's `name`."""
    return arg(inspect.signature(PairTransform).parameters[name].default, help, **metadata)


@dataclass
class ModelArguments:
    """The frozen backbone and the Co-Settle method."""

    _argument_group_name = "model and method"
    model_name_or_path: str | None = arg(None, "Hub id or local path of the frozen backbone (required).",
                                         aliases=["--backbone"])
    model_revision: str | None = arg(None, "Branch, tag or commit of the backbone.", aliases=["--backbone_revision", "--backbone-revision"])
    backbone_precision: str = arg("fp32", "Run the frozen backbone in this precision (bf16: autocast, for CPUs with AVX512-BF16 "
                                  "or AMX and for GPUs); the projection and the loss stay float32.",
                                  choices=tuple(BACKBONE_PRECISIONS))
    projection: str = adapter("projection", "The projection g: linear (Linear-Tanh-LayerNorm, as published), mlp2 or mlp3.",
                              choices=PROJECTIONS)
    projection_init: str = adapter("projection_init", "How the projection's linears start: released (as the authors' model "
                                   "file of the backbone's family), trunc_normal, xavier, default (PyTorch's) or identity.",
                                   choices=PROJECTION_INIT_CHOICES)
    cycle_temperature: float = method("cycle_temperature")
    pool_size: int = method("pool_size")
    pea_alpha: float = method("pea_alpha")
    no_pea: bool = arg(False, "Turn PEA off (required for relative-bias backbones).")
    pea_mode: str = method("pea_mode")
    pea_per_sample: bool = method("pea_per_sample")
    separability: str = method("separability")
    kl_direction: str = method("kl_direction")
    separability_weight: float = method("separability_weight")


@dataclass
class DataArguments:
    """Where the clips come from and how pairs are drawn from them."""

    _argument_group_name = "data (one source)"
    train_dir: str | None = arg(None, "Frame folders (root/class/video/00000.jpg) or video files, any depth.")
    train_list: str | None = arg(None, "Text file listing frame folders or video files, one per line.")
    dataset_name: str | None = arg(None, "A `datasets` dataset (Hub id or local path) with a video column.")
    dataset_config_name: str | None = arg(None, "Its configuration.", aliases=["--dataset_config", "--dataset-config"])
    train_split: str = arg("train", "Its training split.", aliases=["--split"])
    video_column: str = arg("video", "The column holding video paths, bytes or a `Video` feature.")
    streaming: bool = arg(False, "Stream the dataset (needs --max_train_steps; one process).")
    validation_dir: str | None = arg(None, "Held-out clips (a folder, as --train_dir) for validation every --eval_steps.")
    validation_split: str | None = arg(None, "A held-out split of --dataset_name for validation every --eval_steps.")
    image_size: int = adapter("image_size", "Training resolution (square); the adapter's image processor resizes to it.")
    frame_gap: float = method("frame_gap")
    resize: str = augmentation("resize", "How frames are resized before the crop: antialiased (both resizes bicubic in uint8), "
                               "released (bilinear to the square, crop on floats unclamped, as the released code) or "
                               "short_side (short side to 256/224 of the size bilinear, then bicubic to the square).",
                               choices=tuple(RESIZE_PATHS))
    crop_rule: str = augmentation("crop_rule", "The RandomResizedCrop rule: torchvision (10 tries, then the centre) or released "
                                  "(one draw clipped to the image, BYOL style, as the released code).", choices=tuple(CROP_RULES))
    clip_seconds: float | None = arg(None, "Cut every video longer than this into consecutive clips of about this many "
                                     "seconds; the frame gap is taken within a clip. Default 10 (the length of the "
                                     "Kinetics clips the gap was defined on); 0 keeps whole videos.")
    split_at_cuts: bool = arg(False, "Also cut videos at shot changes (decodes every video once, at low resolution).")
    clip_repeats: int = arg(1, "Draw this many pairs from every clip per epoch (for small collections).")
    max_train_samples: int | None = arg(None, "Use at most this many clips per epoch (a different subset each epoch).")
    imagenet_normalization: bool = arg(False, "Normalise with ImageNet mean/std for every backbone, as the released runs did.")
    num_workers: int = arg(0, "DataLoader worker processes.")


@dataclass
class RunArguments:
    """Optimisation, checkpoints, validation and tracking, named as in the transformers examples."""

    _argument_group_name = "optimisation, checkpoints and tracking"
    output_dir: str | None = arg(None, "Where the adapter, checkpoints and logs go (required).",
                                 aliases=aliases("output_dir", "output_dir"))
    overwrite_output_dir: bool = arg(False, "Let a fresh run replace the checkpoints, log and adapter of an earlier run.",
                                     aliases=aliases("overwrite", "overwrite_output_dir"))
    per_device_train_batch_size: int = arg(128, "Pairs per process and step.")
    per_device_eval_batch_size: int | None = arg(None, "Pairs per process for validation (default: the training batch).")
    learning_rate: float | None = arg(None, "Absolute peak lr; overrides --base_learning_rate.")
    base_learning_rate: float = arg(1e-4, "lr = blr * global batch / 256 (the published rule).")
    weight_decay: float = arg(0.05, "AdamW weight decay, on weight matrices only.")
    num_train_epochs: int = arg(5, "Epochs (of clips).")
    max_train_steps: int | None = arg(None, "Optimizer steps; overrides --num_train_epochs.")
    lr_scheduler_type: str = arg("cosine", "transformers' get_scheduler: cosine with linear warm-up, as published.",
                                 choices=SCHEDULERS)
    warmup_epochs: float = arg(1.0, "Linear warm-up; with --max_train_steps, the same share of the run (warm-up / epochs).")
    num_warmup_steps: int | None = arg(None, "Overrides --warmup_epochs.")
    gradient_accumulation_steps: int = arg(1, "Micro-batches per optimizer step.")
    mixed_precision: str | None = arg(None, "no, fp16 or bf16.", choices=("no", "fp16", "bf16"))
    seed: int = arg(0, "Seeds every random draw (pairs, augmentation, PEA).")
    feature_cache_pairs: int = arg(0, "Compute the frozen backbone's three views of this many augmented pairs once and "
                                   "train the projection on batches sampled from them (0: fresh pairs every step, as "
                                   "published; see training/feature_cache.py). One process only.")
    feature_cache_file: str | None = arg(None, "Keep the cached views in this safetensors file: read when it exists and was "
                                         "made with the same data, augmentation and PEA settings, else built and written.")
    cpu: bool = arg(False, "Force the CPU (gloo when several processes).")
    checkpointing_steps: str | None = arg(None, "Save state every N optimizer steps, or 'epoch'.")
    save_total_limit: int | None = arg(None, "Keep only the newest N checkpoints.")
    resume_from_checkpoint: str | None = arg(None, "A checkpoint folder, or 'latest'.")
    eval_steps: int | None = arg(None, "Validate every N optimizer steps and at the end (default: --logging_steps).")
    save_best: bool = arg(False, "Also keep the adapter of the best validation cycle accuracy in output_dir/best "
                          "(beware: the positional shortcut can fool this metric).")
    logging_steps: int = arg(10, "Log the training metrics every N optimizer steps.")
    with_tracking: bool = arg(False, "Log to the trackers of --report_to.")
    report_to: str = arg("tensorboard", "Accelerate tracker(s): tensorboard, wandb, all, ...")
    push_to_hub: bool = arg(False, "Upload the final adapter to --hub_model_id.")
    hub_model_id: str | None = arg(None, "The repository to push to.")
    hub_token: str | None = arg(None, "A Hub token (never written anywhere).")
    hub_private: bool = arg(False, "Create the repository private.")
    hub_push_backbone: bool = arg(False, "Also upload the backbone (into backbone/), needed when the backbone is a local folder.")


POSITIVE = ("per_device_train_batch_size", "gradient_accumulation_steps", "image_size", "logging_steps", "clip_repeats",
            "num_train_epochs", "max_train_steps", "save_total_limit", "eval_steps", "max_train_samples",
            "per_device_eval_batch_size")
NON_NEGATIVE = ("weight_decay", "warmup_epochs", "num_warmup_steps", "clip_seconds", "num_workers")


@dataclass
class CoSettleTrainingArguments(RunArguments, DataArguments, ModelArguments):
    """Every setting of a Co-Settle training run; `train(args)` takes one.

    The fields are those of `ModelArguments`, `DataArguments` and `RunArguments`; each carries its help.
    Invalid values raise ValueError naming the flag.
    """

    def __post_init__(self) -> None:
        problems = [*self._required(), *self._ranges()]
        if problems:
            raise ValueError("; ".join(problems))

    def _required(self) -> list[str]:
        problems = [f"--{name} is required" for name in ("model_name_or_path", "output_dir") if not getattr(self, name)]
        if len(self.sources) > 1:
            problems.append("give one data source: --train_dir, --train_list or --dataset_name")
        if self.streaming and not self.max_train_steps:
            problems.append("--streaming needs --max_train_steps (a streamed dataset has no length)")
        if self.push_to_hub and not self.hub_model_id:
            problems.append("--push_to_hub needs --hub_model_id")
        if self.push_to_hub and self.model_name_or_path and os.path.isdir(self.model_name_or_path) and not self.hub_push_backbone:
            problems.append(f"--push_to_hub with the local backbone {self.model_name_or_path}: the pushed adapter would not load "
                            "elsewhere; add --hub_push_backbone to upload the backbone too, or train on a Hub backbone")
        if self.feature_cache_file and not self.feature_cache_pairs:
            problems.append("--feature_cache_file needs --feature_cache_pairs (how many pairs to cache)")
        if self.validation_split and not self.dataset_name:
            problems.append("--validation_split names a split of --dataset_name")
        if (self.validation_dir or self.validation_split) and not self.eval_steps:
            self.eval_steps = self.logging_steps
        if self.save_best and not (self.validation_dir or self.validation_split):
            problems.append("--save_best needs validation data (--validation_dir or --validation_split)")
        return problems

    def _ranges(self) -> list[str]:
        problems = [f"--{n} must be at least 1, got {getattr(self, n)}" for n in POSITIVE if getattr(self, n) is not None and getattr(self, n) < 1]
        problems += [f"--{n} must be >= 0, got {getattr(self, n)}" for n in NON_NEGATIVE if getattr(self, n) is not None and getattr(self, n) < 0]
        problems += [f"--{n} must be positive, got {getattr(self, n)}" for n in ("base_learning_rate", "learning_rate")
                     if getattr(self, n) is not None and not getattr(self, n) > 0]
        if self.checkpointing_steps not in (None, "epoch") and not (str(self.checkpointing_steps).isdigit() and int(self.checkpointing_steps) > 0):
            problems.append(f"--checkpointing_steps must be a number >= 1 or 'epoch', got {self.checkpointing_steps!r}")
        problems += [f"--{problem}" for problem in objective_problems({name: getattr(self, name) for name in OBJECTIVE_FIELDS})]
        return problems

    @property
    def sources(self) -> list[str]:
        return [name for name in ("train_dir", "train_list", "dataset_name") if getattr(self, name)]

    @property
    def objective(self) -> ObjectiveSettings:
        """The method's settings of this run, as its adapter records them (--no_pea: PEA off)."""
        settings = {name: getattr(self, name) for name in OBJECTIVE_FIELDS}
        return ObjectiveSettings(**{**settings, "pea_alpha": None if self.no_pea else self.pea_alpha})

    @property
    def clip_length(self) -> float:
        """Seconds per clip cut from long videos (0: whole videos)."""
        return 10.0 if self.clip_seconds is None else self.clip_seconds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


GROUPS = (ModelArguments, DataArguments, RunArguments)
# The settings that go into the adapter's CoSettleConfig, under the same names (the method's settings go as `objective`).
METHOD_FIELDS = tuple(f.name for group in GROUPS for f in fields(group) if f.name in inspect.signature(CoSettleConfig).parameters)


def command_line(args: CoSettleTrainingArguments) -> list[str]:
    """The `co-settle train` flags that give `args`: each field that differs from its default (`parse_args` inverts it)."""
    flags = []
    for declared in fields(args):
        value = getattr(args, declared.name)
        if value == declared.default or value is None or value is False:
            continue
        flag = f"--{declared.name.replace('_', '-')}"
        flags += [flag] if value is True else [flag, str(value)]
    return flags


def build_parser() -> HfArgumentParser:
    parser = HfArgumentParser(GROUPS, prog="co-settle train",
                              description="Adapt a frozen image ViT to video with Co-Settle (run under `accelerate launch`). "
                                          "A first argument ending in .json/.yaml is a settings file; flags after it override it.")
    parser.add_argument("settings_file", nargs="?", action=SettingsFile, metavar="SETTINGS.yaml",
                        help="a JSON or YAML file of settings (field names as keys), read before the flags that follow it")
    return parser


class SettingsFile(argparse.Action):
    """The settings of a JSON / YAML file as if given first: argparse reads it where it stands, before the flags after it."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: str | None = None) -> None:
        if values is None:
            return
        types = {action.dest: action.type for action in parser._actions if action.type}
        for name, value in read_settings_file(parser, Path(values)).items():  # a string is converted as a flag's text is
            setattr(namespace, name, types[name](value) if isinstance(value, str) and name in types else value)


def from_namespace(namespace: argparse.Namespace) -> CoSettleTrainingArguments:
    """The run's arguments from a parsed command line (settings file and flags); bad values raise ValueError."""
    return CoSettleTrainingArguments(**{f.name: getattr(namespace, f.name) for f in fields(CoSettleTrainingArguments)})


def parse_args(argv: Sequence[str] | None = None) -> CoSettleTrainingArguments:
    """Flags (either spelling), or a JSON/YAML settings file followed by overriding flags; bad values exit as usage errors."""
    parser = build_parser()
    try:
        return from_namespace(parser.parse_args(argv))
    except ValueError as error:
        parser.error(str(error))


def read_settings_file(parser: HfArgumentParser, path: Path) -> dict[str, Any]:
    """The settings of a JSON or YAML file, checked against the known fields."""
    if path.suffix.lower() not in CONFIG_SUFFIXES:
        parser.error(f"{path}: a settings file ends in {', '.join(CONFIG_SUFFIXES)} (every other setting is a --flag)")
    if not path.is_file():
        parser.error(f"settings file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        settings = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        parser.error(f"{path}: not a readable settings file ({error})")
    if not isinstance(settings, dict):
        parser.error(f"{path}: expected a mapping of setting names to values")
    known = {f.name for group in GROUPS for f in fields(group)}
    unknown = sorted(set(settings) - known)
    if unknown:
        parser.error(f"{path}: unknown settings {unknown}")
    return settings
