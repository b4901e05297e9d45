"""Quality of a trained DRMNet on held-out envmaps: how much closer to the true mirror refmap its
answer is than the observation itself read as a mirror. Trains nothing; no ObsNet (full
observations), so the figures measure the DRM process alone.

    .venv/bin/python benchmarks/quality.py [--model MODEL] \\
        [--envmaps data/envmaps/test] [--kinds real] [--items-per-map 16] [--samples 4] \\
        [--spp 64] [--seed 0] [--threads 1] [--sampling-noise DELTA] [--known-material] [--json OUT]

For each envmap of the split directory whose ``kind`` (its envmaps table) is chosen (default
``real``: the held-out real HDR maps; ``--kinds all`` or e.g. ``--kinds sky,studio``), seeded
random principled materials z ~ U[0, 1]^6 and view azimuths are drawn. One
``rendering.refmap.render_refmaps`` call renders, at the model's resolution, each item's full
observation L_K and its ground-truth mirror refmap L_0 (material ``MIRROR`` at the same view
azimuth, as the dataset renders L_0). The estimator (``models.estimator.Estimator.estimate``:
intensity normalisation, ``sample_drm``, back to the observation's scale) draws N samples per
observation; ``--known-material`` gives it each item's true material instead of RefNet's estimate
(what the light's estimate loses to RefNet's errors). Rows:

- ``drmnet``: the per-pixel mean of the N sampled mirror refmaps;
- ``drmnet_one``: each metric averaged over the N samples (what one draw gives);
- ``observation``: the observation L_K itself taken as the mirror estimate (the baseline);
- ``constant``: the mirror refmap of a constant envmap of the observation's mean colour.

Metrics of a (3, R, R) mirror refmap against the truth (``pipeline.metrics``): relative
si-RMSE (si-RMSE / RMS(gt), 0 = perfect, 1 = as bad as black) and log-luminance RMSE (RMSE of
ln luminance after the optimal log offset). Printed: per row mean, median and the share of
items won against the observation; a per-map table; the 95 % interval of each gain (a paired
bootstrap over the items: how far another draw of materials and views could move it); and,
last, the headline gain of ``drmnet`` over the observation-as-mirror baseline (relative reduction
of the mean errors).

Cost: the DRM process takes K ≈ ln(ε/‖z_K − z0‖)/ln γ ≈ 60–100 network steps per sample for
z ~ U[0, 1]^6, on items × samples refmaps at once. On a busy 2-core CPU, one torch thread: the
tiny profile ≈ 0.2 s per step for 16 × 4 refmaps of 32² (≈ 25 s per map), the small profile
≈ 15 s per step at 64² (≈ 25 min per map): use a GPU, or fewer ``--items-per-map`` /
``--samples``, or ``--max-steps`` for a quick look at a small model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline import metrics  # noqa: E402

METHODS = ("drmnet", "drmnet_one", "observation", "constant")
BASELINE = "observation"
METRICS = {"rel_si_rmse": "relative si-RMSE", "log_lum_rmse": "log luminance"}


def select_envmaps(split_dir: str | Path, kinds: str = "real") -> list[tuple[str, str, Path]]:
    """(id, kind, file) of the split directory's envmaps (table order) whose kind is among the
    comma-separated ``kinds`` (``all``: every one)."""
    from pipeline.evaluation.test_sets import envmap_kinds
    from rendering.errors import InputError

    split_dir = Path(split_dir)
    table = envmap_kinds(split_dir.parent, split_dir.name)
    if not table:
        raise InputError(split_dir / "envmaps.parquet", "missing or empty: make the envmap splits first")
    wanted = None if kinds == "all" else {k.strip() for k in kinds.split(",") if k.strip()}
    return [(i, k, split_dir / f"{i}.exr") for i, k in table.items() if wanted is None or k in wanted]


def score(estimate: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """The benchmark's metrics of one mirror refmap (3, R, R) against the true one."""
    return {
        "rel_si_rmse": metrics.relative_si_rmse(estimate, truth, channel_axis=0),
        "log_lum_rmse": metrics.log_luminance_rmse(estimate, truth, channel_axis=0),
    }


