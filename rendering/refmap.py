"""Reflectance maps (refmaps): rendering them under an environment map with Mitsuba 3, and the
mirror refmap ↔ envmap conversion (DESIGN.md §3.1, §3.2).

A refmap pixel is the radiance reflected toward the viewer v = (0, 0, 1) by a surface point whose
normal is given by :func:`normal_grid` (a point value, not a pixel-area average). The sphere is
convex, so direct lighting is the whole answer and a direction d reaches the environment iff
d·n > 0: no ray is traced. Every Monte Carlo sample builds a ``SurfaceInteraction3f`` at its known
normal and evaluates Mitsuba's own ``envmap`` emitter and BSDF (the stock ``principled`` plugin
for material vectors); ``rendering.direct_lighting`` holds the estimator (emitter sampling +
GGX visible-normal sampling, power heuristic) and ``rendering.sobol`` the sample pattern
(Owen-scrambled Sobol). All B·R²·spp samples form one vectorised wavefront, chunked by
``LANES_PER_CHUNK``; per-lane values are data, so a new batch reuses the compiled kernel.

Common random numbers: a sample's numbers depend only on (seed, pixel, sample index, view
azimuth), never on the material or its position in the batch, and the estimate is a continuous
function of the material for fixed numbers, so refmaps of nearby materials rendered with one seed
differ smoothly (what the DRM pairs L_k, L_{k−1} need). A material renders bit-identically alone
or inside any batch.

View azimuth φ (the camera turned about +y) is applied by rotating the shading frame into the
envmap's frame, R_y(φ)·n and R_y(φ)·v: the same as rendering ``rotate_envmap(envmap, -φ)`` at
azimuth 0 (``tests/test_refmap.py`` checks it), with one envmap for the whole batch.

Envmap texels sit where Mitsuba's ``envmap`` emitter holds them (rows at v = row/(H − 1), row 0
*is* the zenith): :func:`rendering.envmap.pixel_directions`. The mirror ↔ envmap conversion uses
that convention so that rendering a recovered envmap reproduces its refmap.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from rendering.direct_lighting import BSDFTechnique, GGXTechnique, estimate, shading_point
from rendering.envmap import pixel_directions, validate_envmap
from rendering.errors import InputError
from rendering.principled import MIRROR, ZEROED, principled_dict, validate_materials
from rendering.radiance import MAX_RADIANCE
from rendering.sobol import sample_pattern
from rendering.variant import ensure_variant

LANES_PER_CHUNK = 1 << 21  # samples per kernel launch; peak memory ≈ 200 MB at 128², B = 8
PRINCIPLED_MIN_ALPHA = 0.001  # principled's GGX α = max(0.001, roughness²) (calc_dist_params)
MIRROR_BASIS_SPP = 64  # the mirror's GGX lobe (α = 0.001) makes its white response nearly noise-free
# mirror_to_envmap marks envmap directions invalid when their mirror normal has n·v < RIM_COS:
# the cone within 23° of −v (4 % of the sphere), which only the refmap's rim shows. That rim is
# where observed refmaps are sparsest (normals foreshortened in images), estimated ones least
# reliable, and the mirror's own response dips (masking at grazing angles).
RIM_COS = 0.2


def normal_grid(refmap_res: int) -> np.ndarray:
    """Unit normals of an R×R refmap (R = refmap_res), (R, R, 3) float32, exactly per DESIGN.md §3.1."""
    refmap_res = _check_res(refmap_res)
    centre = (np.arange(refmap_res, dtype=np.float64) + 0.5) * np.pi / refmap_res
    el = (np.pi / 2 - centre)[:, None]
    az = (-np.pi / 2 + centre)[None, :]
    normals = np.stack(
        np.broadcast_arrays(np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)), axis=-1
    )
    return normals.astype(np.float32)


def render_refmaps(
    envmap: np.ndarray,
    materials: np.ndarray,
    view_azimuths: np.ndarray | None = None,
    refmap_res: int = 128,
    spp: int = 256,
    seed: int | np.ndarray = 0,
) -> np.ndarray:
    """Refmaps of B principled materials under one envmap: float32 (B, 3, R, R).

    envmap: (H, 2H, 3) linear RGB. materials: (B, 6) z vectors in [0, 1] (DESIGN.md §3.3).
    view_azimuths: (B,) radians, the camera turned about +y (None: all 0). seed: one for all, or
    (B,) one per refmap, so that many samples (each with its own seed) render in one call, each
    refmap bit-identical to its own call. Deterministic, with common random numbers across
    materials of one seed (see the module docstring).
    """
    materials = validate_materials(materials)
    view_azimuths = _check_azimuths(view_azimuths, len(materials))
    lanes = PrincipledLanes(materials)

    def prepare(lane_map):
        return lanes.select(lane_map), lanes.technique(lane_map)

    return _render(envmap, lanes.bsdf, prepare, view_azimuths, refmap_res, spp, seed)


class PrincipledLanes:
    """B principled materials side by side in one wavefront, through ONE stock ``principled``
    plugin (``self.bsdf``): base colour, roughness and metallic are (1, B) ``bitmap`` textures with
    nearest filtering, so a lane's ``si.uv`` picks its material's texel; ``specular`` is a plain
    Float of the plugin, set through ``mi.traverse`` to an array as wide as the wavefront. All
    per-lane values are data, not code: a new batch reuses the compiled kernels. (Mitsuba's
    parameter update maps specular = 0 to 1e-3, i.e. F0 ≈ 8e-5 instead of 0.)
    """

    def __init__(self, materials: np.ndarray):
        mi, dr = _mitsuba()
        self.mi, self.dr = mi, dr
        self.materials = validate_materials(materials)
        self.count = len(self.materials)

        def texture(values: np.ndarray) -> dict:
            data = mi.TensorXf(np.ascontiguousarray(values.reshape(1, self.count, -1), dtype=np.float32))
            return {"type": "bitmap", "data": data, "filter_type": "nearest", "raw": True}

        z = self.materials
        self.bsdf = mi.load_dict(
            {
                "type": "principled",
                "metallic": texture(z[:, 0]),
                "base_color": texture(z[:, 1:4]),
                "roughness": texture(z[:, 4]),
                **dict.fromkeys(ZEROED, 0.0),
            }
        )
        self._params = mi.traverse(self.bsdf)
        self._specular = mi.Float(z[:, 5])
        self._alpha = mi.Float(np.maximum(PRINCIPLED_MIN_ALPHA, z[:, 4].astype(np.float64) ** 2))

    def select(self, lane_material):
        """Give each lane the material of index ``lane_material`` (UInt32); returns the lanes' uv.
        Later BSDF calls must use arrays of this width."""
        mi, dr = self.mi, self.dr
        self._params["specular"] = dr.gather(mi.Float, self._specular, lane_material)
        self._params.update()
        return mi.Point2f((mi.Float(lane_material) + 0.5) / self.count, 0.5)

    def technique(self, lane_material):
        """The BSDF-side sampling technique: GGX visible normals at the plugin's own
        α = max(0.001, roughness²)."""
        alpha = self.dr.gather(self.mi.Float, self._alpha, lane_material)
        return GGXTechnique(self.mi, self.dr, self.bsdf, alpha)


def render_refmaps_bsdf(
    envmap: np.ndarray,
    bsdf,
    view_azimuths: np.ndarray | None = None,
    refmap_res: int = 128,
    spp: int = 256,
    seed: int | np.ndarray = 0,
) -> np.ndarray:
    """Refmaps of one arbitrary Mitsuba BSDF (``mi.BSDF``, e.g. a measured BRDF) under one envmap,
    one per view azimuth: float32 (n, 3, R, R), n = len(view_azimuths) (None: one, at azimuth 0).

    Same sampling code and random numbers as :func:`render_refmaps`.
    """
    view_azimuths = _check_azimuths(view_azimuths, None)
    mi, dr = _mitsuba()
    if not isinstance(bsdf, mi.BSDF):
        raise InputError("bsdf", f"expected a Mitsuba BSDF (mi.BSDF), got {type(bsdf).__name__}")

    def prepare(lane_map):
        return mi.Point2f(0.5, 0.5), BSDFTechnique(mi, dr, bsdf)

    return _render(envmap, bsdf, prepare, view_azimuths, refmap_res, spp, seed)


def mirror_basis(refmap_res: int) -> np.ndarray:
    """The mirror's (z0) refmap under a white (all-ones) environment: float32 (3, R, R).

    Its Fresnel/rim response, which :func:`envmap_to_mirror` multiplies in and
    :func:`mirror_to_envmap` divides out. Deterministic, cached per resolution.
    """
    return _mirror_basis(_check_res(refmap_res)).copy()


@lru_cache(maxsize=8)
def _mirror_basis(res: int) -> np.ndarray:
    # Under a white environment the BSDF's own sampling alone is the ideal estimator (its weight
    # is the whole answer), free of the noise that emitter samples in the tails of the α = 0.001
    # lobe would add.
    mi, dr = _mitsuba()
    bsdf = mi.load_dict(principled_dict(MIRROR))
    white = np.ones((8, 16, 3), dtype=np.float32)

    def prepare(lane_map):
        return mi.Point2f(0.5, 0.5), BSDFTechnique(mi, dr, bsdf)

    return _render(white, bsdf, prepare, np.zeros(1), res, MIRROR_BASIS_SPP, 0, use_emitter=False)[0]


def envmap_to_mirror(envmap: np.ndarray, refmap_res: int) -> np.ndarray:
    """The mirror (z0) refmap of an envmap by direct lookup, float32 (3, R, R); no Monte Carlo.

    Each pixel reads the envmap in the reflected direction r = 2(n·v)n − v through Mitsuba's own
    ``envmap`` emitter (its bilinear lookup, hence exactly what a render sees) and is scaled by
    :func:`mirror_basis`. A refmap pixel is a point value (DESIGN.md §3.1), so this is exact; an
    envmap much sharper than the refmap grid aliases, as any render of it would.
    """
    mi, dr = _mitsuba()
    envmap = validate_envmap(envmap)
    refmap_res = _check_res(refmap_res)
    normals = normal_grid(refmap_res).reshape(-1, 3).astype(np.float64)
    reflected = 2.0 * normals[:, 2:3] * normals - np.array([0.0, 0.0, 1.0])
    emitter = mi.load_dict({"type": "envmap", "bitmap": mi.Bitmap(envmap)})
    hit = dr.zeros(mi.SurfaceInteraction3f, len(reflected))
    hit.wi = mi.Vector3f(-reflected.T.astype(np.float32))
    radiance = np.array(emitter.eval(hit), dtype=np.float32).reshape(3, refmap_res, refmap_res)
    return radiance * mirror_basis(refmap_res)


def mirror_to_envmap(refmap: np.ndarray, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Envmap from a mirror refmap (DESIGN.md §3.2): (envmap (H, 2H, 3) float32, valid (H, 2H) bool).

    For each envmap texel direction d (Mitsuba's emitter convention, ``pixel_directions``)
    the refmap divided by :func:`mirror_basis` is read bilinearly at n = normalize(d + v).
    ``valid`` is False where n·v < RIM_COS (directions within ~157°–180° of the viewer, which only
    the refmap's rim shows); those texels still hold the clamped rim values. Negative refmap
    values (e.g. from a network) are clipped to 0, as radiance must be.
    """
    refmap = validate_refmap(refmap)
    height = _check_res(height)
    res = refmap.shape[-1]
    radiance = refmap / mirror_basis(res)
    d = pixel_directions(height).astype(np.float64)
    n = d + np.array([0.0, 0.0, 1.0])
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    row, col = _normal_to_pixel(n, res)
    from scipy.ndimage import map_coordinates

    envmap = np.stack(
        [map_coordinates(channel, [row, col], order=1, mode="nearest") for channel in radiance], axis=-1
    )
    valid = n[..., 2] >= RIM_COS
    return np.maximum(envmap, 0.0).astype(np.float32), valid


