"""Measured-BRDF benchmark: evaluation throughput of the ``merl`` BSDF against Mitsuba's
``principled`` in the same run, and refmap convergence (RMSE vs spp) of a measured table against
the principled BSDF it was tabulated from.

    .venv/bin/python benchmarks/brdf.py [--pairs 1048576] [--refmap-res 32] [--reference-spp 2048]

Convergence: each refmap is compared with a high-spp reference of the *same* BSDF (so the
figures measure variance, not the table's bias; the bias between the two references is printed
separately). The measured BSDF uses its default sampling (fitted principled proxy + cosine lobe,
proxy fitted by ``fit_principled``); a cosine-only column shows what the proxy buys. The
envmap has a small bright sun, the hard case for a glossy lobe.
"""

from __future__ import annotations

import argparse
import time

import drjit as dr
import numpy as np

from rendering.builtin_materials import builtin_material
from rendering.envmap import pixel_directions
from rendering.measured_bsdf import measured_bsdf
from rendering.principled import principled_bsdf
from rendering.principled_fit import fit_principled, tabulate_principled
from rendering.refmap import render_refmaps, render_refmaps_bsdf
from rendering.variant import active_variant, ensure_variant

MATERIAL = np.array([0.3, 0.8, 0.5, 0.3, 0.3, 0.5])  # [metallic, r, g, b, roughness, specular]
SPP = (4, 16, 64, 256)


def sun_envmap(height: int = 64) -> np.ndarray:
    """Blue sky, grey ground and a sun of ~1.5° radius: (H, 2H, 3)."""
    d = pixel_directions(height)
    sun = np.array([0.4, 0.75, 0.5])
    sun /= np.linalg.norm(sun)
    sky = np.where(d[..., 1:2] > 0, np.array([0.3, 0.5, 0.9]), np.array([0.2, 0.2, 0.2]))
    disc = (d @ sun > np.cos(np.radians(3.0)))[..., None] * np.array([400.0, 380.0, 340.0])
    return (sky + disc).astype(np.float32)


def eval_throughput(bsdf, pairs: int, repeats: int = 5) -> float:
    """BSDF evaluations per second over ``pairs`` random local (wi, wo) pairs (best of repeats)."""
    mi = ensure_variant()
    rng = np.random.default_rng(0)
    v = rng.normal(size=(2, pairs, 3))
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    v[..., 2] = np.abs(v[..., 2])
    si = dr.zeros(mi.SurfaceInteraction3f, pairs)
    si.n = mi.Normal3f(0.0, 0.0, 1.0)
    si.sh_frame = mi.Frame3f(si.n)
    si.wi = mi.Vector3f(v[0].T.astype(np.float32))
    wo = mi.Vector3f(v[1].T.astype(np.float32))
    dr.eval(si, wo)
    ctx = mi.BSDFContext()
    best = np.inf
    for _ in range(repeats + 1):  # the first run compiles the kernel
        start = time.perf_counter()
        value = bsdf.eval(ctx, si, wo)
        dr.eval(value)
        dr.sync_thread()
        best = min(best, time.perf_counter() - start)
    return pairs / best


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=1 << 20, help="(wi, wo) pairs per eval timing")
    parser.add_argument("--refmap-res", type=int, default=32, help="refmap resolution")
    parser.add_argument("--reference-spp", type=int, default=2048, help="spp of the reference refmaps")
    args = parser.parse_args()
    ensure_variant()
    print(f"variant {active_variant()}")

    start = time.perf_counter()
    table = tabulate_principled(MATERIAL, "principled-table")
    print(f"tabulate principled z={MATERIAL.tolist()}: {time.perf_counter() - start:.2f} s")
    start = time.perf_counter()
    proxy = fit_principled(table, method="reflectance")
    print(f"fit_principled: {time.perf_counter() - start:.2f} s, z = {np.round(proxy, 3).tolist()}")
    measured = measured_bsdf(table, proxy_z=proxy)
    principled = principled_bsdf(MATERIAL)

    print(f"\n== eval throughput ({args.pairs} random pairs, best of 5) ==")
    rate_m = eval_throughput(measured, args.pairs)
    rate_p = eval_throughput(principled, args.pairs)
    print(f"merl (trilinear)  {rate_m / 1e6:8.2f} M evals/s")
    print(f"principled        {rate_p / 1e6:8.2f} M evals/s")
    print(f"ratio merl/principled: {rate_m / rate_p:.2f}")

    envmap = sun_envmap()
    cosine_only = measured_bsdf(table, proxy_z=proxy, cosine_weight=1.0)
    gold = builtin_material("gold-like")
    gold_bsdf = measured_bsdf(gold)
    renderers = {
        "principled": lambda spp, seed: render_refmaps(
            envmap, MATERIAL[None], refmap_res=args.refmap_res, spp=spp, seed=seed
        )[0],
        "merl": lambda spp, seed: render_refmaps_bsdf(
            envmap, measured, refmap_res=args.refmap_res, spp=spp, seed=seed
        )[0],
        "merl cos-only": lambda spp, seed: render_refmaps_bsdf(
            envmap, cosine_only, refmap_res=args.refmap_res, spp=spp, seed=seed
        )[0],
        "gold-like merl": lambda spp, seed: render_refmaps_bsdf(
            envmap, gold_bsdf, refmap_res=args.refmap_res, spp=spp, seed=seed
        )[0],
    }
    print(
        f"\n== refmap RMSE vs spp ({args.refmap_res}², sun envmap, reference {args.reference_spp} spp, "
        "relative to the reference's RMS) =="
    )
    references = {name: render(args.reference_spp, 12345) for name, render in renderers.items()}
    seconds = {}
    print("spp   " + "".join(f"{name:>17s}" for name in renderers))
    for spp in SPP:
        row = []
        for name, render in renderers.items():
            start = time.perf_counter()  # kernels are compiled by the reference render
            image = render(spp, 1)
            seconds[name] = time.perf_counter() - start
            ref = references[name]
            row.append(rmse(image, ref) / np.sqrt(np.mean(ref**2)))
        print(f"{spp:<6d}" + "".join(f"{value:17.4f}" for value in row))
    print(f"seconds per {SPP[-1]}-spp refmap: " + ", ".join(f"{k} {v:.2f}" for k, v in seconds.items()))
    bias = rmse(references["merl"], references["principled"]) / np.sqrt(
        np.mean(references["principled"] ** 2)
    )
    print(f"table bias: relative RMSE between the merl and principled references = {bias:.4f}")


if __name__ == "__main__":
    main()
