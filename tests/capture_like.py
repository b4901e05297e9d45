"""Object inputs as other tools write them, synthesised: a ball seen by a camera whose pixels
average their footprint (4×4 samples), so the silhouette is anti-aliased — edge pixels hold
partial colour and partially-weighted, short normals, as in the paper's own sample — plus the
defects real normal maps carry: zero normals inside the mask, slightly short normals (0.9) and a
few normals facing away from the camera. ``clean`` is the same ball sampled at pixel centres."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RADIUS = 0.9  # the ball's radius in the [-1, 1]² image frame
SUPERSAMPLING = 4  # samples per pixel side of the anti-aliased capture
# Defects at (row, col) as fractions of the image side: zero normals inside the mask, and normals
# pointing away from the camera.
HOLES = ((0.31, 0.47), (0.53, 0.41), (0.62, 0.62), (0.47, 0.69))
FACING_AWAY = ((0.41, 0.56), (0.59, 0.31), (0.69, 0.47))


def radiance(normals: np.ndarray) -> np.ndarray:
    """A smooth lighting that varies with both elevation and azimuth: (..., 3) unit normals → RGB."""
    n = np.asarray(normals, dtype=np.float64)
    sky = np.maximum(n[..., 1:2], 0.0) ** 2 * np.array([0.5, 1.0, 3.0])
    key = np.maximum(n[..., 0:1], 0.0) ** 2 * np.array([4.0, 3.0, 2.0])
    return 0.3 + sky + key


@dataclass
class Observation:
    image: np.ndarray  # (H, W, 3) float32
    normals: np.ndarray  # (H, W, 3) float32
    mask: np.ndarray  # (H, W) bool


@dataclass
class CaptureLike:
    clean: Observation
    captured: Observation
    near_zero: int  # mask pixels of the capture whose normal is shorter than 0.5
    facing_away: int  # normals of the capture pointing away from the camera
    short: np.ndarray  # (H, W) bool, interior normals scaled to length 0.9


def _ball(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(normals (..., 3), inside (...)) of the ball at image-frame points (x, y)."""
    rho2 = (x**2 + y**2) / RADIUS**2
    inside = rho2 < 1.0
    z = np.sqrt(np.maximum(1.0 - rho2, 0.0))
    normals = np.stack([x / RADIUS, y / RADIUS, z], axis=-1) * inside[..., None]
    return normals, inside


def _pixels(fractions: tuple[tuple[float, float], ...], size: int) -> list[tuple[int, int]]:
    return [(int(row * size), int(col * size)) for row, col in fractions]


def capture_like(size: int = 128) -> CaptureLike:
    rows, cols = np.mgrid[0:size, 0:size]
    centre_x, centre_y = (cols + 0.5) / size * 2 - 1, 1 - (rows + 0.5) / size * 2
    normals, inside = _ball(centre_x, centre_y)
    clean = Observation(
        (radiance(normals) * inside[..., None]).astype(np.float32), normals.astype(np.float32), inside
    )

    offsets = (np.arange(SUPERSAMPLING) + 0.5) / SUPERSAMPLING - 0.5
    normal_sum = np.zeros((size, size, 3))
    colour_sum = np.zeros((size, size, 3))
    for dy in offsets:
        for dx in offsets:
            n, hit = _ball(centre_x + dx * 2 / size, centre_y - dy * 2 / size)
            normal_sum += n
            colour_sum += radiance(n) * hit[..., None]
    count = SUPERSAMPLING**2
    normals, image = normal_sum / count, colour_sum / count
    mask = np.any(normal_sum != 0, axis=2)  # any coverage, as an alpha > 0 mask is written

    for row, col in _pixels(HOLES, size):
        normals[row, col] = 0.0
    short = (centre_x < 0) & (centre_y > 0) & (centre_x**2 + centre_y**2 < (0.7 * RADIUS) ** 2)
    normals[short] *= 0.9
    for row, col in _pixels(FACING_AWAY, size):
        normals[row, col, 2] *= -1.0
        image[row, col] = 100.0  # whatever a pixel seen from behind shows must not count
    near_zero = int((mask & (np.linalg.norm(normals, axis=2) < 0.5)).sum())
    captured = Observation(image.astype(np.float32), normals.astype(np.float32), mask)
    return CaptureLike(clean, captured, near_zero, len(FACING_AWAY), short)


def interior_bins(res: int, min_nz: float = 0.5) -> np.ndarray:
    """(R, R) bool: refmap bins whose normal is within acos(min_nz) of the view direction."""
    i, j = np.mgrid[0:res, 0:res]
    el = np.pi / 2 - (i + 0.5) * np.pi / res
    az = -np.pi / 2 + (j + 0.5) * np.pi / res
    return np.cos(el) * np.cos(az) >= min_nz
