"""The test sets: the test split's shard samples with their ground truth in the camera frame and
the kind of each envmap; the measured set from its own shards when the test shards hold no
measured samples (:mod:`pipeline.measured_set`, rendered by ``drmnet render-dataset``)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.settings import EvaluateSettings
from rendering.errors import InputError

KINDS = ("real", "sky", "studio", "room", "user")  # envmap kinds, in the order the summary lists them


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


def shard_test_samples(
    settings: EvaluateSettings, params: dict[str, Any] | None = None, dataset: str | None = None
) -> Iterator[TestSample]:
    """The test split's shard samples of ``dataset`` (default ``settings.dataset``) in key order
    (deterministic, no shuffling), with their ground-truth envmaps. Each object's shape, for
    relighting, is the one its sample stores; ``params`` (the whole params.yaml) names the test
    split's mesh directory, where a mesh is found (without it, or for samples that store no
    shape, the relit object is a sphere)."""
    from pipeline.reader import list_shards
    from pipeline.samples import EVAL_SPLIT
    from pipeline.shards import read_shard
    from pipeline.splits import split_envmap_path
    from rendering.envmap import read_envmap, rotate_envmap

    split_dir = Path(settings.shards) / (dataset or settings.dataset) / EVAL_SPLIT
    shape_of = _shape_reader(params)
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
                shape=shape_of(sample),
                info={
                    "envmap_id": envmap_id,
                    "envmap_kind": kinds.get(envmap_id, envmap_kind(envmap_id)),
                    "view_azimuth": azimuth,
                    "shard": Path(shard).name,
                    "split_dir": str(split_dir),
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


def _shape_reader(params: dict[str, Any] | None):
    """sample → (shape, seed) of the object in its image, as the sample stores it (``shape``,
    ``shape_seed``, ``shape_sha256``): a built-in kind and its seed, or a mesh, which is the file of
    that name in the test split's mesh directory if its content is the stored one; else the sphere."""
    from pipeline.samples import EVAL_SPLIT, settings_from_params
    from rendering.file_hash import file_sha256

    mesh_dir = settings_from_params(params).mesh_dirs.get(EVAL_SPLIT) if params is not None else None
    hashes: dict[Path, str] = {}

    def shape(sample: dict[str, Any]) -> tuple[str, int]:
        name, sha256 = sample.get("shape"), sample.get("shape_sha256")
        if not name:
            return ("sphere", 0)
        if not sha256:
            return (str(name), int(sample.get("shape_seed", 0)))
        path = Path(mesh_dir or "") / str(name)
        if mesh_dir and path.is_file() and path not in hashes:
            hashes[path] = file_sha256(path)
        return (str(path), 0) if hashes.get(path) == sha256 else ("sphere", 0)

    return shape


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
        sets["measured"] = _measured_set(settings, params, limit)
    for name, samples in sets.items():
        if not samples:
            raise InputError(f"{settings.shards}/{settings.dataset}/test", f"holds no {name} test samples")
    return sets


def _measured_set(
    settings: EvaluateSettings, params: dict[str, Any] | None, limit: int | None
) -> list[TestSample]:
    """The first ``limit`` samples of the measured test set's shards (pipeline.measured_set)."""
    from pipeline.measured_set import MEASURED
    from pipeline.samples import EVAL_SPLIT

    split_dir = Path(settings.shards) / MEASURED / EVAL_SPLIT
    if not split_dir.is_dir():
        raise InputError(
            f"{settings.shards}/{settings.dataset}/{EVAL_SPLIT}",
            f"holds no measured test samples, and {split_dir} does not exist: render the measured "
            f"test set with `drmnet render-dataset --dataset {MEASURED} --split {EVAL_SPLIT}` "
            "(dvc stage measured_test)",
        )
    return list(itertools.islice(shard_test_samples(settings, params, MEASURED), limit))
