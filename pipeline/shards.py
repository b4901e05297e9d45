"""WebDataset shards: one tar file holds many samples, written atomically with deterministic bytes.

A sample is a flat dict: numpy arrays become ``<key>.<field>.npy`` members (float arrays as
float32, never clipped: the refmaps are HDR), everything else (ints, floats, strings, lists)
goes into one ``<key>.meta.json`` member. Member names, their order, modes, owners and the
modification time are fixed, so the same samples always give the same bytes and a rerun with
the same params writes byte-identical shards (webdataset's ``ShardWriter`` stamps the current
time and writes straight to the final name, hence this writer).

Storage at scale: the image fields (``refmap_*``, ``observed``, :data:`HALF_FIELDS`) are stored as
float16 after multiplying the whole sample's images by one power of two, 2^−e, chosen so that the
brightest value lands at or below 2^15 (float16 holds up to 65,504); ``e`` is the metadata field
``half_exponent``, and decoding (:func:`read_shard`, the training reader) multiplies by 2^e in
float32. Powers of two are exact, so the only error is float16's rounding, a relative 2^−11 ≈
4.9e−4 at most per value (values down to 2^−29 of the brightest keep that precision; float16's
smallest normal is 2^−14). Measured (``benchmarks/dataset.py --parts noise``, 32², 64 spp): on
a refmap that is 0.02× its Monte Carlo noise. On the DRM step L_{k−1} − L_k it is not negligible
near the mirror, where the step shrinks to ~0.1 % of L_k while common random numbers cancel most
of its Monte Carlo noise: float16 then adds more error to the step than the noise does in about a
third of the samples (the low k). That error is zero-mean rounding, i.e. label noise ~5e−5 in the
networks' log domain, against the σ = 0.02 input noise IllNet learns to remove. A 32² DRMNet sample
takes 33 KB instead of 57 KB: 10⁵ samples fit in 3.3 GB, 10⁶ in 33 GB.

Shards are written to a temporary name in the target directory and renamed when complete:
an interrupted run never leaves a partial shard under a shard's name.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fileio.atomic import atomic_write
from rendering.file_hash import file_sha256  # noqa: F401  (shard verification uses it from here)

# 2000-01-01T00:00:00Z: any fixed value makes the bytes reproducible; a sane date keeps `tar tv` readable.
SHARD_MTIME = 946_684_800
META_FIELD = "meta"
HALF_FIELDS = ("refmap_", "observed")  # field-name prefixes stored as float16 (module docstring)
HALF_EXPONENT = "half_exponent"
HALF_MAX_EXPONENT = 15  # the brightest stored value is ≤ 2^15
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")  # webdataset splits member names at the first dot


@dataclass(frozen=True)
class ShardInfo:
    """What a written shard is: its path, number of samples, size in bytes and sha256 (hex)."""

    path: Path
    samples: int
    bytes: int
    sha256: str


def shard_name(dataset: str, split: str, index: int) -> str:
    """File name of shard ``index``: ``<dataset>-<split>-000000.tar``."""
    return f"{dataset}-{split}-{index:06d}.tar"


def sample_key(dataset: str, split: str, index: int) -> str:
    """Key of sample ``index`` of a split (no dots, as webdataset requires)."""
    return f"{dataset}-{split}-{index:08d}"


def _check_name(name: str, what: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"{what} {name!r} must be non-empty and use only letters, digits, '_' and '-'")


def _npy_bytes(field: str, array: np.ndarray, half: int | None = None) -> bytes:
    """.npy bytes; float arrays as float32, or as float16 times 2^−half when ``half`` is given."""
    array = np.asarray(array)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise ValueError(f"sample field {field!r} holds NaN or Inf values; refusing to write it")
        array = array.astype(np.float32, copy=False)  # HDR: converted, never clipped
        if half is not None:
            array = np.ldexp(array, -half).astype(np.float16)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8)
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _plain(value: Any) -> Any:
    """numpy scalars → Python values, for JSON."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def is_half(field: str) -> bool:
    """Whether ``field`` is stored as float16 (:data:`HALF_FIELDS`)."""
    return field.startswith(HALF_FIELDS)


