"""Environment-map splits: which envmaps belong to train / val / test. No envmap is in two splits.

The envmaps themselves come from :mod:`rendering.envmap_sources` and its ``envmaps`` section of
params.yaml (``n`` procedural maps by kind proportions, plus every file of the user's
``user_dir``; ids ``<kind>-<seed>-<index>`` and ``user-<stem>``). This module only assigns them
to splits, deterministically from the ``envmaps_split`` section (``seed``, ``proportions``):

- procedural maps are split per kind (each kind shuffled by ``seed``, then cut by the
  proportions with largest remainders), so every split gets the same mix of kinds;
- the user's files likewise, as one group; files with identical bytes (the same map under two
  names) always land in the same split, so a copy cannot leak a test envmap into training.

Output, per split: ``<out>/<split>/<envmap_id>.exr`` and ``<out>/<split>/envmaps.parquet`` (the
stats of :func:`rendering.envmap_sources.envmap_stats` plus ``split`` and ``sha256`` of the
written file). The dataset flow reads that table: its ids, and its content as part of every
shard's fingerprint.
"""

from __future__ import annotations

import io
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import with_profile
from pipeline.samples import SPLITS
from rendering.errors import InputError

ENVMAP_TABLE = "envmaps.parquet"


@dataclass(frozen=True)
class SplitSettings:
    """The ``envmaps_split`` section of params.yaml."""

    seed: int = 0  # shuffles the envmaps before they are cut into splits
    proportions: dict[str, float] = field(default_factory=lambda: {"train": 0.64, "val": 0.16, "test": 0.2})


def split_settings_from_params(params: dict[str, Any]) -> SplitSettings:
    section = dict(with_profile(params).get("envmaps_split") or {})
    unknown = set(section) - {"seed", "proportions"}
    if unknown:
        raise InputError("params.yaml", f"envmaps_split: unknown keys {sorted(unknown)}")
    proportions = {
        s: float(p) for s, p in (section.get("proportions") or SplitSettings().proportions).items()
    }
    if set(proportions) - set(SPLITS) or any(not np.isfinite(p) or p < 0 for p in proportions.values()):
        raise InputError("params.yaml", f"envmaps_split.proportions must map {SPLITS} to numbers ≥ 0")
    if sum(proportions.values()) <= 0:
        raise InputError("params.yaml", "envmaps_split.proportions must not all be 0")
    return SplitSettings(seed=int(section.get("seed", 0)), proportions=proportions)


def _cut(count: int, proportions: dict[str, float]) -> list[str]:
    """The split of each of ``count`` shuffled items: proportional, largest remainders, in
    SPLITS order (train, val, test), ties going to the earlier split."""
    weights = np.array([proportions.get(s, 0.0) for s in SPLITS], dtype=np.float64)
    exact = count * weights / weights.sum()
    sizes = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - sizes), kind="stable")[: count - sizes.sum()]:
        sizes[i] += 1
    return [split for split, size in zip(SPLITS, sizes, strict=True) for _ in range(size)]


def assign_splits(
    specs: list, settings: SplitSettings, digests: dict[str, str] | None = None
) -> dict[str, list]:
    """Split ``EnvmapSpec``s (from ``plan_envmaps``) into {split: [spec, ...]}, in plan order.

    ``digests`` (spec id → sha256 of the user's file) keeps identical files together.
    """
    from rendering.real_envmaps import REAL_KIND, real_split

    groups: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    split_of: dict[str, str] = {}
    for spec in specs:
        if spec.kind == REAL_KIND:  # the built-in real maps have fixed splits
            split_of[spec.id] = real_split(spec.id.removeprefix(f"{REAL_KIND}-"))
            continue
        unit = (digests or {}).get(spec.id, spec.id)  # the unit that is assigned as a whole
        groups[spec.kind][unit].append(spec)
    for number, kind in enumerate(sorted(groups)):
        units = sorted(groups[kind])
        rng = np.random.default_rng(np.random.SeedSequence(settings.seed, spawn_key=(number,)))
        shuffled = [units[i] for i in rng.permutation(len(units))]
        for unit, split in zip(shuffled, _cut(len(units), settings.proportions), strict=True):
            for spec in groups[kind][unit]:
                split_of[spec.id] = split
    return {split: [s for s in specs if split_of[s.id] == split] for split in SPLITS}


