"""Measured BRDFs: the MERL file format, table lookups, the Mitsuba ``merl`` BSDF (eval, pdf,
sampling, renders), the principled fit and the built-in measured-like materials."""

from __future__ import annotations

import drjit as dr
import numpy as np
import pytest

from rendering.builtin_materials import BUILTIN_NAMES, builtin_materials, load_measured_dir
from rendering.errors import InputError
from rendering.measured_bsdf import measured_bsdf
from rendering.merl import (
    CHANNEL_SCALES,
    DATA_BYTES,
    HEADER_BYTES,
    TABLE_SHAPE,
    MerlBrdf,
    angles_to_directions,
    read_merl,
    write_merl,
)
from rendering.principled_fit import fit_error, fit_principled, principled_brdf, tabulate_principled
from rendering.refmap import render_refmaps, render_refmaps_bsdf
from rendering.variant import ensure_variant

PLASTIC = np.array([0.0, 0.7, 0.3, 0.2, 0.4, 0.5])  # [metallic, r, g, b, roughness, specular]
METAL = np.array([1.0, 0.9, 0.7, 0.3, 0.25, 0.5])


@pytest.fixture(scope="module")
def plastic() -> MerlBrdf:
    return tabulate_principled(PLASTIC, "plastic")


def random_directions(rng: np.random.Generator, n: int) -> np.ndarray:
    """n uniform directions on the upper hemisphere (n, 3)."""
    v = rng.normal(size=(n, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    v[:, 2] = np.abs(v[:, 2])
    return v


def plugin_call(bsdf, wi: np.ndarray):
    """(mi, BSDFContext, SurfaceInteraction3f) for local view directions wi (N, 3)."""
    mi = ensure_variant()
    si = dr.zeros(mi.SurfaceInteraction3f, len(wi))
    si.n = mi.Normal3f(0.0, 0.0, 1.0)
    si.sh_frame = mi.Frame3f(si.n)
    si.wi = mi.Vector3f(np.asarray(wi, dtype=np.float32).T)
    return mi, mi.BSDFContext(), si


def vec(mi, v: np.ndarray):
    return mi.Vector3f(np.asarray(v, dtype=np.float32).T)


def rgb(value) -> np.ndarray:
    return np.array(value, dtype=np.float64).reshape(3, -1).T


# -- file format -------------------------------------------------------------------------------


def test_merl_file_round_trip_keeps_table_missing_samples_and_layout(tmp_path, rng):
    table = rng.random(TABLE_SHAPE).astype(np.float32) * 5.0
    table[:, :, 85:, :3] = -1.0  # missing samples survive the round trip
    path = write_merl(tmp_path / "sample.binary", MerlBrdf(table, "sample"))
    read = read_merl(path)
    np.testing.assert_allclose(read.table, table, rtol=1e-7)
    assert read.name == "sample" and read.missing_fraction > 0
    assert not list(tmp_path.glob(".*")), "no temporary file may be left behind"
    # The documented layout: int32 (90, 90, 180), then channel-major float64 divided by the scales.
    raw = path.read_bytes()
    assert len(raw) == HEADER_BYTES + DATA_BYTES
    assert np.frombuffer(raw[:HEADER_BYTES], "<i4").tolist() == [90, 90, 180]
    data = np.frombuffer(raw[HEADER_BYTES:], "<f8").reshape(TABLE_SHAPE)
    np.testing.assert_allclose(data[2, 7, 8, 9], table[2, 7, 8, 9] / CHANNEL_SCALES[2], rtol=1e-6)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda raw: raw[: HEADER_BYTES + 1000], "truncated"),
        (lambda raw: raw[:7], "truncated"),
        (lambda raw: np.array([90, 90, 360], "<i4").tobytes() + raw[HEADER_BYTES:], "dimensions"),
        (lambda raw: raw + b"\0" * 16, "beyond"),
        (lambda raw: raw[:HEADER_BYTES] + np.full(DATA_BYTES // 8, np.nan).tobytes(), "NaN"),
    ],
)
def test_bad_merl_files_raise_input_error_naming_the_file(tmp_path, plastic, corrupt, message):
    good = write_merl(tmp_path / "good.binary", plastic)
    bad = tmp_path / "bad.binary"
    bad.write_bytes(corrupt(good.read_bytes()))
    with pytest.raises(InputError, match=message) as error:
        read_merl(bad)
    assert "bad.binary" in str(error.value)
    # A user's directory names every bad file at once.
    with pytest.raises(InputError, match="1 of 2 MERL files") as error:
        load_measured_dir(tmp_path)
    assert "bad.binary" in str(error.value) and "good.binary" not in str(error.value)


# -- lookups ------------------------------------------------------------------------------------


def test_table_lookup_follows_the_merl_parametrisation(rng):
    """A table of a known function of (θ_h, θ_d, φ_d) returns that function at any direction
    pair: checks the sqrt θ_h bins, the half/difference rotation and the φ_d folding."""

    def smooth(theta_h, theta_d, phi_d):
        return np.stack([1.0 + np.cos(theta_h), 1.0 + theta_d, 1.0 + 0.3 * np.cos(2.0 * phi_d)], -1)

    def brdf(wi, wo):
        from rendering.merl import half_diff_angles

        return smooth(*half_diff_angles(wi, wo))

    table = MerlBrdf.from_function(brdf)
    # Inside the first/last bin centres, where the clamped lookup is not yet constant.
    angles = (rng.uniform(0.01, 1.2, 5000), rng.uniform(0.01, 1.2, 5000), rng.uniform(0, 2 * np.pi, 5000))
    wi, wo = angles_to_directions(*angles)
    # Rotating the pair about the normal and swapping wi, wo (reciprocity) change nothing.
    turn = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(turn), -np.sin(turn), 0], [np.sin(turn), np.cos(turn), 0], [0, 0, 1]])
    # Away from the horizon, where the neighbouring bins are measured, not filled.
    above = (wi[:, 2] > 0.05) & (wo[:, 2] > 0.05)
    expected = smooth(*angles)[above]
    for a, b in ((wi, wo), (wo @ rot.T, wi @ rot.T)):
        np.testing.assert_allclose(table.eval(a, b)[above], expected, rtol=2e-3)
        # Nearest lookup: the value at the bin centre, within one bin's variation.
        np.testing.assert_allclose(table.eval(a, b, "nearest")[above], expected, rtol=0.03)
    below = wo * np.array([1.0, 1.0, -1.0])
    below[:, 2] = -np.abs(below[:, 2])
    assert np.all(table.eval(wi, below) == 0.0), "no reflection below the surface"


