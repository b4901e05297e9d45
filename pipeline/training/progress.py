"""Progress in training samples: status lines with samples/s and ETA, the loss history, and the
two files DVC reads (``metrics/train_<net>.json`` for ``dvc metrics show``,
``plots/train_<net>.csv`` for ``dvc plots show``), both written atomically."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Any

from fileio.atomic import atomic_write


class Progress:
    """Averages per-step metrics over a tick and formats the status line."""

    def __init__(self, total_samples: int, start_samples: int):
        self.total_samples = total_samples
        self.start_samples = start_samples
        self.start_time = time.perf_counter()
        self.tick_time = self.start_time
        self.tick_samples = start_samples
        self._sums: dict[str, float] = {}
        self._count = 0

    def add(self, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self._sums[k] = self._sums.get(k, 0.0) + float(v)
        self._count += 1

    def tick(self, samples: int) -> dict[str, float]:
        """Close a tick: mean metrics of its steps plus throughput; resets the accumulators."""
        now = time.perf_counter()
        rate = (samples - self.tick_samples) / max(now - self.tick_time, 1e-9)
        means = {k: v / max(self._count, 1) for k, v in self._sums.items()}
        self.tick_time, self.tick_samples, self._sums, self._count = now, samples, {}, 0
        return {**means, "samples_per_second": rate}

    def line(self, name: str, samples: int, step: int, metrics: dict[str, float]) -> str:
        overall = (samples - self.start_samples) / max(time.perf_counter() - self.start_time, 1e-9)
        # the last batch may overshoot the total: nothing is left then, not a negative time
        left = max(self.total_samples - samples, 0)
        eta = left / overall if overall > 0 else float("inf")
        losses = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k.startswith("loss"))
        percent = 100 * samples / self.total_samples
        return (
            f"{name}  samples {samples}/{self.total_samples} ({percent:.1f}%)  step {step}  "
            f"{metrics.get('samples_per_second', 0):.1f} samples/s  "
            f"ETA {_duration(eta)}  {losses}"
        )


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    s = int(seconds)
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def write_metrics(path: str | os.PathLike, metrics: dict[str, Any]) -> None:
    _write_atomic(Path(path), json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def write_curve(path: str | os.PathLike, rows: list[dict[str, float]]) -> None:
    """The loss history as CSV, one row per tick; columns from the first row."""
    if not rows:
        return
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    _write_atomic(Path(path), out.getvalue())
