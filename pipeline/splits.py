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
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import with_profile
from pipeline.samples import SPLITS
from pipeline.settings import SplitSettings, from_mapping
from rendering.errors import InputError

ENVMAP_TABLE = "envmaps.parquet"


def split_settings_from_params(params: dict[str, Any]) -> SplitSettings:
    """The ``envmaps_split`` section (with the profile's overrides), checked (pipeline/settings.py)."""
    section = with_profile(params).get("envmaps_split") or {}
    settings = from_mapping(SplitSettings, section, "envmaps_split")
    if sum(settings.proportions.values()) <= 0:
        raise InputError("params.yaml", "envmaps_split.proportions must not all be 0")
    return settings


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

    All or nothing: every input is validated first, then all splits are built in a sibling
    staging directory (``.<out>.new``) and swapped with ``out_dir`` at once (:func:`_swap_in`),
    so a run that fails or is killed leaves the previous complete splits untouched, never one
    split of the new plan beside stale others. ``out_dir`` may hold only the split directories.
    A finished ``<id>.exr`` (of the staging directory a killed run left, or of the current
    splits) is reused rather than made again. One writer at a time (:mod:`pipeline.locks`).
    ``progress(done, total, envmap_id)`` is called after each map.
    """
    from pipeline.locks import output_lock
    from rendering.envmap_sources import EnvmapDirectory, EnvmapParams

    params = with_profile(params)
    sources = EnvmapParams.from_params(params)
    target = Path(os.path.realpath(out_dir))  # swapped as a directory, not as a link to one
    with output_lock(out_dir, "drmnet make-envmap-splits"):
        _recover(target)
        foreign = sorted(p.name for p in target.iterdir() if p.name not in SPLITS) if target.is_dir() else []
        if foreign:
            listed = ", ".join(foreign[:3])
            raise InputError(out_dir, f"holds more than the splits ({listed}): use another --out")
        plan = plan_envmap_splits(params)
        directory = (
            EnvmapDirectory(sources.user_dir, sources.envmap_height, sources.cache_dir, sources.repair)
            if sources.user_dir
            else None
        )
        if directory is not None:
            directory.check()  # every bad user file named in one error, before anything is written
        staging = _sibling(target, "new")
        _build_splits(plan, sources, directory, staging, [staging, target], progress)
        _swap_in(staging, target)
    return {split: Path(out_dir) / split for split in plan}


def _sibling(out_dir: Path, role: str) -> Path:
    """``<parent>/.<name>.<role>``: where a run builds (``new``) or parks (``old``) splits."""
    return out_dir.parent / f".{out_dir.name}.{role}"


def _build_splits(plan, sources, directory, staging: Path, reuse: list[Path], progress) -> None:
    """Write the splits of ``plan`` into ``staging``, reusing a right-sized ``<id>.exr`` of a
    directory in ``reuse``; the tables last."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fileio.atomic import atomic_write_bytes
    from pipeline.shards import file_sha256
    from rendering.envmap import read_envmap
    from rendering.envmap_sources import envmap_stats, produce_envmap
    from rendering.hdrio import write_exr

    foreign = [p.name for p in staging.iterdir() if p.name not in SPLITS] if staging.is_dir() else []
    if foreign:  # not ours: never written by a run of this function
        raise InputError(staging, f"holds unexpected files ({foreign[:3]}): remove it and rerun")
    done, total = 0, sum(len(specs) for specs in plan.values())
    for split, specs in plan.items():
        split_dir = staging / split
        split_dir.mkdir(parents=True, exist_ok=True)
        rows = []
        for spec in specs:
            target = split_dir / f"{spec.id}.exr"
            envmap = _reusable(
                target, [d / split / target.name for d in reuse], sources.envmap_height, read_envmap
            )
            if envmap is None:
                envmap = produce_envmap(
                    spec, sources.envmap_height, directory, sources.room_spp, sources.repair
                )
                write_exr(target, envmap)
            rows.append({**envmap_stats(envmap, spec), "split": split, "sha256": file_sha256(target)})
            done += 1
            if progress is not None:
                progress(done, total, spec.id)
        keep = {f"{spec.id}.exr" for spec in specs} | {ENVMAP_TABLE}
        for stale in split_dir.iterdir():
            if stale.name not in keep:
                stale.unlink()
        buffer = io.BytesIO()
        columns = {key: [row[key] for row in rows] for key in rows[0]} if rows else {"id": [], "sha256": []}
        pq.write_table(pa.table(columns), buffer)
        atomic_write_bytes(split_dir / ENVMAP_TABLE, buffer.getvalue())
    for stale in staging.iterdir():
        if stale.name not in plan:
            shutil.rmtree(stale)


