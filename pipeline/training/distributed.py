"""One process or many under ``torchrun``: the same training code runs in both.

When ``WORLD_SIZE`` > 1 (set by torchrun with RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT),
``torch.distributed`` is initialised from those environment variables: NCCL on GPUs, Gloo on
CPUs. Each rank reads its own part of the data (the shard reader splits by node).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | torch.device | None = None) -> Dist:
    """Set up this process: its rank, the world size and its device (``device`` overrides the
    default: this rank's GPU when CUDA is available, else the CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", init_method="env://")
    return Dist(rank, world_size, device)


def mean_over_ranks(values: dict[str, float], d: Dist) -> dict[str, float]:
    """Average scalar metrics over all ranks (identity in a single process)."""
    if not d.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return dict(zip(keys, (t / d.world_size).tolist(), strict=True))


def all_finite(value: torch.Tensor, d: Dist) -> bool:
    """Whether ``value`` is finite on every rank (so that all ranks stop together when one is not)."""
    finite = torch.isfinite(value.detach()).all().to(torch.int32)
    if d.enabled:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite)


def generator_states(generator: torch.Generator, d: Dist) -> list[torch.Tensor]:
    """Every rank's generator state, in rank order (rank r resumes with entry r)."""
    local = generator.get_state()
    if not d.enabled:
        return [local]
    states: list = [None] * d.world_size
    dist.all_gather_object(states, local)
    return states


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()
