"""Measured isotropic BRDFs in the MERL ``.binary`` format: reading, writing, tabulating an
analytic BRDF, and evaluating the table (numpy; the Mitsuba plugin is ``rendering.measured_bsdf``).

File layout (Matusik et al. 2003, little-endian): three int32 ``(n_θh, n_θd, n_φd) = (90, 90, 180)``,
then ``3·90·90·180`` float64 in channel-major order (all of R, then G, then B), each channel in
C order over (θ_h, θ_d, φ_d). A stored value times the channel's scale (1/1500, 1.15/1500,
1.66/1500) is the BRDF in 1/sr. Negative values mark samples that were not measured.

Parametrisation (Rusinkiewicz half/difference angles): h = normalize(wi + wo), θ_h = acos(h_z);
the difference vector is wi rotated by −φ_h about the normal and by −θ_h about the binormal;
θ_d, φ_d are its polar angles. Reciprocity folds φ_d into [0, π). Bin (i, j, k) covers

    i = sqrt(θ_h / (π/2))·90   (non-linear: fine near the specular peak)
    j = θ_d / (π/2)·90,   k = φ_d / π·180

and :meth:`MerlBrdf.from_function` samples a BRDF at the bin centres (i + ½, j + ½, k + ½).
Lookup is ``"linear"`` (trilinear between bin centres; clamped in θ_h and θ_d, periodic in φ_d)
or ``"nearest"`` (MERL's reference lookup: floor of the continuous index). Missing samples are
filled, for lookups only, with the nearest measured value at smaller θ_d (0 if there is none);
the stored table keeps them negative so that a round trip is exact.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fileio.atomic import atomic_write
from rendering.errors import InputError

THETA_H_RES, THETA_D_RES, PHI_D_RES = 90, 90, 180
TABLE_SHAPE = (3, THETA_H_RES, THETA_D_RES, PHI_D_RES)
CHANNEL_SCALES = np.array([1.0 / 1500.0, 1.15 / 1500.0, 1.66 / 1500.0])
HEADER_BYTES = 3 * 4
DATA_BYTES = int(np.prod(TABLE_SHAPE)) * 8
FILTERS = ("linear", "nearest")

BrdfFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True, eq=False)
class MerlBrdf:
    """An isotropic measured BRDF.

    ``table``: float32 (3, 90, 90, 180) over (RGB, θ_h, θ_d, φ_d) bins, in 1/sr (the file's
    per-channel scales already applied); negative entries are missing samples.
    """

    table: np.ndarray
    name: str = ""

    def __post_init__(self) -> None:
        table = np.asarray(self.table, dtype=np.float32)
        if table.shape != TABLE_SHAPE:
            raise InputError(self.name or "MERL table", f"expected shape {TABLE_SHAPE}, got {table.shape}")
        if not np.isfinite(table).all():
            raise InputError(
                self.name or "MERL table", f"has {int((~np.isfinite(table)).sum())} NaN/Inf values"
            )
        object.__setattr__(self, "table", table)

    @property
    def missing_fraction(self) -> float:
        """Fraction of table entries marked missing (negative)."""
        return float((self.table < 0).mean())

    @functools.cached_property
    def filled(self) -> np.ndarray:
        """The table used for lookups: float32 (90, 90, 180, 3) channels-last, missing samples filled
        from smaller θ_d, everything ≥ 0."""
        return np.ascontiguousarray(np.moveaxis(fill_missing(self.table), 0, -1))

    def eval(self, wi: np.ndarray, wo: np.ndarray, filter: str = "linear") -> np.ndarray:
        """BRDF value f(wi, wo) in 1/sr (no cosine): (N, 3) float32 for local unit directions
        wi, wo (N, 3) (z = normal); 0 where either lies below the surface."""
        wi = np.asarray(wi, dtype=np.float64).reshape(-1, 3)
        wo = np.asarray(wo, dtype=np.float64).reshape(-1, 3)
        theta_h, theta_d, phi_d = half_diff_angles(wi, wo)
        value = lookup(self.filled, theta_h, theta_d, phi_d, filter)
        above = (wi[:, 2] > 0) & (wo[:, 2] > 0)
        return np.where(above[:, None], value, 0.0).astype(np.float32)

    @classmethod
    def from_function(cls, brdf: BrdfFunction, name: str = "") -> MerlBrdf:
        """Tabulate ``brdf(wi, wo) -> (N, 3)`` (1/sr, no cosine; local directions (N, 3)) at the bin
        centres. Bins whose centre puts wi or wo below the surface are filled from smaller θ_d,
        so that lookups near the horizon interpolate between meaningful values."""
        wi, wo = bin_directions()
        wi, wo = wi.reshape(-1, 3), wo.reshape(-1, 3)
        above = (wi[:, 2] > 0) & (wo[:, 2] > 0)
        measured = np.asarray(brdf(wi[above], wo[above]), dtype=np.float64).reshape(-1, 3)
        if not np.isfinite(measured).all():
            raise InputError(name or "BRDF function", "returned NaN/Inf values")
        values = np.full((len(wi), 3), -1.0)
        values[above] = np.maximum(measured, 0.0)
        table = np.moveaxis(values.reshape(THETA_H_RES, THETA_D_RES, PHI_D_RES, 3), -1, 0)
        return cls(fill_missing(table), name)


def fill_missing(table: np.ndarray) -> np.ndarray:
    """(3, 90, 90, 180) → same shape, ≥ 0: each missing (negative) entry takes the last measured
    value at smaller θ_d in its (θ_h, φ_d) column, or 0 when there is none."""
    table = np.asarray(table, dtype=np.float32)
    measured = table >= 0
    index = np.where(measured, np.arange(THETA_D_RES)[None, None, :, None], 0)
    index = np.maximum.accumulate(index, axis=2)
    return np.maximum(np.take_along_axis(table, index, axis=2), 0.0)


def half_diff_angles(wi: np.ndarray, wo: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local directions (N, 3) → (θ_h, θ_d, φ_d) each (N,), φ_d folded into [0, π)."""
    half = wi + wo
    half = half / np.maximum(np.linalg.norm(half, axis=-1, keepdims=True), 1e-12)
    sin_h = np.hypot(half[:, 0], half[:, 1])
    theta_h = np.arctan2(sin_h, half[:, 2])
    # Rotate wi by −φ_h about z, then by −θ_h about y: the half vector becomes the pole.
    safe = sin_h > 1e-9
    cos_ph = np.where(safe, half[:, 0] / np.where(safe, sin_h, 1.0), 1.0)
    sin_ph = np.where(safe, half[:, 1] / np.where(safe, sin_h, 1.0), 0.0)
    x = cos_ph * wi[:, 0] + sin_ph * wi[:, 1]
    y = -sin_ph * wi[:, 0] + cos_ph * wi[:, 1]
    cos_th = half[:, 2]
    dx = cos_th * x - sin_h * wi[:, 2]
    dz = sin_h * x + cos_th * wi[:, 2]
    theta_d = np.arctan2(np.hypot(dx, y), dz)
    phi_d = np.mod(np.arctan2(y, dx), np.pi)
    return theta_h, theta_d, phi_d


