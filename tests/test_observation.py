"""Image → observed refmap: a rendered sphere converts back to its refmap, partial views observe
exactly their part of the normal sphere, inputs as other tools write them (anti-aliased edges,
short or zero normals, negative pixels) are repaired with one warning, and what cannot be an
observation is refused with a clear message."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from capture_like import capture_like, interior_bins

from rendering.envmap import pixel_directions
from rendering.errors import InputError
from rendering.objects import ObjectRenderer, save_object
from rendering.observation import (
    MIN_NORMAL_LENGTH,
    LDRImageWarning,
    erode_mask,
    files_to_refmap,
    image_to_refmap,
    load_observation_files,
)
from rendering.shapes import ellipsoid, make_shape


def _smooth_envmap(height: int = 32) -> np.ndarray:
    """Low-frequency light: a warm key from +x, a blue sky from +y, grey ambient."""
    d = pixel_directions(height)
    return _smooth_radiance(d).astype(np.float32)


def _smooth_radiance(d: np.ndarray) -> np.ndarray:
    key = np.maximum(d[..., 0:1], 0.0) ** 2 * np.array([5.0, 4.0, 3.0])
    sky = np.maximum(d[..., 1:2], 0.0) * np.array([0.2, 0.4, 1.5])
    return 0.2 + key + sky


def _design_normals(res: int) -> np.ndarray:
    """The refmap's normal grid written out from DESIGN.md §3.1, (R, R, 3)."""
    i, j = np.mgrid[0:res, 0:res]
    el = np.pi / 2 - (i + 0.5) * np.pi / res
    az = -np.pi / 2 + (j + 0.5) * np.pi / res
    return np.stack([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)], axis=-1)


@pytest.fixture(scope="module")
def sphere_renderer():
    return ObjectRenderer(make_shape("sphere"), object_res=128)


def test_mirror_sphere_image_converts_to_the_reflected_environment(sphere_renderer):
    # A mirror ball shows at normal n the environment in the reflected direction 2(n·v)n − v.
    envmap = _smooth_envmap()
    obj = sphere_renderer.render(envmap, [1, 1, 1, 1, 0, 1], spp=16)
    refmap, observed = image_to_refmap(obj.image, obj.normals, obj.mask, refmap_res=32)
    n = _design_normals(32)
    reflected = 2 * n[..., 2:3] * n - np.array([0.0, 0.0, 1.0])
    expected = _smooth_radiance(reflected).transpose(2, 0, 1)
    assert observed.mean() > 0.6  # the whole visible hemisphere bar the grazing rim
    relative = np.abs(refmap - expected)[:, observed] / expected[:, observed]
    assert np.median(relative) < 0.02
    assert np.percentile(relative, 90) < 0.1


def test_sphere_image_matches_the_rendered_refmap(sphere_renderer):
    from rendering.refmap import render_refmaps

    envmap = _smooth_envmap()
    z = np.array([0.0, 0.7, 0.45, 0.3, 0.45, 0.5], dtype=np.float32)
    obj = sphere_renderer.render(envmap, z, spp=32)
    refmap, observed = image_to_refmap(obj.image, obj.normals, obj.mask, refmap_res=32)
    expected = render_refmaps(envmap, z[None], refmap_res=32, spp=128)[0]
    ratio = refmap[:, observed] / expected[:, observed]
    # Unbiased (the two renderers agree on average) and close per bin (Monte Carlo noise of 32 spp).
    np.testing.assert_allclose(ratio.mean(axis=1), 1.0, atol=0.01)
    assert np.median(np.abs(ratio - 1)) < 0.05


