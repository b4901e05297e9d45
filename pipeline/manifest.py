"""Parquet manifests of a split directory, per-shard completion records, and verification.

A split directory (``data/shards/<dataset>/<split>/``) holds:

- the shards ``<dataset>-<split>-000000.tar`` …;
- ``records/<shard>.json``: written right after its shard, it says the shard is finished: its
  sha256, size, sample count, the fingerprint of what it was made from (``spec``) and its
  manifest rows. A rerun skips a shard whose record's spec matches and whose file still has
  the recorded size and sha256 (resumption after a kill; a corrupted shard is redone);
- ``manifest-samples.parquet``: one row per sample (key, shard, envmap, material, k, K, view
  azimuth, luminance statistics of the observation L_K, and the object's shape where the sample
  has an object image);
- ``manifest-shards.parquet``: one row per shard (name, samples, bytes, sha256).

The two manifests are written last, atomically, from the records: a split directory with
manifests is complete, and :func:`verify_split` checks the shards against them.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fileio.atomic import atomic_write_bytes
from pipeline.shard_contents import shard_content_problem
from pipeline.shards import file_sha256
from rendering.errors import InputError
from rendering.hdrio import luminance

SAMPLES_MANIFEST = "manifest-samples.parquet"
SHARDS_MANIFEST = "manifest-shards.parquet"
RECORDS_DIR = "records"

_Z = pa.list_(pa.float32())  # (6,); variable-size: parquet round-trips null fixed-size lists badly
SAMPLE_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("shard", pa.string()),
        ("index", pa.int64()),  # sample index within the split
        ("envmap_id", pa.string()),
        ("material_source", pa.string()),  # "uniform" or the measured BRDF's name
        ("z_obs", _Z),  # z_K, the observation's material
        ("z_k", _Z),  # drmnet only (null for obsnet)
        ("z_next", _Z),
        ("k", pa.int32()),
        ("K", pa.int32()),
        ("view_azimuth", pa.float64()),  # radians
        ("lum_mean", pa.float64()),  # luminance of L_K: mean, geometric mean over > 0, max (null: no L_K)
        ("lum_geomean", pa.float64()),
        ("lum_max", pa.float64()),
        ("observed_fraction", pa.float64()),  # obsnet only: fraction of refmap bins the object shows
        ("shape", pa.string()),  # the object (obsnet, test): built-in kind or mesh file name
        ("shape_seed", pa.int64()),  # the built-in shape's seed (null for a mesh)
        ("shape_sha256", pa.string()),  # the mesh file's content hash (null for a built-in shape)
    ]
)
SHARD_SCHEMA = pa.schema(
    [("shard", pa.string()), ("samples", pa.int64()), ("bytes", pa.int64()), ("sha256", pa.string())]
)


def luminance_stats(refmap: np.ndarray) -> dict[str, float]:
    """Mean, geometric mean (over pixels > 0, as DESIGN.md §3.4 normalises) and max luminance of
    a refmap (3, R, R)."""
    lum = luminance(refmap, axis=0).astype(np.float64)
    positive = lum[lum > 0]
    geomean = float(np.exp(np.log(positive).mean())) if positive.size else 0.0
    return {"lum_mean": float(lum.mean()), "lum_geomean": geomean, "lum_max": float(lum.max())}


def sample_row(key: str, shard: str, index: int, sample: dict[str, Any]) -> dict[str, Any]:
    """The manifest row of one sample (see ``SAMPLE_SCHEMA``); fields a dataset lacks are None."""

    def vector(name: str) -> list[float] | None:
        return None if name not in sample else [float(v) for v in np.asarray(sample[name]).ravel()]

    row = {
        "key": key,
        "shard": shard,
        "index": index,
        "envmap_id": sample["envmap_id"],
        "material_source": sample.get("material_source", "uniform"),
        "z_obs": vector("z_obs"),
        "z_k": vector("z_k"),
        "z_next": vector("z_next"),
        "k": sample.get("k"),
        "K": sample.get("K"),
        "view_azimuth": float(sample["view_azimuth"]),
        "observed_fraction": (
            float(np.asarray(sample["observed_mask"]).mean()) if "observed_mask" in sample else None
        ),
        "shape": sample.get("shape"),
        "shape_seed": None if sample.get("shape_sha256") else sample.get("shape_seed"),
        "shape_sha256": sample.get("shape_sha256") or None,
    }
    if "refmap_obs" in sample:  # the measured test set (pipeline.measured_set) has object images only
        row.update(luminance_stats(sample["refmap_obs"]))
    return row


# --- per-shard completion records -------------------------------------------------------------


def record_path(split_dir: str | os.PathLike, shard: str) -> Path:
    return Path(split_dir) / RECORDS_DIR / f"{Path(shard).stem}.json"


def write_record(split_dir: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Atomically write a shard's completion record (keys: shard, samples, bytes, sha256, spec, rows)."""
    text = json.dumps(record, sort_keys=True, indent=1, allow_nan=False)
    return atomic_write_bytes(record_path(split_dir, record["shard"]), text.encode())


