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
- ``constant_mean`` (baseline): a constant envmap of the observed refmap's mean colour; its
  material is the prior's mean (0.5 everywhere).

Metrics (columns; lower is better unless said):

- three-sphere protocol (:mod:`rendering.spheres`, the sphere's mask): ``<sphere>_rmse``,
  ``<sphere>_si_rmse``, ``<sphere>_angular`` (degrees), ``<sphere>_nrmse`` for the mirror,
  matte-silver and diffuse spheres;
- ``envmap_log_rmse``: scale-aligned, solid-angle weighted, over the valid (determined) region;
- ``refmap_si_rmse``: the mirror refmap against the ground-truth mirror refmap;
- ``material_mae``: mean absolute error of z (measured materials: against their principled fit);
- ``rerender_nrmse``: the observed refmap re-rendered from the estimated envmap and material
  (``render_refmaps``), over the observed pixels;
- ``spread`` and ``calibration`` (``drmnet`` only): how much the N mirror refmaps disagree, and
  the fraction of ground-truth pixels within their mean ± 2 std (higher is better, ≈ 0.95 ideal).

Test sets: ``principled`` (shards of the test split whose material is a principled z) and
``measured`` (shards of measured materials when the dataset has them, else a small set rendered
here from the built-in measured-like BRDFs under the test envmaps, with held-out shapes).
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
from typing import Any

import numpy as np

from pipeline import metrics
from pipeline.estimate import EstimateSettings, Estimation, estimate_image, material_sphere, refmap_image
from pipeline.shards import atomic_write_bytes
from rendering.errors import InputError

METHODS = ("drmnet", "drmnet_mean", "observed_mirror", "constant_mean")
BASELINES = ("observed_mirror", "constant_mean")
TEST_SETS = ("principled", "measured")
PRIOR_MEAN_MATERIAL = np.full(6, 0.5, dtype=np.float32)  # the mean of z ~ U[0, 1]^6


@dataclass(frozen=True)
class EvaluateSettings:
    """The ``evaluate`` section of params.yaml."""

    model: str = "models:/drmnet@candidate"  # the DRMNet evaluated: URI or checkpoint directory
    obsnet: str | None = "models:/obsnet@candidate"  # ObsNet: URI, checkpoint directory or None
    dataset: str = "drmnet"  # shards under <shards>/<dataset>/test/
    shards: str = "data/shards"
    envmaps: str = "data/envmaps"
    test_sets: tuple[str, ...] = TEST_SETS
    items: int = 8  # test samples per test set (0: all)
    samples: int = 4  # N stochastic samples per test sample
    seed: int = 0
    max_steps: int | None = None  # DRM steps at most (None: the model's)
    ddim_steps: int | None = None  # ObsNet DDIM steps (None: the model's)
    envmap_height: int = 32  # height of the estimated envmaps (H, 2H)
    sphere_res: int = 64  # protocol spheres, pixels per side
    sphere_spp: int = 64
    rerender_spp: int = 64
    baselines: tuple[str, ...] = BASELINES
    primary_metric: str = "mirror_si_rmse"  # decides the champion: lower is better
    primary_test_set: str = "principled"
    gallery: int = 2  # samples per test set with images for the report
    relight_material: tuple[float, ...] = (1.0, 0.95, 0.64, 0.54, 0.25, 0.5)  # copper-ish, for the gallery
    relight_res: int = 64
    relight_spp: int = 32
    measured_materials: int = 3  # built-in measured BRDFs in the rendered measured test set
    measured_shapes: tuple[str, ...] = ("blob", "superquadric")
    object_res: int = 64  # object images of the rendered measured test set
    object_spp: int = 64

    @classmethod
    def from_params(cls, section: dict[str, Any] | None) -> EvaluateSettings:
        section = dict(section or {})
        unknown = set(section) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError("params.yaml", f"unknown keys in the evaluate section: {sorted(unknown)}")
        for key in ("test_sets", "baselines", "relight_material", "measured_shapes"):
            if key in section:
                section[key] = tuple(section[key])
        settings = cls(**section)
        bad = set(settings.baselines) - set(BASELINES) | set(settings.test_sets) - set(TEST_SETS)
        if bad:
            raise InputError("params.yaml", f"evaluate: unknown test sets or baselines {sorted(bad)}")
        return settings

    def estimate_settings(self) -> EstimateSettings:
        return EstimateSettings(
            samples=self.samples,
            seed=self.seed,
            max_steps=self.max_steps,
            ddim_steps=self.ddim_steps,
            envmap_height=self.envmap_height,
            sphere_res=self.sphere_res,
            sphere_spp=self.sphere_spp,
        )


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
                info={"envmap_id": envmap_id, "view_azimuth": azimuth, "shard": Path(shard).name},
            )


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
            settings.envmaps, settings.seed, settings.measured_materials,
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
    rng = np.random.default_rng(np.random.SeedSequence(settings.seed, spawn_key=(8,)))
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
                info={"envmap_id": envmap_id, "view_azimuth": azimuth, "rendered_here": True},
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


