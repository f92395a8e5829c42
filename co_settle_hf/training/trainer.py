"""Self-supervised Co-Settle training with Accelerate: one script from a laptop CPU to many GPUs.

    accelerate launch -m co_settle_hf.train --backbone facebook/dinov2-small \
        --train-dir kinetics400/train --output-dir dinov2-small-co-settle

Only the projection is trained, prepared and checkpointed; the backbone is frozen, kept in eval
mode and never saved. Randomness is keyed on (seed, epoch, sample) and (seed, step), so a run
resumed from a checkpoint ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence as SequenceABC
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from ..backbones.encoder import BackboneEncoder
from ..data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FramePairDataset,
    IterableFramePairDataset,
    PairTransform,
    check_bad_fraction,
    collate_pairs,
    dataset_clips,
    discover_clips,
    sample_generator,
)
from ..modeling_co_settle import CoSettleModel
from .forward import training_forward
from .arguments import parse_args
from .checkpointing import RUN_STATE, list_checkpoints, load_checkpoint, read_json, save_checkpoint
from .run_folder import RunLock, clean_leftovers, prepare_fresh_folder, save_adapter_atomically
from .settings import APPLIED, REPLAYED, describe, differences, public

logger = logging.getLogger(__name__)
MIN_SAMPLES_FOR_BAD_CHECK = 200
ALL_BAD_STOP = 8  # this many samples, all unreadable, from the start of an epoch: stop at once
METRICS = ("loss", "cycle_loss", "separability_loss", "cycle_accuracy", "cycle_identity_similarity")


class EpochShuffleSampler(Sampler[int]):
    """A permutation keyed on (seed, epoch): the same order whenever an epoch is replayed."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        # A key no sample index reaches, so the order's stream is not sample 0's augmentation stream.
        return iter(torch.randperm(self.size, generator=sample_generator(self.seed, self.epoch, 1 << 40)).tolist())

    def __len__(self) -> int:
        return self.size


class RepeatedClips(SequenceABC):
    """`clips` seen `repeats` times an epoch, without building any clip twice (a lazy view)."""

    def __init__(self, clips: Sequence, repeats: int) -> None:
        self.clips, self.repeats = clips, repeats

    def __len__(self) -> int:
        return len(self.clips) * self.repeats

    def __getitem__(self, index: int):
        return self.clips[index % len(self.clips)]


def lr_lambda(warmup_steps: int, total_steps: int):
    """Linear warm-up to the peak, then a half cosine to 0, evaluated every optimizer step."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices only: none on biases and norm parameters."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_dataset(args: Any, mean: Sequence[float], std: Sequence[float]) -> FramePairDataset | IterableFramePairDataset:
    """Clips from the chosen source turned into augmented frame pairs; fails early, naming the argument."""
    if args.dataset_name:
        try:
            clips = dataset_clips(args.dataset_name, args.dataset_config, args.split, args.video_column, args.streaming)
        except (OSError, ValueError) as error:
            raise SystemExit(f"--dataset-name {args.dataset_name}: {error}") from None
    else:
        source = args.train_dir or args.train_list
        flag = "--train-dir" if args.train_dir else "--train-list"
        try:
            clips = discover_clips(source)
        except (FileNotFoundError, ValueError) as error:
            raise SystemExit(f"{flag}: {error}") from None
    transform = PairTransform(size=args.image_size, mean=mean, std=std)
    if args.streaming:
        return IterableFramePairDataset(clips, transform, delta=args.frame_gap, seed=args.seed)
    if len(clips) == 0:
        raise SystemExit(f"--dataset-name {args.dataset_name}: split {args.split!r} holds no videos")
    if args.clip_repeats > 1:
        clips = RepeatedClips(clips, args.clip_repeats)
    return FramePairDataset(clips, transform, delta=args.frame_gap, seed=args.seed)


def load_backbone(args: Any) -> BackboneEncoder:
    try:
        return BackboneEncoder.from_pretrained(args.backbone, revision=args.backbone_revision)
    except (OSError, ValueError) as error:
        raise SystemExit(f"--backbone {args.backbone}: {error}") from None


def logged_step(line: str) -> float:
    """The step of a log line; a line a killed run left half-written counts as never logged."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def on_main(accelerator: Accelerator, action: Any) -> None:
    """Run `action` on the main process; a refusal there stops every process with its message."""
    error = None
    if accelerator.is_main_process:
        try:
            action()
        except SystemExit as refusal:
            error = str(refusal)
    if accelerator.num_processes > 1:
        box = [error]
        broadcast_object_list(box)
        error = box[0]
    if error:
        raise SystemExit(error)


