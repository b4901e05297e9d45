"""Procedural HDR environment maps that need no downloads: outdoor skies, studios and rooms.

``make_envmap(kind, seed, height)`` → float32 (H, 2H, 3) in the convention of DESIGN.md §3.2
(row 0 = +y zenith, u = 0.5 = +z). Deterministic by seed. Units are nominal luminance in kcd/m²
(the DRM pipeline normalises intensity, so only ratios matter, and those are physical-ish).

``sky``    Preetham et al. 1999 ("A practical analytic model for daylight"): the Perez luminance
           distribution and zenith luminance/chromaticity as functions of turbidity T and the
           sun's zenith angle, xyY → linear sRGB. The sun is a disc (angular radius 0.27°) whose
           radiance is 10⁴–10⁵ × the mean sky, coloured by Rayleigh + Ångström aerosol
           transmittance along the air mass (Preetham's appendix); pixels get the exact fraction
           of the disc they cover (energy preserving at any resolution). Optional fBm clouds on a
           cloud plane (perspective-foreshortened toward the horizon) partly occlude the sun.
           Below the horizon: a Lambertian ground lit by the sky and the sun (irradiance
           integrated from the map itself), textured, fading into haze at the horizon.
``studio`` 1–5 planar area lights (softboxes: rectangles, octaboxes, strips) with colour
           temperatures 3000–6500 K and a slightly hot centre, 10²–10⁴ × a dark/grey backdrop
           (a cyclorama: walls + a floor lit by the lights' irradiance).
``room``   a furnished room path traced from its inside with Mitsuba (coloured walls, windows
           open to a procedural sky with its sun, lamps as area emitters): see :func:`make_room`.

Anti-aliasing: every pixel averages 2×2 sub-pixel directions (the sun disc is integrated
analytically), so hard light edges are area-weighted like ``resample_envmap``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rendering.envmap import direction_to_uv, footprint_uv, pixel_solid_angles, row_edges, uv_to_direction
from rendering.hdrio import luminance
from rendering.objects import columns

KINDS = ("sky", "studio", "room")
SUPERSAMPLE = 2  # sub-pixel directions per pixel side
SUN_RADIUS = np.radians(0.2665)  # the sun's angular radius
XYZ_TO_SRGB = np.array(
    [[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]], dtype=np.float64
)
# Preetham 1999, Table / appendix A.2: Perez coefficients (A..E) = M @ [T, 1] for Y, x, y.
PEREZ_Y = np.array(
    [[0.1787, -1.4630], [-0.3554, 0.4275], [-0.0227, 5.3251], [0.1206, -2.5771], [-0.0670, 0.3703]]
)
PEREZ_X = np.array(
    [[-0.0193, -0.2592], [-0.0665, 0.0008], [-0.0004, 0.2125], [-0.0641, -0.8989], [-0.0033, 0.0452]]
)
PEREZ_YC = np.array(
    [[-0.0167, -0.2608], [-0.0950, 0.0092], [-0.0079, 0.2102], [-0.0441, -1.6537], [-0.0109, 0.0529]]
)
ZENITH_X = np.array(
    [
        [0.00166, -0.00375, 0.00209, 0.0],
        [-0.02903, 0.06377, -0.03202, 0.00394],
        [0.11693, -0.21196, 0.06052, 0.25886],
    ]
)
ZENITH_Y = np.array(
    [
        [0.00275, -0.00610, 0.00317, 0.0],
        [-0.04214, 0.08970, -0.04153, 0.00516],
        [0.15346, -0.26756, 0.06670, 0.26688],
    ]
)
RGB_WAVELENGTHS_UM = np.array([0.61, 0.55, 0.465])  # representative wavelengths of R, G, B
GROUND_ALBEDOS = {  # linear RGB
    "grass": (0.09, 0.14, 0.05),
    "soil": (0.20, 0.15, 0.10),
    "sand": (0.45, 0.38, 0.28),
    "asphalt": (0.07, 0.07, 0.075),
    "snow": (0.80, 0.82, 0.86),
    "concrete": (0.30, 0.29, 0.27),
}


def make_envmap(kind: str, seed: int, height: int = 256) -> np.ndarray:
    """A procedural environment map of ``kind`` (sky | studio | room): float32 (H, 2H, 3)."""
    if kind == "sky":
        return make_sky(seed, height)
    if kind == "studio":
        return make_studio(seed, height)
    if kind == "room":
        return make_room(seed, height)
    raise ValueError(f"unknown envmap kind {kind!r}; choose one of {KINDS}")


# --------------------------------------------------------------------------------------------
# Shared helpers


def _subpixel_directions(height: int) -> np.ndarray:
    """(H, 2H, S², 3) unit directions at S×S sub-pixel positions of every pixel's footprint
    (its latitude band from :func:`rendering.envmap.row_edges`, its column's azimuth range)."""
    width = 2 * height
    offsets = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    u = (np.arange(width)[:, None] + offsets[None, :]).reshape(-1) / width
    edges = row_edges(height) / np.pi
    v = (edges[:-1, None] + offsets[None, :] * np.diff(edges)[:, None]).reshape(-1)
    uu, vv = np.meshgrid(u, v)
    d = uv_to_direction(uu, vv)  # (H·S, W·S, 3)
    d = d.reshape(height, SUPERSAMPLE, width, SUPERSAMPLE, 3).transpose(0, 2, 1, 3, 4)
    return d.reshape(height, width, SUPERSAMPLE * SUPERSAMPLE, 3)


def _direction(elevation: float, azimuth: float) -> np.ndarray:
    """Unit direction from elevation above the horizon and azimuth (0 = +z, π/2 = +x)."""
    return np.array(
        [np.cos(elevation) * np.sin(azimuth), np.sin(elevation), np.cos(elevation) * np.cos(azimuth)]
    )


def _frame(axis: np.ndarray, roll: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Two unit tangents (t, b) perpendicular to ``axis``; t is horizontal before the roll."""
    up = np.array([0.0, 1.0, 0.0]) if abs(axis[1]) < 0.99 else np.array([1.0, 0.0, 0.0])
    t = np.cross(up, axis)
    t /= np.linalg.norm(t)
    b = np.cross(axis, t)
    c, s = np.cos(roll), np.sin(roll)
    return c * t + s * b, -s * t + c * b


def _value_noise(points: np.ndarray, seed: int) -> np.ndarray:
    """Smooth lattice value noise in [0, 1] at 2-D points (..., 2); deterministic by seed."""
    table = np.random.default_rng(seed).random(256 * 256).reshape(256, 256)
    cell = np.floor(points).astype(np.int64)
    frac = points - cell
    w = frac * frac * (3.0 - 2.0 * frac)  # smoothstep keeps the field C¹
    i0, j0 = cell[..., 0] & 255, cell[..., 1] & 255
    i1, j1 = (i0 + 1) & 255, (j0 + 1) & 255
    top = table[i0, j0] * (1 - w[..., 0]) + table[i1, j0] * w[..., 0]
    bottom = table[i0, j1] * (1 - w[..., 0]) + table[i1, j1] * w[..., 0]
    return top * (1 - w[..., 1]) + bottom * w[..., 1]


def fbm(points: np.ndarray, seed: int, octaves: int = 5) -> np.ndarray:
    """Fractal sum of value noise at 2-D points (..., 2), normalised to about [0, 1]."""
    total = np.zeros(points.shape[:-1])
    amplitude, norm = 1.0, 0.0
    for octave in range(octaves):
        total += amplitude * _value_noise(points * 2.0**octave, seed + 7919 * octave)
        norm += amplitude
        amplitude *= 0.5
    return total / norm


def _xyy_to_rgb(x: np.ndarray, y: np.ndarray, lum: np.ndarray) -> np.ndarray:
    """CIE xyY → linear sRGB (..., 3), negatives (out of gamut) clipped."""
    y = np.maximum(y, 1e-6)
    xyz = np.stack([x * lum / y, lum, (1.0 - x - y) * lum / y], axis=-1)
    return np.maximum(xyz @ XYZ_TO_SRGB.T, 0.0)


def _disc_coverage(directions: np.ndarray, centre: np.ndarray, radius: float, height: int) -> np.ndarray:
    """Fraction of each pixel's solid angle covered by a small disc around ``centre`` (H, 2H).

    Pixels near the disc are subdivided 16×16 (samples weighted by sin θ, i.e. by solid angle),
    then the coverage is renormalised so that the disc deposits exactly its solid angle at any
    resolution, even when it is smaller than a pixel.
    """
    width = 2 * height
    coverage = np.zeros((height, width))
    pixel_centres = directions.mean(axis=2)
    pixel_centres /= np.linalg.norm(pixel_centres, axis=-1, keepdims=True)
    distance = np.arccos(np.clip(pixel_centres @ centre, -1, 1))
    rows, cols = np.nonzero(distance < radius + 1.5 * np.pi / height)
    disc_solid_angle = 2 * np.pi * (1 - np.cos(radius))
    pixel_omega = pixel_solid_angles(height)
    fine = 16
    offsets = (np.arange(fine) + 0.5) / fine
    ou, ov = np.meshgrid(offsets, offsets)
    u = (cols[:, None] + ou.reshape(1, -1)) / width
    v = (rows[:, None] + ov.reshape(1, -1)) / height
    inside = np.arccos(np.clip(uv_to_direction(u, v) @ centre, -1, 1)) < radius
    weight = np.sin(np.pi * v)
    fraction = (inside * weight).sum(axis=1) / np.maximum(weight.sum(axis=1), 1e-12)
    estimated = float((fraction * pixel_omega[rows]).sum())
    if estimated > 0:
        coverage[rows, cols] = fraction * disc_solid_angle / estimated
    else:  # smaller than one fine sample: all of it goes to the pixel holding the centre
        cu, cv = direction_to_uv(centre)
        row, col = min(int(cv * height), height - 1), min(int(cu * width), width - 1)
        coverage[row, col] = disc_solid_angle / pixel_omega[row]
    return coverage


# --------------------------------------------------------------------------------------------
# Sky


def _perez(theta: np.ndarray, gamma: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    a, b, c, d, e = coeffs
    cos_theta = np.maximum(np.cos(theta), 0.01)  # the model diverges exactly at the horizon
    return (1.0 + a * np.exp(b / cos_theta)) * (1.0 + c * np.exp(d * gamma) + e * np.cos(gamma) ** 2)


def preetham_sky(directions: np.ndarray, sun: np.ndarray, turbidity: float) -> np.ndarray:
    """Preetham sky radiance (linear sRGB, kcd/m²) for directions (..., 3) above the horizon."""
    theta_s = np.arccos(np.clip(sun[1], -1, 1))
    theta = np.arccos(np.clip(directions[..., 1], 0.0, 1.0))
    gamma = np.arccos(np.clip(directions @ sun, -1, 1))
    t_vec = np.array([turbidity, 1.0])
    coeffs = [m @ t_vec for m in (PEREZ_Y, PEREZ_X, PEREZ_YC)]
    chi = (4.0 / 9.0 - turbidity / 120.0) * (np.pi - 2.0 * theta_s)
    zenith_lum = (4.0453 * turbidity - 4.9710) * np.tan(chi) - 0.2155 * turbidity + 2.4192
    t_sq = np.array([turbidity**2, turbidity, 1.0])
    th = np.array([theta_s**3, theta_s**2, theta_s, 1.0])
    zenith_x, zenith_y = t_sq @ ZENITH_X @ th, t_sq @ ZENITH_Y @ th
    zeros = np.zeros(())
    lum = zenith_lum * _perez(theta, gamma, coeffs[0]) / _perez(zeros, theta_s, coeffs[0])
    x = zenith_x * _perez(theta, gamma, coeffs[1]) / _perez(zeros, theta_s, coeffs[1])
    y = zenith_y * _perez(theta, gamma, coeffs[2]) / _perez(zeros, theta_s, coeffs[2])
    return _xyy_to_rgb(x, y, np.maximum(lum, 0.0))


def sun_transmittance(sun_elevation: float, turbidity: float) -> np.ndarray:
    """Direct-sun transmittance (3,) for R, G, B: Rayleigh + Ångström aerosol extinction along the
    relative air mass (Kasten's formula), as in Preetham 1999's appendix (ozone/water omitted)."""
    zenith_deg = 90.0 - np.degrees(sun_elevation)
    air_mass = 1.0 / (np.cos(np.radians(zenith_deg)) + 0.15 * (93.885 - zenith_deg) ** -1.253)
    lam = RGB_WAVELENGTHS_UM
    beta = 0.04608 * turbidity - 0.04586
    rayleigh = np.exp(-0.008735 * lam**-4.08 * air_mass)
    aerosol = np.exp(-beta * lam**-1.3 * air_mass)
    return rayleigh * aerosol


@dataclass(frozen=True)
class Sky:
    """An outdoor sky split into the diffuse sky + ground map and the sun, so that a renderer can
    treat the sun as the (nearly) directional light it is."""

    background: np.ndarray  # (H, 2H, 3): sky, clouds and ground, without the sun disc
    sun_direction: np.ndarray  # (3,) unit, toward the sun
    sun_radiance: np.ndarray  # (3,) radiance of the disc
    sun_radius: float = SUN_RADIUS  # angular radius (radians)

    @property
    def sun_solid_angle(self) -> float:
        return float(2 * np.pi * (1 - np.cos(self.sun_radius)))

    def envmap(self) -> np.ndarray:
        """Background plus the sun disc, area-weighted into its pixels: (H, 2H, 3) float32."""
        height = self.background.shape[0]
        coverage = _disc_coverage(_subpixel_directions(height), self.sun_direction, self.sun_radius, height)
        return (self.background + coverage[..., None] * self.sun_radiance).astype(np.float32)


def make_sky(seed: int, height: int = 256, **parameters) -> np.ndarray:
    """An outdoor sky envmap (H, 2H, 3) float32; see :func:`sky_components` for the parameters."""
    return sky_components(seed, height, **parameters).envmap()


def sky_components(
    seed: int,
    height: int = 256,
    turbidity: float | None = None,
    sun_elevation: float | None = None,
    sun_azimuth: float | None = None,
    cloud_cover: float | None = None,
    ground: str | None = None,
) -> Sky:
    """An outdoor sky; unspecified parameters are drawn from ``seed``.

    turbidity ∈ [2, 8]; sun elevation ∈ [4°, 75°] (radians); sun azimuth (radians, 0 = +z toward
    the viewer, π/2 = +x); cloud cover ∈ [0, 1) (0 for a clear sky); ground: a key of
    ``GROUND_ALBEDOS``.
    """
    rng = np.random.default_rng([seed, 0x5C1])
    turbidity = float(rng.uniform(2.0, 8.0)) if turbidity is None else turbidity
    sun_elevation = float(np.radians(rng.uniform(4.0, 75.0))) if sun_elevation is None else sun_elevation
    sun_azimuth = float(rng.uniform(0, 2 * np.pi)) if sun_azimuth is None else sun_azimuth
    drawn_cover = float(rng.uniform(0.0, 0.75)) if rng.random() < 0.65 else 0.0
    cloud_cover = drawn_cover if cloud_cover is None else cloud_cover
    names = sorted(GROUND_ALBEDOS)
    ground = names[int(rng.integers(len(names)))] if ground is None else ground
    albedo = np.array(GROUND_ALBEDOS[ground]) * rng.uniform(0.8, 1.2)
    cloud_seed = int(rng.integers(2**31))
    cloud_offset = rng.uniform(-100, 100, size=2)

    sun = _direction(sun_elevation, sun_azimuth)
    dirs = _subpixel_directions(height)  # (H, W, S², 3)
    up = dirs[..., 1]
    sky = preetham_sky(dirs, sun, turbidity)  # valid above the horizon

    # Clouds on a plane at unit height: the plane coordinates of a direction are d_xz / d_y.
    density = np.zeros(up.shape)
    above = up > 0.0
    if cloud_cover > 0:
        plane = dirs[..., [0, 2]] / np.maximum(up, 0.02)[..., None]
        noise = fbm(plane * 1.5 + cloud_offset, cloud_seed)
        threshold = 1.0 - cloud_cover
        density = np.clip((noise - threshold * 0.55 - 0.2) / 0.25, 0.0, 1.0)
        density *= np.clip(up / 0.08, 0.0, 1.0)  # thin out into the horizon haze
    sun_colour = sun_transmittance(sun_elevation, turbidity)
    sky_mean = float(luminance(sky[above], dtype=np.float64).mean())
    cloud_base = 2.5 * sky_mean * (0.35 + 0.65 * sun_colour / sun_colour.max())
    forward = 1.0 + 3.0 * np.exp(-(np.arccos(np.clip(dirs @ sun, -1, 1)) ** 2) / 0.08)  # silver lining
    cloud = cloud_base * ((1.0 - 0.55 * density) * forward)[..., None]
    sky = sky * (1 - density[..., None]) + cloud * density[..., None]

    # Sun disc: 10^(4 + transmittance) × the mean sky, less what clouds in front of it block.
    plane_sun = sun[[0, 2]] / max(sun[1], 0.02)
    sun_density = 0.0
    if cloud_cover > 0:
        sun_noise = float(fbm(plane_sun * 1.5 + cloud_offset, cloud_seed))
        sun_density = float(np.clip((sun_noise - (1.0 - cloud_cover) * 0.55 - 0.2) / 0.25, 0.0, 1.0))
        sun_density *= float(np.clip(sun[1] / 0.08, 0.0, 1.0))
    ratio = 10.0 ** (4.0 + float(luminance(sun_colour, dtype=np.float64)))
    sun_radiance = ratio * sky_mean * sun_colour / max(float(luminance(sun_colour, dtype=np.float64)), 1e-6)
    sun_radiance = sun_radiance * (1.0 - 0.97 * sun_density)

    # Ground: Lambertian, lit by the upper hemisphere of this very map plus the sun.
    envmap = np.where(above[..., None], sky, 0.0).mean(axis=2)  # (H, W, 3)
    omega = pixel_solid_angles(height)[:, None]
    pixel_up = dirs.mean(axis=2)[..., 1]
    sky_irradiance = np.einsum("hwc,hw->c", envmap, np.maximum(pixel_up, 0) * omega)
    sun_irradiance = sun_radiance * 2 * np.pi * (1 - np.cos(SUN_RADIUS)) * max(sun[1], 0.0)
    ground_radiance = albedo * (sky_irradiance + sun_irradiance) / np.pi
    below = ~above
    ground_plane = dirs[..., [0, 2]] / np.maximum(-up, 0.02)[..., None]
    texture = 0.75 + 0.5 * fbm(ground_plane * 4.0, cloud_seed + 1)
    haze = np.exp(-np.maximum(-up, 0.0) / 0.06)[..., None]  # aerial perspective at the horizon
    level = dirs * np.array([1.0, 0.0, 1.0]) + np.array([0.0, 1e-3, 0.0])
    horizon = preetham_sky(level / np.linalg.norm(level, axis=-1, keepdims=True), sun, turbidity)
    ground = ground_radiance * texture[..., None] * (1 - haze) + horizon * haze
    background = np.where(below[..., None], ground, np.where(above[..., None], sky, 0.0)).mean(axis=2)
    return Sky(background.astype(np.float32), sun, sun_radiance)


# --------------------------------------------------------------------------------------------
# Studio


def _wyman_cmf(lam_nm: np.ndarray) -> np.ndarray:
    """CIE 1931 colour matching functions (…, 3) from Wyman, Sloan & Shirley 2013's Gaussian fit."""

    def g(x, mu, s1, s2):
        return np.exp(-0.5 * ((x - mu) / np.where(x < mu, s1, s2)) ** 2)

    x = (
        1.056 * g(lam_nm, 599.8, 37.9, 31.0)
        + 0.362 * g(lam_nm, 442.0, 16.0, 26.7)
        - 0.065 * g(lam_nm, 501.1, 20.4, 26.2)
    )
    y = 0.821 * g(lam_nm, 568.8, 46.9, 40.5) + 0.286 * g(lam_nm, 530.9, 16.3, 31.1)
    z = 1.217 * g(lam_nm, 437.0, 11.8, 36.0) + 0.681 * g(lam_nm, 459.0, 26.0, 13.8)
    return np.stack([x, y, z], axis=-1)


def blackbody_rgb(kelvin: float) -> np.ndarray:
    """Linear sRGB colour (3,) of a black body at ``kelvin``, normalised to luminance 1."""
    lam = np.linspace(380.0, 780.0, 81)
    lam_m = lam * 1e-9
    planck = 1.0 / (lam_m**5 * (np.exp(1.4388e-2 / (lam_m * kelvin)) - 1.0))
    rgb = np.maximum((planck @ _wyman_cmf(lam)) @ XYZ_TO_SRGB.T, 0.0)
    return rgb / luminance(rgb, dtype=np.float64)


def make_studio(seed: int, height: int = 256) -> np.ndarray:
    """A photo studio (H, 2H, 3): softboxes on a dark or grey cyclorama; drawn from ``seed``."""
    rng = np.random.default_rng([seed, 0x57D])
    dirs = _subpixel_directions(height)
    up = dirs[..., 1]

    lights = np.zeros(dirs.shape)
    n_lights = int(rng.integers(1, 6))
    irradiance = np.zeros(3)  # on an upward-facing floor point under the object
    for index in range(n_lights):
        style = ["rect", "rect", "octa", "strip"][int(rng.integers(4))] if index else "rect"
        elevation = np.radians(rng.uniform(-5.0, 70.0))
        axis = _direction(elevation, rng.uniform(0, 2 * np.pi))
        t, b = _frame(axis, rng.uniform(-0.3, 0.3))
        if style == "strip":
            half = np.tan(np.radians([rng.uniform(2, 5), rng.uniform(15, 30)]))
        else:
            half = np.tan(np.radians(rng.uniform(5, 20, size=2)))
        facing = dirs @ axis
        pu = (dirs @ t) / np.maximum(facing, 1e-6) / half[0]
        pv = (dirs @ b) / np.maximum(facing, 1e-6) / half[1]
        inside = (pu**2 + pv**2 < 1.0) if style == "octa" else (np.abs(pu) < 1.0) & (np.abs(pv) < 1.0)
        inside &= facing > 0
        hot = 1.0 - 0.35 * np.clip(pu**2 + pv**2, 0, 1)  # diffusers are brighter at the centre
        strength = 10.0 ** rng.uniform(2.0, 4.0) * (1.0 if index == 0 else rng.uniform(0.1, 0.7))
        colour = blackbody_rgb(rng.uniform(3000.0, 6500.0))
        lights += (inside * hot)[..., None] * strength * colour
        solid_angle = 4 * np.arctan(half[0] * half[1] / np.sqrt(1 + half[0] ** 2 + half[1] ** 2))
        irradiance += 0.85 * strength * colour * solid_angle * max(axis[1], 0.1)  # + spill off the walls

    # Cyclorama: walls of a dark/grey backdrop with a soft gradient, and a floor lit by the lights.
    backdrop_albedo = 10.0 ** rng.uniform(np.log10(0.02), np.log10(0.3)) * rng.uniform(0.9, 1.1, size=3)
    floor_albedo = backdrop_albedo * rng.uniform(0.6, 1.4)
    ambient = irradiance / np.pi
    noise_seed = int(rng.integers(2**31))
    wall_plane = np.stack([np.arctan2(dirs[..., 0], dirs[..., 2]) * 3.0, up * 3.0], axis=-1)
    wall = ambient * backdrop_albedo * 0.35 * (0.5 + 0.5 * np.clip(1.2 - np.abs(up), 0, 1))[..., None]
    wall = wall * (0.9 + 0.2 * fbm(wall_plane, noise_seed))[..., None]
    floor_plane = dirs[..., [0, 2]] / np.maximum(-up, 0.02)[..., None]
    falloff = 1.0 / (1.0 + 0.05 * (floor_plane**2).sum(axis=-1))  # farther floor gets less light
    floor = ambient * floor_albedo * falloff[..., None]
    seam = np.clip(-up / 0.05, 0.0, 1.0)[..., None]  # the cove blends wall into floor
    background = np.where(up[..., None] < 0, seam * floor + (1 - seam) * wall, wall)
    envmap = np.where(lights.max(axis=-1, keepdims=True) > 0, lights, background)
    return envmap.mean(axis=2).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Room

ROOM_SPP = 64
ROOM_MAX_DEPTH = 8
ROOM_MAX_LANES = 1 << 21  # rays per pass when path tracing a room


def _rectangle(mi, centre, half_u, half_v, bsdf=None, emitter=None) -> dict:
    """Mitsuba ``rectangle`` spanning centre ± half_u ± half_v; it faces half_u × half_v."""
    half_u, half_v = np.asarray(half_u, float), np.asarray(half_v, float)
    normal = np.cross(half_u, half_v)
    normal /= np.linalg.norm(normal)
    matrix = np.eye(4)
    matrix[:3, 0], matrix[:3, 1], matrix[:3, 2], matrix[:3, 3] = half_u, half_v, normal, centre
    shape = {"type": "rectangle", "to_world": mi.ScalarTransform4f(matrix)}
    if bsdf is not None:
        shape["bsdf"] = bsdf
    if emitter is not None:
        shape["emitter"] = emitter
    return shape


def _diffuse(rgb) -> dict:
    return {
        "type": "twosided",
        "bsdf": {"type": "diffuse", "reflectance": {"type": "rgb", "value": list(rgb)}},
    }


def _muted_colour(rng: np.random.Generator, value=(0.35, 0.85), saturation=(0.03, 0.35)) -> np.ndarray:
    """A linear-RGB wall colour: random hue, low saturation (HSV in sRGB, then linearised)."""
    hue, sat, val = rng.uniform(0, 1), rng.uniform(*saturation), rng.uniform(*value)
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6.0) % 6.0
    srgb = val - val * sat * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return srgb**2.2


def _wall_pieces(mi, origin, along, up, length, height, bsdf, window) -> list[dict]:
    """A wall from ``origin`` spanning ``length`` along ``along`` and ``height`` along ``up``,
    with an optional rectangular hole ``window`` = (a, b, c, d): [a, b] along × [c, d] up."""

    def piece(u0, u1, v0, v1):
        centre = origin + along * (u0 + u1) / 2 + up * (v0 + v1) / 2
        return _rectangle(mi, centre, along * (u1 - u0) / 2, up * (v1 - v0) / 2, bsdf=bsdf)

    if window is None:
        return [piece(0.0, length, 0.0, height)]
    a, b, c, d = window
    return [
        piece(0.0, a, 0.0, height),
        piece(b, length, 0.0, height),
        piece(a, b, 0.0, c),
        piece(a, b, d, height),
    ]


@dataclass(frozen=True)
class Room:
    """A random room: its Mitsuba scene (surfaces and lamps), the point the envmap is seen from,
    the sky outside and the window openings through which it is seen."""

    scene: dict  # for mi.load_dict; its only emitters are the lamps
    viewpoint: np.ndarray  # (3,)
    sky: Sky | None  # None without windows
    windows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=list
    )  # centre, half_u, half_v


def make_room_description(seed: int, sky_height: int = 128) -> Room:
    """The room of ``seed`` (no rendering).

    A box (width, depth 3–7 m, height 2.4–3.5 m) with tinted walls, a ceiling, a wooden-ish floor
    (rough plastic: it shows glossy reflections), 0–2 windows open to a procedural sky (sun
    included), 0–3 lamps (ceiling panels, bulbs) as area emitters with colour temperatures
    2700–5000 K, 2–5 boxes of furniture and sometimes a table under the viewpoint. At least one
    window or lamp.
    """
    from rendering.variant import ensure_variant

    mi = ensure_variant()
    rng = np.random.default_rng([seed, 0x8003])
    width, depth, height = rng.uniform(3.0, 7.0), rng.uniform(3.0, 7.0), rng.uniform(2.4, 3.5)
    x0, z0 = -width / 2, -depth / 2
    ex, ey, ez = np.eye(3)
    n_windows = int(rng.choice([0, 1, 1, 2, 2]))
    n_lamps = int(rng.integers(0 if n_windows else 1, 4))

    wall_bsdf = _diffuse(_muted_colour(rng))
    accent_wall = int(rng.integers(4))
    accent_bsdf = _diffuse(_muted_colour(rng, saturation=(0.1, 0.6))) if rng.random() < 0.4 else wall_bsdf
    # Walls in order: back (z = z0), front (z = −z0), left (x = x0), right (x = −x0).
    walls = [
        (np.array([x0, 0, z0]), ex, width),
        (np.array([-x0, 0, -z0]), -ex, width),
        (np.array([x0, 0, -z0]), -ez, depth),
        (np.array([-x0, 0, z0]), ez, depth),
    ]
    window_walls = set(rng.choice(4, size=n_windows, replace=False).tolist())
    shapes: dict[str, dict] = {}
    openings = []
    for index, (origin, along, length) in enumerate(walls):
        window = None
        if index in window_walls:
            w = rng.uniform(0.8, min(2.5, length - 0.6))
            a = rng.uniform(0.3, length - 0.3 - w)
            bottom = rng.uniform(0.5, 1.0)
            top = min(height - 0.2, bottom + rng.uniform(1.0, 1.8))
            window = (a, a + w, bottom, top)
            centre = origin + along * (2 * a + w) / 2 + ey * (bottom + top) / 2
            openings.append((centre, along * w / 2, ey * (top - bottom) / 2))
        bsdf = accent_bsdf if index == accent_wall else wall_bsdf
        for piece, shape in enumerate(_wall_pieces(mi, origin, along, ey, length, height, bsdf, window)):
            shapes[f"wall{index}_{piece}"] = shape
    centre = np.array([0.0, 0.0, 0.0])
    floor_colour = _muted_colour(rng, value=(0.15, 0.6), saturation=(0.2, 0.6))
    shapes["floor"] = _rectangle(
        mi,
        centre,
        ez * depth / 2,
        ex * width / 2,
        bsdf={
            "type": "roughplastic",
            "diffuse_reflectance": {"type": "rgb", "value": list(floor_colour)},
            "alpha": float(rng.uniform(0.05, 0.4)),
        },
    )
    shapes["ceiling"] = _rectangle(
        mi, centre + ey * height, ex * width / 2, ez * depth / 2, bsdf=_diffuse([0.75] * 3)
    )

    for index in range(n_lamps):
        colour = blackbody_rgb(rng.uniform(2700.0, 5000.0))
        radiance = 10.0 ** rng.uniform(0.0, 1.7) * colour
        emitter = {"type": "area", "radiance": {"type": "rgb", "value": list(radiance)}}
        px, pz = rng.uniform(-0.35, 0.35) * width, rng.uniform(-0.35, 0.35) * depth
        if rng.random() < 0.5:  # a ceiling panel facing down
            size = rng.uniform(0.2, 0.6, size=2)
            shapes[f"lamp{index}"] = _rectangle(
                mi, np.array([px, height - 0.01, pz]), ex * size[0], ez * size[1], emitter=emitter
            )
        else:  # a bulb / lamp globe
            radius = rng.uniform(0.04, 0.15)
            shapes[f"lamp{index}"] = {
                "type": "sphere",
                "center": [px, rng.uniform(1.2, height - 0.3), pz],
                "radius": radius,
                "emitter": {"type": "area", "radiance": {"type": "rgb", "value": list(radiance * 2.0)}},
            }

    for index in range(int(rng.integers(2, 6))):
        size = rng.uniform([0.3, 0.3, 0.3], [1.2, 1.8, 0.8])
        side = int(rng.integers(4))
        along = rng.uniform(-0.4, 0.4)
        if side < 2:
            position = [along * width, size[1] / 2, (z0 + size[2] / 2 + 0.02) * (1 if side == 0 else -1)]
        else:
            position = [(x0 + size[2] / 2 + 0.02) * (1 if side == 2 else -1), size[1] / 2, along * depth]
            size = size[[2, 1, 0]]
        shapes[f"furniture{index}"] = {
            "type": "cube",
            "to_world": mi.ScalarTransform4f().translate(position).scale((size / 2).tolist()),
            "bsdf": _diffuse(_muted_colour(rng, value=(0.1, 0.7), saturation=(0.05, 0.6))),
        }

    viewpoint = np.array(
        [rng.uniform(-0.15, 0.15) * width, rng.uniform(1.0, 1.4), rng.uniform(-0.15, 0.15) * depth]
    )
    if rng.random() < 0.5:  # the object stands on a table
        top = viewpoint[1] - rng.uniform(0.15, 0.3)
        half = rng.uniform(0.4, 0.8, size=2)
        shapes["table"] = {
            "type": "cube",
            "to_world": mi.ScalarTransform4f()
            .translate([viewpoint[0], top - 0.02, viewpoint[2]])
            .scale([half[0], 0.02, half[1]]),
            "bsdf": _diffuse(_muted_colour(rng, value=(0.1, 0.6), saturation=(0.1, 0.5))),
        }

    sky = sky_components(int(rng.integers(2**31)), sky_height) if n_windows else None
    return Room({"type": "scene", **shapes}, viewpoint, sky, openings)


def make_room(
    seed: int, height: int = 256, spp: int = ROOM_SPP, sample_seed: int | None = None
) -> np.ndarray:
    """An indoor envmap (H, 2H, 3) float32: the room of :func:`make_room_description` path traced
    from its viewpoint, ``spp`` rays jittered over each pixel's (u, v) footprint. The random
    numbers follow ``sample_seed`` (default: ``seed``): another value traces the same room anew.

    The path tracer (:func:`_trace_room`, built on Mitsuba's scene, BSDFs and emitters) follows
    ``ROOM_MAX_DEPTH`` bounces: indirect light off walls and floor is most of an indoor envmap. At
    every bounce it samples the light sources explicitly: the lamps (Mitsuba's emitter sampling),
    the sun (a directional light of the sun disc's irradiance, shadow-tested) and the sky through
    the windows (a point drawn on the window openings: "portal" sampling). Sampling the sky as an
    environment emitter instead would aim nearly all samples at the walls and leave the windows to
    chance: very noisy. The room is closed, so every escaping direction passes a window, and paths
    that escape or hit a lamp after the first bounce add nothing (already counted): unbiased.
    """
    from rendering.variant import ensure_variant

    mi = ensure_variant()
    room = make_room_description(seed)
    scene = mi.load_dict(room.scene)
    sky_emitter = None
    if room.sky is not None:
        sky_emitter = mi.load_dict({"type": "envmap", "bitmap": mi.Bitmap(room.sky.background)})
    width = 2 * height
    n_pixels = height * width
    per_pass = max(1, min(spp, ROOM_MAX_LANES // n_pixels))
    total = np.zeros((n_pixels, 3))
    done = 0
    for index in range(-(-spp // per_pass)):
        count = min(per_pass, spp - done)
        sampler = mi.load_dict({"type": "independent"})
        noise = seed if sample_seed is None else sample_seed
        sampler.seed(int((noise * 0x9E3779B1 + index * 0x85EBCA77) & 0xFFFFFFFF), n_pixels * count)
        jitter = columns(sampler.next_2d())
        pixels = np.repeat(np.arange(n_pixels), count)
        rows, cols = np.divmod(pixels, width)
        directions = uv_to_direction(*footprint_uv(rows, cols, jitter, height))
        rgb = _trace_room(mi, scene, sampler, room, sky_emitter, directions)
        total += rgb.reshape(n_pixels, count, 3).sum(axis=1)
        done += count
    envmap = np.nan_to_num(total / spp, nan=0.0, posinf=0.0).reshape(height, width, 3)
    if room.sky is not None:
        # The sun is a directional light, which rays cannot hit: add its disc where a window shows it.
        to_sun = mi.Ray3f(mi.Point3f(*room.viewpoint.tolist()), mi.Vector3f(*room.sky.sun_direction.tolist()))
        if not bool(scene.ray_test(to_sun)[0]):
            coverage = _disc_coverage(
                _subpixel_directions(height), room.sky.sun_direction, room.sky.sun_radius, height
            )
            envmap += coverage[..., None] * room.sky.sun_radiance
    return np.maximum(envmap, 0.0).astype(np.float32)


def _trace_room(mi, scene, sampler, room: Room, sky_emitter, directions: np.ndarray) -> np.ndarray:
    """Radiance (N, 3) arriving at the viewpoint from ``directions`` (N, 3); see :func:`make_room`.

    Wavefront style: each bounce is one kernel (the same one every bounce, compiled once)."""
    import drjit as dr

    def look_up_sky(direction, active):
        si = dr.zeros(mi.SurfaceInteraction3f)
        si.wi = -direction
        return sky_emitter.eval(si, active)

    ray = mi.Ray3f(mi.Point3f(*room.viewpoint.tolist()), mi.Vector3f(*directions.T.astype(np.float32)))
    si = scene.ray_intersect(ray)
    radiance = dr.select(si.is_valid(), si.emitter(scene).eval(si, si.is_valid()), 0.0)
    if sky_emitter is not None:
        radiance += look_up_sky(ray.d, ~si.is_valid())
    throughput = mi.Spectrum(1.0)
    active = si.is_valid()
    lamps = _lamps_by_name(mi, scene)
    sun = room.sky
    ctx = mi.BSDFContext()
    for _ in range(ROOM_MAX_DEPTH):
        bsdf = si.bsdf(ray)
        if lamps is not None:
            ds, weight = _lamp_sample(mi, dr, scene, lamps, sampler.next_2d(active), si, active)
            f = bsdf.eval(ctx, si, si.to_local(ds.d), active & (ds.pdf > 0))
            radiance += dr.select(active & (ds.pdf > 0), throughput * f * weight, 0.0)
        if sun is not None:
            to_sun = mi.Vector3f(*sun.sun_direction.tolist())
            lit = active & ~scene.ray_test(si.spawn_ray(to_sun), active)
            irradiance = mi.Spectrum(*(sun.sun_radiance * sun.sun_solid_angle).tolist())
            radiance += dr.select(
                lit, throughput * bsdf.eval(ctx, si, si.to_local(to_sun), lit) * irradiance, 0.0
            )
            portal = _portal_sample(mi, dr, scene, sampler, si, bsdf, ctx, room.windows, look_up_sky, active)
            radiance += portal * throughput
        sample, weight = bsdf.sample(ctx, si, sampler.next_1d(active), sampler.next_2d(active), active)
        throughput *= weight
        active &= (sample.pdf > 0) & dr.any(throughput > 0)
        ray = si.spawn_ray(si.to_world(sample.wo))
        si = scene.ray_intersect(ray, active)
        active &= si.is_valid()
        sampler.schedule_state()
        dr.eval(radiance, throughput, active, ray, si)
    return columns(radiance)


def _lamps_by_name(mi, scene):
    """The scene's lamps (area emitters) as an ``EmitterPtr`` array ordered by their shapes' names
    (``lamp0``, ``lamp1``, …), or None without lamps.

    Not ``scene.emitters()``: Mitsuba 3.9 lists a scene's emitters in an order that can change from
    one ``load_dict`` of the same dict to the next within a process (seen for rooms of 2–3 lamps,
    in about 1 load in 5), and that order decides which lamp a random number picks."""
    shapes = sorted((shape for shape in scene.shapes() if shape.emitter() is not None), key=lambda s: s.id())
    return mi.EmitterPtr([shape.emitter() for shape in shapes]) if shapes else None


def _lamp_sample(mi, dr, scene, lamps, sample, si, active):
    """Next-event estimation toward one lamp of ``lamps`` chosen uniformly with ``sample.x`` (then
    reused): (direction sample, radiance / pdf, zero where occluded). What
    ``Scene.sample_emitter_direction(si, sample, True, active)`` computes, in a fixed lamp order."""
    count = len(lamps)
    scaled = sample.x * count
    index = dr.minimum(mi.UInt32(scaled), count - 1)
    emitter = dr.gather(mi.EmitterPtr, lamps, index, active)
    ds, weight = emitter.sample_direction(si, mi.Point2f(scaled - mi.Float(index), sample.y), active)
    ds.pdf /= count
    active &= ds.pdf > 0
    visible = active & ~scene.ray_test(si.spawn_ray_to(ds.p), active)
    ds.pdf = dr.select(visible, ds.pdf, 0.0)
    return ds, dr.select(visible, weight * count, 0.0)


def _portal_sample(mi, dr, scene, sampler, si, bsdf, ctx, windows, look_up_sky, active):
    """One sample of the sky seen through the window openings, chosen by area, uniform on each:
    f · L_sky · cos_window / (dist² · p_area). The windows are gathered from arrays, so the
    kernel is the same for any number of windows."""
    centres = np.array([c for c, _, _ in windows], dtype=np.float32)
    half_u = np.array([u for _, u, _ in windows], dtype=np.float32)
    half_v = np.array([v for _, _, v in windows], dtype=np.float32)
    areas = 4 * np.linalg.norm(half_u, axis=1) * np.linalg.norm(half_v, axis=1)
    normals = np.cross(half_u, half_v)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    total = float(areas.sum())
    table = mi.DiscreteDistribution(mi.Float(areas))
    index = table.sample(sampler.next_1d(active), active)

    def pick(values):
        return dr.gather(mi.Vector3f, mi.Float(values.ravel()), index, active)

    uv = sampler.next_2d(active) * 2.0 - 1.0
    point = mi.Point3f(pick(centres) + pick(half_u) * uv.x + pick(half_v) * uv.y)
    offset = point - si.p
    distance2 = dr.squared_norm(offset)
    direction = offset * dr.rsqrt(distance2)
    cos_window = dr.abs(dr.dot(pick(normals), direction))
    visible = active & (cos_window > 1e-4) & ~scene.ray_test(si.spawn_ray_to(point), active)
    f = bsdf.eval(ctx, si, si.to_local(direction), visible)
    weight = cos_window * total / distance2
    return dr.select(visible, f * look_up_sky(direction, visible) * weight, 0.0)
