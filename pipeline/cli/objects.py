"""drmnet commands for objects, observations and environment-map sources:
``render-object``, ``image-to-refmap`` and ``make-envmaps``.

Mitsuba and the rendering modules are imported inside the command bodies (``drmnet --help`` stays
fast). Output files: an object directory holds ``image.exr``, ``normals.npy`` and ``mask.png`` (what
``drmnet estimate`` reads) plus ``preview.png``; a refmap is an (R, R, 3) linear .exr laid out as
DESIGN.md §3.1.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import app
from pipeline.cli.checks import (
    MAX_ENVMAP_HEIGHT,
    MAX_IMAGE_RES,
    MAX_REFMAP_RES,
    MAX_SEED,
    MAX_SPP,
    check_out_dir,
    check_range,
)
from rendering.errors import InputError

MATERIAL_HELP = "Material z as 6 comma-separated values in [0, 1]: metallic,R,G,B,roughness,specular."


@app.command("render-object")
def render_object_command(
    envmap: Annotated[Path, typer.Option(help="Environment map (.exr or .hdr, equirectangular H×2H).")],
    material: Annotated[str, typer.Option(help=MATERIAL_HELP)],
    out: Annotated[
        Path, typer.Option(help="Output directory: image.exr, normals.npy, mask.png, preview.png.")
    ],
    shape: Annotated[
        str | None, typer.Option(help="Built-in shape: sphere, ellipsoid, superquadric or blob.")
    ] = None,
    shape_seed: Annotated[int, typer.Option(help="Seed of the built-in shape.")] = 0,
    mesh: Annotated[Path | None, typer.Option(help="A mesh file (.obj or .ply) instead of --shape.")] = None,
    object_res: Annotated[int, typer.Option(help="Object image side, pixels (square).")] = 256,
    spp: Annotated[int, typer.Option(help="Samples per pixel.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed of the samples.")] = 0,
    camera: Annotated[str, typer.Option(help="orthographic or perspective.")] = "orthographic",
    view_azimuth: Annotated[float, typer.Option(help="Camera turned about +y, in degrees.")] = 0.0,
) -> None:
    """Render an object of known geometry under an environment map (path traced), with its
    camera-frame normals and mask."""
    from rendering.envmap import read_envmap
    from rendering.hdrio import write_preview
    from rendering.objects import render_object, save_object
    from rendering.principled import parse_material
    from rendering.shapes import load_mesh, make_shape

    if (shape is None) == (mesh is None):
        raise InputError("render-object", "give exactly one of --shape NAME or --mesh FILE")
    check_out_dir(out)
    check_range("--object-res", object_res, 8, MAX_IMAGE_RES)
    check_range("--spp", spp, 1, MAX_SPP)
    check_range("--seed", seed, 0, MAX_SEED)
    check_range("--shape-seed", shape_seed, 0, MAX_SEED)
    if not math.isfinite(view_azimuth):
        raise InputError("--view-azimuth", f"must be a finite angle in degrees, got {view_azimuth}")
    z = parse_material(material)
    geometry = load_mesh(mesh) if mesh is not None else make_shape(shape, shape_seed)
    obj = render_object(
        read_envmap(envmap), geometry, z, object_res=object_res, spp=spp, seed=seed, camera=camera,
        view_azimuth=math.radians(view_azimuth),
    )  # fmt: skip
    save_object(out, obj)
    write_preview(out / "preview.png", obj.image)
    print(f"wrote {out}/image.exr, normals.npy, mask.png ({object_res}×{object_res}, {spp} spp, {camera})")


@app.command("image-to-refmap")
def image_to_refmap_command(
    image: Annotated[
        Path, typer.Argument(help="Object image: linear HDR .exr/.hdr (a .png is decoded with a warning).")
    ],
    normals: Annotated[Path, typer.Argument(help="Camera-frame unit normals, .npy float (H, W, 3).")],
    mask: Annotated[
        Path | None, typer.Argument(help="Object mask .png (default: where normals are non-zero).")
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Output directory: refmap.exr, observed.png, preview.png.")
    ] = Path("observation"),
    refmap_res: Annotated[int, typer.Option(help="Refmap resolution R (the refmap is R×R).")] = 128,
    erode: Annotated[int, typer.Option(help="Erode the mask's edge by this many pixels.")] = 1,
    repair: Annotated[
        bool,
        typer.Option("--repair", help="Fill NaN/Inf pixels inside the mask instead of refusing the image."),
    ] = False,
) -> None:
    """Bin an object image by its normals into an observed reflectance map (per-bin median)."""
    import numpy as np

    from pipeline.estimate import check_light
    from rendering.hdrio import write_exr, write_png, write_preview
    from rendering.observation import files_to_refmap

    check_out_dir(out)
    check_range("--refmap-res", refmap_res, 2, MAX_REFMAP_RES)
    check_range("--erode", erode, 0)
    refmap, observed = files_to_refmap(
        image, normals, mask, refmap_res=refmap_res, erode=erode, repair=repair
    )
    check_light(refmap, observed, image)  # a black object tells nothing: refuse, as `estimate` does
    out.mkdir(parents=True, exist_ok=True)
    write_exr(out / "refmap.exr", refmap.transpose(1, 2, 0))
    write_png(out / "observed.png", np.where(observed, 255, 0).astype(np.uint8))
    write_preview(out / "preview.png", refmap.transpose(1, 2, 0))
    print(f"wrote {out}/refmap.exr ({refmap_res}×{refmap_res}, {observed.mean():.0%} of the bins observed)")


@app.command("make-envmaps")
def make_envmaps_command(
    out: Annotated[
        Path, typer.Option(help="Output directory: <id>.exr, envmaps.parquet/.json, contact_sheet.png.")
    ],
    n: Annotated[
        int | None, typer.Option(help="Procedural envmaps to make (default: params.yaml envmaps.n).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Run seed (default: envmaps.seed).")] = None,
    kinds: Annotated[
        str | None,
        typer.Option(help="Kinds and proportions, 'sky,room,studio' or 'sky:0.5,room:0.2,studio:0.3'."),
    ] = None,
    envmap_height: Annotated[
        int | None, typer.Option(help="Envmap height H (maps are H×2H; default: envmaps.envmap_height).")
    ] = None,
    from_dir: Annotated[
        Path | None,
        typer.Option(help="Also bring a directory of your .exr/.hdr envmaps (default: envmaps.user_dir)."),
    ] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Cache of resampled user files.")] = None,
    room_spp: Annotated[int | None, typer.Option(help="Samples per pixel of room envmaps.")] = None,
) -> None:
    """Make procedural HDR environment maps (sky, studio, room) and/or bring your own; reruns skip
    finished files."""
    from pipeline.config import DEFAULT_PARAMS, load_params
    from rendering.envmap_sources import EnvmapParams, make_envmaps, parse_kinds

    # No params.yaml here: the built-in defaults; a bad one is an error, not silently ignored.
    defaults = EnvmapParams.from_params(load_params()) if DEFAULT_PARAMS.exists() else EnvmapParams()
    n = defaults.n if n is None else n
    envmap_height = defaults.envmap_height if envmap_height is None else envmap_height
    check_out_dir(out)
    check_out_dir(cache_dir, "--cache-dir")
    check_range("--n", n, 0)
    check_range("--envmap-height", envmap_height, 4, MAX_ENVMAP_HEIGHT)
    check_range("--seed", seed, 0, MAX_SEED)
    check_range("--room-spp", room_spp, 1, MAX_SPP)
    proportions = parse_kinds(kinds) if kinds is not None else defaults.kinds

    def progress(done: int, total: int, spec, skipped: bool) -> None:
        print(f"[{done}/{total}] {spec.id}{' (kept)' if skipped else ''}", flush=True)

    rows = make_envmaps(
        out,
        n,
        defaults.seed if seed is None else seed,
        proportions,
        envmap_height,
        from_dir=from_dir if from_dir is not None else defaults.user_dir,
        cache_dir=cache_dir if cache_dir is not None else defaults.cache_dir,
        room_spp=defaults.room_spp if room_spp is None else room_spp,
        progress=progress,
    )
    print(f"wrote {len(rows)} envmaps ({envmap_height}×{2 * envmap_height}) to {out}")
