"""drmnet commands: estimate."""

from __future__ import annotations

from pipeline.cli.app import app  # noqa: F401
