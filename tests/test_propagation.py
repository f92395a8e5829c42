"""Label propagation: agreement with a node-by-node reference, known-answer videos, knobs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from co_settle_hf.evaluation.features import extract_video_features, fit_to_patches
from co_settle_hf.evaluation.metrics import f_measure, jaccard
from co_settle_hf.evaluation.propagation import (
    PROTOCOLS,
    _local_mask,
    context_indices,
    labels_to_onehot,
    propagate_labels,
    upsample_and_argmax,
)


def reference_propagation(feats, first, n_context, radius, topk, temperature):
    """Plain transcription of the protocol: one node at a time, candidates listed explicitly."""
    t_len, h, w, _ = feats.shape
    labels = [first.permute(1, 2, 0).double()]  # (h, w, C) per frame
    feats = feats.double()
    for t in range(1, t_len):
        queue = [0] + [max(0, t - n_context + i) for i in range(n_context)]
        out = torch.zeros_like(labels[0])
        for y in range(h):
            for x in range(w):
                candidates = []  # (score, soft label)
                for slot, s in enumerate(queue):
                    for yy in range(h):
                        for xx in range(w):
                            if slot > 0 and math.hypot(yy - y, xx - x) >= radius:
                                continue
                            score = float(feats[t, y, x] @ feats[s, yy, xx]) / temperature
                            candidates.append((score, labels[s][yy, xx]))
                candidates.sort(key=lambda c: -c[0])
                best = candidates[:topk]
                top = max(c[0] for c in best)
                weights = [math.exp(c[0] - top) for c in best]
                total = sum(weights)
                out[y, x] = sum(wt / total * lab for wt, (_, lab) in zip(weights, best))
        labels.append(out)
    return torch.stack(labels).permute(0, 3, 1, 2)


def random_video(seed, t_len=4, h=4, w=5, dim=6, classes=3):
    gen = torch.Generator().manual_seed(seed)
    feats = F.normalize(torch.randn(t_len, h, w, dim, generator=gen), dim=-1)
    first = torch.softmax(3 * torch.randn(classes, h, w, generator=gen), dim=0)
    return feats, first


@pytest.mark.parametrize(
    "n_context, radius, topk, temperature",
    [(2, 1.5, 3, 0.7), (3, 0.0, 2, 0.7), (1, 0.5, 4, 0.2), (5, 100.0, 7, 1.0), (0, 2.0, 3, 0.5), (2, 1.0, 1, 0.7)],
)
def test_matches_node_by_node_reference(n_context, radius, topk, temperature):
    feats, first = random_video(seed=n_context * 10 + topk)
    got = propagate_labels(feats, first, n_context=n_context, radius=radius, topk=topk, temperature=temperature)
    want = reference_propagation(feats, first, n_context, radius, topk, temperature)
    assert got.shape == (4, 3, 4, 5)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
    assert torch.equal(got[0], first)


def test_topk_one_is_nearest_neighbour():
    feats, first = random_video(seed=3, t_len=2)
    got = propagate_labels(feats, first, n_context=1, radius=100.0, topk=1)
    # With one target frame the context is frame 0 twice: the label of the most similar node.
    sims = feats[1].reshape(-1, feats.shape[-1]) @ feats[0].reshape(-1, feats.shape[-1]).T
    nearest = sims.argmax(1)
    want = first.reshape(first.shape[0], -1)[:, nearest].reshape(first.shape)
    torch.testing.assert_close(got[1], want)


def test_radius_zero_uses_only_the_first_frame():
    feats, first = random_video(seed=5, t_len=5)
    got = propagate_labels(feats, first, n_context=3, radius=0.0, topk=3)
    only_first = propagate_labels(feats, first, n_context=0, topk=3)
    torch.testing.assert_close(got, only_first)
    # ...whereas a positive radius lets the previous predictions in.
    wider = propagate_labels(feats, first, n_context=3, radius=2.0, topk=3)
    assert not torch.allclose(wider[2:], only_first[2:])


def test_small_radius_sees_only_the_same_position():
    """radius in (0, 1]: a node's short-term candidates are its own cell in earlier frames."""
    h, w = 3, 4
    n = h * w
    eye = torch.eye(2 * n)
    # Frame 0 = e_m; frame 1 matches frame 0 node for node; frame 2's node (y, x) looks
    # most like frame 1's (y, x + 1) and less like its own cell, and not at all like frame 0.
    shift = torch.arange(n).reshape(h, w).roll(-1, dims=1).flatten()
    frame0 = eye[:n]
    frame1 = F.normalize(eye[:n] + eye[n:], dim=-1)
    frame2 = F.normalize(eye[n:][shift] + 0.5 * eye[n:], dim=-1)
    feats = torch.stack([frame0, frame1, frame2]).reshape(3, h, w, 2 * n)
    first = torch.eye(n).reshape(n, h, w)  # one class per cell: shows which node was copied
    own = propagate_labels(feats, first, n_context=1, radius=0.5, topk=1)
    torch.testing.assert_close(own[1], first)
    torch.testing.assert_close(own[2], first)  # the better match one cell away is masked
    wide = propagate_labels(feats, first, n_context=1, radius=2.0, topk=1)
    torch.testing.assert_close(wide[2][:, :, :-1], first[:, :, 1:])  # now it is taken


