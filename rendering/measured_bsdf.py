"""A Mitsuba 3 BSDF for measured isotropic BRDFs in the MERL layout (plugin name ``"merl"``).

Vectorised Dr.Jit code, so the same class runs in the llvm and cuda variants. The table is a
``Texture3f`` over (θ_h, θ_d, φ_d) with RGB channels; the half/difference angles and bin
coordinates are those of ``rendering.merl`` (one φ_d column of padding on each side makes the
texture's clamped lookup periodic in φ_d). ``filter="linear"`` (default) interpolates
trilinearly between bin centres, ``"nearest"`` is MERL's reference lookup; the plugin matches
``MerlBrdf.eval`` with the same filter.

Importance sampling: a mixture of a principled proxy lobe (the closest principled material,
``rendering.principled_fit.fit_principled``'s fast "reflectance" method, sampled by Mitsuba's own
``principled`` BSDF) and a cosine lobe (weight ``cosine_weight``) that keeps the estimator's
variance bounded where the table has more energy than the proxy. ``pdf`` is the mixture's
density; ``sample`` returns value / pdf of the mixture (one-sample MIS over the two lobes).

Properties: ``table`` (TensorXf (90, 90, 180, 3), 1/sr, missing samples already filled) or
``filename`` (a MERL ``.binary``); ``proxy_z`` (TensorXf (6,), DESIGN §3.3 order; fitted on
load when absent); ``filter``; ``cosine_weight``. In Python use :func:`measured_bsdf`.
``traverse`` exposes ``table`` (differentiable); updating it re-uploads the texture but keeps
the proxy (refit and rebuild if the material changed a lot).
"""

from __future__ import annotations

import drjit as dr
import numpy as np

from rendering.merl import FILTERS, PHI_D_RES, THETA_D_RES, THETA_H_RES, MerlBrdf, read_merl
from rendering.principled import principled_bsdf
from rendering.variant import ensure_variant

mi = ensure_variant()

PLUGIN_NAME = "merl"
DEFAULT_COSINE_WEIGHT = 0.2
_registered = False


def _padded_index() -> np.ndarray:
    """Flat indices that turn a (90, 90, 180, 3) table into (90, 90, 182, 3) with φ_d wrapped."""
    base = np.arange(THETA_H_RES * THETA_D_RES * PHI_D_RES * 3).reshape(
        THETA_H_RES, THETA_D_RES, PHI_D_RES, 3
    )
    return np.concatenate([base[:, :, -1:], base, base[:, :, :1]], axis=2).ravel().astype(np.uint32)


def half_diff_coordinates(wi, wo):
    """Local directions (mi.Vector3f) → texture coordinates (mi.Point3f) in [0, 1]³, ordered
    (φ_d, θ_d, θ_h) as the texture's (x, y, z); see ``rendering.merl`` for the parametrisation."""
    half = dr.normalize(wi + wo)
    sin_h = dr.sqrt(dr.square(half.x) + dr.square(half.y))
    safe = sin_h > 1e-9
    cos_ph = dr.select(safe, half.x / sin_h, 1.0)
    sin_ph = dr.select(safe, half.y / sin_h, 0.0)
    x = cos_ph * wi.x + sin_ph * wi.y
    y = -sin_ph * wi.x + cos_ph * wi.y
    dx = half.z * x - sin_h * wi.z
    dz = sin_h * x + half.z * wi.z
    theta_h = dr.atan2(sin_h, half.z)
    theta_d = dr.atan2(dr.sqrt(dr.square(dx) + dr.square(y)), dz)
    phi_d = dr.atan2(y, dx)
    phi_d = dr.select(phi_d < 0, phi_d + dr.pi, phi_d)
    u_h = dr.sqrt(dr.maximum(theta_h, 0.0) * (2.0 / dr.pi))
    u_d = theta_d * (2.0 / dr.pi)
    # Continuous φ index in [0, 180) → padded texture coordinate (index + 1) / 182.
    u_p = (phi_d * (PHI_D_RES / dr.pi) + 1.0) / (PHI_D_RES + 2)
    return mi.Point3f(u_p, u_d, u_h)


