"""drmnet commands for rendering: refmaps, envmaps, objects, image → refmap.

Refmap files are (R, R, 3) linear EXR images laid out as DESIGN.md §3.1 (row 0 = top normal).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import app
from pipeline.cli.checks import (
    MAX_ENVMAP_HEIGHT,
    MAX_REFMAP_RES,
    MAX_SEED,
    MAX_SPP,
    check_out_file,
    check_range,
)
from rendering.errors import InputError

MATERIAL_HELP = "Material z as 6 comma-separated values in [0, 1]: metallic,R,G,B,roughness,specular."


def _check_suffix(path: Path, suffix: str, option: str) -> None:
    if path.suffix.lower() != suffix:
        raise InputError(path, f"{option} must name a {suffix} file")


@app.command("render-refmap")
def render_refmap(
    envmap: Annotated[Path, typer.Argument(help="Environment map (.exr or .hdr, equirectangular H×2H).")],
    material: Annotated[str, typer.Option(help=MATERIAL_HELP)],
    out: Annotated[Path, typer.Option(help="Output refmap, an (R, R, 3) .exr.")],
    view_azimuth: Annotated[float, typer.Option(help="Camera turned about +y, in degrees.")] = 0.0,
    refmap_res: Annotated[int, typer.Option(help="Refmap resolution R (the refmap is R×R).")] = 128,
    spp: Annotated[int, typer.Option(help="Samples per pixel.")] = 256,
    seed: Annotated[int, typer.Option(help="Seed of the sample pattern.")] = 0,
    preview: Annotated[Path | None, typer.Option(help="Also write a tonemapped .png.")] = None,
) -> None:
    """Render the reflectance map of one principled material under an environment map."""
    from rendering.envmap import read_envmap
    from rendering.hdrio import write_exr, write_preview
    from rendering.principled import parse_material
    from rendering.refmap import render_refmaps

    _check_suffix(out, ".exr", "--out")
    if preview is not None:
        _check_suffix(preview, ".png", "--preview")
    check_out_file(out)
    check_out_file(preview, "--preview")
    check_range("--refmap-res", refmap_res, 2, MAX_REFMAP_RES)
    check_range("--spp", spp, 1, MAX_SPP)
    check_range("--seed", seed, 0, MAX_SEED)
    z = parse_material(material)
    if not math.isfinite(view_azimuth):
        raise InputError("--view-azimuth", f"must be a finite angle in degrees, got {view_azimuth}")
    refmap = render_refmaps(
        read_envmap(envmap), z[None], [math.radians(view_azimuth)], refmap_res=refmap_res, spp=spp, seed=seed
    )[0]
    image = refmap.transpose(1, 2, 0)
    write_exr(out, image)
    if preview is not None:
        write_preview(preview, image)
    print(f"wrote {out} ({refmap_res}×{refmap_res}, {spp} spp)")


@app.command("mirror-to-envmap")
def mirror_to_envmap_command(
    refmap: Annotated[Path, typer.Argument(help="Mirror refmap, an (R, R, 3) .exr.")],
    out: Annotated[Path, typer.Option(help="Output environment map (.exr, H×2H).")],
    envmap_height: Annotated[
        int | None, typer.Option(help="Envmap height H (maps are H×2H; default: R).")
    ] = None,
    preview: Annotated[Path | None, typer.Option(help="Also write a tonemapped .png.")] = None,
    mask: Annotated[Path | None, typer.Option(help="Also write the validity mask as a .png.")] = None,
) -> None:
    """Turn a mirror reflectance map into an environment map and its validity mask."""
    import numpy as np

    from rendering.hdrio import read_hdr, write_exr, write_png, write_preview
    from rendering.refmap import mirror_to_envmap, validate_refmap

    _check_suffix(out, ".exr", "--out")
    for path, option in ((preview, "--preview"), (mask, "--mask")):
        if path is not None:
            _check_suffix(path, ".png", option)
        check_out_file(path, option)
    check_out_file(out)
    check_range("--envmap-height", envmap_height, 2, MAX_ENVMAP_HEIGHT)
    pixels = read_hdr(refmap)
    image = validate_refmap(pixels.transpose(2, 0, 1), refmap)
    envmap, valid = mirror_to_envmap(image, image.shape[-1] if envmap_height is None else envmap_height)
    write_exr(out, envmap)
    if preview is not None:
        write_preview(preview, envmap)
    if mask is not None:
        write_png(mask, valid.astype(np.uint8) * 255)
    print(f"wrote {out} ({envmap.shape[1]}×{envmap.shape[0]}, {valid.mean():.1%} valid)")
