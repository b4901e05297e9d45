"""A small drmnet split written the way `drmnet render-dataset` lays it out (shards + parquet
manifests) from random arrays, optionally damaged in ways the shard writer itself refuses (NaN):
for the shard-verification and orphan tests."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np

from pipeline.manifest import sample_row, write_manifests
from pipeline.shards import _tarinfo, encode_sample, file_sha256, sample_key, shard_name

R = 8


def drmnet_sample(rng: np.random.Generator, index: int) -> dict:
    refmap = lambda: (rng.random((3, R, R)) * 4).astype(np.float32)  # noqa: E731
    return {
        "refmap_obs": refmap(),
        "refmap_k": refmap(),
        "refmap_next": refmap(),
        "refmap_mirror": refmap(),
        "z_obs": rng.random(6).astype(np.float32),
        "z_k": rng.random(6).astype(np.float32),
        "z_next": rng.random(6).astype(np.float32),
        "k": 1 + index % 3,
        "K": 5,
        "view_azimuth": 0.5,
        "envmap_id": f"sky-0-{index % 2:05d}",
        "material_source": "uniform",
    }


def write_split(split: Path, damage=None, shards: int = 2, per_shard: int = 2) -> Path:
    """A drmnet split laid out as `drmnet render-dataset` does. ``damage(key, field, array)``
    returns the array to store instead (written as is: the shard writer itself refuses NaN)."""
    rng = np.random.default_rng(0)
    records = []
    for shard in range(shards):
        name = shard_name("drmnet", "train", shard)
        rows, buffer = [], io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for index in range(shard * per_shard, (shard + 1) * per_shard):
                key = sample_key("drmnet", "train", index)
                sample = drmnet_sample(rng, index)
                rows.append(sample_row(key, name, index, sample))
                for member, data in encode_sample(key, sample):
                    field = member.split(".")[1]
                    if damage is not None and member.endswith(".npy"):
                        array = np.load(io.BytesIO(data))
                        changed = damage(key, field, array)
                        if changed is not array:
                            out = io.BytesIO()
                            np.save(out, changed)
                            data = out.getvalue()
                    tar.addfile(_tarinfo(member, len(data)), io.BytesIO(data))
        (split / name).parent.mkdir(parents=True, exist_ok=True)
        (split / name).write_bytes(buffer.getvalue())
        records.append(
            {
                "shard": name,
                "samples": per_shard,
                "bytes": len(buffer.getvalue()),
                "sha256": file_sha256(split / name),
                "rows": rows,
            }
        )
    write_manifests(split, records)
    return split