def evaluate_map(
    estimator,
    envmap: np.ndarray,
    items: int,
    samples: int,
    spp: int,
    seed: int,
    max_steps: int | None = None,
    known_material: bool = False,
) -> list[dict[str, Any]]:
    """One row per item and method: ``{"item", "method", <metric>: value}`` under one envmap
    (H, 2H, 3); materials, azimuths and noise all follow from ``seed``. ``known_material``: the
    estimator is given each item's true material (RefNet not run)."""
    import torch

    from rendering.principled import MIRROR
    from rendering.refmap import mirror_basis, render_refmaps

    rng = np.random.default_rng(seed)
    z = rng.uniform(size=(items, 6)).astype(np.float32)
    azimuths = rng.uniform(-np.pi, np.pi, size=items)
    res = estimator.resolution
    refmaps = render_refmaps(
        envmap,
        np.concatenate([z, np.repeat(MIRROR[None], items, axis=0)]),
        np.concatenate([azimuths, azimuths]),
        refmap_res=res,
        spp=spp,
        seed=int(rng.integers(2**31)),
    )
    observations, mirrors = refmaps[:items], refmaps[items:]
    result = estimator.estimate(
        torch.from_numpy(observations),
        num_samples=samples,
        seed=int(rng.integers(2**31)),
        max_steps=max_steps,
        material=torch.from_numpy(z) if known_material else None,
    )
    sampled = result.mirror.cpu().numpy().astype(np.float64)  # (items, N, 3, R, R)
    steps = result.steps.float().mean(dim=1).cpu().numpy()  # (items,) DRM steps, mean over samples
    basis = mirror_basis(res)
    rows = []
    for i in range(items):
        truth, observation = mirrors[i], observations[i]
        answers = {
            "drmnet": score(sampled[i].mean(axis=0), truth),
            "drmnet_one": {
                name: float(np.mean([score(s, truth)[name] for s in sampled[i]])) for name in METRICS
            },
            "observation": score(observation, truth),
            "constant": score(observation.mean(axis=(1, 2))[:, None, None] * basis, truth),
        }
        rows += [{"item": i, "method": m, "drm_steps": float(steps[i]), **answers[m]} for m in METHODS]
    return rows


def run_benchmark(
    estimator,
    envmaps: list[tuple[str, str, np.ndarray]],
    items: int = 16,
    samples: int = 4,
    spp: int = 64,
    seed: int = 0,
    max_steps: int | None = None,
    known_material: bool = False,
) -> dict[str, Any]:
    """Evaluate every (id, kind, envmap); returns ``{"rows", "summary", "maps", "headline"}``
    (plain JSON data). Each map's items are seeded by (``seed``, the map's id), so a map scores
    the same whichever others are chosen."""
    rows: list[dict[str, Any]] = []
    for envmap_id, kind, envmap in envmaps:
        start = time.perf_counter()
        map_seed = np.random.SeedSequence(seed, spawn_key=(zlib.crc32(envmap_id.encode()),))
        map_rows = evaluate_map(
            estimator,
            envmap,
            items,
            samples,
            spp,
            int(map_seed.generate_state(1)[0]),
            max_steps,
            known_material,
        )
        seconds = time.perf_counter() - start
        rows += [{"envmap_id": envmap_id, "kind": kind, "seconds": seconds, **r} for r in map_rows]
    return {"rows": rows, **summarize(rows)}


def _column(rows: list[dict[str, Any]], method: str, metric: str) -> np.ndarray:
    return np.array([r[metric] for r in rows if r["method"] == method])