def continuous_index(theta_h, theta_d, phi_d):
    """Angles → continuous bin coordinates (c_h, c_d, c_φ): bin i spans [i, i + 1), centre i + ½.
    Works on numpy arrays and on Dr.Jit arrays (only arithmetic and sqrt)."""
    c_h = (np.maximum(theta_h, 0.0) * (2.0 / np.pi)) ** 0.5 * THETA_H_RES
    c_d = theta_d * (2.0 / np.pi) * THETA_D_RES
    c_p = phi_d * (1.0 / np.pi) * PHI_D_RES
    return c_h, c_d, c_p


def lookup(filled: np.ndarray, theta_h, theta_d, phi_d, filter: str = "linear") -> np.ndarray:
    """Look up a channels-last (90, 90, 180, 3) table at angles (N,) → (N, 3); see module docstring."""
    if filter not in FILTERS:
        raise ValueError(f"unknown filter {filter!r}; choose one of {FILTERS}")
    c_h, c_d, c_p = continuous_index(np.asarray(theta_h), np.asarray(theta_d), np.asarray(phi_d))
    if filter == "nearest":
        i = np.clip(np.floor(c_h).astype(int), 0, THETA_H_RES - 1)
        j = np.clip(np.floor(c_d).astype(int), 0, THETA_D_RES - 1)
        k = np.floor(c_p).astype(int) % PHI_D_RES
        return filled[i, j, k]
    out = 0.0
    axes = []
    for c, n in ((c_h, THETA_H_RES), (c_d, THETA_D_RES)):
        lo = np.floor(c - 0.5)
        t = c - 0.5 - lo
        axes.append(
            ((np.clip(lo, 0, n - 1).astype(int), 1.0 - t), (np.clip(lo + 1, 0, n - 1).astype(int), t))
        )
    lo = np.floor(c_p - 0.5)
    t = c_p - 0.5 - lo
    axes.append(((lo.astype(int) % PHI_D_RES, 1.0 - t), ((lo.astype(int) + 1) % PHI_D_RES, t)))
    for i, wi in axes[0]:
        for j, wj in axes[1]:
            for k, wk in axes[2]:
                out = out + (wi * wj * wk)[:, None] * filled[i, j, k]
    return out


