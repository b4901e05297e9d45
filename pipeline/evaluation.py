"""Evaluating an estimator on test samples (DESIGN.md §6): every metric, every method, per sample.

For each test sample the estimator runs on the object image exactly as ``drmnet estimate`` does
(image → observed refmap → ObsNet → DRMNet, N samples). Everything is compared in the camera
frame: the ground-truth envmap is turned by −view_azimuth (:func:`rendering.envmap.rotate_envmap`),
which is the envmap the object's camera saw.

Methods (rows of the tables):

- ``drmnet``: each metric averaged over the N stochastic samples (what one draw gives);
- ``drmnet_mean``: the per-pixel mean of the N envmaps (and the mean material);
- ``observed_mirror`` (baseline): the observed refmap read as if it were a mirror refmap, its
  holes filled with its mean colour; its material is the mirror z0;
- ``completed_mirror`` (baseline): ObsNet's completion (the mean of the N completions the DRM
  runs started from) read as a mirror refmap; equal to ``observed_mirror`` when every normal
  was observed; material z0;
- ``constant_mean`` (baseline): a constant envmap of the observed refmap's mean colour; its
  material is the prior's mean (0.5 everywhere);
- ``oracle``: the true mirror refmap through the same mirror → envmap conversion, with the true
  material: the floor that the refmap resolution and the conversion leave to every method.

Metrics (columns; lower is better unless said):

- three-sphere protocol (:mod:`rendering.spheres`, the sphere's mask) on TONE-MAPPED envmaps
  (:func:`pipeline.metrics.tonemap`: StyleLight's operator, γ = 2.4, the ground truth's 99th
  percentile → 0.99, the estimate scale-aligned to the ground truth over its valid region first):
  ``<sphere>_rmse``, ``<sphere>_si_rmse``, ``<sphere>_nrmse``, ``<sphere>_rel_si_rmse``
  (si-RMSE / RMS(gt)) and ``<sphere>_angular`` (degrees) for the mirror, matte-silver and
  diffuse spheres;
- ``envmap_log_rmse``: scale-aligned, solid-angle weighted, over the valid (determined) region;
- ``refmap_si_rmse``, ``refmap_rel_si_rmse`` and ``refmap_log_lum_rmse``: the (linear) mirror
  refmap against the ground-truth mirror refmap: si-RMSE, si-RMSE / RMS(gt), and the RMSE of
  log luminance after the optimal offset;
- ``material_mae``: mean absolute error of z (measured materials: against their principled fit);
- ``rerender_nrmse``: the observed refmap re-rendered from the estimated envmap and material
  (``render_refmaps``), over the observed pixels;
- ``spread`` and ``calibration`` (``drmnet`` only): how much the N mirror refmaps disagree, and
  the fraction of ground-truth pixels within their mean ± 2 std (higher is better, ≈ 0.95 ideal).

Test sets: ``principled`` (shards of the test split whose material is a principled z) and
``measured`` (shards of measured materials when the dataset has them, else a small set rendered
here from the built-in measured-like BRDFs under the test envmaps, with held-out shapes).

Summary (:func:`summarize`): per group and method, each metric's mean and its median
(``<metric>_median``). Groups: each test set, then ``<test set>/<kind>`` for each kind of
envmap among its samples (the envmaps table's ``kind``: ``real``, ``sky``, ``studio``,
``room``, ``user``), so that real maps, the test that counts, are read apart.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np

from pipeline import metrics
from pipeline.estimate import Estimation, estimate_image, material_sphere, refmap_image
from pipeline.settings import Baseline, EstimateSettings, EvaluateSettings, TestSet
from pipeline.shards import atomic_write_bytes
from rendering.errors import InputError

METHODS = ("drmnet", "drmnet_mean", "observed_mirror", "completed_mirror", "constant_mean", "oracle")
BASELINES = get_args(Baseline)  # ("observed_mirror", "completed_mirror", "constant_mean", "oracle")
TEST_SETS = get_args(TestSet)  # ("principled", "measured")
KINDS = ("real", "sky", "studio", "room", "user")  # envmap kinds, in the order the summary lists them
ID_COLUMNS = ("test_set", "key", "method", "envmap_id", "envmap_kind")  # the rows' non-metric columns
PRIOR_MEAN_MATERIAL = np.full(6, 0.5, dtype=np.float32)  # the mean of z ~ U[0, 1]^6


@dataclass
class TestSample:
    """One test observation with its ground truth, in the camera frame."""

    test_set: str
    key: str
    image: np.ndarray  # (H, W, 3) linear HDR
    normals: np.ndarray  # (H, W, 3) camera frame
    mask: np.ndarray  # (H, W) bool
    envmap: np.ndarray  # (He, 2He, 3) ground truth, already turned by −view_azimuth
    z: np.ndarray  # (6,) ground-truth material (measured: its principled fit)
    material_source: str = "uniform"  # "uniform" (principled z) or the measured BRDF's name
    shape: tuple[str, int] = ("sphere", 0)  # (built-in shape, seed): the object, for relighting
    info: dict[str, Any] = field(default_factory=dict)  # provenance (envmap id, view azimuth, …)


# -- test sets -----------------------------------------------------------------------------------


def shard_test_samples(
    settings: EvaluateSettings, params: dict[str, Any] | None = None
) -> Iterator[TestSample]:
    """The test split's shard samples in key order (deterministic, no shuffling), with their
    ground-truth envmaps. ``params`` (the whole params.yaml) lets the object's shape be recovered
    for relighting from the sample's plan; without it the relit object is a sphere."""
    from pipeline.reader import list_shards
    from pipeline.samples import EVAL_SPLIT
    from pipeline.shards import read_shard
    from pipeline.splits import split_envmap_path
    from rendering.envmap import read_envmap, rotate_envmap

    split_dir = Path(settings.shards) / settings.dataset / EVAL_SPLIT
    shape_of = _shape_lookup(settings, params)
    kinds = envmap_kinds(settings.envmaps, EVAL_SPLIT)
    envmaps: dict[str, np.ndarray] = {}
    for shard in list_shards(split_dir):
        for key, sample in read_shard(shard):
            missing = {"image", "normals", "mask", "envmap_id", "z_obs", "view_azimuth"} - set(sample)
            if missing:
                raise InputError(
                    shard, f"test sample {key} lacks {sorted(missing)}; re-render the test split"
                )
            envmap_id = str(sample["envmap_id"])
            if envmap_id not in envmaps:
                envmaps[envmap_id] = read_envmap(split_envmap_path(settings.envmaps, EVAL_SPLIT, envmap_id))
            azimuth = float(sample["view_azimuth"])
            source = str(sample.get("material_source", "uniform"))
            yield TestSample(
                test_set="principled" if source == "uniform" else "measured",
                key=key,
                image=np.asarray(sample["image"], np.float32),
                normals=np.asarray(sample["normals"], np.float32),
                mask=np.asarray(sample["mask"]).astype(bool),
                envmap=rotate_envmap(envmaps[envmap_id], -azimuth),
                z=np.asarray(sample["z_obs"], np.float32),
                material_source=source,
                shape=shape_of(key, sample),
                info={
                    "envmap_id": envmap_id,
                    "envmap_kind": kinds.get(envmap_id, envmap_kind(envmap_id)),
                    "view_azimuth": azimuth,
                    "shard": Path(shard).name,
                },
            )


