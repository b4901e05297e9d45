"""Direct lighting of a surface point by an environment map, vectorised over a wavefront of
lanes: the Monte Carlo estimator behind refmap rendering.

The integrand is Mitsuba's own: ``bsdf.eval`` of the stock plugin times the ``envmap``
emitter's radiance; only the sampling is ours. Each lane draws one direction from the emitter's
importance sampling and one from a BSDF-side technique and combines them with the power heuristic
(multi-sample MIS, Veach 1997, §9.2), like Mitsuba's ``direct`` integrator.

BSDF-side techniques:

* :class:`GGXTechnique`: GGX visible normals (Dupuy & Benyoub 2023's spherical-cap sampler) at
  a per-lane α, for principled materials. Unlike the plugin's own sampling it never picks a lobe
  at random: the estimate stays a continuous function of the material for fixed random numbers,
  so neighbouring materials see the same samples (common random numbers) without lobe-selection
  flips (those made L(z_k) − L(z_{k−1}) as noisy as independent renders when only metallic
  changed). The diffuse lobe is left to the emitter's sampling: adding a cosine-hemisphere
  technique cost time and, measured on indoor and sun-lit envmaps, reduced no noise;
* :class:`BSDFTechnique`: the plugin's own ``bsdf.sample``, for any BSDF (measured, delta, …).

The shading point's local frame has z = n; ``si.wi`` is the viewer direction in it.
"""

from __future__ import annotations

import math


def shading_point(mi, dr, normal, view, uv):
    """A ``SurfaceInteraction3f`` at a point of the unit sphere with the given world normal."""
    si = dr.zeros(mi.SurfaceInteraction3f)
    si.t = 1.0
    si.p = mi.Point3f(normal)
    si.n = normal
    si.sh_frame = mi.Frame3f(normal)
    si.wi = si.sh_frame.to_local(view)
    si.uv = uv
    return si


class GGXTechnique:
    """Sampling GGX visible normals of roughness α (per lane), reflected about the viewer."""

    def __init__(self, mi, dr, bsdf, alpha):
        self.mi, self.dr, self.bsdf, self.alpha = mi, dr, bsdf, alpha

    def sample(self, ctx, si, u, lobe):
        """(wo, bsdf value / pdf, pdf, delta mask) for a 2D sample u; ``lobe`` is unused."""
        mi, dr, alpha, wi = self.mi, self.dr, self.alpha, si.wi
        # Spherical-cap VNDF sampling in the stretched (α = 1) configuration.
        wi_std = dr.normalize(mi.Vector3f(alpha * wi.x, alpha * wi.y, wi.z))
        phi = 2.0 * math.pi * u.x
        z = (1.0 - u.y) * (1.0 + wi_std.z) - wi_std.z
        sin_theta = dr.sqrt(dr.clip(1.0 - z * z, 0.0, 1.0))
        h_std = mi.Vector3f(sin_theta * dr.cos(phi), sin_theta * dr.sin(phi), z) + wi_std
        h = dr.normalize(mi.Vector3f(alpha * h_std.x, alpha * h_std.y, dr.maximum(h_std.z, 0.0)))
        wo = 2.0 * dr.dot(wi, h) * h - wi
        pdf = self.pdf(si, wo)
        value_over_pdf = self.bsdf.eval(ctx, si, wo) / dr.maximum(pdf, 1e-20)
        return wo, value_over_pdf, pdf, mi.Bool(False)

    def pdf(self, si, wo):
        dr, alpha, wi = self.dr, self.alpha, si.wi
        h = dr.normalize(wi + wo)
        a2 = alpha * alpha
        # D(h) = α² / (π (sin²θ + α² cos²θ)²), written without cancellation for tiny α.
        d = a2 / (math.pi * dr.square(h.x * h.x + h.y * h.y + a2 * h.z * h.z))
        tan2_i = (wi.x * wi.x + wi.y * wi.y) / dr.square(wi.z)
        g1 = 2.0 / (1.0 + dr.sqrt(1.0 + a2 * tan2_i))
        # Visible-normal density G1·(wi·h)·D/cos θ_i, times the reflection Jacobian 1/(4 wo·h).
        pdf = g1 * d / (4.0 * wi.z)
        return dr.select((wo.z > 0) & (dr.dot(wi, h) > 0), pdf, 0.0)


class BSDFTechnique:
    """The BSDF plugin's own importance sampling (any Mitsuba BSDF, including delta lobes)."""

    def __init__(self, mi, dr, bsdf):
        self.mi, self.dr, self.bsdf = mi, dr, bsdf

    def sample(self, ctx, si, u, lobe):
        """(wo, bsdf value / pdf, pdf, delta mask) for a 2D sample u and a lobe choice."""
        bs, value_over_pdf = self.bsdf.sample(ctx, si, lobe, u)
        delta = self.mi.has_flag(bs.sampled_type, self.mi.BSDFFlags.Delta)
        return bs.wo, value_over_pdf, self.dr.select(delta, 0.0, bs.pdf), delta

    def pdf(self, si, wo):
        return self.bsdf.pdf(self.mi.BSDFContext(), si, wo)


def estimate(mi, dr, emitter, bsdf, si, technique, samples, use_emitter: bool = True):
    """Reflected radiance toward ``si.wi`` (Color3f per lane): one direction from the emitter's
    importance sampling and one from the BSDF-side ``technique``, power heuristic.

    samples: three Point2f per lane (emitter, technique direction, technique lobe choice in x).
    ``use_emitter`` False keeps the technique alone (the ideal estimator under a constant
    environment).
    """
    ctx = mi.BSDFContext()
    emitter_sample, direction_sample, lobe_sample = samples

    def power_heuristic(pdf, other):
        own = dr.square(pdf)
        return dr.select(own > 0, own / (own + dr.square(other)), 0.0)

    radiance = mi.Color3f(0.0)
    if use_emitter:
        ds, radiance_over_pdf = emitter.sample_direction(si, emitter_sample)
        wo = si.to_local(ds.d)
        above = wo.z > 0  # the sphere is convex: d reaches the environment iff d·n > 0
        value = bsdf.eval(ctx, si, wo, above)
        weight = power_heuristic(ds.pdf, technique.pdf(si, wo))
        radiance = dr.select(above, value * radiance_over_pdf * weight, 0.0)

    wo, value_over_pdf, pdf, delta = technique.sample(ctx, si, direction_sample, lobe_sample.x)
    above = wo.z > 0
    d = si.to_world(wo)
    emitter_pdf = 0.0
    if use_emitter:
        lookup = dr.zeros(mi.DirectionSample3f)
        lookup.d = d
        emitter_pdf = emitter.pdf_direction(si, lookup, above)
    weight = dr.select(delta, 1.0, power_heuristic(pdf, emitter_pdf))
    hit = dr.zeros(mi.SurfaceInteraction3f)
    hit.wi = -d
    return radiance + dr.select(above, value_over_pdf * emitter.eval(hit, above) * weight, 0.0)
