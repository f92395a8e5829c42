"""The model card of an adapter: one path that updates the card, never re-renders it over what it holds.

A fresh card comes from the template (`model_cards/co_settle_adapter.md`, reached through the link
`co_settle_hf/hub/card_template.md`). The parts this library writes sit between
`<!-- co-settle:NAME -->` markers; everything else (a user's own sections, a hand-written card) is
left as it is. On every save the metadata and the regions that follow from the config are refreshed,
the training region only when training settings are given, and the evaluation region from the
card's `model-index` (huggingface_hub `EvalResult`s), which new results are merged into.
"""

from __future__ import annotations

import logging
import math
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..configuration_co_settle import CoSettleConfig
from ..errors import SettingsError

logger = logging.getLogger(__name__)
ARXIV_ID = "2603.26597"
ARXIV_URL = f"https://arxiv.org/abs/{ARXIV_ID}"
PROJECT_URL = "https://github.com/co-settle-hf/co-settle-hf"
MEASURED = "co-settle-hf evaluation (measured)"
REPORTED = "Co-Settle paper (reported by the authors)"
REPORTED_CONFIG = "reported-by-authors"
TAGS = ["co-settle", "video", "vision", "feature-extraction", "self-supervised", "adapter", f"arxiv:{ARXIV_ID}"]
REGION_TITLES = {"about": "About", "usage": "How to use", "settings": "Method settings", "training": "Training", "evaluation": "Evaluation"}
# Evaluation tasks: task type and name, data set type, name and split, and the metrics reported.
TASKS = {
    "davis": ("video-object-segmentation", "Video object segmentation (label propagation)", "davis", "DAVIS 2017", "val",
              ("J&F-Mean", "J-Mean", "F-Mean")),
    "jhmdb": ("pose-tracking", "Pose keypoint propagation", "jhmdb", "JHMDB", "test", ("PCK@0.1", "PCK@0.2")),
    "vip": ("video-part-segmentation", "Human part propagation", "vip", "VIP", "val", ("mIoU",)),
}


def eval_result(task: str, metric: str, value: float, reported: bool = False, dataset_name: str | None = None) -> EvalResult:
    """One `model-index` entry: measured with this library, or reported by the authors (with the paper's link).

    huggingface_hub groups entries by task and data set (type, config, split) and keeps one source per
    group, so reported figures carry the data set config `REPORTED_CONFIG` to stay a group of their own.
    """
    task_type, task_name, dataset_type, default_name, split, _ = TASKS[task]
    return EvalResult(
        task_type=task_type, task_name=task_name, dataset_type=dataset_type, dataset_name=dataset_name or default_name,
        dataset_config=REPORTED_CONFIG if reported else None,
        dataset_split=split, metric_type=metric, metric_name=metric, metric_value=round(float(value), 4),
        source_name=REPORTED if reported else MEASURED, source_url=ARXIV_URL if reported else PROJECT_URL,
    )


def results_from_summary(task: str, summary: dict[str, Any], dataset_name: str | None = None) -> list[EvalResult]:
    """The measured `EvalResult`s of one `co-settle eval` summary (its task's headline metrics)."""
    metrics = TASKS[task][-1]
    return [eval_result(task, m, summary[m], dataset_name=dataset_name) for m in metrics
            if isinstance(summary.get(m), (int, float)) and not math.isnan(summary[m])]


def update_card(
    text: str | None,
    config: CoSettleConfig,
    num_parameters: int | None = None,
    repo_id: str | None = None,
    training: dict[str, Any] | None = None,
    eval_results: Iterable[EvalResult] | None = None,
    datasets: Iterable[str] | None = None,
    license: str | None = None,
    tags: Iterable[str] | None = None,
) -> str:
    """The card `text` (a fresh one if None) brought up to date; what is not given is kept.

    A card whose YAML metadata cannot be parsed is returned unchanged, with a warning: it is the
    user's text, and rewriting it would lose what they wrote.
    """
    try:
        card = ModelCard(text) if text else _fresh_card()
    except yaml.YAMLError as error:
        logger.warning("The model card's YAML metadata cannot be parsed, so the card is saved unchanged: %s", error)
        return text
    data = card.data
    _update_metadata(data, config, repo_id, training, datasets, license, tags)
    if eval_results:
        data.eval_results = _merge(data.eval_results or [], list(eval_results))
    if data.eval_results:
        data.model_name = data.model_name or repo_id or f"co-settle-{_short(config.base_model_name_or_path)}"
    body = card.text
    if num_parameters is not None:
        body = set_region(body, "about", _about(config, num_parameters))
    body = set_region(body, "settings", _settings(config))
    if repo_id or not region_content(body, "usage"):
        body = set_region(body, "usage", _usage(repo_id or "path/to/this/adapter", config))
    if training:
        body = set_region(body, "training", _table(("argument", "value"), training.items()))
    if data.eval_results:
        body = set_region(body, "evaluation", _evaluation(data.eval_results))
    return f"---\n{data.to_yaml()}\n---\n{body}"