def test_plugin_eval_matches_the_table_lookup(plastic, rng):
    wi, wo = random_directions(rng, 4000), random_directions(rng, 4000)
    for filter in ("linear", "nearest"):
        bsdf = measured_bsdf(plastic, proxy_z=PLASTIC, filter=filter)
        mi, ctx, si = plugin_call(bsdf, wi)
        value = rgb(bsdf.eval(ctx, si, vec(mi, wo)))
        expected = plastic.eval(wi, wo, filter) * wo[:, 2:3]
        np.testing.assert_allclose(value, expected, rtol=1e-3, atol=1e-5 * expected.max())
    # The table is a scene parameter: updating it through mi.traverse changes the BSDF.
    params = mi.traverse(bsdf)
    params["table"] = params["table"] * 0.5
    params.update()
    np.testing.assert_allclose(rgb(bsdf.eval(ctx, si, vec(mi, wo))), 0.5 * value, rtol=1e-5, atol=1e-7)


def test_principled_table_is_within_one_percent_of_principled(plastic, rng):
    wi, wo = random_directions(rng, 20000), random_directions(rng, 20000)
    weight = (wi[:, 2] * wo[:, 2])[:, None]
    error = np.abs(plastic.eval(wi, wo) - principled_brdf(PLASTIC, wi, wo)) * weight
    assert error.mean() < 0.01 * (principled_brdf(PLASTIC, wi, wo) * weight).mean()


# -- sampling -----------------------------------------------------------------------------------


def hemisphere_grid(n_u: int, n_phi: int):
    """Midpoints of an equal-area grid on the hemisphere: directions (n_u·n_phi, 3), cell dω."""
    u = (np.arange(n_u) + 0.5) / n_u  # cos θ
    phi = (np.arange(n_phi) + 0.5) / n_phi * 2 * np.pi
    uu, pp = np.meshgrid(u, phi, indexing="ij")
    s = np.sqrt(1 - uu**2)
    dirs = np.stack([s * np.cos(pp), s * np.sin(pp), uu], -1).reshape(-1, 3)
    return dirs, (1.0 / n_u) * (2 * np.pi / n_phi)


