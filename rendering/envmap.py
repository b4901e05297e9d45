"""Environment maps: validation, the direction ↔ pixel convention, energy-preserving resampling
and azimuthal rotation (DESIGN.md §3.2).

An envmap is float32 (H, 2H, 3), linear HDR RGB, finite and ≥ 0, read exactly as Mitsuba's
``envmap`` emitter (identity ``to_world``) reads it: u = 0.5 is +z (toward the viewer),
u = 0.25 is +x, the left/right edge is −z (behind the object), v = 0 is +y (zenith).

Texel positions follow the emitter too (measured on Mitsuba 3.9): columns are cell-centred,
u = (col + ½)/W, but rows are vertex-centred, v = row/(H − 1), so row 0 *is* the zenith and the
last row the nadir. Row r therefore stands for the latitude band θ ∈ [π(r − ½)/(H − 1),
π(r + ½)/(H − 1)] clipped to [0, π] (half bands at the poles): :func:`row_edges`. Every
per-texel direction, solid angle and resampling weight in the project comes from here.
"""

from __future__ import annotations

import os

import numpy as np

from rendering.errors import InputError
from rendering.hdrio import read_hdr


def validate_envmap(envmap: np.ndarray, source: object = "envmap") -> np.ndarray:
    """Check shape (H, 2H, 3), finiteness and non-negativity; return float32. Raises InputError."""
    envmap = np.asarray(envmap)
    if envmap.ndim != 3 or envmap.shape[2] != 3:
        raise InputError(source, f"expected an (H, W, 3) RGB environment map, got shape {envmap.shape}")
    height, width = envmap.shape[:2]
    if width != 2 * height:
        raise InputError(
            source,
            f"an equirectangular environment map must be twice as wide as it is high; got {width}×{height} "
            f"(aspect {width / max(height, 1):.3f})",
        )
    envmap = envmap.astype(np.float32, copy=False)
    nan = int(np.isnan(envmap).sum())
    inf = int(np.isinf(envmap).sum())
    if nan or inf:
        raise InputError(source, f"has {nan} NaN and {inf} Inf values; an environment map must be finite")
    negative = int((envmap < 0).sum())
    if negative:
        raise InputError(
            source, f"has {negative} negative values (min {float(envmap.min()):.4g}); radiance must be ≥ 0"
        )
    return envmap


def read_envmap(path: str | os.PathLike) -> np.ndarray:
    """Read and validate an .exr/.hdr environment map: float32 (H, 2H, 3)."""
    return validate_envmap(read_hdr(path), path)


def uv_to_direction(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Envmap texture coordinates in [0, 1] → unit world directions (..., 3)."""
    phi = 2.0 * np.pi * np.asarray(u, dtype=np.float64)
    theta = np.pi * np.asarray(v, dtype=np.float64)
    sin_theta = np.sin(theta)
    return np.stack([sin_theta * np.sin(phi), np.cos(theta), -sin_theta * np.cos(phi)], axis=-1)


def direction_to_uv(direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit world directions (..., 3) → envmap (u, v) in [0, 1) × [0, 1]."""
    d = np.asarray(direction, dtype=np.float64)
    u = np.mod(np.arctan2(d[..., 0], -d[..., 2]) / (2.0 * np.pi), 1.0)
    v = np.arccos(np.clip(d[..., 1], -1.0, 1.0)) / np.pi
    return u, v


def pixel_uv(height: int) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) of every texel of an (height, 2·height) envmap, each (H, 2H), as the emitter places them."""
    if height < 2:
        raise ValueError(f"an envmap needs at least 2 rows, got {height}")
    width = 2 * height
    u = (np.arange(width) + 0.5) / width
    v = np.arange(height) / (height - 1)
    return np.meshgrid(u, v)


def pixel_directions(height: int) -> np.ndarray:
    """Unit direction of every texel of an (height, 2·height) envmap: (H, 2H, 3)."""
    return uv_to_direction(*pixel_uv(height))


def footprint_uv(
    rows: np.ndarray, cols: np.ndarray, jitter: np.ndarray, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) of points inside texels (rows, cols) of an (height, 2·height) envmap; ``jitter``
    (N, 2) in [0, 1)² places each within its column and its latitude band (:func:`row_edges`)."""
    band = row_edges(height) / np.pi
    u = (cols + jitter[:, 0]) / (2 * height)
    v = band[rows] + jitter[:, 1] * (band[rows + 1] - band[rows])
    return u, v


