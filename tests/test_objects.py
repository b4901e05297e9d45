"""Object images: the camera frame, analytic renders, scene reuse, interreflections, shapes and
meshes, and the files ``drmnet estimate`` reads."""

from __future__ import annotations

import numpy as np
import pytest

from rendering.envmap import pixel_directions
from rendering.errors import InputError
from rendering.objects import FRAME_HALF_WIDTH, ObjectRenderer, load_object, render_object, save_object
from rendering.shapes import (
    SHAPES,
    blob_radius,
    icosphere,
    load_mesh,
    make_shape,
    mesh_arrays,
    radial_shape,
    smooth_vertex_normals,
)

GREY = [0.0, 0.5, 0.5, 0.5, 0.5, 0.5]


def _light_from(axis: int, height: int = 16) -> np.ndarray:
    """An envmap lit only from the +axis hemisphere (x: 0, y: 1, z: 2)."""
    d = pixel_directions(height)
    return np.repeat(np.maximum(d[..., axis : axis + 1], 0.0) * 4.0, 3, axis=2).astype(np.float32)


@pytest.fixture(scope="module")
def sphere():
    return ObjectRenderer(make_shape("sphere"), object_res=48)


def test_camera_frame_x_right_y_up_z_toward_the_viewer(sphere):
    normals, mask = sphere.geometry()
    size = 48
    y, x = np.mgrid[0:size, 0:size]
    px = (-1 + 2 * (x + 0.5) / size) * FRAME_HALF_WIDTH
    py = (1 - 2 * (y + 0.5) / size) * FRAME_HALF_WIDTH
    inside = px**2 + py**2 < 1
    np.testing.assert_array_equal(mask, inside)
    expected = np.stack([px, py, np.sqrt(np.maximum(1 - px**2 - py**2, 0))], -1)
    np.testing.assert_allclose(normals[mask], expected[mask], atol=1e-4)
    assert not normals[~mask].any()
    # Light from +x lights the right half of the image; light from +y the top half.
    right = sphere.render(_light_from(0), GREY, spp=4).image.mean(axis=2)
    assert right[:, 36:][mask[:, 36:]].mean() > 10 * right[:, :12][mask[:, :12]].mean()
    top = sphere.render(_light_from(1), GREY, spp=4).image.mean(axis=2)
    assert top[:12][mask[:12]].mean() > 10 * top[36:][mask[36:]].mean()


def test_white_lambertian_sphere_in_a_white_world_is_white(sphere):
    # A convex white diffuser under uniform radiance L reflects exactly L everywhere; a loaded
    # Mitsuba BSDF (the route of measured materials) renders through the same scene.
    from rendering.variant import ensure_variant

    mi = ensure_variant()
    white = mi.load_dict({"type": "diffuse", "reflectance": {"type": "rgb", "value": [1.0, 1.0, 1.0]}})
    obj = sphere.render(np.full((8, 16, 3), 2.5, np.float32), white, spp=64)
    inner = obj.mask & (obj.normals[..., 2] > 0.3)
    np.testing.assert_allclose(obj.image[inner].mean(axis=0), 2.5, rtol=0.01)
    assert not obj.image[~obj.mask].any() or obj.image[~obj.mask].max() < 2.5  # black background


def test_reused_scene_matches_a_fresh_render_and_is_deterministic(sphere):
    env_a, env_b = _light_from(0), _light_from(1) + 0.1
    z_b = np.array([1.0, 0.9, 0.6, 0.3, 0.2, 0.5], np.float32)
    sphere.render(env_a, GREY, spp=4)  # the scene now holds env_a and GREY
    reused = sphere.render(env_b, z_b, spp=8, seed=3).image
    fresh = ObjectRenderer(make_shape("sphere"), object_res=48).render(env_b, z_b, spp=8, seed=3).image
    np.testing.assert_array_equal(reused, fresh)
    other_seed = sphere.render(env_b, z_b, spp=8, seed=4).image
    assert not np.array_equal(reused, other_seed)


