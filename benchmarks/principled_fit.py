"""Principled fits of measured BRDFs: how closely the fitted material's refmaps match the measured
ones under envmaps the fit never saw, and what a fit costs, for the refmap fit against the
reflectance fit (the baseline) in the same run.

    .venv/bin/python benchmarks/principled_fit.py [--materials 9] [--refmap-res 32] [--spp 256]

For each built-in measured-like material (``rendering.builtin_materials``: analytic models that
are not the principled BSDF) both fits run; each fitted z is rendered under held-out procedural
envmaps (a room, a sky and a studio, none in ``FIT_LIGHTING``) and compared with the measured
BRDF's refmap rendered with the same seed: relative refmap RMSE (``refmap_error``), the mean over
the held-out envmaps. The first fit of the run compiles kernels and makes the fit's envmaps; it
is done once before the timings.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from rendering.builtin_materials import BUILTIN_NAMES, builtin_material
from rendering.principled_fit import fit_reflectance, fit_refmap, refmap_error
from rendering.procedural_envmaps import make_envmap
from rendering.variant import active_variant, ensure_variant

HELD_OUT = (("room", 7), ("sky", 11), ("studio", 13))  # (kind, seed): none of FIT_LIGHTING


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--materials", type=int, default=len(BUILTIN_NAMES), help="built-in materials")
    parser.add_argument("--refmap-res", type=int, default=32, help="refmap resolution of the comparison")
    parser.add_argument("--spp", type=int, default=256, help="samples per pixel of the comparison")
    parser.add_argument("--envmap-height", type=int, default=64, help="height of the held-out envmaps")
    args = parser.parse_args()
    ensure_variant()
    print(f"variant {active_variant()}")
    held_out = {f"{kind}{seed}": make_envmap(kind, seed, args.envmap_height) for kind, seed in HELD_OUT}
    names = BUILTIN_NAMES[: args.materials]
    tables = {name: builtin_material(name) for name in names}
    fit_refmap(tables[names[0]])  # warm-up: kernels, the fit's envmaps

    print(
        f"\n== relative refmap RMSE under held-out envmaps ({', '.join(held_out)}; {args.refmap_res}², "
        f"{args.spp} spp), mean over them; seconds per fit =="
    )
    print(
        f"{'material':18s}{'s reflect.':>11s}{'s refmap':>10s}"
        f"{'RMSE reflect.':>15s}{'RMSE refmap':>13s}{'ratio':>8s}"
    )
    rows = []
    for name, table in tables.items():
        start = time.perf_counter()
        z_old = fit_reflectance(table)
        t_old = time.perf_counter() - start
        z_new = fit_refmap(table, z_old)
        t_new = time.perf_counter() - start  # a refmap fit includes its reflectance start
        errors = np.array(
            [refmap_error(table, np.stack([z_old, z_new]), envmap, args.refmap_res, args.spp, proxy_z=z_old)
             for envmap in held_out.values()]
        )  # fmt: skip
        old, new = errors.mean(axis=0)
        rows.append((t_old, t_new, old, new))
        print(f"{name:18s}{t_old:11.2f}{t_new:10.2f}{old:15.3f}{new:13.3f}{new / old:8.2f}")
        print(f"{'':18s}z reflectance {np.round(z_old, 2).tolist()}")
        print(f"{'':18s}z refmap      {np.round(z_new, 2).tolist()}")
    t_old, t_new, old, new = np.mean(rows, axis=0)
    print(f"{'mean':18s}{t_old:11.2f}{t_new:10.2f}{old:15.3f}{new:13.3f}{new / old:8.2f}")
    print(
        f"refmap fit / reflectance fit RMSE ratio (mean of per-material ratios): "
        f"{np.mean([r[3] / r[2] for r in rows]):.3f}"
    )
    print(f"a directory of 100 MERL files: about {100 * t_new / 60:.1f} min of refmap fits on this machine")


if __name__ == "__main__":
    main()
