"""drmnet export-model: a checkpoint → a self-contained model directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import app
from pipeline.cli.checks import check_out_dir


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
    average: Annotated[
        list[Path] | None,
        typer.Option(
            help="Another checkpoint or model directory of the same network to average with, tensor "
            "by tensor (repeatable; runs of one lineage, e.g. the ends of successive learning-rate cycles)."
        ),
    ] = None,
) -> None:
    """Export the inference part of a checkpoint (config.json + EMA weights, no optimiser state)
    into a self-contained model directory that `drmnet estimate --model` loads, with its
    provenance (samples, training settings, data version, git commit) in provenance.json; with
    --average, the mean of several runs' weights and the provenance of each."""
    from pipeline.pretrained import export_model as export

    check_out_dir(out)
    directory = export(checkpoint, out, dtype, average or ())
    for path in sorted(directory.iterdir()):
        if path.is_file():
            print(f"{path}  ({path.stat().st_size / 1e6:.2f} MB)")
