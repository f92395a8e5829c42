"""The demo sized to the machine: the backbone's measured speed decides the cache, the steps and the seeds.

On a CPU the frozen backbone is nearly all of the demo's cost, and CPUs differ several-fold (a
2-core AVX2 machine at 45 GFLOP/s runs DINOv2-S about 3x slower than one at 140). So the demo
times a few backbone passes and one cached training step first, estimates what evaluation will
cost, and spends what is left of ``--time-budget`` on training: the cache of augmented pairs
(three backbone views each) first, up to ``MAX_CACHE_PAIRS``, then a second seed if it fits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..backbones.encoder import BACKBONE_PRECISIONS, BackboneEncoder
from ..machine import cpu_has_bf16_matmuls
from ..modeling_co_settle import CoSettleModel
from ..training.feature_cache import cached_objective

#: Cache sizes the demo chooses between (pairs); fewer than the minimum would not show a learned gain.
MIN_CACHE_PAIRS, MAX_CACHE_PAIRS = 64, 256
#: Fixed costs: a trainer start (backbone load, Accelerate) and each evaluation command's loading and pictures.
TRAINER_START_S, EVAL_COMMAND_S = 8.0, 6.0
#: The demo's evaluation commands (propagation, trade-off, retrieval, tracking), each paying EVAL_COMMAND_S.
EVAL_COMMANDS = 4
#: Safety margins: estimates are multiplied by this, and this share of the budget is kept back.
ESTIMATE_MARGIN, RESERVE_SHARE = 1.25, 0.05


def choose_precision(requested: str) -> str:
    """The training backbone's precision. ``auto``: bf16 where the device multiplies bf16 natively
    (AVX512-BF16 / AMX CPUs, CUDA), else fp32. Evaluation stays fp32 (see the README's Performance)."""
    if requested != "auto":
        return requested
    return "bf16" if torch.cuda.is_available() or cpu_has_bf16_matmuls() else "fp32"


@dataclass
class Speed:
    """Seconds per backbone image: training (its size and precision), evaluation (fp32) at the benchmark's
    size and at the training size; and per cached step."""

    train_image_s: float
    eval_image_s: float
    eval_small_image_s: float
    step_s: float


def _seconds_per_image(backbone: BackboneEncoder, height: int, width: int, batch: int) -> float:
    pixels = torch.randn(batch, 3, height, width)
    backbone.patch_tokens(pixels)  # warm-up: first calls pay for allocation and kernel choice
    times = []
    for _ in range(2):
        tic = time.perf_counter()
        backbone.patch_tokens(pixels)
        times.append(time.perf_counter() - tic)
    return min(times) / batch


def measure_speed(backbone_path: str, precision: str, image_size: int, eval_size: tuple[int, int], batch: int) -> Speed:
    """A few seconds of measurement: backbone passes at both sizes (evaluation runs in fp32), and three cached steps."""
    backbone = BackboneEncoder.from_pretrained(backbone_path)
    evaluation = (_seconds_per_image(backbone, *eval_size, batch=4), _seconds_per_image(backbone, image_size, image_size, batch))
    backbone.autocast_dtype = BACKBONE_PRECISIONS[precision]
    model = CoSettleModel.from_backbone(backbone)
    grid = backbone.grid_size(image_size, image_size)
    views = torch.randn(batch, 3, *grid, backbone.hidden_size)
    optimizer = torch.optim.AdamW(model.projection.parameters(), lr=1e-4)
    times = []
    for _ in range(3):
        tic = time.perf_counter()
        cached_objective(model, views).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - tic)
    train = evaluation[1] if backbone.autocast_dtype is None else _seconds_per_image(backbone, image_size, image_size, batch)
    return Speed(train, *evaluation, min(times[1:]))


@dataclass
class Plan:
    """What the demo will run, and the estimates (seconds) it chose by."""

    precision: str
    cache_pairs: int
    steps: int
    seeds: int
    estimates: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def describe(self, speed: Speed) -> str:
        estimate = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in self.estimates.items())
        return (f"backbone at {1 / speed.train_image_s:.1f} images/s for training ({self.precision}), "
                f"{1 / speed.eval_image_s:.1f} at the evaluation size (fp32), "
                f"{1000 * speed.step_s:.0f} ms per cached step: a cache of {self.cache_pairs} pairs, "
                f"{self.steps} steps, {self.seeds} seed(s); estimated {estimate}" + "".join(f". {n}" for n in self.notes))


def plan_run(budget_s: float, elapsed_s: float, speed: Speed, eval_images: tuple[int, int], steps: int,
             precision: str, cache_pairs: int | None = None, seeds: int | None = None) -> Plan:
    """The largest cache (then a second seed) that fits the budget once evaluation is paid for.

    ``eval_images`` = (images at the evaluation size, images at the training size) that the
    evaluations pass through the backbone; ``cache_pairs``/``seeds`` fix what the user fixed.
    """
    evaluation = ESTIMATE_MARGIN * (eval_images[0] * speed.eval_image_s + eval_images[1] * speed.eval_small_image_s) + EVAL_COMMANDS * EVAL_COMMAND_S
    left = budget_s * (1 - RESERVE_SHARE) - elapsed_s - evaluation
    per_pair = ESTIMATE_MARGIN * 3 * speed.train_image_s
    one_run = lambda pairs: TRAINER_START_S + pairs * per_pair + ESTIMATE_MARGIN * steps * speed.step_s  # noqa: E731
    notes = []
    if cache_pairs is None:
        affordable = int((left - one_run(0)) / per_pair)
        cache_pairs = max(MIN_CACHE_PAIRS, min(MAX_CACHE_PAIRS, affordable))
        if affordable < MIN_CACHE_PAIRS:
            notes.append(f"The budget affords only {max(affordable, 0)} pairs: the run takes the minimum of {MIN_CACHE_PAIRS} "
                         "and will exceed --time-budget")
    if seeds is None:
        seeds = 2 if left >= 2 * one_run(cache_pairs) + EVAL_COMMAND_S else 1
    training = seeds * one_run(cache_pairs)
    return Plan(precision, cache_pairs, steps, seeds, {"training": training, "evaluation": evaluation,
                                                      "total": elapsed_s + training + evaluation}, notes)
