"""Self-supervised Co-Settle training with Accelerate: one loop from a laptop CPU to many GPUs.

    accelerate launch -m co_settle_hf.train --model_name_or_path facebook/dinov2-small \
        --train_dir kinetics400/train --output_dir dinov2-small-co-settle

or from Python: `train(CoSettleTrainingArguments(...), train_dataset=a_datasets_Dataset)`.
The loop reads top to bottom: build the run, start (or resume) it, then epochs of steps with
logging, validation and checkpoints, then finish. Only the projection is trained, prepared and
checkpointed; the backbone is frozen, kept in eval mode and never saved. Randomness is keyed on
(seed, epoch, sample) and (seed, step), so a resumed run ends with the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm
from transformers import get_scheduler

from ..backbones.encoder import BACKBONE_PRECISIONS, BackboneEncoder
from ..data import IMAGENET_MEAN, IMAGENET_STD, FramePairDataset, PairTransform, check_bad_fraction, collate_pairs
from ..errors import CoSettleError, DataSourceError, SettingsError
from ..modeling_co_settle import CONFIG_NAME, CoSettleModel
from ..staging import staged_entries
from .arguments import METHOD_FIELDS, CoSettleTrainingArguments, from_namespace, parse_args
from .checkpointing import choose_checkpoint, load_checkpoint, rotate_checkpoints, save_checkpoint
from .data import EpochShuffleSampler, training_pairs, validation_pairs
from .feature_cache import PairViewCache, cached_objective
from .forward import training_forward
from .metrics import StepMetrics
from .run_folder import RunLock, TrainLog, clean_leftovers, prepare_fresh_folder
from .settings import APPLIED, VIEWS, describe, differences, public

logger = logging.getLogger(__name__)
MIN_SAMPLES_FOR_BAD_CHECK = 200  # stop early on a broken source, not on noise
ALL_BAD_STOP = 8  # this many samples, all unreadable, from the start of an epoch: stop at once
BETAS = (0.9, 0.95)


class TrainOutput(NamedTuple):
    """What `train` returns: the trained adapter (backbone attached) and the run's final metrics."""

    model: CoSettleModel
    metrics: dict[str, Any]


@dataclass
class Schedule:
    """How long the run is, in optimizer steps, and its learning rate."""

    steps_per_epoch: int
    max_steps: int
    warmup_steps: int
    learning_rate: float
    global_batch: int

    @property
    def num_epochs(self) -> int:
        return math.ceil(self.max_steps / self.steps_per_epoch)


@dataclass
class Run:
    """Everything built before the first step."""

    args: CoSettleTrainingArguments
    accelerator: Accelerator
    model: Any
    optimizer: Any
    scheduler: Any
    loader: Any
    train_pairs: Any
    validation: FramePairDataset | None
    schedule: Schedule
    settings: dict[str, Any]
    output_dir: Path
    feature_cache: PairViewCache | None = None


@dataclass
class RunState:
    """What changes as the run goes; checkpoints hold the part a resume needs."""

    step: int = 0
    bad_samples: int = 0
    samples_seen: int = 0
    changes: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    last_eval: dict[str, float] = field(default_factory=dict)
    last_checkpoint: Path | None = None
    pairs_done: int = 0
    started: float = field(default_factory=time.perf_counter)

    def record(self) -> dict[str, Any]:
        return {"changes": self.changes, "best": self.best, "bad_samples": self.bad_samples, "samples_seen": self.samples_seen}


# ---------------------------------------------------------------------------------------- build the run
def load_backbone(args: CoSettleTrainingArguments) -> BackboneEncoder:
    try:
        backbone = BackboneEncoder.from_pretrained(args.model_name_or_path, revision=args.model_revision)
    except (OSError, ValueError) as error:
        raise SettingsError(f"--model_name_or_path {args.model_name_or_path}: {error}") from None
    if not backbone.supports_pea and not args.no_pea:
        raise SettingsError(f"--model_name_or_path {args.model_name_or_path}: {backbone.family.name} has only a relative "
                            "position bias, so PEA has nothing to augment: pass --no_pea")
    backbone.autocast_dtype = BACKBONE_PRECISIONS[args.backbone_precision]
    return backbone


