"""Measured BRDFs available without the MERL database: a built-in set of "measured-like"
materials, and a user's directory of real MERL ``.binary`` files.

The built-in materials are MERL tables of analytic models that are *not* the principled BSDF
(Cook–Torrance with Beckmann and exact conductor/dielectric Fresnel, two-lobe GGX, Ward,
Ashikhmin–Shirley, Oren–Nayar, normalised Blinn–Phong), so estimating z from their renders is a
real out-of-model test. All functions map local directions wi, wo (N, 3) to BRDF values (N, 3)
in 1/sr without the cosine, and are reciprocal and isotropic (what the MERL layout can hold).
Conductor constants are RGB fits of measured (η, k) for Au, Cu, Al, Ag.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rendering.errors import InputError
from rendering.merl import MerlBrdf, read_merl, write_merl

MERL_SUFFIX = ".binary"
GOLD = ((0.143, 0.374, 1.442), (3.983, 2.385, 1.603))  # (η, k) per RGB channel
COPPER = ((0.200, 0.924, 1.102), (3.912, 2.452, 2.142))
ALUMINIUM = ((1.657, 0.880, 0.521), (9.224, 6.270, 4.837))
SILVER = ((0.155, 0.117, 0.138), (4.828, 3.122, 2.147))


# -- building blocks (numpy, (N, 3) directions, z = normal) -------------------------------------


def _half(wi: np.ndarray, wo: np.ndarray) -> np.ndarray:
    h = wi + wo
    return h / np.maximum(np.linalg.norm(h, axis=-1, keepdims=True), 1e-12)


def _cosines(wi, wo):
    """(cos θ_i, cos θ_o, cos θ_h, wi·h) each (N, 1), clamped away from 0."""
    h = _half(wi, wo)
    clamp = 1e-6
    return (
        np.maximum(wi[:, 2:3], clamp),
        np.maximum(wo[:, 2:3], clamp),
        np.maximum(h[:, 2:3], clamp),
        np.maximum(np.sum(wi * h, -1, keepdims=True), clamp),
    )


def fresnel_conductor(cos: np.ndarray, eta, k) -> np.ndarray:
    """Unpolarised Fresnel reflectance of a conductor, (N, 1) cosines → (N, 3)."""
    eta, k = np.asarray(eta)[None], np.asarray(k)[None]
    c2 = cos**2
    s2 = 1.0 - c2
    t0 = eta**2 - k**2 - s2
    a2b2 = np.sqrt(t0**2 + 4.0 * eta**2 * k**2)
    a = np.sqrt(np.maximum(0.5 * (a2b2 + t0), 0.0))
    t1, t2 = a2b2 + c2, 2.0 * a * cos
    rs = (t1 - t2) / (t1 + t2)
    t3, t4 = c2 * a2b2 + s2**2, t2 * s2
    rp = rs * (t3 - t4) / (t3 + t4)
    return 0.5 * (rs + rp)


def fresnel_dielectric(cos: np.ndarray, eta: float) -> np.ndarray:
    """Unpolarised Fresnel reflectance from air into a dielectric of index eta, (N, 1)."""
    cos_t = np.sqrt(np.maximum(1.0 - (1.0 - cos**2) / eta**2, 0.0))
    rs = (cos - eta * cos_t) / (cos + eta * cos_t)
    rp = (eta * cos - cos_t) / (eta * cos + cos_t)
    return 0.5 * (rs**2 + rp**2)


def beckmann(cos_h: np.ndarray, m: float) -> np.ndarray:
    """Beckmann microfacet distribution D(h) with RMS slope m."""
    tan2 = (1.0 - cos_h**2) / cos_h**2
    return np.exp(-tan2 / m**2) / (np.pi * m**2 * cos_h**4)


def ggx(cos_h: np.ndarray, alpha: float) -> np.ndarray:
    """GGX (Trowbridge–Reitz) distribution D(h)."""
    a2 = alpha**2
    return a2 / (np.pi * (cos_h**2 * (a2 - 1.0) + 1.0) ** 2)


def smith_ggx(cos: np.ndarray, alpha: float) -> np.ndarray:
    """Smith masking G1 of GGX for a direction with cosine ``cos``."""
    tan2 = (1.0 - cos**2) / cos**2
    return 2.0 / (1.0 + np.sqrt(1.0 + alpha**2 * tan2))


def cook_torrance(wi, wo, distribution: np.ndarray, fresnel: np.ndarray) -> np.ndarray:
    """D·F·G / (4 cos θ_i cos θ_o) with Cook–Torrance's V-groove shadowing G."""
    cos_i, cos_o, cos_h, cos_d = _cosines(wi, wo)
    shadow = np.minimum(1.0, np.minimum(2.0 * cos_h * cos_o / cos_d, 2.0 * cos_h * cos_i / cos_d))
    return distribution * fresnel * shadow / (4.0 * cos_i * cos_o)


