"""Object images: a shape of known geometry under an environment map, with its normals and mask.

Camera: on the +z axis looking along −z, up +y, so the camera frame is the world frame of
DESIGN.md §3.1 (x right, y up, z toward the viewer). ``orthographic`` frames [−1.05, 1.05]² (the
unit bounding sphere of every shape plus a margin); ``perspective`` sits at distance 4 with the
field of view that frames the same bounding sphere. Image row 0 is the top (+y), column 0 the left.

Light: Mitsuba's ``envmap`` emitter with identity ``to_world`` (DESIGN.md §3.2); a view azimuth φ
is rendered as the envmap rotated by −φ (:func:`rendering.envmap.rotate_envmap`). The background
is black (emitters hidden from camera rays).

Transport: Mitsuba's ``path`` integrator with up to ``MAX_DEPTH`` = 8 path vertices. Unlike a
refmap (a convex sphere, direct light only), real shapes are non-convex: light bounces between
their parts, and a network trained on such images must see that. Each pixel averages ``spp``
rays jittered uniformly over its square (a box filter), so silhouette pixels mix object and
background; :func:`rendering.observation.image_to_refmap` erodes them away.

Normals and mask: one first-hit ray per pixel centre (``Scene.ray_intersect``): the shading normal
(interpolated vertex normals) in the camera frame, zero outside; the mask is where that ray hits.

Materials: a material vector z (6,) is Mitsuba's ``principled`` BSDF with every other parameter 0
(DESIGN.md §3.3); a loaded Mitsuba BSDF (e.g. the measured MERL plugin) is used as it is.
:class:`ObjectRenderer` builds the scene once per shape and camera and updates the envmap and the
principled parameters in place (``mi.traverse`` + ``params.update()``), so rendering many
materials and envmaps does not reload or recompile anything (a different BSDF object, or an
envmap of another height, rebuilds the scene; the compiled kernels are still reused).

Rays are generated inside the path tracer's kernel (pixel index + sampler jitter), and the
channels are evaluated together, so a render costs what Mitsuba's own ``mi.render`` costs
(``benchmarks/objects.py`` compares them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fileio.atomic import atomic_write
from rendering.envmap import rotate_envmap, validate_envmap
from rendering.errors import InputError
from rendering.principled import principled_dict, validate_material
from rendering.variant import ensure_variant

CAMERAS = ("orthographic", "perspective")
FRAME_HALF_WIDTH = 1.05  # the unit bounding sphere plus a margin
PERSPECTIVE_DISTANCE = 4.0
MAX_DEPTH = 8
MAX_LANES = 1 << 24  # rays per kernel launch (512² × 64 spp fits in one); more go in further passes
IMAGE_FILE, NORMALS_FILE, MASK_FILE = "image.exr", "normals.npy", "mask.png"


@dataclass(frozen=True)
class ObjectImage:
    """A rendered (or loaded) observation of an object.

    image   (H, W, 3) float32 linear HDR radiance
    normals (H, W, 3) float32 unit camera-frame normals (x right, y up, z toward the viewer), 0 outside
    mask    (H, W) bool, True where the pixel centre sees the object
    """

    image: np.ndarray
    normals: np.ndarray
    mask: np.ndarray


def _image_plane_ray(x, y, camera: str, sqrt):
    """Image-plane coordinates x, y ∈ [−1, 1] (right, up) → ray (origin xyz, direction xyz), as
    tuples of arrays or scalars. Plain arithmetic, so the same code serves NumPy arrays (normals,
    mask) and Dr.Jit arrays (the rays of the path tracer, generated inside its kernel)."""
    if camera == "orthographic":
        return (x * FRAME_HALF_WIDTH, y * FRAME_HALF_WIDTH, 10.0), (0.0, 0.0, -1.0)
    # Perspective: the image-plane half-width tan(half_fov) frames the unit sphere plus margin.
    tan_half = FRAME_HALF_WIDTH / np.sqrt(PERSPECTIVE_DISTANCE**2 - FRAME_HALF_WIDTH**2)
    dx, dy = x * tan_half, y * tan_half
    inverse_length = 1.0 / sqrt(dx * dx + dy * dy + 1.0)
    return (0.0, 0.0, PERSPECTIVE_DISTANCE), (dx * inverse_length, dy * inverse_length, -inverse_length)


def camera_rays(
    object_res: int, camera: str, pixels: np.ndarray | None = None, jitter: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Ray origins and unit directions (N, 3) for flat pixel indices ``pixels`` (N,) of an image
    of object_res × object_res pixels (row-major from the top-left; default: every pixel once).
    ``jitter`` (N, 2) in [0, 1)² places each ray inside its pixel (default: the pixel centre)."""
    if camera not in CAMERAS:
        raise InputError(f"camera {camera!r}", f"unknown camera; choose one of {CAMERAS}")
    pixels = np.arange(object_res * object_res) if pixels is None else pixels
    rows, cols = np.divmod(pixels, object_res)
    offset = np.full((len(pixels), 2), 0.5) if jitter is None else jitter
    x = -1.0 + 2.0 * (cols + offset[:, 0]) / object_res  # −1 left … +1 right
    y = 1.0 - 2.0 * (rows + offset[:, 1]) / object_res  # +1 top … −1 bottom
    origin, direction = _image_plane_ray(x, y, camera, np.sqrt)
    return np.stack(np.broadcast_arrays(*origin, x), axis=1)[:, :3], np.stack(
        np.broadcast_arrays(*direction, x), axis=1
    )[:, :3]