def test_convex_shapes_give_the_same_refmap_where_both_are_observed(sphere_renderer):
    # The refmap is geometry-invariant: an ellipsoid seen under the same light and material
    # shows, at each normal, the sphere's radiance there.
    envmap = _smooth_envmap()
    z = [0.0, 0.6, 0.6, 0.6, 0.6, 0.3]
    sphere = sphere_renderer.render(envmap, z, spp=32)
    rotation = np.array([[np.cos(0.5), -np.sin(0.5), 0], [np.sin(0.5), np.cos(0.5), 0], [0, 0, 1]])
    oval = ObjectRenderer(ellipsoid((1.0, 0.55, 0.8), rotation, subdivisions=5), object_res=128).render(
        envmap, z, spp=32
    )
    a, seen_a = image_to_refmap(sphere.image, sphere.normals, sphere.mask, refmap_res=24)
    b, seen_b = image_to_refmap(oval.image, oval.normals, oval.mask, refmap_res=24)
    both = seen_a & seen_b
    assert both.sum() > 0.4 * both.size
    ratio = b[:, both] / a[:, both]
    np.testing.assert_allclose(ratio.mean(axis=1), 1.0, atol=0.02)
    assert np.median(np.abs(ratio - 1)) < 0.06


def test_half_a_sphere_observes_exactly_half_the_refmap(sphere_renderer):
    obj = sphere_renderer.render(_smooth_envmap(), [0, 0.5, 0.5, 0.5, 0.5, 0.5], spp=4)
    _, full = image_to_refmap(obj.image, obj.normals, obj.mask, refmap_res=32, erode=0)
    left = obj.mask & (obj.normals[..., 0] < 0)  # the viewer's left half of the ball
    _, half = image_to_refmap(obj.image, obj.normals, left, refmap_res=32, erode=0)
    expected = full.copy()
    expected[:, 16:] = False  # azimuth > 0 is the right half of the refmap
    np.testing.assert_array_equal(half, expected)
    # Eroding the cut can only lose bins, never add any.
    _, eroded = image_to_refmap(obj.image, obj.normals, left, refmap_res=32, erode=2)
    assert not (eroded & ~half).any()


def test_normals_facing_away_are_ignored():
    image, normals, mask = _good_observation()
    normals[:, :10, 2] *= -1  # a strip seen from behind: not a valid observation
    image[:, :10] = 100.0
    away = int((mask[:, :10] & (normals[:, :10, 2] < 0)).sum())
    with pytest.warns(UserWarning, match=f"and {away} facing away from the camera"):
        refmap, observed = image_to_refmap(image, normals, mask, refmap_res=8, erode=0)
    assert observed.any() and refmap.max() == 1.0


def _rule_counts(message: str) -> dict[str, int]:
    """The counts of the normals warning: near-zero, boundary, facing away, renormalised."""
    pattern = (
        r"of (?P<total>\d+) mask pixels, left out (?P<near_zero>\d+) with a near-zero normal .*, "
        r"(?P<boundary>\d+) on the boundary .* and (?P<facing_away>\d+) facing away .*; "
        r"renormalised (?P<renormalised>\d+) normals"
    )
    match = re.search(pattern, message)
    assert match, message
    return {key: int(value) for key, value in match.groupdict().items()}