def oren_nayar(wi, wo, albedo, sigma: float) -> np.ndarray:
    """Oren–Nayar (qualitative model) rough diffuse BRDF."""
    cos_i, cos_o = np.maximum(wi[:, 2:3], 1e-6), np.maximum(wo[:, 2:3], 1e-6)
    s2 = sigma**2
    a, b = 1.0 - 0.5 * s2 / (s2 + 0.33), 0.45 * s2 / (s2 + 0.09)
    theta_i, theta_o = np.arccos(np.clip(cos_i, -1, 1)), np.arccos(np.clip(cos_o, -1, 1))
    pi_, po = wi[:, :2], wo[:, :2]
    norm = np.maximum(np.linalg.norm(pi_, axis=-1) * np.linalg.norm(po, axis=-1), 1e-12)
    cos_phi = np.maximum(np.sum(pi_ * po, -1) / norm, 0.0)[:, None]
    alpha, beta = np.maximum(theta_i, theta_o), np.minimum(theta_i, theta_o)
    return np.asarray(albedo)[None] / np.pi * (a + b * cos_phi * np.sin(alpha) * np.tan(beta))


def ward(wi, wo, rho_s, alpha: float) -> np.ndarray:
    """Isotropic Ward specular lobe."""
    cos_i, cos_o, cos_h, _ = _cosines(wi, wo)
    tan2 = (1.0 - cos_h**2) / cos_h**2
    return (
        np.asarray(rho_s)[None] * np.exp(-tan2 / alpha**2) / (4.0 * np.pi * alpha**2 * np.sqrt(cos_i * cos_o))
    )


def ashikhmin_shirley(wi, wo, rd, rs: float, exponent: float) -> np.ndarray:
    """Isotropic Ashikhmin–Shirley: coupled diffuse + Schlick-Fresnel specular."""
    cos_i, cos_o, cos_h, cos_d = _cosines(wi, wo)
    fresnel = rs + (1.0 - rs) * (1.0 - cos_d) ** 5
    spec = (exponent + 1.0) / (8.0 * np.pi) * cos_h**exponent / (cos_d * np.maximum(cos_i, cos_o)) * fresnel
    diffuse = (
        28.0
        / (23.0 * np.pi)
        * np.asarray(rd)[None]
        * (1.0 - rs)
        * (1.0 - (1.0 - cos_i / 2.0) ** 5)
        * (1.0 - (1.0 - cos_o / 2.0) ** 5)
    )
    return diffuse + spec


def blinn_phong(wi, wo, f0: float, exponent: float) -> np.ndarray:
    """Energy-normalised Blinn–Phong lobe with Schlick Fresnel (grey)."""
    _, _, cos_h, cos_d = _cosines(wi, wo)
    fresnel = f0 + (1.0 - f0) * (1.0 - cos_d) ** 5
    return np.repeat((exponent + 8.0) / (8.0 * np.pi) * cos_h**exponent * fresnel, 3, axis=1)


def lambert(wi, albedo) -> np.ndarray:
    return np.broadcast_to(np.asarray(albedo)[None] / np.pi, (len(wi), 3))


# -- the set -----------------------------------------------------------------------------------


def _beckmann_metal(m: float, ior) -> Callable:
    def brdf(wi, wo):
        _, _, cos_h, cos_d = _cosines(wi, wo)
        return cook_torrance(wi, wo, beckmann(cos_h, m), fresnel_conductor(cos_d, *ior))

    return brdf


def _two_lobe_ggx_metal(alphas: tuple[float, float], weight: float, ior) -> Callable:
    def brdf(wi, wo):
        cos_i, cos_o, cos_h, cos_d = _cosines(wi, wo)
        fresnel = fresnel_conductor(cos_d, *ior)
        lobes = [
            ggx(cos_h, a) * smith_ggx(cos_i, a) * smith_ggx(cos_o, a) / (4.0 * cos_i * cos_o) for a in alphas
        ]
        return fresnel * ((1.0 - weight) * lobes[0] + weight * lobes[1])

    return brdf


