"""The evaluation metrics against values computed by hand on small arrays."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import metrics
from rendering.hdrio import LUMINANCE_WEIGHTS


def test_rmse_of_a_known_difference_over_a_mask():
    target = np.zeros((2, 2, 3))
    estimate = target.copy()
    estimate[0, 0] = [3.0, 0.0, 0.0]  # squared error 9 on one of 6 masked values
    estimate[1, 1] = 100.0  # outside the mask: must not count
    mask = np.array([[True, True], [False, False]])
    assert metrics.rmse(estimate, target, mask) == pytest.approx(np.sqrt(9 / 6))


def test_si_rmse_ignores_a_global_scale_and_finds_the_optimal_one(rng):
    target = rng.uniform(0.1, 2.0, size=(8, 8, 3))
    assert metrics.si_rmse(7.5 * target, target) == pytest.approx(0.0, abs=1e-12)
    assert metrics.optimal_scale(7.5 * target, target) == pytest.approx(1 / 7.5)
    noisy = target + rng.normal(0, 0.1, size=target.shape)
    # The closed form is the minimum: nudging the scale either way does worse.
    s = metrics.optimal_scale(noisy, target)
    best = metrics.rmse(s * noisy, target)
    assert metrics.si_rmse(noisy, target) == pytest.approx(best)
    assert best < metrics.rmse(1.01 * s * noisy, target) and best < metrics.rmse(0.99 * s * noisy, target)
    assert metrics.si_rmse(3.0 * noisy, target) == pytest.approx(best)


def test_relative_si_rmse_is_the_si_rmse_over_the_rms_of_the_target():
    target = np.ones((1, 2, 3))
    estimate = np.array([[[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]])
    # Optimal scale Σe·t / Σe² = 3 / 3 = 1; squared errors 0 and 1 on 3 + 3 values; RMS(target) 1.
    assert metrics.si_rmse(estimate, target) == pytest.approx(np.sqrt(0.5))
    assert metrics.relative_si_rmse(estimate, target) == pytest.approx(np.sqrt(0.5))
    # Unitless: a map 10× brighter with an estimate in other units scores the same …
    assert metrics.relative_si_rmse(3.0 * estimate, 10.0 * target) == pytest.approx(np.sqrt(0.5))
    # … and black is the worst an estimate can do after its optimal scale.
    assert metrics.relative_si_rmse(np.zeros_like(target), target) == pytest.approx(1.0)


def test_log_luminance_rmse_ignores_colour_and_scale(rng):
    target = rng.uniform(0.5, 50.0, size=(3, 4, 8))
    luminance = np.tensordot(LUMINANCE_WEIGHTS, target, 1)
    green = np.zeros_like(target)
    green[1] = luminance / LUMINANCE_WEIGHTS[1]  # another colour, the same luminance
    assert metrics.log_luminance_rmse(5.0 * green, target, channel_axis=0) == pytest.approx(0.0, abs=1e-9)
    brighter = target.copy()
    brighter[:, :, :4] *= 2.0  # half the pixels ln 2 brighter: RMSE ln(2)/2 once the offset is removed
    assert metrics.log_luminance_rmse(brighter, target, channel_axis=0) == pytest.approx(
        np.log(2) / 2, rel=1e-2
    )


def test_tonemap_puts_the_truths_99th_percentile_at_0_99_after_gamma_2_4():
    truth = np.full((10, 20, 3), 4.0)
    truth[0, 0] = 1e4  # one sun pixel among 200: above the percentile, it saturates
    alpha = metrics.tonemap_exposure(truth)
    assert alpha == pytest.approx(0.99 / 4.0 ** (1 / 2.4))
    mapped = metrics.tonemap(truth, alpha)
    assert mapped[1, 1, 0] == pytest.approx(0.99) and mapped[0, 0, 0] == 1.0
    assert metrics.tonemap(np.array([1.0, 0.0, -1.0]), alpha) == pytest.approx([alpha, 0.0, 0.0])
    assert metrics.tonemap_exposure(np.zeros((2, 4, 3))) == 1.0


def test_angular_error_of_parallel_orthogonal_and_black_vectors():
    target = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]]])
    parallel = np.array([[[5.0, 0.0, 0.0], [0.0, 0.2, 0.0], [2.0, 2.0, 2.0]]])
    assert metrics.angular_error(parallel, target) == pytest.approx(0.0, abs=1e-6)
    orthogonal = np.array([[[0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, -1.0, 0.0]]])
    assert metrics.angular_error(orthogonal, target) == pytest.approx(90.0)
    one_black = np.array([[[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]]])
    assert metrics.angular_error(one_black, target) == pytest.approx(30.0)  # (90 + 0 + 0) / 3
    assert metrics.angular_error(np.zeros((1, 1, 3)), np.zeros((1, 1, 3))) == 0.0


def test_nrmse_is_relative_to_the_target_and_black_scores_one(rng):
    target = rng.uniform(0.5, 1.0, size=(4, 4, 3))
    assert metrics.nrmse(np.zeros_like(target), target) == pytest.approx(1.0)
    assert metrics.nrmse(1.1 * target, target) == pytest.approx(0.1)
    assert metrics.nrmse(10 * 1.1 * target, 10 * target) == pytest.approx(0.1)


def test_metrics_read_refmaps_channels_first(rng):
    refmap = rng.uniform(size=(3, 4, 4))
    other = rng.uniform(size=(3, 4, 4))
    mask = rng.uniform(size=(4, 4)) > 0.3
    channels_last = metrics.si_rmse(other.transpose(1, 2, 0), refmap.transpose(1, 2, 0), mask)
    assert metrics.si_rmse(other, refmap, mask, channel_axis=0) == pytest.approx(channels_last)


def test_log_rmse_is_scale_aligned_and_measures_relative_error(rng):
    target = rng.uniform(0.5, 50.0, size=(4, 8, 3))
    assert metrics.log_rmse(1e3 * target, target) == pytest.approx(0.0, abs=1e-9)
    # Half the pixels twice as bright: ln 2 apart, offset removed → RMSE ln(2)/2 (up to the floor).
    brighter = target.copy()
    brighter[:, :4] *= 2.0
    assert metrics.log_rmse(brighter, target) == pytest.approx(np.log(2) / 2, rel=1e-2)
    assert metrics.log_rmse(5 * brighter, target) == pytest.approx(metrics.log_rmse(brighter, target))


def test_envmap_log_rmse_weighs_pixels_by_solid_angle():
    target = np.ones((4, 8, 3))
    polar = target.copy()
    polar[0] *= 4.0  # an error in the small polar row …
    equator = target.copy()
    equator[1] *= 4.0  # … counts less than the same error in the larger row next to the equator
    assert 0 < metrics.envmap_log_rmse(polar, target) < metrics.envmap_log_rmse(equator, target)
    valid = np.ones((4, 8), bool)
    valid[0] = False
    assert metrics.envmap_log_rmse(polar, target, valid) == pytest.approx(0.0, abs=1e-12)


def test_material_error_is_the_mean_absolute_difference():
    z = np.array([1.0, 0.5, 0.5, 0.5, 0.2, 0.5])
    assert metrics.material_error(z, z) == 0.0
    assert metrics.material_error(z, z + np.array([0.6, 0, 0, 0, 0, 0])) == pytest.approx(0.1)


def test_spread_and_calibration_of_stochastic_samples(rng):
    target = rng.uniform(1.0, 2.0, size=(3, 16, 16))
    identical = np.stack([2.0 * target] * 4)
    assert metrics.sample_spread(identical, channel_axis=0) == pytest.approx(0.0, abs=1e-12)
    # Samples that scatter around the truth by ~10 % (log-normal) cover it within ±2 std ~95 %.
    scattered = target[None] * np.exp(rng.normal(0.0, 0.1, size=(64, *target.shape)))
    assert metrics.sample_spread(scattered, channel_axis=0) == pytest.approx(0.1, rel=0.15)
    assert metrics.calibration(scattered, target, channel_axis=0) > 0.9
    # An overconfident estimate (tiny spread around a wrong answer) rarely covers the truth, even
    # after scale alignment.
    wrong = (target * rng.uniform(0.5, 1.5, size=target.shape))[None] * np.exp(
        rng.normal(0.0, 0.001, size=(8, *target.shape))
    )
    assert metrics.calibration(wrong, target, channel_axis=0) < 0.1


def test_empty_mask_and_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="empty"):
        metrics.rmse(np.ones((2, 2, 3)), np.ones((2, 2, 3)), np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="shape"):
        metrics.rmse(np.ones((2, 2, 3)), np.ones((2, 3, 3)))