def finished_record(split_dir: str | os.PathLike, shard: str, spec: str) -> dict[str, Any] | None:
    """The record of ``shard`` if the shard is finished and intact: a record exists for this
    ``spec`` and the file has the recorded size and sha256. None means: (re)render it."""
    path = record_path(split_dir, shard)
    shard_path = Path(split_dir) / shard
    if not path.exists() or not shard_path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if record.get("spec") != spec or record.get("bytes") != shard_path.stat().st_size:
        return None
    return record if file_sha256(shard_path) == record.get("sha256") else None


# --- manifests ----------------------------------------------------------------------------------


def _parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def write_manifests(split_dir: str | os.PathLike, records: Iterable[dict[str, Any]]) -> tuple[Path, Path]:
    """Write ``manifest-samples.parquet`` and ``manifest-shards.parquet`` from the shard records
    (in shard order), atomically: shards manifest last, since it is what marks a split complete."""
    split_dir = Path(split_dir)
    records = sorted(records, key=lambda r: r["shard"])
    rows = [row for record in records for row in record["rows"]]
    samples = pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA)
    shards = pa.Table.from_pylist(
        [{name: r[name] for name in SHARD_SCHEMA.names} for r in records], schema=SHARD_SCHEMA
    )
    samples_path = atomic_write_bytes(split_dir / SAMPLES_MANIFEST, _parquet_bytes(samples))
    shards_path = atomic_write_bytes(split_dir / SHARDS_MANIFEST, _parquet_bytes(shards))
    return samples_path, shards_path


def read_samples_manifest(split_dir: str | os.PathLike) -> pa.Table:
    return _read_manifest(Path(split_dir) / SAMPLES_MANIFEST)


def read_shards_manifest(split_dir: str | os.PathLike) -> pa.Table:
    """The shards manifest of a split. Every shard it lists must be a plain file name, so that
    no reader (verification, training, evaluation) follows a name such as ``../../etc/passwd`` or
    an absolute path out of the split directory: InputError naming the manifest otherwise."""
    path = Path(split_dir) / SHARDS_MANIFEST
    table = _read_manifest(path)
    missing = [name for name in SHARD_SCHEMA.names if name not in table.column_names]
    if missing:
        raise InputError(
            path,
            f"lacks the column(s) {missing}: not a shards manifest; "
            "rerun `drmnet render-dataset` for this split",
        )
    names = table.column("shard").to_pylist()
    outside = [name for name in names if not is_plain_file_name(name)]
    if outside:
        more = f" (and {len(outside) - 1} more)" if len(outside) > 1 else ""
        raise InputError(
            path,
            f"lists the shard {outside[0]!r}{more}, which is not a file name in the split directory "
            "(a manifest names only the shards beside it); refused: rerun `drmnet render-dataset` "
            "for this split",
        )
    return table


def is_plain_file_name(name: object) -> bool:
    """A name without directory parts (no separator, not ``..``): it stays in the directory it is
    joined to. Names read from files (shard manifests, envmap tables, galleries) must be such."""
    return isinstance(name, str) and name not in ("", ".", "..") and not any(c in name for c in "/\\\0")


