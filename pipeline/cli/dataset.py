"""drmnet commands: dataset."""

from __future__ import annotations

from pipeline.cli.app import app  # noqa: F401
