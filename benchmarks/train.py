"""Training throughput (samples/s) of DRMNet and ObsNet per profile of params.yaml, on this
machine, through the real training loops (AdamW, EMA, gradient clipping; checkpoint writing is
not timed). Batches are synthetic refmaps at the profile's resolution: the networks' cost does not
depend on the pixel values. The baseline is the tiny profile, measured in the same run.

    .venv/bin/python benchmarks/train.py                       # tiny, small, paper
    .venv/bin/python benchmarks/train.py --profiles tiny,small --threads 1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.config import drmnet_config, obsnet_config  # noqa: E402
from models.weights import build_networks  # noqa: E402
from pipeline.config import load_params, profile_params  # noqa: E402
from pipeline.training.families import FAMILIES  # noqa: E402
from pipeline.training.loop import training_loop  # noqa: E402


def synthetic_batches(net: str, batch: int, res: int, count: int = 4) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)

    def refmap() -> torch.Tensor:
        return torch.rand(batch, 3, res, res, generator=gen) * 4

    if net == "obsnet":
        mask = (torch.rand(batch, 1, res, res, generator=gen) > 0.5).float()
        full = [refmap() for _ in range(count)]
        return [{"refmap_obs": r, "observed": r * mask, "observed_mask": mask} for r in full]
    K = torch.full((batch,), 60)
    return [
        {
            "refmap_obs": refmap(),
            "refmap_k": refmap(),
            "refmap_next": refmap(),
            "refmap_mirror": refmap(),
            "z_obs": torch.rand(batch, 6, generator=gen),
            "z_k": torch.rand(batch, 6, generator=gen),
            "k": torch.randint(1, 60, (batch,), generator=gen),
            "K": K,
        }
        for _ in range(count)
    ]


def measure(net: str, profile: str, batch: int, steps: int) -> tuple[float, int, float]:
    """(samples/s over ``steps`` timed steps after one warm-up step, parameters, seconds spent)."""
    params = load_params()
    block = profile_params(params, profile)
    res = block["refmap_res"]
    config = drmnet_config(block, params.get("drm")) if net == "drmnet" else obsnet_config(block)
    with torch.device("meta"):
        size = sum(p.numel() for m in build_networks(config).values() for p in m.parameters())
    data = synthetic_batches(net, batch, res)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        # One tick per step; the first (warm-up) tick is dropped, the others are timed.
        training_loop(
            FAMILIES[net](config),
            data,
            Path(tmp) / net,
            total_samples=batch * (steps + 1),
            tick_samples=batch,
            snapshot_ticks=10**9,
            log=lambda line: None,
        )
        history = torch.load(Path(tmp) / net / "state.pt", weights_only=True)["history"]
    timed = [batch / row["samples_per_second"] for row in history[1:]]  # seconds per timed step
    return batch * len(timed) / sum(timed), size, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profiles", default="tiny,small,paper")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # (batch, timed steps) per profile: enough steps for a stable figure, few for the paper nets.
    plan = {"tiny": (20, 10), "small": (20, 3), "paper": (2, 1)}
    print(f"training throughput, CPU, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(
        f"{'net':7} {'profile':7} {'params':>12} {'batch':>5} {'samples/s':>10} {'vs tiny':>9} {'wall s':>7}"
    )
    baseline: dict[str, float] = {}
    for profile in args.profiles.split(","):
        batch, steps = plan[profile]
        for net in ("drmnet", "obsnet"):
            rate, size, wall = measure(net, profile, batch, steps)
            baseline.setdefault(net, rate)
            slower = baseline[net] / rate
            row = f"{net:7} {profile:7} {size:12,d} {batch:5d} {rate:10.2f} {slower:8.1f}× {wall:7.1f}"
            print(row, flush=True)


if __name__ == "__main__":
    main()