def _convert_with_one_warning(*args, **kwargs) -> tuple[np.ndarray, np.ndarray, str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        refmap, observed = image_to_refmap(*args, **kwargs)
    assert len(caught) == 1, [str(w.message) for w in caught]
    return refmap, observed, str(caught[0].message)


def test_a_capture_like_object_converts_like_the_clean_one():
    """Anti-aliased silhouette (partial colour, short normals), zero normals inside the mask, a
    region of 0.9-long normals and a few normals facing away: one warning counts what each rule
    did, and the refmap agrees with the clean object's wherever the object is well observed."""
    case = capture_like()
    clean, captured = case.clean, case.captured
    sources = ("bunny/image.exr", "bunny/normal.npy", "bunny/mask.png")
    refmap, observed, message = _convert_with_one_warning(
        captured.image, captured.normals, captured.mask, refmap_res=16, sources=sources
    )
    assert message.startswith("bunny/normal.npy: ")
    counts = _rule_counts(message)
    assert counts["total"] == captured.mask.sum()
    assert counts["near_zero"] == case.near_zero > 0
    assert counts["facing_away"] == case.facing_away
    assert counts["boundary"] > 0
    assert counts["renormalised"] >= 0.9 * case.short.sum()  # all but those eroded around the holes

    expected, expected_observed = image_to_refmap(clean.image, clean.normals, clean.mask, refmap_res=16)
    compared = observed & expected_observed & interior_bins(16)
    assert compared.sum() >= 0.9 * (expected_observed & interior_bins(16)).sum()
    relative = np.abs(refmap - expected)[:, compared] / expected[:, compared]
    assert np.percentile(relative, 90) < 0.005  # bins lose a few pixels around the holes: the
    assert relative.max() < 0.1  # median moves within the bin, never by a bin's width


@pytest.mark.parametrize("length", [1.1, 0.7])
def test_normals_of_another_length_are_renormalised_with_a_warning(length):
    image, normals, mask = _good_observation()
    expected, expected_observed = image_to_refmap(image, normals, mask, refmap_res=8)
    spoilt = normals.copy()
    spoilt[:16] *= length  # the upper half
    refmap, observed, message = _convert_with_one_warning(image, spoilt, mask, refmap_res=8)
    assert _rule_counts(message)["renormalised"] == erode_mask(mask)[:16].sum()
    np.testing.assert_array_equal(refmap, expected)
    np.testing.assert_array_equal(observed, expected_observed)


def test_near_zero_normals_leave_the_mask():
    image, normals, mask = _good_observation()
    normals[:, :12] *= 0.3  # shorter than MIN_NORMAL_LENGTH: not a normal
    assert 0.3 < MIN_NORMAL_LENGTH
    image[:, :12] = 100.0  # what these pixels show must not be binned
    refmap, observed, message = _convert_with_one_warning(image, normals, mask, refmap_res=8, erode=0)
    assert _rule_counts(message)["near_zero"] == mask[:, :12].sum()
    assert refmap.max() == 1.0
    _, without = image_to_refmap(image, normals, mask & (np.arange(32) >= 12), refmap_res=8, erode=0)
    np.testing.assert_array_equal(observed, without)


def test_a_mask_left_mostly_invalid_is_refused():
    image, normals, mask = _good_observation()
    rows = mask.nonzero()[0]
    cut = int(np.percentile(rows, 40))
    normals[:cut] = 0.0  # about 40 % of the mask: repaired with a warning
    with pytest.warns(UserWarning, match="near-zero normal"):
        image_to_refmap(image, normals, mask, refmap_res=8)
    normals[: int(np.percentile(rows, 60))] = 0.0  # about 60 %: not a normal map of this object
    with pytest.raises(InputError, match=r"normals: .* no usable normal .* over 50%"):
        image_to_refmap(image, normals, mask, refmap_res=8)


def test_object_image_follows_the_hdr_input_policy():
    image, normals, mask = _good_observation()
    expected, _ = image_to_refmap(image, normals, mask, refmap_res=8)
    # Outside the mask nothing matters: background NaN or negatives are not errors.
    background = image.copy()
    background[~mask] = np.nan
    background[0, 0] = -5.0
    np.testing.assert_array_equal(image_to_refmap(background, normals, mask, refmap_res=8)[0], expected)
    # Tiny camera-noise negatives inside the mask: clamped, one warning naming the image.
    noisy = image.copy()
    noisy[16, 16] = -1e-5
    with pytest.warns(UserWarning, match=r"photo.exr: clamped 3 negative values"):
        refmap, _ = image_to_refmap(noisy, normals, mask, refmap_res=8, sources=("photo.exr", "n", "m"))
    assert refmap.min() >= 0.0
    # NaN inside the mask: refused, unless repair fills it from its neighbours.
    broken = image.copy()
    broken[16, 16] = np.nan
    with pytest.raises(InputError, match="photo.exr: has 3 NaN .*--repair"):
        image_to_refmap(broken, normals, mask, refmap_res=8, sources=("photo.exr", "n", "m"))
    with pytest.warns(UserWarning, match="photo.exr: filled 3 NaN/Inf values"):
        repaired, _ = image_to_refmap(
            broken, normals, mask, refmap_res=8, sources=("photo.exr", "n", "m"), repair=True
        )
    np.testing.assert_allclose(repaired, expected, atol=0.05)


def test_bin_median_rejects_outliers():
    image, normals, mask = _good_observation()
    image[15:17, 15:17] = 1e4  # a few hot pixels among the many of the central bins
    refmap, observed = image_to_refmap(image, normals, mask, refmap_res=4, erode=0)
    assert observed.all() and refmap.max() == 1.0


def test_512_image_converts_to_128_refmap():
    size = 512
    y, x = np.mgrid[0:size, 0:size]
    px, py = (x + 0.5) / size * 2 - 1, 1 - (y + 0.5) / size * 2
    mask = px**2 + py**2 < 1
    normals = np.stack([px, py, np.sqrt(np.maximum(1 - px**2 - py**2, 0))], -1) * mask[..., None]
    image = np.random.default_rng(0).random((size, size, 3)).astype(np.float32)
    refmap, observed = image_to_refmap(image, normals.astype(np.float32), mask, refmap_res=128)
    assert refmap.shape == (3, 128, 128) and refmap.dtype == np.float32
    assert observed.mean() > 0.75


def _good_observation(size: int = 32):
    y, x = np.mgrid[0:size, 0:size]
    px, py = (x + 0.5) / size * 2 - 1, 1 - (y + 0.5) / size * 2
    mask = px**2 + py**2 < 0.9
    normals = np.stack([px, py, np.sqrt(np.maximum(1 - px**2 - py**2, 0))], -1) * mask[..., None]
    return np.ones((size, size, 3), np.float32), normals.astype(np.float32), mask


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda i, n, m: (i[:, :-1], n, m), "normals: shape .* does not match the image"),
        (lambda i, n, m: (i, n, m[:-1]), "mask: shape .* does not match"),
        (lambda i, n, m: (i, n * 0.3, m), "normals: .* no usable normal .* near zero"),
        (lambda i, n, m: (i, n * [1, 1, -1], m), "normals: .* no usable normal .* facing away"),
        (lambda i, n, m: (i, np.where(m[..., None], np.nan, n), m), "NaN/Inf normals"),
        (lambda i, n, m: (np.where(m[..., None], np.inf, i), n, m), "image: has 0 NaN and .* Inf .*--repair"),
        (lambda i, n, m: (i, n, np.zeros_like(m)), "mask: is empty"),
        (lambda i, n, m: ((i * 255).astype(np.uint8), n, m), "integer .* display-encoded"),
        (lambda i, n, m: (_ramp(i), n, m), "multiple of 1/255"),
    ],
)
def test_bad_observations_are_refused_with_the_reason(spoil, message):
    image, normals, mask = spoil(*_good_observation())
    with pytest.raises(InputError, match=message):
        image_to_refmap(image, normals, mask, refmap_res=16)


