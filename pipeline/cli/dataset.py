"""drmnet commands for datasets: envmap splits, rendering shards (Prefect flow), verifying shards."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import app

ENVMAPS_DIR = Path("data/envmaps")
SHARDS_DIR = Path("data/shards")


@app.command("make-envmap-splits")
def make_envmap_splits_command(
    out: Annotated[
        Path, typer.Option(help="writes <out>/<split>/<id>.exr and envmaps.parquet")
    ] = ENVMAPS_DIR,
    params: Annotated[
        Path | None, typer.Option(help="params.yaml (default: DRMNET_PARAMS or ./params.yaml)")
    ] = None,
) -> None:
    """Make the train/val/test envmaps (params `envmaps` + `envmaps_split`); no envmap is in two splits."""
    from pipeline.cli.checks import check_out_dir
    from pipeline.config import load_params
    from pipeline.splits import make_envmap_splits
    from pipeline.status import StatusLine

    check_out_dir(out)
    status = StatusLine("make-envmap-splits", 0, "envmaps")  # the total comes with each call

    def progress(done: int, total: int, envmap_id: str) -> None:
        status.total = total
        status.update(done, envmap_id)

    written = make_envmap_splits(load_params(params), out, progress)
    for split, directory in written.items():
        count = sum(1 for _ in directory.glob("*.exr"))
        print(f"{split}: {count} envmaps in {directory}")


@app.command("render-dataset")
def render_dataset_command(
    dataset: Annotated[str, typer.Option(help="drmnet | obsnet | measured (the measured test set)")],
    split: Annotated[str, typer.Option(help="train | val | test")],
    out: Annotated[Path, typer.Option(help="shards go to <out>/<dataset>/<split>/")] = SHARDS_DIR,
    envmaps: Annotated[Path, typer.Option(help="envmap splits (drmnet make-envmap-splits)")] = ENVMAPS_DIR,
    runner: Annotated[
        str | None, typer.Option(help="threads | processes | dask (default: params dataset.runner)")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="parallel shard tasks (default: params dataset.workers)")
    ] = None,
    dask_address: Annotated[
        str | None, typer.Option(help="a Dask scheduler, e.g. tcp://host:8786 (implies dask)")
    ] = None,
    params: Annotated[
        Path | None, typer.Option(help="params.yaml (default: DRMNET_PARAMS or ./params.yaml)")
    ] = None,
    profile: Annotated[
        str | None, typer.Option(help="params profile (default: params.yaml's `profile`)")
    ] = None,
) -> None:
    """Render a dataset split into WebDataset shards with the Prefect flow `render-dataset`.

    Resumable: finished shards that still verify are skipped; the manifests are written last.
    """
    from pipeline.cli.checks import check_out_dir, check_range
    from pipeline.config import load_params
    from pipeline.measured_set import MEASURED
    from pipeline.samples import DATASETS, EVAL_SPLIT, SPLITS
    from rendering.errors import InputError

    load_params(params)  # a bad params file is one line, before Prefect is even imported
    from pipeline.flows.render_dataset import run_render_dataset

    check_out_dir(out)
    check_range("--workers", workers, 1)
    if dataset not in (*DATASETS, MEASURED):
        raise InputError("--dataset", f"unknown dataset {dataset!r}; choose one of {(*DATASETS, MEASURED)}")
    if split not in SPLITS:
        raise InputError("--split", f"unknown split {split!r}; choose one of {SPLITS}")
    if dataset == MEASURED and split != EVAL_SPLIT:
        raise InputError("--split", f"the {MEASURED} dataset has a {EVAL_SPLIT} split only")
    summary = run_render_dataset(
        dataset,
        split,
        params_path=params,
        out_dir=out,
        envmap_dir=envmaps,
        profile=profile,
        runner=runner,
        workers=workers,
        dask_address=dask_address,
    )
    print(
        f"{summary['split_dir']}: {summary['shards']} shards, {summary['samples']} samples "
        f"({summary['skipped']} shards already done, {summary['rendered_samples']} samples rendered "
        f"in {summary['seconds']:.1f} s)"
    )


@app.command("verify-shards")
def verify_shards_command(
    directory: Annotated[
        Path, typer.Argument(help="a split directory, or a folder of them (e.g. data/shards)")
    ],
    decode: Annotated[bool, typer.Option(help="also decode and check every sample (slower)")] = True,
) -> None:
    """Check every shard against its manifests (sha256, size, sample count) and its contents
    (decodable, shapes and dtypes, finite, radiance ≥ 0, materials in [0, 1], the samples
    manifest's keys); a bad shard is named with the sample and field at fault.

    Exits with status 1 and lists the bad shards when any is wrong.
    """
    from pipeline.manifest import find_split_dirs, verify_split
    from rendering.errors import InputError

    if not directory.exists():
        raise InputError(directory, "does not exist")
    split_dirs = find_split_dirs(directory)
    if not split_dirs:
        raise InputError(directory, "holds no shards and no manifest-shards.parquet")
    bad = 0
    for split_dir in split_dirs:
        problems = verify_split(split_dir, decode=decode)
        bad += len(problems)
        status = "ok" if not problems else f"{len(problems)} bad"
        print(f"{split_dir}: {status}")
        for problem in problems:
            print(f"  BAD {problem}")
    if bad:
        print(f"{bad} bad shard(s); `drmnet render-dataset` for their split redoes them", file=sys.stderr)
        raise typer.Exit(1)
