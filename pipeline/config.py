"""params.yaml → plain data. Sections are grouped by stage (see STYLE.md); ``profile`` selects a
block of ``profiles`` whose keys are visible to every stage through :func:`profile_params`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from rendering.errors import InputError

DEFAULT_PARAMS = Path("params.yaml")


def load_params(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read params.yaml (``DRMNET_PARAMS`` overrides the default path) and check all of it
    (:func:`pipeline.settings.validate_params`): a bad key, type or value is an InputError naming
    it before any command starts work."""
    from pipeline.settings import validate_params

    path = Path(path or os.environ.get("DRMNET_PARAMS", DEFAULT_PARAMS))
    if not path.exists():
        raise InputError(
            path, "params file does not exist (run from the repository root or set DRMNET_PARAMS)"
        )
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except UnicodeDecodeError as error:
        raise InputError(path, f"is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except yaml.YAMLError as error:
        raise InputError(path, f"not valid YAML: {yaml_problem(error)}") from None
    if not isinstance(params, dict):
        raise InputError(path, "must hold a mapping of sections")
    validate_params(params, path)
    return params


def yaml_problem(error: yaml.YAMLError) -> str:
    """A YAML error as one line: where (line, column) and what, e.g. ``line 2, column 1: expected
    the node content, but found '<stream end>' (while parsing a flow node)``."""
    if isinstance(error, yaml.reader.ReaderError):  # a character YAML does not allow
        return f"character {error.position + 1}: {error.reason} (code point {error.character!r})"
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if problem is None:
        return " ".join(str(error).split())
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    context = getattr(error, "context", None)
    return where + " ".join((f"{problem} ({context})" if context else problem).split())


def profile_params(params: dict[str, Any], profile: str | None = None) -> dict[str, Any]:
    """The block of ``profiles`` selected by ``profile`` (argument, else ``params['profile']``)."""
    name = profile or params.get("profile", "tiny")
    profiles = params.get("profiles", {})
    if name not in profiles:
        raise InputError("params.yaml", f"unknown profile {name!r}; defined: {sorted(profiles)}")
    return {"name": name, **profiles[name]}


DATA_SECTIONS = ("envmaps", "envmaps_split", "dataset")  # sections a profile may override


def with_profile(params: dict[str, Any], profile: str | None = None) -> dict[str, Any]:
    """params with the selected profile's blocks of the data sections merged in key by key
    (nested mappings recursively): ``profiles.cpu.dataset.samples`` overrides ``dataset.samples``."""
    if not params.get("profiles"):
        return params  # a bare set of sections (tests, scripts): nothing to merge
    chosen = profile_params(params, profile)
    merged = dict(params)
    for name in DATA_SECTIONS:
        if isinstance(chosen.get(name), dict):
            merged[name] = _merge(dict(params.get(name) or {}), chosen[name])
    return merged


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = _merge(dict(base[key]), value)
        else:
            base[key] = value
    return base
