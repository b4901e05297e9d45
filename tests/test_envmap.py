"""Environment maps: file round trips, validation errors, energy-preserving resampling, rotation."""

from __future__ import annotations

import numpy as np
import pytest

import rendering.envmap as envmap_module
from rendering.envmap import (
    direction_to_uv,
    envmap_power,
    pixel_directions,
    pixel_solid_angles,
    read_envmap,
    resample_envmap,
    rotate_envmap,
    row_edges,
    uv_to_direction,
    validate_envmap,
)
from rendering.errors import InputError
from rendering.hdrio import read_hdr, tonemap, write_exr, write_preview


def test_exr_round_trip_is_exact(tmp_path, rng):
    envmap = (rng.random((16, 32, 3)) * 1e4).astype(np.float32)
    path = write_exr(tmp_path / "env.exr", envmap)
    np.testing.assert_array_equal(read_envmap(path), envmap)
    assert not list(tmp_path.glob(".env.*")), "no temporary file may be left behind"


def test_radiance_hdr_is_read_within_rgbe_precision(tmp_path, rng):
    from rendering.variant import ensure_variant

    envmap = (rng.random((8, 16, 3)) * 50 + 0.01).astype(np.float32)
    ensure_variant().Bitmap(envmap).write(str(tmp_path / "env.hdr"))
    read = read_envmap(tmp_path / "env.hdr")
    # RGBE keeps an 8-bit mantissa per channel relative to the largest channel.
    np.testing.assert_allclose(read, envmap, rtol=0, atol=envmap.max(axis=2, keepdims=True).max() / 128)


def test_grey_and_alpha_channels_become_rgb(tmp_path, rng):
    grey = rng.random((4, 8, 1)).astype(np.float32)
    write_exr(tmp_path / "grey.exr", grey[:, :, 0])
    np.testing.assert_array_equal(read_hdr(tmp_path / "grey.exr"), np.repeat(grey, 3, axis=2))
    rgba = rng.random((4, 8, 4)).astype(np.float32)
    write_exr(tmp_path / "rgba.exr", rgba)
    np.testing.assert_array_equal(read_hdr(tmp_path / "rgba.exr"), rgba[:, :, :3])


def _with_nan(envmap):
    envmap = envmap.copy()
    envmap[5, 3, 1] = np.nan
    return envmap


def _with_inf(envmap):
    envmap = envmap.copy()
    envmap[0, :2] = np.inf
    return envmap


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda a: a[:, :24], "twice as wide"),
        (_with_nan, "has 1 NaN and 0 Inf"),
        (_with_inf, "has 0 NaN and 6 Inf"),
        (lambda a: a - 2.0, "negative"),
    ],
)
def test_bad_envmaps_name_the_file_and_the_problem(tmp_path, rng, make, expected):
    path = write_exr(tmp_path / "bad.exr", make(rng.random((16, 32, 3)).astype(np.float32)))
    with pytest.raises(InputError, match=expected) as info:
        read_envmap(path)
    assert str(path) in str(info.value)


def test_truncated_and_garbage_files_are_reported(tmp_path, rng):
    path = write_exr(tmp_path / "env.exr", rng.random((16, 32, 3)).astype(np.float32))
    data = path.read_bytes()
    (tmp_path / "cut.exr").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.exr: unreadable or truncated"):
        read_envmap(tmp_path / "cut.exr")
    (tmp_path / "junk.hdr").write_bytes(b"not an image" * 20)
    with pytest.raises(InputError, match="junk.hdr: unreadable"):
        read_envmap(tmp_path / "junk.hdr")
    with pytest.raises(InputError, match="does not exist"):
        read_envmap(tmp_path / "missing.exr")
    (tmp_path / "env.png").write_bytes(b"")
    with pytest.raises(InputError, match="not an HDR image"):
        read_envmap(tmp_path / "env.png")


def test_validate_rejects_wrong_dimensions():
    with pytest.raises(InputError, match="RGB"):
        validate_envmap(np.zeros((4, 8)), "array")