def make_accelerator(args: CoSettleTrainingArguments) -> Accelerator:
    accelerator = Accelerator(cpu=args.cpu, mixed_precision=args.mixed_precision, project_dir=args.output_dir,
                              gradient_accumulation_steps=args.gradient_accumulation_steps,
                              log_with=args.report_to if args.with_tracking else None)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        level=logging.INFO if accelerator.is_main_process else logging.ERROR)
    if args.with_tracking and not accelerator.log_with:  # Accelerate drops a tracker whose package is missing
        raise SettingsError(f"--report_to {args.report_to}: no such tracker is installed (e.g. pip install tensorboard)")
    return accelerator


def plan_schedule(args: CoSettleTrainingArguments, pairs: Any, accelerator: Accelerator) -> Schedule:
    """Steps per epoch (counted in clips), run length, warm-up and the learning rate of the scaling rule."""
    per_step = args.per_device_train_batch_size * accelerator.num_processes
    global_batch = per_step * args.gradient_accumulation_steps
    learning_rate = args.learning_rate or args.base_learning_rate * global_batch / 256
    if not hasattr(pairs, "__len__"):  # a stream: only --max_train_steps says how long
        if accelerator.num_processes > 1:
            raise SettingsError("streaming runs on one process for now: use a map-style dataset (or a local copy) with several")
        if not args.max_train_steps:
            raise SettingsError("a streamed dataset has no length: pass --max_train_steps")
        return Schedule(args.max_train_steps, args.max_train_steps, _warmup(args, args.max_train_steps, args.max_train_steps), learning_rate, global_batch)
    clips = min(len(pairs), args.max_train_samples or len(pairs))
    if clips // per_step == 0:
        raise SettingsError(
            f"{clips} clips cannot fill one batch of {args.per_device_train_batch_size} on each of {accelerator.num_processes} "
            f"process(es). Cut long videos into more clips with a smaller --clip_seconds (now {args.clip_length:g}; "
            "--split_at_cuts also cuts at shot changes), draw several pairs per clip with --clip_repeats, "
            "or lower --per_device_train_batch_size"
        )
    # Accelerate also steps at the end of the loader, so a last, shorter group is one more step.
    steps_per_epoch = math.ceil(clips // per_step / args.gradient_accumulation_steps)
    max_steps = args.max_train_steps or args.num_train_epochs * steps_per_epoch
    return Schedule(steps_per_epoch, max_steps, _warmup(args, steps_per_epoch, max_steps), learning_rate, global_batch)


def _warmup(args: CoSettleTrainingArguments, steps_per_epoch: int, max_steps: int) -> int:
    if args.num_warmup_steps is not None:
        return min(args.num_warmup_steps, max_steps)
    if args.max_train_steps:  # keep the recipe's share of warm-up (1 of 5 epochs) over the steps asked for
        return min(round(max_steps * args.warmup_epochs / args.num_train_epochs), max_steps)
    return min(int(args.warmup_epochs * steps_per_epoch), max_steps)


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices only: none on biases and norm parameters."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_run(args: CoSettleTrainingArguments, train_dataset: Any = None) -> Run:
    """Everything that can fail on bad arguments fails here, before any training work."""
    accelerator = make_accelerator(args)
    set_seed(args.seed)
    backbone = load_backbone(args)
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if args.imagenet_normalization else (backbone.image_mean, backbone.image_std)
    pairs, label = training_pairs(
        args, PairTransform(size=args.image_size, mean=mean, std=std, resize=args.resize, crop_rule=args.crop_rule), train_dataset)
    validation = validation_pairs(args, mean, std)
    model = CoSettleModel.from_backbone(backbone, image_mean=list(mean), image_std=list(std), objective=args.objective,
                                        **{name: getattr(args, name) for name in METHOD_FIELDS})
    sampler = EpochShuffleSampler(len(pairs), args.seed, args.max_train_samples) if hasattr(pairs, "__len__") else None
    loader = DataLoader(pairs, batch_size=args.per_device_train_batch_size, sampler=sampler, drop_last=True,
                        num_workers=args.num_workers, collate_fn=collate_pairs, persistent_workers=args.num_workers > 0)
    schedule = plan_schedule(args, pairs, accelerator)
    optimizer = torch.optim.AdamW(parameter_groups(model, args.weight_decay), lr=schedule.learning_rate, betas=BETAS)
    # Stepped by hand once per optimizer step (prepared, Accelerate would step it once per process).
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=schedule.warmup_steps,
                              num_training_steps=schedule.max_steps)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    print(f"co-settle: process {accelerator.process_index} of {accelerator.num_processes} on {accelerator.device}", flush=True)
    settings = {
        **public(args.to_dict()), "data": label, "clips": len(pairs) if sampler else "streamed", "clip_seconds": args.clip_length,
        "processes": accelerator.num_processes, "backbone_revision": backbone.revision, "hidden_size": backbone.hidden_size,
        "mixed_precision": accelerator.mixed_precision, "learning_rate": schedule.learning_rate,
        "warmup_steps": schedule.warmup_steps, "max_steps": schedule.max_steps, "global_batch_size": schedule.global_batch,
    }
    return Run(args, accelerator, model, optimizer, scheduler, loader, pairs, validation, schedule, settings, Path(args.output_dir))