def gain_interval(
    model: np.ndarray, baseline: np.ndarray, level: float = 0.95, draws: int = 2000, seed: int = 0
) -> list[float]:
    """The ``level`` interval of the gain 1 − mean(model) / mean(baseline) under a paired
    bootstrap over items (the same items resampled for both; the envmaps stay fixed, so it shows
    the spread from the items drawn, not from the choice of maps)."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(model), size=(draws, len(model)))
    gains = 1.0 - model[picks].mean(axis=1) / baseline[picks].mean(axis=1)
    tail = (1.0 - level) / 2
    return [float(np.quantile(gains, tail)), float(np.quantile(gains, 1.0 - tail))]


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method: mean, median and share of items won against the baseline (per metric); per
    map: mean errors of ``drmnet`` and the baseline and items won; the headline gains."""
    summary = {}
    for method in METHODS:
        entry = {}
        for metric in METRICS:
            values, baseline = _column(rows, method, metric), _column(rows, BASELINE, metric)
            entry[metric] = {
                "mean": float(values.mean()),
                "median": float(np.median(values)),
                "won": float(np.mean(values < baseline)),
            }
        summary[method] = entry
    maps = []
    for envmap_id in dict.fromkeys(r["envmap_id"] for r in rows):
        selected = [r for r in rows if r["envmap_id"] == envmap_id]
        entry = {
            "envmap_id": envmap_id,
            "kind": selected[0]["kind"],
            "seconds": selected[0]["seconds"],
            "drm_steps": float(np.mean([r["drm_steps"] for r in selected])),
        }
        for metric in METRICS:
            model, baseline = _column(selected, "drmnet", metric), _column(selected, BASELINE, metric)
            entry[metric] = {"drmnet": float(model.mean()), BASELINE: float(baseline.mean())}
        model, baseline = (
            _column(selected, "drmnet", "rel_si_rmse"),
            _column(selected, BASELINE, "rel_si_rmse"),
        )
        entry["items"], entry["won"] = len(model), int(np.sum(model < baseline))
        maps.append(entry)
    model, baseline = summary["drmnet"], summary[BASELINE]
    headline = {
        f"gain_{metric}": 1.0 - model[metric]["mean"] / baseline[metric]["mean"] for metric in METRICS
    }
    for metric in METRICS:
        headline[f"interval_{metric}"] = gain_interval(
            _column(rows, "drmnet", metric), _column(rows, BASELINE, metric)
        )
    headline["items_won"] = sum(m["won"] for m in maps)
    headline["items"] = sum(m["items"] for m in maps)
    headline["maps_won"] = sum(m["rel_si_rmse"]["drmnet"] < m["rel_si_rmse"][BASELINE] for m in maps)
    headline["maps"] = len(maps)
    return {"summary": summary, "maps": maps, "headline": headline}


