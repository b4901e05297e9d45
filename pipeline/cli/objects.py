"""drmnet commands for objects, observations and environment-map sources."""

from __future__ import annotations

from pipeline.cli.app import app  # noqa: F401