# ---------------------------------------------------------------------------------------- start or resume
def on_main(accelerator: Accelerator, action: Any) -> None:
    """Run `action` on the main process; a refusal there stops every process with the same error."""
    error = None
    if accelerator.is_main_process:
        try:
            action()
        except CoSettleError as refusal:
            error = refusal
    if accelerator.num_processes > 1:
        box = [error]
        broadcast_object_list(box)
        error = box[0]
    if error:
        raise error


def start(run: Run) -> tuple[RunState, TrainLog]:
    """A fresh run in a clean folder, or the state of the checkpoint resumed from (changes applied and reported)."""
    args, accelerator, state = run.args, run.accelerator, RunState()
    on_main(accelerator, lambda: clean_leftovers(run.output_dir))
    if not args.resume_from_checkpoint:
        on_main(accelerator, lambda: prepare_fresh_folder(run.output_dir, args.overwrite_output_dir))
    if args.with_tracking:
        accelerator.init_trackers("co_settle", config={k: v for k, v in run.settings.items() if isinstance(v, (int, float, str, bool))})
    if args.resume_from_checkpoint:
        checkpoint, record = choose_checkpoint(run.output_dir, args.resume_from_checkpoint, run.settings)
        applied = differences(record["settings"], run.settings, APPLIED)
        if applied:
            accelerator.print(f"Resuming with changed settings, applied from step {record['step']}: {describe(applied)}")
        accelerator.print(f"Resuming from {checkpoint} (step {record['step']})")
        load_checkpoint(accelerator, run.model, run.optimizer, run.scheduler, checkpoint)
        state = RunState(record["step"], record.get("bad_samples", 0), record.get("samples_seen", 0),
                         [*record.get("changes", []), *([{"step": record["step"], **applied}] if applied else [])],
                         record.get("best", {}))
    return state, TrainLog(run.output_dir, state.step, accelerator.is_main_process)


