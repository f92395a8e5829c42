"""Point tracking by matching (tracking.py), TAP-Vid queries (tapvid.py) and the TAP-Vid readers (tapvid_data.py)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from eval_fixtures import TAPVID_SIZE, PatchPixelEncoder, tapvid_video, write_tapvid_npz, write_tapvid_pickle

from co_settle_hf.cli import run
from co_settle_hf.evaluation.features import extract_video_features
from co_settle_hf.evaluation.tapvid import sample_queries
from co_settle_hf.evaluation.tapvid_data import list_tapvid_videos, read_tapvid_pickle
from co_settle_hf.evaluation.tapvid_metrics import METRIC_SIZE, tapvid_metrics
from co_settle_hf.evaluation.tracking import TrackingSettings, _refine, sample_features, track_points


def test_sampling_is_exact_at_cell_centres_and_bilinear_between():
    fmap = torch.zeros(2, 4, 2)
    fmap[0, 1] = torch.tensor([1.0, 0.0])
    fmap[0, 2] = torch.tensor([0.0, 1.0])
    centre = torch.tensor([[1.5 / 4, 0.5 / 2]])  # column 1, row 0
    assert torch.allclose(sample_features(fmap, centre), torch.tensor([[1.0, 0.0]]))
    between = torch.tensor([[2.0 / 4, 0.5 / 2]])  # half-way between columns 1 and 2
    assert torch.allclose(sample_features(fmap, between), torch.tensor([[1.0, 1.0]]) / 2 ** 0.5)


def test_soft_argmax_refines_below_a_cell_and_ignores_far_look_alikes():
    sim = torch.full((1, 5, 8), -1.0)
    sim[0, 2, 3] = sim[0, 2, 4] = 0.9  # two equal neighbours: the midpoint, half a cell off either centre
    sim[0, 0, 0] = 0.85  # a look-alike far away, outside the window of the maximum
    xy, best = _refine(sim, TrackingSettings(window=3))
    assert best.item() == pytest.approx(0.9)
    assert xy[0].tolist() == pytest.approx([4.0 / 8, 2.5 / 5], abs=1e-6)
    single = torch.full((1, 5, 8), -1.0)
    single[0, 4, 7] = 0.8  # a corner: cells outside the grid take no part
    xy, _ = _refine(single, TrackingSettings())
    assert xy[0].tolist() == pytest.approx([7.5 / 8, 4.5 / 5], abs=1e-6)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="odd"):
        TrackingSettings(window=4)
    with pytest.raises(ValueError, match="temperature"):
        TrackingSettings(temperature=0)
    assert TrackingSettings().with_values(temperature=0.1, window=None).as_dict() == {
        "window": 5, "temperature": 0.1, "occlusion_threshold": 0.5}


class RandomEncoder(PatchPixelEncoder):
    """The control: features that ignore the image."""

    def __call__(self, pixel_values):
        g = torch.Generator().manual_seed(int(pixel_values.shape[0]))
        b, _, h, w = pixel_values.shape
        return torch.randn(b, h // 8, w // 8, 32, generator=g)


def track_generated(encoder, mode: str, settings: TrackingSettings = TrackingSettings()) -> dict[str, float]:
    data = tapvid_video(seed=1, num_points=40)
    features = extract_video_features(encoder, torch.from_numpy(data["video"]), size=(256, 256))  # a 32 x 32 grid
    queries, ids = sample_queries(data["points"], data["occluded"], mode)
    tracks, occluded = track_points(features, torch.from_numpy(queries).float(), settings)
    return tapvid_metrics(queries[:, 0], data["occluded"][ids], data["points"][ids] * METRIC_SIZE,
                          occluded.numpy(), tracks.numpy() * METRIC_SIZE, mode)


@pytest.mark.parametrize("mode", ["first", "strided"])
def test_known_motion_is_tracked_far_above_random_features(mode):
    real, control = track_generated(PatchPixelEncoder(), mode), track_generated(RandomEncoder(), mode)
    assert real["average_jaccard"] > 0.5 and control["average_jaccard"] < 0.05
    assert real["pts_within_8"] > 0.85 and control["pts_within_16"] < 0.05  # 8 px at 256 = half a 128 px frame's patch
    assert real["occlusion_accuracy"] > 0.9  # the grey square matches nothing
    coarse = track_generated(PatchPixelEncoder(), mode, TrackingSettings(window=1))  # argmax alone: cell centres
    assert real["pts_within_2"] > coarse["pts_within_2"] + 0.1


def test_queries_follow_the_two_protocols():
    occluded = np.array([[True, False, False, False, False, False, True],
                         [True, True, True, True, True, True, True],
                         [False, True, True, True, True, False, False]])
    points = np.arange(3 * 7 * 2, dtype=float).reshape(3, 7, 2)
    queries, ids = sample_queries(points, occluded, "first")
    assert ids.tolist() == [0, 2] and queries[:, 0].tolist() == [1, 0]  # the never-visible track is dropped
    assert queries[0, 1:].tolist() == points[0, 1].tolist()
    queries, ids = sample_queries(points, occluded, "strided")
    assert list(zip(queries[:, 0].tolist(), ids.tolist())) == [(0, 2), (5, 0), (5, 2)]  # frames 0 and 5


def test_pickle_and_npz_layouts_read_the_same(tmp_path):
    pkl = write_tapvid_pickle(tmp_path / "tapvid_davis.pkl")
    npz = write_tapvid_npz(tmp_path / "npz")
    from_pickle, from_npz = list_tapvid_videos(pkl), list_tapvid_videos(npz)
    assert [v.name for v in from_pickle] == [v.name for v in from_npz] == ["bear", "cows"]
    for a, b in zip(from_pickle, from_npz):
        assert a.frame_size == b.frame_size == (TAPVID_SIZE, TAPVID_SIZE) and a.num_frames == b.num_frames
        assert torch.equal(a.read_all(), b.read_all())
        assert np.array_equal(a.points, b.points) and np.array_equal(a.occluded, b.occluded)
    written = run("convert-tapvid", [str(pkl), str(tmp_path / "converted")])  # the command: co-settle convert-tapvid PKL DIR
    assert [p.name for p in written] == ["bear.npz", "cows.npz"]
    for a, c in zip(from_pickle, list_tapvid_videos(tmp_path / "converted")):
        assert torch.equal(a.read_all(), c.read_all()) and np.array_equal(a.points, c.points)
    assert [v.name for v in list_tapvid_videos(npz, videos=["cows"])] == ["cows"]


class Evil:
    def __reduce__(self):
        return (print, ("this ran while unpickling",))


def test_a_pickle_naming_another_global_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"bear": {**tapvid_video(), "extra": Evil()}}))
    with pytest.raises(ValueError, match=rf"{path}: the pickle names builtins.print"):
        read_tapvid_pickle(path)
    assert "this ran" not in capsys.readouterr().out


def test_bad_data_names_the_file(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    data = tapvid_video()
    np.savez(bad / "bear.npz", video=data["video"], points=data["points"][:, :3], occluded=data["occluded"])
    with pytest.raises(ValueError, match=r"bear.npz: points of 'bear' must be \(N, 6, 2\)"):
        list_tapvid_videos(bad)
    np.savez(bad / "bear.npz", points=data["points"], occluded=data["occluded"])
    with pytest.raises(ValueError, match=r"bear.npz: no array 'video'"):
        list_tapvid_videos(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no .npz"):
        list_tapvid_videos(tmp_path / "empty")
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match="list.pkl: expected a non-empty dict"):
        list_tapvid_videos(tmp_path / "list.pkl")
