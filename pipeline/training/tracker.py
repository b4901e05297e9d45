"""What a training loop reports to, besides its status lines: per-step metrics and images.
``pipeline.registry.RunTracker`` implements it with MLflow; the loops work without one."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Tracker(Protocol):
    run_id: str  # the run in the tracking store; checkpoints record it, so a resumed training continues it

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Metrics of one optimisation step; ``step`` counts training samples."""

    def log_image(self, image: np.ndarray, name: str, step: int) -> None:
        """A uint8 (H, W, 3) image, e.g. a sample grid."""

    def flush(self) -> None:
        """Send anything buffered."""
