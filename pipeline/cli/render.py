"""drmnet commands for rendering: refmaps, envmaps, objects, image → refmap."""

from __future__ import annotations

from pipeline.cli.app import app  # noqa: F401
