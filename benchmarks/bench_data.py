"""Data-loader throughput for Co-Settle training pairs (pairs/s), from video files and frame folders.

Generates small synthetic clips (a sliding random texture), then times a DataLoader over
``FramePairDataset`` with ``PairTransform`` at the training resolution, for each worker count.
The first epoch warms up (worker start, file cache) and is not timed. A per-stage split in one
process (after the loader runs, so files are cached) shows where the time goes: reading the
two frames vs. augmenting them.

    .venv/bin/python benchmarks/bench_data.py [--clips 20 --frames 60 --workers 0 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from video_factory import moving_pattern_frames, write_frame_folder, write_video  # noqa: E402

from co_settle_hf.data import (  # noqa: E402
    FramePairDataset,
    PairTransform,
    collate_pairs,
    discover_clips,
    sample_generator,
    sample_pair_indices,
)


def make_sources(root: Path, args: argparse.Namespace) -> dict[str, Path]:
    """Write the same clips as videos and as JPEG frame folders (Kinetics layout)."""
    for i in range(args.clips):
        frames = moving_pattern_frames(args.frames, args.height, args.width, seed=i)
        write_video(root / "videos" / f"clip_{i:03d}.mp4", frames, fps=args.fps, codec=args.codec, gop_size=args.gop)
        write_frame_folder(root / "frames" / "class" / f"clip_{i:03d}", frames, ext="jpg")
    return {f"video ({args.codec}, gop {args.gop})": root / "videos", "frame folders (jpg)": root / "frames"}


def loader_throughput(dataset: FramePairDataset, workers: int, args: argparse.Namespace) -> float:
    """Pairs per second over ``args.epochs`` timed epochs after one warm-up epoch."""
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0, collate_fn=collate_pairs)
    pairs, elapsed = 0, 0.0
    for epoch in range(args.epochs + 1):
        dataset.set_epoch(epoch)
        start = time.perf_counter()
        count = 0
        for frames, num_bad in loader:
            assert num_bad == 0, "benchmark clips must all be readable"
            count += frames.shape[0]
        if epoch > 0:
            pairs, elapsed = pairs + count, elapsed + time.perf_counter() - start
    return pairs / elapsed


def stage_split(dataset: FramePairDataset, passes: int) -> tuple[float, float]:
    """Mean milliseconds per pair spent reading the two frames and augmenting them (one process)."""
    read_s = transform_s = 0.0
    for epoch in range(passes):
        for index, clip in enumerate(dataset.clips):
            generator = sample_generator(dataset.seed, 1000 + epoch, index)
            start = time.perf_counter()
            frames = clip.read(sample_pair_indices(clip.num_frames, dataset.delta, generator))
            middle = time.perf_counter()
            dataset.transform(frames, generator=generator)
            read_s += middle - start
            transform_s += time.perf_counter() - middle
    count = passes * len(dataset)
    return 1000 * read_s / count, 1000 * transform_s / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--gop", type=int, default=30, help="keyframe interval of the generated videos")
    parser.add_argument("--codec", default="libx264")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up epoch)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()

    torch.set_num_threads(1)  # one core per loader process, as in a multi-worker training job
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s); {args.clips} clips of "
          f"{args.frames} frames {args.width}x{args.height} -> pairs {args.size}x{args.size}, batch {args.batch_size}")
    with tempfile.TemporaryDirectory() as tmp:
        sources = make_sources(Path(tmp), args)
        rows = []
        for label, path in sources.items():
            dataset = FramePairDataset(discover_clips(path), PairTransform(size=args.size), seed=0)
            rates = {workers: loader_throughput(dataset, workers, args) for workers in args.workers}
            read_ms, transform_ms = stage_split(dataset, args.epochs)
            rows.extend((label, workers, rate, read_ms, transform_ms) for workers, rate in rates.items())
    header = f"| {'source':<26} | workers | pairs/s | read ms/pair | augment ms/pair |"
    print(header)
    print("|" + "|".join("-" * (len(cell) + 0) for cell in header.split("|")[1:-1]) + "|")
    for label, workers, rate, read_ms, transform_ms in rows:
        print(f"| {label:<26} | {workers:>7} | {rate:>7.1f} | {read_ms:>12.1f} | {transform_ms:>15.1f} |")


if __name__ == "__main__":
    main()