def _mitsuba_ray(mi, origins: np.ndarray, directions: np.ndarray):
    return mi.RayDifferential3f(
        mi.Ray3f(mi.Point3f(*origins.T.astype(np.float32)), mi.Vector3f(*directions.T.astype(np.float32)))
    )


def columns(value) -> np.ndarray:
    """A Dr.Jit vector/colour of N lanes (e.g. ``Color3f``) → float64 (N, C). Its components are
    evaluated in ONE kernel first: converting them one by one would rerun the whole computation
    (a path tracer, say) once per component."""
    import drjit as dr

    dr.eval(value)
    return np.stack([np.asarray(component.numpy(), dtype=np.float64) for component in value], axis=1)


def _padded_envmap(envmap: np.ndarray) -> np.ndarray:
    """The layout Mitsuba's ``envmap`` keeps internally: one wrapped column on each side."""
    return np.concatenate([envmap[:, -1:], envmap, envmap[:, :1]], axis=1)


class ObjectRenderer:
    """Renders one shape with one camera under many envmaps and materials, reusing the scene.

    shape: a Mitsuba mesh or shape dict (:func:`rendering.shapes.make_shape` / ``load_mesh``);
    object_res: image side in pixels; camera: ``orthographic`` | ``perspective``; max_depth: path
    vertices (2 = direct light only).
    """

    def __init__(
        self, shape, object_res: int = 256, camera: str = "orthographic", max_depth: int = MAX_DEPTH
    ):
        if camera not in CAMERAS:
            raise InputError(f"camera {camera!r}", f"unknown camera; choose one of {CAMERAS}")
        self.shape, self.object_res, self.camera, self.max_depth = shape, int(object_res), camera, max_depth
        self._scene = None
        self._key = None  # (envmap height, material kind / BSDF id) the scene was built for
        self._normals = None
        self._mask = None

    def _shape_with(self, bsdf):
        from rendering.shapes import mesh_arrays, mesh_from_arrays

        if isinstance(self.shape, dict):
            return {**self.shape, "bsdf": bsdf}
        vertices, faces, normals = mesh_arrays(self.shape)
        return mesh_from_arrays(self.shape.id() or "object", vertices, faces, bsdf=bsdf, normals=normals)

    def _build(self, envmap: np.ndarray, material) -> None:
        mi = ensure_variant()
        bsdf = mi.load_dict(principled_dict(material)) if isinstance(material, np.ndarray) else material
        self._scene = mi.load_dict(
            {
                "type": "scene",
                "object": self._shape_with(bsdf),
                "emitter": {"type": "envmap", "bitmap": mi.Bitmap(envmap)},
            }
        )
        self._integrator = mi.load_dict({"type": "path", "max_depth": self.max_depth, "hide_emitters": True})
        self._params = mi.traverse(self._scene)
        self._bsdf_prefix = next(
            (k[: -len("metallic.value")] for k in self._params.keys() if k.endswith("bsdf.metallic.value")),
            None,
        )

    def geometry(self) -> tuple[np.ndarray, np.ndarray]:
        """(normals (H, W, 3) float32, mask (H, W) bool) from first-hit rays through pixel centres."""
        if self._normals is None:
            import drjit as dr

            mi = ensure_variant()
            scene = (
                self._scene
                if self._scene is not None
                else mi.load_dict(
                    {"type": "scene", "object": self._shape_with(mi.load_dict({"type": "diffuse"}))}
                )
            )
            si = scene.ray_intersect(_mitsuba_ray(mi, *camera_rays(self.object_res, self.camera)))
            valid = si.is_valid()
            dr.eval(valid, si.sh_frame.n)  # one kernel for both
            hit = valid.numpy().astype(bool)
            normals = columns(si.sh_frame.n).astype(np.float32)
            normals[~hit] = 0.0
            normals[hit] /= np.linalg.norm(normals[hit], axis=1, keepdims=True)
            self._normals = normals.reshape(self.object_res, self.object_res, 3)
            self._mask = hit.reshape(self.object_res, self.object_res)
        return self._normals, self._mask

    def render(
        self, envmap: np.ndarray, material, spp: int = 64, seed: int = 0, view_azimuth: float = 0.0
    ) -> ObjectImage:
        """Render under ``envmap`` (H, 2H, 3) with ``material``: z (6,) or a loaded Mitsuba BSDF.

        ``view_azimuth`` (radians) turns the camera about +y, i.e. the envmap by −φ. Deterministic
        for a given ``seed``.
        """
        import drjit as dr

        mi = ensure_variant()
        envmap = validate_envmap(envmap)
        if view_azimuth:
            envmap = rotate_envmap(envmap, -view_azimuth)
        is_vector = not isinstance(material, mi.BSDF)
        if is_vector:
            material = validate_material(material)
        key = (envmap.shape[0], "principled" if is_vector else id(material))
        if self._scene is None or key != self._key:
            self._build(envmap, material)
            self._key = key
        else:
            self._params["emitter.data"] = mi.TensorXf(_padded_envmap(envmap))
            if is_vector:
                self._set_principled(material)
            self._params.update()

        n_pixels = self.object_res * self.object_res
        per_pass = max(1, min(spp, MAX_LANES // n_pixels))
        total = np.zeros((n_pixels, 3), dtype=np.float64)
        done = 0
        for index in range(-(-spp // per_pass)):
            count = min(per_pass, spp - done)
            sampler = mi.load_dict({"type": "independent"})
            sampler.seed(
                int(np.uint32((seed * 0x9E3779B1 + index * 0x85EBCA77) & 0xFFFFFFFF)), n_pixels * count
            )
            # Rays are generated inside the kernel: lane i is sample i % count of pixel i // count.
            pixel = dr.arange(mi.UInt32, n_pixels * count) // count
            row = pixel // self.object_res
            jitter = sampler.next_2d()
            x = -1.0 + 2.0 * (mi.Float(pixel - row * self.object_res) + jitter.x) / self.object_res
            y = 1.0 - 2.0 * (mi.Float(row) + jitter.y) / self.object_res
            origin, direction = _image_plane_ray(x, y, self.camera, dr.sqrt)
            ray = mi.RayDifferential3f(mi.Ray3f(mi.Point3f(*origin), mi.Vector3f(*direction)))
            radiance, _, _ = self._integrator.sample(self._scene, sampler, ray)
            dr.eval(radiance)  # all three channels in one kernel, before the per-pixel sums
            total += columns(dr.block_sum(radiance, count))
            done += count
        image = (total / spp).astype(np.float32).reshape(self.object_res, self.object_res, 3)
        normals, mask = self.geometry()
        return ObjectImage(image=image, normals=normals, mask=mask)

    def _set_principled(self, z: np.ndarray) -> None:
        prefix = self._bsdf_prefix
        self._params[prefix + "metallic.value"] = float(z[0])
        self._params[prefix + "base_color.value"] = ensure_variant().Color3f(*[float(v) for v in z[1:4]])
        self._params[prefix + "roughness.value"] = float(z[4])
        self._params[prefix + "specular"] = float(z[5])


def render_object(
    envmap: np.ndarray,
    shape,
    material,
    object_res: int = 256,
    spp: int = 64,
    seed: int = 0,
    camera: str = "orthographic",
    view_azimuth: float = 0.0,
) -> ObjectImage:
    """Render ``shape`` under ``envmap`` (H, 2H, 3) with ``material`` (z (6,) or a Mitsuba BSDF).

    One-off convenience around :class:`ObjectRenderer`; use the class to render many materials or
    envmaps with one shape (the scene is then built once).
    """
    return ObjectRenderer(shape, object_res=object_res, camera=camera).render(
        envmap, material, spp=spp, seed=seed, view_azimuth=view_azimuth
    )


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_write(path, suffix=".npy") as tmp:  # np.save appends .npy to any other name
        np.save(tmp, array)


def save_object(directory: str | os.PathLike, obj: ObjectImage) -> Path:
    """Write ``image.exr``, ``normals.npy`` (float32 (H, W, 3)) and ``mask.png`` into ``directory``:
    the files ``drmnet estimate`` reads. Each file is written atomically; the mask comes last, so
    a directory with a mask is complete."""
    from rendering.hdrio import write_exr, write_png

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_exr(directory / IMAGE_FILE, obj.image)
    _atomic_save_npy(directory / NORMALS_FILE, np.asarray(obj.normals, dtype=np.float32))
    write_png(directory / MASK_FILE, np.where(obj.mask, 255, 0).astype(np.uint8))
    return directory


def load_object(directory: str | os.PathLike) -> ObjectImage:
    """Read the three files :func:`save_object` writes (checked; InputError names the file)."""
    from rendering.observation import load_observation_files

    directory = Path(directory)
    image, normals, mask = load_observation_files(
        directory / IMAGE_FILE, directory / NORMALS_FILE, directory / MASK_FILE
    )
    return ObjectImage(image=image, normals=normals, mask=mask)