# ---------------------------------------------------------------------------------------- one epoch, one step
def train_epoch(run: Run, state: RunState, log: TrainLog, epoch: int, progress: tqdm) -> None:
    """The batches of `epoch` not yet trained on (a resumed epoch skips those its checkpoint covers)."""
    args, accelerator = run.args, run.accelerator
    # Accelerate's loader re-applies its own epoch counter to the sampler and dataset at each
    # pass; set it (it forwards to both) so a resumed run draws exactly the same pairs.
    run.loader.set_epoch(epoch)
    skip = (state.step - epoch * run.schedule.steps_per_epoch) * args.gradient_accumulation_steps
    streamed = not hasattr(run.train_pairs, "__len__")
    if run.feature_cache is not None:
        steps = run.schedule.steps_per_epoch * args.gradient_accumulation_steps
        batches = ((views, 0) for views in run.feature_cache.epoch_batches(args.per_device_train_batch_size, steps, args.seed, epoch, skip))
    else:
        batches = accelerator.skip_first_batches(run.loader, skip) if skip and not streamed else run.loader
    window, epoch_total, count = StepMetrics(), StepMetrics(), 0
    for frames, num_bad in batches:
        micro = train_micro_batch(run, state, frames, num_bad)
        window, epoch_total, count = window + micro, epoch_total + micro, count + 1
        state.bad_samples, state.samples_seen = state.bad_samples + micro.bad_samples, state.samples_seen + micro.samples
        seen, bad = epoch_total.samples, epoch_total.bad_samples
        if seen >= MIN_SAMPLES_FOR_BAD_CHECK or (bad == seen >= ALL_BAD_STOP):
            check_bad_fraction(bad, seen)
        if accelerator.sync_gradients:
            end_step(run, state, log, window, epoch, progress)
            window = StepMetrics()
            if state.step >= run.schedule.max_steps:
                break
    if not skip and not streamed and count == len(run.loader):  # a complete epoch, whatever its size
        check_bad_fraction(epoch_total.bad_samples, epoch_total.samples)
    if args.checkpointing_steps == "epoch":
        checkpoint(run, state)


def train_micro_batch(run: Run, state: RunState, frames: torch.Tensor | None, num_bad: int) -> StepMetrics:
    """Forward, backward and (at the end of an accumulation group) the optimizer step of one micro-batch."""
    args, accelerator = run.args, run.accelerator
    has_data = frames is not None
    if not has_data:
        # Every sample of this batch was unreadable (each is counted). Still take part in the step,
        # with zero weight, so processes stay in lockstep and steps stay aligned to batches.
        frames = torch.zeros(1, 2, 3, args.image_size, args.image_size, device=accelerator.device)
    with accelerator.accumulate(run.model):
        if run.feature_cache is not None:  # `frames` are cached views: the backbone is not run
            out = cached_objective(run.model, frames)
        else:
            out = training_forward(run.model, frames, torch.Generator().manual_seed(args.seed * 1_000_003 + state.step))
        metrics = StepMetrics.gather(accelerator, out, has_data, num_bad, args.per_device_train_batch_size)
        if not metrics.is_finite():
            where = f"; the last good checkpoint ({state.last_checkpoint}) is kept" if state.last_checkpoint else ""
            loss = metrics.loss / max(metrics.batches, 1.0)
            raise FloatingPointError(f"Loss became {loss} at step {state.step}: training stopped, nothing saved{where}.")
        accelerator.backward(out.loss * float(has_data))
        run.optimizer.step()
        run.optimizer.zero_grad()
    state.pairs_done += len(frames) * accelerator.num_processes
    return metrics


def end_step(run: Run, state: RunState, log: TrainLog, window: StepMetrics, epoch: int, progress: tqdm) -> None:
    """After an optimizer step: the schedule, the progress bar, logs, validation and checkpoints."""
    args = run.args
    run.scheduler.step()
    state.step += 1
    means = window.means()  # over the micro-batches that had data
    rate = state.pairs_done / (time.perf_counter() - state.started)
    progress.update(1)
    progress.set_postfix(loss=f"{means['loss']:.4f}", cyc_acc=f"{means['cycle_accuracy']:.3f}", pairs_s=f"{rate:.1f}")
    last = state.step == run.schedule.max_steps
    if state.step % args.logging_steps == 0 or last:
        record = {"step": state.step, "epoch": epoch, "lr": run.scheduler.get_last_lr()[0], "pairs_per_s": rate, **means}
        run.accelerator.log({f"train/{k}": v for k, v in record.items() if k != "step"}, step=state.step)
        log.write(record)
    if run.validation is not None and (state.step % args.eval_steps == 0 or last):
        validate(run, state, log)
    if args.checkpointing_steps not in (None, "epoch") and state.step % int(args.checkpointing_steps) == 0:
        checkpoint(run, state)