def test_temperature_limits():
    feats, first = random_video(seed=11, t_len=3)
    cold = propagate_labels(feats, first, n_context=2, radius=3.0, topk=5, temperature=1e-4)
    nearest = propagate_labels(feats, first, n_context=2, radius=3.0, topk=1)
    torch.testing.assert_close(cold, nearest, atol=1e-4, rtol=0)
    hot = propagate_labels(feats, first, n_context=2, radius=3.0, topk=5, temperature=1e6)
    uniform = reference_propagation(feats, first, 2, 3.0, 5, 1e6)  # equal weights over the top 5
    torch.testing.assert_close(hot.double(), uniform, atol=1e-5, rtol=0)
    assert not torch.allclose(hot, cold)


def test_n_context_zero_propagates_from_the_first_frame_alone():
    feats, first = random_video(seed=2, t_len=5)
    got = propagate_labels(feats, first, n_context=0, radius=3.0, topk=3)
    for t in range(1, 5):
        pair = propagate_labels(feats[[0, t]], first, n_context=0, radius=3.0, topk=3)
        torch.testing.assert_close(got[t], pair[1])


def test_n_context_changes_the_context():
    feats, first = random_video(seed=2, t_len=6)
    short = propagate_labels(feats, first, n_context=1, radius=3.0, topk=3)
    long = propagate_labels(feats, first, n_context=4, radius=3.0, topk=3)
    assert not torch.allclose(short[3:], long[3:])


def moving_objects_video(t_len=8, h=10, w=14, cell=4, seed=0):
    """Two textured objects sliding over a textured background, features = texture one-hot.

    Every texture is shared by several cells of one class only, so the correct label of
    every node is recoverable from features alone, including background cells the objects
    uncover. Returns features (T, h, w, D), pixel masks (T, h*cell, w*cell), and ids.
    """
    rng = np.random.default_rng(seed)
    n_bg, n_obj = 5, 3  # textures per class
    background = rng.integers(0, n_bg, size=(h, w))
    obj_tex = [rng.integers(0, n_obj, size=(3, 4)), rng.integers(0, n_obj, size=(4, 3))]
    tex = np.zeros((t_len, h, w), dtype=np.int64)
    ids = np.zeros((t_len, h, w), dtype=np.int64)
    for t in range(t_len):
        tex[t], ids[t] = background, 0
        placements = [(1 + t // 2, 1 + t), (5, 10 - t)]  # top-left corners, one cell per frame
        for k, ((y, x), pattern) in enumerate(zip(placements, obj_tex)):
            ph, pw = pattern.shape
            tex[t, y : y + ph, x : x + pw] = n_bg + k * n_obj + pattern
            ids[t, y : y + ph, x : x + pw] = k + 1
    feats = F.one_hot(torch.from_numpy(tex), n_bg + 2 * n_obj).float()
    masks = torch.from_numpy(ids).repeat_interleave(cell, 1).repeat_interleave(cell, 2)
    return feats, masks


def test_recovers_known_labels_of_moving_objects():
    feats, masks = moving_objects_video()
    t_len, h, w, _ = feats.shape
    cell = masks.shape[1] // h
    first = labels_to_onehot(masks[0], 3, (h, w))
    # Textures match with similarity 1, everything else 0; a cold softmax makes the
    # (exactly 1-similar) neighbours carry all the weight.
    soft = propagate_labels(feats, first, n_context=3, radius=4.0, topk=5, temperature=0.05)
    ids = masks[:, ::cell, ::cell]
    assert torch.equal(soft.argmax(1), ids)  # every node right at feature resolution
    assert torch.all(soft.max(1).values > 1 - 1e-6)  # and confidently so
    pred = upsample_and_argmax(soft, tuple(masks.shape[1:]))
    # On the pixels, the best any propagation can do is the upsampled true one-hot ...
    best = upsample_and_argmax(F.one_hot(ids, 3).permute(0, 3, 1, 2).float(), tuple(masks.shape[1:]))
    for t in range(1, t_len):
        for obj in (1, 2):
            assert jaccard(pred[t] == obj, best[t] == obj) == pytest.approx(1.0, abs=1e-9)
            assert f_measure(pred[t] == obj, best[t] == obj) == pytest.approx(1.0, abs=1e-9)
            # ... which differs from the pixel masks only where bilinear upsampling rounds a
            # rectangle's convex corners (one pixel each for 4-pixel cells): J >= 1 - 4/area.
            area = int((masks[t] == obj).sum())
            assert jaccard(pred[t] == obj, masks[t] == obj) >= 1 - 4 / area - 1e-9


def test_labels_to_onehot_and_upsampling():
    ids = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255], [2, 2, 255, 255]])
    full = labels_to_onehot(ids, 3)
    assert full.shape == (3, 4, 4)
    assert torch.equal(full.sum(0), (ids != 255).float())  # void votes for nothing
    small = labels_to_onehot(ids, 3, (2, 2))
    torch.testing.assert_close(small, torch.tensor([[[1.0, 0], [0, 0]], [[0, 1.0], [0, 0]], [[0, 0], [1.0, 0]]]))
    # A 2-pixel-wide stripe at the centre of a 4-pixel cell is half the cell's sample.
    stripe = torch.zeros(4, 4, dtype=torch.long)
    stripe[:, 2] = 1
    assert labels_to_onehot(stripe, 2, (1, 1))[1, 0, 0].item() == pytest.approx(0.5)
    # Upsampling a block-constant label map (no rectangle corners inside) is exact.
    stripes = labels_to_onehot(torch.tensor([[0, 1], [0, 1]]), 2)
    hard = upsample_and_argmax(stripes[None].repeat(3, 1, 1, 1), (4, 6), chunk=2)
    assert hard.dtype == torch.long and hard.shape == (3, 4, 6)
    assert torch.equal(hard, torch.tensor([0, 0, 0, 1, 1, 1]).expand(3, 4, 6))


