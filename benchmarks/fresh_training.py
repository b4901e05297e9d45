"""DRMNet trained in a fixed wall-clock budget on samples rendered in memory: the device run of the
``gpu`` profile, for a lent GPU machine that has torch and a Mitsuba bundle but no Prefect, MLflow
or shards. Three steps, each its own process (Mitsuba's and torch's GPU memory never share one):

    python benchmarks/fresh_training.py render --profile gpu --envmaps ENVMAPS --seconds 150 --out DATA
    python benchmarks/fresh_training.py train --profile gpu --data DATA --seconds 300 --out MODEL
    python benchmarks/fresh_training.py bench --model MODEL --envmaps ENVMAPS/test

``render`` draws DRMNet training samples exactly as the dataset stage does (``pipeline.samples``:
``plan_sample`` per index, one ``make_samples`` call per envmap block, so sample i is the same
pure function of (params, index) as in a shard), planning in worker processes and rendering in
this one, until ``--seconds`` have passed or ``--max-samples`` are made; it writes
``refmaps.npy`` (M, 4, 3, R, R) float32 (L_K, L_k, L_{k−1}, L_0; M = ``--max-samples``, the first
N rows made), ``materials.npy`` (N, 2, 6) (z_K, z_k), ``steps.npy`` (N, 2) int64 (k, K) and,
last, ``data.json`` (N, settings): a render stopped before it has no ``data.json``, and ``train``
refuses its directory.

``train`` runs the project's training loop (``pipeline.training.loop``, the profile's
``train_drmnet`` settings and networks) on those arrays held on the GPU, reshuffled each epoch.
Its length follows from the time budget: a short probe (two ticks of the loop) measures its rate, and
``total_samples`` is what the rest of the budget holds, so the warm-up, constant and cosine phases
of the schedule keep their shares (``lr_decay_samples`` is the profile's share of its total).
``--init-from`` starts from a model directory (fine-tuning; then the decay covers the whole run
unless ``--decay-share`` says otherwise). It writes the model directory (``config.json`` and the
EMA weights in float16, ``ema.safetensors``) and ``train.json`` (samples, rate, losses).

``bench`` runs ``benchmarks/quality.py``'s benchmark on a model directory (no registry needed).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STARTED = time.perf_counter()


def log(line: str) -> None:
    print(f"[{time.perf_counter() - STARTED:7.1f} s] {line}", flush=True)


def _load_params(path: str) -> dict:
    import yaml

    with open(path) as f:
        return yaml.safe_load(f)


# -- render --------------------------------------------------------------------------------------

_PLANNER: dict = {}


def _init_planner(params: dict, profile: str, seed: int | None, envmap_ids: list[str]) -> None:
    from pipeline.samples import settings_from_params

    settings = settings_from_params(params, profile)
    if seed is not None:
        import dataclasses

        settings = dataclasses.replace(settings, seed=seed)
    _PLANNER.update(settings=settings, envmap_ids=envmap_ids)


def _plan_block(block: int) -> list:
    from pipeline.samples import plan_sample

    settings, ids = _PLANNER["settings"], _PLANNER["envmap_ids"]
    size = settings.envmap_block
    return [plan_sample(settings, "drmnet", "train", i, ids) for i in range(block * size, (block + 1) * size)]


def render(args: argparse.Namespace) -> None:
    from pipeline.splits import read_envmap_table

    params = _load_params(args.params)
    envmap_ids = list(read_envmap_table(args.envmaps, "train").column("id").to_pylist())
    # Planners fork before Mitsuba starts in this process.
    pool = multiprocessing.get_context("fork").Pool(
        args.workers, _init_planner, (params, args.profile, args.seed, envmap_ids)
    )
    _init_planner(params, args.profile, args.seed, envmap_ids)
    settings = _PLANNER["settings"]

    from pipeline.samples import augmented_envmap, make_samples
    from pipeline.splits import split_envmap_path
    from rendering.envmap import read_envmap
    from rendering.variant import active_variant, ensure_variant

    ensure_variant()
    res, block = settings.refmap_res, settings.envmap_block
    capacity = args.max_samples // block * block
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    refmaps = np.lib.format.open_memmap(out / "refmaps.npy", "w+", np.float32, (capacity, 4, 3, res, res))
    materials = np.zeros((capacity, 2, 6), np.float32)
    steps = np.zeros((capacity, 2), np.int64)
    log(
        f"render: variant {active_variant()}, {len(envmap_ids)} train envmaps, {res}², {settings.spp} spp, "
        f"blocks of {block}, seed {settings.seed}, {args.workers} planners, at most {capacity} samples "
        f"or {args.seconds:.0f} s"
    )
    envmaps: dict[str, np.ndarray] = {}
    count, start = 0, time.perf_counter()
    for plans in pool.imap(_plan_block, range(capacity // block)):
        draws = {plan.envmap_draw for plan in plans}
        if len(draws) != 1:
            raise RuntimeError(f"block of sample {plans[0].index} has {len(draws)} envmap draws")
        draw = plans[0].envmap_draw
        if draw.envmap_id not in envmaps:
            envmaps[draw.envmap_id] = read_envmap(split_envmap_path(args.envmaps, "train", draw.envmap_id))
        made = make_samples(plans, augmented_envmap(envmaps[draw.envmap_id], draw), settings)
        for plan, sample in zip(plans, made, strict=True):
            refmaps[count] = np.stack(
                [sample["refmap_obs"], sample["refmap_k"], sample["refmap_next"], sample["refmap_mirror"]]
            )
            materials[count] = (plan.z_obs, plan.z_k)
            steps[count] = (plan.k, plan.K)
            count += 1
        elapsed = time.perf_counter() - start
        if count % (block * 200) == 0:
            log(f"render: {count} samples, {count / elapsed:.0f}/s")
        if elapsed > args.seconds:
            break
    pool.terminate()
    refmaps.flush()
    np.save(out / "materials.npy", materials[:count])
    np.save(out / "steps.npy", steps[:count])
    finite = bool(np.isfinite(refmaps[:count]).all())
    meta = {
        "samples": count,
        "seconds": time.perf_counter() - start,
        "variant": active_variant(),
        "profile": args.profile,
        "dataset_seed": settings.seed,
        "spp": settings.spp,
        "refmap_res": res,
        "finite": finite,
    }
    (out / "data.json").write_text(json.dumps(meta, indent=1))
    rate = count / meta["seconds"]
    log(f"render: {count} samples in {meta['seconds']:.0f} s ({rate:.0f}/s), finite {finite}")


# -- train ---------------------------------------------------------------------------------------


def _arrays(data_dir: Path, device):
    import torch

    if not (data_dir / "data.json").is_file():
        raise SystemExit(f"{data_dir}: no data.json, so no finished render: run `render` (again)")
    meta = json.loads((data_dir / "data.json").read_text())
    if not meta["finite"]:
        raise SystemExit(f"{data_dir}: the rendered refmaps hold NaN/Inf values")
    n = meta["samples"]
    refmaps = torch.from_numpy(np.load(data_dir / "refmaps.npy", mmap_mode="r")[:n].copy()).to(device)
    materials = torch.from_numpy(np.load(data_dir / "materials.npy")).to(device)
    steps = torch.from_numpy(np.load(data_dir / "steps.npy")).to(device)
    return refmaps, materials, steps


def _batches(refmaps, materials, steps, batch_size: int, seed: int):
    """epoch -> batches of the DRMNet fields, a fresh permutation per epoch."""
    import torch

    def epoch_batches(epoch: int):
        generator = torch.Generator(refmaps.device).manual_seed(seed * 1000 + epoch)
        order = torch.randperm(len(refmaps), generator=generator, device=refmaps.device)
        for first in range(0, len(order) - batch_size + 1, batch_size):
            i = order[first : first + batch_size]
            r = refmaps[i]
            yield {
                "refmap_obs": r[:, 0],
                "refmap_k": r[:, 1],
                "refmap_next": r[:, 2],
                "refmap_mirror": r[:, 3],
                "z_obs": materials[i, 0],
                "z_k": materials[i, 1],
                "k": steps[i, 0],
                "K": steps[i, 1],
            }

    return epoch_batches


def _probe_rate(family, batches, device, loop_kwargs: dict, batch_size: int, steps: int) -> float:
    """Training samples per second of the training loop itself: the rate of its second tick of
    ``steps`` steps (the first holds the start-up: kernel selection, allocator warm-up), run in a
    throwaway directory."""
    import tempfile

    from pipeline.training.loop import training_loop

    tick = steps * batch_size
    probe = {**loop_kwargs, "total_samples": 2 * tick, "tick_samples": tick, "init_from": None}
    probe.update(snapshot_ticks=2, keep_snapshots=False, preview_ticks=0)
    with tempfile.TemporaryDirectory(prefix="probe.") as run_dir:
        metrics = training_loop(family, batches, run_dir, device=device, log=lambda line: None, **probe)
    return metrics["samples_per_second"]


def train(args: argparse.Namespace) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from pipeline.training.families import DRMNet
    from pipeline.training.loop import training_loop
    from pipeline.training.stage import _loop_kwargs, network_config, training_settings

    deadline = STARTED + args.seconds
    params = _load_params(args.params)
    settings = training_settings(params, "drmnet", args.profile)
    network = network_config(params, "drmnet", args.profile)
    kwargs, options = _loop_kwargs("drmnet", settings)
    family = DRMNet(network, **options)
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    batch_size = args.batch_size or settings.batch_size
    lr = args.lr or kwargs["lr"]
    data_dir = Path(args.data)
    refmaps, materials, steps = _arrays(data_dir, device)
    if len(refmaps) < batch_size:
        raise SystemExit(f"{data_dir}: {len(refmaps)} samples, fewer than one batch of {batch_size}")
    batches = _batches(refmaps, materials, steps, batch_size, args.seed)
    log(f"train: {len(refmaps)} samples of {data_dir} on {device}; batch {batch_size}, lr {lr}")

    rate = _probe_rate(family, batches, device, {**kwargs, "lr": lr}, batch_size, args.probe_steps)
    remaining = deadline - time.perf_counter() - args.reserve_seconds
    total = max(batch_size, int(rate * remaining * args.rate_share) // batch_size * batch_size)
    profile_total = kwargs["total_samples"]
    decay_share = args.decay_share
    if decay_share is None:
        decay_share = 1.0 if args.init_from else kwargs.get("lr_decay_samples", 0) / profile_total
    scale = total / profile_total
    # From scratch: the profile's warm-up, shortened for a short run; fine-tuning: 5 % of the run
    # (a fresh AdamW moves every weight by ~lr per step at first, whatever its gradient).
    warmup = int(0.05 * total) if args.init_from else int(kwargs["warmup_samples"] * min(1.0, 4 * scale))
    warmup = max(batch_size, warmup)
    tick = max(batch_size, total // 40)
    kwargs.update(
        total_samples=total,
        lr=lr,
        warmup_samples=warmup,
        lr_decay_samples=int(decay_share * total),
        ema_halflife_samples=args.ema_halflife or kwargs["ema_halflife_samples"],
        tick_samples=tick,
        snapshot_ticks=10,
        keep_snapshots=False,
        preview_ticks=0,
        init_from=args.init_from,
        seed=args.seed,
    )
    log(
        f"train: probe {rate:.0f} samples/s → {total} samples in {remaining:.0f} s "
        f"(warm-up {warmup}, cosine over the last {kwargs['lr_decay_samples']}, "
        f"EMA half-life {kwargs['ema_halflife_samples']})"
    )
    run_dir = Path(args.run_dir)
    start = time.perf_counter()
    metrics = training_loop(
        family,
        batches,
        run_dir,
        resume=False,
        device=device,
        data_name=str(data_dir),
        log=log,
        **kwargs,
    )
    seconds = time.perf_counter() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text((run_dir / "config.json").read_text())
    ema = load_file(run_dir / "ema.safetensors")
    save_file({k: v.half() if v.is_floating_point() else v for k, v in ema.items()}, out / "ema.safetensors")
    summary = {
        **{k: v for k, v in metrics.items() if isinstance(v, (int, float, bool))},
        "seconds": seconds,
        "probe_rate": rate,
        "data_samples": len(refmaps),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in kwargs.items()},
        "profile": args.profile,
        "parameters": sum(p.numel() for p in family.networks()["illnet"].parameters()),
    }
    (out / "train.json").write_text(json.dumps(summary, indent=1, default=str))
    done = metrics["samples"]
    log(f"train: {done} samples in {seconds:.0f} s ({done / seconds:.0f}/s) → {out}")


# -- bench ---------------------------------------------------------------------------------------


def bench(args: argparse.Namespace) -> None:
    import torch

    from benchmarks.quality import report_lines, run_benchmark, select_envmaps
    from models.estimator import Estimator
    from rendering.envmap import read_envmap
    from rendering.variant import active_variant, ensure_variant

    ensure_variant()
    for model in args.model:
        start = time.perf_counter()
        estimator = Estimator.from_directories(model, None, "cuda" if torch.cuda.is_available() else "cpu")
        chosen = select_envmaps(args.envmaps, args.kinds)
        envmaps = [(i, k, read_envmap(path)) for i, k, path in chosen]
        result = run_benchmark(estimator, envmaps, args.items_per_map, args.samples, args.spp, args.seed)
        log(f"bench: {model} ({active_variant()}, {time.perf_counter() - start:.0f} s)")
        print("\n".join(report_lines(result)), flush=True)
        if args.json_dir:
            path = Path(args.json_dir) / f"bench_{Path(model).name}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({k: result[k] for k in ("summary", "maps", "headline")}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render")
    r.add_argument("--params", default="params.yaml")
    r.add_argument("--profile", default="gpu")
    r.add_argument("--envmaps", required=True, help="envmap directory with train/ (and its table)")
    r.add_argument("--seed", type=int, default=None, help="dataset.seed (default: params')")
    r.add_argument("--seconds", type=float, default=150)
    r.add_argument("--max-samples", type=int, default=400_000)
    r.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    r.add_argument("--out", required=True)
    t = sub.add_parser("train")
    t.add_argument("--params", default="params.yaml")
    t.add_argument("--profile", default="gpu")
    t.add_argument("--data", required=True)
    t.add_argument("--seconds", type=float, required=True, help="wall-clock budget from the start")
    t.add_argument("--reserve-seconds", type=float, default=15, help="kept for the export")
    t.add_argument("--probe-steps", type=int, default=20, help="steps per tick of the rate probe (two ticks)")
    t.add_argument("--rate-share", type=float, default=0.9, help="share of the probed rate planned for")
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--decay-share", type=float, default=None)
    t.add_argument("--ema-halflife", type=int, default=None)
    t.add_argument("--init-from", default=None)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--run-dir", required=True)
    t.add_argument("--out", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--model", action="append", required=True)
    b.add_argument("--envmaps", required=True)
    b.add_argument("--kinds", default="real")
    b.add_argument("--items-per-map", type=int, default=16)
    b.add_argument("--samples", type=int, default=4)
    b.add_argument("--spp", type=int, default=64)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json-dir", default=None)
    args = parser.parse_args()
    {"render": render, "train": train, "bench": bench}[args.command](args)


if __name__ == "__main__":
    main()
