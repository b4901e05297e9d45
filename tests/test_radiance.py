"""The HDR input policy (rendering/radiance.py) on the failure kinds real maps bring: tiny camera
negatives, ringing around a sun, NaN/Inf, files that cannot be radiance, and the 18 real maps."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from rendering.envmap import envmap_power, pixel_directions, pixel_solid_angles, read_envmap
from rendering.errors import InputError
from rendering.hdrio import luminance, write_exr
from rendering.radiance import MAX_NEGATIVE_SHARE, clean_radiance


def envmap_clean(envmap: np.ndarray, source: str = "map.exr", **options):
    """clean_radiance with an envmap's solid-angle weights; returns (image, report, warning lines)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image, report = clean_radiance(
            envmap, source, weights=pixel_solid_angles(envmap.shape[0]), wrap=True, **options
        )
    return image, report, [str(w.message) for w in caught]


def cap_power(envmap: np.ndarray, direction: np.ndarray, degrees: float) -> float:
    """∫ Y dω over the cone of ``degrees`` around ``direction``."""
    height = envmap.shape[0]
    inside = pixel_directions(height) @ direction > np.cos(np.radians(degrees))
    omega = np.broadcast_to(pixel_solid_angles(height)[:, None], inside.shape)
    return float((luminance(envmap) * omega)[inside].sum())


def sky_with_ringing_sun(height: int = 128) -> tuple[np.ndarray, tuple[int, int]]:
    """A blue sky with a sun whose downsampling left a negative ring (like npm's Poly Haven maps):
    the sun disc holds extra energy that exactly cancels the ring, so the pair's power is known."""
    rng = np.random.default_rng(3)
    envmap = np.empty((height, 2 * height, 3), np.float32)
    envmap[:] = np.array([0.4, 0.6, 1.0], np.float32) * rng.uniform(0.8, 1.2, (height, 2 * height, 1))
    sun = (height // 3, height)
    rows, cols = np.mgrid[:height, : 2 * height]
    distance = np.hypot(rows - sun[0], cols - sun[1])
    omega = pixel_solid_angles(height)[:, None] * np.ones((1, 2 * height))
    core, ring = distance <= 1.5, (distance > 1.5) & (distance <= 3.5)
    envmap[core] += 20000.0
    # The ring takes away 8 % of the sun's energy (what a Lanczos downsampling does near a sun).
    ring_energy = 0.08 * float((20000.0 * omega[core]).sum())
    envmap[ring] -= (ring_energy / float(omega[ring].sum()) + np.array([0.4, 0.6, 1.0]) * 1.0).astype(
        np.float32
    )
    return envmap, sun


def test_tiny_negatives_are_set_to_zero_with_one_warning():
    envmap = np.full((32, 64, 3), 2.0, np.float32)
    envmap[5, 7] = [-1e-4, 0.5, -3e-5]
    image, report, lines = envmap_clean(envmap, "tiny.exr")
    assert image.min() == 0.0 and image[5, 7, 0] == 0.0 and image[5, 7, 1] == 0.5
    assert report.rule == "clamped" and report.negative == 2
    assert len(lines) == 1 and lines[0].startswith("tiny.exr: clamped 2 negative values (min -0.0001")
    np.testing.assert_allclose(envmap_power(image), envmap_power(np.maximum(envmap, 0)), rtol=1e-6)


def test_ringing_is_repaired_locally_keeping_total_and_sun_power_and_leaving_no_dark_ring():
    envmap, sun = sky_with_ringing_sun()
    direction = pixel_directions(envmap.shape[0])[sun]
    image, report, lines = envmap_clean(envmap, "ringing.exr")
    assert image.min() >= 0.0 and report.rule == "redistributed" and report.negative_share > 0.05
    # Total power (per channel) and the power of the sun with its ring: within 1 % (here far better).
    np.testing.assert_allclose(envmap_power(image), envmap_power(envmap), rtol=1e-4)
    assert cap_power(image, direction, 5.0) == pytest.approx(cap_power(envmap, direction, 5.0), rel=0.01)
    # A plain clamp would add the ring's 8 % of the sun's energy around it.
    clamped = np.maximum(envmap, 0)
    assert cap_power(clamped, direction, 5.0) > 1.05 * cap_power(envmap, direction, 5.0)
    # No dark ring: every repaired pixel is at least half as bright as the sky around it.
    repaired = (envmap < 0).any(axis=2)
    sky = float(np.median(luminance(image)))
    assert luminance(image)[repaired].min() > 0.5 * sky
    assert len(lines) == 1 and "ringing.exr: redistributed" in lines[0] and "power" in lines[0]


def test_nan_and_inf_are_an_error_unless_repair_fills_them_from_their_neighbours():
    envmap = np.full((16, 32, 3), 3.0, np.float32)
    envmap[4, 4, 1] = np.nan
    envmap[9, 31, 0] = np.inf
    with pytest.raises(InputError, match=r"bad\.exr: has 1 NaN and 1 Inf values; .*--repair"):
        clean_radiance(envmap, "bad.exr", warn=False)
    image, report, lines = envmap_clean(envmap, "bad.exr", repair_nonfinite=True)
    assert np.isfinite(image).all() and report.nonfinite == 2
    assert image[4, 4, 1] == pytest.approx(3.0) and image[9, 31, 0] == pytest.approx(3.0)
    assert len(lines) == 1 and "filled 2 NaN/Inf values" in lines[0]


def test_a_map_that_cannot_be_radiance_is_refused():
    rng = np.random.default_rng(0)
    signed = rng.normal(0, 1, (16, 32, 3)).astype(np.float32)  # e.g. a difference image
    with pytest.raises(InputError, match=r"signed\.exr: .* % of the energy .*cannot be a radiance map"):
        clean_radiance(signed, "signed.exr", warn=False)
    assert MAX_NEGATIVE_SHARE == 0.25


def test_reading_a_ringing_file_repairs_it_with_one_warning_naming_the_file(tmp_path):
    envmap, _ = sky_with_ringing_sun(32)
    path = write_exr(tmp_path / "downsampled.exr", envmap)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read = read_envmap(path)
    assert read.min() >= 0
    np.testing.assert_allclose(envmap_power(read), envmap_power(envmap), rtol=1e-4)
    assert [str(w.message).split(":")[0] for w in caught] == [str(path)]


def test_the_eighteen_real_maps_keep_their_power_total_and_around_their_brightest_source(real_envmap_files):
    from rendering.hdrio import read_hdr

    assert len(real_envmap_files) == 18
    for name, path in real_envmap_files.items():
        raw = read_hdr(path)
        image, report, _ = envmap_clean(raw, name)
        assert image.min() >= 0, name
        np.testing.assert_allclose(envmap_power(image), envmap_power(raw), rtol=0.01, err_msg=name)
        brightest = np.unravel_index(np.argmax(luminance(raw)), raw.shape[:2])
        direction = pixel_directions(raw.shape[0])[brightest]
        assert cap_power(image, direction, 10.0) == pytest.approx(
            cap_power(raw, direction, 10.0), rel=0.01
        ), name