class MeasuredBSDF(mi.BSDF):
    """Tabulated isotropic BRDF (see the module docstring)."""

    def __init__(self, props: mi.Properties):
        mi.BSDF.__init__(self, props)
        keys = set(props.keys())
        if "table" in keys:
            table = mi.TensorXf(props["table"])
            brdf = None
        elif "filename" in keys:
            brdf = read_merl(props["filename"])
            table = mi.TensorXf(brdf.filled)
        else:
            raise ValueError("the 'merl' BSDF needs a 'table' (TensorXf (90, 90, 180, 3)) or a 'filename'")
        if tuple(table.shape) != (THETA_H_RES, THETA_D_RES, PHI_D_RES, 3):
            raise ValueError(f"'merl' table must have shape (90, 90, 180, 3), got {tuple(table.shape)}")
        self.m_filter = props["filter"] if "filter" in keys else "linear"
        if self.m_filter not in FILTERS:
            raise ValueError(f"unknown filter {self.m_filter!r}; choose one of {FILTERS}")
        self.m_cosine_weight = (
            float(props["cosine_weight"]) if "cosine_weight" in keys else DEFAULT_COSINE_WEIGHT
        )
        if not 0.0 <= self.m_cosine_weight <= 1.0:
            raise ValueError(f"'merl' cosine_weight must lie in [0, 1], got {self.m_cosine_weight}")
        if "proxy_z" in keys:
            proxy_z = np.array(props["proxy_z"], dtype=np.float64).ravel()
        else:
            from rendering.principled_fit import fit_principled

            if brdf is None:
                brdf = MerlBrdf(np.moveaxis(np.array(table), -1, 0))
            proxy_z = fit_principled(brdf, method="reflectance")

        self.m_proxy_z = proxy_z
        self.m_proxy = principled_bsdf(proxy_z)
        self.m_pad_index = mi.UInt32(_padded_index())
        self.m_table = table
        self.m_texture = None
        self._upload()
        self.m_flags = mi.BSDFFlags.GlossyReflection | mi.BSDFFlags.FrontSide
        self.m_components = [self.m_flags]

    def _upload(self) -> None:
        padded = dr.gather(mi.Float, self.m_table.array, self.m_pad_index)
        shape = (THETA_H_RES, THETA_D_RES, PHI_D_RES + 2, 3)
        tensor = mi.TensorXf(padded, shape)
        if self.m_texture is None:
            mode = dr.FilterMode.Nearest if self.m_filter == "nearest" else dr.FilterMode.Linear
            # Software filtering: exact weights in both variants (CUDA's texture units use 8-bit ones).
            self.m_texture = mi.Texture3f(
                tensor, use_accel=False, filter_mode=mode, wrap_mode=dr.WrapMode.Clamp
            )
        else:
            self.m_texture.set_tensor(tensor)

    def _lookup(self, si, wo, active):
        """f(wi, wo)·cos θ_o as mi.Spectrum, 0 below the surface."""
        cos_i = mi.Frame3f.cos_theta(si.wi)
        cos_o = mi.Frame3f.cos_theta(wo)
        active = active & (cos_i > 0) & (cos_o > 0)
        rgb = self.m_texture.eval(half_diff_coordinates(si.wi, wo), active)
        value = mi.Spectrum(rgb[0], rgb[1], rgb[2]) * cos_o
        return dr.select(active, dr.maximum(value, 0.0), 0.0)

    def _pdf(self, ctx, si, wo, active):
        cos_o = mi.Frame3f.cos_theta(wo)
        proxy = self.m_proxy.pdf(ctx, si, wo, active)
        pdf = (1.0 - self.m_cosine_weight) * proxy + self.m_cosine_weight * dr.maximum(cos_o, 0.0) * dr.inv_pi
        return dr.select(active & (mi.Frame3f.cos_theta(si.wi) > 0) & (cos_o > 0), pdf, 0.0)

    def eval(self, ctx, si, wo, active=True):
        return self._lookup(si, wo, active)

    def pdf(self, ctx, si, wo, active=True):
        return self._pdf(ctx, si, wo, active)

    def eval_pdf(self, ctx, si, wo, active=True):
        return self._lookup(si, wo, active), self._pdf(ctx, si, wo, active)

    def sample(self, ctx, si, sample1, sample2, active=True):
        active = active & (mi.Frame3f.cos_theta(si.wi) > 0)
        use_cosine = sample1 < self.m_cosine_weight
        remapped = dr.clip((sample1 - self.m_cosine_weight) / (1.0 - self.m_cosine_weight), 0.0, 1.0 - 1e-7)
        bs, _ = self.m_proxy.sample(ctx, si, remapped, sample2, active & ~use_cosine)
        wo = dr.select(use_cosine, mi.warp.square_to_cosine_hemisphere(sample2), bs.wo)
        value, pdf = self.eval_pdf(ctx, si, wo, active)
        bs.wo = wo
        bs.pdf = pdf
        bs.eta = 1.0
        bs.sampled_type = mi.UInt32(+mi.BSDFFlags.GlossyReflection)
        bs.sampled_component = mi.UInt32(0)
        ok = active & (pdf > 0)
        return bs, dr.select(ok, value / dr.select(ok, pdf, 1.0), 0.0)

    def traverse(self, callback):
        callback.put("table", self.m_table, mi.ParamFlags.Differentiable)

    def parameters_changed(self, keys):
        if "table" in keys or not keys:
            self._upload()

    def to_string(self):
        return f"MeasuredBSDF[filter={self.m_filter}, proxy_z={np.round(self.m_proxy_z, 3).tolist()}]"


def register_measured_bsdf() -> None:
    """Register the ``"merl"`` plugin with Mitsuba (idempotent)."""
    global _registered
    if not _registered:
        mi.register_bsdf(PLUGIN_NAME, lambda props: MeasuredBSDF(props))
        _registered = True


def measured_bsdf_dict(
    brdf: MerlBrdf,
    proxy_z: np.ndarray | None = None,
    filter: str = "linear",
    cosine_weight: float = DEFAULT_COSINE_WEIGHT,
) -> dict:
    """A ``mi.load_dict`` description of ``brdf``; fits the proxy now when ``proxy_z`` is None."""
    register_measured_bsdf()
    if proxy_z is None:
        from rendering.principled_fit import fit_principled

        proxy_z = fit_principled(brdf, method="reflectance")
    return {
        "type": PLUGIN_NAME,
        "table": mi.TensorXf(brdf.filled),
        "proxy_z": mi.TensorXf(np.asarray(proxy_z, dtype=np.float32).ravel()),
        "filter": filter,
        "cosine_weight": float(cosine_weight),
    }


def measured_bsdf(
    brdf: MerlBrdf,
    proxy_z: np.ndarray | None = None,
    filter: str = "linear",
    cosine_weight: float = DEFAULT_COSINE_WEIGHT,
) -> mi.BSDF:
    """The Mitsuba BSDF of a measured table (see :func:`measured_bsdf_dict`)."""
    return mi.load_dict(measured_bsdf_dict(brdf, proxy_z, filter, cosine_weight))
