"""The ``render-dataset`` Prefect flow: deterministic bytes, resumption after SIGKILL, repair of
corrupted shards, worker processes and a Dask cluster giving the bytes of local threads, and
disjoint envmap splits.

Tiny on purpose (R = 16, 8 spp, a handful of samples): what is tested is the machinery around
the renderers. Prefect runs on its ephemeral API with its database under the temp directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

# Before Prefect is imported: a private Prefect home, never the user's server or database.
os.environ["PREFECT_HOME"] = str(Path(tempfile.gettempdir()) / f"drmnet-test-prefect-{os.getuid()}")
os.environ.pop("PREFECT_API_URL", None)

from pipeline.cli.app import app  # noqa: E402
from pipeline.flows.render_dataset import run_render_dataset, worker_id  # noqa: E402
from pipeline.manifest import (  # noqa: E402
    SAMPLES_MANIFEST,
    SHARDS_MANIFEST,
    read_samples_manifest,
    record_path,
    verify_split,
)
from pipeline.shards import read_shard  # noqa: E402
from pipeline.splits import make_envmap_splits, plan_envmap_splits, split_envmap_ids  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def tiny_params(spp: int = 8, **dataset) -> dict:
    return {
        "profile": "tiny",
        "profiles": {"tiny": {"refmap_res": 16, "spp": spp}},
        "envmaps": {"n": 6, "seed": 3, "kinds": {"sky": 0.5, "studio": 0.5}, "envmap_height": 16},
        "envmaps_split": {"seed": 0, "proportions": {"train": 0.5, "val": 0.25, "test": 0.25}},
        "dataset": {
            "seed": 0,
            "shard_size": 2,
            "samples": {"drmnet": {"train": 4, "test": 2}, "obsnet": {"train": 2, "test": 2}},
            "object_res": 24,
            "object_spp": 4,
            "shapes": ["sphere", "ellipsoid"],
            "runner": "threads",
            "workers": 2,
            **dataset,
        },
    }


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A directory with params.yaml and the envmap splits of ``tiny_params``."""
    root = tmp_path_factory.mktemp("dataset")
    params = tiny_params()
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    make_envmap_splits(params, root / "envmaps")
    yield root
    # Send the last logs and events, then stop Prefect's ephemeral server: left to the interpreter's
    # exit, the log worker would retry against a server that is already gone.
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.server.api.server import SubprocessASGIServer

    APILogWorker.drain_all(timeout=30)
    EventsWorker.drain_all(timeout=30)
    SubprocessASGIServer().stop()


def write_params(root: Path, name: str, spp: int = 8, **dataset) -> Path:
    path = root / name
    path.write_text(yaml.safe_dump(tiny_params(spp, **dataset)))
    return path


def render(
    workspace: Path, out: Path, dataset="drmnet", split="train", params="params.yaml", **runner
) -> dict:
    return run_render_dataset(
        dataset,
        split,
        params_path=workspace / params,
        out_dir=out,
        envmap_dir=workspace / "envmaps",
        **runner,
    )


def split_bytes(split_dir: Path) -> dict[str, bytes]:
    names = sorted(p.name for p in split_dir.glob("*.tar")) + [SAMPLES_MANIFEST, SHARDS_MANIFEST]
    return {name: (split_dir / name).read_bytes() for name in names}


@pytest.fixture(scope="module")
def reference(workspace) -> Path:
    """drmnet/train rendered once with the local thread runner: the bytes others must match."""
    render(workspace, workspace / "reference")
    return workspace / "reference" / "drmnet" / "train"


def test_same_params_give_identical_bytes_and_another_seed_other_data(workspace, reference):
    again = render(workspace, workspace / "again", workers=1)
    assert again["rendered_samples"] == 4
    assert split_bytes(Path(again["split_dir"])) == split_bytes(reference)
    assert verify_split(reference) == []

    write_params(workspace, "seed1.yaml", seed=1)
    other = Path(render(workspace, workspace / "seed1", params="seed1.yaml")["split_dir"])
    first = dict(read_shard(reference / "drmnet-train-000000.tar"))
    changed = dict(read_shard(other / "drmnet-train-000000.tar"))
    assert first.keys() == changed.keys()
    for key in first:
        assert not np.array_equal(first[key]["z_obs"], changed[key]["z_obs"])
        assert not np.array_equal(first[key]["refmap_obs"], changed[key]["refmap_obs"])


def test_drmnet_samples_hold_a_valid_schedule_pair(reference):
    rows = read_samples_manifest(reference).to_pylist()
    assert [row["index"] for row in rows] == [0, 1, 2, 3]
    for key, sample in read_shard(reference / "drmnet-train-000000.tar"):
        assert 1 <= sample["k"] <= sample["K"] - 1
        assert sample["refmap_obs"].shape == sample["refmap_k"].shape == (3, 16, 16)
        # z_{k-1} is one schedule step closer to the mirror than z_k.
        mirror = np.array([1, 1, 1, 1, 0, 1], dtype=np.float32)
        ratio = np.linalg.norm(sample["z_next"] - mirror) / np.linalg.norm(sample["z_k"] - mirror)
        assert ratio == pytest.approx(0.95, rel=1e-4)
        row = next(r for r in rows if r["key"] == key)
        assert row["K"] == sample["K"] and row["envmap_id"] == sample["envmap_id"]