def bin_angles() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Angles of the bin centres: θ_h (90,), θ_d (90,), φ_d (180,)."""
    theta_h = ((np.arange(THETA_H_RES) + 0.5) / THETA_H_RES) ** 2 * (np.pi / 2)
    theta_d = (np.arange(THETA_D_RES) + 0.5) / THETA_D_RES * (np.pi / 2)
    phi_d = (np.arange(PHI_D_RES) + 0.5) / PHI_D_RES * np.pi
    return theta_h, theta_d, phi_d


def angles_to_directions(theta_h, theta_d, phi_d) -> tuple[np.ndarray, np.ndarray]:
    """(θ_h, θ_d, φ_d) (broadcastable) → local (wi, wo) (..., 3) with φ_h = 0: the inverse of
    :func:`half_diff_angles` (wi is the difference vector rotated back, wo its mirror about h)."""
    theta_h, theta_d, phi_d = np.broadcast_arrays(theta_h, theta_d, phi_d)
    d = np.stack([np.sin(theta_d) * np.cos(phi_d), np.sin(theta_d) * np.sin(phi_d), np.cos(theta_d)], -1)
    ch, sh = np.cos(theta_h)[..., None], np.sin(theta_h)[..., None]
    wi = np.concatenate(
        [ch * d[..., :1] + sh * d[..., 2:], d[..., 1:2], -sh * d[..., :1] + ch * d[..., 2:]], -1
    )
    half = np.concatenate([sh, np.zeros_like(sh), ch], -1)
    wo = 2.0 * np.sum(wi * half, -1, keepdims=True) * half - wi
    return wi, wo


def bin_directions() -> tuple[np.ndarray, np.ndarray]:
    """Local (wi, wo) at every bin centre: each (90, 90, 180, 3) float64."""
    theta_h, theta_d, phi_d = bin_angles()
    return angles_to_directions(theta_h[:, None, None], theta_d[None, :, None], phi_d[None, None, :])


def read_merl(path: str | os.PathLike) -> MerlBrdf:
    """Read a MERL ``.binary`` file. Raises InputError naming the file when it is missing,
    truncated, has other dimensions, extra bytes, or NaN/Inf values."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "MERL BRDF file does not exist")
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise InputError(path, f"truncated MERL file: {size} bytes, shorter than the 12-byte header")
    with open(path, "rb") as handle:
        dims = tuple(int(d) for d in np.frombuffer(handle.read(HEADER_BYTES), dtype="<i4"))
        expected = (THETA_H_RES, THETA_D_RES, PHI_D_RES)
        if dims != expected:
            raise InputError(
                path, f"MERL header gives dimensions {dims}; expected {expected} (θ_h, θ_d, φ_d)"
            )
        data_bytes = size - HEADER_BYTES
        if data_bytes < DATA_BYTES:
            raise InputError(
                path, f"truncated MERL file: {data_bytes} data bytes, the header implies {DATA_BYTES}"
            )
        if data_bytes > DATA_BYTES:
            raise InputError(
                path,
                f"MERL file has {data_bytes - DATA_BYTES} bytes beyond the {DATA_BYTES} its header implies",
            )
        raw = np.frombuffer(handle.read(DATA_BYTES), dtype="<f8").reshape(TABLE_SHAPE)
    bad = int((~np.isfinite(raw)).sum())
    if bad:
        raise InputError(path, f"MERL file has {bad} NaN/Inf values")
    return MerlBrdf((raw * CHANNEL_SCALES[:, None, None, None]).astype(np.float32), path.stem)


def write_merl(path: str | os.PathLike, brdf: MerlBrdf) -> Path:
    """Write ``brdf`` as a MERL ``.binary`` file, atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = brdf.table.astype(np.float64) / CHANNEL_SCALES[:, None, None, None]
    with atomic_write(path) as tmp, open(tmp, "wb") as out:
        out.write(np.array([THETA_H_RES, THETA_D_RES, PHI_D_RES], dtype="<i4").tobytes())
        out.write(raw.astype("<f8").tobytes())
    return path
