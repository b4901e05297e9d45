"""The params.yaml section of a command that also works without a params file (estimate, report)."""

from __future__ import annotations

from pathlib import Path


def optional_section(name: str, params_path: Path | None) -> dict:
    """A params.yaml section, or {} when no params file is around (the command works without one)."""
    from pipeline.config import load_params

    path = params_path or Path("params.yaml")
    if params_path is None and not path.exists():
        return {}
    return dict(load_params(path).get(name) or {})