def test_procedural_shape_renders_are_bit_for_bit_reproducible():
    """Datasets are hashed by DVC: rebuilding the same mesh and rendering it again must give the
    same bytes (Mitsuba's own vertex-normal recomputation sums in a racy order)."""
    envmap = _light_from(1) + 0.1
    material = np.array([0.2, 0.7, 0.5, 0.3, 0.4, 0.5], dtype=np.float32)
    renders = [
        render_object(envmap, make_shape("blob", 3), material, object_res=48, spp=8, seed=5) for _ in range(3)
    ]
    for other in renders[1:]:
        assert np.array_equal(other.normals, renders[0].normals)
        assert np.array_equal(other.image, renders[0].image)


def test_view_azimuth_turns_the_camera_about_y():
    # Turning the camera by +90° about +y brings the light from +x to the viewer's front.
    shape = make_shape("sphere")
    front = render_object(_light_from(0), shape, GREY, object_res=24, spp=4, view_azimuth=np.pi / 2)
    lit = render_object(_light_from(2), shape, GREY, object_res=24, spp=4)
    np.testing.assert_allclose(front.image, lit.image, atol=0.05 * lit.image.max())


def test_interreflections_light_a_crater():
    # A sphere with a deep crater facing the camera: inside it, light bounces between the walls,
    # which a direct-only render (max_depth 2: camera → surface → light) misses.
    crater = radial_shape("crater", lambda d: 1.0 - 0.6 * np.exp((d[:, 2] - 1.0) / 0.12), subdivisions=4)
    env = np.ones((8, 16, 3), np.float32)
    white = [0.0, 0.9, 0.9, 0.9, 1.0, 0.0]
    full_renderer = ObjectRenderer(crater, object_res=32)
    full = full_renderer.render(env, white, spp=16).image
    direct = ObjectRenderer(crater, object_res=32, max_depth=2).render(env, white, spp=16).image
    inside = full_renderer.geometry()[1].copy()
    inside[:, :10] = inside[:, 22:] = inside[:10] = inside[22:] = False  # the crater, mid-image
    assert full[inside].mean() > 1.1 * direct[inside].mean()


def test_perspective_camera_sees_the_whole_object():
    obj = render_object(
        np.ones((8, 16, 3), np.float32),
        make_shape("sphere"),
        GREY,
        object_res=32,
        spp=2,
        camera="perspective",
    )
    assert obj.mask.any() and not obj.mask[0].any() and not obj.mask[:, 0].any()
    assert np.allclose(np.linalg.norm(obj.normals[obj.mask], axis=-1), 1.0, atol=1e-4)


@pytest.mark.parametrize("name", [s for s in SHAPES if s != "sphere"])
def test_procedural_shapes_are_seeded_fit_the_view_and_face_outward(name):
    vertices, faces, normals = mesh_arrays(make_shape(name, seed=5, subdivisions=3))
    again, _, _ = mesh_arrays(make_shape(name, seed=5, subdivisions=3))
    other, _, _ = mesh_arrays(make_shape(name, seed=6, subdivisions=3))
    np.testing.assert_array_equal(vertices, again)
    assert not np.allclose(vertices, other)
    np.testing.assert_allclose(np.linalg.norm(vertices, axis=1).max(), 1.0, rtol=1e-6)
    assert ((vertices * normals).sum(axis=1) > 0).mean() > 0.95  # star-shaped: normals point out
    assert faces.max() < len(vertices)


