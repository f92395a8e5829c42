"""Trade-off metrics against independent loop/numpy transcriptions of SPEC section 5."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from eval_fixtures import tradeoff_videos as _videos  # shared with test_eval_cli
from PIL import Image

from co_settle_hf.evaluation import tradeoff as T


class PooledPixelEncoder:
    """Fake encoder: the mean normalised colour of each patch cell (D = 3), times `scale`."""

    image_mean = (0.5, 0.5, 0.5)
    image_std = (0.25, 0.25, 0.25)

    def __init__(self, patch_size: int = 16, scale: float = 1.0) -> None:
        self.patch_size = patch_size
        self.scale = scale

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.scale * F.avg_pool2d(pixel_values, self.patch_size).permute(0, 2, 3, 1)


def _dist(a, b) -> float:
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))


def _intra_by_hand(video: np.ndarray) -> float:
    """video: (T, P, D) nested lists/array; the SPEC recipe with plain loops."""
    t_len, p_len = video.shape[:2]
    pair_means = []
    for t in range(3, t_len - 4):
        nearest = [min(_dist(video[t, i], video[t + 1, j]) for j in range(p_len)) for i in range(p_len)]
        nearest.sort()
        keep = nearest[: p_len // 2]
        pair_means.append(sum(keep) / len(keep))
    patches = [video[t, i] for t in range(t_len) for i in range(p_len)]
    centre = [sum(p[k] for p in patches) / len(patches) for k in range(video.shape[2])]
    radius = max(_dist(p, centre) for p in patches)
    return (sum(pair_means) / len(pair_means)) / (2 * radius + 1e-8)


def test_intra_matches_hand_computation():
    rng = np.random.default_rng(0)
    videos = [rng.normal(size=(9, 2, 2, 3)), rng.normal(size=(8, 2, 2, 3)), rng.normal(size=(10, 2, 2, 3))]
    expected = [_intra_by_hand(v.reshape(v.shape[0], 4, 3)) for v in videos]
    for v, e in zip(videos, expected):
        assert T.intra_video_distance(torch.tensor(v, dtype=torch.float32)) == pytest.approx(e, rel=1e-5)
    got = T.d_intra([torch.tensor(v) for v in videos])
    assert got == pytest.approx(sum(expected) / 3, rel=1e-9)


def test_intra_ignores_edge_frames_and_is_zero_for_static_core():
    rng = np.random.default_rng(1)
    video = np.repeat(rng.normal(size=(1, 2, 2, 3)), 10, axis=0)
    video[:3] += rng.normal(size=(3, 2, 2, 3)) * 5  # wild first frames: dropped
    video[-3:] += rng.normal(size=(3, 2, 2, 3)) * 5  # wild last frames: dropped
    assert T.intra_video_distance(torch.tensor(video)) == pytest.approx(0.0, abs=1e-7)


def test_intra_is_scale_invariant_and_rejects_short_videos():
    video = torch.randn(8, 2, 2, 3, generator=torch.Generator().manual_seed(2))
    assert T.intra_video_distance(video * 7) == pytest.approx(T.intra_video_distance(video), rel=1e-6)
    with pytest.raises(ValueError, match="at least 8 frames"):
        T.intra_video_distance(video[:7])
    with pytest.raises(ValueError, match="empty"):
        T.d_intra([])


def _inter_by_hand(middles: np.ndarray, positions: list[int]) -> float:
    n = middles.shape[0]
    pair = []
    for i, j in itertools.combinations(range(n), 2):
        pair.append(sum(_dist(middles[i, q], middles[j, q]) for q in positions) / len(positions))
    patches = [middles[i, q] for i in range(n) for q in positions]
    centre = [sum(p[k] for p in patches) / len(patches) for k in range(middles.shape[2])]
    radius = max(_dist(p, centre) for p in patches)
    return (sum(pair) / len(pair)) / (2 * radius + 1e-8)


def test_inter_matches_hand_computation():
    rng = np.random.default_rng(3)
    middles = rng.normal(size=(3, 2, 2, 3))
    flat = middles.reshape(3, 4, 3)
    # Explicit positions, and the default draw (8 >= 4 positions: all of them).
    assert T.d_inter(torch.tensor(middles), torch.tensor([0, 3])) == pytest.approx(_inter_by_hand(flat, [0, 3]), rel=1e-9)
    assert T.d_inter(torch.tensor(middles)) == pytest.approx(_inter_by_hand(flat, [0, 1, 2, 3]), rel=1e-9)
    as_list = [torch.tensor(m) for m in middles]
    assert T.d_inter(as_list, [1, 2]) == pytest.approx(_inter_by_hand(flat, [1, 2]), rel=1e-9)


def test_inter_positions_are_seeded_and_validated():
    a = T.sample_patch_positions(196, 8, seed=42)
    assert a.tolist() == T.sample_patch_positions(196, 8, seed=42).tolist()
    assert len(set(a.tolist())) == 8 and a.max() < 196
    assert a.tolist() != T.sample_patch_positions(196, 8, seed=7).tolist()
    middles = torch.randn(2, 4, 3)
    with pytest.raises(ValueError, match="at least two videos"):
        T.d_inter(middles[:1])
    with pytest.raises(ValueError, match="positions"):
        T.d_inter(middles, torch.tensor([4]))


def test_margin():
    assert T.tradeoff_margin(0.5, 0.2) == pytest.approx(0.5 - 0.3 * 0.2)
    assert T.tradeoff_margin(0.5, 0.2, gamma=1.0) == pytest.approx(0.3)


def _softmax(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    s = sum(e)
    return [v / s for v in e]


def _cycle_by_hand(video: np.ndarray, fractions, tau: float, normalise: bool) -> float:
    """video (T, 4, 4, D) with 2x2 pooling -> 4 nodes per frame, loops only; raw or unit-norm tokens."""
    t_len = video.shape[0]
    hits = total = 0
    for a, b in fractions:
        t1, t2 = min(int(a * t_len), t_len - 1), min(int(b * t_len), t_len - 1)
        nodes = []
        for t in (t1, t2):
            unit = video[t] / np.linalg.norm(video[t], axis=-1, keepdims=True) if normalise else video[t]
            nodes.append([unit[2 * r : 2 * r + 2, 2 * c : 2 * c + 2].reshape(4, -1).mean(0) for r in range(2) for c in range(2)])
        n1, n2 = nodes
        a12 = [_softmax([float(np.dot(x, y)) / tau for y in n2]) for x in n1]
        a21 = [_softmax([float(np.dot(y, x)) / tau for x in n1]) for y in n2]
        for i in range(4):
            back = [sum(a12[i][k] * a21[k][j] for k in range(4)) for j in range(4)]
            hits += int(max(range(4), key=lambda j: back[j]) == i)
            total += 1
    return hits / total


def test_cycle_accuracy_matches_hand_computation():
    rng = np.random.default_rng(4)
    videos = [rng.normal(size=(10, 4, 4, 3)), rng.normal(size=(13, 4, 4, 3))]
    tensors = [torch.tensor(v, dtype=torch.float32) for v in videos]
    for tau in (0.03, 1.0):
        for normalise in (False, True):  # raw features (the authors' walk, default) or unit-norm
            expected = sum(_cycle_by_hand(v, T.CYCLE_FRACTIONS, tau, normalise) for v in videos) / 2
            got = T.cycle_accuracy_at_fractions(tensors, temperature=tau, normalise=normalise)
            assert got == pytest.approx(expected, abs=1e-6)
    # The two walks differ on these features: the default really is the raw one.
    assert T.cycle_accuracy_at_fractions(tensors, temperature=1.0) != T.cycle_accuracy_at_fractions(
        tensors, temperature=1.0, normalise=True)
    # A static video whose 2x2 blocks are orthogonal: every walk comes home.
    blocks = torch.eye(4).reshape(2, 2, 4).repeat_interleave(2, 0).repeat_interleave(2, 1)
    assert T.cycle_accuracy_at_fractions([blocks.expand(10, 4, 4, 4)]) == 1.0


def test_effective_rank():
    assert T.effective_rank(torch.eye(6)) == pytest.approx(1.0)
    u, v = torch.randn(20, 1), torch.randn(1, 5)
    assert T.effective_rank(u @ v) == pytest.approx(1 / 5, rel=1e-4)
    p = np.array([0.75, 0.25])
    assert T.effective_rank(torch.diag(torch.tensor([3.0, 1.0]))) == pytest.approx(math.exp(-(p * np.log(p)).sum()) / 2)
    # A (N, h, w, D) stack is flattened to N*h*w rows.
    stack = torch.randn(3, 2, 2, 5)
    assert T.effective_rank(stack) == pytest.approx(T.effective_rank(stack.reshape(12, 5)))
    with pytest.raises(ValueError, match="all zero"):
        T.effective_rank(torch.zeros(4, 3))


def test_preprocess_short_side_and_centre_crop():
    frames = torch.zeros(2, 300, 400, 3, dtype=torch.uint8)
    frames[:, :, 200:] = 255  # right half white
    out = T.preprocess_frames(frames)
    assert out.shape == (2, 3, 224, 224)
    # 300x400 -> 256x341, crop columns 58..281: the white edge (341/2 = 170.5) lands near 112.
    assert out[0, 0, 100, :100].max() < 0.05 and out[0, 0, 100, 125:].min() > 0.95
    with pytest.raises(ValueError, match="uint8"):
        T.preprocess_frames(frames.float())


def test_analyze_tradeoff_side_by_side():
    videos = _videos(3)
    encoders = {"base": PooledPixelEncoder(16), "scaled": PooledPixelEncoder(16, scale=10.0)}
    res = T.analyze_tradeoff(encoders, videos, resize=64, crop=64)
    assert set(res) == {"base", "scaled"}
    # The distances and the rank are invariant to the scale of the features: the two encoders agree.
    for key in ("d_intra", "d_inter", "effective_rank", "d_intra_95", "d_inter_90"):
        assert res["scaled"][key] == pytest.approx(res["base"][key], rel=1e-5), key
    # The raw-feature walk (the authors') is not: x10 features sharpen the softmax; the unit-norm walk is.
    assert res["scaled"]["cycle_accuracy"] != res["base"]["cycle_accuracy"]
    unit = T.analyze_tradeoff(encoders, videos, resize=64, crop=64, cycle_features="normalised")
    assert unit["scaled"]["cycle_accuracy"] == pytest.approx(unit["base"]["cycle_accuracy"], rel=1e-5)
    # And they equal the building blocks applied to the same preprocessed features.
    feats = [T.encode_raw(encoders["base"], T.preprocess_frames(v, 64, 64)) for v in videos]
    assert feats[0].shape == (9, 4, 4, 3)
    assert res["base"]["d_intra"] == pytest.approx(T.d_intra(feats), rel=1e-9)
    assert res["base"]["d_inter"] == pytest.approx(T.d_inter(torch.stack([f[4] for f in feats])), rel=1e-9)
    assert res["base"]["cycle_accuracy"] == pytest.approx(T.cycle_accuracy_at_fractions(feats))
    assert res["base"]["tradeoff_margin"] == pytest.approx(res["base"]["d_inter"] - 0.3 * res["base"]["d_intra"])
    assert res["base"]["num_videos"] == 3
    assert 0 < res["base"]["d_intra"] < res["base"]["d_inter"]
    # The streamed (Gram matrix) effective rank equals the SVD of all middle frames stacked.
    assert res["base"]["effective_rank"] == pytest.approx(T.effective_rank(torch.stack([f[4] for f in feats])), rel=1e-9)


def test_analyze_tradeoff_subsamples_frames_and_reports_bad_input():
    videos = _videos(2, frames=20)
    res = T.analyze_tradeoff({"base": PooledPixelEncoder(16)}, videos, num_frames=8, resize=64, crop=64)
    assert res["base"]["num_videos"] == 2
    with pytest.raises(ValueError, match=r"videos\[1\]"):
        T.analyze_tradeoff({"base": PooledPixelEncoder(16)}, [videos[0], "not a video"], resize=64, crop=64)
    with pytest.raises(ValueError, match="video0 has 5 frames"):
        T.analyze_tradeoff({"base": PooledPixelEncoder(16)}, [videos[0][:5], videos[1]], resize=64, crop=64)
    with pytest.raises(ValueError, match="at least two videos"):
        T.analyze_tradeoff({"base": PooledPixelEncoder(16)}, videos[:1], resize=64, crop=64)
    with pytest.raises(ValueError, match="encoders is empty"):
        T.analyze_tradeoff({}, videos)


def test_analyze_tradeoff_reads_clips_from_a_folder(tmp_path):
    videos = _videos(2)
    for index, video in enumerate(videos):
        folder = tmp_path / "clips" / f"clip{index}"
        folder.mkdir(parents=True)
        for t, frame in enumerate(video):
            Image.fromarray(frame.numpy()).save(folder / f"{t:05d}.png")
    encoders = {"base": PooledPixelEncoder(16)}
    from_disk = T.analyze_tradeoff(encoders, tmp_path / "clips", resize=64, crop=64)
    in_memory = T.analyze_tradeoff(encoders, videos, resize=64, crop=64)
    assert from_disk["base"] == pytest.approx(in_memory["base"])
    (tmp_path / "short" / "clip").mkdir(parents=True)
    for t in range(5):
        Image.fromarray(videos[0][t].numpy()).save(tmp_path / "short" / "clip" / f"{t:05d}.png")
    with pytest.raises(ValueError, match=r"short/clip has 5 frames"):
        T.analyze_tradeoff(encoders, tmp_path / "short", resize=64, crop=64)


def test_an_adapter_beside_its_backbone_reuses_the_backbone_pass():
    from tiny_backbones import build_backbone

    from co_settle_hf import BackboneEncoder, CoSettleModel

    torch.manual_seed(0)
    adapter = CoSettleModel.from_backbone(BackboneEncoder(build_backbone("vit")))
    calls, patch_tokens = [], adapter.backbone.patch_tokens
    adapter.backbone.patch_tokens = lambda pixels, **kw: calls.append(len(pixels)) or patch_tokens(pixels, **kw)
    videos = _videos(2)
    together = T.analyze_tradeoff({"adapted": adapter, "base": adapter.backbone}, videos, num_frames=10)
    shared_calls, calls[:] = sum(calls), []
    apart = {"adapted": T.analyze_tradeoff({"adapted": adapter}, videos, num_frames=10)["adapted"],
             "base": T.analyze_tradeoff({"base": adapter.backbone}, videos, num_frames=10)["base"]}
    assert sum(calls) == 2 * shared_calls  # each frame went through the backbone once, not twice
    for name in together:
        for key, value in together[name].items():
            assert value == pytest.approx(apart[name][key], rel=1e-5, abs=1e-6), (name, key)
