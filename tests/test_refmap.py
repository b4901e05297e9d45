"""Reflectance maps: the normal grid, the fast renderer against stock Mitsuba and analytic cases,
view azimuth, common random numbers, the mirror ↔ envmap conversion and the CLI."""

from __future__ import annotations

import re

import numpy as np
import pytest
from typer.testing import CliRunner

from rendering.envmap import pixel_directions, rotate_envmap
from rendering.errors import InputError
from rendering.hdrio import read_hdr, read_mask, write_exr
from rendering.principled import MIRROR, principled_bsdf
from rendering.refmap import (
    RIM_COS,
    PrincipledLanes,
    envmap_to_mirror,
    mirror_basis,
    mirror_to_envmap,
    normal_grid,
    render_refmaps,
    render_refmaps_bsdf,
)
from rendering.spheres import render_stock_sphere
from rendering.variant import ensure_variant

VIEW = np.array([0.0, 0.0, 1.0])


def smooth_radiance(directions: np.ndarray) -> np.ndarray:
    """A band-limited RGB environment: a constant plus three broad lobes, (..., 3)."""

    def lobe(axis, sharpness):
        axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
        return np.exp(sharpness * (directions @ axis - 1.0))[..., None]

    return (
        0.2
        + 3.0 * lobe([1.0, 1.0, 0.5], 4.0) * [1.0, 0.5, 0.2]
        + 2.0 * lobe([-0.3, 0.2, -1.0], 6.0) * [0.2, 0.5, 1.0]
        + lobe([0.0, -1.0, 0.3], 3.0)
    )


@pytest.fixture(scope="module")
def envmap() -> np.ndarray:
    """Smooth lobes plus a small bright light (exercises the emitter's importance sampling)."""
    env = smooth_radiance(pixel_directions(32)).astype(np.float32)
    env[9:11, 40:42] = 30.0
    return env


def relative_rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.mean(np.abs(b)))


def pixel_of(direction: np.ndarray, res: int) -> np.ndarray:
    """Fractional (row, col) of the refmap pixel that mirrors ``direction`` toward the viewer,
    from DESIGN.md §3.1–3.2: n = normalize(d + v), then the lat-long grid inverted."""
    n = (direction + VIEW) / np.linalg.norm(direction + VIEW)
    el, az = np.arcsin(n[1]), np.arctan2(n[0], n[2])
    return np.array([(np.pi / 2 - el) * res / np.pi - 0.5, (az + np.pi / 2) * res / np.pi - 0.5])


def test_normal_grid_is_the_design_lat_long_grid():
    res = 8
    normals = normal_grid(res)
    assert normals.shape == (res, res, 3) and normals.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-6)
    el, az = np.pi / 2 - 0.5 * np.pi / res, -np.pi / 2 + 2.5 * np.pi / res  # row 0, col 2
    expected = [np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)]
    np.testing.assert_allclose(normals[0, 2], expected, atol=1e-6)
    assert (normals[..., 2] > 0).all(), "every pixel faces the viewer"
    assert (np.diff(normals[..., 1], axis=0) < 0).all(), "row 0 is the top"
    assert (np.diff(normals[..., 0], axis=1) > 0).all(), "columns run toward the viewer's right"


def test_fast_renderer_matches_stock_mitsuba_render(envmap):
    """A principled sphere rendered by mi.render (orthographic camera, `direct` integrator) and read
    at the refmap normals agrees with render_refmaps: the fast path computes the same integral."""
    from scipy.ndimage import map_coordinates

    materials = np.array(
        [[0.0, 0.8, 0.5, 0.2, 0.5, 0.5], [1.0, 0.9, 0.6, 0.3, 0.3, 0.2], [0.3, 0.2, 0.7, 0.4, 0.7, 0.9]],
        dtype=np.float32,
    )
    res, size = 12, 128
    ours = render_refmaps(envmap, materials, refmap_res=res, spp=1024)
    normals = normal_grid(res)
    inner = normals[..., 2] > 0.5  # away from the silhouette, where image pixels mix in background
    # Image position of each normal (orthographic view of the unit sphere: x = n_x, y = n_y).
    position = [(1 - normals[..., 1]) / 2 * size - 0.5, (normals[..., 0] + 1) / 2 * size - 0.5]
    for z, refmap in zip(materials, ours, strict=True):
        image = render_stock_sphere(envmap, principled_bsdf(z), size, 256, seed=3)
        stock = np.stack([map_coordinates(image[..., c], position, order=1) for c in range(3)])[:, inner]
        fast = refmap[:, inner]
        # Means over the region (a bias check; MC noise ≈ 0.3 %, the image's pixel footprint a
        # little more), then per pixel, where the stock render's 256-spp noise is ≈ 3 %.
        np.testing.assert_allclose(fast.mean(axis=1), stock.mean(axis=1), rtol=0.01)
        assert relative_rmse(fast, stock) < 0.06


