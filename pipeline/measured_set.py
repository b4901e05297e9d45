"""The measured test set: a few built-in measured-like BRDFs (MERL tables of non-principled
models) under the test envmaps, on the test split's held-out shapes (pipeline.samples
shape_pools), at seeded views. ``evaluate`` scores it as its ``measured`` test set when the test
shards hold no measured samples (``dataset.measured_fraction.test`` is 0); ``drmnet
render-dataset --dataset measured --split test`` renders it into shards like every other dataset
(the dvc stage ``measured_test``: ``<shards>/measured/test/``).

Sample ``index`` (of ``evaluate.items``, or ``evaluate.measured_materials`` when that is 0) takes
material ``index mod measured_materials``, test envmap ``index mod n`` and pool shape ``index
mod m`` in order, and the ``index``-th (view azimuth, render seed) of a generator seeded by
``evaluate.seed``; its object is rendered at ``evaluate.object_res`` / ``object_spp`` with the
measured BSDF, and its ground truth z is the BRDF's principled fit (``materials.cache_dir``).
A sample holds what every test sample holds for evaluation: ``image``, ``normals``, ``mask``,
``z_obs`` (the fit), ``envmap_id``, ``view_azimuth``, ``material_source`` (the BRDF's name) and
the ``shape`` fields; its key is ``measured-<index:04d>-<material>``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.samples import EVAL_SPLIT, DatasetSettings
from rendering.errors import InputError

MEASURED = "measured"  # the dataset name: shards under <shards>/measured/test/


@dataclass(frozen=True)
class MeasuredSetSettings:
    """What the measured test set's content depends on besides the dataset section (its shapes)
    and the test envmaps: keys of params.yaml's ``evaluate`` section."""

    seed: int = 0  # evaluate.seed: the views and render seeds
    materials: int = 3  # evaluate.measured_materials: the first this many built-in BRDFs
    count: int = 8  # evaluate.items (or evaluate.measured_materials when items is 0): samples
    object_res: int = 64  # evaluate.object_res, evaluate.object_spp: the object images
    object_spp: int = 64

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> MeasuredSetSettings:
        from pipeline.settings import EvaluateSettings

        section = EvaluateSettings.from_params(params.get("evaluate"))
        if section.measured_materials < 1:
            raise InputError(
                "params.yaml", "evaluate.measured_materials is 0: the measured test set needs one"
            )
        return cls(
            seed=section.estimate.seed,
            materials=section.measured_materials,
            count=section.items or section.measured_materials,
            object_res=section.object_res,
            object_spp=section.object_spp,
        )


def code_digest() -> str:
    """sha256 of this module: the measured shards' records must come from this code."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def measured_key(index: int, material: str) -> str:
    """The key of sample ``index`` (shards and evaluation alike)."""
    return f"measured-{index:04d}-{material}"


def measured_views(settings: MeasuredSetSettings) -> list[tuple[float, int]]:
    """(view azimuth in radians, render seed) of every sample, drawn in turn from one generator."""
    rng = np.random.default_rng(np.random.SeedSequence(settings.seed, spawn_key=(7,)))
    return [(float(rng.uniform(-np.pi, np.pi)), int(rng.integers(2**31))) for _ in range(settings.count)]


def measured_samples(
    settings: MeasuredSetSettings,
    dataset: DatasetSettings,
    envmap_dir: str | Path,
    split: str,
    indices: Iterable[int],
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Render samples ``indices`` of the measured test set: ``(key, sample)`` pairs (module
    docstring). ``dataset`` gives the test split's shape pool and ``materials.cache_dir``."""
    from pipeline.samples import shape_pools
    from pipeline.splits import split_envmap_ids, split_envmap_path
    from rendering.builtin_materials import builtin_materials
    from rendering.envmap import read_envmap
    from rendering.measured_bsdf import measured_bsdf
    from rendering.objects import render_object
    from rendering.principled_fit import fit_principled
    from rendering.shapes import make_shape

    if split != EVAL_SPLIT:
        raise InputError("--split", f"the {MEASURED} dataset has a {EVAL_SPLIT} split only, not {split!r}")
    envmap_ids = split_envmap_ids(envmap_dir, EVAL_SPLIT)
    materials = list(builtin_materials(settings.materials).items())
    shapes = shape_pools(dataset)[EVAL_SPLIT]
    views = measured_views(settings)
    for index in indices:
        name, brdf = materials[index % len(materials)]
        envmap_id = envmap_ids[index % len(envmap_ids)]
        shape = shapes[index % len(shapes)]
        azimuth, seed = views[index]
        z = fit_principled(brdf, cache_dir=dataset.materials.get("cache_dir"))
        envmap = read_envmap(split_envmap_path(envmap_dir, EVAL_SPLIT, envmap_id))
        obj = render_object(
            envmap, make_shape(shape.name, shape.seed), measured_bsdf(brdf, z),
            settings.object_res, settings.object_spp, seed, view_azimuth=azimuth,
        )  # fmt: skip
        yield (
            measured_key(index, name),
            {
                "image": obj.image,
                "normals": obj.normals,
                "mask": np.asarray(obj.mask, dtype=np.uint8),
                "z_obs": np.asarray(z, np.float32),
                "envmap_id": envmap_id,
                "view_azimuth": azimuth,
                "material_source": name,
                "shape": Path(shape.name).name if shape.sha256 else shape.name,
                "shape_seed": shape.seed,
                "shape_sha256": shape.sha256,
            },
        )
