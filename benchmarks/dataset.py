"""Dataset rendering on this machine: throughput of the ``render-dataset`` path, of envmap
blocks, and the Monte Carlo noise and float16 storage error of the samples it writes.

``paths`` — per profile (R and spp from params.yaml's profiles; the ``dataset`` section for the
rest):

- renderer alone: the ``render_refmaps`` calls a DRMNet sample makes (4 materials, one seed),
  no planning, encoding or files: the baseline;
- ``render_shard`` (no Prefect): plan + render + encode + write the shard + its record, for
  ``drmnet`` and ``obsnet`` samples (ObsNet adds an object render and the image → refmap step);
- the Prefect flow (ephemeral API, thread runner, 1 and 2 workers) on ``drmnet``, server
  start-up excluded (one warm-up run first).

``blocks`` — DRMNet samples/s through ``make_samples`` with 1 sample per call (the baseline, as
``dataset.envmap_block: 1`` renders) against blocks of 16 and 64 samples per call, interleaved
repeats, medians; the ratio is taken within each repeat. Envmap loading and augmentation are left
out (once per block in a shard).

``noise`` — DRMNet samples of the profile (``make_samples``, z_K ~ U[0, 1]^6, random k) under
procedural sky and studio maps, against a high-spp reference of the same refmaps (another seed):

- the RMS Monte Carlo noise of L_k (relative to its RMS) and of the step L_{k−1} − L_k rendered
  with the sample's seed (common random numbers, as the dataset does) and, as the baseline, with
  independent seeds, against the step's own RMS size in the reference; medians over samples and
  the share of samples whose step noise exceeds half the step; at the profile's spp and at higher
  spp (same seeds) to show which spp brings the step noise below the step;
- the same in the domain the networks see (``models.drm``: ``intensity_scale`` of the observed
  L_K, then T(x) = log10(x + 0.1) + 1): L_k's noise in T beside IllNet's input noise σ, and the
  noise of the IllNet target T(L_{k−1}) − T(L_k) against its size;
- the error that float16 storage adds (the samples written with ``write_shard`` and read back
  with ``read_shard``), for L_k and the step in both domains, beside the noise above; and the
  bytes per sample (tar members) stored as float32 and as float16.

Run: ``python benchmarks/dataset.py [--parts paths blocks noise] [--profiles tiny small]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from models.config import DRMConfig
from models.drm import intensity_scale, to_network
from pipeline.config import load_params, with_profile
from pipeline.flows.render_dataset import plan_shards, prepare_split_dir, render_shard, run_render_dataset
from pipeline.samples import make_sample, make_samples, plan_sample, settings_from_params
from pipeline.shards import encode_sample, is_half, read_shard, write_shard
from pipeline.splits import make_envmap_splits, split_envmap_ids, split_envmap_path
from rendering.envmap import read_envmap
from rendering.principled import MIRROR
from rendering.procedural_envmaps import make_envmap
from rendering.refmap import render_refmaps
from rendering.variant import resolve_variant


def workspace_params(base: dict, profile: str, samples: int) -> dict:
    params = {key: base[key] for key in ("profile", "profiles", "render", "drm") if key in base}
    params["profile"] = profile
    params["envmaps"] = {"n": 6, "seed": 0, "kinds": {"sky": 0.5, "studio": 0.5}, "envmap_height": 64}
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
    print(f"[{profile}] refmaps R={settings.refmap_res}/{settings.spp} spp, objects {objects}")

    plans = [plan_sample(settings, "drmnet", "train", i, ids) for i in range(samples)]
    warm_up = np.stack([MIRROR] * 4)  # the timed calls' shapes: compile once, outside the timing
    render_refmaps(envmaps[ids[0]], warm_up, np.zeros(4), settings.refmap_res, settings.spp, 0)
    start = time.perf_counter()
    for plan in plans:
        materials = np.stack([plan.z_obs, plan.z_k, plan.z_next, MIRROR])
        azimuths = np.full(4, plan.view_azimuth)
        render_refmaps(
            envmaps[plan.envmap_id], materials, azimuths, settings.refmap_res, settings.spp, plan.render_seed
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


def profile_envmaps(base: dict, profile: str) -> dict[str, np.ndarray]:
    """Two procedural skies and two studios at the profile's envmap height, by id."""
    height = int(with_profile(base, profile)["envmaps"]["envmap_height"])
    return {
        f"{kind}-{seed}": make_envmap(kind, seed, height) for kind in ("sky", "studio") for seed in (1, 2)
    }