def test_direction_convention_matches_design():
    # u = 0.5 is +z (toward the viewer), u = 0.25 is +x, the edge is −z, the top row is +y.
    np.testing.assert_allclose(uv_to_direction(0.5, 0.5), [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(uv_to_direction(0.25, 0.5), [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(uv_to_direction(0.0, 0.5), [0, 0, -1], atol=1e-12)
    np.testing.assert_allclose(uv_to_direction(0.3, 0.0), [0, 1, 0], atol=1e-12)
    u, v = direction_to_uv(pixel_directions(8)[1:-1])  # the poles have no azimuth
    np.testing.assert_allclose(u, ((np.arange(16) + 0.5) / 16)[None, :].repeat(6, 0), atol=1e-12)
    np.testing.assert_allclose(v, (np.arange(1, 7) / 7)[:, None].repeat(16, 1), atol=1e-12)
    np.testing.assert_allclose(pixel_solid_angles(8).sum() * 16, 4 * np.pi, rtol=1e-12)


def test_texel_directions_are_where_mitsubas_emitter_holds_each_texel():
    """A one-texel light seen through Mitsuba's own envmap emitter peaks at pixel_directions."""
    import drjit as dr

    from rendering.variant import ensure_variant

    mi = ensure_variant()
    height = 8
    for row, col in [(2, 5), (5, 12), (6, 0)]:
        envmap = np.zeros((height, 2 * height, 3), dtype=np.float32)
        envmap[row, col] = 1.0
        emitter = mi.load_dict({"type": "envmap", "bitmap": mi.Bitmap(envmap)})
        d = pixel_directions(height).reshape(-1, 3)
        si = dr.zeros(mi.SurfaceInteraction3f, d.shape[0])
        si.wi = mi.Vector3f(-d[:, 0], -d[:, 1], -d[:, 2])
        value = np.array(emitter.eval(si))
        value = (value[0] if value.shape[0] == 3 else value[:, 0]).reshape(height, 2 * height)
        assert np.unravel_index(value.argmax(), value.shape) == (row, col)
        np.testing.assert_allclose(value[row, col], 1.0, rtol=1e-4)  # exactly on the texel


def test_downsampling_preserves_the_power_of_a_tiny_sun(rng):
    envmap = np.full((256, 512, 3), 0.5, dtype=np.float32)
    envmap[37, 301] = 4e4  # one-pixel sun
    small = resample_envmap(envmap, 16)
    np.testing.assert_allclose(envmap_power(small), envmap_power(envmap), rtol=1e-5)
    # Point sampling would miss it entirely; area weighting keeps it as a bright pixel.
    assert small.max() > 100
    # A constant map stays constant, up or down.
    const = np.full((8, 16, 3), 2.0, dtype=np.float32)
    np.testing.assert_allclose(resample_envmap(const, 13), 2.0, rtol=1e-6)
    np.testing.assert_allclose(resample_envmap(const, 5), 2.0, rtol=1e-6)


def test_non_integer_resampling_preserves_power(rng):
    envmap = (rng.random((30, 60, 3)) ** 4 * 100).astype(np.float32)
    for height in (7, 11, 45):
        resampled = resample_envmap(envmap, height)
        np.testing.assert_allclose(envmap_power(resampled), envmap_power(envmap), rtol=1e-5)


def _dense_resample(envmap: np.ndarray, height: int) -> np.ndarray:
    """The dense resampling this project used before the separable one (the reference): full
    (n_dst, n_src) overlap matrices contracted with one einsum over a float64 copy."""

    def overlap_matrix(src_edges, dst_edges, measure):
        lo = np.maximum(dst_edges[:-1, None], src_edges[None, :-1])
        hi = np.minimum(dst_edges[1:, None], src_edges[None, 1:])
        overlap = np.where(hi > lo, measure(hi) - measure(lo), 0.0)
        return overlap / overlap.sum(axis=1, keepdims=True)

    envmap = np.asarray(envmap, dtype=np.float32)
    src_h, src_w = envmap.shape[:2]
    if src_h == height and src_w == 2 * height:
        return envmap.copy()
    rows = overlap_matrix(row_edges(src_h), row_edges(height), lambda t: -np.cos(t))
    cols = overlap_matrix(np.linspace(0, 1, src_w + 1), np.linspace(0, 1, 2 * height + 1), lambda x: x)
    out = np.einsum("ij,jkc,lk->ilc", rows, envmap.astype(np.float64), cols)
    return np.maximum(out, 0.0).astype(np.float32)


@pytest.mark.parametrize("block_values", [envmap_module.RESAMPLE_BLOCK_VALUES, 1, 200])
def test_separable_resampling_equals_the_dense_reference(rng, monkeypatch, block_values):
    # Small blocks force the streaming path: one output row, or a few source rows, at a time.
    monkeypatch.setattr(envmap_module, "RESAMPLE_BLOCK_VALUES", block_values)
    for src_height, height in [
        (30, 7),
        (30, 11),
        (30, 45),
        (64, 16),
        (64, 8),
        (8, 13),
        (5, 2),
        (2, 3),
        (100, 33),
    ]:
        envmap = (rng.random((src_height, 2 * src_height, 3)) ** 4 * 100).astype(np.float32)
        envmap[rng.integers(src_height), rng.integers(2 * src_height)] = 4e4
        expected, got = _dense_resample(envmap, height), resample_envmap(envmap, height)
        assert got.shape == expected.shape == (height, 2 * height, 3) and got.dtype == np.float32
        # 2 float32 ulp; float64 rounding (summation order) relative to the brightest input.
        np.testing.assert_allclose(got, expected, rtol=2.5e-7, atol=1e-12 * float(envmap.max()))


@pytest.mark.parametrize("block_values", [envmap_module.RESAMPLE_BLOCK_VALUES, 300])
def test_a_one_pixel_sun_keeps_its_power_wherever_it_is(monkeypatch, block_values):
    monkeypatch.setattr(envmap_module, "RESAMPLE_BLOCK_VALUES", block_values)
    src_height = 96
    # At the zenith, beside a block boundary, on the seam (u = 0), at the nadir.
    for row, col in [(0, 5), (47, 100), (50, 0), (95, 191)]:
        envmap = np.full((src_height, 2 * src_height, 3), 0.01, dtype=np.float32)
        envmap[row, col] = [4e4, 2e4, 1e4]
        power = envmap_power(envmap)
        for height in (8, 17, 32, 150):
            resampled = resample_envmap(envmap, height)
            np.testing.assert_allclose(envmap_power(resampled), power, rtol=1e-5)


def test_rotation_moves_a_light_from_front_to_right():
    envmap = np.zeros((16, 32, 3), dtype=np.float32)
    u, v = direction_to_uv(np.array([0.0, 0.0, 1.0]))  # +z: the viewer's side
    envmap[int(v * 16), int(u * 32)] = 1.0
    rotated = rotate_envmap(envmap, np.pi / 2)  # +z turns toward +x
    row, col = np.unravel_index(rotated[:, :, 0].argmax(), (16, 32))
    np.testing.assert_allclose(pixel_directions(16)[row, col], [1, 0, 0], atol=0.2)
    np.testing.assert_allclose(envmap_power(rotated), envmap_power(envmap), rtol=1e-6)
    np.testing.assert_allclose(rotate_envmap(rotated, -np.pi / 2), envmap, atol=1e-6)


def test_preview_is_8_bit_and_robust_to_a_sun(tmp_path, rng):
    image = rng.random((8, 16, 3)).astype(np.float32)
    image[0, 0] = 1e5
    preview = tonemap(image)
    assert preview.dtype == np.uint8 and preview.shape == image.shape
    assert preview[4:].mean() > 40, "the 99th-percentile exposure must not be driven by the sun"
    assert write_preview(tmp_path / "p.png", image).exists()
