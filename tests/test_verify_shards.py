"""`drmnet verify-shards` checks what shards hold, not only their bytes: a shard whose manifest
matches its bytes but whose refmaps are NaN, negative or of another shape fails, naming the
shard, the sample and the field; training refuses a damaged split before it reads a sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from random_split import R, write_split
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.manifest import (
    SAMPLE_SCHEMA,
    SAMPLES_MANIFEST,
    read_samples_manifest,
    verify_split,
)
from pipeline.shards import sample_key, shard_name
from rendering.errors import InputError

REPO = Path(__file__).resolve().parents[1]
DAMAGED = sample_key("drmnet", "train", 3)  # in the second shard


def damage_one(field: str, make):
    return lambda key, name, array: make(array) if (key, name) == (DAMAGED, field) else array


@pytest.mark.parametrize(
    "field, make, expected",
    [
        ("refmap_k", lambda a: np.full_like(a, np.nan), f"{R * R * 3} of {R * R * 3} values are NaN or Inf"),
        ("refmap_next", lambda a: -a, "values are negative"),
        (
            "refmap_obs",
            lambda a: a[:, :4],
            "(3, 4, 8), other samples of the split hold float16 (3, 8, 8)",
        ),
        ("refmap_mirror", lambda a: a.astype(np.float32), "float32 (3, 8, 8), other samples"),
        ("z_k", lambda a: a + 2, "values are outside [0, 1]"),
    ],
)
def test_verify_shards_names_the_shard_the_sample_and_the_field(tmp_path, field, make, expected):
    write_split(tmp_path / "good")
    assert verify_split(tmp_path / "good") == []

    split = write_split(tmp_path / "drmnet" / "train", damage_one(field, make))
    result = CliRunner().invoke(app, ["verify-shards", str(tmp_path / "drmnet")])
    assert result.exit_code == 1
    (bad,) = [line for line in result.output.splitlines() if "BAD" in line]
    assert bad.startswith(f"  BAD {split / shard_name('drmnet', 'train', 1)}: sample {DAMAGED}: {field}: ")
    assert expected in bad


def test_a_sample_that_disagrees_with_the_samples_manifest_is_reported(tmp_path):
    split = write_split(tmp_path)
    rows = read_samples_manifest(split).to_pylist()
    rows[1]["k"] = 4
    pq.write_table(pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA), split / SAMPLES_MANIFEST)
    (problem,) = verify_split(split)
    assert problem.path.name == shard_name("drmnet", "train", 0)
    assert problem.problem == f"sample {sample_key('drmnet', 'train', 1)}: k 2, the manifest says 4"


def test_training_refuses_a_truncated_shard_before_it_starts(tmp_path, monkeypatch):
    from pipeline.training.stage import run_training

    split = write_split(tmp_path / "split")
    shard = split / shard_name("drmnet", "train", 1)
    shard.write_bytes(shard.read_bytes()[:3000])
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as refused:
        run_training("drmnet", params, profile="tiny", data_dir=split, register=False)
    assert str(refused.value).startswith(f"{shard}: size 3000 bytes, manifest says ")
    assert not (tmp_path / "checkpoints").exists()