def _reusable(target: Path, candidates: list[Path], height: int, read_envmap) -> np.ndarray | None:
    """The envmap of the first candidate file of the right height, linked (or copied) to ``target``."""
    for candidate in candidates:
        if not candidate.is_file():
            continue
        envmap = read_envmap(candidate)
        if envmap.shape[0] != height:
            continue
        if candidate != target:
            target.unlink(missing_ok=True)
            try:
                os.link(candidate, target)
            except OSError:  # no hard links on this file system
                shutil.copy2(candidate, target)
        return envmap
    return None


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Make the complete ``staging`` the splits at ``out_dir`` and drop the previous ones.

    One atomic ``renameat2(RENAME_EXCHANGE)`` where the file system has it (Linux ext4, xfs,
    btrfs, tmpfs): readers see the old splits or the new ones, never a mix. Elsewhere two
    renames, through ``.<out>.old``: a crash between them leaves no ``out_dir`` (readers then
    say the splits are missing, nothing looks complete) and the next run restores the old one
    (:func:`_recover`) before it starts.
    """
    if not out_dir.exists():
        os.rename(staging, out_dir)
        return
    if _exchange(staging, out_dir):
        shutil.rmtree(staging)  # now the previous splits
        return
    old = _sibling(out_dir, "old")
    shutil.rmtree(old, ignore_errors=True)
    os.rename(out_dir, old)
    os.rename(staging, out_dir)
    shutil.rmtree(old)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    import ctypes
    import errno

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except AttributeError:  # not glibc ≥ 2.28, or not Linux
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _recover(out_dir: Path) -> None:
    """After a crash between the two renames of :func:`_swap_in`: put the previous splits back."""
    old = _sibling(out_dir, "old")
    if old.is_dir() and not out_dir.exists():
        os.rename(old, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def read_envmap_table(envmap_dir: str | os.PathLike, split: str):
    """The stats table of a split (pyarrow Table); InputError naming it when the split was never
    made, when it is unreadable, or when an id is not a plain file name (``<id>.exr`` must stay
    in the split directory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.manifest import is_plain_file_name

    path = Path(envmap_dir) / split / ENVMAP_TABLE
    redo = "rerun `drmnet make-envmap-splits`"
    if not path.exists():
        raise InputError(path, "missing: make the envmap splits first (drmnet make-envmap-splits)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        raise InputError(path, f"unreadable or truncated envmap table ({error}); {redo}") from None
    if "id" not in table.column_names:
        raise InputError(path, f"has no `id` column: not an envmap table; {redo}")
    outside = [i for i in table.column("id").to_pylist() if not is_plain_file_name(f"{i}.exr")]
    if outside:
        raise InputError(
            path, f"lists the envmap id {outside[0]!r}, which is not a file name in the split; {redo}"
        )
    return table


def split_envmap_ids(envmap_dir: str | os.PathLike, split: str) -> list[str]:
    """Envmap ids of a split, in table order."""
    return read_envmap_table(envmap_dir, split).column("id").to_pylist()


def split_envmap_path(envmap_dir: str | os.PathLike, split: str, envmap_id: str) -> Path:
    """Where the envmap ``envmap_id`` of ``split`` lives: ``<envmap_dir>/<split>/<id>.exr``."""
    return Path(envmap_dir) / split / f"{envmap_id}.exr"
