"""PEA: upsampled size, interpolate-and-crop and offset sampling (SPEC section 2)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from co_settle_hf.objective import (
    crop_windows,
    interpolate_and_crop,
    sample_pea_offsets,
    upsampled_size,
)


def test_upsampled_size_truncates_like_python_int():
    assert upsampled_size(14, 14, 10) == (154, 154)
    assert upsampled_size(14, 14, 0.5) == (21, 21)
    assert upsampled_size(7, 5, 1.5) == (17, 12)
    assert upsampled_size(16, 16, 0) == (16, 16)
    assert upsampled_size(25, 3, 0.16) == (28, 3)  # 1.16 * 25 is 28.999... in floating point


def test_alpha_zero_returns_the_grid_without_interpolating(monkeypatch):
    grid = torch.randn(5, 7, 6)

    def forbidden(*args, **kwargs):
        raise AssertionError("F.interpolate must not run when alpha == 0")

    monkeypatch.setattr(F, "interpolate", forbidden)
    out = interpolate_and_crop(grid, 0.0, (0, 0))
    assert out.shape == (1, 5, 7, 6)
    assert torch.equal(out[0], grid)
    with pytest.raises(ValueError, match="outside"):
        interpolate_and_crop(grid, 0.0, (1, 0))


@pytest.mark.parametrize("h, w, alpha", [(4, 4, 0.5), (5, 7, 1.5), (3, 6, 10)])
def test_crop_equals_direct_interpolate_then_slice(h, w, alpha):
    g = torch.Generator().manual_seed(h * w)
    grid = torch.randn(h, w, 8, generator=g)
    big_h, big_w = upsampled_size(h, w, alpha)
    direct = F.interpolate(
        grid.permute(2, 0, 1)[None], size=(big_h, big_w), mode="bicubic", align_corners=False
    )[0].permute(1, 2, 0)
    offsets = torch.tensor([[0, 0], [big_h - h, big_w - w], [(big_h - h) // 3, big_w - w]])
    out = interpolate_and_crop(grid, alpha, offsets)
    assert out.shape == (3, h, w, 8)
    for k, (r, c) in enumerate(offsets.tolist()):
        torch.testing.assert_close(out[k], direct[r : r + h, c : c + w], atol=1e-6, rtol=0)
    assert not torch.allclose(out[0], out[1])


def test_half_precision_grid_upsampled_in_float32_and_cast_back():
    grid = torch.randn(4, 6, 8).bfloat16()
    out = interpolate_and_crop(grid, 1.0, (2, 3))
    assert out.dtype == torch.bfloat16
    expected = interpolate_and_crop(grid.float(), 1.0, (2, 3)).bfloat16()
    assert torch.equal(out, expected)


def test_crop_windows_carries_trailing_dims_and_accepts_tuples():
    big = torch.arange(6 * 8 * 2).reshape(6, 8, 2)
    out = crop_windows(big, torch.tensor([[1, 2], [3, 0]]), (3, 4))
    assert out.shape == (2, 3, 4, 2)
    assert torch.equal(out[0], big[1:4, 2:6]) and torch.equal(out[1], big[3:6, 0:4])
    flat = torch.arange(30).reshape(5, 6)
    assert torch.equal(crop_windows(flat, (2, 1), (3, 5))[0], flat[2:5, 1:6])
    assert torch.equal(crop_windows(flat, torch.tensor([0, 1]), (2, 2))[0], flat[0:2, 1:3])


@pytest.mark.parametrize("bad", [(-1, 0), (0, 3), (4, 0)])
def test_crop_windows_rejects_out_of_bounds(bad):
    with pytest.raises(ValueError, match="outside"):
        crop_windows(torch.zeros(6, 8), bad, (3, 6))


def test_crop_rejects_bad_arguments():
    grid = torch.randn(4, 4, 3)
    with pytest.raises(ValueError, match="alpha"):
        interpolate_and_crop(grid, -0.5, (0, 0))
    with pytest.raises(ValueError, match="pos_grid"):
        interpolate_and_crop(grid[0], 1.0, (0, 0))
    with pytest.raises(ValueError, match="offsets"):
        interpolate_and_crop(grid, 1.0, torch.tensor([[0.5, 1.0]]))
    with pytest.raises(ValueError, match="offsets"):
        interpolate_and_crop(grid, 1.0, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="size"):
        crop_windows(grid, (0, 0), (0, 2))


@pytest.mark.parametrize("mode", ["random", "center", "edge"])
@pytest.mark.parametrize("grid, alpha", [((4, 4), 0.5), ((7, 5), 1.5), ((14, 14), 10)])
def test_offsets_in_bounds_and_seeded(mode, grid, alpha):
    big_h, big_w = upsampled_size(*grid, alpha)
    max_r, max_c = big_h - grid[0], big_w - grid[1]
    a = sample_pea_offsets(300, grid, alpha, mode, generator=torch.Generator().manual_seed(3))
    b = sample_pea_offsets(300, grid, alpha, mode, generator=torch.Generator().manual_seed(3))
    assert a.shape == (300, 2) and a.dtype == torch.long
    assert torch.equal(a, b)
    assert (a[:, 0] >= 0).all() and (a[:, 0] <= max_r).all()
    assert (a[:, 1] >= 0).all() and (a[:, 1] <= max_c).all()
    if mode == "center":
        assert (a == torch.tensor([max_r // 2, max_c // 2])).all()
    if mode == "edge":
        touches = (a[:, 0] == 0) | (a[:, 0] == max_r) | (a[:, 1] == 0) | (a[:, 1] == max_c)
        assert touches.all()
        assert len({tuple(o) for o in a.tolist()}) > 5
    if mode == "random":
        if max_r <= 10:  # 300 uniform draws over a few values hit them all
            assert set(a[:, 0].tolist()) == set(range(max_r + 1))
        assert a[:, 0].max() > max_r // 2 and a[:, 1].min() < max_c // 2
    # every sampled offset is usable by the crop
    grid_emb = torch.randn(*grid, 2)
    assert interpolate_and_crop(grid_emb, alpha, a[:4]).shape == (4, *grid, 2)


def test_offsets_with_alpha_zero_are_origin_and_device_respected():
    out = sample_pea_offsets(5, (6, 6), 0, "edge", device="cpu")
    assert torch.equal(out, torch.zeros(5, 2, dtype=torch.long))
    assert out.device.type == "cpu"


def test_offsets_reject_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        sample_pea_offsets(1, (4, 4), 1.0, "multi")
    with pytest.raises(ValueError, match="num"):
        sample_pea_offsets(0, (4, 4), 1.0)
    with pytest.raises(ValueError, match="grid"):
        sample_pea_offsets(1, (4,), 1.0)
    with pytest.raises(ValueError, match="alpha"):
        sample_pea_offsets(1, (4, 4), -1.0)
