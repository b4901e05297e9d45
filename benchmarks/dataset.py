"""Dataset rendering throughput on this machine: samples/s of the whole ``render-dataset`` path
for the ``tiny`` and ``small`` profiles, against the bare renderer measured in the same run.

Per profile (R and spp from params.yaml's profiles; the ``dataset`` section for the rest):

- renderer alone: the ``render_refmaps`` calls a DRMNet sample makes (4 materials, one seed),
  no planning, encoding or files: the baseline;
- ``render_shard`` (no Prefect): plan + render + encode + write the shard + its record, for
  ``drmnet`` and ``obsnet`` samples (ObsNet adds an object render and the image → refmap step);
- the Prefect flow (ephemeral API, thread runner, 1 and 2 workers) on ``drmnet``, server
  start-up excluded (one warm-up run first).

Run: ``python benchmarks/dataset.py [--profiles tiny small] [--samples 32]``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from pipeline.config import load_params
from pipeline.flows.render_dataset import plan_shards, prepare_split_dir, render_shard, run_render_dataset
from pipeline.samples import make_sample, plan_sample, settings_from_params
from pipeline.splits import make_envmap_splits, split_envmap_ids, split_envmap_path
from rendering.envmap import read_envmap
from rendering.refmap import MIRROR, render_refmaps
from rendering.variant import resolve_variant


def workspace_params(base: dict, profile: str, samples: int) -> dict:
    params = {key: base[key] for key in ("profile", "profiles", "render", "drm") if key in base}
    params["profile"] = profile
    params["envmaps"] = {"n": 6, "seed": 0, "kinds": {"sky": 0.5, "studio": 0.5}, "res": 64}
    params["envmaps_split"] = {"seed": 0, "proportions": {"train": 1.0, "val": 0.0, "test": 0.0}}
    dataset = dict(base.get("dataset") or {})
    dataset.update(
        shard_size=8, samples={"drmnet": {"train": samples}, "obsnet": {"train": max(samples // 4, 2)}}
    )
    params["dataset"] = dataset
    return params


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:8.2f} samples/s ({count} in {seconds:6.1f} s)"


def bench_profile(base: dict, profile: str, samples: int, root: Path) -> None:
    params = workspace_params(base, profile, samples)
    params_path = root / f"{profile}.yaml"
    params_path.write_text(yaml.safe_dump(params))
    make_envmap_splits(params, root / "envmaps")
    settings = settings_from_params(params)
    ids = split_envmap_ids(root / "envmaps", "train")
    envmaps = {i: read_envmap(split_envmap_path(root / "envmaps", "train", i)) for i in ids}
    objects = f"{settings.object_res}px/{settings.object_spp} spp"
    print(f"[{profile}] refmaps R={settings.res}/{settings.spp} spp, objects {objects}")

    plans = [plan_sample(settings, "drmnet", "train", i, ids) for i in range(samples)]
    warm_up = np.stack([MIRROR] * 4)  # the timed calls' shapes: compile once, outside the timing
    render_refmaps(envmaps[ids[0]], warm_up, np.zeros(4), settings.res, settings.spp, 0)
    start = time.perf_counter()
    for plan in plans:
        materials = np.stack([plan.z_obs, plan.z_k, plan.z_next, MIRROR])
        azimuths = np.full(4, plan.view_azimuth)
        render_refmaps(
            envmaps[plan.envmap_id], materials, azimuths, settings.res, settings.spp, plan.render_seed
        )
    bare = time.perf_counter() - start
    print(f"  renderer alone (4 refmaps/sample)   {rate(samples, bare)}")

    variant = resolve_variant((params.get("render") or {}).get("variant"))
    for dataset in ("drmnet", "obsnet"):
        jobs = plan_shards(settings, dataset, "train", root / "shards", root / "envmaps", variant)
        prepare_split_dir(jobs[0].split_dir)
        warm = plan_sample(settings, dataset, "train", 0, ids)
        make_sample(warm, envmaps[warm.envmap_id], settings)  # warm-up (JIT, shapes)
        start = time.perf_counter()
        for job in jobs:
            render_shard(job)
        seconds = time.perf_counter() - start
        count = sum(job.count for job in jobs)
        extra = (
            f"   ×{(samples / bare) / (count / seconds):.2f} the renderer's time"
            if dataset == "drmnet"
            else ""
        )
        print(f"  render_shard {dataset:7s}              {rate(count, seconds)}{extra}")

    for workers in (1, 2):
        out = root / f"flow-{workers}"
        summary = run_render_dataset(
            "drmnet",
            "train",
            params_path=params_path,
            out_dir=out,
            envmap_dir=root / "envmaps",
            runner="threads",
            workers=workers,
        )
        print(
            f"  Prefect flow drmnet, {workers} thread(s)     {rate(summary['samples'], summary['seconds'])}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", nargs="+", default=["tiny", "small"])
    parser.add_argument("--samples", type=int, default=32, help="drmnet samples per measurement")
    args = parser.parse_args()
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs"):  # keep the figures readable
        logging.getLogger(name).setLevel(logging.WARNING)
    base = load_params()
    with tempfile.TemporaryDirectory(prefix="drmnet-bench-dataset-") as tmp:
        root = Path(tmp)
        warm = workspace_params(base, "tiny", 2)
        (root / "warm.yaml").write_text(yaml.safe_dump(warm))
        make_envmap_splits(warm, root / "envmaps")
        run_render_dataset(
            "drmnet",
            "train",
            params_path=root / "warm.yaml",
            out_dir=root / "warm",
            envmap_dir=root / "envmaps",
        )  # Prefect's ephemeral server starts here
        for profile in args.profiles:
            bench_profile(base, profile, args.samples, root)


if __name__ == "__main__":
    main()
