"""The ``drmnet`` Typer application. Command modules register on ``app``; each command imports
its heavy dependencies (torch, Mitsuba, Prefect, MLflow) inside its body so that
``drmnet --help`` stays fast."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="drmnet",
    help="Single-image stochastic inverse rendering of illumination and reflectance (DRMNet).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