def bench_blocks(base: dict, profile: str, samples: int, blocks: list[int], repeats: int) -> None:
    settings = settings_from_params(base, profile)
    envmap = profile_envmaps(base, profile)["sky-1"]
    plans = [plan_sample(settings, "drmnet", "train", i, ["sky-1"]) for i in range(samples)]
    for block in blocks:  # one warm-up call per wavefront size: kernels compile outside the timing
        make_samples(plans[:block], envmap, settings)
    rates: dict[int, list[float]] = {block: [] for block in blocks}
    for _ in range(repeats):
        for block in blocks:
            start = time.perf_counter()
            for first in range(0, samples, block):
                make_samples(plans[first : first + block], envmap, settings)
            rates[block].append(samples / (time.perf_counter() - start))
    refmap_res, spp = settings.refmap_res, settings.spp
    print(f"\n[{profile}] make_samples, drmnet, R={refmap_res}/{spp} spp, {samples} samples")
    print(f"median of {repeats} interleaved repeats\n")
    print("| samples per call | samples/s | × one per call (same repeat) |")
    print("|---|---|---|")
    for block in blocks:
        ratio = statistics.median(r / b for r, b in zip(rates[block], rates[blocks[0]], strict=True))
        print(f"| {block} | {statistics.median(rates[block]):.1f} | {ratio:.2f} |")


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def other_seed(seed: int, offset: int) -> int:
    return (seed + offset) % 2**31


def network_domain(refmaps: np.ndarray, observed: np.ndarray, config: DRMConfig) -> np.ndarray:
    """(n, 3, R, R) refmaps → T(x·s), s the intensity scale of the sample's observed L_K."""
    scale = intensity_scale(torch.from_numpy(observed[None]), config)
    return to_network(torch.from_numpy(refmaps), scale.expand(len(refmaps))).numpy()


def step_figures(
    current: np.ndarray, following: np.ndarray, ref_current: np.ndarray, ref_following: np.ndarray
) -> tuple[float, float]:
    """(noise of the current refmap relative to its RMS, noise of the step relative to its RMS)."""
    step = ref_following - ref_current
    return (
        rms(current - ref_current) / rms(ref_current),
        rms((following - current) - step) / rms(step),
    )


def round_trip(samples: list[dict], root: Path) -> tuple[list[dict], dict[str, float]]:
    """The samples through write_shard/read_shard, and bytes per sample (``.npy`` + JSON members
    alone, and as tar members) with the image fields as float32 and as float16."""
    keys = [f"noise-{i:04d}" for i in range(len(samples))]
    write_shard(root / "noise.tar", zip(keys, samples, strict=True))
    decoded = [sample for _, sample in read_shard(root / "noise.tar")]

    def tar_bytes(size: int) -> int:  # a USTAR member: a 512-byte header, data padded to 512
        return 512 + -(-size // 512) * 512

    sizes = {"float32": 0, "float16": 0, "float32 tar": 0, "float16 tar": 0}
    for key, sample in zip(keys, samples, strict=True):
        for name, data in encode_sample(key, sample):
            size = len(data)
            field = name.split(".")[1]
            if is_half(field):
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, sample[field].astype(np.float32), allow_pickle=False)
                size = len(buffer.getvalue())
            sizes["float16"] += len(data)
            sizes["float16 tar"] += tar_bytes(len(data))
            sizes["float32"] += size
            sizes["float32 tar"] += tar_bytes(size)
    return decoded, {name: total / len(samples) for name, total in sizes.items()}


