"""Children die with their parent: a watchdog process for each ``drmnet`` command (Linux only).

A killed ``drmnet`` leaves processes behind that nothing stops: Prefect's ephemeral API server
(uvicorn, ~200 MB), DataLoader workers, multiprocessing's ``forkserver`` and
``resource_tracker``. Once their parent is dead they are children of PID 1 and no longer known
as ours, and they do not all notice on their own (a SIGKILL runs no clean-up code). So
:func:`pipeline.cli.main` starts this script first, as its own small process::

    python -I -S pipeline/watchdog.py <pid of the drmnet process>

It records the descendants of that process every :data:`POLL` seconds from ``/proc`` (PID and
start time, so a reused PID is never mistaken for one of ours) and, as soon as the parent is
gone (its own parent PID changes: the kernel reparents it), sends SIGTERM to every recorded
process still alive and to their children, then SIGKILL to any left after :data:`GRACE`
seconds; then it exits. The same happens after a normal exit that left a child running.

It runs in its own session, so Ctrl-C in a terminal and a kill of the process group spare it
(it must outlive its parent); it imports only the standard library (``-S``: no site-packages)
and reads ``/proc`` only. Limits: a process started and orphaned within one poll interval
before the parent died, by a child the watchdog never saw, escapes it; a process that moved
itself out of our tree on purpose is left alone. Set ``DRMNET_WATCHDOG=0`` to run without it.
"""

from __future__ import annotations

import os
import signal
import sys
import time

POLL = 0.5  # seconds between two looks at the process tree
GRACE = 3.0  # seconds between SIGTERM and SIGKILL
_started = False


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent PID, start time in clock ticks) of a running process; None when it is gone or a
    zombie (dead, waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            data = stream.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()  # after "pid (comm) ": state, ppid, …
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[1]), int(fields[19])


def _children_files_work() -> bool:
    """Whether the kernel lists children in /proc (CONFIG_PROC_CHILDREN), sparing a full scan."""
    return os.path.exists(f"/proc/self/task/{os.getpid()}/children")


def _children(pid: int) -> list[int]:
    children = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as stream:
                children.extend(int(child) for child in stream.read().split())
    except OSError:
        pass
    return children


def descendants(roots: list[int], fast: bool) -> dict[int, int]:
    """PID → start time of every living descendant of ``roots`` (the roots excluded)."""
    if fast:
        children_of = _children
    else:  # one pass over every process
        table: dict[int, list[int]] = {}
        for name in os.listdir("/proc"):
            if name.isdigit() and (stat := _stat(int(name))) is not None:
                table.setdefault(stat[0], []).append(int(name))
        children_of = lambda pid: table.get(pid, [])  # noqa: E731
    found: dict[int, int] = {}
    stack = list(roots)
    while stack:
        for child in children_of(stack.pop()):
            if child not in found and (stat := _stat(child)) is not None:
                found[child] = stat[1]
                stack.append(child)
    return found


def _alive(processes: dict[int, int]) -> dict[int, int]:
    """Those of ``processes`` that still run (same PID, same start time, not a zombie)."""
    return {pid: start for pid, start in processes.items() if (_stat(pid) or (0, None))[1] == start}


def _signal(processes: dict[int, int], signum: int) -> None:
    for pid in _alive(processes):
        try:
            os.kill(pid, signum)
        except OSError:
            pass


def watch(parent: int) -> None:
    """Record ``parent``'s descendants until it is gone, then end those still running."""
    me, fast = os.getpid(), _children_files_work()
    known: dict[int, int] = {}
    while os.getppid() == parent:
        known = _alive(known)
        known.update(descendants([parent], fast))
        known.pop(me, None)
        time.sleep(POLL)
    known = _alive(known)
    known.update(descendants(list(known), fast))  # children they started since the last look
    known.pop(me, None)
    _signal(known, signal.SIGTERM)
    deadline = time.monotonic() + GRACE
    while _alive(known) and time.monotonic() < deadline:
        time.sleep(0.05)
    _signal(known, signal.SIGKILL)


def start() -> None:
    """Start the watchdog of this process (from :func:`pipeline.cli.main`); Linux only."""
    import subprocess

    global _started
    if _started or not sys.platform.startswith("linux") or os.environ.get("DRMNET_WATCHDOG") == "0":
        return
    _started = True  # one per process, however often main() runs in it (tests)
    subprocess.Popen(
        [sys.executable, "-I", "-S", os.path.abspath(__file__), str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch(int(sys.argv[1]))