def baseline_outputs(estimation: Estimation, height: int) -> dict[str, MethodOutput]:
    """The two baselines, computed from the observed refmap alone."""
    from rendering.refmap import MIRROR, envmap_to_mirror, mirror_to_envmap

    observed, seen = estimation.observed, estimation.observed_mask
    mean_colour = observed[:, seen].mean(axis=1)  # (3,)
    filled = np.where(seen[None], observed, mean_colour[:, None, None]).astype(np.float32)
    env_mirror, _ = mirror_to_envmap(filled, height)
    constant = np.broadcast_to(mean_colour, (height, 2 * height, 3)).astype(np.float32)
    res = observed.shape[1]
    return {
        "observed_mirror": MethodOutput(env_mirror[None], filled[None], MIRROR[None].astype(np.float32)),
        "constant_mean": MethodOutput(
            constant[None], envmap_to_mirror(constant, res)[None], PRIOR_MEAN_MATERIAL[None]
        ),
    }


def method_outputs(estimation: Estimation, baselines: tuple[str, ...]) -> dict[str, MethodOutput]:
    """Every method's answer for one sample, in :data:`METHODS` order (the chosen baselines only)."""
    outputs = {
        "drmnet": MethodOutput(estimation.envmaps, estimation.mirrors, estimation.materials),
        "drmnet_mean": MethodOutput(
            estimation.envmap_mean[None],
            estimation.mirrors.mean(axis=0)[None],
            estimation.materials.mean(axis=0)[None],
        ),
    }
    all_baselines = baseline_outputs(estimation, estimation.envmaps.shape[1])
    outputs.update({name: all_baselines[name] for name in baselines})
    return outputs