def _ramp(image: np.ndarray) -> np.ndarray:
    """Values on the 8-bit grid k/255: a display image stored as float."""
    return (np.arange(image.size).reshape(image.shape) % 256 / 255.0).astype(np.float32)


def test_a_tiny_object_is_too_small_for_a_large_refmap():
    image, normals, mask = _good_observation(8)
    with pytest.raises(InputError, match=r"refmap bins .*\(lower --refmap-res\)"):
        image_to_refmap(image, normals, mask, refmap_res=128, erode=0)


def test_files_round_trip_and_errors_name_the_file(tmp_path, sphere_renderer):
    obj = sphere_renderer.render(_smooth_envmap(), [0, 0.5, 0.5, 0.5, 0.3, 0.5], spp=4)
    directory = save_object(tmp_path / "obs", obj)
    image, normals, mask = load_observation_files(
        directory / "image.exr", directory / "normals.npy", directory / "mask.png"
    )
    np.testing.assert_array_equal(image, obj.image)
    np.testing.assert_array_equal(normals, obj.normals)
    np.testing.assert_array_equal(mask, obj.mask)
    # Without a mask file, the object is where normals are non-zero.
    _, _, implied = load_observation_files(directory / "image.exr", directory / "normals.npy")
    np.testing.assert_array_equal(implied, obj.mask)
    refmap, observed = files_to_refmap(directory / "image.exr", directory / "normals.npy", refmap_res=16)
    assert observed.any()

    # Normals of another length are renormalised, with a warning naming the file.
    np.save(tmp_path / "long.npy", obj.normals * 2)
    with pytest.warns(UserWarning, match=r"long.npy: .* renormalised \d+ normals"):
        long_refmap, long_observed = files_to_refmap(
            directory / "image.exr", tmp_path / "long.npy", refmap_res=16
        )
    np.testing.assert_array_equal(long_refmap, refmap)
    np.testing.assert_array_equal(long_observed, observed)
    # A normal map in a frame whose z points away from the viewer (OpenCV's) cannot be used.
    np.save(tmp_path / "bad.npy", obj.normals * np.array([1, -1, -1], np.float32))
    with pytest.raises(InputError, match="bad.npy: .* facing away"):
        files_to_refmap(directory / "image.exr", tmp_path / "bad.npy", directory / "mask.png", refmap_res=16)
    np.save(tmp_path / "small.npy", obj.normals[:10])
    with pytest.raises(InputError, match="small.npy: shape"):
        load_observation_files(directory / "image.exr", tmp_path / "small.npy")
    with pytest.raises(InputError, match="missing.exr: file does not exist"):
        load_observation_files(tmp_path / "missing.exr", directory / "normals.npy")


