"""One writer per output directory: a second `drmnet` writing where another one runs is refused
with one line naming the first; the lock of a killed writer is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from pipeline.locks import lock_path, output_lock

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

# Holds the locks of the given directories until its stdin closes (or it is killed).
HOLDER = """
import sys
from contextlib import ExitStack
from pipeline.locks import output_lock
with ExitStack() as stack:
    for directory in sys.argv[1:]:
        stack.enter_context(output_lock(directory, "drmnet train"))
    print("locked", flush=True)
    sys.stdin.read()
"""


def hold(cwd: Path, *directories: str) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, *directories],
        cwd=cwd,
        env=ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline() == "locked\n"
    return holder


def drmnet(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "from pipeline.cli import main; main()", *args]
    return subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120)


def test_a_second_writer_is_refused_with_one_line_naming_the_first(tmp_path):
    (tmp_path / "params.yaml").write_text("profile: tiny\nprofiles: {tiny: {refmap_res: 16}}\n")
    holder = hold(tmp_path, "checkpoints/obsnet", "data/envmaps", "data/shards/drmnet/train")
    try:
        runs = {
            "checkpoints/obsnet": drmnet(tmp_path, "train", "obsnet", "--no-register"),
            "data/envmaps": drmnet(tmp_path, "make-envmap-splits", "--out", "data/envmaps"),
            "data/shards/drmnet/train": drmnet(
                tmp_path, "render-dataset", "--dataset", "drmnet", "--split", "train"
            ),
        }
    finally:
        holder.stdin.close()
        holder.wait()
    for directory, run in runs.items():
        assert run.returncode == 2, run.stderr
        assert run.stderr.startswith(f"error: {directory}: in use by drmnet train (pid {holder.pid} on ")
        assert run.stderr.rstrip().endswith("; wait for it or stop it")
        assert run.stderr.count("\n") == 1, run.stderr
    assert not lock_path(tmp_path / "checkpoints/obsnet").exists(), "a released lock leaves its file"


def test_the_lock_of_a_killed_writer_is_taken_over_with_a_note(tmp_path, capsys):
    holder = hold(tmp_path, "out")
    os.kill(holder.pid, signal.SIGKILL)  # no clean-up: the kernel drops the flock, the file stays
    holder.wait()
    assert lock_path(tmp_path / "out").exists()
    with output_lock(tmp_path / "out", "drmnet render-dataset"):
        note = capsys.readouterr().err
        assert f"taking over the lock of drmnet train (pid {holder.pid} " in note and note.count("\n") == 1
        refused = try_lock_in_another_process(tmp_path / "out")
        assert f"in use by drmnet render-dataset (pid {os.getpid()} " in refused
    assert try_lock_in_another_process(tmp_path / "out") == ""


def try_lock_in_another_process(directory: Path) -> str:
    """The refusal another process gets ("" when it gets the lock)."""
    code = (
        "import sys\nfrom pipeline.locks import output_lock\nfrom rendering.errors import InputError\n"
        f"try:\n    output_lock({str(directory)!r}, 'x').__enter__()\n"
        "except InputError as error:\n    print(error)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, check=True)
    return run.stdout.strip()
