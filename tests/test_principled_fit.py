"""The principled material vector of a measured BRDF (``rendering.principled_fit``): the refmap
fit recovers a principled table, beats the reflectance fit on an out-of-model material under
light it never saw, is deterministic, and is cached beside the tables."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rendering.builtin_materials import builtin_material
from rendering.errors import InputError
from rendering.principled_fit import fit_key, fit_principled, refmap_error, tabulate_principled
from rendering.procedural_envmaps import make_envmap

DIELECTRIC = np.array([0.0, 0.7, 0.3, 0.2, 0.4, 0.5])  # [metallic, r, g, b, roughness, specular]
HELD_OUT = (("sky", 11), ("studio", 13))  # (kind, seed): lighting the fit never sees


@pytest.fixture(scope="module")
def held_out() -> list[np.ndarray]:
    return [make_envmap(kind, seed, 32) for kind, seed in HELD_OUT]


@pytest.fixture(scope="module")
def satin():
    """An Ashikhmin–Shirley material: no principled z reproduces it."""
    return builtin_material("green-satin")


def test_refmap_fit_recovers_a_principled_table(held_out):
    table = tabulate_principled(DIELECTRIC, "dielectric")
    z = fit_principled(table)
    for envmap in held_out:
        # As close as the true material itself (the rest is the table's resolution and noise).
        fitted, truth = refmap_error(table, np.stack([z, DIELECTRIC]), envmap, refmap_res=16, spp=128)
        assert fitted < truth + 0.003 and truth < 0.03, (fitted, truth)
    # Identifiable from refmaps: metal or not, base colour, roughness; specular only roughly.
    assert abs(z[0] - DIELECTRIC[0]) < 0.05
    np.testing.assert_allclose(z[1:4], DIELECTRIC[1:4], atol=0.03)
    assert abs(z[4] - DIELECTRIC[4]) < 0.03
    assert abs(z[5] - DIELECTRIC[5]) < 0.15


def test_refmap_fit_is_deterministic_cached_and_beats_the_reflectance_fit(satin, held_out, tmp_path):
    z_reflectance = fit_principled(satin, method="reflectance")
    z = fit_principled(satin, cache_dir=tmp_path)

    # Closer to what a user sees under light the fit never saw.
    for envmap in held_out:
        old, new = refmap_error(satin, np.stack([z_reflectance, z]), envmap, refmap_res=32, spp=128)
        assert new < 0.9 * old, (old, new)

    # Stored beside the tables, keyed by the table's content and the fit.
    (path,) = tmp_path.glob("green-satin.z-*.json")
    record = json.loads(path.read_text())
    assert record["key"] == fit_key(satin, "refmap") and record["method"] == "refmap"
    assert record["z"] == z.tolist()
    assert not list(tmp_path.glob("*.tmp"))

    # Deterministic: a fresh fit gives the same bits.
    np.testing.assert_array_equal(fit_principled(satin), z)

    # The second call reads the file instead of fitting: it returns what the file holds.
    planted = np.full(6, 0.25)
    path.write_text(json.dumps({**record, "z": planted.tolist()}))
    np.testing.assert_array_equal(fit_principled(satin, cache_dir=tmp_path), planted)

    # Another table, or the other method, has its own key; a damaged file is fitted anew.
    assert fit_key(satin, "reflectance") != record["key"]
    assert fit_key(builtin_material("silver-ward"), "refmap") != record["key"]
    path.write_text(json.dumps(record)[:40])
    np.testing.assert_array_equal(fit_principled(satin, cache_dir=tmp_path), z)
    assert json.loads(path.read_text())["z"] == z.tolist()


def test_fit_principled_rejects_an_unknown_method(satin):
    with pytest.raises(InputError, match="unknown principled fit 'mirror'"):
        fit_principled(satin, method="mirror")


def test_fit_beside_a_measured_object_render_on_another_thread(satin):
    """The dataset flow's threads fit materials while others render objects with measured BSDFs.
    Dr.Jit is not thread-safe across Python threads, so the fit must hold the render lock: both
    finish, and the fit equals the one made alone."""
    import threading

    from rendering.measured_bsdf import measured_bsdf
    from rendering.objects import render_object
    from rendering.shapes import make_shape
    from rendering.variant import RENDER_LOCK

    alone = fit_principled(satin)
    envmap = make_envmap("studio", 3, 16)
    errors: list[BaseException] = []
    done = threading.Event()

    def render_objects() -> None:
        try:
            while not done.is_set():
                with RENDER_LOCK:
                    render_object(
                        envmap, make_shape("blob", 1), measured_bsdf(satin, alone), object_res=48, spp=8
                    )
        except BaseException as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    renderer = threading.Thread(target=render_objects)
    renderer.start()
    try:
        beside = fit_principled(satin)
    finally:
        done.set()
        renderer.join()
    assert not errors, errors
    np.testing.assert_array_equal(beside, alone)
