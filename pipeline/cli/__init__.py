"""Entry point of the ``drmnet`` command line; see ``pipeline/cli/app.py``."""

from __future__ import annotations

import sys

from pipeline.cli import dataset, estimate, objects, render, train, workspace  # noqa: F401  (register commands)
from pipeline.cli.app import app
from rendering.errors import InputError


def main() -> None:
    """Run the CLI; bad input ends with its one-line message and exit code 2, not a traceback."""
    try:
        app()
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
