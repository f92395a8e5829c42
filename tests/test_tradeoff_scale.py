"""The trade-off analysis at Kinetics scale: D_inter blockwise, equal to the naive formula, in bounded memory."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from co_settle_hf.evaluation import tradeoff as T

REPO = Path(__file__).resolve().parents[1]


def naive_d_inter(sampled: torch.Tensor) -> tuple[float, float]:
    """The formula as first written: the (N, N, K, D) difference tensor, in float64."""
    s = sampled.to(torch.float64)
    n = s.shape[0]
    pair = (s[:, None] - s[None]).norm(dim=-1).mean(dim=-1)
    i, j = torch.triu_indices(n, n, offset=1)
    flat = s.reshape(-1, s.shape[-1])
    radius = (flat - flat.mean(dim=0, keepdim=True)).norm(dim=-1).max()
    return float(pair[i, j].mean()), float(pair[i, j].mean() / (2 * radius + 1e-8))


@pytest.mark.parametrize("block_rows", [T.INTER_BLOCK_ROWS, 7, 50])
def test_blockwise_d_inter_equals_the_naive_formula_on_50_videos(block_rows):
    sampled = torch.randn(50, 8, 768, generator=torch.Generator().manual_seed(1))
    raw, normalised = naive_d_inter(sampled)
    assert T.mean_pair_distance(sampled, block_rows) == pytest.approx(raw, rel=1e-6)
    assert T.inter_video_distances(sampled)["d_inter"] == pytest.approx(normalised, rel=1e-6)
    exact = sampled.double()  # float64 features are compared in float64: equal to rounding
    assert T.mean_pair_distance(exact, block_rows) == pytest.approx(naive_d_inter(exact)[0], rel=1e-12)


MEASURE = """
import json, sys, time, torch
from co_settle_hf.evaluation.tradeoff import inter_video_distances
def rss_mb():
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS')) / 1024
torch.randn(64, 64) @ torch.randn(64, 64)  # thread pools and kernels loaded before the baseline
base = rss_mb()
sampled = torch.randn(20000, 8, 768, generator=torch.Generator().manual_seed(0))
start = time.perf_counter()
result = inter_video_distances(sampled)
seconds = time.perf_counter() - start
peak = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) / 1024  # this image's peak
print(json.dumps({**result, "seconds": seconds, "peak_mb": peak - base}))
"""


def test_d_inter_of_20000_videos_stays_under_1_gb():
    """20,000 videos, K = 8 patches, D = 768: the naive tensor would be 20000^2 x 8 x 768 floats (9.8 PB)."""
    # The default C allocator, as a user has it: the computation reuses its buffers, so the heap stays flat.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"D_inter of 20,000 videos: {measured['seconds']:.0f} s, peak {measured['peak_mb']:.0f} MB above the "
          "interpreter (the 469 MB of sampled patches included)")
    assert measured["peak_mb"] < 1024
    # Independent Gaussian patches: E|x - y| = sqrt(2 D) to within 1/(8 sqrt(2 D)) or so.
    assert measured["d_inter_raw"] == pytest.approx(math.sqrt(2 * 768), abs=0.05)