def _normal_to_pixel(n: np.ndarray, res: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`normal_grid`: fractional (row, col) of unit normals (..., 3)."""
    el = np.arcsin(np.clip(n[..., 1], -1.0, 1.0))
    az = np.arctan2(n[..., 0], n[..., 2])
    return (np.pi / 2 - el) * res / np.pi - 0.5, (az + np.pi / 2) * res / np.pi - 0.5


# -- the wavefront -----------------------------------------------------------------------------


def _mitsuba():
    """(mitsuba, drjit), with the variant activated first."""
    mi = ensure_variant()
    import drjit as dr

    return mi, dr


def _render(
    envmap, bsdf, prepare, view_azimuths, res: int, spp: int, seed: int, use_emitter: bool = True
) -> np.ndarray:
    """Shared Monte Carlo core: (n, 3, R, R) for the n view azimuths.

    ``prepare(lane_map: UInt32) -> (uv, technique)`` readies the BSDF for the lanes' refmap
    indices, returning the surface uv that selects each lane's material and the BSDF-side
    sampling technique (see ``rendering.direct_lighting``).
    """
    mi, dr = _mitsuba()
    envmap = validate_envmap(envmap)
    count, pixels = len(view_azimuths), res * res
    res, spp, seeds = _check_res(res), _check_spp(spp), _check_seeds(seed, count)
    emitter = mi.load_dict({"type": "envmap", "bitmap": mi.Bitmap(envmap)})

    # Chunking depends on (res, spp) only, never on the batch, so a refmap's floating-point
    # sums (hence its bits) are the same alone or in any batch.
    samples_per_chunk = max(1, min(spp, LANES_PER_CHUNK // pixels))
    maps_per_chunk = max(1, LANES_PER_CHUNK // (pixels * samples_per_chunk))

    normals = mi.Vector3f(normal_grid(res).reshape(-1, 3).T)
    azimuths = mi.Float(view_azimuths.astype(np.float32))
    az_bits = view_azimuths.astype(np.float32).view(np.uint32)
    map_keys = mi.sample_tea_32(mi.UInt32(seeds), mi.UInt32(az_bits))[0]
    out = np.zeros((count, 3, pixels), dtype=np.float64)
    for first_map in range(0, count, maps_per_chunk):
        n_maps = min(maps_per_chunk, count - first_map)
        for first_sample in range(0, spp, samples_per_chunk):
            n_samples = min(samples_per_chunk, spp - first_sample)
            lane = dr.arange(mi.UInt32, n_maps * pixels * n_samples)
            # Opaque scalars: another chunk shape reuses the compiled kernel.
            per_map = dr.opaque(mi.UInt32, pixels * n_samples)
            per_pixel = dr.opaque(mi.UInt32, n_samples)
            lane_map = lane // per_map + dr.opaque(mi.UInt32, first_map)
            pixel = (lane % per_map) // per_pixel
            sample = lane % per_pixel + dr.opaque(mi.UInt32, first_sample)

            # R_y(φ) takes the camera frame into the envmap's frame: view azimuth φ == the
            # envmap rotated by −φ.
            phi = dr.gather(mi.Float, azimuths, lane_map)
            cos_phi, sin_phi = dr.cos(phi), dr.sin(phi)
            n = dr.gather(mi.Vector3f, normals, pixel)
            normal = mi.Vector3f(cos_phi * n.x + sin_phi * n.z, n.y, cos_phi * n.z - sin_phi * n.x)
            view = mi.Vector3f(sin_phi, 0.0, cos_phi)

            uv, technique = prepare(lane_map)
            si = shading_point(mi, dr, normal, view, uv)
            key = mi.sample_tea_32(pixel, dr.gather(mi.UInt32, map_keys, lane_map))[0]
            samples = sample_pattern(mi, dr, key, sample)
            radiance = estimate(mi, dr, emitter, bsdf, si, technique, samples, use_emitter)
            dr.eval(radiance)  # one kernel for all three channels, then a reduction per channel
            sums = dr.block_sum(radiance, n_samples, mode="evaluated")
            block = np.array(sums, dtype=np.float64).reshape(3, n_maps, pixels)
            out[first_map : first_map + n_maps] += block.transpose(1, 0, 2)
    return (out / spp).astype(np.float32).reshape(count, 3, res, res)


# -- input checks ------------------------------------------------------------------------------


def validate_refmap(refmap: np.ndarray, source: object = "refmap") -> np.ndarray:
    """Check a (3, R, R) refmap: square, finite, within ±MAX_RADIANCE (beyond, the envmap made
    from it overflows float32: rendering/radiance.py); return float32. Raises InputError."""
    refmap = np.asarray(refmap)
    if refmap.ndim != 3 or refmap.shape[0] != 3:
        raise InputError(source, f"expected a (3, R, R) refmap, got shape {refmap.shape}")
    if refmap.shape[1] != refmap.shape[2]:
        raise InputError(source, f"a refmap must be square; got {refmap.shape[2]}×{refmap.shape[1]}")
    if refmap.shape[1] < 2:
        raise InputError(source, f"a refmap must be at least 2×2, got {refmap.shape[2]}×{refmap.shape[1]}")
    refmap = refmap.astype(np.float32, copy=False)
    if not np.isfinite(refmap).all():
        raise InputError(
            source, f"has {int((~np.isfinite(refmap)).sum())} NaN/Inf values; a refmap must be finite"
        )
    peak = float(np.abs(refmap).max())
    if peak > MAX_RADIANCE:
        raise InputError(
            source,
            f"has values up to {peak:.3g}, beyond ±{MAX_RADIANCE:.0e}: the envmap made from it would "
            "overflow float32 (Inf pixels); no radiance needs that range, so rescale the refmap",
        )
    return refmap


def _check_azimuths(view_azimuths, count: int | None) -> np.ndarray:
    if view_azimuths is None:
        return np.zeros(count or 1, dtype=np.float64)
    azimuths = np.atleast_1d(np.asarray(view_azimuths, dtype=np.float64))
    if azimuths.ndim != 1 or (count is not None and len(azimuths) != count) or len(azimuths) == 0:
        raise InputError(
            "view_azimuths", f"expected shape ({count if count else 'n'},), got {azimuths.shape}"
        )
    if not np.isfinite(azimuths).all():
        raise InputError("view_azimuths", "view azimuths must be finite")
    # Wrap to [-π, π) so that φ and φ + 2π draw the same random numbers.
    return np.mod(azimuths + math.pi, 2 * math.pi) - math.pi


def _check_res(res) -> int:
    if int(res) != res or res < 2:
        raise InputError("res", f"refmap resolution must be an integer ≥ 2, got {res!r}")
    return int(res)


def _check_spp(spp) -> int:
    if int(spp) != spp or spp < 1:
        raise InputError("spp", f"samples per pixel must be an integer ≥ 1, got {spp!r}")
    return int(spp)


def _check_seeds(seed, count: int) -> np.ndarray:
    """One seed, or one per refmap → (count,) uint32."""
    seeds = np.atleast_1d(np.asarray(seed))
    if seeds.ndim != 1 or len(seeds) not in (1, count):
        raise InputError("seed", f"expected one seed or {count}, got shape {seeds.shape}")
    if seeds.dtype.kind not in "iu" or seeds.min() < 0 or seeds.max() >= 2**32:
        raise InputError("seed", f"seeds must be integers in [0, 2³²), got {seed!r}")
    return np.broadcast_to(seeds.astype(np.uint32), (count,)).copy()
