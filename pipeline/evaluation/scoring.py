"""Scoring test samples: run the estimator on each image, render the protocol spheres under the
tone-mapped truth and each method's envmap, and turn them into one row of metrics per method;
a status line with the samples done and the ETA while a test set is scored."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from pipeline import metrics
from pipeline.estimate import Estimation, estimate_image
from pipeline.evaluation.gallery import write_gallery
from pipeline.evaluation.methods import MethodOutput, method_outputs
from pipeline.evaluation.test_sets import TestSample, envmap_kind
from pipeline.settings import EvaluateSettings
from pipeline.status import StatusLine


def tonemapped_truth(envmap: np.ndarray, height: int, settings: EvaluateSettings) -> dict[str, Any]:
    """What the three-sphere protocol compares against: the ground-truth envmap (camera frame) at
    the estimates' ``height``, the tone-mapping exposure α it fixes, and the protocol spheres
    rendered under the tone-mapped ground truth."""
    from rendering.envmap import resample_envmap
    from rendering.spheres import render_spheres

    exposure = metrics.tonemap_exposure(envmap)
    return {
        "envmap": resample_envmap(envmap, height),
        "exposure": exposure,
        "spheres": render_spheres(
            metrics.tonemap(envmap, exposure),
            settings.estimate.sphere_res,
            settings.estimate.sphere_spp,
            settings.estimate.seed,
        ),
    }


def tonemapped_estimate(
    envmap: np.ndarray, truth: dict[str, Any], valid: np.ndarray | None = None
) -> np.ndarray:
    """An estimated envmap (H, 2H, 3) as the protocol renders it: scale-aligned to the ground
    truth over ``valid`` (solid-angle weighted), then tone-mapped with the ground truth's α."""
    from rendering.envmap import pixel_solid_angles

    weights = pixel_solid_angles(envmap.shape[0])[:, None]
    scale = metrics.optimal_scale(envmap, truth["envmap"], valid, weights=weights)
    return metrics.tonemap(scale * envmap, truth["exposure"])


def _scores(
    output: MethodOutput,
    truth: dict[str, Any],
    estimation: Estimation,
    settings: EvaluateSettings,
) -> tuple[dict[str, float], list[dict[str, np.ndarray]]]:
    """Metrics of one method (averaged over its K envmaps) and its sphere renders (under the
    tone-mapped envmaps) per envmap."""
    from rendering.envmap import pixel_solid_angles
    from rendering.refmap import render_refmaps
    from rendering.spheres import SPHERES, render_spheres, sphere_mask

    mask = sphere_mask(settings.estimate.sphere_res)
    weights = pixel_solid_angles(output.envmaps.shape[1])[:, None]
    per_envmap, renders = [], []
    for envmap, mirror, z in zip(output.envmaps, output.mirrors, output.materials, strict=True):
        scores: dict[str, float] = {}
        shown = tonemapped_estimate(envmap, truth, estimation.valid)
        spheres = render_spheres(
            shown, settings.estimate.sphere_res, settings.estimate.sphere_spp, settings.estimate.seed
        )
        renders.append(spheres)
        for name in SPHERES:
            est, gt = spheres[name], truth["spheres"][name]
            scores[f"{name}_rmse"] = metrics.rmse(est, gt, mask)
            scores[f"{name}_si_rmse"] = metrics.si_rmse(est, gt, mask)
            scores[f"{name}_nrmse"] = metrics.nrmse(est, gt, mask)
            scores[f"{name}_rel_si_rmse"] = metrics.relative_si_rmse(est, gt, mask)
            scores[f"{name}_angular"] = metrics.angular_error(est, gt, mask)
        scores["envmap_log_rmse"] = metrics.log_rmse(
            envmap, truth["envmap"], estimation.valid, weights=weights
        )
        scores["refmap_si_rmse"] = metrics.si_rmse(mirror, truth["mirror"], channel_axis=0)
        scores["refmap_rel_si_rmse"] = metrics.relative_si_rmse(mirror, truth["mirror"], channel_axis=0)
        scores["refmap_log_lum_rmse"] = metrics.log_luminance_rmse(mirror, truth["mirror"], channel_axis=0)
        scores["material_mae"] = metrics.material_error(z, truth["z"])
        rerendered = render_refmaps(
            envmap,
            z[None],
            refmap_res=mirror.shape[1],
            spp=settings.rerender_spp,
            seed=settings.estimate.seed,
        )
        scores["rerender_nrmse"] = metrics.nrmse(
            rerendered[0], estimation.observed, estimation.observed_mask, channel_axis=0
        )
        per_envmap.append(scores)
    return {k: float(np.mean([s[k] for s in per_envmap])) for k in per_envmap[0]}, renders


def evaluate_sample(
    estimator, sample: TestSample, settings: EvaluateSettings, gallery_dir: str | os.PathLike | None = None
) -> list[dict[str, Any]]:
    """Estimate from ``sample`` and score every method; one row (dict) per method:
    ``{"test_set", "key", "method", <metric>: value, …}``. With ``gallery_dir``, also write the
    images the report shows for this sample there (see :func:`write_gallery`)."""
    from rendering.refmap import envmap_to_mirror

    estimation = estimate_image(
        estimator,
        sample.image,
        sample.normals,
        sample.mask,
        settings.estimate,
        sources=(f"{sample.key} image", f"{sample.key} normals", f"{sample.key} mask"),
    )
    height = estimation.envmaps.shape[1]
    truth = {
        **tonemapped_truth(sample.envmap, height, settings),
        "mirror": envmap_to_mirror(sample.envmap, estimation.observed.shape[1]),
        "z": sample.z,
    }
    source = {
        "envmap_id": str(sample.info.get("envmap_id", "?")),
        "envmap_kind": str(sample.info.get("envmap_kind", envmap_kind(sample.info.get("envmap_id", "")))),
    }
    rows, sphere_renders = [], {}
    for method, output in method_outputs(estimation, settings.baselines, truth).items():
        scores, renders = _scores(output, truth, estimation, settings)
        sphere_renders[method] = renders[0]
        if method == "drmnet":
            scores["spread"] = metrics.sample_spread(estimation.mirrors, channel_axis=0)
            scores["calibration"] = metrics.calibration(estimation.mirrors, truth["mirror"], channel_axis=0)
        rows.append({"test_set": sample.test_set, "key": sample.key, "method": method, **source, **scores})
    if gallery_dir is not None:
        write_gallery(Path(gallery_dir), sample, estimation, truth, sphere_renders, rows, settings)
    return rows


def evaluate_test_set(
    estimator,
    samples: list[TestSample],
    settings: EvaluateSettings,
    gallery_dir: str | os.PathLike | None,
    stream: TextIO | None = None,
) -> list[dict[str, Any]]:
    """Rows of every sample of one test set; the first ``settings.gallery`` write their images.
    A status line (samples done, ETA) goes to ``stream`` (default: standard error)."""
    rows: list[dict[str, Any]] = []
    label = f"evaluate {samples[0].test_set}" if samples else "evaluate"
    status = StatusLine(label, len(samples), "samples", stream)
    status.update(0)
    for index, sample in enumerate(samples):
        directory = None
        if gallery_dir is not None and index < settings.gallery:
            directory = Path(gallery_dir) / sample.test_set / sample.key
        rows += evaluate_sample(estimator, sample, settings, directory)
        status.update(index + 1, sample.key)
    return rows