def check_card_target(adapter_dir: str | os.PathLike, task: str) -> None:
    """`--update-card` fails before any evaluation work when it could not record the results."""
    if task not in TASKS:
        raise SettingsError(f"--update-card records {', '.join(TASKS)} results; {task} has no model-index entry")
    if not Path(adapter_dir, "config.json").is_file():
        raise SettingsError(f"--update-card {adapter_dir}: not a saved adapter folder (no config.json)")


def add_results_to_card(adapter_dir: str | os.PathLike, eval_results: list[EvalResult]) -> Path:
    """Merge evaluation results into a saved adapter's README.md (what `co-settle eval --update-card` does)."""
    path = Path(adapter_dir, "README.md")
    check_card_target(adapter_dir, "davis")
    config = CoSettleConfig.from_pretrained(adapter_dir)
    text = path.read_text(encoding="utf-8") if path.is_file() else None
    path.write_text(update_card(text, config, eval_results=eval_results), encoding="utf-8")
    return path


# ---------------------------------------------------------------------- regions
def region_content(body: str, name: str) -> str | None:
    """What a region holds (None without the region)."""
    match = re.search(f"<!-- co-settle:{name} -->(.*?)<!-- /co-settle:{name} -->", body, flags=re.S)
    return match[1].strip() if match else None


def set_region(body: str, name: str, content: str) -> str:
    """Replace the region's content; a card without it (hand-written) gets it appended as a section."""
    start, end = f"<!-- co-settle:{name} -->", f"<!-- /co-settle:{name} -->"
    block = f"{start}\n{content.strip()}\n{end}"
    if region_content(body, name) is not None:
        return re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, body, count=1, flags=re.S)
    return f"{body.rstrip()}\n\n## {REGION_TITLES[name]}\n\n{block}\n"


def _fresh_card() -> ModelCard:
    template = resources.files("co_settle_hf.hub").joinpath("card_template.md").read_text(encoding="utf-8")
    return ModelCard(template.replace("{{ card_data }}", "library_name: co-settle-hf"))


def _update_metadata(data: ModelCardData, config: CoSettleConfig, repo_id: str | None, training: dict[str, Any] | None,
                     datasets: Iterable[str] | None, license: str | None, tags: Iterable[str] | None) -> None:
    base = config.base_model_name_or_path
    data.library_name = "co-settle-hf"
    data.pipeline_tag = "image-feature-extraction"
    data.base_model = base if _is_hub_id(base) else None
    data.base_model_relation = "adapter" if _is_hub_id(base) else None
    data.license = license or data.license or "apache-2.0"
    data.tags = _union(data.tags, TAGS, [config.base_model_type] if config.base_model_type else [], tags)
    data.datasets = _union(data.datasets, datasets, _training_datasets(training)) or None


def _training_datasets(training: dict[str, Any] | None) -> list[str]:
    """A Hub data set id the adapter was trained on (a local folder is no `datasets:` entry)."""
    source = (training or {}).get("dataset_name") or (training or {}).get("data")
    return [source] if isinstance(source, str) and _is_hub_id(source) else []