def _scores(
    output: MethodOutput,
    truth: dict[str, Any],
    estimation: Estimation,
    settings: EvaluateSettings,
) -> tuple[dict[str, float], list[dict[str, np.ndarray]]]:
    """Metrics of one method (averaged over its K envmaps) and its sphere renders per envmap."""
    from rendering.envmap import pixel_solid_angles
    from rendering.refmap import render_refmaps
    from rendering.spheres import SPHERES, render_spheres, sphere_mask

    mask = sphere_mask(settings.sphere_res)
    weights = pixel_solid_angles(output.envmaps.shape[1])[:, None]
    per_envmap, renders = [], []
    for envmap, mirror, z in zip(output.envmaps, output.mirrors, output.materials, strict=True):
        scores: dict[str, float] = {}
        spheres = render_spheres(envmap, settings.sphere_res, settings.sphere_spp, settings.seed)
        renders.append(spheres)
        for name in SPHERES:
            est, gt = spheres[name], truth["spheres"][name]
            scores[f"{name}_rmse"] = metrics.rmse(est, gt, mask)
            scores[f"{name}_si_rmse"] = metrics.si_rmse(est, gt, mask)
            scores[f"{name}_angular"] = metrics.angular_error(est, gt, mask)
            scores[f"{name}_nrmse"] = metrics.nrmse(est, gt, mask)
        scores["envmap_log_rmse"] = metrics.log_rmse(
            envmap, truth["envmap"], estimation.valid, weights=weights
        )
        scores["refmap_si_rmse"] = metrics.si_rmse(mirror, truth["mirror"], channel_axis=0)
        scores["material_mae"] = metrics.material_error(z, truth["z"])
        rerendered = render_refmaps(
            envmap, z[None], res=mirror.shape[1], spp=settings.rerender_spp, seed=settings.seed
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
    from rendering.envmap import resample_envmap
    from rendering.refmap import envmap_to_mirror
    from rendering.spheres import render_spheres

    estimation = estimate_image(
        estimator,
        sample.image,
        sample.normals,
        sample.mask,
        settings.estimate_settings(),
        sources=(f"{sample.key} image", f"{sample.key} normals", f"{sample.key} mask"),
    )
    height = estimation.envmaps.shape[1]
    truth = {
        "spheres": render_spheres(sample.envmap, settings.sphere_res, settings.sphere_spp, settings.seed),
        "envmap": resample_envmap(sample.envmap, height),
        "mirror": envmap_to_mirror(sample.envmap, estimation.observed.shape[1]),
        "z": sample.z,
    }
    rows, sphere_renders = [], {}
    for method, output in method_outputs(estimation, settings.baselines).items():
        scores, renders = _scores(output, truth, estimation, settings)
        sphere_renders[method] = renders[0]
        if method == "drmnet":
            scores["spread"] = metrics.sample_spread(estimation.mirrors, channel_axis=0)
            scores["calibration"] = metrics.calibration(estimation.mirrors, truth["mirror"], channel_axis=0)
        rows.append({"test_set": sample.test_set, "key": sample.key, "method": method, **scores})
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
    gt_sphere = material_sphere(sample.envmap, sample.z, settings.sphere_res, settings.sphere_spp)
    material_exposure = preview_exposure(gt_sphere)
    save("material_gt.png", tonemap(gt_sphere, material_exposure), f"truth z={_z(sample.z)}", materials)
    for i, (envmap, z) in enumerate(zip(estimation.envmaps[:4], estimation.materials[:4], strict=True)):
        sphere = material_sphere(envmap, z, settings.sphere_res, settings.sphere_spp)
        save(
            f"material_sample{i}.png",
            tonemap(aligned(sphere, gt_sphere), material_exposure),
            f"z={_z(z)}",
            materials,
        )
    groups.append({"title": "Material (sphere under its own envmap)", "images": materials})

    mask = sphere_mask(settings.sphere_res)
    for name in SPHERES:
        images: list = []
        gt = truth["spheres"][name]
        exposure = preview_exposure(gt[mask][None])
        save(f"sphere_{name}_gt.png", tonemap(gt * mask[..., None], exposure), "truth", images)
        for method, renders in sphere_renders.items():
            shown = aligned(renders[name], gt, mask) * mask[..., None]
            caption = f"{method} (sample 0)" if method == "drmnet" else method
            save(f"sphere_{name}_{method}.png", tonemap(shown, exposure), caption, images)
        groups.append({"title": f"{name.replace('_', ' ')} sphere (scale-aligned)", "images": images})

    relit: list = []
    shape = make_shape(*sample.shape)
    material = np.asarray(settings.relight_material, np.float32)
    under_truth = render_object(
        sample.envmap, shape, material, settings.relight_res, settings.relight_spp, settings.seed
    )
    under_estimate = render_object(
        estimation.envmap_mean, shape, material, settings.relight_res, settings.relight_spp, settings.seed
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
        f"material: {sample.material_source}; envmap {sample.info.get('envmap_id', '?')}; "
        f"view azimuth {np.degrees(sample.info.get('view_azimuth', 0.0)):.0f}°; "
        f"observed {estimation.observed_mask.mean():.0%} of the refmap; "
        f"DRM steps {estimation.steps.tolist()}",
        "mirror-sphere si-RMSE: " + ", ".join(f"{m} {r['mirror_si_rmse']:.4g}" for m, r in by_method.items()),
    ]
    gallery = {"key": sample.key, "test_set": sample.test_set, "text": text, "groups": groups}
    atomic_write_bytes(directory / "gallery.json", (json.dumps(gallery, indent=2) + "\n").encode())
    return directory


def _z(z: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in np.asarray(z).ravel()) + "]"


# -- summaries and files -------------------------------------------------------------------------


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per-sample rows → ``{test_set: {method: {metric: mean over samples}}}`` (methods in
    :data:`METHODS` order)."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for test_set in dict.fromkeys(row["test_set"] for row in rows):
        summary[test_set] = {}
        for method in METHODS:
            selected = [r for r in rows if r["test_set"] == test_set and r["method"] == method]
            if not selected:
                continue
            names = [k for k in selected[0] if k not in ("test_set", "key", "method")]
            summary[test_set][method] = {n: float(np.mean([r[n] for r in selected])) for n in names}
    return summary


def primary_value(summary: dict[str, Any], settings: EvaluateSettings) -> float:
    """The number that decides the champion: ``primary_metric`` of ``drmnet`` on the primary set."""
    test_set = settings.primary_test_set if settings.primary_test_set in summary else next(iter(summary))
    return float(summary[test_set]["drmnet"][settings.primary_metric])


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
    record = json.loads(json.dumps(asdict(settings)))
    if not with_models:
        record.pop("model")
        record.pop("obsnet")
    return record