def _read_manifest(path: Path) -> pa.Table:
    """A manifest table; InputError naming the file when it is missing, truncated or not parquet."""
    if not path.is_file():
        raise InputError(path, "does not exist: the split is incomplete; run `drmnet render-dataset` for it")
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        raise InputError(
            path, f"unreadable or truncated manifest ({error}); rerun `drmnet render-dataset` for this split"
        ) from None


# --- verification -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardProblem:
    """A shard that does not match its manifest: its path and what is wrong."""

    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def find_split_dirs(root: str | os.PathLike) -> list[Path]:
    """Split directories under ``root`` (``root`` itself included): those with a shards manifest
    or with shards."""
    root = Path(root)
    candidates = {root} | {p.parent for pattern in (SHARDS_MANIFEST, "*.tar") for p in root.rglob(pattern)}
    return sorted(d for d in candidates if (d / SHARDS_MANIFEST).exists() or any(d.glob("*.tar")))


def verify_split(split_dir: str | os.PathLike, decode: bool = True) -> list[ShardProblem]:
    """Check every shard of a split against ``manifest-shards.parquet``: present, size, sha256,
    sample count and (``decode``) its contents (:mod:`pipeline.shard_contents`: decodable, shapes
    and dtypes, finite, ≥ 0, the keys of ``manifest-samples.parquet``). Returns the problems
    (empty: all good)."""
    split_dir = Path(split_dir)
    if not (split_dir / SHARDS_MANIFEST).exists():
        return [ShardProblem(split_dir / SHARDS_MANIFEST, "missing: the split was never completed")]
    problems = []
    expected = read_shards_manifest(split_dir).to_pylist()
    listed = {row["shard"] for row in expected}
    rows: dict[str, list[dict[str, Any]]] | None = None
    if decode and (split_dir / SAMPLES_MANIFEST).exists():
        rows = {name: [] for name in listed}
        for sample in read_samples_manifest(split_dir).to_pylist():
            rows.setdefault(sample["shard"], []).append(sample)
    layout: dict[str, tuple] = {}  # field → (shape, dtype), the same in every sample of the split
    for row in expected:
        path = split_dir / row["shard"]
        problem = _shard_problem(path, row)
        if problem is None and decode:
            shard_rows = None if rows is None else rows[row["shard"]]
            problem = shard_content_problem(path, shard_rows, row["samples"], layout)
        if problem:
            problems.append(ShardProblem(path, problem))
    for path in sorted(split_dir.glob("*.tar")):
        if path.name not in listed:
            problems.append(ShardProblem(path, "not listed in the manifest"))
    return problems


def require_intact_split(split_dir: str | os.PathLike) -> None:
    """Before a split is read (training): every shard its manifest lists present, with the
    recorded size and sha256, else one InputError naming the first bad shard — rather than a
    traceback from a loader worker hundreds of samples later. Hashing only (contents were checked
    when the shards were written; ``drmnet verify-shards`` checks them again). Shards made
    elsewhere (no manifest) have nothing to be checked against."""
    split_dir = Path(split_dir)
    if not (split_dir / SHARDS_MANIFEST).exists():
        return
    expected = read_shards_manifest(split_dir).to_pylist()
    problems = [(row["shard"], _shard_problem(split_dir / row["shard"], row)) for row in expected]
    bad = [(name, problem) for name, problem in problems if problem]
    if bad:
        name, problem = bad[0]
        more = f" (and {len(bad) - 1} more bad shards)" if len(bad) > 1 else ""
        raise InputError(
            split_dir / name, f"{problem}{more}; `drmnet render-dataset` for this split redoes bad shards"
        )


def _shard_problem(path: Path, row: dict[str, Any]) -> str | None:
    if not path.exists():
        return "missing"
    size = path.stat().st_size
    if size != row["bytes"]:
        return f"size {size} bytes, manifest says {row['bytes']} (truncated or rewritten)"
    digest = file_sha256(path)
    if digest != row["sha256"]:
        return f"sha256 {digest[:12]}… does not match the manifest's {row['sha256'][:12]}… (corrupted)"
    return None
