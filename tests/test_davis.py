"""DAVIS measures against a pixel-loop transcription, and the reader/evaluator on a tiny dataset."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from eval_fixtures import (  # the tiny DAVIS dataset, shared with test_eval_cli
    DAVIS_CELL as CELL,
)
from eval_fixtures import (
    DAVIS_H as H,
)
from eval_fixtures import (
    DAVIS_T as T,
)
from eval_fixtures import (
    DAVIS_W as W,
)
from eval_fixtures import (
    ColourEncoder,
    save_palette_png,
)
from eval_fixtures import (
    davis_sequence_ids as sequence_ids,
)
from eval_fixtures import (
    write_davis as write_dataset,
)
from PIL import Image

from co_settle_hf.evaluation.davis import (
    davis_palette,
    evaluate_davis,
    list_davis_sequences,
)
from co_settle_hf.evaluation.metrics import db_statistics, f_measure, jaccard
from co_settle_hf.evaluation.propagation import upsample_and_argmax

# ---------------------------------------------------------------------------------------
# Independent transcription of the DAVIS definitions, pixel by pixel.


def loop_jaccard(pred, gt, void):
    inter = union = 0
    for y in range(gt.shape[0]):
        for x in range(gt.shape[1]):
            if void[y][x]:
                continue
            inter += int(pred[y][x] and gt[y][x])
            union += int(pred[y][x] or gt[y][x])
    return 1.0 if union == 0 else inter / union


def loop_boundary(mask):
    """Pixel is on the boundary if it differs from an existing right / bottom / bottom-right pixel."""
    rows, cols = len(mask), len(mask[0])
    out = [[False] * cols for _ in range(rows)]
    for y in range(rows):
        for x in range(cols):
            for dy, dx in ((0, 1), (1, 0), (1, 1)):
                if y + dy < rows and x + dx < cols and mask[y][x] != mask[y + dy][x + dx]:
                    out[y][x] = True
    return out


def loop_dilate(edges, radius):
    rows, cols = len(edges), len(edges[0])
    out = [[False] * cols for _ in range(rows)]
    for y in range(rows):
        for x in range(cols):
            for yy in range(max(0, y - radius), min(rows, y + radius + 1)):
                for xx in range(max(0, x - radius), min(cols, x + radius + 1)):
                    if edges[yy][xx] and (yy - y) ** 2 + (xx - x) ** 2 <= radius**2:
                        out[y][x] = True
    return out


def loop_f_measure(pred, gt, void, bound_th=0.008):
    rows, cols = gt.shape
    radius = bound_th if bound_th >= 1 else math.ceil(bound_th * math.sqrt(rows**2 + cols**2))
    radius = int(radius)
    pb = loop_boundary([[bool(pred[y][x]) and not void[y][x] for x in range(cols)] for y in range(rows)])
    gb = loop_boundary([[bool(gt[y][x]) and not void[y][x] for x in range(cols)] for y in range(rows)])
    n_p = sum(map(sum, pb))
    n_g = sum(map(sum, gb))
    if n_p == 0 and n_g == 0:
        return 1.0
    if n_p == 0 or n_g == 0:
        return 0.0
    pd, gd = loop_dilate(pb, radius), loop_dilate(gb, radius)
    hits_p = sum(pb[y][x] and gd[y][x] for y in range(rows) for x in range(cols))
    hits_g = sum(gb[y][x] and pd[y][x] for y in range(rows) for x in range(cols))
    precision, recall = hits_p / n_p, hits_g / n_g
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def structured_cases():
    z = np.zeros((12, 17), dtype=bool)
    blob = z.copy()
    blob[3:8, 4:11] = True
    shifted = np.roll(blob, (1, 2), axis=(0, 1))
    dot, dot2 = z.copy(), z.copy()
    dot[5, 5] = True
    dot2[5, 9] = True
    corner = z.copy()
    corner[-1, -1] = True
    void = z.copy()
    void[:, 8:] = True
    return [
        ("empty pred", z, blob, None),
        ("empty gt", blob, z, None),
        ("both empty", z, z, None),
        ("one-pixel objects", dot, dot2, None),
        ("same dot", dot, dot, None),
        ("bottom-right corner pixel", corner, corner, None),
        ("full frame", ~z, ~z, None),
        ("shifted blob", shifted, blob, None),
        ("void half", shifted, blob, void),
        ("all void", shifted, blob, ~z),
    ]


@pytest.mark.parametrize("name, pred, gt, void", structured_cases(), ids=[c[0] for c in structured_cases()])
def test_measures_on_structured_masks(name, pred, gt, void):
    v = np.zeros_like(gt) if void is None else void
    assert jaccard(pred, gt, void) == pytest.approx(loop_jaccard(pred, gt, v), abs=1e-9)
    for th in (0.008, 0.15, 2, 5):
        assert f_measure(pred, gt, void, bound_th=th) == pytest.approx(loop_f_measure(pred, gt, v, th), abs=1e-9)


def test_structured_values_follow_davis_conventions():
    cases = {c[0]: c[1:] for c in structured_cases()}
    assert jaccard(*cases["both empty"]) == 1.0 and f_measure(*cases["both empty"]) == 1.0
    assert jaccard(*cases["empty pred"]) == 0.0 and f_measure(*cases["empty pred"]) == 0.0
    assert f_measure(*cases["empty gt"]) == 0.0
    assert f_measure(*cases["bottom-right corner pixel"]) == 1.0  # no boundary pixel at all
    assert jaccard(*cases["all void"]) == 1.0


@pytest.mark.parametrize("seed", range(6))
def test_measures_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(8, 24)), int(rng.integers(8, 30)))
    # Smooth-ish random blobs: threshold blurred noise so boundaries have structure.
    noise = rng.random((shape[0] + 2, shape[1] + 2))
    smooth = (noise[:-2, :-2] + noise[2:, 2:] + noise[1:-1, 1:-1]) / 3
    gt = smooth > 0.55
    pred = np.where(rng.random(shape) < 0.15, ~gt, gt)
    void = rng.random(shape) < 0.1 if seed % 2 else None
    v = np.zeros(shape, dtype=bool) if void is None else void
    th = [0.008, 0.1, 3][seed % 3]
    assert jaccard(pred, gt, void) == pytest.approx(loop_jaccard(pred, gt, v), abs=1e-9)
    assert f_measure(pred, gt, void, bound_th=th) == pytest.approx(loop_f_measure(pred, gt, v, th), abs=1e-9)
    # torch inputs give the same numbers
    tv = None if void is None else torch.from_numpy(void)
    assert jaccard(torch.from_numpy(pred), torch.from_numpy(gt), tv) == jaccard(pred, gt, void)
    assert f_measure(torch.from_numpy(pred), torch.from_numpy(gt), tv, th) == f_measure(pred, gt, void, th)


def test_f_measure_uses_the_diagonal_tolerance_on_a_large_frame():
    # 480 x 854: tolerance ceil(0.008 * 979.6) = 8 pixels. A square shifted by 8 pixels
    # still matches everywhere along its sides; shifted by 9 it no longer matches.
    gt = np.zeros((480, 854), dtype=bool)
    gt[100:300, 200:500] = True
    assert f_measure(np.roll(gt, 8, axis=1), gt) == 1.0
    assert f_measure(np.roll(gt, 9, axis=1), gt) < 0.7


def loop_statistics(values):
    n = len(values)
    mean = sum(values) / n
    recall = sum(1 for v in values if v > 0.5) / n
    starts = []
    for i in range(5):
        position = 1 + (n - 1) * i / 4  # linspace(1, n, 5)
        starts.append(int(math.floor(position + 0.5)) - 1)
    first = values[starts[0] : starts[1] + 1]
    last = values[starts[3] : starts[4] + 1]
    return mean, recall, sum(first) / len(first) - sum(last) / len(last)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 10, 37, 70, 300])
def test_db_statistics(n):
    values = list(np.random.default_rng(n).random(n))
    got = db_statistics(values)
    want = loop_statistics(values)
    for g, w in zip(got, want):
        assert g == pytest.approx(w, abs=1e-12)


def test_db_statistics_decay_sign_and_empty():
    falling = np.linspace(1.0, 0.0, 20)
    assert db_statistics(falling)[2] > 0
    assert db_statistics(falling[::-1])[2] < 0
    assert db_statistics(np.full(9, 0.7)) == pytest.approx((0.7, 1.0, 0.0))
    assert all(math.isnan(v) for v in db_statistics([]))


# ---------------------------------------------------------------------------------------
# A tiny dataset in the official layout.

@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "DAVIS"
    write_dataset(root)
    return root


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def oracle_masks(variant: int) -> np.ndarray:
    """The best any propagation can output: the true ids at the patch grid, upsampled the same way."""
    centre = slice(CELL // 2, None, CELL)
    grid = torch.from_numpy(np.stack([sequence_ids(t, variant)[centre, centre] for t in range(T)]))
    onehot = F.one_hot(grid.long(), 3).permute(0, 3, 1, 2).float()
    return upsample_and_argmax(onehot, (H, W)).numpy()


def test_evaluate_davis_end_to_end(dataset, tmp_path):
    out = tmp_path / "out"
    summary = evaluate_davis(ColourEncoder(), dataset, out, size=(H, W), n_context=3, radius=4, progress=False)
    palette = davis_palette().reshape(-1).tolist()
    for variant, name in enumerate(("alpha", "beta")):
        best = oracle_masks(variant)
        for t in range(T):
            with Image.open(out / name / f"{t:05d}.png") as png:
                assert png.mode == "P"
                assert png.getpalette()[:9] == palette[:9]
                ids = np.array(png)
            # Frame 0 is the annotation; later frames are exact at the patch grid, so they
            # equal the oracle (whose only pixel errors are rounded rectangle corners).
            assert np.array_equal(ids, sequence_ids(t, variant) if t == 0 else best[t])
    # Distinct colours and block-aligned objects: only those corners are lost.
    assert 0.9 < summary["J&F-Mean"] < 1.0
    assert summary["num_sequences"] == 2 and summary["num_objects"] == 4
    assert summary["J-Recall"] == 1.0 and summary["F-Recall"] == 1.0

    rows = read_csv(out / "per-sequence_results-val.csv")
    assert [r["Sequence"] for r in rows] == ["alpha_1", "alpha_2", "beta_1", "beta_2"]
    for r in rows:
        assert r["J-Mean"] == f"{summary['per_object'][r['Sequence']]['J-Mean']:.3f}"
        assert r["F-Mean"] == f"{summary['per_object'][r['Sequence']]['F-Mean']:.3f}"
    (global_row,) = read_csv(out / "global_results-val.csv")
    assert list(global_row) == ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
    assert global_row["J&F-Mean"] == f"{summary['J&F-Mean']:.3f}"
    saved = json.loads((out / "summary.json").read_text())
    assert saved["J&F-Mean"] == summary["J&F-Mean"] and saved["settings"]["size"] == [H, W]


def test_scores_are_those_of_the_written_masks(dataset, tmp_path):
    """A coarse, shifted input size makes errors; the CSV must score the PNGs it wrote."""
    out = tmp_path / "out"
    summary = evaluate_davis(ColourEncoder(), dataset, out, size=(36, 52), n_context=2, radius=2, topk=3,
                             sequences=["beta"], progress=False)
    rows = {r["Sequence"]: r for r in read_csv(out / "per-sequence_results-val.csv")}
    assert set(rows) == {"beta_1", "beta_2"}
    j_means, f_means = [], []
    for obj in (1, 2):
        js, fs = [], []
        for t in range(1, T - 1):  # first and last frame excluded
            pred = np.array(Image.open(out / "beta" / f"{t:05d}.png")) == obj
            gt = sequence_ids(t, 1) == obj
            js.append(jaccard(pred, gt))
            fs.append(f_measure(pred, gt))
        assert float(rows[f"beta_{obj}"]["J-Mean"]) == pytest.approx(np.mean(js), abs=5e-4)
        assert float(rows[f"beta_{obj}"]["F-Mean"]) == pytest.approx(np.mean(fs), abs=5e-4)
        j_means.append(np.mean(js))
        f_means.append(np.mean(fs))
    assert summary["J&F-Mean"] == pytest.approx((np.mean(j_means) + np.mean(f_means)) / 2, abs=1e-12)
    assert summary["J&F-Mean"] < 1.0  # the coarse grid does cost something
    assert summary["settings"]["size"] == [32, 48]  # rounded down to whole patches


def test_void_pixels_are_not_scored(tmp_path):
    root = tmp_path / "DAVIS"
    write_dataset(root, names=("alpha",))
    gt = np.stack([sequence_ids(t, 0) for t in range(T)])
    gt[2, :, 20:36] = 255  # void over a band of frame 2 that covers half of object 1
    save_palette_png(root / "Annotations" / "480p" / "alpha" / "00002.png", gt[2])
    summary = evaluate_davis(ColourEncoder(), root, tmp_path / "out", size=(H, W), n_context=3, radius=4,
                             save_masks=False, progress=False)
    assert not (tmp_path / "out" / "alpha").exists()
    pred = oracle_masks(0)  # what the run predicts (see the end-to-end test)
    for obj in (1, 2):
        scored = [jaccard(pred[t] == obj, gt[t] == obj, gt[t] == 255) for t in range(1, T - 1)]
        assert summary["per_object"][f"alpha_{obj}"]["J-Mean"] == pytest.approx(np.mean(scored), abs=1e-12)
    # Counting void as background would have cost object 1 half of frame 2.
    void_as_background = [jaccard(pred[t] == 1, gt[t] == 1) for t in range(1, T - 1)]
    assert summary["per_object"]["alpha_1"]["J-Mean"] > np.mean(void_as_background) + 0.1


def test_bad_inputs_name_the_file(dataset, tmp_path):
    encoder, out = ColourEncoder(), tmp_path / "out"

    with pytest.raises(FileNotFoundError, match="ghost"):
        evaluate_davis(encoder, dataset, out, sequences=["alpha", "ghost"], progress=False)

    mask = dataset / "Annotations" / "480p" / "beta" / "00003.png"
    save_palette_png(mask, np.zeros((H, W + 2), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"beta/00003\.png"):
        list_davis_sequences(dataset)

    mask.unlink()
    with pytest.raises(ValueError, match=r"Annotations/480p/beta.*00003"):
        list_davis_sequences(dataset)

    Image.fromarray(np.zeros((H, W, 3), dtype=np.uint8)).save(mask)  # RGB, not object ids
    with pytest.raises(ValueError, match=r"beta/00003\.png.*mode RGB"):
        evaluate_davis(encoder, dataset, out, sequences=["beta"], progress=False)

    (dataset / "ImageSets" / "2017" / "val.txt").write_text("\n")
    with pytest.raises(ValueError, match=r"ImageSets/2017/val\.txt"):
        evaluate_davis(encoder, dataset, out, progress=False)
    (dataset / "ImageSets" / "2017" / "val.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"val\.txt"):
        list_davis_sequences(dataset)

    first = dataset / "Annotations" / "480p" / "alpha" / "00000.png"
    save_palette_png(first, np.zeros((H, W), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"alpha/00000\.png.*no object"):
        evaluate_davis(encoder, dataset, out, sequences=["alpha"], progress=False)

    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_davis_sequences(tmp_path / "nowhere")