def half_exponent(sample: dict[str, Any]) -> int:
    """e such that the sample's images times 2^−e are at most 2^15 (0 for an all-dark sample)."""
    brightest = max(
        (float(np.max(np.abs(v))) for f, v in sample.items() if is_half(f) and isinstance(v, np.ndarray)),
        default=0.0,
    )
    if not np.isfinite(brightest):
        return 0  # _npy_bytes refuses the non-finite field with a clear message
    return int(np.ceil(np.log2(brightest))) - HALF_MAX_EXPONENT if brightest > 0 else 0


def restore_half(field: str, array: np.ndarray, exponent: int) -> np.ndarray:
    """A decoded array in float32: float16 image fields times 2^exponent (exact), others as they are."""
    if array.dtype == np.float16:
        return np.ldexp(array.astype(np.float32), exponent).astype(np.float32)
    return array


def encode_sample(key: str, sample: dict[str, Any]) -> list[tuple[str, bytes]]:
    """A sample dict → its tar members ``(name, bytes)``, in a fixed order (fields sorted)."""
    _check_name(key, "sample key")
    members, meta = [], {}
    exponent = half_exponent(sample)
    if any(is_half(f) and isinstance(v, np.ndarray) for f, v in sample.items()):
        meta[HALF_EXPONENT] = exponent
    for field in sorted(sample):
        _check_name(field, "sample field")
        if field == META_FIELD:
            raise ValueError(f"sample field name {META_FIELD!r} is reserved for the metadata member")
        value = sample[field]
        if isinstance(value, np.ndarray):
            half = exponent if is_half(field) else None
            members.append((f"{key}.{field}.npy", _npy_bytes(field, value, half)))
        else:
            meta[field] = _plain(value)
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"), allow_nan=False)
    members.append((f"{key}.{META_FIELD}.json", text.encode()))
    return members


def decode_member(name: str, data: bytes) -> tuple[str, Any]:
    """One tar member (name without the key, e.g. ``refmap_obs.npy``) → ``(field, value)``.

    ``.npy`` → numpy array; ``meta.json`` → the metadata dict (field ``meta``).
    """
    field, _, extension = name.rpartition(".")
    if extension == "npy":
        return field, np.load(io.BytesIO(data), allow_pickle=False)
    if extension == "json":
        return field, json.loads(data)
    raise ValueError(f"unknown member type {name!r}")


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = SHARD_MTIME
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_shard(path: str | os.PathLike, samples: Iterable[tuple[str, dict[str, Any]]]) -> ShardInfo:
    """Write ``(key, sample)`` pairs to the tar shard ``path``, atomically; return its ShardInfo.

    The bytes depend only on the samples (fixed mtime/owner/mode, USTAR headers, sorted fields).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with atomic_write(path, fsync=True) as tmp, open(tmp, "wb") as stream:
        with tarfile.open(fileobj=stream, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for key, sample in samples:
                for name, data in encode_sample(key, sample):
                    tar.addfile(_tarinfo(name, len(data)), io.BytesIO(data))
                count += 1
    return ShardInfo(path=path, samples=count, bytes=path.stat().st_size, sha256=file_sha256(path))


def raw_samples(path: str | os.PathLike) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """``(key, arrays as stored, metadata)`` of each sample of a shard, in order (image fields
    still float16 under their ``half_exponent``: what ``verify-shards`` checks).

    Raises ``tarfile.TarError``/``ValueError``/``EOFError`` on a truncated or corrupted shard.
    """
    key, arrays, meta = None, {}, {}
    with tarfile.open(path, mode="r:") as tar:
        for info in tar:
            if not info.isfile():
                continue
            member_key, _, rest = info.name.partition(".")
            if member_key != key:
                if key is not None:
                    yield key, arrays, meta
                key, arrays, meta = member_key, {}, {}
            field, value = decode_member(rest, tar.extractfile(info).read())
            if field == META_FIELD:
                meta = value
            else:
                arrays[field] = value
    if key is not None:
        yield key, arrays, meta


def read_shard(path: str | os.PathLike) -> Iterator[tuple[str, dict[str, Any]]]:
    """Decode a shard back to ``(key, sample)`` pairs: arrays as numpy, metadata fields merged in.

    Raises ``tarfile.TarError``/``ValueError``/``EOFError`` on a truncated or corrupted shard.
    """
    for key, arrays, meta in raw_samples(path):
        yield key, _restored({**arrays, **meta})


def _restored(sample: dict[str, Any]) -> dict[str, Any]:
    exponent = int(sample.pop(HALF_EXPONENT, 0))
    return {f: restore_half(f, v, exponent) if isinstance(v, np.ndarray) else v for f, v in sample.items()}