def report_lines(result: dict[str, Any]) -> list[str]:
    """The printed figures; the headline is the last line."""
    lines = ["", "== mirror refmap against the truth: mean / median, share of items won vs observation =="]
    lines.append(f"{'':14s}" + "".join(f"{h:>34s}" for h in METRICS.values()))
    lines.append(f"{'method':14s}" + f"{'mean':>12s}{'median':>12s}{'won':>9s} " * len(METRICS))
    for method, entry in result["summary"].items():
        cells = "".join(
            f"{entry[m]['mean']:12.4f}{entry[m]['median']:12.4f}{entry[m]['won']:9.0%} " for m in METRICS
        )
        lines.append(f"{method:14s}{cells}")
    lines += ["", "== per map: mean relative si-RMSE and log-luminance RMSE, drmnet vs observation =="]
    lines.append(
        f"{'envmap':28s}{'kind':>8s}{'rel drmnet':>12s}{'rel obs.':>10s}"
        f"{'log drmnet':>12s}{'log obs.':>10s}{'won':>8s}{'steps':>7s}{'s':>7s}"
    )
    for m in result["maps"]:
        lines.append(
            f"{m['envmap_id']:28s}{m['kind']:>8s}{m['rel_si_rmse']['drmnet']:12.4f}"
            f"{m['rel_si_rmse'][BASELINE]:10.4f}{m['log_lum_rmse']['drmnet']:12.4f}"
            f"{m['log_lum_rmse'][BASELINE]:10.4f}{m['won']:>5d}/{m['items']:<2d}{m['drm_steps']:7.0f}"
            f"{m['seconds']:7.1f}"
        )
    h = result["headline"]
    intervals = ", ".join(
        f"{name} {100 * h[f'interval_{metric}'][0]:.1f} to {100 * h[f'interval_{metric}'][1]:.1f} %"
        for metric, name in METRICS.items()
        if f"interval_{metric}" in h
    )
    lines += [
        "",
        f"95 % interval of the gains (paired bootstrap over the items, maps fixed): {intervals}",
        f"gain over the observation-as-mirror baseline: {100 * h['gain_rel_si_rmse']:.1f} % "
        f"(relative si-RMSE), {100 * h['gain_log_lum_rmse']:.1f} % (log luminance), "
        f"won {h['items_won']} of {h['items']} items / {h['maps_won']} of {h['maps']} maps",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model",
        default=None,
        help="registry URI or model directory (default: as `drmnet estimate`: the registry's champion, "
        "else the shipped pretrained/cpu model)",
    )
    parser.add_argument("--envmaps", default="data/envmaps/test", help="envmap split directory")
    parser.add_argument("--kinds", default="real", help="envmap kinds, comma-separated, or 'all'")
    parser.add_argument("--items-per-map", type=int, default=16, help="materials × views per envmap")
    parser.add_argument("--samples", type=int, default=4, help="DRM samples per observation (mean used)")
    parser.add_argument("--spp", type=int, default=64, help="samples per pixel of the refmap renders")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=None, help="DRM steps at most (default: model's)")
    parser.add_argument(
        "--sampling-noise",
        type=float,
        default=None,
        help="the sampler's δ (drm.sampling_noise) instead of the model's, for an A/B of the setting",
    )
    parser.add_argument(
        "--known-material",
        action="store_true",
        help="give the estimator each item's true material instead of RefNet's estimate",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: fastest for small nets on a busy CPU; 0: torch's)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args()

    import torch

    from pipeline.registry import load_estimator
    from rendering.envmap import read_envmap
    from rendering.variant import active_variant, ensure_variant

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.model is None:
        from pipeline.pretrained import default_model

        args.model, line = default_model("drmnet")
        print(line, file=sys.stderr)
    ensure_variant()
    estimator = load_estimator(args.model)
    if args.sampling_noise is not None:
        config = estimator.drmnet_config
        drm = dataclasses.replace(config.drm, sampling_noise=args.sampling_noise)
        estimator.drmnet_config = dataclasses.replace(config, drm=drm)
    chosen = select_envmaps(args.envmaps, args.kinds)
    if not chosen:
        sys.exit(f"{args.envmaps}: no envmap of kind {args.kinds!r} (try --kinds all)")
    print(
        f"variant {active_variant()}; model {args.model} (R = {estimator.resolution}); "
        f"{len(chosen)} envmaps of {args.envmaps} ({args.kinds}); {args.items_per_map} items each, "
        f"{args.samples} samples (δ = {estimator.drmnet_config.drm.sampling_noise}), {args.spp} spp, "
        f"seed {args.seed}; {torch.get_num_threads()} torch threads"
        + ("; the true materials given (no RefNet)" if args.known_material else "")
    )
    envmaps = [(i, k, read_envmap(path)) for i, k, path in chosen]
    result = run_benchmark(
        estimator,
        envmaps,
        args.items_per_map,
        args.samples,
        args.spp,
        args.seed,
        args.max_steps,
        args.known_material,
    )
    if args.json is not None:
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": settings, **result}, indent=2) + "\n")
    print("\n".join(report_lines(result)))


if __name__ == "__main__":
    main()
