"""drmnet commands: estimate, export-model, evaluate, report, relight."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import app
from pipeline.cli.checks import (
    MAX_ENVMAP_HEIGHT,
    MAX_IMAGE_RES,
    MAX_SAMPLES,
    MAX_SEED,
    MAX_SPP,
    check_out_dir,
    check_out_file,
    check_range,
)
from rendering.errors import InputError


def _section(name: str, params_path: Path | None) -> dict:
    """A params.yaml section, or {} when no params file is around (estimate works without one)."""
    from pipeline.config import load_params

    path = params_path or Path("params.yaml")
    if params_path is None and not path.exists():
        return {}
    return dict(load_params(path).get(name) or {})


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
    res: Annotated[
        int | None,
        typer.Option(help="Height H of the output envmaps, H×2H (default: estimate.envmap_height)."),
    ] = None,
    erode: Annotated[
        int | None,
        typer.Option(help="Erode the object mask's edge by this many pixels (default: estimate.erode)."),
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

    overrides = {"samples": samples, "seed": seed, "envmap_height": res, "erode": erode}
    settings = dataclasses.replace(  # the file's section (checked there), then the options (checked here)
        EstimateSettings.from_params(_section("estimate", params)),
        **{k: v for k, v in overrides.items() if v is not None},
    )
    if settings.samples < 1:
        raise InputError("--samples", f"must be ≥ 1, got {settings.samples}")
    if settings.erode < 0:
        raise InputError("--erode", f"must be ≥ 0, got {settings.erode}")
    check_range("--samples", settings.samples, 1, MAX_SAMPLES)
    check_range("--res", settings.envmap_height, 2, MAX_ENVMAP_HEIGHT)
    check_range("--seed", settings.seed, 0, MAX_SEED)
    check_out_dir(out)
    model, obsnet = _model_or_default("drmnet", model), _model_or_default("obsnet", obsnet)
    estimator = load_estimator(model, None if obsnet.lower() == "none" else obsnet)
    estimation, pixels, object_mask = estimate_files(
        estimator, image, normals, mask, settings, progress=True, repair=repair
    )
    inputs = {
        "image": str(image),
        "normals": str(normals),
        "mask": str(mask) if mask else None,
        "repair": repair,
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


@app.command("export-model")
def export_model(
    checkpoint: Annotated[
        Path,
        typer.Argument(help="Checkpoint directory, e.g. checkpoints/drmnet (what `drmnet train` writes)."),
    ],
    out: Annotated[Path, typer.Option(help="Model directory to write, e.g. pretrained/cpu/drmnet.")],
    dtype: Annotated[
        str, typer.Option(help="Weights precision: float32 (as trained) or float16 (half the bytes).")
    ] = "float32",
) -> None:
    """Export the inference part of a checkpoint (config.json + EMA weights, no optimiser state)
    into a self-contained model directory that `drmnet estimate --model` loads, with its
    provenance (samples, training settings, data version, git commit) in provenance.json."""
    from pipeline.pretrained import export_model as export

    check_out_dir(out)
    directory = export(checkpoint, out, dtype)
    for path in sorted(directory.iterdir()):
        if path.is_file():
            print(f"{path}  ({path.stat().st_size / 1e6:.2f} MB)")


@app.command("evaluate")
def evaluate(
    model: Annotated[
        str | None, typer.Option(help="DRMNet URI or directory (default: evaluate.model).")
    ] = None,
    obsnet: Annotated[
        str | None, typer.Option(help="ObsNet URI or directory (default: evaluate.obsnet).")
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Output directory: metrics.json, per_sample.csv, gallery/.")
    ] = Path("eval"),
    params: Annotated[Path, typer.Option(help="params.yaml.")] = Path("params.yaml"),
    flow: Annotated[
        bool, typer.Option(help="Run as the Prefect flow `evaluate` (--no-flow: plain Python).")
    ] = True,
) -> None:
    """Evaluate a model version on the test sets (three-sphere protocol, envmap, material,
    re-render, stochasticity; baselines); log to MLflow and update the `champion` alias."""
    import json

    from pipeline.config import load_params

    check_out_dir(out)
    checked = load_params(params)  # a bad params file is one line, before Prefect is even imported
    from pipeline.flows.evaluate import evaluate as evaluate_flow
    from pipeline.flows.evaluate import run_evaluation

    if flow:
        summary = evaluate_flow(str(params), model, obsnet, str(out))
    else:
        summary = run_evaluation(checked, model, obsnet, out)
    for test_set, methods in summary.items():
        values = ", ".join(f"{m} {v['mirror_si_rmse']:.4g}" for m, v in methods.items())
        print(f"{test_set}: mirror si-RMSE {values}")
    champion = out / "champion.json"
    if champion.exists():
        print(json.loads(champion.read_text())["decision"])


@app.command("report")
def report(
    eval_dir: Annotated[
        Path | None, typer.Option("--eval", help="What `evaluate` wrote (report.eval_dir).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output directory (default: report.out_dir).")] = None,
    plots: Annotated[
        Path | None, typer.Option(help="Training curves train_<net>.csv (default: report.plots_dir).")
    ] = None,
    params: Annotated[Path | None, typer.Option(help="params.yaml with the report section.")] = None,
) -> None:
    """Write reports/report.html (self-contained) and reports/report.md from an evaluation and
    the training curves."""
    from pipeline.report import build_report

    section = _section("report", params)
    eval_dir = eval_dir or Path(section.get("eval_dir", "eval"))
    out = out or Path(section.get("out_dir", "reports"))
    plots = plots or Path(section.get("plots_dir", "plots"))
    check_out_dir(out)
    html_path, md_path = build_report(eval_dir, out, plots)
    print(f"{html_path}\n{md_path}")


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
    res: Annotated[int, typer.Option(help="Image side, pixels.")] = 256,
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
    check_range("--res", res, 8, MAX_IMAGE_RES)
    check_range("--spp", spp, 1, MAX_SPP)
    check_range("--seed", seed, 0, MAX_SEED)
    z = parse_material(material)
    light = read_envmap(envmap)
    obj = render(light, load_shape(mesh, shape, seed), z, res=res, spp=spp, seed=seed, camera=camera)
    for path in write_relit(obj, out, preview):
        print(path)
