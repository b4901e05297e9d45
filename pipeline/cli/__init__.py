"""Entry point of the ``drmnet`` command line; see ``pipeline/cli/app.py``."""

from __future__ import annotations

import sys
import warnings

from pipeline import watchdog

# `drmnet --help` lists the commands in the order their modules register them.
# isort: off
from pipeline.cli import dataset, estimate, export_model, evaluate, report, relight  # noqa: F401
from pipeline.cli import objects, render, train, workspace  # noqa: F401

# isort: on
from pipeline.cli.app import app
from rendering.errors import InputError


def _one_line(message, category, filename, lineno, line=None) -> str:
    """Warnings about the user's input (e.g. a repaired HDR file) as one line each, no source line."""
    return f"warning: {message}\n"


def main() -> None:
    """Run the CLI; bad input ends with its one-line message and exit code 2, not a traceback;
    warnings are one line each; the processes it starts end with it (pipeline/watchdog.py)."""
    warnings.formatwarning = _one_line  # how printed warnings look; recorded ones (tests) are untouched
    watchdog.start()  # children (Prefect's server, loader workers) die with this process, even on SIGKILL
    try:
        app()
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
