"""--backbone_precision bf16: the frozen backbone under autocast, float32 tokens out, a separate cache key."""

from __future__ import annotations

import pytest
import torch
from tiny_backbones import build_backbone

from co_settle_hf import BackboneEncoder
from co_settle_hf.evaluation.cache import model_fingerprint
from co_settle_hf.training.arguments import parse_args
from co_settle_hf.training.settings import REPLAYED, VIEWS


def test_bf16_autocast_gives_float32_tokens_close_to_fp32_and_its_own_cache_key():
    torch.manual_seed(0)
    backbone = BackboneEncoder(build_backbone("dinov2"))
    pixels = torch.randn(2, 3, 56, 56)
    plain, key = backbone.patch_tokens(pixels)[0], model_fingerprint(backbone)
    backbone.autocast_dtype = torch.bfloat16
    low = backbone.patch_tokens(pixels)[0]
    assert low.dtype == torch.float32 and not torch.equal(low, plain)  # really computed in bf16
    assert torch.nn.functional.cosine_similarity(low, plain, dim=-1).mean() > 0.99
    assert model_fingerprint(backbone) != key  # bf16 features never read fp32 cache entries


def test_the_trainer_flag_takes_only_known_precisions_and_a_resume_keeps_it(tmp_path):
    argv = ["--backbone", "x", "--train-dir", "y", "--output-dir", str(tmp_path), "--backbone-precision"]
    assert parse_args([*argv, "bf16"]).backbone_precision == "bf16"
    with pytest.raises(SystemExit):
        parse_args([*argv, "fp16"])
    assert "backbone_precision" in REPLAYED and "backbone_precision" in VIEWS  # a resume or a cache file must match it
