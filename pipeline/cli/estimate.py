"""drmnet estimate: one object image → illumination and reflectance samples."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import app
from pipeline.cli.checks import MAX_ENVMAP_HEIGHT, MAX_SAMPLES, MAX_SEED, check_out_dir, check_range
from pipeline.cli.params import optional_section
from rendering.errors import InputError


@app.command("estimate")
def estimate(
    image: Annotated[Path, typer.Argument(help="Linear HDR image of the object (.exr or .hdr).")],
    normals: Annotated[Path, typer.Argument(help="Camera-frame unit normals, .npy (H, W, 3) float.")],
    out: Annotated[Path, typer.Option(help="Output directory.")],
    mask: Annotated[
        Path | None, typer.Argument(help="Object mask (.png); default: non-zero normals.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="DRMNet: model URI or model/checkpoint directory (default: the registry's "
            "models:/drmnet@champion, else the shipped pretrained/cpu/drmnet)."
        ),
    ] = None,
    obsnet: Annotated[
        str | None,
        typer.Option(
            help="ObsNet: model URI or model/checkpoint directory, 'none' to skip (default: the "
            "registry's models:/obsnet@champion, else the shipped pretrained/cpu/obsnet)."
        ),
    ] = None,
    samples: Annotated[
        int | None, typer.Option(help="Stochastic samples N (default: estimate.samples).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the samples' noise (default: estimate.seed).")
    ] = None,
    envmap_height: Annotated[
        int | None,
        typer.Option(help="Height H of the output envmaps, H×2H (default: estimate.envmap_height)."),
    ] = None,
    erode: Annotated[
        int | None,
        typer.Option(help="Erode the object mask's edge by this many pixels (default: estimate.erode)."),
    ] = None,
    material: Annotated[
        str | None,
        typer.Option(
            help="The object's material when it is known, 'metallic,r,g,b,roughness,specular' in [0, 1] "
            "(e.g. a calibrated probe): RefNet is not run (default: estimated).",
        ),
    ] = None,
    repair: Annotated[
        bool,
        typer.Option("--repair", help="Fill NaN/Inf pixels inside the mask instead of refusing the image."),
    ] = False,
    params: Annotated[Path | None, typer.Option(help="params.yaml with the estimate section.")] = None,
) -> None:
    """Estimate illumination and reflectance from one object image: N samples of the mirror
    refmap, the environment map (+ validity mask) and the material, their mean and spread, and a
    one-page overview.png."""
    from pipeline.estimate import EstimateSettings, estimate_files, write_estimation
    from pipeline.registry import load_estimator
    from rendering.principled import parse_material

    overrides = {"samples": samples, "seed": seed, "envmap_height": envmap_height, "erode": erode}
    settings = dataclasses.replace(  # the file's section (checked there), then the options (checked here)
        EstimateSettings.from_params(optional_section("estimate", params)),
        **{k: v for k, v in overrides.items() if v is not None},
    )
    if settings.samples < 1:
        raise InputError("--samples", f"must be ≥ 1, got {settings.samples}")
    if settings.erode < 0:
        raise InputError("--erode", f"must be ≥ 0, got {settings.erode}")
    check_range("--samples", settings.samples, 1, MAX_SAMPLES)
    check_range("--envmap-height", settings.envmap_height, 2, MAX_ENVMAP_HEIGHT)
    check_range("--seed", settings.seed, 0, MAX_SEED)
    known = None if material is None else parse_material(material, "--material")
    check_out_dir(out)
    model, obsnet = _model_or_default("drmnet", model), _model_or_default("obsnet", obsnet)
    estimator = load_estimator(model, None if obsnet.lower() == "none" else obsnet)
    estimation, pixels, object_mask = estimate_files(
        estimator, image, normals, mask, settings, progress=True, repair=repair, material=known
    )
    inputs = {
        "image": str(image),
        "normals": str(normals),
        "mask": str(mask) if mask else None,
        "repair": repair,
        "material": None if known is None else [float(v) for v in known],
    }
    inputs.update(model=model, obsnet=obsnet)
    write_estimation(estimation, out, pixels, object_mask, settings, inputs)
    steps = ", ".join(str(int(s)) for s in estimation.steps)
    print(f"{settings.samples} samples (DRM steps {steps}) → {out}/ (overview: {out / 'overview.png'})")


def _model_or_default(net: str, given: str | None) -> str:
    """The model given, or the default of pipeline/pretrained.py, named on stderr."""
    if given is not None:
        return given
    from pipeline.pretrained import default_model

    reference, line = default_model(net)
    typer.echo(line, err=True)
    return reference