# ---------------------------------------------------------------------------------------- validation and checkpoints
@torch.no_grad()
def evaluate(run: Run) -> dict[str, float]:
    """Cycle loss and accuracy on the held-out pairs: no augmentation, no PEA; each process takes a share."""
    accelerator, validation = run.accelerator, run.validation
    model = accelerator.unwrap_model(run.model)  # not the DDP wrapper: shares may differ in length
    share = Subset(validation, range(accelerator.process_index, len(validation), accelerator.num_processes))
    batch = run.args.per_device_eval_batch_size or run.args.per_device_train_batch_size
    sums = torch.zeros(3, dtype=torch.float64, device=accelerator.device)
    for frames, _ in DataLoader(share, batch_size=batch, collate_fn=collate_pairs):
        if frames is not None:
            out = training_forward(model, frames.to(accelerator.device), use_pea=False)
            sums += torch.tensor([float(out.loss) * len(frames), float(out.cycle_accuracy) * len(frames), len(frames)],
                                 dtype=torch.float64, device=accelerator.device)
    loss, accuracy, pairs = accelerator.reduce(sums, "sum").tolist()
    if pairs == 0:
        raise DataSourceError(f"no validation clip could be read ({len(validation)} tried): check --validation_dir / --validation_split")
    return {"loss": loss / pairs, "cycle_accuracy": accuracy / pairs, "pairs": int(pairs)}


def validate(run: Run, state: RunState, log: TrainLog) -> None:
    """Log the validation metrics; with --save_best keep the adapter of the best cycle accuracy."""
    metrics = evaluate(run)
    state.last_eval = {f"eval_{k}": v for k, v in metrics.items()}
    run.accelerator.log({f"eval/{k}": v for k, v in metrics.items() if k != "pairs"}, step=state.step)
    log.write({"step": state.step, **state.last_eval})
    if run.args.save_best and metrics["cycle_accuracy"] > state.best.get("eval_cycle_accuracy", -1.0):
        state.best = {"step": state.step, "eval_cycle_accuracy": metrics["cycle_accuracy"]}
        if run.accelerator.is_main_process:
            adapter = run.accelerator.unwrap_model(run.model)
            adapter.save_pretrained(run.output_dir / "best", model_card={"training": {**summary(run, state),
                                                                                   "selected_by": "validation cycle accuracy"}})
        run.accelerator.wait_for_everyone()


def checkpoint(run: Run, state: RunState) -> None:
    state.last_checkpoint = save_checkpoint(run.accelerator, run.model, run.optimizer, run.scheduler, run.output_dir,
                                            state.step, {"settings": run.settings, **state.record()})
    if run.accelerator.is_main_process:
        rotate_checkpoints(run.output_dir, run.args.save_total_limit)
    run.accelerator.wait_for_everyone()


# ---------------------------------------------------------------------------------------- finish
def summary(run: Run, state: RunState) -> dict[str, Any]:
    """What the run used and achieved, as the card and training_summary.json record it."""
    settings, elapsed = run.settings, time.perf_counter() - state.started
    names = ("model_name_or_path", "backbone_revision", "data", "clips", "clip_seconds", "processes", "global_batch_size",
             "learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay", "mixed_precision", "seed", "image_size",
             "resize", "crop_rule", "feature_cache_pairs")
    return {
        **{name: settings[name] for name in names}, "steps": state.step, "epochs": run.schedule.num_epochs, "betas": str(BETAS),
        "bad_samples_skipped": state.bad_samples, "samples_seen": state.samples_seen, **state.last_eval,
        **({"best": state.best} if state.best else {}), **({"changed_on_resume": state.changes} if state.changes else {}),
        "train_seconds": round(elapsed, 1), "pairs_per_second": round(state.pairs_done / max(elapsed, 1e-9), 2),
    }


