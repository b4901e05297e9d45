"""A real interruption for the resume tests: run `drmnet train` as a subprocess in its own process
group and SIGKILL the group as soon as the training's first snapshot exists."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KILL_TIMEOUT_S = 120  # far above a tiny training's first snapshot; only guards against a hang


def kill_at_first_snapshot(workdir: Path, arguments: list[str], env: dict[str, str] | None = None) -> None:
    """Run ``python -m pipeline.cli train …arguments`` in ``workdir`` (output in train.log) and kill
    its process group once ``checkpoints/<net>/state.pt`` (renamed last in a snapshot) exists;
    asserts that it was killed rather than having finished or failed."""
    net = arguments[0]
    command = [sys.executable, "-m", "pipeline.cli", "train", *arguments]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **(env or {})}
    state = workdir / "checkpoints" / net / "state.pt"
    with (workdir / "train.log").open("w") as log:
        process = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + KILL_TIMEOUT_S
            while not state.exists() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == -signal.SIGKILL, (workdir / "train.log").read_text()[-3000:]
