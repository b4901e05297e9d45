"""drmnet relight: render an object with a new material under an (estimated) envmap."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import app
from pipeline.cli.checks import MAX_IMAGE_RES, MAX_SEED, MAX_SPP, check_out_file, check_range


@app.command("relight")
def relight(
    envmap: Annotated[Path, typer.Option(help="Environment map (.exr/.hdr), e.g. an estimate's envmap.exr.")],
    material: Annotated[str, typer.Option(help="Material z: metallic,R,G,B,roughness,specular in [0, 1].")],
    out: Annotated[Path, typer.Option(help="Rendered image (.exr, linear).")],
    mesh: Annotated[Path | None, typer.Option(help="Object mesh (.obj/.ply).")] = None,
    shape: Annotated[
        str | None, typer.Option(help="Built-in shape: sphere, ellipsoid, superquadric, blob.")
    ] = None,
    preview: Annotated[
        Path | None, typer.Option(help="Also write a tonemapped RGBA PNG (alpha = mask).")
    ] = None,
    object_res: Annotated[int, typer.Option(help="Object image side, pixels (square).")] = 256,
    spp: Annotated[int, typer.Option(help="Samples per pixel.")] = 64,
    seed: Annotated[int, typer.Option(help="Render seed (and the built-in shape's seed).")] = 0,
    camera: Annotated[str, typer.Option(help="orthographic or perspective.")] = "orthographic",
) -> None:
    """Render an object with a new material under an (estimated) environment map (Mitsuba)."""
    from rendering.envmap import read_envmap
    from rendering.objects import render_object as render
    from rendering.principled import parse_material
    from rendering.relight import check_exr_path, load_shape, write_relit

    check_exr_path(out)
    check_out_file(out)
    check_out_file(preview, "--preview")
    check_range("--object-res", object_res, 8, MAX_IMAGE_RES)
    check_range("--spp", spp, 1, MAX_SPP)
    check_range("--seed", seed, 0, MAX_SEED)
    z = parse_material(material)
    light = read_envmap(envmap)
    obj = render(
        light, load_shape(mesh, shape, seed), z, object_res=object_res, spp=spp, seed=seed, camera=camera
    )
    for path in write_relit(obj, out, preview):
        print(path)
