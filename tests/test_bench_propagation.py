"""`co-settle bench --sections prop`: the rate rows, and the external-loop rows with and without a file."""

from __future__ import annotations

import pytest

from co_settle_hf.benchmark import bench_propagation, cpu_model


def test_rows_without_and_with_an_external_loop(tmp_path):
    rows = dict((name, value) for _, name, value in bench_propagation(4, (3, 5), 16, 2))
    assert rows["CropMAE's released loop (--cropmae-path)"] == "not available"
    share = rows["propagation / matmul rate (goal >= 85 %)"]
    assert share.endswith("2 runs)") and float(share.split()[0]) > 0
    # A stand-in for the external file: a loop that is ours, slightly perturbed, must read "yes" and a
    # difference; a broken one (labels shuffled) must read "NO".
    external = tmp_path / "loop.py"
    external.write_text(
        "from co_settle_hf.evaluation.propagation import propagate_labels\n"
        "def propagate(features, first_labels, n_context, topk, temperature, radius):\n"
        "    out = propagate_labels(features, first_labels, n_context=n_context, topk=topk, temperature=temperature, radius=radius)\n"
        "    return out + 1e-7 if SAME else out.roll(1, dims=1)\n"
        "SAME = True\n")
    rows = dict((name, value) for _, name, value in bench_propagation(4, (3, 5), 16, 1, str(external)))
    assert rows["CropMAE's loop vs ours: hard labels identical, max soft difference"].startswith("yes, 1.")
    external.write_text(external.read_text().replace("SAME = True", "SAME = False"))
    rows = dict((name, value) for _, name, value in bench_propagation(4, (3, 5), 16, 1, str(external)))
    assert rows["CropMAE's loop vs ours: hard labels identical, max soft difference"].startswith("NO")
    with pytest.raises(FileNotFoundError, match="cropmae-path"):
        bench_propagation(4, (3, 5), 16, 1, str(tmp_path / "missing.py"))
    assert cpu_model()