def test_batched_principled_evaluates_as_each_materials_stock_plugin(rng):
    """The batch's one plugin (textures + a lane-wide specular) gives every lane exactly the value
    of its own material's stock `principled` BSDF."""
    mi = ensure_variant()
    import drjit as dr

    from rendering.direct_lighting import shading_point

    materials = rng.random((5, 6)).astype(np.float32)
    materials[:, 5] = np.maximum(materials[:, 5], 0.01)  # the update maps specular 0 to 1e-3
    lanes = PrincipledLanes(materials)
    count = 4000
    index = rng.integers(0, len(materials), count)
    normals = rng.normal(size=(count, 3))
    normals[:, 2] = np.abs(normals[:, 2]) + 0.2  # surfaces facing the viewer
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    outgoing = np.abs(rng.normal(size=(count, 3)))  # local frame, upper hemisphere
    outgoing = mi.Vector3f((outgoing / np.linalg.norm(outgoing, axis=1, keepdims=True)).T)

    def evaluate(bsdf, lane_uv):
        si = shading_point(mi, dr, mi.Vector3f(normals.T), mi.Vector3f(0, 0, 1), lane_uv)
        return np.array(bsdf.eval(mi.BSDFContext(), si, outgoing))

    batched = evaluate(lanes.bsdf, lanes.select(mi.UInt32(index)))
    for b, z in enumerate(materials):
        stock = evaluate(principled_bsdf(z), mi.Point2f(0.5, 0.5))
        np.testing.assert_allclose(batched[:, index == b], stock[:, index == b], rtol=1e-5, atol=1e-7)


def test_generic_bsdf_path_agrees_with_the_principled_path(envmap):
    """Any Mitsuba BSDF renders through the same code; for a principled plugin it agrees with the
    batched principled path (two unbiased estimators of one integral), one refmap per azimuth."""
    z = np.array([0.4, 0.7, 0.5, 0.3, 0.35, 0.6], dtype=np.float32)
    azimuths = np.array([0.0, 1.0])
    batched = render_refmaps(envmap, np.stack([z, z]), azimuths, refmap_res=16, spp=256)
    generic = render_refmaps_bsdf(envmap, principled_bsdf(z), azimuths, refmap_res=16, spp=256)
    assert generic.shape == (2, 3, 16, 16)
    np.testing.assert_allclose(generic.mean(axis=(1, 2, 3)), batched.mean(axis=(1, 2, 3)), rtol=0.01)
    assert relative_rmse(generic, batched) < 0.04
    # A delta BSDF (an ideal, fully reflecting conductor) is the envmap read in the mirror direction.
    mi = ensure_variant()
    ideal = mi.load_dict({"type": "conductor", "material": "none"})
    mirror = render_refmaps_bsdf(envmap, ideal, refmap_res=16, spp=4)[0]
    np.testing.assert_allclose(mirror, envmap_to_mirror(envmap, 16) / mirror_basis(16), rtol=1e-3, atol=1e-5)


