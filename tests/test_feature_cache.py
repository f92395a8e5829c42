"""Backbone-feature reuse: a cached step is the uncached step on the same pair, augmentation and PEA offset."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from tiny_backbones import build_backbone
from trainer_fixtures import run, workspace  # noqa: F401 (a fixture)

from co_settle_hf import BackboneEncoder, CoSettleModel
from co_settle_hf.errors import CheckpointError
from co_settle_hf.training.feature_cache import PairViewCache, cached_objective
from co_settle_hf.training.forward import training_forward


def gradients(model):
    return [p.grad.clone() for p in model.projection.parameters()]


def test_cached_step_equals_the_uncached_step(tmp_path):
    torch.manual_seed(0)
    model = CoSettleModel.from_backbone(BackboneEncoder(build_backbone("vit")), pea_alpha=3.0)
    frames = torch.randn(1, 2, 3, 224, 224)
    uncached = training_forward(model, frames, torch.Generator().manual_seed(7))
    uncached.loss.backward()
    want = gradients(model)
    model.zero_grad()

    cache = PairViewCache.build(model, [(frames, torch.Generator().manual_seed(7))], num_pairs=1)
    cache.save(tmp_path / "views.safetensors")
    cache = PairViewCache.load(tmp_path / "views.safetensors")
    (batch,) = cache.epoch_batches(batch=1, steps=1, seed=0, epoch=0)
    cached = cached_objective(model, batch)
    cached.loss.backward()
    assert torch.equal(cached.loss, uncached.loss)
    assert all(torch.equal(a, b) for a, b in zip(gradients(model), want))
    # A different PEA offset is a different step: the cache really holds the PEA view.
    other = PairViewCache.build(model, [(frames, torch.Generator().manual_seed(8))], num_pairs=1)
    assert not torch.equal(cached_objective(model, other.views).loss, uncached.loss)


def test_cache_size_is_checked():
    model = CoSettleModel.from_backbone(BackboneEncoder(build_backbone("vit")))
    with pytest.raises(ValueError, match="feature_cache_pairs=3"):
        PairViewCache.build(model, [(torch.randn(2, 2, 3, 224, 224), None)], num_pairs=3)
    with pytest.raises(ValueError, match="cached views"):
        PairViewCache(torch.zeros(2, 2, 4, 4, 8))


def test_trainer_with_a_cache_of_its_first_batch_takes_the_same_first_step(workspace, tmp_path):
    """--feature_cache_pairs 2 at batch 2: step 1 trains on the cached views of the very batch (and
    PEA offset) the uncached step 1 uses, so one step gives the same adapter."""
    plain = run(workspace, tmp_path / "plain", "--per-device-train-batch-size", "2", steps=1)
    cached = run(workspace, tmp_path / "cached", "--per-device-train-batch-size", "2", "--feature-cache-pairs", "2", steps=1)
    expected, got = load_file(plain / "model.safetensors"), load_file(cached / "model.safetensors")
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=1e-5)
    assert json.loads((cached / "training_summary.json").read_text())["feature_cache_pairs"] == 2


def test_epoch_batches_see_every_pair_once_per_pass_and_replay():
    cache = PairViewCache(torch.arange(5.0).view(5, 1, 1, 1, 1).expand(5, 3, 1, 1, 1))
    seen = [int(v) for views in cache.epoch_batches(batch=2, steps=5, seed=0, epoch=3) for v in views[:, 0, 0, 0, 0]]
    assert sorted(seen[:5]) == list(range(5)) and sorted(seen[5:]) == list(range(5))
    again = [int(v) for views in cache.epoch_batches(batch=2, steps=5, seed=0, epoch=3, skip=2) for v in views[:, 0, 0, 0, 0]]
    assert again == seen[4:]  # a resumed epoch continues with the same batches
    other = [int(v) for views in cache.epoch_batches(batch=2, steps=5, seed=0, epoch=4) for v in views[:, 0, 0, 0, 0]]
    assert other != seen


def test_a_cache_file_is_reused_only_with_the_same_settings(workspace, tmp_path):
    views = tmp_path / "views.safetensors"
    first = run(workspace, tmp_path / "a", "--per-device-train-batch-size", "2", "--feature-cache-pairs", "4",
                "--feature-cache-file", str(views), steps=2)
    written = views.stat().st_mtime_ns
    again = run(workspace, tmp_path / "b", "--per-device-train-batch-size", "2", "--feature-cache-pairs", "4",
                "--feature-cache-file", str(views), "--learning-rate", "3e-2", steps=2)  # lr does not change the views
    assert views.stat().st_mtime_ns == written  # read, not rebuilt
    a, b = load_file(first / "model.safetensors"), load_file(again / "model.safetensors")
    assert any(not torch.equal(a[key], b[key]) for key in a)  # the other lr trained on the same views
    with pytest.raises(CheckpointError, match="seed: 0 -> 1"):
        run(workspace, tmp_path / "c", "--per-device-train-batch-size", "2", "--feature-cache-pairs", "4",
            "--feature-cache-file", str(views), "--seed", "1", steps=2)
    with pytest.raises(CheckpointError, match="resize: 'antialiased' -> 'short_side'; crop_rule: 'torchvision' -> 'released'"):
        run(workspace, tmp_path / "d", "--per-device-train-batch-size", "2", "--feature-cache-pairs", "4",
            "--feature-cache-file", str(views), "--resize", "short_side", "--crop-rule", "released", steps=2)