def bench_noise(
    base: dict, profile: str, count: int, spps: list[int], reference_spp: int, root: Path
) -> None:
    settings = dataclasses.replace(settings_from_params(base, profile), envmap_block=1)
    config = DRMConfig.from_dict(settings.drm)
    envmaps = profile_envmaps(base, profile)
    plans = [plan_sample(settings, "drmnet", "train", i, sorted(envmaps)) for i in range(count)]
    spps = sorted({settings.spp, *spps})
    samples: dict[int, dict] = {}
    rendered: dict[int, dict[str, np.ndarray]] = {}  # index → name → (3, R, R)
    for envmap_id in sorted(envmaps):
        group = [plan for plan in plans if plan.envmap_id == envmap_id]
        if not group:
            continue
        envmap = envmaps[envmap_id]
        for plan, sample in zip(group, make_samples(group, envmap, settings), strict=True):
            samples[plan.index] = sample
            rendered[plan.index] = {}
        azimuths = np.repeat([plan.view_azimuth for plan in group], 4)
        for spp in spps:  # L_K, L_k, L_{k−1} with the sample's seed, L_{k−1} with another
            materials = np.concatenate([[p.z_obs, p.z_k, p.z_next, p.z_next] for p in group])
            seeds = np.concatenate(
                [[p.render_seed] * 3 + [other_seed(p.render_seed, 1_000_003)] for p in group]
            )
            out = render_refmaps(envmap, materials, azimuths, settings.refmap_res, spp, seeds)
            for i, plan in enumerate(group):
                for j, name in enumerate(("obs", "k", "next", "next_ind")):
                    rendered[plan.index][f"{name}@{spp}"] = out[4 * i + j]
        seeds = np.concatenate([[other_seed(p.render_seed, 2_000_003)] * 2 for p in group])
        materials = np.concatenate([[p.z_k, p.z_next] for p in group])
        out = render_refmaps(envmap, materials, azimuths[::2], settings.refmap_res, reference_spp, seeds)
        for i, plan in enumerate(group):
            rendered[plan.index].update(ref_k=out[2 * i], ref_next=out[2 * i + 1])
    for index, sample in samples.items():  # make_samples is the same render as refmaps @ spp
        assert np.array_equal(sample["refmap_k"], rendered[index][f"k@{settings.spp}"])

    figures: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        figures.setdefault(name, []).append(value)

    decoded, sizes = round_trip([samples[i] for i in sorted(samples)], root)
    for index, stored in zip(sorted(samples), decoded, strict=True):
        r, sample = rendered[index], samples[index]
        for spp in spps:
            obs, cur, nxt, ind = (r[f"{n}@{spp}"] for n in ("obs", "k", "next", "next_ind"))
            noise_k, step_crn = step_figures(cur, nxt, r["ref_k"], r["ref_next"])
            _, step_ind = step_figures(cur, ind, r["ref_k"], r["ref_next"])
            t_cur, t_nxt, t_ind, t_rk, t_rn = network_domain(
                np.stack([cur, nxt, ind, r["ref_k"], r["ref_next"]]), obs, config
            )
            _, t_step_crn = step_figures(t_cur, t_nxt, t_rk, t_rn)
            _, t_step_ind = step_figures(t_cur, t_ind, t_rk, t_rn)
            add(f"lin L_k @{spp}", noise_k)
            add(f"lin step crn @{spp}", step_crn)
            add(f"lin step ind @{spp}", step_ind)
            add(f"T L_k @{spp}", rms(t_cur - t_rk))
            add(f"T step crn @{spp}", t_step_crn)
            add(f"T step ind @{spp}", t_step_ind)
        add("lin step size", rms(r["ref_next"] - r["ref_k"]) / rms(r["ref_k"]))
        t_rk, t_rn = network_domain(np.stack([r["ref_k"], r["ref_next"]]), sample["refmap_obs"], config)
        add("T step size", rms(t_rn - t_rk))
        # float16: the stored sample against the rendered one, with the same reference sizes.
        cur, nxt = sample["refmap_k"], sample["refmap_next"]
        half_cur, half_nxt = stored["refmap_k"], stored["refmap_next"]
        step = r["ref_next"] - r["ref_k"]
        add("lin L_k f16", rms(half_cur - cur) / rms(r["ref_k"]))
        add("lin step f16", rms((half_nxt - half_cur) - (nxt - cur)) / rms(step))
        t_cur, t_nxt = network_domain(np.stack([cur, nxt]), sample["refmap_obs"], config)
        t_half_cur, t_half_nxt = network_domain(np.stack([half_cur, half_nxt]), stored["refmap_obs"], config)
        add("T L_k f16", rms(t_half_cur - t_cur))
        add("T step f16", rms((t_half_nxt - t_half_cur) - (t_nxt - t_cur)) / rms(t_rn - t_rk))
        for name in ("lin L_k", "lin step", "T L_k", "T step"):  # float16 error / noise, per sample
            noise = f"{name} @{settings.spp}".replace("step @", "step crn @")
            add(f"{name} f16 ratio", figures[f"{name} f16"][-1] / figures[noise][-1])

    def med(name: str) -> float:
        return statistics.median(figures[name])

    def share_above(name: str, threshold: float) -> str:
        return f"{np.mean(np.asarray(figures[name]) > threshold):.0%}"

    def share(name: str) -> str:
        return share_above(name, 0.5)

    def worst(name: str) -> float:
        return max(figures[name])

    ks = sorted(plan.k for plan in plans)
    refmap_res = settings.refmap_res
    print(f"\n[{profile}] Monte Carlo noise, {count} drmnet samples (k {ks[0]}…{ks[-1]}), R={refmap_res},")
    print(f"against a {reference_spp}-spp reference; 2 skies + 2 studios; medians over samples")
    print(f"step RMS size: {med('lin step size'):.3f} of L_k's RMS (linear); {med('T step size'):.4f} in T\n")
    print("| spp | L_k noise (rel.) | step noise / step, CRN (worst) | independent seeds | share CRN > 0.5 |")
    print("|---|---|---|---|---|")
    for spp in spps:
        print(
            f"| {spp} | {med(f'lin L_k @{spp}'):.4f} | {med(f'lin step crn @{spp}'):.3f} "
            f"({worst(f'lin step crn @{spp}'):.3f}) | {med(f'lin step ind @{spp}'):.2f} | "
            f"{share(f'lin step crn @{spp}')} |"
        )
    sigma = config.input_noise
    print(f"\nnetwork domain T(x·s) (what the loss sees; IllNet's input noise σ = {sigma})\n")
    print("| spp | L_k noise in T | step noise / step, CRN (worst) | independent seeds | share CRN > 0.5 |")
    print("|---|---|---|---|---|")
    for spp in spps:
        print(
            f"| {spp} | {med(f'T L_k @{spp}'):.4f} | {med(f'T step crn @{spp}'):.3f} "
            f"({worst(f'T step crn @{spp}'):.3f}) | {med(f'T step ind @{spp}'):.2f} | "
            f"{share(f'T step crn @{spp}')} |"
        )
    spp = settings.spp
    print(f"\nfloat16 storage (write_shard → read_shard) against the noise at {spp} spp\n")
    print(
        "| quantity | float16 error | Monte Carlo noise | float16 / noise (worst) | share float16 > noise |"
    )
    print("|---|---|---|---|---|")
    for label, name, noise in (
        ("L_k, linear (rel.)", "lin L_k", f"lin L_k @{spp}"),
        ("step, linear (/ step)", "lin step", f"lin step crn @{spp}"),
        ("L_k in T (abs.)", "T L_k", f"T L_k @{spp}"),
        ("step in T (/ step)", "T step", f"T step crn @{spp}"),
    ):
        print(
            f"| {label} | {med(f'{name} f16'):.1e} | {med(noise):.1e} | {med(f'{name} f16 ratio'):.3f} "
            f"({worst(f'{name} f16 ratio'):.2f}) | {share_above(f'{name} f16 ratio', 1.0)} |"
        )
    above = [p for p, r in zip(plans, figures["lin step f16 ratio"], strict=True) if r > 1.0]
    if above:
        at = ", ".join(f"{p.k}/{p.K}" for p in sorted(above, key=lambda p: p.k))
        print(f"\nfloat16 step error > Monte Carlo step noise (linear) at k/K = {at}")
    print(f"\nbytes per drmnet sample ({settings.refmap_res}²), .npy + JSON members / as tar members:")
    for kind in ("float32", "float16"):
        print(f"  {kind}: {sizes[kind] / 1000:.1f} kB / {sizes[kind + ' tar'] / 1000:.1f} kB")
    print(
        f"  float16 / float32: {sizes['float16'] / sizes['float32']:.2f} / "
        f"{sizes['float16 tar'] / sizes['float32 tar']:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", default=["paths", "blocks", "noise"])
    parser.add_argument("--profiles", nargs="+", default=["tiny", "small"])
    parser.add_argument("--samples", type=int, default=32, help="drmnet samples per measurement (paths)")
    parser.add_argument("--block-samples", type=int, default=128, help="drmnet samples per repeat (blocks)")
    parser.add_argument(
        "--blocks", type=int, nargs="+", default=[1, 16, 64], help="samples per call; first: baseline"
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (blocks)")
    parser.add_argument("--noise-samples", type=int, default=16, help="drmnet samples (noise)")
    parser.add_argument("--noise-spp", type=int, nargs="+", default=[256], help="spp besides the profile's")
    parser.add_argument("--reference-spp", type=int, default=4096, help="the noise's reference")
    args = parser.parse_args()
    base = load_params()
    with tempfile.TemporaryDirectory(prefix="drmnet-bench-dataset-") as tmp:
        root = Path(tmp)
        if "paths" in args.parts:
            bench_paths(base, args.profiles, args.samples, root)
        if "blocks" in args.parts:
            for profile in args.profiles:
                bench_blocks(base, profile, args.block_samples, args.blocks, args.repeats)
        if "noise" in args.parts:
            for profile in args.profiles:
                bench_noise(base, profile, args.noise_samples, args.noise_spp, args.reference_spp, root)


def bench_paths(base: dict, profiles: list[str], samples: int, root: Path) -> None:
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs"):  # keep the figures readable
        logging.getLogger(name).setLevel(logging.WARNING)
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
    for profile in profiles:
        bench_profile(base, profile, samples, root)


if __name__ == "__main__":
    main()