def envmap_kind(envmap_id: str) -> str:
    """The kind of an envmap from its id alone (``<kind>-<seed>-<index>``, ``real-<name>``,
    ``user-<stem>``), for tables that lack a ``kind`` column."""
    prefix = str(envmap_id).split("-", 1)[0]
    return prefix if prefix in KINDS else "user"


def envmap_kinds(envmap_dir: str | os.PathLike, split: str) -> dict[str, str]:
    """{envmap id: kind} of a split, from its envmaps table (``id``, ``kind``); {} without one."""
    from pipeline.splits import read_envmap_table

    try:
        table = read_envmap_table(envmap_dir, split)
    except InputError:
        return {}
    ids = table.column("id").to_pylist()
    if "kind" not in table.column_names:
        return {i: envmap_kind(i) for i in ids}
    return dict(zip(ids, table.column("kind").to_pylist(), strict=True))


def _shape_lookup(settings: EvaluateSettings, params: dict[str, Any] | None):
    """key, sample → (shape, seed) of the object in the image, from the sample's plan (which is a
    pure function of the params and the index); checked against the sample, else the sphere."""
    if params is None:
        return lambda key, sample: ("sphere", 0)
    from pipeline.samples import EVAL_SPLIT, plan_sample, settings_from_params
    from pipeline.splits import split_envmap_ids

    dataset_settings = settings_from_params(params)
    envmap_ids = split_envmap_ids(settings.envmaps, EVAL_SPLIT)

    def lookup(key: str, sample: dict[str, Any]) -> tuple[str, int]:
        try:
            index = int(key.rsplit("-", 1)[1])
            plan = plan_sample(dataset_settings, settings.dataset, EVAL_SPLIT, index, envmap_ids)
        except (ValueError, IndexError, InputError):
            return ("sphere", 0)
        if plan.envmap_id != sample["envmap_id"] or not np.allclose(plan.z_obs, sample["z_obs"]):
            return ("sphere", 0)
        return (plan.shape, plan.shape_seed)

    return lookup