def test_white_environment_mirror_is_its_basis_and_rough_metals_gain_no_energy():
    white = np.ones((16, 32, 3), dtype=np.float32)
    basis = mirror_basis(24)
    assert basis.shape == (3, 24, 24)
    assert 0.9 < basis.min() and basis.max() <= 1.0 + 1e-5, "a mirror reflects at most what it receives"
    mirror = render_refmaps(white, MIRROR[None], refmap_res=24, spp=64)[0]
    # The α = 0.001 GGX lobe leaves rare MIS outliers; the typical pixel is exact.
    assert np.median(np.abs(mirror / basis - 1)) < 1e-3 and np.mean(np.abs(mirror / basis - 1)) < 5e-3
    # Rough metals: bounded by 1 (single scattering loses energy, never gains it; Fresnel lifts
    # a dark base colour toward 1 at grazing angles) and smooth: under a constant environment the
    # refmap is a function of n·v alone.
    metals = np.array(
        [[1, 1, 1, 1, 0.4, 0.5], [1, 0.9, 0.5, 0.2, 0.7, 0.5], [1, 1, 1, 1, 1.0, 0.5]], dtype=np.float32
    )
    n_dot_v = normal_grid(24)[..., 2].ravel()
    for refmap in render_refmaps(white, metals, refmap_res=24, spp=256):
        assert refmap.max() <= 1.0 + 5e-3, "no energy gain under a white environment"
        for channel in refmap.reshape(3, -1):
            profile = np.polyval(np.polyfit(n_dot_v, channel, 6), n_dot_v)
            assert np.sqrt(np.mean((channel - profile) ** 2)) < 0.01 * channel.mean()


@pytest.mark.parametrize("direction", [[0.5, 0.6, 0.62], [-0.8, -0.2, 0.1], [0.3, 0.4, -0.6]])
def test_small_light_lights_the_predicted_mirror_pixel(direction):
    height, res = 32, 32
    texels = pixel_directions(height)
    target = np.asarray(direction) / np.linalg.norm(direction)
    row, col = np.unravel_index(np.argmax(texels @ target), texels.shape[:2])
    env = np.zeros((height, 2 * height, 3), dtype=np.float32)
    env[row, col] = 100.0
    expected = pixel_of(texels[row, col], res)
    # The brightest pixel is the predicted one, or its neighbour when the prediction falls near a
    # pixel border (the light is one bilinear envmap texel, wider than a refmap pixel at the rim).
    rendered = render_refmaps(env, MIRROR[None], refmap_res=res, spp=16)[0].sum(axis=0)
    assert np.abs(np.unravel_index(rendered.argmax(), rendered.shape) - expected).max() < 1
    lookup = envmap_to_mirror(env, res).sum(axis=0)
    assert np.abs(np.unravel_index(lookup.argmax(), lookup.shape) - expected).max() < 1
    assert rendered[lookup > 0].sum() > 0.99 * rendered.sum(), "nothing else is lit"


@pytest.mark.parametrize("columns", [8, 13.4])
def test_view_azimuth_equals_rendering_the_envmap_rotated_the_other_way(envmap, columns):
    phi = 2 * np.pi * columns / envmap.shape[1]
    z = np.array([[0.2, 0.9, 0.6, 0.3, 0.4, 0.5]], dtype=np.float32)
    turned = render_refmaps(envmap, z, view_azimuths=[phi], refmap_res=16, spp=256)
    rotated = render_refmaps(rotate_envmap(envmap, -phi), z, refmap_res=16, spp=256)
    # Equal up to Monte Carlo noise, measured here as the difference of two seeds.
    noise = relative_rmse(
        render_refmaps(rotate_envmap(envmap, -phi), z, refmap_res=16, spp=256, seed=1), rotated
    )
    assert relative_rmse(turned, rotated) < 1.5 * noise
    np.testing.assert_allclose(turned.mean(), rotated.mean(), rtol=0.01)
    assert relative_rmse(turned, render_refmaps(envmap, z, refmap_res=16, spp=256)) > 5 * noise, (
        "the view must matter"
    )


