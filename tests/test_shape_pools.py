"""Shape pools: train, val and test objects come from disjoint, deterministic pools (the paper
keeps separate shape sets), users bring their own meshes per split, and every sample records
which shape it shows."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.manifest import sample_row
from pipeline.samples import SPLITS, DatasetSettings, make_sample, plan_sample, shape_pools
from rendering.errors import InputError
from rendering.shapes import make_shape, mesh_arrays

REPO = Path(__file__).resolve().parents[1]
ENVMAP_IDS = ["a", "b"]
TETRAHEDRON = "v 0 0 0\nv 2 0 0\nv 0 2 0\nv 0 0 2\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n"
PYRAMID = "v -1 0 -1\nv 1 0 -1\nv 1 0 1\nv -1 0 1\nv 0 3 0\nf 1 2 3 4\nf 1 5 2\nf 2 5 3\nf 3 5 4\nf 4 5 1\n"


def settings(**fields) -> DatasetSettings:
    return DatasetSettings(**{"refmap_res": 8, "spp": 2, "object_res": 16, "object_spp": 2, **fields})


def identities(pool) -> set[tuple]:
    return {member.identity for member in pool}


def test_pools_are_disjoint_sized_as_configured_and_the_same_in_every_process():
    pools = shape_pools(settings(shape_pool={"train": 30, "val": 8, "test": 10}))
    assert {split: len(pools[split]) for split in SPLITS} == {"train": 30, "val": 8, "test": 10}
    for split in SPLITS:
        assert len(identities(pools[split])) == len(pools[split])  # no shape twice within a split
        assert {m.name for m in pools[split]} == {"ellipsoid", "superquadric", "blob"}  # kinds cycled
    train, val, test = (identities(pools[split]) for split in SPLITS)
    assert not (train & val or train & test or val & test)

    # Plain data of the params: another process (another hash salt) builds the same pools.
    code = (
        "import json; from pipeline.samples import DatasetSettings, shape_pools; "
        "pools = shape_pools(DatasetSettings(shape_pool={'train': 30, 'val': 8, 'test': 10})); "
        "print(json.dumps({s: [[m.name, m.seed] for m in p] for s, p in pools.items()}))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert json.loads(output.stdout) == {s: [[m.name, m.seed] for m in p] for s, p in pools.items()}

    # Another dataset seed: other shapes.
    reseeded = shape_pools(settings(seed=1, shape_pool={"train": 30, "val": 8, "test": 10}))
    assert not identities(reseeded["train"]) & train


def test_a_listed_sphere_is_the_one_shape_every_split_shares():
    pools = shape_pools(settings(shapes=("sphere", "blob"), shape_pool={"train": 5, "val": 2, "test": 2}))
    for split in SPLITS:
        assert [m.name for m in pools[split]].count("sphere") == 1
        assert len(pools[split]) == 1 + {"train": 5, "val": 2, "test": 2}[split]
    solid = [identities(m for m in pools[split] if m.name != "sphere") for split in SPLITS]
    assert not (solid[0] & solid[1] or solid[0] & solid[2] or solid[1] & solid[2])


def test_samples_of_a_split_only_show_their_splits_shapes():
    config = settings(shape_pool={"train": 12, "val": 4, "test": 4})
    pools = shape_pools(config)
    for split in SPLITS:
        pool = identities(pools[split])
        shown = set()
        for dataset in ("obsnet", "drmnet"):
            for index in range(24):
                plan = plan_sample(config, dataset, split, index, ENVMAP_IDS)
                key = ("mesh", plan.shape_sha256) if plan.shape_sha256 else (plan.shape, plan.shape_seed)
                assert key in pool, f"{dataset}/{split} sample {index} shows {key}, not of its pool"
                shown.add(key)
        assert len(shown) > 1


def test_user_meshes_join_their_splits_pool_and_are_recorded(tmp_path):
    meshes = {split: tmp_path / split for split in ("train", "test")}
    for directory in meshes.values():
        directory.mkdir()
    (meshes["train"] / "tetra.obj").write_text(TETRAHEDRON)
    (meshes["train"] / "notes.txt").write_text("not a mesh\n")
    (meshes["test"] / "pyramid.OBJ").write_text(PYRAMID)
    config = settings(
        shape_pool={"train": 3, "val": 2, "test": 0},  # test: the user's meshes alone
        mesh_dirs={split: str(directory) for split, directory in meshes.items()},
        samples={"obsnet": {"test": 2}},
    )
    pools = shape_pools(config)
    assert [Path(m.name).name for m in pools["train"] if m.sha256] == ["tetra.obj"]
    assert len(pools["train"]) == 4 and len(pools["val"]) == 2
    (pyramid,) = pools["test"]
    assert pyramid.sha256 == hashlib.sha256(PYRAMID.encode()).hexdigest()
    vertices, _, _ = mesh_arrays(make_shape(pyramid.name))  # normalised to the unit bounding sphere
    np.testing.assert_allclose(np.linalg.norm(vertices, axis=1).max(), 1.0, rtol=1e-6)
    # A changed mesh file changes the shard fingerprint, though the params did not change.
    assert config.fingerprint()["meshes"]["test"] == [["pyramid.OBJ", pyramid.sha256]]

    # The sample and its manifest row name the mesh and its content hash.
    plan = plan_sample(config, "obsnet", "test", 0, ENVMAP_IDS)
    assert plan.shape == pyramid.name
    sample = make_sample(plan, np.ones((8, 16, 3), np.float32), config)
    assert (sample["shape"], sample["shape_sha256"]) == ("pyramid.OBJ", pyramid.sha256)
    assert sample["observed_mask"].any()
    row = sample_row("obsnet-test-000000", "obsnet-test-000000.tar", 0, sample)
    assert (row["shape"], row["shape_seed"], row["shape_sha256"]) == ("pyramid.OBJ", None, pyramid.sha256)
    # ... and a procedural shape by its kind and seed.
    procedural = plan_sample(config, "obsnet", "val", 0, ENVMAP_IDS)
    sample = make_sample(procedural, np.ones((8, 16, 3), np.float32), config)
    row = sample_row("obsnet-val-000000", "obsnet-val-000000.tar", 0, sample)
    assert (row["shape"], row["shape_seed"], row["shape_sha256"]) == (
        procedural.shape,
        procedural.shape_seed,
        None,
    )


def test_one_mesh_in_two_splits_or_a_bad_mesh_directory_is_refused(tmp_path):
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
    (tmp_path / "train" / "tetra.obj").write_text(TETRAHEDRON)
    (tmp_path / "val" / "renamed_copy.obj").write_text(TETRAHEDRON)
    twice = settings(mesh_dirs={"train": str(tmp_path / "train"), "val": str(tmp_path / "val")})
    with pytest.raises(InputError, match=r"renamed_copy\.obj.*tetra\.obj"):
        shape_pools(twice)
    with pytest.raises(InputError, match="not a directory"):
        shape_pools(settings(mesh_dirs={"test": str(tmp_path / "missing")}))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".gitkeep").touch()  # an empty directory (as data/user/meshes/*) adds nothing
    assert shape_pools(settings(mesh_dirs={"test": str(tmp_path / "empty")})) == shape_pools(settings())
    with pytest.raises(InputError, match="val split has no shapes"):
        shape_pools(settings(shape_pool={"train": 2, "val": 0, "test": 2}))
    with pytest.raises(InputError, match="val split has no shapes.*holds no .obj/.ply files"):
        shape_pools(
            settings(shape_pool={"train": 2, "val": 0, "test": 2}, mesh_dirs={"val": str(tmp_path / "empty")})
        )
    with pytest.raises(InputError, match="unknown shapes"):
        shape_pools(settings(shapes=("torus",)))