def rendered_measured_samples(
    settings: EvaluateSettings, count: int, params: dict[str, Any] | None = None
) -> list[TestSample]:
    """A small measured-material test set rendered here: the first ``measured_materials`` built-in
    measured-like BRDFs (MERL tables of non-principled models) under the test envmaps, at seeded
    view azimuths. With ``params`` the objects are the test split's shape pool (never seen in
    training, pipeline.samples.shape_pools) and the fits are cached in ``materials.cache_dir``;
    without, seeded ``measured_shapes``. Ground-truth z is each BRDF's principled fit.
    Deterministic, and kept for the process (evaluating a champion again reuses it)."""
    return list(
        _render_measured(
            settings.envmaps, settings.estimate.seed, settings.measured_materials,
            _measured_shapes(settings, params), settings.object_res, settings.object_spp, count,
            (params or {}).get("materials", {}).get("cache_dir"),
        )
    )  # fmt: skip


def _measured_shapes(
    settings: EvaluateSettings, params: dict[str, Any] | None
) -> tuple[tuple[str, int], ...]:
    """(shape, seed) of the rendered measured set's objects: the test split's pool, else seeded
    ``measured_shapes``."""
    if params is not None:
        from pipeline.samples import EVAL_SPLIT, settings_from_params, shape_pools

        return tuple(
            (shape.name, shape.seed) for shape in shape_pools(settings_from_params(params))[EVAL_SPLIT]
        )
    rng = np.random.default_rng(np.random.SeedSequence(settings.estimate.seed, spawn_key=(8,)))
    return tuple((name, int(rng.integers(2**31))) for name in settings.measured_shapes)


@functools.lru_cache(maxsize=2)
def _render_measured(
    envmap_dir: str,
    seed: int,
    n_materials: int,
    shapes: tuple[tuple[str, int], ...],
    res: int,
    spp: int,
    count: int,
    fit_cache_dir: str | None,
) -> tuple[TestSample, ...]:
    from pipeline.samples import EVAL_SPLIT
    from pipeline.splits import split_envmap_ids, split_envmap_path
    from rendering.builtin_materials import builtin_materials
    from rendering.envmap import read_envmap, rotate_envmap
    from rendering.measured_bsdf import measured_bsdf
    from rendering.objects import render_object
    from rendering.principled_fit import fit_principled
    from rendering.shapes import make_shape

    envmap_ids = split_envmap_ids(envmap_dir, EVAL_SPLIT)
    kinds = envmap_kinds(envmap_dir, EVAL_SPLIT)
    materials = list(builtin_materials(n_materials).items())
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7,)))
    samples = []
    for index in range(count):
        name, brdf = materials[index % len(materials)]
        envmap_id = envmap_ids[index % len(envmap_ids)]
        shape = shapes[index % len(shapes)]
        azimuth = float(rng.uniform(-np.pi, np.pi))
        z = fit_principled(brdf, cache_dir=fit_cache_dir)
        envmap = read_envmap(split_envmap_path(envmap_dir, EVAL_SPLIT, envmap_id))
        obj = render_object(
            envmap, make_shape(*shape), measured_bsdf(brdf, z), res=res, spp=spp,
            seed=int(rng.integers(2**31)), view_azimuth=azimuth,
        )  # fmt: skip
        samples.append(
            TestSample(
                test_set="measured",
                key=f"measured-{index:04d}-{name}",
                image=obj.image,
                normals=obj.normals,
                mask=obj.mask,
                envmap=rotate_envmap(envmap, -azimuth),
                z=np.asarray(z, np.float32),
                material_source=name,
                shape=shape,
                info={
                    "envmap_id": envmap_id,
                    "envmap_kind": kinds.get(envmap_id, envmap_kind(envmap_id)),
                    "view_azimuth": azimuth,
                    "rendered_here": True,
                },
            )
        )
    return tuple(samples)