def test_killed_render_resumes_and_redoes_only_unfinished_shards(workspace, tmp_path):
    # Six one-sample shards rendered one at a time, slow enough to kill the run between shards.
    params = write_params(
        workspace, "resume.yaml", 512, shard_size=1, samples={"drmnet": {"train": 6}}, workers=1
    )
    out = tmp_path / "shards"
    split_dir = out / "drmnet" / "train"
    code = (
        "from pipeline.flows.render_dataset import run_render_dataset; "
        f"run_render_dataset('drmnet', 'train', params_path={str(params)!r}, out_dir={str(out)!r}, "
        f"envmap_dir={str(workspace / 'envmaps')!r})"
    )
    # Its own process group, so the kill also takes the ephemeral Prefect server it started.
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    first_record = record_path(split_dir, "drmnet-train-000000.tar")
    try:
        while not first_record.exists() and process.poll() is None:
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert first_record.exists(), "the subprocess died before finishing its first shard"
    # Finished = shard and record written (a kill between the two leaves a shard that is redone).
    finished = sorted(p.name for p in split_dir.glob("*.tar") if record_path(split_dir, p.name).exists())
    assert len(finished) < 6, "the run finished before it could be killed"
    assert not (split_dir / SHARDS_MANIFEST).exists(), "a killed run must not look complete"
    before = {name: (split_dir / name).stat() for name in finished}

    summary = render(workspace, out, params="resume.yaml")
    assert summary["skipped"] == len(finished)
    assert summary["rendered_samples"] == 6 - len(finished)
    for name, stat in before.items():
        after = (split_dir / name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns), f"{name} was rewritten"
    assert verify_split(split_dir) == []
    assert len(read_samples_manifest(split_dir)) == 6
    assert not list(split_dir.rglob(".*.tmp")), "temporary files of the killed run are left"


def test_corrupted_and_truncated_shards_are_detected_and_rerendered(workspace, reference):
    from typer.testing import CliRunner

    out = workspace / "damaged"
    split_dir = Path(render(workspace, out)["split_dir"])
    flipped, truncated = split_dir / "drmnet-train-000000.tar", split_dir / "drmnet-train-000001.tar"
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    truncated.write_bytes(truncated.read_bytes()[:3000])

    result = CliRunner().invoke(app, ["verify-shards", str(out)])
    assert result.exit_code == 1
    assert flipped.name in result.output and truncated.name in result.output

    summary = render(workspace, out)
    assert summary["skipped"] == 0 and summary["rendered_samples"] == 4
    assert CliRunner().invoke(app, ["verify-shards", str(out)]).exit_code == 0
    assert split_bytes(split_dir) == split_bytes(reference)


def test_dask_cluster_gives_the_bytes_of_local_threads(workspace, reference):
    from distributed import LocalCluster

    # Two in-process workers (processes=False): each worker process would have to start Mitsuba
    # and its JIT on its own, which on two cores costs more than the whole render.
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        summary = render(workspace, workspace / "dask", dask_address=cluster.scheduler_address)
    assert summary["rendered_samples"] == 4
    assert split_bytes(Path(summary["split_dir"])) == split_bytes(reference)


def test_process_workers_give_the_bytes_of_local_threads_and_honour_the_worker_count(workspace):
    # Four one-sample shards, so that two workers have work to share. The processes are spawned:
    # each starts Python, Prefect and Mitsuba on its own and activates its own variant.
    write_params(workspace, "one-per-shard.yaml", shard_size=1)
    threads = render(workspace, workspace / "one-threads", params="one-per-shard.yaml")
    processes = render(
        workspace, workspace / "one-processes", params="one-per-shard.yaml", runner="processes", workers=2
    )
    assert processes["shards"] == 4 and processes["rendered_samples"] == 4
    assert split_bytes(Path(processes["split_dir"])) == split_bytes(Path(threads["split_dir"]))
    assert threads["workers"] == [worker_id()]
    assert 1 <= len(processes["workers"]) <= 2 and worker_id() not in processes["workers"]


def test_envmap_splits_never_share_an_envmap(workspace, tmp_path):
    from rendering.hdrio import write_exr

    ids = {split: set(split_envmap_ids(workspace / "envmaps", split)) for split in ("train", "val", "test")}
    assert all(ids.values())
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])
    pixels = {
        split: {(workspace / "envmaps" / split / f"{i}.exr").read_bytes() for i in names}
        for split, names in ids.items()
    }
    assert not (
        pixels["train"] & pixels["val"] or pixels["train"] & pixels["test"] or pixels["val"] & pixels["test"]
    )

    # A user's file saved twice under two names lands twice in one split, never in two.
    users = tmp_path / "users"
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c", "d", "e"):
        write_exr(users / f"{name}.exr", rng.random((8, 16, 3)).astype(np.float32))
    (users / "a_copy.exr").write_bytes((users / "a.exr").read_bytes())
    params = tiny_params()
    params["envmaps"].update(n=0, user_dir=str(users))
    plan = plan_envmap_splits(params)
    where = {spec.id: split for split, specs in plan.items() for spec in specs}
    assert len(where) == 6 and where["user-a"] == where["user-a_copy"]
