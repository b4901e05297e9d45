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
from collections.abc import Callable
from dataclasses import dataclass

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


def read_envmap(path: str | os.PathLike, repair: bool = False) -> np.ndarray:
    """Read an .exr/.hdr environment map through the HDR input policy (:mod:`rendering.radiance`:
    negatives repaired with one warning line; NaN/Inf an error unless ``repair``): float32 (H, 2H, 3)."""
    from rendering.radiance import clean_radiance

    envmap = read_hdr(path)
    if envmap.ndim == 3 and envmap.shape[1] == 2 * envmap.shape[0]:
        envmap, _ = clean_radiance(
            envmap, path, weights=pixel_solid_angles(envmap.shape[0]), wrap=True, repair_nonfinite=repair
        )
    return validate_envmap(envmap, path)


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


@dataclass(frozen=True)
class _Overlaps:
    """The resampling weights along one axis as a sparse (n_dst, n_src) matrix: one entry per
    *fragment*, an interval of the merged src/dst edges, which lies in exactly one src and one
    dst cell. Sorted by dst and src alike (both are monotone), so each dst cell's entries are
    contiguous; about n_src + n_dst of them, against n_src · n_dst for a dense matrix."""

    dst: np.ndarray  # (F,) dst cell of each fragment, non-decreasing
    src: np.ndarray  # (F,) src cell of each fragment, non-decreasing
    weight: np.ndarray  # (F,) float64 overlap measure, normalised per dst cell to sum 1

    @classmethod
    def between(
        cls, src_edges: np.ndarray, dst_edges: np.ndarray, measure: Callable[[np.ndarray], np.ndarray]
    ) -> _Overlaps:
        """Weights that keep a constant map constant and ∫ L dω unchanged: each dst cell is the
        ``measure``-weighted mean of the src cells it overlaps."""
        edges = np.union1d(src_edges, dst_edges)
        lo, hi = edges[:-1], edges[1:]
        weight = measure(hi) - measure(lo)
        mid = 0.5 * (lo + hi)
        dst = np.searchsorted(dst_edges, mid, side="right") - 1
        src = np.searchsorted(src_edges, mid, side="right") - 1
        keep = weight > 0  # an edge in both lists leaves an empty fragment
        dst, src, weight = dst[keep], src[keep], weight[keep]
        starts = np.flatnonzero(np.r_[True, dst[1:] != dst[:-1]])
        weight /= np.repeat(np.add.reduceat(weight, starts), np.diff(np.r_[starts, len(dst)]))
        return cls(dst, src, weight)

    def apply(self, values: np.ndarray, axis: int, offset: int = 0) -> np.ndarray:
        """Contract ``values`` along ``axis``, whose index 0 is src cell ``offset``, for the
        fragments held (a contiguous run of dst cells): float64, the dst cells in order."""
        shape = [1] * values.ndim
        shape[axis] = -1
        weight = self.weight.reshape(shape)
        src = self.src - offset
        if np.array_equal(src, np.arange(values.shape[axis])):
            # Each src cell lies in one dst cell (e.g. a power-of-two reduction): no gather, and
            # float32 values are widened inside the multiplication instead of copied first.
            products = np.multiply(values, weight, dtype=np.float64)
        else:
            products = np.take(values, src, axis=axis) * weight
        starts = np.flatnonzero(np.r_[True, self.dst[1:] != self.dst[:-1]])
        return np.add.reduceat(products, starts, axis=axis)

    def dst_range(self, first: int, stop: int) -> _Overlaps:
        """The fragments of dst cells [first, stop)."""
        a, b = np.searchsorted(self.dst, [first, stop])
        return _Overlaps(self.dst[a:b], self.src[a:b], self.weight[a:b])


# Source values converted to float64 at a time while resampling: bounds the working memory
# (~ 3 × 8 bytes × this) whatever the size of the input.
RESAMPLE_BLOCK_VALUES = 1 << 21


def resample_envmap(envmap: np.ndarray, height: int) -> np.ndarray:
    """Resample to (height, 2·height) preserving energy: each output pixel is the solid-angle
    weighted mean of the input over its footprint (area-weighted, never point sampling, so a
    one-pixel 40 000-nit sun keeps its total power).

    Separable: columns (weights ∝ φ), then rows (weights ∝ −cos θ, the latitude bands of
    :func:`row_edges`), each a sparse contraction with about n_src + n_dst weights. Streamed in
    blocks of output rows: only the source rows a block needs are converted to float64, so an
    8192×4096 float32 map (400 MB) is never copied whole.

    The input is expected ≥ 0, as :func:`read_envmap` returns maps: the weights are ≥ 0, so the
    output is too. Negative input values would be averaged and then clamped to 0, which adds
    energy; repair such maps before (reading does).
    """
    envmap = np.asarray(envmap, dtype=np.float32)
    src_h, src_w = envmap.shape[:2]
    if src_h == height and src_w == 2 * height:
        return envmap.copy()
    rows = _Overlaps.between(row_edges(src_h), row_edges(height), lambda t: -np.cos(t))
    cols = _Overlaps.between(np.linspace(0, 1, src_w + 1), np.linspace(0, 1, 2 * height + 1), lambda x: x)
    out = np.empty((height, 2 * height, envmap.shape[2]), dtype=np.float32)
    # Source rows a block of output rows may span: at least every source row one output row needs.
    first_src = rows.src[np.searchsorted(rows.dst, np.arange(height))]
    last_src = rows.src[np.searchsorted(rows.dst, np.arange(height), side="right") - 1]
    budget = max(RESAMPLE_BLOCK_VALUES // max(src_w * envmap.shape[2], 1), 1)
    first = 0
    while first < height:
        stop = first + 1
        while stop < height and last_src[stop] - first_src[first] < budget:
            stop += 1
        lo, hi = first_src[first], last_src[stop - 1] + 1
        narrowed = cols.apply(envmap[lo:hi], axis=1)
        out[first:stop] = rows.dst_range(first, stop).apply(narrowed, axis=0, offset=lo)
        first = stop
    return np.maximum(out, 0.0, out=out)


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


def tilt_envmap(envmap: np.ndarray, angle: float) -> np.ndarray:
    """Rotate the environment by ``angle`` radians about +x (the camera's right axis): a light at
    direction d moves to R_x(angle)·d, so a positive angle lifts what is in front of the viewer
    (+z) toward the zenith. Each texel reads the source bilinearly (columns wrap around)."""
    from scipy.ndimage import map_coordinates

    envmap = np.asarray(envmap, dtype=np.float32)
    height, width = envmap.shape[:2]
    d = pixel_directions(height)
    c, s = np.cos(angle), np.sin(angle)
    # The source direction of each output texel: R_x(−angle)·d.
    source = np.stack([d[..., 0], c * d[..., 1] + s * d[..., 2], -s * d[..., 1] + c * d[..., 2]], axis=-1)
    u, v = direction_to_uv(source)
    rows = v * (height - 1)
    cols = u * width - 0.5 + 1.0  # +1: the padded column on the left
    padded = np.concatenate([envmap[:, -1:], envmap, envmap[:, :1]], axis=1)
    out = np.stack(
        [map_coordinates(padded[..., ch], [rows, cols], order=1, mode="nearest") for ch in range(3)], axis=-1
    )
    return np.maximum(out, 0.0).astype(np.float32)