def load_test_sets(
    settings: EvaluateSettings, params: dict[str, Any] | None = None
) -> dict[str, list[TestSample]]:
    """{test set: samples}, at most ``settings.items`` each (0: all); see the module docstring."""
    limit = settings.items or None
    sets: dict[str, list[TestSample]] = {name: [] for name in settings.test_sets}
    for sample in shard_test_samples(settings, params):
        bucket = sets.get(sample.test_set)
        if bucket is not None and (limit is None or len(bucket) < limit):
            bucket.append(sample)
        if all(limit is not None and len(b) >= limit for b in sets.values()):
            break
    if "measured" in sets and not sets["measured"]:
        sets["measured"] = rendered_measured_samples(settings, limit or settings.measured_materials, params)
    for name, samples in sets.items():
        if not samples:
            raise InputError(f"{settings.shards}/{settings.dataset}/test", f"holds no {name} test samples")
    return sets


# -- one sample ----------------------------------------------------------------------------------


@dataclass
class MethodOutput:
    """What a method estimated for one test sample (camera frame, the observation's units)."""

    envmaps: np.ndarray  # (K, H, 2H, 3); K = N for drmnet, 1 otherwise
    mirrors: np.ndarray  # (K, 3, R, R)
    materials: np.ndarray  # (K, 6)


def mirror_output(mirror: np.ndarray, height: int, material: np.ndarray) -> MethodOutput:
    """A method whose answer is the mirror refmap (3, R, R) itself: its envmap is the mirror →
    envmap conversion every method's envmap goes through."""
    from rendering.refmap import mirror_to_envmap

    mirror = np.asarray(mirror, np.float32)
    envmap, _ = mirror_to_envmap(mirror, height)
    return MethodOutput(envmap[None], mirror[None], np.asarray(material, np.float32)[None])


def baseline_outputs(
    estimation: Estimation,
    height: int,
    truth_mirror: np.ndarray | None = None,
    truth_z: np.ndarray | None = None,
) -> dict[str, MethodOutput]:
    """The baselines, computed from the observed refmap (and ObsNet's completions) alone, and,
    given the true mirror refmap and material, the oracle."""
    from rendering.principled import MIRROR
    from rendering.refmap import envmap_to_mirror

    observed, seen = estimation.observed, estimation.observed_mask
    mean_colour = observed[:, seen].mean(axis=1)  # (3,)
    filled = np.where(seen[None], observed, mean_colour[:, None, None]).astype(np.float32)
    constant = np.broadcast_to(mean_colour, (height, 2 * height, 3)).astype(np.float32)
    res = observed.shape[1]
    outputs = {
        "observed_mirror": mirror_output(filled, height, MIRROR),
        "completed_mirror": mirror_output(estimation.completed.mean(axis=0), height, MIRROR),
        "constant_mean": MethodOutput(
            constant[None], envmap_to_mirror(constant, res)[None], PRIOR_MEAN_MATERIAL[None]
        ),
    }
    if truth_mirror is not None and truth_z is not None:
        outputs["oracle"] = mirror_output(truth_mirror, height, np.asarray(truth_z, np.float32))
    return outputs


