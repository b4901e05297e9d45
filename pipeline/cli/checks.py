"""Checks of command-line options, made before a command reads or writes anything.

Numbers: every resolution, height and sample count has a range. The lower bound is what the
option can mean (a refmap of 1 bin, 0 samples per pixel); the upper bound keeps a typo from
allocating what no machine has (``--refmap-res 100000`` asks for a 10¹⁰-bin refmap, 112 GiB) and is far
above what the method uses (refmaps of 128², envmaps of 256 × 512, images of 256²).

Output paths: an ``--out`` that must be a directory cannot be an existing file, and no output
can go below an existing file.

Each failed check is an :class:`~rendering.errors.InputError` naming the option (or the path),
which the CLI prints as one line with exit status 2.
"""

from __future__ import annotations

from pathlib import Path

from rendering.errors import InputError

MAX_REFMAP_RES = 2048  # refmap side R (the paper: 128); 2048² bins are 48 MB per refmap
MAX_IMAGE_RES = 4096  # rendered image side; 4096² pixels are one Mitsuba pass of 2²⁴ rays per sample
MAX_ENVMAP_HEIGHT = 4096  # envmap height H of an H × 2H map (an "8k" map; 400 MB as float32)
MAX_SPP = 1 << 16  # samples per pixel (rendering is chunked: only time grows)
MAX_SAMPLES = 1024  # stochastic estimates of one image
MAX_SEED = 2**32 - 1  # seeds are unsigned 32-bit (the samplers' and numpy's)


def check_range(option: str, value: int | None, low: int, high: int | None = None) -> None:
    """``low ≤ value ≤ high`` (None: not given, nothing to check). InputError naming ``option``."""
    if value is None:
        return
    if value < low:
        raise InputError(option, f"must be ≥ {low}, got {value}")
    if high is not None and value > high:
        raise InputError(option, f"must be ≤ {high}, got {value}")


def check_out_dir(path: Path | None, option: str = "--out") -> None:
    """``path`` can be made a directory: it is not an existing file, nor below one."""
    if path is None:
        return
    if path.exists() and not path.is_dir():
        raise InputError(path, f"{option} must be a directory, but this is an existing file")
    _check_parents(path, option)


def check_out_file(path: Path | None, option: str = "--out") -> None:
    """``path`` can be written as a file: it is not an existing directory, nor below a file."""
    if path is None:
        return
    if path.is_dir():
        raise InputError(path, f"{option} must be a file, but this is an existing directory")
    _check_parents(path, option)


def _check_parents(path: Path, option: str) -> None:
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(path, f"{option} cannot be written: {parent} is a file, not a directory")
            return
