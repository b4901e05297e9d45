"""The three spheres of the illumination-evaluation protocol (DESIGN.md §6), rendered with Mitsuba.

A unit sphere is seen by an orthographic camera on +z (the viewer's direction of the camera
frame, DESIGN.md §3.1: image x = +x, image up = +y) that frames it exactly, and lit by an envmap
(Mitsuba's ``envmap`` emitter, identity ``to_world``, DESIGN.md §3.2). Three materials probe
three frequency bands of the light:

- ``mirror``: a perfect, colourless reflector (Mitsuba ``conductor`` with ``material = none``,
  reflectance 1 at every angle): every detail of the envmap, and nothing else;
- ``matte_silver``: rough silver (``roughconductor``, measured Ag, GGX α = 0.3): the mid
  frequencies;
- ``diffuse``: grey Lambertian (albedo 0.5): the low-frequency irradiance.

Pixels count only inside :func:`sphere_mask`, the pixels that lie entirely on the sphere, so the
background and anti-aliased silhouette never enter the metrics.
"""

from __future__ import annotations

import numpy as np

from rendering.envmap import validate_envmap
from rendering.variant import ensure_variant

SPHERE_BSDFS = {
    "mirror": {"type": "conductor", "material": "none"},
    "matte_silver": {"type": "roughconductor", "material": "Ag", "distribution": "ggx", "alpha": 0.3},
    "diffuse": {"type": "diffuse", "reflectance": {"type": "rgb", "value": [0.5, 0.5, 0.5]}},
}
SPHERES = tuple(SPHERE_BSDFS)  # ("mirror", "matte_silver", "diffuse")
CAMERA_DISTANCE = 3.0  # any distance > 1 works for an orthographic camera


def sphere_mask(sphere_res: int) -> np.ndarray:
    """bool (S, S), S = sphere_res: pixels whose whole footprint lies on the unit sphere's silhouette."""
    centres = (np.arange(sphere_res) + 0.5) / sphere_res * 2.0 - 1.0  # pixel centres in [-1, 1]
    x, y = np.meshgrid(centres, -centres)
    half_diagonal = np.sqrt(2.0) / sphere_res
    return np.sqrt(x * x + y * y) + half_diagonal <= 1.0


def sphere_normals(sphere_res: int) -> np.ndarray:
    """float32 (S, S, 3), S = sphere_res: camera-frame normals at the pixel centres (zero outside
    the disc)."""
    centres = (np.arange(sphere_res) + 0.5) / sphere_res * 2.0 - 1.0
    x, y = np.meshgrid(centres, -centres)
    z = np.sqrt(np.clip(1.0 - x * x - y * y, 0.0, None))
    inside = x * x + y * y < 1.0
    return (np.stack([x, y, z], axis=-1) * inside[..., None]).astype(np.float32)


def render_sphere(
    envmap: np.ndarray, sphere: str, sphere_res: int = 64, spp: int = 64, seed: int = 0
) -> np.ndarray:
    """One protocol sphere under ``envmap`` (H, 2H, 3): linear RGB float32 (S, S, 3), S = sphere_res."""
    if sphere not in SPHERE_BSDFS:
        raise ValueError(f"unknown sphere {sphere!r}; the protocol's spheres are {SPHERES}")
    return render_stock_sphere(envmap, SPHERE_BSDFS[sphere], sphere_res, spp, seed)


def render_stock_sphere(
    envmap: np.ndarray, bsdf, sphere_res: int = 64, spp: int = 64, seed: int = 0
) -> np.ndarray:
    """The unit sphere with ``bsdf`` (a Mitsuba BSDF or its dict) under ``envmap`` (H, 2H, 3), seen
    by an orthographic camera along −z, rendered by stock Mitsuba: a fresh ``mi.load_dict`` scene,
    the ``direct`` integrator, one ``mi.render`` call. Linear RGB float32 (S, S, 3), S = sphere_res."""
    envmap = validate_envmap(envmap)
    mi = ensure_variant()
    scene = mi.load_dict(
        {
            "type": "scene",
            "integrator": {"type": "direct"},
            "sensor": {
                "type": "orthographic",
                "to_world": mi.ScalarTransform4f().look_at(
                    origin=[0.0, 0.0, CAMERA_DISTANCE], target=[0.0, 0.0, 0.0], up=[0.0, 1.0, 0.0]
                ),
                "film": {
                    "type": "hdrfilm",
                    "width": sphere_res,
                    "height": sphere_res,
                    "rfilter": {"type": "box"},
                    "pixel_format": "rgb",
                },
                "sampler": {"type": "independent", "sample_count": spp},
            },
            "emitter": {"type": "envmap", "bitmap": mi.Bitmap(envmap)},
            "sphere": {"type": "sphere", "bsdf": bsdf},
        }
    )
    image = np.array(mi.render(scene, seed=seed), dtype=np.float32)
    return image[:, :, :3]


def render_spheres(
    envmap: np.ndarray, sphere_res: int = 64, spp: int = 64, seed: int = 0
) -> dict[str, np.ndarray]:
    """All three protocol spheres under ``envmap``: {name: (S, S, 3)}, S = sphere_res, in
    :data:`SPHERES` order.

    Estimate and ground truth must be rendered with the same ``seed`` so that their Monte Carlo
    noise is correlated and the metrics see the lighting difference rather than noise.
    """
    return {name: render_sphere(envmap, name, sphere_res, spp, seed) for name in SPHERES}


def refmap_to_sphere(refmap: np.ndarray, sphere_res: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A refmap (3, R, R) seen as the sphere it describes: (image (S, S, 3), mask (S, S)),
    S = sphere_res.

    A refmap is the orthographic view of a sphere re-indexed by normal (DESIGN.md §3.1), so each
    sphere pixel reads the refmap bin of its normal (nearest bin); outside the disc is 0. This is
    how a material vector is shown "as a sphere" from ``render_refmaps`` without a second render.
    """
    from rendering.observation import normal_to_bin

    refmap = np.asarray(refmap, dtype=np.float32)
    normals = sphere_normals(sphere_res).reshape(-1, 3)
    inside = normals[:, 2] > 0
    rows, cols = normal_to_bin(normals[inside], refmap.shape[1])
    image = np.zeros((sphere_res * sphere_res, 3), dtype=np.float32)
    image[inside] = refmap[:, rows, cols].T
    return image.reshape(sphere_res, sphere_res, 3), inside.reshape(sphere_res, sphere_res)
