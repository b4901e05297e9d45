"""The principled material closest to a measured BRDF, and principled BRDFs as tables.

A material vector z (6,) is ``[metallic, base_color_R, base_color_G, base_color_B, roughness,
specular]`` (DESIGN.md §3.3): Mitsuba's ``principled`` BSDF with every other parameter 0.
Everything here evaluates that BSDF through Mitsuba itself, vectorised over many (wi, wo)
pairs, so a table tabulated from z and the principled BSDF agree up to the table's resolution.

:func:`fit_principled` offers two fits:

``"reflectance"`` (:func:`fit_reflectance`, a fraction of a second): minimises, over z ∈ [0, 1]⁶,
the squared difference of ``log(ε + f·cos θ_i·cos θ_o)`` (per RGB channel) between the table and
the principled BRDF on a fixed random subset of the table's bins above the horizon. The log
compresses the specular peak; the cosines weigh the bins as a rendering does; ε = 0.1 (of the
order of a diffuse f·cos·cos) keeps the far tails, where a Beckmann or Ward lobe and GGX differ by
orders of magnitude but carry little light, from dominating. Levenberg–Marquardt on
z = (1 − cos u)/2 (smooth, unbounded u ↔ z ∈ [0, 1]) from several starts. Fast and good enough
as the measured BSDF's sampling proxy, but equal weight per table bin is not what an image
weighs: out-of-model materials (a Ward or Ashikhmin–Shirley lobe) come out visibly off.

``"refmap"`` (:func:`fit_refmap`, the default, about a second): what a user compares is the
sphere under light, so this fit matches refmaps. The measured BRDF is rendered once
(``rendering.measured_bsdf``) under ``FIT_LIGHTING`` — a white environment plus procedural skies
and studios, each seen from ``FIT_AZIMUTHS`` view azimuths — at a small resolution, and z
minimises, per view, the refmap difference relative to that refmap's RMS and, weighted by
``FIT_LOG_WEIGHT``, the difference of ``log(m + L)`` (m: that refmap's mean): the relative
linear term keeps what dominates an image (the highlights) and gives every view the same say, the
log term keeps bright lights from drowning the rest. The principled refmaps use
common random numbers (``rendering.refmap``), so the objective is a smooth function of z; its
Jacobian is a forward difference whose six perturbed materials render in the same batch as z.
Trust-region reflective least squares inside [0, 1]⁶, started from the reflectance fit; a faint
pull toward that start pins directions the refmaps cannot see (specular of a metal).
Deterministic: fixed envmaps, seeds and start.

With ``cache_dir`` a fit is stored as ``<cache_dir>/<name>.z-<key>.json``, ``key`` a digest of the
table's content, the method and the fit's settings (``FIT_VERSION`` included), written atomically:
a directory of MERL files is fitted once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

import drjit as dr
import numpy as np
from scipy.optimize import least_squares

from fileio.atomic import atomic_write
from rendering.errors import InputError
from rendering.merl import (
    PHI_D_RES,
    THETA_D_RES,
    THETA_H_RES,
    MerlBrdf,
    angles_to_directions,
    bin_angles,
)
from rendering.principled import principled_bsdf
from rendering.refmap import render_refmaps, render_refmaps_bsdf
from rendering.variant import ensure_variant

FIT_METHODS = ("refmap", "reflectance")
FIT_VERSION = 1  # bump when a fit changes in a way its settings below do not show

FIT_BINS = 3000  # table bins the reflectance fit compares (random, above the horizon)
FIT_EPSILON = 0.1  # ε in log(ε + f·cos·cos): below it a difference hardly matters
FIT_STARTS = (  # initial z: [metallic, r, g, b, roughness, specular]; inside (0, 1),
    (0.05, 0.5, 0.5, 0.5, 0.3, 0.5),  # where the reparametrisation's gradient is not 0
    (0.95, 0.8, 0.8, 0.8, 0.2, 0.5),
    (0.05, 0.5, 0.5, 0.5, 0.7, 0.5),
)
FIT_SEED = 0

# The refmap fit. Each (kind, seed) is a procedural envmap (rendering.procedural_envmaps) at
# FIT_ENVMAP_HEIGHT, "white" the constant one: a sun, area lights, and the albedo/rim profile.
# Rooms are left out: their path tracer is not bit-reproducible across a process's history.
FIT_LIGHTING = (("white", 0), ("sky", 1), ("studio", 2), ("studio", 3))
FIT_AZIMUTHS = 3  # views per envmap (equally spaced; the white one needs only one)
FIT_ENVMAP_HEIGHT = 32
FIT_RES = 16  # refmap resolution of the fit (lobes wider than ~10° are resolved)
FIT_SPP = 32  # samples per pixel, for the measured and the principled refmaps alike
FIT_RENDER_SEED = 0
FIT_STEP = 0.01  # finite-difference step in z (common random numbers make it smooth)
FIT_PRIOR = 0.01  # weight of the pull toward the starting z (per unit of z)
FIT_LOG_WEIGHT = 0.5  # weight of the log term against the relative linear one


class PrincipledEvaluator:
    """Evaluates principled BRDFs f(wi, wo) (1/sr, no cosine) at fixed local direction pairs
    (N, 3) for any number of material vectors, reusing one BSDF through ``mi.traverse`` so that
    changing z does not recompile the kernel."""

    def __init__(self, wi: np.ndarray, wo: np.ndarray):
        mi = ensure_variant()
        self.mi = mi
        self.bsdf = principled_bsdf(np.full(6, 0.5))
        self.params = mi.traverse(self.bsdf)
        wi = np.asarray(wi, dtype=np.float32).reshape(-1, 3)
        wo = np.asarray(wo, dtype=np.float32).reshape(-1, 3)
        self.cos_o = wo[:, 2].astype(np.float64)
        self.above = (wi[:, 2] > 0) & (wo[:, 2] > 0)
        si = dr.zeros(mi.SurfaceInteraction3f, wi.shape[0])
        si.n = mi.Normal3f(0.0, 0.0, 1.0)
        si.sh_frame = mi.Frame3f(si.n)
        si.wi = mi.Vector3f(wi[:, 0], wi[:, 1], wi[:, 2])
        self.si = si
        self.wo = mi.Vector3f(wo[:, 0], wo[:, 1], wo[:, 2])
        self.ctx = mi.BSDFContext()

    def __call__(self, z: np.ndarray) -> np.ndarray:
        """(N, 3) float64 BRDF values for material z (6,); 0 below the horizon."""
        z = np.clip(np.asarray(z, dtype=np.float64).ravel(), 0.0, 1.0)
        self.params["metallic.value"] = float(z[0])
        self.params["base_color.value"] = self.mi.Color3f(*[float(v) for v in z[1:4]])
        self.params["roughness.value"] = float(z[4])
        self.params["specular"] = float(z[5])
        self.params.update()
        value = np.array(self.bsdf.eval(self.ctx, self.si, self.wo), dtype=np.float64).reshape(3, -1).T
        cos_o = np.where(self.above, self.cos_o, 1.0)
        return np.where(self.above[:, None], value / cos_o[:, None], 0.0)


def principled_brdf(z: np.ndarray, wi: np.ndarray, wo: np.ndarray) -> np.ndarray:
    """Principled BRDF of z (6,) at local direction pairs (N, 3): (N, 3) in 1/sr, no cosine."""
    return PrincipledEvaluator(wi, wo)(z)


def tabulate_principled(z: np.ndarray, name: str = "") -> MerlBrdf:
    """The MERL table of the principled material z (6,), sampled at the bin centres."""
    return MerlBrdf.from_function(lambda wi, wo: principled_brdf(z, wi, wo), name)


def fit_bins(n: int = FIT_BINS, seed: int = FIT_SEED) -> tuple[np.ndarray, np.ndarray, tuple]:
    """A fixed random subset of table bins above the horizon: local (wi, wo) (n, 3) at their
    centres and their indices (i_h, i_d, i_p) (n,) each."""
    rng = np.random.default_rng(seed)
    theta_h, theta_d, phi_d = bin_angles()
    count = 4 * n  # about half the bins lie below the horizon; draw enough and keep n
    index = (
        rng.integers(0, THETA_H_RES, count),
        rng.integers(0, THETA_D_RES, count),
        rng.integers(0, PHI_D_RES, count),
    )
    wi, wo = angles_to_directions(theta_h[index[0]], theta_d[index[1]], phi_d[index[2]])
    keep = np.flatnonzero((wi[:, 2] > 0.02) & (wo[:, 2] > 0.02))[:n]
    return wi[keep], wo[keep], tuple(i[keep] for i in index)


def log_reflectance(f: np.ndarray, wi: np.ndarray, wo: np.ndarray) -> np.ndarray:
    """log(ε + f·cos θ_i·cos θ_o): (N, 3) → (N, 3), the quantity the fit compares."""
    weight = (np.maximum(wi[:, 2], 0.0) * np.maximum(wo[:, 2], 0.0))[:, None]
    return np.log(FIT_EPSILON + np.maximum(f, 0.0) * weight)


def fit_principled(
    measured: MerlBrdf, method: str = "refmap", cache_dir: str | os.PathLike | None = None
) -> np.ndarray:
    """The principled material z (6,) float64 in [0, 1] closest to ``measured``.

    method: ``"refmap"`` (default: its refmaps under light match the measured ones; about a
    second) or ``"reflectance"`` (its BRDF values match the table's; a fraction of a second, the
    refmap fit's start). cache_dir: read the fit from there when an earlier call stored it for
    this table, method and fit version; else fit and store it (see the module docstring).
    """
    if method not in FIT_METHODS:
        raise InputError("method", f"unknown principled fit {method!r}; choose one of {FIT_METHODS}")
    if not isinstance(measured, MerlBrdf):
        raise InputError("measured", f"expected a MerlBrdf, got {type(measured).__name__}")
    path = None
    if cache_dir is not None:
        key = fit_key(measured, method)
        path = Path(cache_dir) / f"{measured.name or 'material'}.z-{key[:16]}.json"
        cached = _read_cached_z(path, key)
        if cached is not None:
            return cached
    z = fit_refmap(measured) if method == "refmap" else fit_reflectance(measured)
    if path is not None:
        _write_cached_z(path, {"key": key, "method": method, "name": measured.name, "z": z.tolist()})
    return z


def fit_reflectance(brdf: MerlBrdf, n_bins: int = FIT_BINS, seed: int = FIT_SEED) -> np.ndarray:
    """The principled z (6,) whose log reflectance is closest to ``brdf``'s over a fixed random
    set of table bins (see the module docstring)."""
    wi, wo, (i_h, i_d, i_p) = fit_bins(n_bins, seed)
    target = log_reflectance(brdf.filled[i_h, i_d, i_p].astype(np.float64), wi, wo)
    evaluate = PrincipledEvaluator(wi, wo)

    def to_z(u: np.ndarray) -> np.ndarray:
        return (1.0 - np.cos(u)) / 2.0

    def residual(u: np.ndarray) -> np.ndarray:
        return (log_reflectance(evaluate(to_z(u)), wi, wo) - target).ravel()

    best = None
    for start in FIT_STARTS:
        # diff_step: finite differences must be well above the float32 noise of Mitsuba's eval.
        result = least_squares(residual, np.arccos(1.0 - 2.0 * np.array(start)), method="lm", diff_step=1e-3)
        if best is None or result.cost < best.cost:
            best = result
    return np.clip(to_z(best.x), 0.0, 1.0)


def fit_refmap(measured: MerlBrdf, start: np.ndarray | None = None) -> np.ndarray:
    """The principled z (6,) whose refmaps under ``FIT_LIGHTING`` are closest to ``measured``'s
    (see the module docstring). start: the initial z (default: :func:`fit_reflectance`), also the
    measured BSDF's sampling proxy."""
    from rendering.variant import RENDER_LOCK

    with RENDER_LOCK:  # Dr.Jit is not thread-safe across Python threads (rendering/variant.py)
        return _fit_refmap(measured, start)


def _fit_refmap(measured: MerlBrdf, start: np.ndarray | None) -> np.ndarray:
    start = fit_reflectance(measured) if start is None else np.clip(np.asarray(start, np.float64), 0.0, 1.0)
    objective = RefmapObjective(measured, start)

    def residual(z: np.ndarray) -> np.ndarray:
        return objective(z[None])[0]

    def jacobian(z: np.ndarray) -> np.ndarray:
        # Forward differences, stepping inward at the upper bound; all seven in one batch.
        step = np.where(z + FIT_STEP <= 1.0, FIT_STEP, -FIT_STEP)
        values = objective(np.vstack([z, z + np.diag(step)]))
        return ((values[1:] - values[0]) / step[:, None]).T

    # trf needs a start strictly inside the bounds.
    inside = np.clip(start, 1e-3, 1.0 - 1e-3)
    result = least_squares(
        residual, inside, jac=jacobian, bounds=(0.0, 1.0), method="trf", xtol=1e-3, ftol=1e-4, max_nfev=50
    )
    return np.clip(result.x, 0.0, 1.0)


class RefmapObjective:
    """Residuals of the refmap fit for a batch of material vectors: ``objective(z) -> (B, M)``
    for z (B, 6). The measured refmaps are rendered once, here, with ``start`` as the measured
    BSDF's sampling proxy; M = 2·(views·3·FIT_RES²) + 6 (the linear and log terms of every view,
    then the pull toward ``start``); the fit minimises their sum of squares."""

    def __init__(self, measured: MerlBrdf, start: np.ndarray):
        from rendering.measured_bsdf import measured_bsdf

        bsdf = measured_bsdf(measured, proxy_z=start)
        self.start = np.asarray(start, dtype=np.float64)
        self.lighting = _fit_lighting()
        self.targets, self.scales, self.floors = [], [], []
        for envmap, azimuths in self.lighting:
            target = render_refmaps_bsdf(
                envmap, bsdf, azimuths, refmap_res=FIT_RES, spp=FIT_SPP, seed=FIT_RENDER_SEED
            ).reshape(len(azimuths), -1)
            target = target.astype(np.float64)
            self.targets.append(target)
            # Per view: the RMS that makes the linear term relative, the mean that floors the log.
            self.scales.append(np.maximum(np.sqrt(np.mean(target**2, axis=1, keepdims=True)), 1e-12))
            self.floors.append(np.maximum(target.mean(axis=1, keepdims=True), 1e-12))
        self.log_targets = [np.log(floor + t) for floor, t in zip(self.floors, self.targets, strict=True)]
        self.norm = 1.0 / np.sqrt(2.0 * sum(t.size for t in self.targets))

    def __call__(self, z: np.ndarray) -> np.ndarray:
        z = np.clip(np.atleast_2d(np.asarray(z, dtype=np.float64)), 0.0, 1.0)
        count = len(z)
        parts = []
        for (envmap, azimuths), target, scale, floor, log_target in zip(
            self.lighting, self.targets, self.scales, self.floors, self.log_targets, strict=True
        ):
            views = len(azimuths)
            refmaps = render_refmaps(
                envmap, np.repeat(z, views, axis=0), np.tile(azimuths, count),
                refmap_res=FIT_RES, spp=FIT_SPP, seed=FIT_RENDER_SEED,
            ).reshape(count, views, -1).astype(np.float64)  # fmt: skip
            parts.append(((refmaps - target) / scale).reshape(count, -1))
            parts.append(FIT_LOG_WEIGHT * (np.log(floor + refmaps) - log_target).reshape(count, -1))
        return np.concatenate(
            [np.concatenate(parts, axis=1) * self.norm, FIT_PRIOR * (z - self.start)], axis=1
        )


@functools.lru_cache(maxsize=1)
def _fit_lighting() -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """The refmap fit's lighting: (envmap (H, 2H, 3), view azimuths (n,)) per ``FIT_LIGHTING``
    entry, made once per process (shared arrays: do not modify them)."""
    from rendering.procedural_envmaps import make_envmap

    height = FIT_ENVMAP_HEIGHT
    views = np.arange(FIT_AZIMUTHS) * (2.0 * np.pi / FIT_AZIMUTHS)
    out = []
    for kind, seed in FIT_LIGHTING:
        if kind == "white":
            envmap, azimuths = np.ones((height, 2 * height, 3), dtype=np.float32), np.zeros(1)
        else:
            envmap, azimuths = make_envmap(kind, seed, height), views.copy()
        out.append((envmap, azimuths))
    return tuple(out)


def refmap_error(
    measured: MerlBrdf,
    z: np.ndarray,
    envmap: np.ndarray,
    refmap_res: int = 32,
    spp: int = 256,
    seed: int = 1,
    proxy_z: np.ndarray | None = None,
) -> np.ndarray:
    """Relative refmap RMSE, ‖L(z) − L_measured‖ / ‖L_measured‖ (RMS over pixels and channels),
    of each principled material z (6,) or (B, 6) against ``measured`` under ``envmap``
    (H, 2H, 3): a float, or (B,). The measured refmap is rendered once, sampled with ``proxy_z``
    (default: the reflectance fit), and both with the same seed."""
    from rendering.measured_bsdf import measured_bsdf

    z = np.asarray(z, dtype=np.float64)
    batch = np.atleast_2d(z)
    proxy_z = fit_reflectance(measured) if proxy_z is None else proxy_z
    target = render_refmaps_bsdf(
        envmap, measured_bsdf(measured, proxy_z=proxy_z), refmap_res=refmap_res, spp=spp, seed=seed
    )
    refmaps = render_refmaps(envmap, batch, refmap_res=refmap_res, spp=spp, seed=seed)
    error = np.sqrt(np.mean((refmaps - target) ** 2, axis=(1, 2, 3)) / np.mean(target**2))
    return float(error[0]) if z.ndim == 1 else error


# -- the cache -----------------------------------------------------------------------------------


def fit_key(measured: MerlBrdf, method: str) -> str:
    """sha256 (hex) of the table's content, the method and every setting the fit depends on."""
    settings = {
        "version": FIT_VERSION,
        "method": method,
        "reflectance": [FIT_BINS, FIT_EPSILON, FIT_STARTS, FIT_SEED],
        "refmap": [FIT_LIGHTING, FIT_AZIMUTHS, FIT_ENVMAP_HEIGHT, FIT_RES, FIT_SPP, FIT_RENDER_SEED]
        + [FIT_STEP, FIT_PRIOR, FIT_LOG_WEIGHT],
    }
    digest = hashlib.sha256(np.ascontiguousarray(measured.table).tobytes())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def _read_cached_z(path: Path, key: str) -> np.ndarray | None:
    """The z stored at ``path`` for ``key``; None when absent, unreadable or for another key
    (then the caller fits again and overwrites it)."""
    try:
        record = json.loads(path.read_text())
        z = np.asarray(record["z"], dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if record.get("key") != key or z.shape != (6,) or not np.all((z >= 0.0) & (z <= 1.0)):
        return None
    return z


def _write_cached_z(path: Path, record: dict) -> None:
    """Write ``record`` as JSON at ``path`` atomically (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp, open(tmp, "w") as out:
        json.dump(record, out, indent=1)


def fit_error(brdf: MerlBrdf, z: np.ndarray, n_bins: int = FIT_BINS, seed: int = FIT_SEED) -> float:
    """RMS difference of log reflectance between ``brdf`` and the principled z (6,) over the
    fit's bins: the quantity :func:`fit_reflectance` minimises (0 for a perfect fit)."""
    wi, wo, (i_h, i_d, i_p) = fit_bins(n_bins, seed)
    target = log_reflectance(brdf.filled[i_h, i_d, i_p].astype(np.float64), wi, wo)
    return float(np.sqrt(np.mean((log_reflectance(principled_brdf(z, wi, wo), wi, wo) - target) ** 2)))
