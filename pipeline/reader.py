"""The training reader: a split directory of WebDataset shards → batches of torch tensors.

Usage (see :func:`make_loader`)::

    loader = make_loader("data/shards/drmnet/train", batch_size=8, num_workers=2, epoch_samples=4096)
    for batch in loader:                      # one epoch; iterate again for the next one
        batch["refmap_k"]                     # (B, 3, R, R) float32
        batch["z_k"], batch["k"]              # (B, 6) float32, (B,) int64

Pipeline (webdataset stages): shard list shuffled by (seed, epoch) → ``split_by_node`` (DDP
rank) → ``split_by_worker`` (DataLoader worker) → tar → samples → shuffle buffer → decode
(``.npy`` → tensors, ``meta.json`` → fields) → batches, collated in the worker.

Two epoch modes:

- ``epoch_samples=None``: one pass, every sample exactly once over all ranks and workers (each
  rank/worker reads whole shards, so a rank sees about ``n_shards / world_size`` shards). For
  evaluation and single-process training.
- ``epoch_samples=N``: shards are drawn with replacement, independently per rank and worker, and
  every rank yields exactly ``ceil(N / batch_size)`` batches per epoch (``with_epoch``), so DDP
  ranks stay in step however the shards divide. Use this for ``torchrun`` training.
"""

from __future__ import annotations

import functools
import math
import multiprocessing
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds

from pipeline.manifest import RECORDS_DIR, SHARDS_MANIFEST, read_shards_manifest
from pipeline.shards import HALF_EXPONENT, META_FIELD, decode_member, restore_half
from rendering.errors import InputError

# Workers start from a clean "forkserver" process, not as forks of the trainer: a fork of a process
# that runs other threads (Prefect's API log and event workers, Dr.Jit's pool) can die on exit.
WORKER_START = "forkserver"


def list_shards(split_dir: str | os.PathLike) -> list[str]:
    """Shard paths of a split directory: from its shard manifest; ``*.tar`` for shards made
    elsewhere. A split the flow has not finished (records, no manifest) is refused."""
    split_dir = Path(split_dir)
    if (split_dir / SHARDS_MANIFEST).exists():
        names = read_shards_manifest(split_dir).column("shard").to_pylist()
    elif (split_dir / RECORDS_DIR).exists():
        raise InputError(split_dir, "is incomplete (no manifest): rerun `drmnet render-dataset` to finish it")
    else:  # shards made elsewhere
        names = sorted(p.name for p in split_dir.glob("*.tar"))
    if not names:
        raise InputError(split_dir, "holds no shards (*.tar); render them first with `drmnet render-dataset`")
    return [str(split_dir / name) for name in names]


class _ShardOrder(torch.utils.data.IterableDataset):
    """First pipeline stage: the shard URLs for this epoch, as webdataset's ``{"url": ...}`` dicts.

    ``resample=False``: every shard once, in an order shuffled by (seed, epoch) that is the same
    on every rank (so ``split_by_node`` partitions it). ``resample=True``: an endless stream of
    shards drawn with replacement from a generator seeded by (seed, epoch, rank, worker).
    The epoch lives in shared memory: :class:`ShardLoader` sets it in the main process and the
    (persistent) worker processes read it whenever an epoch starts.
    """

    def __init__(self, shards: list[str], seed: int, resample: bool):
        super().__init__()
        self.shards, self.seed, self.resample = shards, seed, resample
        self._epoch = multiprocessing.get_context(WORKER_START).RawValue("q", 0)

    @property
    def epoch(self) -> int:
        return self._epoch.value

    @epoch.setter
    def epoch(self, value: int) -> None:
        self._epoch.value = value

    def __iter__(self) -> Iterator[dict[str, str]]:
        if self.resample:
            rank, _, worker, _ = wds.utils.pytorch_worker_info()
            rng = random.Random(f"{self.seed}/{self.epoch}/{rank}/{worker}")
            while True:
                yield {"url": rng.choice(self.shards)}
        order = list(self.shards)
        random.Random(f"{self.seed}/{self.epoch}").shuffle(order)
        for url in order:
            yield {"url": url}


