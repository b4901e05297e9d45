"""What a sample of a shard must hold, checked field by field (``drmnet verify-shards``).

A shard can have the bytes its manifest records and still be unusable: written by other code,
or by a renderer that produced NaN. :func:`shard_content_problem` decodes every sample of a shard
and checks it against the layout the writer (:mod:`pipeline.shards`, :mod:`pipeline.samples`)
gives and against its rows of ``manifest-samples.parquet``:

- radiance (``refmap_*``, ``observed``, ``image``): finite and ≥ 0 once decoded; the refmaps
  (3, R, R) float16 (or float32, for shards made elsewhere), ``image`` (H, W, 3);
- materials (``z_obs``, ``z_k``, ``z_next``): (6,) float32, finite, in [0, 1];
- ``observed_mask`` and ``mask`` hold only 0 and 1; ``normals`` (H, W, 3) are finite;
- ``k`` and ``K``: 0 ≤ k < K; every other float array finite;
- the sample keys, in order, and each sample's ``envmap_id``, ``k`` and ``K`` are the manifest's;
- every sample of a split has the same fields with the same shapes and dtypes (``layout``).
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.shards import HALF_EXPONENT, is_half, raw_samples, restore_half

RADIANCE = ("image",)  # besides the float16 image fields (shards.HALF_FIELDS)
MATERIALS = ("z_obs", "z_k", "z_next")
MASKS = ("observed_mask", "mask")
IMAGE_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))


def _bad_values(what: str, bad: np.ndarray) -> str | None:
    count = int(np.count_nonzero(bad))
    return f"{count} of {bad.size} values are {what}" if count else None


def _field_problem(field: str, stored: np.ndarray, value: np.ndarray) -> str | None:
    """What is wrong with one decoded array (``stored``: as in the shard; ``value``: decoded)."""
    radiance = is_half(field) or field in RADIANCE
    if value.dtype.kind == "f":
        problem = _bad_values("NaN or Inf", ~np.isfinite(value))
        if problem:
            return problem
    if is_half(field):
        if stored.dtype not in IMAGE_DTYPES:
            return f"dtype {stored.dtype}, expected float16"
        if stored.ndim != 3 or stored.shape[0] != 3 or stored.shape[1] != stored.shape[2]:
            return f"shape {stored.shape}, expected (3, R, R)"
    if field == "image" and (stored.ndim != 3 or stored.shape[2] != 3):
        return f"shape {stored.shape}, expected (H, W, 3)"
    if radiance:
        return _bad_values("negative", value < 0)
    if field in MATERIALS:
        if stored.dtype != np.float32 or stored.shape != (6,):
            return f"{stored.dtype} {stored.shape}, expected float32 (6,)"
        return _bad_values("outside [0, 1]", (value < 0) | (value > 1))
    if field in MASKS:
        return _bad_values("neither 0 nor 1", (value != 0) & (value != 1))
    return None


def _meta_problem(meta: dict[str, Any], row: dict[str, Any] | None) -> str | None:
    k, K = meta.get("k"), meta.get("K")
    if K is not None and (not isinstance(K, int) or K < 1):
        return f"K {K!r} is not a positive integer"
    if k is not None and (not isinstance(k, int) or not 0 <= k < (K if isinstance(K, int) else k + 1)):
        return f"k {k!r} is not an integer in [0, K)"
    for name in ("envmap_id", "k", "K"):
        if row is not None and row.get(name) is not None and meta.get(name) != row[name]:
            return f"{name} {meta.get(name)!r}, the manifest says {row[name]!r}"
    return None


def shard_content_problem(
    path: Path, rows: list[dict[str, Any]] | None, samples: int, layout: dict[str, tuple]
) -> str | None:
    """The first problem of a shard's contents (None: every sample good), as
    ``sample <key>: <field>: <problem>``. ``rows``: the shard's rows of the samples manifest (None
    when there is none); ``samples``: how many the shards manifest says; ``layout``: field →
    (shape, dtype) of the split's first sample, filled here and shared across the split's shards."""
    count = 0
    try:
        for index, (key, arrays, meta) in enumerate(raw_samples(path)):
            count += 1
            row = rows[index] if rows is not None and index < len(rows) else None
            if row is not None and row["key"] != key:
                return f"sample {index} has key {key}, the manifest says {row['key']}"
            exponent = int(meta.get(HALF_EXPONENT, 0))
            for field in sorted(arrays):
                stored = arrays[field]
                expected = layout.setdefault(field, (stored.shape, stored.dtype))
                if (stored.shape, stored.dtype) != expected:
                    shape, dtype = expected
                    return (
                        f"sample {key}: {field}: {stored.dtype} {stored.shape}, "
                        f"other samples of the split hold {dtype} {shape}"
                    )
                problem = _field_problem(field, stored, restore_half(field, stored, exponent))
                if problem:
                    return f"sample {key}: {field}: {problem}"
            problem = _meta_problem(meta, row)
            if problem:
                return f"sample {key}: {problem}"
    except (tarfile.TarError, ValueError, EOFError, OSError, KeyError, TypeError) as error:
        return f"cannot be decoded ({error})"
    if count != samples:
        return f"holds {count} samples, manifest says {samples}"
    if rows is not None and len(rows) != count:
        return f"holds {count} samples, manifest-samples.parquet lists {len(rows)}"
    return None
