"""The training status line a user watches: its ETA counts down to zero and never below."""

from __future__ import annotations

from pipeline.training.progress import Progress


def test_eta_is_zero_when_the_last_batch_overshoots_the_total():
    progress = Progress(total_samples=45000, start_samples=0)
    progress.start_time -= 4000.0  # 4000 s of training so far
    middle = progress.line("drmnet", 22500, 700, {"samples_per_second": 5.6, "loss": 0.1})
    assert "ETA 1:06:40" in middle  # half done in 4000 s: as long again to go
    # 24 samples past the total at ≈ 11 samples/s: 2 s "left" would print as -1:59:58
    last = progress.line("drmnet", 45024, 1407, {"samples_per_second": 11.3, "loss": 0.1})
    assert "ETA 0:00:00" in last, last
