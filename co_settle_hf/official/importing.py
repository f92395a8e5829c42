"""`co-settle import-official NAME`: one of the paper's eight models as a self-contained adapter.

The authors' trained checkpoints hold the whole model (backbone and projection) as their trainer
saved it: `{'model', 'optimizer', 'epoch', 'scaler', 'args'}`. The import downloads one (cached
and resumable, through huggingface_hub, with the resolved commit recorded), reads it safely
(`official.reading`), converts the backbone onto the transformers class of its family
(`official.layouts`), and writes an adapter whose backbone is bundled in `backbone/` and whose
config records what the authors' evaluation forward does (`official.published`).
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import hf_hub_download

from ..backbones.encoder import BackboneEncoder
from ..backbones.families import IMAGENET_MEAN, IMAGENET_STD
from ..errors import SettingsError
from ..hub.model_card import eval_result
from ..modeling_co_settle import CoSettleModel
from ..shared_flags import add_shared
from .converting import PREFIX, OfficialCheckpointError, convert_official_checkpoint, extract_projection
from .layouts import ConversionError, build_model, convert_state, infer_architecture, load_converted
from .published import AUTHORS_REPO, CODE_REPO, LOOKS_LIKE, PUBLISHED, PublishedModel, looks_like
from .reading import MAX_CHECKPOINT_BYTES, read_checkpoint

TOWER = "visual."


def fetch_checkpoint(source: str, filename: str, revision: str | None = None, **hub_kwargs: Any) -> tuple[Path, str | None]:
    """(local path, resolved commit) of `filename` in a Hub repository or a folder laid out like one."""
    if os.path.isdir(source):
        path = Path(source, filename)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: {source} is not laid out like the {AUTHORS_REPO} repository.")
        return path, None
    path = Path(hf_hub_download(source, filename, revision=revision, **hub_kwargs))  # cached, resumed, with progress
    snapshot = path.parents[len(Path(filename).parts) - 1]
    return path, snapshot.name if snapshot.parent.name == "snapshots" else revision


def split_checkpoint(checkpoint: Any, published: PublishedModel, source: str) -> tuple[dict[str, torch.Tensor], Any]:
    """(the vision tower's state dict, the trainer's args) of a checkpoint, prefixes removed."""
    state = checkpoint.get("model", checkpoint.get("state_dict", checkpoint)) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state:
        raise ConversionError(f"{source} holds no state dict (expected the trainer's {{'model': ...}}).")
    state = {key.removeprefix("module."): value for key, value in state.items()}
    outside = [key for key in state if not key.startswith(TOWER)] if any(key.startswith(TOWER) for key in state) else []
    tower = {key.removeprefix(TOWER): value for key, value in state.items() if key not in outside}
    args = checkpoint.get("args") if isinstance(checkpoint, dict) else None
    _check_family(published, tower, args, source)
    unknown = [key for key in outside if not any(re.fullmatch(pattern, key) for pattern in published.outside)]
    if unknown:
        raise ConversionError(f"{source}: keys beside the {TOWER} vision tower that are not {published.title}'s known extras: {sorted(unknown)}")
    return tower, args


def _check_family(published: PublishedModel, state: dict[str, Any], args: Any, source: str) -> None:
    claimed = getattr(args, "base_model", None)
    if claimed is not None and claimed != published.name:
        title = PUBLISHED[claimed].title if claimed in PUBLISHED else claimed
        raise ConversionError(f"{source} was trained on {title} (its args.base_model is {claimed!r}), not {published.title}: import it as {claimed!r}.")
    seen = looks_like(state)
    if seen != published.looks_like:
        raise ConversionError(f"{source} looks like {LOOKS_LIKE[seen]}, not like a {published.title} checkpoint.")


def convert_trained(checkpoint: Any, published: PublishedModel, source: str) -> tuple[BackboneEncoder, str, dict[str, torch.Tensor]]:
    """(the converted backbone, projection kind, projection state) of a trained checkpoint."""
    state, _ = split_checkpoint(checkpoint, published, source)
    try:
        kind, projection = extract_projection(state, source)
    except OfficialCheckpointError as error:
        raise ConversionError(str(error)) from None
    backbone_state = {key: value for key, value in state.items() if not key.startswith(PREFIX)}
    encoder = convert_backbone(backbone_state, published, source)
    return encoder, kind, projection


def convert_backbone(state: dict[str, torch.Tensor], published: PublishedModel, source: str) -> BackboneEncoder:
    """The authors' backbone tensors as a frozen transformers model of the family's class."""
    architecture = infer_architecture(state, published.layout, published.num_heads, source)
    model = build_model(published.layout, architecture)
    load_converted(model, convert_state(state, published.layout, published.ignored, source), source)
    encoder = BackboneEncoder(model, name_or_path=published.hub_base, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    encoder.use_feature_settings(published.final_norm, published.position_interpolation)
    return encoder


def import_official(
    name: str,
    output_dir: str | os.PathLike,
    source: str = AUTHORS_REPO,
    revision: str | None = None,
    push_to_hub: str | None = None,
    max_bytes: int = MAX_CHECKPOINT_BYTES,
    overwrite: bool = False,
    **hub_kwargs: Any,
) -> Path:
    """Download, convert and save one of the eight published models; returns the adapter folder."""
    if name not in PUBLISHED:
        raise ValueError(f"Unknown model {name!r}; the published models are {', '.join(PUBLISHED)}.")
    output = Path(output_dir)
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise FileExistsError(f"{output} exists and is not empty: choose another output folder, or overwrite it explicitly (--overwrite).")
    published = PUBLISHED[name]
    path, commit = fetch_checkpoint(source, published.checkpoint, revision, **hub_kwargs)
    encoder, kind, projection = convert_trained(read_checkpoint(path, max_bytes), published, str(path))
    adapter = CoSettleModel.from_backbone(
        encoder, projection=kind, image_size=224, apply_final_norm=published.final_norm,
        position_interpolation=published.position_interpolation, projection_init=published.projection_init,
    )
    adapter.load_state_dict(projection)
    card = official_card(published, source, commit)
    adapter.save_pretrained(output, save_backbone=True, model_card=card)
    if push_to_hub:
        adapter.push_to_hub(push_to_hub, model_card=card, push_backbone=True)
    return output


def official_card(published: PublishedModel, source: str, commit: str | None) -> dict[str, Any]:
    """What the model card of an imported model records: provenance and the authors' own numbers."""
    where = source if os.path.isdir(source) else f"https://huggingface.co/{source}"
    training = {
        "imported from": f"{where}, file `{published.checkpoint}`" + (f", commit `{commit}`" if commit else ""),
        "trained by": f"the paper's authors: {published.title} ViT-B/16, 5 epochs on Kinetics-400",
        "authors' code": CODE_REPO,
        "features": f"as the authors' `forward_features_eval_metric`: final norm {'applied' if published.final_norm else 'not applied'}, "
                    f"positions interpolated the `{published.position_interpolation}` way, ImageNet mean/std",
    }
    results = [eval_result(task, metric, values[1], reported=True) for (task, metric), values in published.reported.items()]
    return {"training": training, "eval_results": results}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="co-settle import-official", description=(
        "Import one of the paper's eight published models as an adapter, or (--checkpoint) the projection of an "
        "authors' training checkpoint onto a backbone you name."))
    parser.add_argument("name", nargs="?", choices=sorted(PUBLISHED), help="the backbone family of the published model")
    add_shared(parser, "output_dir", required=True, help="adapter folder to write (a bundled backbone goes in backbone/)")
    parser.add_argument("--source", default=AUTHORS_REPO, help=f"Hub repository id or a local folder laid out like it (default {AUTHORS_REPO})")
    parser.add_argument("--revision", default=None, help="branch, tag or commit of the source repository")
    parser.add_argument("--push-to-hub", default=None, metavar="REPO_ID", help="also upload the adapter to this Hub repository")
    parser.add_argument("--max-checkpoint-bytes", type=int, default=MAX_CHECKPOINT_BYTES, help="refuse larger checkpoint files")
    add_shared(parser, "overwrite", help="write into a non-empty --output-dir")
    mode = parser.add_argument_group("a checkpoint of your own (instead of NAME)")
    mode.add_argument("--checkpoint", default=None, metavar="FILE.pth", help="an authors' training .pth (read with weights_only=True)")
    mode.add_argument("--backbone", default=None, help="Hub id or path of the backbone that checkpoint was trained on")
    mode.add_argument("--backbone-revision", default=None, help="branch, tag or commit of --backbone")
    return parser


def execute(args: argparse.Namespace) -> Path:
    """`co-settle import-official` on its parsed command line: a published model by NAME, or --checkpoint on --backbone."""
    if (args.name is None) == (args.checkpoint is None):
        raise SettingsError("give NAME (a published model) or --checkpoint FILE.pth with --backbone, not both")
    if args.checkpoint:
        if not args.backbone:
            raise SettingsError("--checkpoint needs --backbone: the backbone the checkpoint's projection was trained on")
        out = convert_official_checkpoint(args.checkpoint, args.backbone, args.output_dir, revision=args.backbone_revision)
    else:
        out = import_official(args.name, args.output_dir, args.source, args.revision, args.push_to_hub, args.max_checkpoint_bytes, args.overwrite)
    print(f"Wrote {out} (load it with CoSettleModel.from_pretrained({str(out)!r}))")
    return out
