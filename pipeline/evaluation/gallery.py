"""The report's images of one test sample: PNG previews of the observation, the envmaps, the
materials, the protocol spheres and a relit object, and ``gallery.json`` describing them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fileio.atomic import atomic_write_bytes
from pipeline import metrics
from pipeline.estimate import Estimation, material_sphere, refmap_image
from pipeline.evaluation.test_sets import TestSample
from pipeline.settings import EvaluateSettings


def write_gallery(
    directory: Path,
    sample: TestSample,
    estimation: Estimation,
    truth: dict[str, Any],
    sphere_renders: dict[str, dict[str, np.ndarray]],
    rows: list[dict[str, Any]],
    settings: EvaluateSettings,
) -> Path:
    """The report's images of one sample (PNG previews) and ``gallery.json`` describing them.

    Estimates are shown at the ground truth's exposure after the optimal scale alignment (the
    estimate is defined up to scale), so brightness differences that remain are real."""
    from rendering.hdrio import preview_exposure, tonemap, write_png
    from rendering.objects import render_object
    from rendering.relight import preview_rgba
    from rendering.shapes import make_shape
    from rendering.spheres import SPHERES, sphere_mask

    directory.mkdir(parents=True, exist_ok=True)
    groups: list[dict[str, Any]] = []

    def save(name: str, pixels: np.ndarray, caption: str, group: list) -> None:
        write_png(directory / name, pixels)
        group.append({"file": name, "caption": caption})

    def aligned(estimate: np.ndarray, target: np.ndarray, mask=None) -> np.ndarray:
        return estimate * metrics.optimal_scale(estimate, target, mask)

    inputs: list = []
    shown = sample.image * sample.mask[..., None]
    save("input.png", tonemap(shown), "input image", inputs)
    observed = refmap_image(estimation.observed)
    refmap_exposure = preview_exposure(observed[estimation.observed_mask][None])
    save("observed.png", tonemap(observed, refmap_exposure), "observed refmap", inputs)
    save(
        "completed.png",
        tonemap(refmap_image(estimation.completed[0]), refmap_exposure),
        "completed (sample 0)",
        inputs,
    )
    mirror_gt = refmap_image(truth["mirror"])
    mirror_exposure = preview_exposure(mirror_gt)
    save("mirror_gt.png", tonemap(mirror_gt, mirror_exposure), "mirror refmap, truth", inputs)
    save(
        "mirror_sample0.png",
        tonemap(aligned(refmap_image(estimation.mirrors[0]), mirror_gt), mirror_exposure),
        "mirror refmap, sample 0",
        inputs,
    )
    groups.append({"title": "Observation", "images": inputs})

    envs: list = []
    gt_env = truth["envmap"]
    env_exposure = preview_exposure(gt_env)
    valid = estimation.valid
    save("envmap_gt.png", tonemap(gt_env, env_exposure), "envmap, truth", envs)
    for i, envmap in enumerate(estimation.envmaps[:4]):
        save(
            f"envmap_sample{i}.png",
            tonemap(aligned(envmap, gt_env, valid), env_exposure),
            f"sample {i}",
            envs,
        )
    scale = metrics.optimal_scale(estimation.envmap_mean, gt_env, valid)
    save("envmap_mean.png", tonemap(scale * estimation.envmap_mean, env_exposure), "mean", envs)
    save("envmap_std.png", tonemap(scale * estimation.envmap_std, env_exposure), "std (same exposure)", envs)
    groups.append({"title": "Environment map (camera frame; scale-aligned to the truth)", "images": envs})

    materials: list = []
    gt_sphere = material_sphere(
        sample.envmap, sample.z, settings.estimate.sphere_res, settings.estimate.sphere_spp
    )
    material_exposure = preview_exposure(gt_sphere)
    save("material_gt.png", tonemap(gt_sphere, material_exposure), f"truth z={_z(sample.z)}", materials)
    for i, (envmap, z) in enumerate(zip(estimation.envmaps[:4], estimation.materials[:4], strict=True)):
        sphere = material_sphere(envmap, z, settings.estimate.sphere_res, settings.estimate.sphere_spp)
        save(
            f"material_sample{i}.png",
            tonemap(aligned(sphere, gt_sphere), material_exposure),
            f"z={_z(z)}",
            materials,
        )
    groups.append({"title": "Material (sphere under its own envmap)", "images": materials})

    mask = sphere_mask(settings.estimate.sphere_res)

    def display(sphere: np.ndarray) -> np.ndarray:
        # Rendered under a tone-mapped envmap: already display values in [0, 1].
        return (np.clip(sphere * mask[..., None], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

    for name in SPHERES:
        images: list = []
        save(f"sphere_{name}_gt.png", display(truth["spheres"][name]), "truth", images)
        for method, renders in sphere_renders.items():
            caption = f"{method} (sample 0)" if method == "drmnet" else method
            save(f"sphere_{name}_{method}.png", display(renders[name]), caption, images)
        title = f"{name.replace('_', ' ')} sphere (tone-mapped envmaps, as the protocol scores them)"
        groups.append({"title": title, "images": images})

    relit: list = []
    shape = make_shape(*sample.shape)
    material = np.asarray(settings.relight_material, np.float32)
    under_truth = render_object(
        sample.envmap, shape, material, settings.relight_res, settings.relight_spp, settings.estimate.seed
    )
    under_estimate = render_object(
        estimation.envmap_mean,
        shape,
        material,
        settings.relight_res,
        settings.relight_spp,
        settings.estimate.seed,
    )
    exposure = preview_exposure(under_truth.image[under_truth.mask][None]) if under_truth.mask.any() else None
    scale = metrics.optimal_scale(under_estimate.image, under_truth.image, under_truth.mask)
    save("relight_gt.png", preview_rgba(under_truth, exposure), "new material, true light", relit)
    under_estimate = type(under_estimate)(
        under_estimate.image * scale, under_estimate.normals, under_estimate.mask
    )
    save("relight_drmnet.png", preview_rgba(under_estimate, exposure), "new material, estimated light", relit)
    groups.append({"title": f"Relighting: {sample.shape[0]} with z={_z(material)}", "images": relit})

    by_method = {row["method"]: row for row in rows}
    text = [
        f"material: {sample.material_source}; envmap {sample.info.get('envmap_id', '?')} "
        f"({sample.info.get('envmap_kind', '?')}); "
        f"view azimuth {np.degrees(sample.info.get('view_azimuth', 0.0)):.0f}°; "
        f"observed {estimation.observed_mask.mean():.0%} of the refmap; "
        f"DRM steps {estimation.steps.tolist()}",
        "mirror-sphere relative si-RMSE (tone-mapped): "
        + ", ".join(f"{m} {r['mirror_rel_si_rmse']:.3f}" for m, r in by_method.items()),
    ]
    gallery = {"key": sample.key, "test_set": sample.test_set, "text": text, "groups": groups}
    atomic_write_bytes(directory / "gallery.json", (json.dumps(gallery, indent=2) + "\n").encode())
    return directory


def _z(z: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in np.asarray(z).ravel()) + "]"