def _plastic(albedo, m: float, eta: float) -> Callable:
    def brdf(wi, wo):
        _, _, cos_h, cos_d = _cosines(wi, wo)
        spec = cook_torrance(wi, wo, beckmann(cos_h, m), fresnel_dielectric(cos_d, eta))
        return lambert(wi, albedo) + spec

    return brdf


def _rough_dielectric(albedo, sigma: float, alpha: float, eta: float) -> Callable:
    def brdf(wi, wo):
        cos_i, cos_o, cos_h, cos_d = _cosines(wi, wo)
        g = smith_ggx(cos_i, alpha) * smith_ggx(cos_o, alpha)
        spec = ggx(cos_h, alpha) * g * fresnel_dielectric(cos_d, eta) / (4.0 * cos_i * cos_o)
        return oren_nayar(wi, wo, albedo, sigma) + spec

    return brdf


BUILTIN_MODELS: dict[str, Callable] = {
    "gold-like": _beckmann_metal(0.12, GOLD),
    "blue-plastic": _plastic((0.05, 0.12, 0.45), 0.08, 1.5),
    "rough-aluminium": _two_lobe_ggx_metal((0.2, 0.6), 0.3, ALUMINIUM),
    "red-clay": _rough_dielectric((0.55, 0.22, 0.12), 0.6, 0.5, 1.45),
    "green-satin": lambda wi, wo: ashikhmin_shirley(wi, wo, (0.10, 0.40, 0.12), 0.06, 60.0),
    "silver-ward": lambda wi, wo: ward(wi, wo, (0.95, 0.93, 0.88), 0.08),
    "copper-like": _beckmann_metal(0.3, COPPER),
    "white-ceramic": lambda wi, wo: lambert(wi, (0.8, 0.8, 0.78)) + blinn_phong(wi, wo, 0.04, 300.0),
    "black-rubber": _rough_dielectric((0.03, 0.03, 0.03), 0.3, 0.35, 1.5),
}
BUILTIN_NAMES = tuple(BUILTIN_MODELS)


def builtin_material(name: str) -> MerlBrdf:
    """One built-in material tabulated as a MERL table (about a second)."""
    if name not in BUILTIN_MODELS:
        raise InputError(
            "materials", f"unknown built-in material {name!r}; known: {', '.join(BUILTIN_NAMES)}"
        )
    return MerlBrdf.from_function(BUILTIN_MODELS[name], name)


def builtin_materials(
    n: int | None = None, cache_dir: str | os.PathLike | None = None
) -> dict[str, MerlBrdf]:
    """The first ``n`` built-in materials (all when None), by name, in a fixed order.

    With ``cache_dir``, each table is read from ``<cache_dir>/<name>.binary`` when present and
    readable, else tabulated and written there (atomically). The same directory is the place for
    their principled fits: ``rendering.principled_fit.fit_principled(table, cache_dir=cache_dir)``
    stores each beside its table, keyed by the table's content and the fit.
    """
    names = BUILTIN_NAMES if n is None else BUILTIN_NAMES[: max(int(n), 0)]
    out = {}
    for name in names:
        if cache_dir is None:
            out[name] = builtin_material(name)
            continue
        path = Path(cache_dir) / f"{name}{MERL_SUFFIX}"
        try:
            out[name] = read_merl(path)
        except InputError:
            out[name] = builtin_material(name)
            write_merl(path, out[name])
    return out


def load_measured_dir(path: str | os.PathLike) -> dict[str, MerlBrdf]:
    """Every MERL ``.binary`` file in a directory, by file stem, sorted by name.

    Other files (a README, .gitkeep) are ignored, so an empty directory is no materials. Raises one
    InputError naming the directory and every unreadable file with its problem, so a user fixes
    them all at once; also when the directory is missing.
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError(path, "directory of MERL .binary files does not exist")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() == MERL_SUFFIX and p.is_file())
    out, problems = {}, []
    for file in files:
        try:
            out[file.stem] = read_merl(file)
        except InputError as error:
            problems.append(str(error))
    if problems:
        raise InputError(
            path, f"{len(problems)} of {len(files)} MERL files are unreadable:\n  " + "\n  ".join(problems)
        )
    return out


def measured_materials(
    merl_dir: str | os.PathLike | None = None,
    builtin: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, MerlBrdf]:
    """The measured materials a run uses (the ``materials:`` section of params.yaml): the first
    ``builtin`` built-in ones (all when None) followed by the user's ``merl_dir`` (if given).
    A user file named like a built-in material replaces it."""
    materials = builtin_materials(builtin, cache_dir)
    if merl_dir is not None:
        materials.update(load_measured_dir(merl_dir))
    return materials
