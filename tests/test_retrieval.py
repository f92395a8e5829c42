"""Clip retrieval (UCF101 / HMDB51 layouts): split reading, R@k against brute force, blockwise top-k, memory."""

from __future__ import annotations

import csv
import json
import tracemalloc
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from eval_fixtures import ColourEncoder, write_ucf101
from eval_fixtures import eval_cli as cli_main
from PIL import Image
from tiny_backbones import save_backbone

from co_settle_hf.evaluation.outputs import OutputFolder
from co_settle_hf.evaluation.retrieval import (
    embed_videos,
    evaluate_retrieval,
    read_split,
    score_retrieval,
    topk_neighbours,
    uniform_indices,
)


@pytest.fixture(scope="module")
def ucf(tmp_path_factory) -> Path:
    """5 classes (one colour each), 4 train and 2 test videos per class, official split files."""
    return write_ucf101(tmp_path_factory.mktemp("ucf") / "UCF101")


class RandomEncoder:
    """Features that know nothing of the video: seeded noise (B, h, w, 16)."""

    image_mean, image_std, patch_size = (0.5,) * 3, (0.25,) * 3, 16

    def __init__(self):
        self.generator = torch.Generator().manual_seed(0)

    def __call__(self, pixel_values):
        b, _, h, w = pixel_values.shape
        return torch.randn(b, h // 16, w // 16, 16, generator=self.generator)


def _brute_force_r1(queries: np.ndarray, gallery: np.ndarray, split) -> float:
    sims = queries @ gallery.T  # the whole matrix
    top1 = np.array([max(range(len(row)), key=lambda j: (row[j], -j)) for row in sims])
    gallery_labels = [v.label for v in split.gallery]
    return float(np.mean([gallery_labels[j] == q.label for j, q in zip(top1, split.queries)]))


def test_ucf101_split_and_hmdb51_split(ucf, tmp_path):
    split = read_split(ucf)
    assert split.dataset == "ucf101" and split.classes == [f"Class{c}" for c in range(5)]
    assert len(split.gallery) == 20 and len(split.queries) == 10
    assert {v.name.split("/")[0] for v in split.queries if v.label == 3} == {"Class3"}
    with pytest.raises(FileNotFoundError, match="trainlist02.txt not found"):
        read_split(ucf, split=2)
    hmdb = tmp_path / "hmdb51"
    for name in ("brush_hair", "cartwheel"):
        (hmdb / name).mkdir(parents=True)
        for v in ("a.avi", "b.avi", "c.avi"):
            (hmdb / name / f"{name}_{v}").write_bytes(b"")
        (hmdb / f"{name}_test_split1.txt").write_text(f"{name}_a.avi 1\n{name}_b.avi 2\n{name}_c.avi 0\n")
    split = read_split(hmdb)
    assert split.dataset == "hmdb51" and split.classes == ["brush_hair", "cartwheel"]
    assert [v.name for v in split.gallery] == ["brush_hair/brush_hair_a.avi", "cartwheel/cartwheel_a.avi"]
    assert [v.label for v in split.queries] == [0, 1]  # the "0" lines are in neither
    (hmdb / "cartwheel_test_split1.txt").write_text("cartwheel_a.avi 3\n")
    with pytest.raises(ValueError, match=r"cartwheel_test_split1.txt, line 1"):
        read_split(hmdb)


def test_uniform_indices():
    assert uniform_indices(80, 8) == [5, 15, 25, 35, 45, 55, 65, 75]
    assert uniform_indices(3, 8) == [0, 0, 0, 1, 1, 2, 2, 2]  # a short video repeats frames


def test_embedding_is_the_pooled_unit_norm_patch_mean(ucf):
    """One video by hand: decode with PyAV, take the segment-centre frames, encode, mean, normalise."""
    video = read_split(ucf).queries[0]
    with av.open(str(video.path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    picked = torch.from_numpy(frames[[int((i + 0.5) * len(frames) / 4) for i in range(4)]])
    images = torch.nn.functional.interpolate(picked.permute(0, 3, 1, 2).float() / 255, size=(224, 224),
                                             mode="bilinear", antialias=True)
    encoder = ColourEncoder()
    features = encoder((images - 0.5) / 0.25)
    expected = torch.nn.functional.normalize(features.mean(dim=(0, 1, 2)), dim=0)
    got = embed_videos(encoder, [video], num_frames=4)[0]
    assert np.allclose(got, expected.numpy(), atol=1e-4)


def test_r1_equals_brute_force_and_rises_from_chance(ucf, tmp_path):
    split = read_split(ucf)
    results = {}
    for name, encoder in (("random", RandomEncoder()), ("colour", ColourEncoder())):
        with OutputFolder(tmp_path / name) as out:
            summary = evaluate_retrieval(encoder, ucf, out, num_frames=4, title=name)
        everything = embed_videos(encoder if name == "colour" else RandomEncoder(), split.gallery + split.queries,
                                  num_frames=4)
        reference = _brute_force_r1(everything[20:], everything[:20], split)
        assert summary["R@1"] == pytest.approx(reference)
        results[name] = summary
        saved = json.loads((tmp_path / name / "retrieval.json").read_text())
        assert saved["R@1"] == summary["R@1"] and saved["queries"] == 10 and saved["gallery"] == 20
        with (tmp_path / name / "per_class.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        assert [r["class"] for r in rows] == split.classes
        assert np.mean([float(r["R@1"]) for r in rows]) == pytest.approx(summary["R@1"])  # 2 queries per class
        with Image.open(tmp_path / name / "confusion.png") as image:
            assert image.format == "PNG"
    assert results["random"]["chance_R@1"] == pytest.approx(0.2)
    assert results["random"]["R@1"] <= 0.5  # chance is 0.2
    assert results["colour"]["R@1"] == 1.0 and results["colour"]["R@5"] == 1.0
    assert results["random"]["R@20"] == 1.0  # the gallery has 20 videos: R@20 always finds one


def test_random_features_score_chance_at_scale():
    """2,000 queries over 10 classes with random features: R@1 within noise of 1/10; separating ones: 1."""
    rng = np.random.default_rng(1)

    class Split:
        classes = [str(c) for c in range(10)]
        gallery = [type("V", (), {"label": c % 10})() for c in range(1000)]
        queries = [type("V", (), {"label": c % 10})() for c in range(2000)]

    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    noise = score_retrieval(unit(rng.standard_normal((2000, 32))).astype(np.float32),
                            unit(rng.standard_normal((1000, 32))).astype(np.float32), Split, block=300)
    assert abs(noise["recall"]["R@1"] - 0.1) < 0.03
    centres = rng.standard_normal((10, 32)) * 5
    q = unit(centres[np.arange(2000) % 10] + rng.standard_normal((2000, 32))).astype(np.float32)
    g = unit(centres[np.arange(1000) % 10] + rng.standard_normal((1000, 32))).astype(np.float32)
    separated = score_retrieval(q, g, Split, block=300)
    assert separated["recall"]["R@1"] > 0.99
    assert separated["confusion"].trace() == round(separated["recall"]["R@1"] * 2000)


def test_blockwise_topk_equals_the_full_matrix_on_500_videos():
    rng = np.random.default_rng(2)
    embeddings = rng.standard_normal((500, 48)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    queries, gallery = embeddings[:200], embeddings[200:]
    full = queries @ gallery.T
    reference = np.argsort(-full, axis=1, kind="stable")[:, :20]
    for block in (7, 64, 1024):
        indices, scores = topk_neighbours(queries, gallery, 20, block=block)
        assert (indices == reference).all()
        assert np.allclose(scores, np.take_along_axis(full, reference, axis=1))
    duplicated = np.concatenate([gallery[:5], gallery[:5]])  # equal scores: the lower index first
    indices, _ = topk_neighbours(gallery[:5], duplicated, 2, block=3)
    assert indices.tolist() == [[i, i + 5] for i in range(5)]


def test_peak_memory_at_20000_gallery_videos_is_linear():
    """20,000 gallery and 4,000 query videos, D = 768: the similarities alone would take 320 MB."""
    queries, gallery = 4000, 20000
    tracemalloc.start()
    rng = np.random.default_rng(3)
    g = rng.standard_normal((gallery, 768), dtype=np.float32)
    q = rng.standard_normal((queries, 768), dtype=np.float32)
    embeddings = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    indices, _ = topk_neighbours(q, g, 20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"embeddings {embeddings / 2**20:.1f} MiB, peak while ranking {peak / 2**20:.1f} MiB")
    assert indices.shape == (queries, 20)
    assert peak < 2**30  # under 1 GB, embeddings included
    assert peak - embeddings < queries * gallery * 4 / 10  # far below one full similarity matrix


def test_cli_retrieval_adapter_and_base(tmp_path):
    ucf = write_ucf101(tmp_path / "UCF101", train=2, test=1, classes=2)
    model = save_backbone("vit", tmp_path / "vit")
    from co_settle_hf import CoSettleModel

    CoSettleModel.from_backbone(str(model)).save_pretrained(tmp_path / "adapter")
    common = ["--data-root", str(ucf), "--device", "cpu", "--num-frames", "2"]
    rows = cli_main(["retrieval", "--model", str(tmp_path / "adapter"), "--output-dir", str(tmp_path / "a"), *common,
                     "--feature-cache", str(tmp_path / "cache")])
    summary = json.loads((tmp_path / "a" / "retrieval.json").read_text())
    assert rows[str(tmp_path / "adapter")]["R@1"] == summary["R@1"] and summary["embedding"] == "projected"
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 6  # one embedding per video
    base = cli_main(["retrieval", "--model", str(tmp_path / "adapter"), "--embedding", "base",
                     "--output-dir", str(tmp_path / "b"), *common])
    both = cli_main(["retrieval", "--model", str(model), "--model", str(tmp_path / "adapter"),
                     "--output-dir", str(tmp_path / "c"), *common, "--feature-cache", str(tmp_path / "cache")])
    assert base[str(tmp_path / "adapter")]["R@1"] == both[str(model)]["R@1"]  # the base is the bare backbone
    assert both[str(tmp_path / "adapter")] == rows[str(tmp_path / "adapter")]  # from the cache
    with (tmp_path / "c" / "comparison.csv").open() as handle:
        table = list(csv.DictReader(handle))
    with (tmp_path / "a" / "per_class.csv").open() as handle:
        adapted = {r["class"]: r["R@1"] for r in csv.DictReader(handle)}
    assert [r["item"] for r in table] == ["mean (R@1)", "Class0", "Class1"]
    assert {r["item"]: float(r[f"R@1 {tmp_path / 'adapter'}"]) for r in table[1:]} == {
        k: float(v) for k, v in adapted.items()}
    with pytest.raises(SystemExit, match="--embedding base needs an adapter"):
        cli_main(["retrieval", "--model", str(model), "--embedding", "base", "--output-dir", str(tmp_path / "d"), *common])
