"""WebDataset shards and manifests: exact HDR round trips, deterministic bytes, atomic writes, and
verification that finds every kind of damage."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest

from pipeline.manifest import sample_row, verify_split, write_manifests
from pipeline.shards import SHARD_MTIME, read_shard, sample_key, shard_name, write_shard


def make_samples(rng, count: int, first: int = 0) -> list[tuple[str, dict]]:
    samples = []
    for index in range(first, first + count):
        refmap = (rng.random((3, 8, 8)) * 10.0 ** rng.uniform(-6, 6, (3, 8, 8))).astype(np.float32)
        refmap[0, 0, 0] = 1e6  # a sun: far beyond float16, must survive unclipped
        refmap[1, 0, 0] = 0.0
        samples.append(
            (
                sample_key("drmnet", "train", index),
                {
                    "refmap_obs": refmap,
                    "z_obs": rng.random(6),  # float64 in, float32 stored
                    "mask": rng.random((4, 4)) > 0.5,
                    "k": int(rng.integers(1, 50)),
                    "K": 50,
                    "view_azimuth": float(rng.uniform(-np.pi, np.pi)),
                    "envmap_id": "sky-0-00001",
                },
            )
        )
    return samples


def test_round_trip_keeps_hdr_values_to_float16_precision(tmp_path, rng):
    samples = make_samples(rng, 3)
    info = write_shard(tmp_path / "a.tar", samples)
    assert info.samples == 3 and info.bytes == (tmp_path / "a.tar").stat().st_size
    for (key, written), (read_key, read) in zip(samples, read_shard(info.path), strict=True):
        assert read_key == key
        assert read["refmap_obs"].dtype == np.float32
        # Refmaps are stored as float16 under a power-of-two scale: the 1e6 sun is not clipped at
        # float16's 65,504, and every value within 2^-29 of the brightest keeps 11 bits.
        refmap, stored = written["refmap_obs"], read["refmap_obs"]
        kept = refmap >= refmap.max() * 2.0**-29
        np.testing.assert_allclose(stored[kept], refmap[kept], rtol=2.0**-11, atol=0)
        assert stored[0, 0, 0] == pytest.approx(1e6, rel=2.0**-11) and stored[1, 0, 0] == 0.0
        assert (stored[~kept] <= refmap.max() * 2.0**-29).all()
        np.testing.assert_array_equal(read["z_obs"], written["z_obs"].astype(np.float32))
        assert read["mask"].dtype == np.uint8 and np.array_equal(read["mask"], written["mask"])
        assert (read["k"], read["K"], read["envmap_id"]) == (written["k"], 50, "sky-0-00001")
        assert read["view_azimuth"] == written["view_azimuth"]


def test_same_samples_give_identical_bytes_with_fixed_headers(tmp_path):
    first = write_shard(tmp_path / "a.tar", make_samples(np.random.default_rng(5), 2))
    second = write_shard(tmp_path / "b.tar", make_samples(np.random.default_rng(5), 2))
    assert first.path.read_bytes() == second.path.read_bytes() and first.sha256 == second.sha256
    with tarfile.open(first.path) as tar:
        members = tar.getmembers()
    assert {(m.mtime, m.uid, m.gid, m.uname, m.mode) for m in members} == {(SHARD_MTIME, 0, 0, "", 0o644)}
    # Members of a sample are contiguous and named <key>.<field>.<ext> with a dot-free key.
    assert [m.name.split(".")[0] for m in members] == sorted(m.name.split(".")[0] for m in members)


def test_interrupted_write_leaves_the_previous_shard_and_no_temporary_file(tmp_path, rng):
    good = write_shard(tmp_path / "s.tar", make_samples(rng, 2))
    before = good.path.read_bytes()

    def failing():
        yield from make_samples(rng, 1)
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError, match="renderer crashed"):
        write_shard(tmp_path / "s.tar", failing())
    assert good.path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tar"]


@pytest.mark.parametrize(
    ("key", "sample", "message"),
    [
        ("k-1", {"refmap_obs": np.array([np.nan], dtype=np.float32)}, "NaN or Inf"),
        ("k.1", {"refmap_obs": np.zeros(1)}, "sample key"),
        ("k-1", {"refmap.obs": np.zeros(1)}, "sample field"),
    ],
)
def test_bad_samples_are_refused(tmp_path, key, sample, message):
    with pytest.raises(ValueError, match=message):
        write_shard(tmp_path / "bad.tar", [(key, sample)])
    assert not list(tmp_path.iterdir())


def test_verification_finds_corrupted_truncated_missing_and_unlisted_shards(tmp_path, rng):
    records = []
    for shard in range(4):
        name = shard_name("drmnet", "train", shard)
        samples = make_samples(rng, 2, first=2 * shard)
        info = write_shard(tmp_path / name, samples)
        rows = [sample_row(key, name, 2 * shard + i, s) for i, (key, s) in enumerate(samples)]
        records.append(
            {"shard": name, "samples": 2, "bytes": info.bytes, "sha256": info.sha256, "rows": rows}
        )
    write_manifests(tmp_path, records)
    assert verify_split(tmp_path) == []

    corrupted, truncated, missing = (tmp_path / shard_name("drmnet", "train", i) for i in range(3))
    data = bytearray(corrupted.read_bytes())
    data[700] ^= 0x01  # one bit of the first array's data
    corrupted.write_bytes(bytes(data))
    truncated.write_bytes(truncated.read_bytes()[:1024])
    missing.unlink()
    write_shard(tmp_path / "drmnet-train-000099.tar", make_samples(rng, 1))
    problems = {p.path.name: p.problem for p in verify_split(tmp_path)}
    assert set(problems) == {corrupted.name, truncated.name, missing.name, "drmnet-train-000099.tar"}
    assert "sha256" in problems[corrupted.name] and "size" in problems[truncated.name]
    assert problems[missing.name] == "missing"