def method_outputs(
    estimation: Estimation, baselines: tuple[str, ...], truth: dict[str, Any] | None = None
) -> dict[str, MethodOutput]:
    """Every method's answer for one sample, in :data:`METHODS` order (the chosen baselines only;
    the oracle needs ``truth``'s ``mirror`` and ``z``)."""
    outputs = {
        "drmnet": MethodOutput(estimation.envmaps, estimation.mirrors, estimation.materials),
        "drmnet_mean": MethodOutput(
            estimation.envmap_mean[None],
            estimation.mirrors.mean(axis=0)[None],
            estimation.materials.mean(axis=0)[None],
        ),
    }
    truth = truth or {}
    all_baselines = baseline_outputs(
        estimation, estimation.envmaps.shape[1], truth.get("mirror"), truth.get("z")
    )
    outputs.update({name: all_baselines[name] for name in baselines if name in all_baselines})
    return outputs


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
            envmap, z[None], res=mirror.shape[1], spp=settings.rerender_spp, seed=settings.estimate.seed
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


# -- gallery -------------------------------------------------------------------------------------


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


# -- summaries and files -------------------------------------------------------------------------


def summary_groups(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The rows of each summary group: every test set, then ``<test set>/<kind>`` per envmap
    kind among its rows (:data:`KINDS` order, then any other)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for test_set in dict.fromkeys(row["test_set"] for row in rows):
        selected = [r for r in rows if r["test_set"] == test_set]
        out[test_set] = selected
        present = dict.fromkeys(r.get("envmap_kind", "user") for r in selected)
        for kind in sorted(present, key=lambda k: (KINDS.index(k) if k in KINDS else len(KINDS), k)):
            out[f"{test_set}/{kind}"] = [r for r in selected if r.get("envmap_kind", "user") == kind]
    return out


def group_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """{group: number of test samples} of :func:`summary_groups`."""
    return {name: len({r["key"] for r in selected}) for name, selected in summary_groups(rows).items()}


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per-sample rows → ``{group: {method: {metric: mean, <metric>_median: median}}}`` over
    the group's samples (groups of :func:`summary_groups`, methods in :data:`METHODS` order)."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for group, selected_rows in summary_groups(rows).items():
        summary[group] = {}
        for method in METHODS:
            selected = [r for r in selected_rows if r["method"] == method]
            if not selected:
                continue
            values: dict[str, float] = {}
            for name in (k for k in selected[0] if k not in ID_COLUMNS):
                column = [r[name] for r in selected]
                values[name] = float(np.mean(column))
                values[f"{name}_median"] = float(np.median(column))
            summary[group][method] = values
    return summary


def primary_group(summary: dict[str, Any], settings: EvaluateSettings) -> str:
    """The group whose ``drmnet`` value decides the champion: ``primary_test_set`` when the
    summary has it (e.g. ``principled/real``), else its test set (``principled``), else the first."""
    wanted = settings.primary_test_set
    for group in (wanted, wanted.split("/", 1)[0]):
        if group in summary:
            return group
    return next(iter(summary))


def primary_value(summary: dict[str, Any], settings: EvaluateSettings) -> float:
    """The number that decides the champion: ``primary_metric`` of ``drmnet`` on the primary group."""
    return float(summary[primary_group(summary, settings)]["drmnet"][settings.primary_metric])


def per_sample_csv(rows: list[dict[str, Any]]) -> bytes:
    """The rows as CSV (one line per test sample and method; the DVC plots file)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue().encode()


def write_results(rows: list[dict[str, Any]], out_dir: str | os.PathLike) -> dict[str, Path]:
    """``metrics.json`` (means) and ``per_sample.csv`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    summary = summarize(rows)
    return {
        "metrics": atomic_write_bytes(out / "metrics.json", (json.dumps(summary, indent=2) + "\n").encode()),
        "per_sample": atomic_write_bytes(out / "per_sample.csv", per_sample_csv(rows)),
    }


def settings_record(settings: EvaluateSettings, with_models: bool = True) -> dict[str, Any]:
    """The settings as plain JSON data (for provenance); ``with_models=False`` leaves out which
    models are evaluated, leaving what makes two evaluations' numbers comparable."""
    record: dict[str, Any] = {}
    for key, value in json.loads(json.dumps(asdict(settings))).items():
        if key != "estimate":
            record[key] = value
            continue
        # The section's flat keys, in place; erode only when set (it was not an evaluate key before,
        # so records of earlier evaluations stay comparable).
        default_erode = EstimateSettings().erode
        record.update({k: v for k, v in value.items() if k != "erode" or v != default_erode})
    if not with_models:
        record.pop("model")
        record.pop("obsnet")
    return record
