"""The model card written next to every saved adapter.

The template is `model_cards/co_settle_adapter.md`; the package reaches it through the link
`co_settle_hf/hub/card_template.md`, so installed copies carry the same file.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from ..configuration_co_settle import CoSettleConfig

TAGS = ["co-settle", "video", "vision", "feature-extraction", "self-supervised", "adapter"]


def render_model_card(
    config: CoSettleConfig,
    training: dict[str, Any] | None = None,
    results: dict[str, Any] | None = None,
    license: str = "apache-2.0",
    repo_id: str | None = None,
    datasets: list[str] | None = None,
) -> str:
    """The card as Markdown with YAML metadata that `huggingface_hub.ModelCard` parses."""
    base = config.base_model_name_or_path or "unknown"
    is_hub_id = base.count("/") == 1 and not base.startswith((".", "/", "~"))
    data = ModelCardData(
        library_name="co-settle-hf",
        base_model=base if is_hub_id else None,
        base_model_relation="adapter" if is_hub_id else None,
        tags=TAGS + ([config.base_model_type] if config.base_model_type else []),
        pipeline_tag="image-feature-extraction",
        license=license,
        datasets=datasets,
    )
    num_parameters = config.hidden_size * (config.hidden_size + 1) * {"linear": 1, "mlp2": 2, "mlp3": 3}[config.projection] + 2 * config.hidden_size
    template = resources.files("co_settle_hf.hub").joinpath("card_template.md").read_text(encoding="utf-8")
    card = ModelCard.from_template(
        data,
        template_str=template,
        base_model=base,
        base_model_link=f"https://huggingface.co/{base}" if is_hub_id else base,
        base_revision=config.base_model_revision,
        repo_id=repo_id or "path/to/this/adapter",
        num_parameters=f"{num_parameters:,}",
        size_kib=f"{num_parameters * 4 / 1024:.0f}",
        training=training or {},
        results=results or {},
        **config.to_dict(),
    )
    return str(card)