def _about(config: CoSettleConfig, num_parameters: int) -> str:
    base = config.base_model_name_or_path
    name = base or "a bundled backbone"
    link = f"[`{base}`](https://huggingface.co/{base})" if _is_hub_id(base) else f"`{name}`"
    revision = f" at commit `{config.base_model_revision}`" if config.base_model_revision and not config.base_model_subfolder else ""
    if config.base_model_subfolder:
        where = (f"The backbone is bundled in this repository's `{config.base_model_subfolder}/` folder (a standard "
                 "transformers checkpoint) and loaded from there, at the same revision, and kept frozen.")
    elif _is_hub_id(base):
        where = "The backbone itself is not stored here: it is loaded from its own repository and kept frozen."
    else:
        where = ("The backbone is a local folder: this adapter loads only where that folder exists "
                 "(pass `backbone=` to `from_pretrained` elsewhere).")
    return (f"# Co-Settle adapter for `{name}`\n\nThis repository holds a **Co-Settle** projection (`{config.projection}`, "
            f"{num_parameters:,} parameters, {num_parameters * 4 / 1024:.0f} KiB of float32 safetensors) for the frozen "
            f"image backbone {link}{revision}. {where}")


def _usage(repo_id: str, config: CoSettleConfig) -> str:
    return f'''```python
import torch
import co_settle_hf  # registers the "co_settle" model type with transformers
from co_settle_hf import CoSettleModel
from transformers import AutoImageProcessor, pipeline

model = CoSettleModel.from_pretrained("{repo_id}")  # also loads the frozen backbone
processor = AutoImageProcessor.from_pretrained("{repo_id}")  # the adapter's resize and normalisation
pixel_values = torch.randn(2, 3, {config.image_size}, {config.image_size})  # or processor(images, return_tensors="pt").pixel_values
features = model(pixel_values).features  # (2, h, w, {config.hidden_size}) projected patch features
extractor = pipeline("image-feature-extraction", model="{repo_id}")  # last_hidden_state, or pool=True
```'''


def _settings(config: CoSettleConfig) -> str:
    objective = config.objective
    pea = "off" if objective.pea_alpha is None else (
        f"alpha {objective.pea_alpha}, {objective.pea_mode} crop, {'per sample' if objective.pea_per_sample else 'per batch'}")
    kl = f" ({objective.kl_direction} direction)" if objective.separability == "kl" else ""
    rows = [
        ("backbone family", f"`{config.base_model_type}` (patch {config.patch_size}, {config.num_prefix_tokens} prefix tokens dropped)"),
        ("projection", f"`{config.projection}`"),
        ("projection initialisation", f"`{config.projection_init}`"),
        ("cycle temperature", objective.cycle_temperature),
        ("pooling on the patch grid", f"{objective.pool_size}x{objective.pool_size}"),
        ("PEA", pea),
        ("separability", f"{objective.separability}{kl}, weight {objective.separability_weight}"),
        ("frame gap", f"{objective.frame_gap} of the clip"),
        ("image size and normalisation", f"{config.image_size}, mean {config.image_mean}, std {config.image_std}"),
    ]
    return _table(("setting", "value"), rows)


def _evaluation(results: list[EvalResult]) -> str:
    rows = []
    for r in results:
        source = "measured here" if r.source_name == MEASURED else f"[{r.source_name}]({r.source_url})" if r.source_url else r.source_name
        dataset = f"{r.dataset_name}" + (f" ({r.dataset_split})" if r.dataset_split else "")
        value = f"{r.metric_value:.4f}" if isinstance(r.metric_value, float) else r.metric_value
        rows.append((r.task_name or r.task_type, dataset, r.metric_name or r.metric_type, value, source))
    return _table(("task", "dataset", "metric", "value", "source"), rows)


def _table(header: tuple[str, ...], rows: Iterable[tuple[Any, ...]]) -> str:
    cell = lambda value: str(value).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------- small helpers
def _merge(old: list[EvalResult], new: list[EvalResult]) -> list[EvalResult]:
    """New results replace old ones for the same task, data set (type, config, split) and metric."""
    key = lambda r: (*r.unique_identifier, r.metric_type)  # noqa: E731
    merged = {key(r): r for r in old}
    merged.update({key(r): r for r in new})
    return list(merged.values())


def _union(*lists: Iterable[str] | None) -> list[str]:
    out: list[str] = []
    for values in lists:
        out += [v for v in values or [] if v not in out]
    return out


def _is_hub_id(name: str | None) -> bool:
    return bool(name) and name.count("/") == 1 and not name.startswith((".", "/", "~")) and not os.path.isdir(name)


def _short(name: str | None) -> str:
    return (name or "backbone").rstrip("/").split("/")[-1]
