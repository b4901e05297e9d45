"""Error metrics of the evaluation protocol (DESIGN.md §6), on plain numpy arrays.

Every image metric takes an estimate and a target of the same shape with the colour channels
along ``channel_axis`` (−1 for images and envmaps (H, W, 3), 0 for refmaps (3, R, R)), and an
optional boolean ``mask`` over the remaining axes that selects the pixels to compare (the sphere's
silhouette, an envmap's valid region, the observed refmap pixels). ``weights`` (same shape as the
mask) weigh pixels, e.g. by the solid angle of envmap pixels. Values are computed in float64 and
returned as Python floats.

Scale alignment: illumination and albedo trade intensity against each other, so an estimate is
only defined up to a global scale. The "scale-invariant" metrics first multiply the estimate by
the one scalar that minimises the weighted squared error (closed form, see
:func:`optimal_scale`); the log-domain metrics subtract the optimal offset of the logs instead.
``relative_si_rmse`` divides the si-RMSE by the target's RMS, so that every item scores on the
same footing (0 = perfect, 1 = no better than black) whatever its brightness.

Tone-mapping before the three-sphere protocol (StyleLight's ``TonemapHDR`` with the parameters
its evaluation uses, as DiffusionLight's evaluation follows it)::

    T(x) = clip(α · x^(1/γ), 0, 1),   γ = 2.4,   α = 0.99 / P99(gt^(1/γ))

P99 is the 99th percentile of the ground-truth envmap's channel values > 0, so the brightest 1 %
of its values saturate, whatever its absolute units. The estimate is first multiplied by its
optimal scale against the ground truth (radiance units are arbitrary: see above) and then
mapped with the ground truth's α (:func:`tonemap_exposure`, :func:`tonemap`): brightness errors
that remain after the alignment are seen, and no map weighs more than another because it is
brighter. The spheres are then rendered under the two tone-mapped envmaps.
"""

from __future__ import annotations

import numpy as np

from rendering.hdrio import luminance

# Relative floor for logarithms: ln(x + LOG_FLOOR · mean(x)). Relative to each map's own mean so
# that multiplying a map by k adds exactly ln k to every log value (exact scale invariance).
LOG_FLOOR = 1e-3
TONEMAP_GAMMA = 2.4  # StyleLight's TonemapHDR(gamma=2.4, percentile=99, max_mapping=0.99)
TONEMAP_PERCENTILE = 99.0
TONEMAP_LEVEL = 0.99