def run_settings(args: Any, accelerator: Accelerator, backbone: BackboneEncoder, dataset: Any, **derived: Any) -> dict[str, Any]:
    """Every setting of this run as it is recorded in checkpoints, the card and trackers (no secrets)."""
    source = args.dataset_name or args.train_dir or args.train_list
    if Path(source).exists():
        source = str(Path(source).resolve())
    settings = public(vars(args))
    settings.update(
        processes=accelerator.num_processes, data=source, clips=len(dataset) if hasattr(dataset, "__len__") else "streamed",
        backbone_revision=backbone.revision, hidden_size=backbone.hidden_size, mixed_precision=accelerator.mixed_precision,
        **derived,
    )
    return settings


def choose_checkpoint(output_dir: Path, resume: str, settings: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """The checkpoint to resume from: `latest` is the newest one written with this run's settings."""
    if resume == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            raise SystemExit(f"--resume-from-checkpoint latest: no checkpoint in {output_dir / 'checkpoints'}")
        records = [(path, read_json(path / RUN_STATE)) for _, path in found]
        for path, record in records:
            if not differences(record.get("settings", {}), settings, REPLAYED):
                return path, record
        path, record = records[0]
    else:
        path = Path(resume)
        if not (path / RUN_STATE).is_file():
            raise SystemExit(f"--resume-from-checkpoint: {path} is not a co-settle checkpoint folder (no {RUN_STATE})")
        record = read_json(path / RUN_STATE)
    changed = differences(record.get("settings", {}), settings, REPLAYED)
    if changed:
        raise SystemExit(f"--resume-from-checkpoint {resume}: {path} was written by a run with other settings, "
                         f"which a resume cannot change (saved -> now): {describe(changed)}")
    return path, record


def main(argv: Sequence[str] | None = None) -> Path:
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        cpu=args.cpu,
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=args.report_to if args.with_tracking else None,
        project_dir=str(output_dir),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO if accelerator.is_main_process else logging.ERROR)
    if args.streaming and accelerator.num_processes > 1:
        raise SystemExit("--streaming runs on one process for now: use a map-style dataset (or a local copy) with several")
    if args.with_tracking and not accelerator.log_with:  # Accelerate drops a tracker whose package is missing
        raise SystemExit(f"--report-to {args.report_to}: no such tracker is installed (e.g. pip install tensorboard)")
    set_seed(args.seed)

    # Everything that can fail on bad arguments fails here, before any training work.
    backbone = load_backbone(args)
    if backbone.position_kind == "relative" and not args.no_pea:
        raise SystemExit(f"--backbone {args.backbone}: {backbone.family.name} has only a relative position bias, "
                         "so PEA has nothing to augment: pass --no-pea")
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if args.imagenet_normalization else (backbone.image_mean, backbone.image_std)
    dataset = build_dataset(args, mean, std)
    model = CoSettleModel.from_backbone(
        backbone,
        projection=args.projection,
        image_size=args.image_size,
        image_mean=list(mean),
        image_std=list(std),
        cycle_temperature=args.temperature,
        pool_size=args.pool_size,
        pea_alpha=None if args.no_pea else args.pea_alpha,
        pea_mode=args.pea_mode,
        pea_per_sample=args.pea_per_sample,
        separability=args.separability,
        kl_direction=args.kl_direction,
        separability_weight=args.separability_weight,
        frame_gap=args.frame_gap,
    )

    sampler = None if args.streaming else EpochShuffleSampler(len(dataset), args.seed)
    loader = DataLoader(
        dataset, batch_size=args.per_device_train_batch_size, sampler=sampler, drop_last=True,
        num_workers=args.num_workers, collate_fn=collate_pairs, persistent_workers=args.num_workers > 0,
    )
    global_batch = args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    learning_rate = args.learning_rate or args.base_learning_rate * global_batch / 256
    optimizer = torch.optim.AdamW(parameter_groups(model, args.weight_decay), lr=learning_rate, betas=(0.9, 0.95))

    if args.streaming:
        steps_per_epoch, max_steps = args.max_train_steps, args.max_train_steps
    else:
        batches = len(dataset) // (args.per_device_train_batch_size * accelerator.num_processes)
        if batches == 0:
            raise SystemExit(
                f"{len(dataset)} clips cannot fill one batch of {args.per_device_train_batch_size} on each of "
                f"{accelerator.num_processes} processes: lower --per-device-train-batch-size"
            )
        # Accelerate also steps at the end of the loader, so a last, shorter group is one more step.
        steps_per_epoch = math.ceil(batches / args.gradient_accumulation_steps)
        max_steps = args.max_train_steps or args.num_train_epochs * steps_per_epoch
    num_epochs = math.ceil(max_steps / steps_per_epoch)
    if args.num_warmup_steps is not None:
        warmup = args.num_warmup_steps
    elif args.max_train_steps:  # keep the recipe's share of warm-up (1 of 5 epochs) over the steps asked for
        warmup = round(max_steps * args.warmup_epochs / args.num_train_epochs)
    else:
        warmup = int(args.warmup_epochs * steps_per_epoch)
    warmup = min(max(warmup, 1), max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(warmup, max_steps))

    # The scheduler is stepped by hand once per optimizer step (not prepared: Accelerate would step
    # it once per process); checkpoints hold it as JSON (see checkpointing.py).
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    print(f"co-settle: process {accelerator.process_index} of {accelerator.num_processes} on {accelerator.device}", flush=True)
    settings = run_settings(args, accelerator, backbone, dataset, learning_rate=learning_rate, warmup_steps=warmup, max_steps=max_steps)

    lock = RunLock(output_dir)
    on_main(accelerator, lock.acquire)
    try:
        on_main(accelerator, lambda: clean_leftovers(output_dir))
        if not args.resume_from_checkpoint:
            on_main(accelerator, lambda: prepare_fresh_folder(output_dir, args.overwrite_output_dir))
        if args.with_tracking:
            accelerator.init_trackers("co_settle", config={k: v for k, v in settings.items() if isinstance(v, (int, float, str, bool))})
        step, counts, changes = 0, (0, 0), []
        if args.resume_from_checkpoint:
            checkpoint, record = choose_checkpoint(output_dir, args.resume_from_checkpoint, settings)
            applied = differences(record["settings"], settings, APPLIED)
            if applied:
                accelerator.print(f"Resuming with changed settings, applied from step {record['step']}: {describe(applied)}")
            changes = [*record.get("changes", []), *([{"step": record["step"], **applied}] if applied else [])]
            accelerator.print(f"Resuming from {checkpoint} (step {record['step']})")
            load_checkpoint(accelerator, model, optimizer, scheduler, checkpoint)
            step, counts = record["step"], (record.get("bad_samples", 0), record.get("samples_seen", 0))
        log_path = output_dir / "train_log.jsonl"
        if accelerator.is_main_process:
            output_dir.mkdir(parents=True, exist_ok=True)
            # The log holds this run only: steps up to the checkpoint resumed from, then the new ones.
            kept = [line for line in log_path.read_text().splitlines() if logged_step(line) <= step] if step and log_path.exists() else []
            log_path.write_text("".join(line + "\n" for line in kept))
        progress = tqdm(total=max_steps, initial=step, disable=not accelerator.is_local_main_process, desc="co-settle", unit="step")
        bad_total, seen_total = counts
        started, samples_done = time.perf_counter(), 0
        last_good_checkpoint: Path | None = None

        for epoch in range(step // steps_per_epoch, num_epochs):
            # Accelerate's loader re-applies its own epoch counter to the sampler and dataset at each
            # pass; set it (it forwards to both) so a resumed run draws exactly the same pairs.
            loader.set_epoch(epoch)
            skip = (step - epoch * steps_per_epoch) * args.gradient_accumulation_steps
            batches = accelerator.skip_first_batches(loader, skip) if skip and not args.streaming else loader
            epoch_bad = epoch_seen = batch_count = 0
            window = torch.zeros(len(METRICS) + 1, device=accelerator.device)  # metric sums of one optimizer step
            for frames, num_bad in batches:
                batch_count += 1
                weight = 1.0
                if frames is None:
                    # Every sample of this batch was unreadable (each is counted). Still take part in the
                    # step, with zero weight, so processes stay in lockstep and steps stay aligned to batches.
                    frames = torch.zeros(1, 2, 3, args.image_size, args.image_size, device=accelerator.device)
                    weight = 0.0
                with accelerator.accumulate(model):
                    out = training_forward(model, frames, torch.Generator().manual_seed(args.seed * 1_000_003 + step))
                    values = torch.stack([getattr(out, name).detach().float() for name in METRICS])
                    local = torch.cat([values * weight if weight else torch.zeros_like(values),
                                       values.new_tensor([weight, num_bad, args.per_device_train_batch_size])])
                    totals = accelerator.reduce(local, "sum")  # one collective for metrics and bad-data counts
                    if not torch.isfinite(totals).all():
                        where = f"; the last good checkpoint ({last_good_checkpoint}) is kept" if last_good_checkpoint else ""
                        loss = float(totals[0] / totals[len(METRICS)].clamp(min=1.0))
                        raise FloatingPointError(f"Loss became {loss} at step {step}: training stopped, nothing saved{where}.")
                    accelerator.backward(out.loss * weight)
                    optimizer.step()
                    optimizer.zero_grad()
                window += totals[: len(METRICS) + 1]
                epoch_bad, epoch_seen = epoch_bad + int(totals[-2]), epoch_seen + int(totals[-1])
                # Stop early on a broken source, not on noise; at once when nothing could be read yet.
                if epoch_seen >= MIN_SAMPLES_FOR_BAD_CHECK or (epoch_bad == epoch_seen >= ALL_BAD_STOP):
                    check_bad_fraction(epoch_bad, epoch_seen)
                samples_done += len(frames) * accelerator.num_processes
                if not accelerator.sync_gradients:
                    continue
                mean_values = window[:-1] / window[-1].clamp(min=1.0)  # over the micro-batches that had data
                window.zero_()
                scheduler.step()
                step += 1
                progress.update(1)
                rate = samples_done / (time.perf_counter() - started)
                progress.set_postfix(loss=f"{float(mean_values[0]):.4f}", cyc_acc=f"{float(mean_values[3]):.3f}", pairs_s=f"{rate:.1f}")
                if step % args.logging_steps == 0 or step == max_steps:
                    record = {"step": step, "epoch": epoch, "lr": scheduler.get_last_lr()[0], "pairs_per_s": rate}
                    record.update({name: float(v) for name, v in zip(METRICS, mean_values)})
                    accelerator.log({f"train/{k}": v for k, v in record.items() if k != "step"}, step=step)
                    if accelerator.is_main_process:
                        with log_path.open("a") as handle:
                            handle.write(json.dumps(record) + "\n")
                if args.checkpointing_steps not in (None, "epoch") and step % int(args.checkpointing_steps) == 0:
                    last_good_checkpoint = save_checkpoint(accelerator, model, optimizer, scheduler, output_dir, step, {
                        "settings": settings, "changes": changes, "bad_samples": bad_total + epoch_bad,
                        "samples_seen": seen_total + epoch_seen})
                if step >= max_steps:
                    break
            bad_total, seen_total = bad_total + epoch_bad, seen_total + epoch_seen
            if not skip and not args.streaming and batch_count == len(loader):  # a complete epoch, whatever its size
                check_bad_fraction(epoch_bad, epoch_seen)
            if args.checkpointing_steps == "epoch":
                last_good_checkpoint = save_checkpoint(accelerator, model, optimizer, scheduler, output_dir, step, {
                    "settings": settings, "changes": changes, "bad_samples": bad_total, "samples_seen": seen_total})
            if step >= max_steps:
                break
        progress.close()
        if seen_total:  # the 5 % rule over the whole run, however short
            check_bad_fraction(bad_total, seen_total)

        elapsed = time.perf_counter() - started
        summary = {
            "backbone": args.backbone, "backbone_revision": backbone.revision,
            "data": args.dataset_name or args.train_dir or args.train_list, "clips": len(dataset) if sampler else "streamed",
            "steps": step, "epochs": num_epochs, "global_batch_size": global_batch, "learning_rate": learning_rate,
            "warmup_steps": warmup, "weight_decay": args.weight_decay, "betas": "(0.9, 0.95)",
            "mixed_precision": accelerator.mixed_precision, "processes": accelerator.num_processes, "seed": args.seed,
            "bad_samples_skipped": bad_total, "samples_seen": seen_total,
            **({"changed_on_resume": changes} if changes else {}),
            "train_seconds": round(elapsed, 1), "pairs_per_second": round(samples_done / max(elapsed, 1e-9), 2),
        }
        accelerator.print(f"Finished {step} steps in {elapsed:.0f} s; {bad_total} bad sample(s) of {seen_total} skipped.")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            adapter = accelerator.unwrap_model(model)

            def write(folder: Path) -> None:
                adapter.save_pretrained(folder, model_card={"training": summary},
                                             push_backbone=args.hub_push_backbone or None)
                (folder / "training_summary.json").write_text(json.dumps(summary, indent=2))

            save_adapter_atomically(output_dir, write)
            if args.push_to_hub:
                commit = adapter.push_to_hub(args.hub_model_id, private=args.hub_private or None, token=args.hub_token,
                                             commit_message=f"Co-Settle adapter after {step} steps", model_card={"training": summary},
                                             push_backbone=args.hub_push_backbone or None)
                accelerator.print(f"Pushed to {args.hub_model_id} ({commit.oid})")
        accelerator.end_training()
    finally:
        if accelerator.is_main_process:
            lock.release()
    return output_dir


def cli_main(argv: list[str]) -> None:
    main(argv)
