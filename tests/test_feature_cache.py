"""Backbone-feature reuse: a cached step is the uncached step on the same pair, augmentation and PEA offset."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from tiny_backbones import build_backbone
from trainer_fixtures import run, workspace  # noqa: F401 (a fixture)

from co_settle_hf import BackboneEncoder, CoSettleModel
from co_settle_hf.training.feature_cache import FeatureCache, cached_objective
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

    cache = FeatureCache.build(model, [(frames, torch.Generator().manual_seed(7))], num_pairs=1)
    cache.save(tmp_path / "views.safetensors")
    cache = FeatureCache.load(tmp_path / "views.safetensors")
    cached = cached_objective(model, cache.sample(1, torch.Generator().manual_seed(0)))
    cached.loss.backward()
    assert torch.equal(cached.loss, uncached.loss)
    assert all(torch.equal(a, b) for a, b in zip(gradients(model), want))
    # A different PEA offset is a different step: the cache really holds the PEA view.
    other = FeatureCache.build(model, [(frames, torch.Generator().manual_seed(8))], num_pairs=1)
    assert not torch.equal(cached_objective(model, other.views).loss, uncached.loss)


def test_cache_size_is_checked():
    model = CoSettleModel.from_backbone(BackboneEncoder(build_backbone("vit")))
    with pytest.raises(ValueError, match="feature_cache_pairs=3"):
        FeatureCache.build(model, [(torch.randn(2, 2, 3, 224, 224), None)], num_pairs=3)
    with pytest.raises(ValueError, match="cached views"):
        FeatureCache(torch.zeros(2, 2, 4, 4, 8))


def test_trainer_with_a_cache_of_its_first_batch_takes_the_same_first_step(workspace, tmp_path):
    """--feature_cache_pairs 2 at batch 2: step 1 trains on the cached views of the very batch (and
    PEA offset) the uncached step 1 uses, so one step gives the same adapter."""
    plain = run(workspace, tmp_path / "plain", "--per-device-train-batch-size", "2", steps=1)
    cached = run(workspace, tmp_path / "cached", "--per-device-train-batch-size", "2", "--feature-cache-pairs", "2", steps=1)
    expected, got = load_file(plain / "model.safetensors"), load_file(cached / "model.safetensors")
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=1e-5)
    assert json.loads((cached / "training_summary.json").read_text())["feature_cache_pairs"] == 2
