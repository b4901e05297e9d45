"""The principled material closest to a measured BRDF, and principled BRDFs as tables.

A material vector z (6,) is ``[metallic, base_color_R, base_color_G, base_color_B, roughness,
specular]`` (DESIGN.md §3.3): Mitsuba's ``principled`` BSDF with every other parameter 0.
Everything here evaluates that BSDF through Mitsuba itself, vectorised over many (wi, wo)
pairs, so a table tabulated from z and the principled BSDF agree up to the table's resolution.

:func:`fit_principled` minimises, over z ∈ [0, 1]⁶, the squared difference of
``log(ε + f·cos θ_i·cos θ_o)`` (per RGB channel) between the table and the principled BRDF, on a
fixed random subset of the table's bins that lie above the horizon. The log compresses the
specular peak so that it does not outweigh the rest; the cosines weigh the bins as a rendering
does; ε = 0.1 (of the order of a diffuse f·cos·cos) keeps the far tails, where a Beckmann or
Ward lobe and GGX differ by orders of magnitude but carry little light, from dominating.
Levenberg–Marquardt on z = (1 − cos u)/2 (smooth, unbounded u ↔ z ∈ [0, 1]); several starts
(dielectric/metal, smooth/rough) guard against local minima. About a second.
"""

from __future__ import annotations

import drjit as dr
import numpy as np
from scipy.optimize import least_squares

from rendering.merl import (
    PHI_D_RES,
    THETA_D_RES,
    THETA_H_RES,
    MerlBrdf,
    angles_to_directions,
    bin_angles,
)
from rendering.variant import ensure_variant

FIT_BINS = 3000  # table bins the fit compares (random, above the horizon)
FIT_EPSILON = 0.1  # ε in log(ε + f·cos·cos): below it a difference hardly matters
FIT_STARTS = (  # initial z: [metallic, r, g, b, roughness, specular]; inside (0, 1),
    (0.05, 0.5, 0.5, 0.5, 0.3, 0.5),  # where the reparametrisation's gradient is not 0
    (0.95, 0.8, 0.8, 0.8, 0.2, 0.5),
    (0.05, 0.5, 0.5, 0.5, 0.7, 0.5),
)
FIT_SEED = 0


def principled_dict(z: np.ndarray) -> dict:
    """``mi.load_dict`` description of the principled BSDF of material vector z (6,)."""
    z = np.asarray(z, dtype=np.float64).ravel()
    if z.shape != (6,):
        raise ValueError(f"a material vector z has 6 entries, got shape {z.shape}")
    return {
        "type": "principled",
        "base_color": {"type": "rgb", "value": [float(v) for v in z[1:4]]},
        "metallic": float(z[0]),
        "roughness": float(z[4]),
        "specular": float(z[5]),
        **dict.fromkeys(
            ("spec_tint", "anisotropic", "sheen", "sheen_tint", "clearcoat", "clearcoat_gloss", "spec_trans"),
            0.0,
        ),
    }


def principled_bsdf(z: np.ndarray):
    """Mitsuba's principled BSDF (an ``mi.BSDF``) for material vector z (6,)."""
    return ensure_variant().load_dict(principled_dict(z))


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


def fit_principled(brdf: MerlBrdf, n_bins: int = FIT_BINS, seed: int = FIT_SEED) -> np.ndarray:
    """The closest principled material z (6,) to ``brdf`` (see the module docstring)."""
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


def fit_error(brdf: MerlBrdf, z: np.ndarray, n_bins: int = FIT_BINS, seed: int = FIT_SEED) -> float:
    """RMS difference of log reflectance between ``brdf`` and the principled z (6,) over the
    fit's bins: the quantity :func:`fit_principled` minimises (0 for a perfect fit)."""
    wi, wo, (i_h, i_d, i_p) = fit_bins(n_bins, seed)
    target = log_reflectance(brdf.filled[i_h, i_d, i_p].astype(np.float64), wi, wo)
    return float(np.sqrt(np.mean((log_reflectance(principled_brdf(z, wi, wo), wi, wo) - target) ** 2)))
