"""Training checkpoints that hold only tensors (safetensors) and JSON: resuming runs no code.

Accelerate's `save_state` pickles the registered scheduler (`custom_checkpoint_0.pkl`) and loads
it with a full unpickle, so a replaced file in a checkpoint folder runs its payload on resume.
Here a checkpoint is three files, none of them a pickle:

    model.safetensors       the projection (the only trained weights)
    optimizer.safetensors   AdamW's per-parameter tensors (exp_avg, exp_avg_sq, step)
    co_settle_run.json      the step, the run's recorded settings, the optimizer's param groups,
                            the scheduler's and the grad scaler's state, the bad-data counts

The trainer's randomness is keyed on (seed, epoch, sample) and (seed, step), so no RNG state is
needed to replay a run exactly. A checkpoint is staged beside `step_N` (`co_settle_hf.staging`) and renamed when
complete, so an interrupted save never looks like a checkpoint.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError
from ..staging import staged_file, staged_folder
from .settings import REPLAYED, describe, differences

MODEL_FILE, OPTIMIZER_FILE, RUN_STATE = "model.safetensors", "optimizer.safetensors", "co_settle_run.json"
CHECKPOINT = re.compile(r"^step_(\d+)$")


def write_json(path: Path, data: Any) -> None:
    """Write JSON staged beside `path` and renamed into place: never a half-written file."""
    with staged_file(path) as partial:
        partial.write_text(json.dumps(data, indent=2), encoding="utf-8")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} is not a readable JSON file ({error})") from None


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file ({error})") from None


def optimizer_to_files(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into flat tensors and JSON (param groups, scalar entries)."""
    tensors, scalars = {}, {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *meta["scalars"].items()]:
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    groups = [{**group, "betas": tuple(group["betas"])} if "betas" in group else group for group in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def scheduler_state(scheduler: Any) -> dict[str, Any]:
    """The scheduler's state without its lr functions (they are rebuilt from the run's settings)."""
    return {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}


def save_checkpoint(accelerator: Any, model: Any, optimizer: Any, scheduler: Any, output_dir: Path, step: int,
                    record: dict[str, Any]) -> Path:
    """checkpoints/step_N, written by the main process (every process holds the same state)."""
    final = output_dir / "checkpoints" / f"step_{step}"
    if accelerator.is_main_process:
        with staged_folder(final) as partial:
            _write_checkpoint(partial, accelerator, model, optimizer, scheduler, step, record)
    accelerator.wait_for_everyone()
    return final


def _write_checkpoint(partial: Path, accelerator: Any, model: Any, optimizer: Any, scheduler: Any, step: int,
                      record: dict[str, Any]) -> None:
    save_file(accelerator.unwrap_model(model).state_dict(), partial / MODEL_FILE)
    tensors, meta = optimizer_to_files(optimizer.state_dict())
    save_file(tensors, partial / OPTIMIZER_FILE)
    scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
    write_json(partial / RUN_STATE, {**record, "step": step, "optimizer": meta,
                                     "scheduler": scheduler_state(scheduler), "grad_scaler": scaler})


def load_checkpoint(accelerator: Any, model: Any, optimizer: Any, scheduler: Any, checkpoint: Path) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and scaler from `checkpoint`; return its run record.

    Only safetensors and JSON are read. The current run's learning rate and weight decay are
    kept (the trainer has already compared them with the checkpoint's and reported changes).
    """
    record = read_json(checkpoint / RUN_STATE)
    weights, moments = read_tensors(checkpoint / MODEL_FILE), read_tensors(checkpoint / OPTIMIZER_FILE)
    try:
        accelerator.unwrap_model(model).load_state_dict(weights)
        current = [{k: g[k] for k in ("lr", "initial_lr", "weight_decay") if k in g} for g in optimizer.param_groups]
        optimizer.load_state_dict(optimizer_from_files(moments, record["optimizer"]))
        for group, kept in zip(optimizer.param_groups, current):
            group.update(kept)
        scheduler.load_state_dict({**record["scheduler"], "base_lrs": list(scheduler.base_lrs),
                                   "lr_lambdas": [None] * len(scheduler.lr_lambdas)})
        if accelerator.scaler is not None and record.get("grad_scaler"):
            accelerator.scaler.load_state_dict(record["grad_scaler"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{checkpoint}: the checkpoint does not fit this run ({error})") from None
    for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)  # this run's schedule from this step on
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    return record


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (no `.partial`) of `output_dir`, newest first."""
    folder = output_dir / "checkpoints"
    found = [(int(m.group(1)), p) for p in folder.glob("step_*") if (m := CHECKPOINT.match(p.name)) and p.is_dir()]
    return sorted(found, reverse=True)


def rotate_checkpoints(output_dir: Path, keep: int | None) -> None:
    """Keep the newest `keep` checkpoints (`--save_total_limit`); the newest always stays, so `latest` resolves."""
    if keep:
        for _, path in list_checkpoints(output_dir)[keep:]:
            shutil.rmtree(path)


def choose_checkpoint(output_dir: Path, resume: str, settings: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """The checkpoint to resume from; `latest` is the newest one written with this run's replayed settings."""
    if resume == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            raise CheckpointError(f"--resume_from_checkpoint latest: no checkpoint in {output_dir / 'checkpoints'}")
        records = [(path, read_json(path / RUN_STATE)) for _, path in found]
        matching = [(path, record) for path, record in records if not differences(record.get("settings", {}), settings, REPLAYED)]
        path, record = (matching or records)[0]
    else:
        path = Path(resume)
        if not (path / RUN_STATE).is_file():
            raise CheckpointError(f"--resume_from_checkpoint: {path} is not a co-settle checkpoint folder (no {RUN_STATE})")
        record = read_json(path / RUN_STATE)
    changed = differences(record.get("settings", {}), settings, REPLAYED)
    if changed:
        raise CheckpointError(f"--resume_from_checkpoint {resume}: {path} was written by a run with other settings, "
                              f"which a resume cannot change (saved -> now): {describe(changed)}")
    return path, record
