"""A `drmnet` killed with SIGKILL takes its children with it: Prefect's ephemeral API server of
`render-dataset`, the DataLoader workers and multiprocessing helpers of `train` (the watchdog of
pipeline/watchdog.py ends them). Only the test's own process trees are looked at and killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from random_split import write_split

from pipeline.watchdog import _children_files_work, descendants

REPO = Path(__file__).resolve().parents[1]
# The Prefect home of tests/test_dataset_flow.py: its database is migrated once for both.
PREFECT_HOME = Path(tempfile.gettempdir()) / f"drmnet-test-prefect-{os.getuid()}"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the watchdog is Linux-only")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(processes: dict[int, int]) -> dict[int, str]:
    """Those of ``processes`` (PID → start time) still running, with their command lines."""
    from pipeline.watchdog import _stat

    return {pid: cmdline(pid) for pid, start in processes.items() if (_stat(pid) or (0, None))[1] == start}


def kill_when(command: list[str], cwd: Path, env: dict, ready, timeout: float = 240) -> dict[int, int]:
    """Start ``command``, record its process tree until ``ready(tree)`` says it is running what
    the test is about, SIGKILL the top process alone; return every process the tree ever held."""
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    seen: dict[int, int] = {}
    fast, deadline = _children_files_work(), time.monotonic() + timeout
    try:
        while process.poll() is None and time.monotonic() < deadline:
            seen.update(descendants([process.pid], fast))
            if ready({pid: cmdline(pid) for pid in alive(seen)}):
                time.sleep(1.0)  # the watchdog looks every 0.5 s: let it see the newest child
                break
            time.sleep(0.1)
        assert process.poll() is None, f"it ended before it was killed: {process.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "it never got ready"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    return seen


def assert_all_gone(tree: dict[int, int], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while alive(tree) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = alive(tree)
    for pid in left:  # ours: do not leave them to the next test
        os.kill(pid, signal.SIGKILL)
    assert not left, f"still running {within:.0f} s after their parent was killed: {left}"


def drmnet_command(*args: str) -> list[str]:
    return [sys.executable, "-c", "from pipeline.cli import main; main()", *args]


def test_a_killed_render_dataset_leaves_no_prefect_server(tmp_path):
    from pipeline.splits import make_envmap_splits

    params = {  # six one-sample shards, slow enough (512 spp) to be killed while they render
        "profile": "tiny",
        "profiles": {"tiny": {"refmap_res": 16, "spp": 512}},
        "envmaps": {"n": 4, "seed": 3, "kinds": {"sky": 1.0}, "envmap_height": 16},
        "envmaps_split": {"seed": 0, "proportions": {"train": 0.5, "test": 0.5}},
        "dataset": {"seed": 0, "shard_size": 1, "samples": {"drmnet": {"train": 6}}, "workers": 1},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    make_envmap_splits(params, tmp_path / "envmaps")
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_HOME": str(PREFECT_HOME), "OMP_NUM_THREADS": "1"}
    env.pop("PREFECT_API_URL", None)
    command = drmnet_command(
        "render-dataset", "--dataset", "drmnet", "--split", "train", "--params", "params.yaml",
        "--out", "shards", "--envmaps", "envmaps",
    )  # fmt: skip
    tree = kill_when(command, tmp_path, env, lambda tree: any("uvicorn" in c for c in tree.values()))
    assert_all_gone(tree)


def test_a_killed_training_leaves_no_loader_workers(tmp_path):
    split = write_split(tmp_path / "split", shards=4, per_shard=4)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "tiny"
    params["profiles"]["tiny"]["refmap_res"] = 8
    params["profiles"]["tiny"]["train_drmnet"].update(
        total_samples=10**7, batch_size=4, num_workers=1, shuffle_buffer=4, tick_samples=10**6
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = drmnet_command(
        "train", "drmnet", "--data", str(split), "--no-register", "--params", "params.yaml", "--device", "cpu"
    )
    # Ready once the DataLoader worker runs: forkserver and its worker (besides the watchdog).
    tree = kill_when(
        command, tmp_path, env, lambda tree: sum("watchdog" not in c for c in tree.values()) >= 2
    )
    assert_all_gone(tree)