def test_an_8bit_png_is_accepted_with_a_warning(tmp_path):
    from rendering.hdrio import write_png

    _, normals, mask = _good_observation()
    write_png(tmp_path / "photo.png", np.full((32, 32, 3), 128, np.uint8))
    np.save(tmp_path / "n.npy", normals)
    with pytest.warns(LDRImageWarning, match="photo.png: an 8-bit PNG"):
        image, _, _ = load_observation_files(tmp_path / "photo.png", tmp_path / "n.npy")
    np.testing.assert_allclose(image, ((128 / 255 + 0.055) / 1.055) ** 2.4, rtol=1e-5)  # sRGB decoded


def test_render_object_then_image_to_refmap_commands(tmp_path):
    from typer.testing import CliRunner

    import pipeline.cli  # noqa: F401  (registers the commands)
    from pipeline.cli.app import app
    from rendering.hdrio import read_hdr, read_mask, write_exr

    write_exr(tmp_path / "env.exr", _smooth_envmap(8))
    runner = CliRunner()
    obj_dir, obs_dir = tmp_path / "object", tmp_path / "observation"
    common = [
        "--envmap",
        str(tmp_path / "env.exr"),
        "--material",
        "0,0.5,0.5,0.5,0.4,0.5",
        "--object-res",
        "32",
    ]
    result = runner.invoke(
        app, ["render-object", *common, "--shape", "blob", "--spp", "2", "--out", str(obj_dir)]
    )
    assert result.exit_code == 0, result.output
    assert {p.name for p in obj_dir.iterdir()} == {"image.exr", "normals.npy", "mask.png", "preview.png"}
    args = [str(obj_dir / "image.exr"), str(obj_dir / "normals.npy"), str(obj_dir / "mask.png")]
    result = runner.invoke(app, ["image-to-refmap", *args, "--refmap-res", "8", "--out", str(obs_dir)])
    assert result.exit_code == 0, result.output
    refmap, observed = files_to_refmap(*args, refmap_res=8)
    np.testing.assert_array_equal(read_hdr(obs_dir / "refmap.exr"), refmap.transpose(1, 2, 0))
    np.testing.assert_array_equal(read_mask(obs_dir / "observed.png"), observed)

    both = runner.invoke(
        app, ["render-object", *common, "--shape", "blob", "--mesh", "x.obj", "--out", str(obj_dir)]
    )
    assert isinstance(both.exception, InputError) and "exactly one of --shape" in str(both.exception)
