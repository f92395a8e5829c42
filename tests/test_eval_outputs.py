"""Evaluation never writes outside --output-dir, never over data or earlier results, and names bad files."""

from __future__ import annotations

import hashlib
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from eval_fixtures import (
    DAVIS_H,
    DAVIS_W,
    ColourEncoder,
    davis_sequence_ids,
    save_palette_png,
    tradeoff_videos,
    write_davis,
    write_jhmdb,
    write_tradeoff_clips,
    write_vip,
)
from eval_fixtures import eval_cli as cli_main
from tiny_backbones import save_backbone

from co_settle_hf.evaluation.davis import evaluate_davis, list_davis_sequences
from co_settle_hf.evaluation.outputs import OutputFolder, check_name
from co_settle_hf.evaluation.vip import list_vip_videos


def digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` (relative path -> sha256), to show nothing changed."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def davis(tmp_path) -> Path:
    write_davis(tmp_path / "DAVIS")
    return tmp_path / "DAVIS"


def run(data, out, **kwargs):
    return evaluate_davis(ColourEncoder(), data, out, size=(DAVIS_H, DAVIS_W), n_context=3, radius=4, progress=False,
                          **kwargs)


# ----------------------------------------------------------------------------- item 1: confinement


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "separator"])
def test_a_sequence_name_that_leaves_the_output_folder_is_an_error_naming_the_line(davis, tmp_path, kind):
    # A complete sequence elsewhere on disk: the old code read it AND wrote its predictions over its
    # ground truth (output_dir / "/abs" is "/abs").
    victim = tmp_path / "victim"
    shutil.copytree(davis / "JPEGImages" / "480p" / "alpha", victim)
    for png in (davis / "Annotations" / "480p" / "alpha").glob("*.png"):
        shutil.copy(png, victim)
    before = digest(tmp_path / "victim")
    name = {"absolute": str(victim), "dotdot": "../../../victim", "separator": "alpha/../beta"}[kind]
    split = davis / "ImageSets" / "2017" / "val.txt"
    split.write_text(f"alpha\n{name}\n")
    with pytest.raises(ValueError, match=re.escape(f"{split}, line 2")):
        run(davis, tmp_path / "out")
    assert digest(victim) == before and not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="--sequences"):
        list_davis_sequences(davis, sequences=["alpha", name])


def test_vip_list_names_are_plain(tmp_path):
    write_vip(tmp_path / "VIP", "videos1")
    (tmp_path / "VIP" / "lists").mkdir()
    listing = tmp_path / "VIP" / "lists" / "val_videos.txt"
    listing.write_text("videos1\n../../videos1\n")
    with pytest.raises(ValueError, match=re.escape(f"{listing}, line 2")):
        list_vip_videos(tmp_path / "VIP")


@pytest.mark.parametrize("where", ["inside", "same", "around"])
def test_an_output_dir_overlapping_the_data_root_is_refused(tmp_path, where):
    root = tmp_path / "data" / "DAVIS"
    write_davis(root)
    before = digest(root)
    out = {"inside": root / "Annotations" / "480p", "same": root, "around": tmp_path / "data"}[where]
    with pytest.raises(ValueError, match="overlaps the data root"):
        run(root, out, overwrite=True)
    assert digest(root) == before  # the old code re-wrote the ground truth with predictions


def test_the_output_folder_confines_every_path(tmp_path):
    with OutputFolder(tmp_path / "out") as out:
        out.path("seq", "00000.png").write_text("ok")
        for parts in (("..", "x"), ("/etc/passwd",), ("a", "..", "..", "x"), (".",)):
            with pytest.raises(ValueError, match="leaves the output folder"):
                out.path(*parts)
        (out.root / "link").symlink_to(tmp_path)
        with pytest.raises(ValueError, match="leaves the output folder"):
            out.path("link", "x")
    assert (tmp_path / "out" / "seq" / "00000.png").read_text() == "ok"
    for name in ("", ".", "..", "a/b", "/a", "a\\b"):
        with pytest.raises(ValueError, match="plain name"):
            check_name(name, "list.txt, line 1")


def test_existing_results_are_refused_unless_overwrite_and_replaced_whole(davis, tmp_path):
    out = tmp_path / "out"
    run(davis, out)
    (out / "stray.txt").write_text("from an earlier run")
    before = digest(out)
    with pytest.raises(ValueError, match="already holds results.*--overwrite"):
        run(davis, out)
    assert digest(out) == before
    run(davis, out, sequences=["beta"], overwrite=True)
    assert not (out / "stray.txt").exists() and not (out / "alpha").exists() and (out / "beta").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DAVIS", "out"]  # no staging folder left behind


def test_a_failed_run_leaves_the_previous_results_intact(davis, tmp_path):
    out = tmp_path / "out"
    run(davis, out)
    before = digest(out)
    jpeg = davis / "JPEGImages" / "480p" / "beta" / "00003.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])  # truncated: fails after alpha is written
    with pytest.raises(ValueError, match=re.escape(str(jpeg))):
        run(davis, out, overwrite=True)
    assert digest(out) == before  # no new masks beside the old summary.json
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DAVIS", "out"]


# ----------------------------------------------------------------------------- the four commands


@pytest.fixture(scope="module")
def cli_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval_outputs")
    save_backbone("vit", root / "vit")
    write_davis(root / "DAVIS")
    write_jhmdb(root / "jhmdb", "walk/clip_a")
    write_vip(root / "VIP", "videos1")
    (root / "VIP" / "lists").mkdir()
    (root / "VIP" / "lists" / "val_videos.txt").write_text("videos1\n")
    write_tradeoff_clips(root / "clips", tradeoff_videos(2))
    return root


TASKS = {"davis": ("DAVIS", ["--size", "64", "96"]), "jhmdb": ("jhmdb", ["--size", "48", "80"]),
         "vip": ("VIP", ["--long-side", "64"]), "tradeoff": ("clips", [])}


@pytest.mark.parametrize("task", list(TASKS))
def test_every_command_refuses_overlap_and_existing_results_and_overwrites_on_request(cli_data, tmp_path, task):
    folder, extra = TASKS[task]
    data = cli_data / folder
    argv = [task, "--model", str(cli_data / "vit"), "--data-root", str(data), "--device", "cpu", *extra]
    data_before = digest(data)
    with pytest.raises(SystemExit, match="overlaps the data root"):
        cli_main([*argv, "--output-dir", str(data / "results")])
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("earlier results")
    with pytest.raises(SystemExit, match="already holds results"):
        cli_main([*argv, "--output-dir", str(out)])
    assert (out / "old.txt").is_file()
    cli_main([*argv, "--output-dir", str(out), "--overwrite"])
    assert not (out / "old.txt").exists() and (out / "results.json").is_file()
    assert digest(data) == data_before


# ----------------------------------------------------------------------------- item 4: object ids


def test_a_stray_label_in_the_first_frame_is_an_error_naming_the_file(davis, tmp_path):
    first = davis / "Annotations" / "480p" / "alpha" / "00000.png"
    ids = davis_sequence_ids(0, 0)
    ids[0, 0] = 200  # one stray pixel: the old code counted 200 objects, 198 of them empty (J = F = 1)
    save_palette_png(first, ids)
    with pytest.raises(ValueError, match=re.escape(str(first)) + r".*\[1, 2, 200\].*label 200"):
        run(davis, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_label_beyond_the_first_frames_objects_is_an_error_naming_the_file(davis, tmp_path):
    later = davis / "Annotations" / "480p" / "beta" / "00002.png"
    ids = davis_sequence_ids(2, 1)
    ids[ids == 2] = 3
    save_palette_png(later, ids)
    with pytest.raises(ValueError, match=re.escape(str(later)) + r".*label 3.*objects 1\.\.2"):
        run(davis, tmp_path / "out")


def write_short_palette_png(path: Path, ids: np.ndarray, palette: bytes) -> None:
    """An 8-bit palette PNG whose palette may hold fewer colours than its pixels use (PIL will not write one)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + row.tobytes() for row in ids.astype(np.uint8))
    header = struct.pack(">IIBBBBB", ids.shape[1], ids.shape[0], 8, 3, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"PLTE", palette)
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_a_label_outside_the_palette_is_an_error_naming_the_file(davis, tmp_path):
    first = davis / "Annotations" / "480p" / "alpha" / "00000.png"
    ids = davis_sequence_ids(0, 0)
    ids[0, 0] = 4
    write_short_palette_png(first, ids, bytes([0, 0, 0, 255, 0, 0, 0, 255, 0]))  # 3 colours: 4 has none
    with pytest.raises(ValueError, match=re.escape(str(first)) + r".*label 4, outside its 3-colour palette"):
        run(davis, tmp_path / "out")


def test_a_sequence_too_short_to_score_is_reported_not_dropped(davis, tmp_path):
    for kind, ext in (("JPEGImages", "jpg"), ("Annotations", "png")):
        folder = davis / kind / "480p" / "beta"
        for t in range(2, 5):
            (folder / f"{t:05d}.{ext}").unlink()
    summary = run(davis, tmp_path / "out")
    assert summary["too_short"] == {"beta": {"frames": 2, "needs": 3}}
    assert summary["num_sequences"] == 1 and list(summary["per_object"]) == ["alpha_1", "alpha_2"]


# ----------------------------------------------------------------------------- item 8: decode errors


def test_a_truncated_jpeg_is_named(davis, tmp_path):
    jpeg = davis / "JPEGImages" / "480p" / "alpha" / "00002.jpg"
    whole = jpeg.read_bytes()
    jpeg.write_bytes(whole[:500])  # cut inside the header: "Truncated File Read" without a name before
    with pytest.raises(ValueError, match=f"cannot read image {re.escape(str(jpeg))}: Truncated File Read"):
        run(davis, tmp_path / "out")
    jpeg.write_bytes(whole[:-100])  # cut inside the pixel data
    with pytest.raises(ValueError, match=f"cannot decode image {re.escape(str(jpeg))}: image file is truncated"):
        run(davis, tmp_path / "out")


def test_a_corrupt_annotation_is_named(davis, tmp_path):
    png = davis / "Annotations" / "480p" / "alpha" / "00002.png"
    png.write_bytes(png.read_bytes()[:80])
    with pytest.raises(ValueError, match=re.escape(str(png))):
        run(davis, tmp_path / "out")
