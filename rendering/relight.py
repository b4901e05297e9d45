"""Relighting and object insertion: render an object with a chosen material under an (estimated)
environment map.

This is what an estimate is for: the recovered envmap lights a new object or the same object with
a new material, and comparing that render under the estimated and the ground-truth envmap shows
how much of the light was recovered. Rendering is :func:`rendering.objects.render_object`
(Mitsuba, path tracing with interreflections); this module adds the choice of the object (a mesh
file or a built-in shape) and the files (EXR + a PNG preview whose alpha is the object's mask,
ready to composite).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rendering.errors import InputError
from rendering.objects import ObjectImage


def load_shape(mesh: str | os.PathLike | None = None, shape: str | None = None, seed: int = 0):
    """The object to render: a mesh file (OBJ/PLY) or a built-in shape name; exactly one of them."""
    from rendering.shapes import load_mesh, make_shape

    if (mesh is None) == (shape is None):
        raise InputError("--mesh/--shape", "give exactly one of a mesh file or a built-in shape name")
    return load_mesh(mesh) if mesh is not None else make_shape(shape, seed)


def preview_rgba(obj: ObjectImage, exposure: float | None = None) -> np.ndarray:
    """uint8 (H, W, 4): the tonemapped object (exposure from its own pixels unless given), alpha =
    mask, so the PNG composites onto any background."""
    from rendering.hdrio import preview_exposure, tonemap

    if exposure is None:
        inside = obj.image[obj.mask] if obj.mask.any() else obj.image.reshape(-1, 3)
        exposure = preview_exposure(inside[None])
    rgb = tonemap(obj.image, exposure)
    alpha = np.where(obj.mask, 255, 0).astype(np.uint8)
    return np.concatenate([rgb, alpha[..., None]], axis=2)


def check_exr_path(out: str | os.PathLike) -> Path:
    """The output must be an .exr: the relit image is linear HDR (InputError otherwise)."""
    out = Path(out)
    if out.suffix.lower() != ".exr":
        raise InputError(
            out, "the relit image is linear HDR: give an .exr output path (and --preview for a PNG)"
        )
    return out


def write_relit(
    obj: ObjectImage, out: str | os.PathLike, preview: str | os.PathLike | None = None
) -> list[Path]:
    """Write the render to ``out`` (.exr, linear) and optionally an RGBA PNG preview."""
    from rendering.hdrio import write_exr, write_png

    written = [write_exr(check_exr_path(out), obj.image)]
    if preview is not None:
        written.append(write_png(preview, preview_rgba(obj)))
    return written
