"""The measured test set rendered by ``evaluate`` itself when the shards hold no measured
samples: built-in measured-like BRDFs under the test envmaps, on held-out shapes."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from pipeline.evaluation.test_sets import TestSample, envmap_kind, envmap_kinds
from pipeline.settings import EvaluateSettings


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
            envmap, make_shape(*shape), measured_bsdf(brdf, z), object_res=res, spp=spp,
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