def plan_envmap_splits(params: dict[str, Any]) -> dict[str, list]:
    """{split: [EnvmapSpec]} for the ``envmaps`` and ``envmaps_split`` sections of params."""
    from rendering.envmap_sources import USER_KIND, EnvmapParams, plan_envmaps
    from rendering.file_hash import file_sha256

    params = with_profile(params)
    sources = EnvmapParams.from_params(params)
    real = sources.real_cache_dir if sources.real else None
    specs = plan_envmaps(sources.n, sources.seed, sources.kinds, sources.user_dir, real)
    digests = {s.id: file_sha256(s.path) for s in specs if s.kind == USER_KIND}
    return assign_splits(specs, split_settings_from_params(params), digests)


def make_envmap_splits(params: dict[str, Any], out_dir: str | os.PathLike, progress=None) -> dict[str, Path]:
    """Write every split's envmaps and stats table under ``out_dir``; returns split → directory.

    A finished ``<id>.exr`` is kept (files are written atomically, so a killed run resumes); files
    of an earlier plan that are not in this one are removed. ``progress(done, total, envmap_id)``
    is called after each map.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.shards import atomic_write_bytes, file_sha256
    from rendering.envmap import read_envmap
    from rendering.envmap_sources import EnvmapDirectory, EnvmapParams, envmap_stats, produce_envmap
    from rendering.hdrio import write_exr

    params = with_profile(params)
    sources = EnvmapParams.from_params(params)
    plan = plan_envmap_splits(params)
    directory = (
        EnvmapDirectory(sources.user_dir, sources.res, sources.cache_dir, sources.repair)
        if sources.user_dir
        else None
    )
    if directory is not None:
        directory.check()  # every bad user file named in one error, before anything is written
    out_dir, written, done = Path(out_dir), {}, 0
    total = sum(len(specs) for specs in plan.values())
    for split, specs in plan.items():
        split_dir = out_dir / split
        split_dir.mkdir(parents=True, exist_ok=True)
        rows = []
        for spec in specs:
            target = split_dir / f"{spec.id}.exr"
            if target.exists():
                envmap = read_envmap(target)
                if envmap.shape[0] != sources.res:
                    raise InputError(
                        target, f"exists with height {envmap.shape[0]}, not {sources.res}: use another --out"
                    )
            else:
                envmap = produce_envmap(spec, sources.res, directory, sources.room_spp, sources.repair)
                write_exr(target, envmap)
            rows.append({**envmap_stats(envmap, spec), "split": split, "sha256": file_sha256(target)})
            done += 1
            if progress is not None:
                progress(done, total, spec.id)
        keep = {f"{spec.id}.exr" for spec in specs}
        for stale in split_dir.glob("*.exr"):
            if stale.name not in keep:
                stale.unlink()
        buffer = io.BytesIO()
        columns = {key: [row[key] for row in rows] for key in rows[0]} if rows else {"id": [], "sha256": []}
        pq.write_table(pa.table(columns), buffer)
        atomic_write_bytes(split_dir / ENVMAP_TABLE, buffer.getvalue())
        written[split] = split_dir
    return written


def read_envmap_table(envmap_dir: str | os.PathLike, split: str):
    """The stats table of a split (pyarrow Table); InputError when the split was never made."""
    import pyarrow.parquet as pq

    path = Path(envmap_dir) / split / ENVMAP_TABLE
    if not path.exists():
        raise InputError(path, "missing: make the envmap splits first (drmnet make-envmap-splits)")
    return pq.read_table(path)


def split_envmap_ids(envmap_dir: str | os.PathLike, split: str) -> list[str]:
    """Envmap ids of a split, in table order."""
    return read_envmap_table(envmap_dir, split).column("id").to_pylist()


def split_envmap_path(envmap_dir: str | os.PathLike, split: str, envmap_id: str) -> Path:
    """Where the envmap ``envmap_id`` of ``split`` lives: ``<envmap_dir>/<split>/<id>.exr``."""
    return Path(envmap_dir) / split / f"{envmap_id}.exr"
