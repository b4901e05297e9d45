"""drmnet commands: train."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import app


@app.command("train")
def train(
    net: Annotated[str, typer.Argument(help="Which networks: drmnet (IllNet + RefNet) or obsnet.")],
    profile: Annotated[
        str | None, typer.Option(help="Profile of params.yaml (default: its `profile`).")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue checkpoints/<net>/ if present; one made from other settings or data is an "
            "error naming what differs.",
        ),
    ] = False,
    auto_resume: Annotated[
        bool,
        typer.Option(
            "--auto-resume",
            help="Continue checkpoints/<net>/ if it is an unfinished run of the same settings and data, "
            "else start fresh, saying why (what `dvc repro` runs).",
        ),
    ] = False,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Split directory of shards (default: data/shards/<net>/train)."),
    ] = None,
    register: Annotated[
        bool, typer.Option("--register/--no-register", help="Log to MLflow and register the model version.")
    ] = True,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 … (default: GPU if any).")] = None,
    params: Annotated[Path | None, typer.Option(help="params.yaml to read (default: ./params.yaml).")] = None,
) -> None:
    """Train DRMNet or ObsNet on its shards. Writes checkpoints/<net>/, metrics/train_<net>.json and
    plots/train_<net>.csv; registers a model version with alias `candidate`. Without --resume or
    --auto-resume it starts fresh, replacing checkpoints/<net>/. A resumed training continues its
    MLflow run. Under `torchrun` every rank runs this command (DDP)."""
    import os
    from contextlib import nullcontext

    from pipeline.config import load_params
    from pipeline.locks import output_lock
    from pipeline.training.stage import CHECKPOINTS, NETS, run_training
    from rendering.errors import InputError

    if resume and auto_resume:
        raise InputError("--resume/--auto-resume", "choose one of the two")
    mode = "auto" if auto_resume else resume
    writes = int(os.environ.get("RANK", "0")) == 0 and net in NETS  # rank 0 writes the checkpoint
    with output_lock(CHECKPOINTS / net, "drmnet train") if writes else nullcontext():
        metrics = run_training(net, load_params(params), profile, mode, data, register, device)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, one summary line
        return
    summary = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
    print(f"{net}: {summary}")
