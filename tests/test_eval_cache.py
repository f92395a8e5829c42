"""The feature cache: a second run (or a sweep) never runs the backbone again and gives the same numbers."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from eval_fixtures import ColourEncoder, write_davis
from eval_fixtures import eval_cli as cli_main
from tiny_backbones import save_backbone

from co_settle_hf.evaluation.cache import FeatureCache
from co_settle_hf.evaluation.davis import evaluate_davis
from co_settle_hf.evaluation.propagation import PropagationSettings


class CountingEncoder(ColourEncoder):
    """Counts its forward calls: the backbone's, in a real model."""

    def __init__(self):
        self.calls = 0

    def __call__(self, pixel_values):
        self.calls += 1
        return super().__call__(pixel_values)


def scores(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in ("timing", "frames_per_second", "summaries")}


@pytest.fixture
def davis(tmp_path) -> Path:
    write_davis(tmp_path / "DAVIS")
    return tmp_path / "DAVIS"


def test_a_cached_run_skips_the_backbone_and_gives_identical_numbers(davis, tmp_path):
    encoder = CountingEncoder()
    sweep = [PropagationSettings(topk=k, n_context=3, radius=4) for k in (2, 5)]
    kwargs = dict(size=(64, 96), progress=False)
    plain = evaluate_davis(encoder, davis, tmp_path / "plain", sweep[0], **kwargs)
    calls_per_run = encoder.calls
    assert calls_per_run == 2  # one batch of 5 frames per sequence

    encoder.calls = 0
    first = evaluate_davis(encoder, davis, tmp_path / "first", sweep, cache=FeatureCache(tmp_path / "cache", encoder),
                           **kwargs)
    assert encoder.calls == calls_per_run  # two settings, features computed once
    assert first["timing"]["cache_misses"] == 2 and first["timing"]["cache_hits"] == 0
    assert scores(first["summaries"][0]) == scores(plain)  # the cache changes nothing

    encoder.calls = 0
    second = evaluate_davis(encoder, davis, tmp_path / "second", sweep, cache=FeatureCache(tmp_path / "cache", encoder),
                            **kwargs)
    assert encoder.calls == 0  # the backbone never ran
    assert second["timing"]["cache_hits"] == 2 and second["timing"]["cache_misses"] == 0
    for a, b in zip(first["summaries"], second["summaries"]):
        assert scores(a) == scores(b)
    assert scores(second["summaries"][0]) != scores(second["summaries"][1])  # the sweep really varied top-k
    for label in ("topk2_temp0.7", "topk5_temp0.7"):
        for name in ("summary.json", "global_results-val.csv", "alpha/00003.png"):
            assert (tmp_path / "second" / label / name).read_bytes() == (tmp_path / "first" / label / name).read_bytes()


def test_a_changed_frame_or_size_misses_the_cache(davis, tmp_path):
    encoder = CountingEncoder()
    cache = tmp_path / "cache"
    evaluate_davis(encoder, davis, tmp_path / "a", size=(64, 96), progress=False, cache=FeatureCache(cache, encoder))
    jpeg = davis / "JPEGImages" / "480p" / "beta" / "00002.jpg"
    os.utime(jpeg, ns=(jpeg.stat().st_atime_ns, jpeg.stat().st_mtime_ns + 10**9))  # re-written frame
    again = evaluate_davis(encoder, davis, tmp_path / "b", size=(64, 96), progress=False,
                           cache=FeatureCache(cache, encoder))
    assert again["timing"]["cache_hits"] == 1 and again["timing"]["cache_misses"] == 1
    other_size = evaluate_davis(encoder, davis, tmp_path / "c", size=(32, 48), progress=False,
                                cache=FeatureCache(cache, encoder))
    assert other_size["timing"]["cache_misses"] == 2


def test_the_command_line_sweep_writes_one_table_and_reuses_the_cache(tmp_path):
    save_backbone("vit", tmp_path / "vit")
    write_davis(tmp_path / "DAVIS")
    argv = ["davis", "--model", str(tmp_path / "vit"), "--data-root", str(tmp_path / "DAVIS"), "--device", "cpu",
            "--size", "64", "96", "--topk", "5", "7", "10", "--propagation_temperature", "0.1", "0.7",
            "--feature_cache", str(tmp_path / "cache")]
    rows = cli_main([*argv, "--output-dir", str(tmp_path / "one")])
    labels = [f"topk{k}_temp{t}" for k in (5, 7, 10) for t in (0.1, 0.7)]
    assert list(rows) == labels
    assert [(r["topk"], r["temperature"]) for r in rows.values()] == [(k, t) for k in (5, 7, 10) for t in (0.1, 0.7)]
    table = (tmp_path / "one" / "table.md").read_text().splitlines()
    assert table[2].startswith("| setting | topk | temperature | J&F-Mean |")
    assert [line.split(" | ")[0] for line in table[4:]] == [f"| {label}" for label in labels]  # a row per setting
    for label in labels:
        saved = json.loads((tmp_path / "one" / label / "summary.json").read_text())
        assert saved["J&F-Mean"] == pytest.approx(rows[label]["J&F-Mean"])
    timing = json.loads((tmp_path / "one" / "timing.json").read_text())
    assert timing["cache_misses"] == 2 and timing["cache_hits"] == 0

    again = cli_main([*argv, "--output-dir", str(tmp_path / "two")])
    assert again == rows
    timing = json.loads((tmp_path / "two" / "timing.json").read_text())
    assert timing["cache_hits"] == 2 and timing["cache_misses"] == 0
    with (tmp_path / "two" / labels[0] / "per-sequence_results-val.csv").open() as handle:
        assert [r[0] for r in csv.reader(handle)][1:] == ["alpha_1", "alpha_2", "beta_1", "beta_2"]


def test_the_backbone_key_follows_feature_settings_and_an_adapter_names_its_backbone(tmp_path):
    from co_settle_hf.backbones.encoder import BackboneEncoder
    from co_settle_hf.evaluation.cache import model_fingerprint
    from co_settle_hf.modeling_co_settle import CoSettleModel

    save_backbone("vit", tmp_path / "vit")
    plain, other = (BackboneEncoder.from_pretrained(str(tmp_path / "vit")) for _ in range(2))
    assert model_fingerprint(plain) == model_fingerprint(other)  # same weights and settings: shared entries
    other.use_feature_settings(apply_final_norm=False)
    assert model_fingerprint(plain) != model_fingerprint(other)  # other features, other entries
    adapter = CoSettleModel.from_backbone(plain)
    assert model_fingerprint(adapter) != model_fingerprint(CoSettleModel(adapter.config, backbone=other))