class _ShuffleBuffer:
    """Shuffle buffer stage: holds up to ``size`` samples and yields a random one as each new one
    arrives; seeded per (seed, epoch, rank, worker) so that a run is reproducible."""

    def __init__(self, size: int, order: _ShardOrder):
        self.size, self.order = size, order

    def __call__(self, samples: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        rank, _, worker, _ = wds.utils.pytorch_worker_info()
        rng = random.Random(f"buffer/{self.order.seed}/{self.order.epoch}/{rank}/{worker}")
        buffer: list[dict[str, Any]] = []
        for sample in samples:
            if len(buffer) < self.size:
                buffer.append(sample)
                continue
            slot = rng.randrange(self.size)
            yield buffer[slot]
            buffer[slot] = sample
        rng.shuffle(buffer)
        yield from buffer


class _MemberFilter:
    """Which tar members to read: the metadata and the requested fields (picklable for workers)."""

    def __init__(self, keys: frozenset[str] | None):
        self.keys = keys

    def __call__(self, name: str) -> bool:
        field = name.split(".", 1)[-1].rsplit(".", 1)[0]
        return self.keys is None or field == META_FIELD or field in self.keys


def _decode(sample: dict[str, Any], keys: frozenset[str] | None) -> dict[str, Any]:
    """Raw tar members → ``{"__key__": str, field: tensor | int | float | str, ...}``."""
    out: dict[str, Any] = {"__key__": sample["__key__"]}
    arrays, exponent = {}, 0
    for name, data in sample.items():
        if name.startswith("__"):
            continue
        field, value = decode_member(name, data)
        if field == META_FIELD:
            exponent = int(value.get(HALF_EXPONENT, 0))
            out.update(value if keys is None else {f: v for f, v in value.items() if f in keys})
        else:
            arrays[field] = value
    for field, value in arrays.items():
        out[field] = torch.from_numpy(np.ascontiguousarray(restore_half(field, value, exponent)))
    out.pop(HALF_EXPONENT, None)
    return out


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Samples → a batch: tensors stacked (B, ...), ints → int64 (B,), floats → float32 (B,),
    lists of numbers → float32 (B, n), strings → list of str."""
    batch: dict[str, Any] = {}
    for field in samples[0]:
        values = [s[field] for s in samples]
        first = values[0]
        if isinstance(first, torch.Tensor):
            batch[field] = torch.stack(values)
        elif isinstance(first, bool) or isinstance(first, str):
            batch[field] = values
        elif isinstance(first, int):
            batch[field] = torch.tensor(values, dtype=torch.int64)
        elif isinstance(first, float):
            batch[field] = torch.tensor(values, dtype=torch.float32)
        elif isinstance(first, list) and all(isinstance(v, (int, float)) for v in first):
            batch[field] = torch.tensor(values, dtype=torch.float32)
        else:
            batch[field] = values
    return batch


class ShardLoader:
    """Iterable over batches; each ``iter()`` is one epoch (the shard order changes per epoch).

    ``set_epoch(e)`` fixes the epoch number of the next iteration (as with DistributedSampler);
    otherwise it counts up from 0. ``len()`` is the number of batches per epoch when
    ``epoch_samples`` was given.
    """

    def __init__(self, order: _ShardOrder, loader: wds.WebLoader, batches_per_epoch: int | None):
        self._order, self._loader, self._batches = order, loader, batches_per_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._order.epoch = self.epoch
        self.epoch += 1
        return iter(self._loader)

    def __len__(self) -> int:
        if self._batches is None:
            raise TypeError("the number of batches of a one-pass loader is not fixed; pass epoch_samples")
        return self._batches


def make_loader(
    split_dir: str | os.PathLike,
    batch_size: int,
    *,
    shuffle_buffer: int = 1000,  # samples held by each worker's shuffle buffer (0 or 1: no shuffling)
    num_workers: int = 2,  # DataLoader worker processes (0: read in the calling process)
    epoch_samples: int | None = None,  # samples per rank per epoch (resampled shards); None: one pass
    seed: int = 0,  # shard order and shuffle buffers derive from (seed, epoch, rank, worker)
    keys: list[str] | tuple[str, ...] | None = None,  # fields to load, e.g. ("refmap_k", "z_k"); None: all
) -> ShardLoader:
    """Batches of a split: dicts of torch tensors (see the module docstring for the modes).

    Each batch holds ``"__key__"`` (list of str, the sample keys) and the requested fields:
    refmaps (B, 3, R, R) float32 (``refmap_obs``, ``refmap_k``, ``refmap_next``, ``refmap_mirror``,
    ``observed``), ``observed_mask`` (B, 1, R, R) float32, materials (B, 6) float32 (``z_obs``, ``z_k``,
    ``z_next``), ``k``/``K`` (B,) int64, ``view_azimuth`` (B,) float32 radians, ``envmap_id``
    (list of str); test splits also ``image``/``normals`` (B, H, W, 3) float32 and ``mask``
    (B, H, W) uint8. With ``epoch_samples=None`` the last batch of each worker may be smaller.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    shards = list_shards(split_dir)
    wanted = None if keys is None else frozenset(keys)
    resample = epoch_samples is not None
    order = _ShardOrder(shards, seed, resample)

    stages: list[Any] = [order]
    if not resample:
        stages += [wds.split_by_node, wds.split_by_worker]
    stages.append(wds.tarfile_to_samples(select_files=_MemberFilter(wanted)))
    if shuffle_buffer > 1:
        stages.append(_ShuffleBuffer(shuffle_buffer, order))
    stages.append(wds.map(functools.partial(_decode, keys=wanted)))
    stages.append(wds.batched(batch_size, collation_fn=collate))
    pipeline = wds.DataPipeline(*stages)

    loader = wds.WebLoader(
        pipeline,
        batch_size=None,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,  # started once, on the first epoch
        multiprocessing_context=WORKER_START if num_workers > 0 else None,
    )
    batches = None
    if resample:
        batches = max(1, math.ceil(epoch_samples / batch_size))
        loader = loader.with_epoch(batches)
    return ShardLoader(order, loader, batches)
