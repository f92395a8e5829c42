"""Command-line arguments of the trainer, in the style of the transformers `*_no_trainer` examples."""

from __future__ import annotations

import argparse
import os
from typing import Sequence

from ..configuration_co_settle import (
    KL_DIRECTIONS,
    PEA_MODES,
    PROJECTIONS,
    SEPARABILITY_KINDS,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="co-settle train",
        description="Adapt a frozen image ViT to video with Co-Settle (run under `accelerate launch`).",
    )
    data = parser.add_argument_group("data (one source)")
    data.add_argument("--train-dir", help="Frame folders (root/class/video/00000.jpg) or video files, any depth.")
    data.add_argument("--train-list", help="Text file listing frame folders or video files, one per line.")
    data.add_argument("--dataset-name", help="A `datasets` dataset (Hub id or local path) with a video column.")
    data.add_argument("--dataset-config", default=None)
    data.add_argument("--split", default="train")
    data.add_argument("--video-column", default="video")
    data.add_argument("--streaming", action="store_true", help="Stream the dataset (needs --max-train-steps).")
    data.add_argument("--image-size", type=int, default=224)
    data.add_argument("--frame-gap", type=float, default=0.15, help="delta: frame gap as a fraction of the clip.")
    data.add_argument("--imagenet-normalization", action="store_true",
                      help="Normalise with ImageNet mean/std for every backbone, as the released runs did.")
    data.add_argument("--clip-repeats", type=int, default=1,
                      help="Draw this many pairs from every clip per epoch (for small collections).")
    data.add_argument("--num-workers", type=int, default=0)

    model = parser.add_argument_group("model and method")
    model.add_argument("--backbone", required=True, help="Hub id or local path of the frozen backbone.")
    model.add_argument("--backbone-revision", default=None)
    model.add_argument("--projection", choices=PROJECTIONS, default="linear")
    model.add_argument("--temperature", type=float, default=0.03)
    model.add_argument("--pool-size", type=int, default=2)
    model.add_argument("--pea-alpha", type=float, default=10.0)
    model.add_argument("--no-pea", action="store_true", help="Turn PEA off (required for relative-bias backbones).")
    model.add_argument("--pea-mode", choices=PEA_MODES, default="random")
    model.add_argument("--pea-per-sample", action="store_true", help="One PEA crop per image instead of per batch.")
    model.add_argument("--separability", choices=SEPARABILITY_KINDS, default="kl")
    model.add_argument("--kl-direction", choices=KL_DIRECTIONS, default="code")
    model.add_argument("--separability-weight", type=float, default=3.0)

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--per-device-train-batch-size", type=int, default=128)
    optim.add_argument("--learning-rate", type=float, default=None, help="Absolute lr; overrides --base-learning-rate.")
    optim.add_argument("--base-learning-rate", type=float, default=1e-4, help="lr = blr * global batch / 256.")
    optim.add_argument("--weight-decay", type=float, default=0.05)
    optim.add_argument("--num-train-epochs", type=int, default=5)
    optim.add_argument("--max-train-steps", type=int, default=None, help="Overrides --num-train-epochs.")
    optim.add_argument("--warmup-epochs", type=float, default=1.0,
                       help="Linear warm-up; with --max-train-steps, the same share of the run (warm-up / epochs).")
    optim.add_argument("--num-warmup-steps", type=int, default=None, help="Overrides --warmup-epochs.")
    optim.add_argument("--gradient-accumulation-steps", type=int, default=1)
    optim.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default=None)
    optim.add_argument("--seed", type=int, default=0)
    optim.add_argument("--cpu", action="store_true", help="Force the CPU (gloo when several processes).")

    run = parser.add_argument_group("outputs, checkpoints and tracking")
    run.add_argument("--output-dir", required=True)
    run.add_argument("--overwrite-output-dir", action="store_true",
                     help="Let a fresh run replace the checkpoints, log and adapter of an earlier run in --output-dir.")
    run.add_argument("--checkpointing-steps", default=None, help="Save state every N optimizer steps, or 'epoch'.")
    run.add_argument("--resume-from-checkpoint", default=None, help="A checkpoint folder, or 'latest'.")
    run.add_argument("--logging-steps", type=int, default=10)
    run.add_argument("--with-tracking", action="store_true")
    run.add_argument("--report-to", default="tensorboard", help="Accelerate tracker(s): tensorboard, wandb, all, ...")
    run.add_argument("--push-to-hub", action="store_true")
    run.add_argument("--hub-model-id", default=None)
    run.add_argument("--hub-token", default=None)
    run.add_argument("--hub-private", action="store_true")
    run.add_argument("--hub-push-backbone", action="store_true",
                     help="Also upload the backbone (into backbone/), needed when --backbone is a local folder.")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    sources = [name for name in ("train_dir", "train_list", "dataset_name") if getattr(args, name)]
    if len(sources) != 1:
        parser.error("give exactly one data source: --train-dir, --train-list or --dataset-name")
    if args.streaming and not args.max_train_steps:
        parser.error("--streaming needs --max-train-steps (a streamed dataset has no length)")
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push-to-hub needs --hub-model-id")
    if args.push_to_hub and os.path.isdir(args.backbone) and not args.hub_push_backbone:
        parser.error(f"--push-to-hub with the local --backbone {args.backbone}: the pushed adapter would not load elsewhere; "
                     "add --hub-push-backbone to upload the backbone too, or train on a Hub backbone")
    if args.checkpointing_steps not in (None, "epoch") and not str(args.checkpointing_steps).isdigit():
        parser.error(f"--checkpointing-steps must be a number or 'epoch', got {args.checkpointing_steps!r}")
    for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "image_size", "logging_steps", "clip_repeats",
                 "num_train_epochs", "max_train_steps", "pool_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.checkpointing_steps not in (None, "epoch") and int(args.checkpointing_steps) < 1:
        parser.error("--checkpointing-steps must be at least 1 (or 'epoch')")
    if not 0.0 <= args.frame_gap < 1.0:
        parser.error(f"--frame-gap must be in [0, 1) (a fraction of the clip), got {args.frame_gap}")
    for name in ("temperature", "base_learning_rate"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.learning_rate is not None and not args.learning_rate > 0:
        parser.error(f"--learning-rate must be positive, got {args.learning_rate}")
    for name in ("pea_alpha", "separability_weight", "weight_decay", "warmup_epochs"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.num_warmup_steps is not None and args.num_warmup_steps < 0:
        parser.error(f"--num-warmup-steps must be >= 0, got {args.num_warmup_steps}")
    return args