def test_mirror_round_trip_recovers_a_band_limited_envmap():
    height, res = 32, 64
    # An envmap sampled from a smooth function at Mitsuba's own texel directions, i.e. already
    # band-limited below the refmap's resolution (2π/R ≈ 5.6° in reflected direction).
    env = smooth_radiance(pixel_directions(height)).astype(np.float32)
    back, valid = mirror_to_envmap(envmap_to_mirror(env, res), height)
    assert back.shape == env.shape and valid.shape == env.shape[:2]
    # Two bilinear interpolations (Mitsuba's envmap lookup, then the refmap lookup) of lobes a
    # few texels wide cost ~1 % on average and a few % at the lobes' peaks.
    error = np.abs(back - env) / env
    assert error[valid].mean() < 0.015 and error[valid].max() < 0.05
    # The mask is the rim criterion n·v ≥ RIM_COS: behind the object is invalid, in front valid.
    texels = pixel_directions(height)
    n_dot_v = np.sqrt(np.maximum(texels[..., 2] + 1, 0) / 2)
    np.testing.assert_array_equal(valid, n_dot_v >= RIM_COS)
    assert valid[height // 2, height] and not valid[height // 2, 0]


def test_higher_roughness_gives_a_smoother_refmap(envmap):
    rng = np.random.default_rng(0)
    detailed = envmap * (0.5 + rng.random(envmap.shape[:2])[..., None]).astype(np.float32)
    roughness = [0.0, 0.15, 0.3, 0.5, 0.8]
    materials = np.array([[1.0, 0.9, 0.9, 0.9, r, 0.5] for r in roughness], dtype=np.float32)
    refmaps = render_refmaps(detailed, materials, refmap_res=32, spp=64)
    # High-frequency energy: the refmap minus its 3×3 box average, relative to its mean.
    padded = np.pad(refmaps, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    local = sum(padded[..., i : i + 32, j : j + 32] for i in range(3) for j in range(3)) / 9
    energy = ((refmaps - local) ** 2).mean(axis=(1, 2, 3)) / refmaps.mean(axis=(1, 2, 3)) ** 2
    assert (np.diff(energy) < 0).all(), f"high-frequency energy by roughness {roughness}: {energy}"


def test_same_seed_same_refmaps_regardless_of_batch(envmap):
    rng = np.random.default_rng(1)
    materials = rng.random((3, 6)).astype(np.float32)
    azimuths = np.array([0.3, -1.0, 2.0])
    first = render_refmaps(envmap, materials, azimuths, refmap_res=16, spp=8, seed=7)
    np.testing.assert_array_equal(
        first, render_refmaps(envmap, materials, azimuths, refmap_res=16, spp=8, seed=7)
    )
    assert not np.array_equal(
        first, render_refmaps(envmap, materials, azimuths, refmap_res=16, spp=8, seed=8)
    )
    # A material renders bit-identically alone or at another position of another batch.
    alone = render_refmaps(envmap, materials[1:2], azimuths[1:2], refmap_res=16, spp=8, seed=7)
    np.testing.assert_array_equal(alone[0], first[1])


def drm_step_pair(rng: np.random.Generator, gamma: float = 0.95, epsilon: float = 0.01) -> np.ndarray:
    """(z_k, z_{k-1}) of a random DRM process (DESIGN.md §3.4)."""
    z_final = rng.random(6)
    delta = z_final - MIRROR
    steps = max(1, int(np.floor(np.log(epsilon / np.linalg.norm(delta)) / np.log(gamma))) + 2)
    k = int(rng.integers(1, steps))
    z_k = MIRROR + gamma ** (steps - 1 - k) * delta
    return np.stack([z_k, MIRROR + gamma * (z_k - MIRROR)]).astype(np.float32)


def test_common_random_numbers_make_step_differences_precise(envmap):
    """L(z_k) − L(z_{k−1}) is far less noisy with one seed for both than with independent seeds."""
    pair = drm_step_pair(np.random.default_rng(3))
    reference = render_refmaps(envmap, pair, refmap_res=16, spp=2048, seed=100)
    reference_step = reference[0] - reference[1]
    common = render_refmaps(envmap, pair, refmap_res=16, spp=32, seed=1)
    independent = np.stack(
        [render_refmaps(envmap, pair[i : i + 1], refmap_res=16, spp=32, seed=1 + i)[0] for i in range(2)]
    )
    common_error = np.sqrt(np.mean((common[0] - common[1] - reference_step) ** 2))
    independent_error = np.sqrt(np.mean((independent[0] - independent[1] - reference_step) ** 2))
    assert independent_error > 3 * common_error


@pytest.mark.parametrize(
    "call, expected",
    [
        (lambda env: render_refmaps(env, np.ones((2, 5)), refmap_res=8, spp=1), r"\(B, 6\)"),
        (lambda env: render_refmaps(env, np.full((1, 6), 1.5), refmap_res=8, spp=1), r"\[0, 1\]"),
        (lambda env: render_refmaps(env, np.full((1, 6), np.nan), refmap_res=8, spp=1), "finite"),
        (lambda env: render_refmaps(env, np.ones((2, 6)), [0.0], refmap_res=8, spp=1), "view_azimuths"),
        (lambda env: render_refmaps(env, np.ones((1, 6)), refmap_res=8, spp=0), "samples per pixel"),
        (lambda env: render_refmaps(env[:, :40], np.ones((1, 6)), refmap_res=8, spp=1), "twice as wide"),
        (lambda env: mirror_to_envmap(np.ones((3, 8, 9)), 8), "square"),
        (lambda env: mirror_to_envmap(np.full((3, 8, 8), np.inf), 8), "finite"),
        (lambda env: render_refmaps_bsdf(env, "principled"), "Mitsuba BSDF"),
    ],
)
def test_bad_inputs_raise_input_error(envmap, call, expected):
    with pytest.raises(InputError, match=expected):
        call(envmap)


def test_cli_renders_a_mirror_refmap_and_inverts_it(tmp_path, envmap):
    from pipeline.cli import app

    write_exr(tmp_path / "env.exr", envmap)
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["render-refmap", str(tmp_path / "env.exr"), "--material", "1,1,1,1,0,1", "--refmap-res", "16",
         "--spp", "4", "--out", str(tmp_path / "mirror.exr"), "--preview", str(tmp_path / "mirror.png")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    refmap = read_hdr(tmp_path / "mirror.exr")
    assert refmap.shape == (16, 16, 3) and (tmp_path / "mirror.png").exists()
    np.testing.assert_allclose(
        np.median(refmap.transpose(2, 0, 1) / envmap_to_mirror(envmap, 16)), 1, atol=1e-3
    )
    result = runner.invoke(
        app,
        ["mirror-to-envmap", str(tmp_path / "mirror.exr"), "--out", str(tmp_path / "back.exr"),
         "--envmap-height", "8", "--mask", str(tmp_path / "mask.png")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert read_hdr(tmp_path / "back.exr").shape == (8, 16, 3)
    assert read_mask(tmp_path / "mask.png").mean() > 0.9


@pytest.mark.parametrize(
    "material, expected",
    [("1,1,1", "expected 6"), ("1,1,1,1,0,x", "not a list of numbers"), ("1,1,1,1,0,1.2", r"\[0, 1\]"),
     ("1,1,1,nan,0,1", "finite")],
)  # fmt: skip
def test_cli_rejects_bad_material_strings(tmp_path, envmap, material, expected):
    from pipeline.cli import app

    write_exr(tmp_path / "env.exr", envmap)
    args = [
        "render-refmap",
        str(tmp_path / "env.exr"),
        "--material",
        material,
        "--out",
        str(tmp_path / "o.exr"),
    ]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, InputError) and "--material" in str(result.exception)
    assert re.search(expected, str(result.exception))
    assert not (tmp_path / "o.exr").exists()


def test_cli_rejects_a_non_square_refmap(tmp_path):
    from pipeline.cli import app

    write_exr(tmp_path / "wide.exr", np.ones((8, 16, 3), dtype=np.float32))
    result = CliRunner().invoke(
        app, ["mirror-to-envmap", str(tmp_path / "wide.exr"), "--out", str(tmp_path / "e.exr")]
    )
    assert isinstance(result.exception, InputError) and "square" in str(result.exception)
    assert "wide.exr" in str(result.exception)