def _pixels(
    image: np.ndarray, mask: np.ndarray | None, channel_axis: int, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(…, C) → the selected pixels (P, C) in float64 and their weights (P,) summing to 1."""
    pixels = np.moveaxis(np.asarray(image, dtype=np.float64), channel_axis, -1)
    spatial = pixels.shape[:-1]
    pixel_weights = (
        np.ones(spatial) if weights is None else np.broadcast_to(np.asarray(weights, np.float64), spatial)
    )
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != spatial:
            raise ValueError(f"mask of shape {mask.shape} does not match the image's pixels {spatial}")
        pixels, pixel_weights = pixels[mask], pixel_weights[mask]
    pixels = pixels.reshape(-1, pixels.shape[-1])
    pixel_weights = pixel_weights.reshape(-1)
    total = pixel_weights.sum()
    if pixels.shape[0] == 0 or total <= 0:
        raise ValueError("no pixels selected: the mask is empty")
    return pixels, pixel_weights / total


def _pair(estimate, target, mask, channel_axis, weights=None):
    estimate, target = np.asarray(estimate), np.asarray(target)
    if estimate.shape != target.shape:
        raise ValueError(f"estimate {estimate.shape} and target {target.shape} differ in shape")
    est, w = _pixels(estimate, mask, channel_axis, weights)
    tgt, _ = _pixels(target, mask, channel_axis, weights)
    return est, tgt, w


def _weighted_rmse(est: np.ndarray, tgt: np.ndarray, w: np.ndarray) -> float:
    return float(np.sqrt(np.sum(w[:, None] * (est - tgt) ** 2) / est.shape[1]))


def rmse(estimate, target, mask=None, *, channel_axis: int = -1, weights=None) -> float:
    """Root mean squared error over the selected pixels and all channels."""
    return _weighted_rmse(*_pair(estimate, target, mask, channel_axis, weights))


def optimal_scale(estimate, target, mask=None, *, channel_axis: int = -1, weights=None) -> float:
    """The scalar s minimising Σ w (s·estimate − target)²: s = Σ w·e·t / Σ w·e² (1 if estimate is 0)."""
    est, tgt, w = _pair(estimate, target, mask, channel_axis, weights)
    denominator = float(np.sum(w[:, None] * est * est))
    return float(np.sum(w[:, None] * est * tgt)) / denominator if denominator > 0 else 1.0


def si_rmse(estimate, target, mask=None, *, channel_axis: int = -1, weights=None) -> float:
    """Scale-invariant RMSE: the RMSE after multiplying the estimate by :func:`optimal_scale`."""
    est, tgt, w = _pair(estimate, target, mask, channel_axis, weights)
    denominator = float(np.sum(w[:, None] * est * est))
    scale = float(np.sum(w[:, None] * est * tgt)) / denominator if denominator > 0 else 1.0
    return _weighted_rmse(scale * est, tgt, w)


def nrmse(estimate, target, mask=None, *, channel_axis: int = -1, weights=None) -> float:
    """RMSE divided by the root mean square of the target (0 = perfect, 1 = as bad as black)."""
    est, tgt, w = _pair(estimate, target, mask, channel_axis, weights)
    norm = float(np.sqrt(np.sum(w[:, None] * tgt * tgt) / tgt.shape[1]))
    return _weighted_rmse(est, tgt, w) / norm if norm > 0 else float("inf")


def relative_si_rmse(estimate, target, mask=None, *, channel_axis: int = -1, weights=None) -> float:
    """:func:`si_rmse` divided by the RMS of the target: 0 = perfect, 1 = as bad as black (the
    optimal scale of any estimate is never worse than scaling it to 0). Unitless, so a bright
    map weighs no more in a mean than a dark one."""
    est, tgt, w = _pair(estimate, target, mask, channel_axis, weights)
    denominator = float(np.sum(w[:, None] * est * est))
    scale = float(np.sum(w[:, None] * est * tgt)) / denominator if denominator > 0 else 1.0
    norm = float(np.sqrt(np.sum(w[:, None] * tgt * tgt) / tgt.shape[1]))
    return _weighted_rmse(scale * est, tgt, w) / norm if norm > 0 else float("inf")


def angular_error(estimate, target, mask=None, *, channel_axis: int = -1, weights=None) -> float:
    """Mean angle in degrees between the RGB vectors of estimate and target, per pixel.

    Pixels where both vectors are black count as 0°; where only one is black, as 90° (no colour
    agrees with black), so an estimate cannot improve its score by going dark.
    """
    est, tgt, w = _pair(estimate, target, mask, channel_axis, weights)
    norms = np.linalg.norm(est, axis=1) * np.linalg.norm(tgt, axis=1)
    cosine = np.divide(np.sum(est * tgt, axis=1), norms, out=np.zeros_like(norms), where=norms > 0)
    angles = np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))
    both_black = (np.linalg.norm(est, axis=1) == 0) & (np.linalg.norm(tgt, axis=1) == 0)
    angles[both_black] = 0.0
    return float(np.sum(w * angles))


def log_values(image: np.ndarray, mask=None, *, channel_axis: int = -1, weights=None) -> np.ndarray:
    """ln(x + LOG_FLOOR·mean(x)) of a non-negative map, the floor relative to its weighted mean."""
    image = np.maximum(np.asarray(image, dtype=np.float64), 0.0)
    pixels, w = _pixels(image, mask, channel_axis, weights)
    floor = LOG_FLOOR * float(np.sum(w[:, None] * pixels) / pixels.shape[1])
    return np.log(image + max(floor, np.finfo(np.float64).tiny))


def log_rmse(estimate, target, mask=None, *, channel_axis: int = -1, weights=None) -> float:
    """Scale-aligned log-RMSE: RMSE of ln(estimate) − ln(target) after removing its weighted
    mean (the optimal log offset, i.e. the optimal scale). Multiplying the estimate by any k > 0
    leaves it unchanged; envmaps should pass their pixels' solid angles as ``weights``."""
    log_est = log_values(estimate, mask, channel_axis=channel_axis, weights=weights)
    log_tgt = log_values(target, mask, channel_axis=channel_axis, weights=weights)
    est, tgt, w = _pair(log_est, log_tgt, mask, channel_axis, weights)
    difference = est - tgt
    offset = np.sum(w[:, None] * difference) / difference.shape[1]
    return float(np.sqrt(np.sum(w[:, None] * (difference - offset) ** 2) / difference.shape[1]))


def log_luminance_rmse(estimate, target, mask=None, *, channel_axis: int = -1, weights=None) -> float:
    """RMSE of ln(luminance) after the optimal log offset (i.e. the optimal scale), the logs
    floored like :func:`log_values`: the typical relative error of the brightness pattern,
    ignoring colour. Multiplying the estimate by any k > 0 leaves it unchanged."""
    lum_est = luminance(estimate, channel_axis, np.float64)
    lum_tgt = luminance(target, channel_axis, np.float64)
    return log_rmse(lum_est[..., None], lum_tgt[..., None], mask, weights=weights)


def tonemap_exposure(reference: np.ndarray) -> float:
    """α of the tone-mapping operator (module docstring) for a ground-truth map (…, 3):
    0.99 / P99 of its values > 0 raised to 1/γ; 1 for an all-black map."""
    values = np.asarray(reference, np.float64)
    positive = values[values > 0]
    if positive.size == 0:
        return 1.0
    level = float(np.percentile(positive, TONEMAP_PERCENTILE)) ** (1.0 / TONEMAP_GAMMA)
    return TONEMAP_LEVEL / level


def tonemap(image: np.ndarray, exposure: float) -> np.ndarray:
    """T(x) = clip(α · max(x, 0)^(1/γ), 0, 1) with α = ``exposure`` (see :func:`tonemap_exposure`);
    float32 of the same shape."""
    mapped = exposure * np.maximum(np.asarray(image, np.float64), 0.0) ** (1.0 / TONEMAP_GAMMA)
    return np.clip(mapped, 0.0, 1.0).astype(np.float32)


def material_error(z_estimate: np.ndarray, z_target: np.ndarray) -> float:
    """Mean absolute error between material vectors (6,) (DESIGN.md §3.3), each entry in [0, 1]."""
    z_estimate, z_target = np.asarray(z_estimate, np.float64), np.asarray(z_target, np.float64)
    if z_estimate.shape != z_target.shape:
        raise ValueError(f"material vectors differ in shape: {z_estimate.shape} vs {z_target.shape}")
    return float(np.mean(np.abs(z_estimate - z_target)))


def sample_spread(samples: np.ndarray, mask=None, *, channel_axis: int = -1) -> float:
    """How much N stochastic estimates (N, …) disagree: the mean per-pixel standard deviation
    across samples of the log values (each sample scale-aligned to the samples' mean), i.e. a
    typical relative deviation; 0 when all samples agree up to scale."""
    samples = np.asarray(samples, dtype=np.float64)
    mean = samples.mean(axis=0)
    floor = _log_floor(mean, mask, channel_axis)
    logs = np.stack(
        [
            _masked_log(
                optimal_scale(s, mean, mask, channel_axis=channel_axis) * s, floor, mask, channel_axis
            )
            for s in samples
        ]
    )
    return float(np.mean(np.std(logs, axis=0)))


def calibration(
    samples: np.ndarray, target: np.ndarray, mask=None, *, channel_axis: int = -1, k: float = 2.0
) -> float:
    """Fraction of pixel values whose target lies within mean ± k·std of the samples (N, …).

    Computed on log values after scaling all samples by the one factor that best fits their mean
    to the target (an estimate is only defined up to scale). A well-calibrated spread covers the
    truth about as often as a Gaussian interval would (≈ 95 % for k = 2); a single sample
    (std 0) covers almost nothing.
    """
    samples = np.asarray(samples, dtype=np.float64)
    scale = optimal_scale(samples.mean(axis=0), target, mask, channel_axis=channel_axis)
    floor = _log_floor(target, mask, channel_axis)
    logs = np.stack([_masked_log(scale * s, floor, mask, channel_axis) for s in samples])
    target_log = _masked_log(target, floor, mask, channel_axis)
    mean, std = logs.mean(axis=0), logs.std(axis=0)
    return float(np.mean(np.abs(target_log - mean) <= k * std))


def _log_floor(reference, mask, channel_axis) -> float:
    pixels, w = _pixels(np.maximum(reference, 0.0), mask, channel_axis)
    return max(LOG_FLOOR * float(np.sum(w[:, None] * pixels) / pixels.shape[1]), np.finfo(np.float64).tiny)


def _masked_log(image, floor: float, mask, channel_axis) -> np.ndarray:
    """ln(max(x, 0) + floor) of the selected pixels: (P, C)."""
    pixels, _ = _pixels(np.maximum(np.asarray(image, np.float64), 0.0), mask, channel_axis)
    return np.log(pixels + floor)


def envmap_log_rmse(estimate: np.ndarray, target: np.ndarray, valid: np.ndarray | None = None) -> float:
    """:func:`log_rmse` of two envmaps (H, 2H, 3), pixels weighted by their solid angle, over
    ``valid`` (H, 2H) when given (e.g. where a mirror refmap determines the envmap)."""
    from rendering.envmap import pixel_solid_angles

    weights = pixel_solid_angles(np.asarray(target).shape[0])[:, None]
    return log_rmse(estimate, target, valid, weights=weights)