def row_edges(height: int) -> np.ndarray:
    """Polar angles θ (H + 1,) bounding the latitude band each texel row stands for."""
    return np.clip(np.pi * (np.arange(height + 1) - 0.5) / (height - 1), 0.0, np.pi)


def pixel_solid_angles(height: int) -> np.ndarray:
    """Solid angle of one texel in each row of an (height, 2·height) envmap: (H,). A row sums to
    its band; all texels together cover 4π."""
    edges = row_edges(height)
    return (np.cos(edges[:-1]) - np.cos(edges[1:])) * (2.0 * np.pi / (2 * height))


def _overlap_matrix(src_edges: np.ndarray, dst_edges: np.ndarray, measure) -> np.ndarray:
    """(n_dst, n_src) weights: measure of the overlap of each dst cell with each src cell,
    normalised per dst cell, so that a constant map stays constant and ∫ L dω is preserved."""
    lo = np.maximum(dst_edges[:-1, None], src_edges[None, :-1])
    hi = np.minimum(dst_edges[1:, None], src_edges[None, 1:])
    overlap = np.where(hi > lo, measure(hi) - measure(lo), 0.0)
    return overlap / overlap.sum(axis=1, keepdims=True)


def resample_envmap(envmap: np.ndarray, height: int) -> np.ndarray:
    """Resample to (height, 2·height) preserving energy: each output pixel is the solid-angle
    weighted mean of the input over its footprint (area-weighted, never point sampling, so a
    one-pixel 40 000-nit sun keeps its total power)."""
    envmap = np.asarray(envmap, dtype=np.float32)
    src_h, src_w = envmap.shape[:2]
    if src_h == height and src_w == 2 * height:
        return envmap.copy()
    # Rows: the solid angle of a latitude band is ∝ −cos θ; columns: ∝ φ.
    rows = _overlap_matrix(row_edges(src_h), row_edges(height), lambda t: -np.cos(t))
    cols = _overlap_matrix(np.linspace(0, 1, src_w + 1), np.linspace(0, 1, 2 * height + 1), lambda x: x)
    out = np.einsum("ij,jkc,lk->ilc", rows, envmap.astype(np.float64), cols)
    return np.maximum(out, 0.0).astype(np.float32)


def rotate_envmap(envmap: np.ndarray, azimuth: float) -> np.ndarray:
    """Rotate the environment by ``azimuth`` radians about +y (right-handed: +z turns toward +x).

    A light at direction d moves to R_y(azimuth)·d, i.e. u decreases by azimuth/2π. Fractional
    shifts interpolate linearly between columns (energy preserving). Rendering with view azimuth
    φ is the same as rendering the envmap rotated by −φ: this is the one implementation of that.
    """
    envmap = np.asarray(envmap, dtype=np.float32)
    width = envmap.shape[1]
    shift = azimuth / (2.0 * np.pi) * width  # new(u) = old(u + azimuth/2π)
    whole = int(np.floor(shift))
    frac = np.float32(shift - whole)
    left = np.roll(envmap, -whole, axis=1)
    right = np.roll(envmap, -(whole + 1), axis=1)
    return (1.0 - frac) * left + frac * right


def envmap_power(envmap: np.ndarray) -> np.ndarray:
    """∫ L dω per channel (3,): the quantity resampling preserves."""
    envmap = np.asarray(envmap, dtype=np.float64)
    return np.einsum("hwc,h->c", envmap, pixel_solid_angles(envmap.shape[0]))