def test_bad_arguments_name_the_argument():
    feats, first = random_video(seed=0)
    with pytest.raises(ValueError, match="first_labels"):
        propagate_labels(feats, first[:, :3])
    with pytest.raises(ValueError, match="features"):
        propagate_labels(feats[0], first)
    with pytest.raises(ValueError, match="topk"):
        propagate_labels(feats, first, topk=0)
    with pytest.raises(ValueError, match="temperature"):
        propagate_labels(feats, first, temperature=0)


class PoolingEncoder:
    """Fake encoder: average-pools normalised pixels into patches (D = 3)."""

    image_mean = (0.5, 0.4, 0.3)
    image_std = (0.2, 0.25, 0.5)
    patch_size = 4

    def __init__(self):
        self.calls = []

    def __call__(self, pixel_values):
        self.calls.append(tuple(pixel_values.shape))
        return F.avg_pool2d(pixel_values, self.patch_size).permute(0, 2, 3, 1)


def test_extract_video_features_normalises_and_batches():
    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (5, 16, 24, 3), dtype=torch.uint8, generator=gen)
    encoder = PoolingEncoder()
    feats = extract_video_features(encoder, frames, batch_size=2)
    assert feats.shape == (5, 4, 6, 3)
    assert encoder.calls == [(2, 3, 16, 24), (2, 3, 16, 24), (1, 3, 16, 24)]
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(5, 4, 6))
    mean = torch.tensor(encoder.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(encoder.image_std).view(1, 3, 1, 1)
    pixels = (frames.permute(0, 3, 1, 2).float() / 255 - mean) / std
    want = F.normalize(F.avg_pool2d(pixels, 4).permute(0, 2, 3, 1), dim=-1)
    torch.testing.assert_close(feats, want)
    resized = extract_video_features(encoder, frames, size=(8, 12))
    assert resized.shape == (5, 2, 3, 3)
    assert not torch.is_inference(resized)
    with pytest.raises(ValueError, match="uint8"):
        extract_video_features(encoder, frames.float())
    with pytest.raises(ValueError, match="frames"):
        extract_video_features(encoder, frames[0])


def test_fit_to_patches():
    assert fit_to_patches((480, 880), 16) == (480, 880)
    assert fit_to_patches((480, 880), 14) == (476, 868)
    assert fit_to_patches((5, 30), 8) == (8, 24)


def dino_reference(feats, first, n_last=7, size_mask=12, topk=5):
    """DINO's eval_video_segmentation.py propagation, transcribed with explicit loops.

    The queue grows from frame 1 (no padding); the square neighbourhood (|dy|, |dx| <= size_mask)
    applies to every context frame, frame 0 included; weights are exp(affinity / 0.1) of the
    top-k sources, normalised to sum 1.
    """
    t_len, h, w, _ = feats.shape
    feats = feats.double()
    labels = [first.permute(1, 2, 0).double()]
    for t in range(1, t_len):
        context = [0] + list(range(max(1, t - n_last), t))
        out = torch.zeros_like(labels[0])
        for y in range(h):
            for x in range(w):
                candidates = []
                for s in context:
                    for yy in range(h):
                        for xx in range(w):
                            if abs(yy - y) <= size_mask and abs(xx - x) <= size_mask:
                                score = math.exp(float(feats[t, y, x] @ feats[s, yy, xx]) / 0.1)
                                candidates.append((score, labels[s][yy, xx]))
                candidates.sort(key=lambda c: -c[0])
                best = candidates[:topk]
                total = sum(c[0] for c in best)
                out[y, x] = sum(score / total * lab for score, lab in best)
        labels.append(out)
    return torch.stack(labels).permute(0, 3, 1, 2)


@pytest.mark.parametrize("size_mask", [12, 1])
def test_dino_protocol_matches_dinos_loop(size_mask):
    from co_settle_hf.evaluation.propagation import PROTOCOLS

    feats, first = random_video(11, t_len=10, h=4, w=5)
    settings = PROTOCOLS["dino"].with_values(radius=size_mask)
    got = propagate_labels(feats.double(), first.double(), settings)
    assert torch.allclose(got, dino_reference(feats, first, size_mask=size_mask), atol=1e-10)
    # Not the CropMAE protocol with the same numbers: the queue and the neighbourhood differ.
    cropmae = propagate_labels(feats.double(), first.double(), topk=5, temperature=0.1, n_context=7, radius=size_mask)
    assert not torch.allclose(got, cropmae, atol=1e-6)


def test_norm_mask_rescales_each_channel_before_the_argmax():
    soft = torch.zeros(1, 2, 2, 2)
    soft[0, 0] = torch.tensor([[0.9, 0.8], [0.85, 0.8]])  # high everywhere, small range
    soft[0, 1] = torch.tensor([[0.0, 0.5], [0.1, 0.0]])  # low, but its peak is its own maximum
    assert upsample_and_argmax(soft, (2, 2)).tolist() == [[[0, 0], [0, 0]]]
    # After min-max: channel 0 -> [[1, 0], [0.5, 0]], channel 1 -> [[0, 1], [0.2, 0]].
    assert upsample_and_argmax(soft, (2, 2), norm_mask=True).tolist() == [[[0, 1], [0, 0]]]


def full_affinity_propagation(feats, first, settings):
    """The previous implementation: the full (n, slots x N) affinity, masked, one top-k per row."""
    t_len, h, w, dim = feats.shape
    n = h * w
    feats = feats.reshape(t_len, n, dim)
    labels = torch.zeros(t_len, n, first.shape[0])
    labels[0] = first.reshape(first.shape[0], n).T
    far = ~_local_mask(h, w, settings.radius, feats.device, settings.neighbourhood == "square")
    restricted = 0 if settings.restrict_first_frame else 1
    for t in range(1, t_len):
        idx = torch.tensor(context_indices(t, settings.n_context, settings.pad_context))
        distinct, slot = torch.unique(idx, return_inverse=True)
        chunk = max(1, 2**25 // (len(idx) * n))
        ctx_labels = labels[idx].reshape(-1, first.shape[0])
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            affinity = (feats[t, start:stop] / settings.temperature) @ feats[distinct].reshape(-1, dim).T
            affinity = affinity.view(stop - start, len(distinct), n)[:, slot]
            affinity[:, restricted:].masked_fill_(far[start:stop, None, :], float("-inf"))
            weights, ids = affinity.view(stop - start, -1).topk(min(settings.topk, len(idx) * n), dim=1)
            labels[t, start:stop] = torch.einsum("nk,nkc->nc", torch.softmax(weights, 1), ctx_labels[ids])
    return labels.permute(0, 2, 1).reshape(t_len, first.shape[0], h, w)


@pytest.mark.parametrize("protocol, knobs", [
    ("cropmae", {}), ("dino", {}), ("cropmae", {"radius": 2.5, "n_context": 4, "topk": 3}),
    ("cropmae", {"radius": 0.0}), ("cropmae", {"restrict_first_frame": True, "radius": 3.0, "topk": 12}),
    ("cropmae", {"topk": 200, "radius": 1.5, "n_context": 2}), ("dino", {"radius": 1.0, "pad_context": True}),
])
def test_bit_identical_to_the_full_affinity_search(protocol, knobs):
    """Blockwise top-k, in-place masking and per-run matmuls change no bit of the result.

    (Only exact ties between nodes with different labels may be broken otherwise, as they may
    by any top-k implementation.) The long video fills the 20-frame queue.
    """
    settings = PROTOCOLS[protocol].with_values(**knobs)
    for seed, (t_len, h, w) in enumerate([(23, 4, 6), (9, 4, 5), (12, 7, 3)]):
        feats, first = random_video(seed, t_len=t_len, h=h, w=w, dim=16)
        assert torch.equal(propagate_labels(feats, first, settings), full_affinity_propagation(feats, first, settings))