def test_obj_meshes_are_normalised_and_bad_files_named(tmp_path):
    cube = tmp_path / "cube.obj"
    corners = [(x, y, z) for x in (2, 4) for y in (0, 2) for z in (-1, 1)]  # off-centre, size 2
    quads = [(1, 2, 4, 3), (5, 7, 8, 6), (1, 5, 6, 2), (3, 4, 8, 7), (1, 3, 7, 5), (2, 6, 8, 4)]
    cube.write_text(
        "".join(f"v {x} {y} {z}\n" for x, y, z in corners)
        + "".join(f"f {a} {b} {c} {d}\n" for a, b, c, d in quads)
    )
    vertices, faces, _ = mesh_arrays(load_mesh(cube))
    np.testing.assert_allclose(vertices.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vertices, axis=1), 1.0, rtol=1e-6)
    assert len(faces) == 12
    obj = render_object(np.ones((8, 16, 3), np.float32), load_mesh(cube), GREY, object_res=24, spp=2)
    assert obj.mask.mean() > 0.2

    (tmp_path / "junk.obj").write_text("this is not a mesh\n")
    with pytest.raises(InputError, match="junk.obj"):
        load_mesh(tmp_path / "junk.obj")
    (tmp_path / "cube.stl").write_text("solid cube\n")
    with pytest.raises(InputError, match="unsupported mesh format"):
        load_mesh(tmp_path / "cube.stl")
    with pytest.raises(InputError, match="does not exist"):
        load_mesh(tmp_path / "missing.ply")
    with pytest.raises(InputError, match="unknown shape"):
        make_shape("torus")


def _write_obj(path, vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray | None = None) -> None:
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices]
    if normals is None:
        lines += [f"f {a} {b} {c}" for a, b, c in faces + 1]
    else:
        lines += [f"vn {x:.6f} {y:.6f} {z:.6f}" for x, y, z in normals]
        lines += [f"f {a}//{a} {b}//{b} {c}//{c}" for a, b, c in faces + 1]
    path.write_text("\n".join(lines) + "\n")


def test_a_user_mesh_without_normals_renders_bit_for_bit_reproducibly(tmp_path):
    """A user's OBJ without ``vn`` lines gets the numpy smooth normals, not Mitsuba's loader's
    (summed with racy atomics: on a mesh this size their last bits change from load to load)."""
    directions, faces = icosphere(5)  # 10 242 vertices
    vertices = directions * blob_radius(directions, np.random.default_rng(2))[:, None]
    bare = tmp_path / "blob.obj"
    _write_obj(bare, vertices, faces)
    loads = [mesh_arrays(load_mesh(bare)) for _ in range(6)]
    for positions, triangles, normals in loads:
        np.testing.assert_array_equal(normals, smooth_vertex_normals(positions, triangles))
        assert np.array_equal(normals, loads[0][2])
    envmap = _light_from(1) + 0.1
    material = np.array([0.2, 0.7, 0.5, 0.3, 0.4, 0.5], dtype=np.float32)
    first, second = (
        render_object(envmap, load_mesh(bare), material, object_res=32, spp=4, seed=1) for _ in range(2)
    )
    assert first.mask.any()
    assert np.array_equal(first.normals, second.normals)
    assert np.array_equal(first.image, second.image)

    # Normals the file does hold are kept as they are.
    tilted = np.tile(np.array([0.6, 0.0, 0.8]), (len(vertices), 1))
    _write_obj(tmp_path / "tilted.obj", vertices, faces, tilted)
    np.testing.assert_allclose(mesh_arrays(load_mesh(tmp_path / "tilted.obj"))[2], tilted, atol=1e-6)


def test_bad_materials_and_envmaps_are_refused(sphere):
    with pytest.raises(InputError, match="6 values"):
        sphere.render(np.ones((8, 16, 3), np.float32), [0.5] * 5)
    with pytest.raises(InputError, match=r"in \[0, 1\]"):
        sphere.render(np.ones((8, 16, 3), np.float32), [0.5, 0.5, 0.5, 0.5, 1.5, 0.5])
    with pytest.raises(InputError, match="twice as wide"):
        sphere.render(np.ones((8, 8, 3), np.float32), GREY)


def test_saved_object_round_trips_atomically(tmp_path, sphere):
    obj = sphere.render(_light_from(1), GREY, spp=2)
    directory = save_object(tmp_path / "object", obj)
    assert sorted(p.name for p in directory.iterdir()) == ["image.exr", "mask.png", "normals.npy"]
    loaded = load_object(directory)
    np.testing.assert_array_equal(loaded.image, obj.image)
    np.testing.assert_array_equal(loaded.normals, obj.normals)
    np.testing.assert_array_equal(loaded.mask, obj.mask)
    assert np.load(directory / "normals.npy").dtype == np.float32