def finish(run: Run, state: RunState, log: TrainLog) -> TrainOutput:
    """The 5 % rule over the whole run, a last validation, then the adapter saved atomically (and pushed)."""
    accelerator, args = run.accelerator, run.args
    if state.samples_seen:
        check_bad_fraction(state.bad_samples, state.samples_seen)
    if run.validation is not None and not state.last_eval:
        validate(run, state, log)
    metrics = summary(run, state)
    accelerator.print(f"Finished {state.step} steps in {metrics['train_seconds']:.0f} s; "
                      f"{state.bad_samples} bad sample(s) of {state.samples_seen} skipped.")
    accelerator.wait_for_everyone()
    adapter = accelerator.unwrap_model(run.model)
    if accelerator.is_main_process:
        with staged_entries(run.output_dir, CONFIG_NAME) as folder:  # the adapter and its summary, whole or not at all
            adapter.save_pretrained(folder, model_card={"training": metrics}, save_backbone=args.hub_push_backbone or None)
            (folder / "training_summary.json").write_text(json.dumps(metrics, indent=2))
        if args.push_to_hub:
            commit = adapter.push_to_hub(args.hub_model_id, private=args.hub_private or None, token=args.hub_token,
                                         commit_message=f"Co-Settle adapter after {state.step} steps", model_card={"training": metrics},
                                         push_backbone=args.hub_push_backbone or None)
            accelerator.print(f"Pushed to {args.hub_model_id} ({commit.oid})")
    accelerator.end_training()
    return TrainOutput(adapter, metrics)


def build_feature_cache(run: Run) -> PairViewCache:
    """The views of the first ``feature_cache_pairs`` pairs, PEA drawn as the uncached steps would;
    read from ``feature_cache_file`` when it holds views made with the same settings."""
    args, accelerator = run.args, run.accelerator
    if accelerator.num_processes > 1:
        raise ValueError("--feature_cache_pairs trains the projection outside the DDP wrapper: use one process")
    settings = {name: run.settings.get(name) for name in VIEWS}
    if args.feature_cache_file and Path(args.feature_cache_file).is_file():
        print(f"co-settle: reading the cached views of {args.feature_cache_pairs} pairs from {args.feature_cache_file}", flush=True)
        return PairViewCache.load(args.feature_cache_file, settings, device=accelerator.device)
    run.loader.set_epoch(0)
    batches = ((frames, torch.Generator().manual_seed(args.seed * 1_000_003 + i))
               for i, (frames, _) in enumerate(run.loader) if frames is not None)
    print(f"co-settle: caching the backbone's views of {args.feature_cache_pairs} pairs", flush=True)
    cache = PairViewCache.build(run.model, batches, args.feature_cache_pairs)
    if args.feature_cache_file:
        cache.save(args.feature_cache_file, settings)
    return cache


def train(args: CoSettleTrainingArguments, train_dataset: Any = None) -> TrainOutput:
    """Train a Co-Settle adapter; `train_dataset` (a `datasets.Dataset` or `IterableDataset` with a
    `args.video_column` of paths, bytes or a `Video` feature) replaces the data source flags."""
    run = build_run(args, train_dataset)
    if args.feature_cache_pairs:
        run.feature_cache = build_feature_cache(run)
    lock = RunLock(run.output_dir)
    on_main(run.accelerator, lock.acquire)
    try:
        state, log = start(run)
        with tqdm(total=run.schedule.max_steps, initial=state.step, desc="co-settle", unit="step",
                  disable=not run.accelerator.is_local_main_process) as progress:
            for epoch in range(state.step // run.schedule.steps_per_epoch, run.schedule.num_epochs):
                if state.step >= run.schedule.max_steps:
                    break
                train_epoch(run, state, log, epoch, progress)
        return finish(run, state, log)
    finally:
        if run.accelerator.is_main_process:
            lock.release()


def main(argv: Sequence[str] | None = None) -> Path:
    """Parse `argv` as `co-settle train` does (bad values are usage errors), train, return the folder."""
    args = parse_args(argv)
    train(args)
    return Path(args.output_dir)


def execute(namespace: argparse.Namespace) -> Path:
    """`co-settle train` (and `accelerate launch -m co_settle_hf.train`) on its parsed command line."""
    args = from_namespace(namespace)
    train(args)
    return Path(args.output_dir)
