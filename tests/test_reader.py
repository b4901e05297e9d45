"""The training reader on real rendered shards: shapes, finiteness, every sample exactly once per
pass (over DataLoader workers and DDP ranks), fixed-length epochs, and the ObsNet/test fields."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

os.environ["PREFECT_HOME"] = str(Path(tempfile.gettempdir()) / f"drmnet-test-prefect-{os.getuid()}")

from pipeline.flows.render_dataset import finish_split_dir, plan_shards, prepare_split_dir, render_shard  # noqa: E402
from pipeline.reader import make_loader  # noqa: E402
from pipeline.samples import DatasetSettings  # noqa: E402
from pipeline.splits import make_envmap_splits  # noqa: E402

RES = 16


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """drmnet/train (8 samples in 4 shards) and obsnet/test (2 samples, measured BRDFs), rendered
    shard by shard."""
    root = tmp_path_factory.mktemp("reader")
    params = {
        "envmaps": {"n": 4, "seed": 1, "kinds": {"sky": 0.5, "studio": 0.5}, "envmap_height": 16},
        "envmaps_split": {"proportions": {"train": 0.5, "val": 0.0, "test": 0.5}},
    }
    make_envmap_splits(params, root / "envmaps")
    settings = DatasetSettings(
        refmap_res=RES,
        spp=4,
        shard_size=2,
        samples={"drmnet": {"train": 8}, "obsnet": {"test": 2}},
        object_res=24,
        object_spp=2,
        shapes=("sphere",),
        measured_fraction={"test": 1.0},
        materials={"builtin": 1, "cache_dir": str(root / "materials")},
    )
    for dataset, split in (("drmnet", "train"), ("obsnet", "test")):
        jobs = plan_shards(settings, dataset, split, root / "shards", root / "envmaps", "llvm_ad_rgb")
        prepare_split_dir(jobs[0].split_dir)
        for job in jobs:
            render_shard(job)
        finish_split_dir(jobs)
    return root / "shards"


def test_one_pass_over_two_workers_yields_every_sample_once(shards):
    loader = make_loader(shards / "drmnet" / "train", batch_size=3, num_workers=2, shuffle_buffer=4)
    keys = []
    for batch in loader:
        count = len(batch["__key__"])
        keys += batch["__key__"]
        for field in ("refmap_obs", "refmap_k", "refmap_next", "refmap_mirror"):
            assert batch[field].shape == (count, 3, RES, RES) and batch[field].dtype == torch.float32
            assert torch.isfinite(batch[field]).all() and (batch[field] >= 0).all()
        for field in ("z_obs", "z_k", "z_next"):
            assert batch[field].shape == (count, 6) and ((batch[field] >= 0) & (batch[field] <= 1)).all()
        assert batch["k"].dtype == torch.int64 and ((batch["k"] >= 1) & (batch["k"] < batch["K"])).all()
        assert batch["view_azimuth"].shape == (count,) and len(batch["envmap_id"]) == count
    assert sorted(keys) == [f"drmnet-train-{i:08d}" for i in range(8)]


def test_shuffling_is_reproducible_and_changes_with_the_epoch(shards):
    def orders(seed: int) -> list[list[str]]:
        loader = make_loader(shards / "drmnet" / "train", batch_size=8, num_workers=0, seed=seed, keys=("k",))
        return [[key for batch in loader for key in batch["__key__"]] for _ in range(2)]

    first, again = orders(seed=7), orders(seed=7)
    assert first == again
    assert first[0] != first[1] and sorted(first[0]) == sorted(first[1])


def test_epochs_of_fixed_length_and_only_the_requested_fields(shards):
    loader = make_loader(
        shards / "drmnet" / "train", batch_size=4, num_workers=2, epoch_samples=12, keys=("refmap_k", "z_k")
    )
    assert len(loader) == 3
    for _ in range(2):  # two epochs
        batches = list(loader)
        assert len(batches) == 3
        for batch in batches:
            assert set(batch) == {"__key__", "refmap_k", "z_k"}
            assert batch["refmap_k"].shape == (4, 3, RES, RES)


def test_ddp_ranks_read_disjoint_shards_that_cover_the_split(shards, monkeypatch):
    seen = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        loader = make_loader(shards / "drmnet" / "train", batch_size=8, num_workers=0, keys=("z_k",))
        seen.append({key for batch in loader for key in batch["__key__"]})
    assert not seen[0] & seen[1]
    assert len(seen[0]) == len(seen[1]) == 4 and len(seen[0] | seen[1]) == 8


def test_obsnet_test_samples_carry_the_observation_and_the_object(shards):
    from rendering.builtin_materials import BUILTIN_NAMES

    batch = next(iter(make_loader(shards / "obsnet" / "test", batch_size=2, num_workers=0)))
    # Observations of measured BRDFs; z_obs is the material's closest principled z.
    assert batch["material_source"] == [BUILTIN_NAMES[0]] * 2
    assert torch.equal(batch["z_obs"][0], batch["z_obs"][1])
    mask = batch["observed_mask"]
    assert mask.shape == (2, 1, RES, RES) and set(mask.unique().tolist()) <= {0.0, 1.0} and mask.any()
    assert batch["observed"].shape == (2, 3, RES, RES)
    assert (batch["observed"] * (1 - mask) == 0).all(), "unobserved bins must be 0"
    assert batch["refmap_obs"].shape == batch["refmap_mirror"].shape == (2, 3, RES, RES)
    assert batch["image"].shape == batch["normals"].shape == (2, 24, 24, 3)
    assert batch["mask"].dtype == torch.uint8 and batch["mask"].shape == (2, 24, 24)
    inside = batch["mask"].bool()
    assert torch.isfinite(batch["image"]).all() and (batch["image"] >= 0).all()
    assert (batch["normals"][~inside] == 0).all()
    assert torch.allclose(batch["normals"][inside].norm(dim=-1), torch.tensor(1.0), atol=1e-3)
