"""An endless, resumable stream of training batches.

The data source is either an iterable of batches (iterated again for every epoch) or a callable
``epoch -> iterable`` (a loader factory, e.g. one that reshuffles per epoch). The stream counts
(epoch, batches taken in that epoch); a resumed run rebuilds the source for that epoch and skips
the batches already taken, so a deterministic source continues exactly where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

Batch = dict[str, Any]
DataSource = Iterable[Batch] | Callable[[int], Iterable[Batch]]


class BatchStream:
    def __init__(self, data: DataSource, device: torch.device, epoch: int = 0, index: int = 0):
        self.data = data
        self.device = device
        self.epoch = epoch
        self.index = index
        self._iter = self._open(skip=index)

    def _open(self, skip: int) -> Iterator[Batch]:
        source = self.data(self.epoch) if callable(self.data) else self.data
        it = iter(source)
        for _ in range(skip):
            next(it)
        return it

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Batch:
        try:
            batch = next(self._iter)
        except StopIteration:
            if self.index == 0:
                raise ValueError(f"the training data yielded no batch in epoch {self.epoch}") from None
            self.epoch, self.index = self.epoch + 1, 0
            self._iter = self._open(skip=0)
            batch = next(self._iter)
        self.index += 1
        # Tensors move to the device; the reader's other fields (sample keys, envmap ids) stay.
        return {
            k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()
        }

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index}