@pytest.mark.parametrize("theta_i", [0.3, 1.1])
def test_sampling_density_integrates_to_one_and_matches_the_samples(theta_i, rng):
    brdf = tabulate_principled(METAL)
    bsdf = measured_bsdf(brdf, proxy_z=METAL)
    n_u, n_phi, sub = 16, 32, 24  # histogram bins, each integrated on sub×sub cells
    grid, cell = hemisphere_grid(n_u * sub, n_phi * sub)
    wi_dir = np.array([np.sin(theta_i), 0.0, np.cos(theta_i)])
    mi, ctx, si = plugin_call(bsdf, np.tile(wi_dir, (len(grid), 1)))
    pdf = np.array(bsdf.pdf(ctx, si, vec(mi, grid)), dtype=np.float64)
    assert abs(pdf.sum() * cell - 1.0) < 0.02
    expected = pdf.reshape(n_u, sub, n_phi, sub).sum(axis=(1, 3)) * cell

    n = 200_000
    mi, ctx, si = plugin_call(bsdf, np.tile(wi_dir, (n, 1)))
    s1 = mi.Float(rng.random(n).astype(np.float32))
    s2 = mi.Point2f(rng.random((2, n)).astype(np.float32))
    bs, weight = bsdf.sample(ctx, si, s1, s2)
    wo = np.array(bs.wo, dtype=np.float64).T
    wo = wo[(wo[:, 2] > 0) & (np.array(bs.pdf) > 0)]  # failed samples carry no weight
    u_bin = np.clip((wo[:, 2] * n_u).astype(int), 0, n_u - 1)
    phi_bin = (np.mod(np.arctan2(wo[:, 1], wo[:, 0]), 2 * np.pi) / (2 * np.pi) * n_phi).astype(int) % n_phi
    observed = np.zeros((n_u, n_phi))
    np.add.at(observed, (u_bin, phi_bin), 1.0)
    counts = expected * n
    used = counts > 20
    chi2_per_bin = ((observed - counts)[used] ** 2 / counts[used]).mean()
    assert chi2_per_bin < 1.5, f"samples do not follow pdf: χ²/bin = {chi2_per_bin:.2f}"
    # The sample weight is eval / pdf at the sampled direction, and bs.pdf is that pdf.
    value, pdf_at = bsdf.eval_pdf(ctx, si, bs.wo)
    np.testing.assert_allclose(np.array(bs.pdf), np.array(pdf_at), rtol=1e-4)
    ok = np.array(pdf_at) > 0
    np.testing.assert_allclose(rgb(weight)[ok], rgb(value)[ok] / np.array(pdf_at)[ok, None], rtol=1e-3)


# -- renders -------------------------------------------------------------------------------------


def studio_envmap(height: int = 32) -> np.ndarray:
    """A smooth sky with a broad warm key light: (H, 2H, 3)."""
    from rendering.envmap import pixel_directions

    d = pixel_directions(height)
    key = np.array([0.5, 0.6, 0.62])
    key /= np.linalg.norm(key)
    glow = np.exp(8.0 * (d @ key - 1.0))[..., None] * np.array([6.0, 5.0, 4.0])
    return (0.2 + 0.4 * np.clip(d[..., 1:2], 0, 1) * np.array([0.4, 0.6, 1.0]) + glow).astype(np.float32)


def test_measured_table_of_a_principled_material_renders_like_it(plastic):
    """The refmap of the tabulated material matches the principled BSDF's within 2 %
    (tabulation + Monte Carlo error at 128 spp on a 16² refmap)."""
    envmap = studio_envmap()
    principled = render_refmaps(envmap, PLASTIC[None], refmap_res=16, spp=128, seed=3)[0]
    measured = render_refmaps_bsdf(
        envmap, measured_bsdf(plastic, proxy_z=PLASTIC), refmap_res=16, spp=128, seed=3
    )[0]
    relative = np.sqrt(np.mean((measured - principled) ** 2)) / np.sqrt(np.mean(principled**2))
    assert relative < 0.02, f"relative RMSE {relative:.4f}"


# -- fitting and the built-in set -----------------------------------------------------------------


@pytest.mark.parametrize("z", [PLASTIC, METAL], ids=["plastic", "metal"])
def test_reflectance_fit_recovers_a_known_material(z):
    brdf = tabulate_principled(z)
    fitted = fit_principled(brdf, method="reflectance")
    # What a rendering sees: the fitted BRDF reproduces the table.
    assert fit_error(brdf, fitted) < 0.01
    # What is identifiable: roughness, base colour, and whether it is a metal. Specular does not
    # act on a metal (metallic = 1), so only the dielectric's is checked.
    assert abs(fitted[4] - z[4]) < 0.02
    np.testing.assert_allclose(fitted[1:4], z[1:4], atol=0.03)
    assert abs(fitted[0] - z[0]) < 0.05
    if z[0] == 0.0:
        assert abs(fitted[5] - z[5]) < 0.1


def test_builtin_materials_are_physical_out_of_model_and_cached(tmp_path, rng):
    materials = builtin_materials(2, cache_dir=tmp_path)
    assert list(materials) == list(BUILTIN_NAMES[:2])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{name}.binary" for name in materials)
    cached = builtin_materials(2, cache_dir=tmp_path)
    n = 100_000
    u = rng.random((n, 2))  # cosine-weighted directions: albedo = mean(π f)
    wo = np.stack(
        [
            np.sqrt(u[:, 0]) * np.cos(2 * np.pi * u[:, 1]),
            np.sqrt(u[:, 0]) * np.sin(2 * np.pi * u[:, 1]),
            np.sqrt(1 - u[:, 0]),
        ],
        1,
    )
    for name, brdf in materials.items():
        np.testing.assert_array_equal(cached[name].table, brdf.table)
        assert brdf.missing_fraction == 0.0
        for theta in (0.2, 1.0):
            wi = np.tile([np.sin(theta), 0.0, np.cos(theta)], (n, 1))
            albedo = (np.pi * brdf.eval(wi, wo)).mean(axis=0)
            assert np.all(albedo > 0.02) and np.all(albedo < 1.02), f"{name}: albedo {albedo}"
        # Not exactly principled: the closest principled material leaves a visible difference.
        assert fit_error(brdf, fit_principled(brdf, method="reflectance")) > 0.01, name
