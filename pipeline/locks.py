"""One writer per output directory: an exclusive lock next to the directory it guards.

``output_lock("checkpoints/drmnet", "drmnet train")`` holds ``checkpoints/.drmnet.lock`` for the
duration of a ``with`` block. The lock is ``fcntl.flock`` on that open file, so the kernel
releases it when its process dies, however it dies (SIGKILL included): a lock is never left held
by a dead process. The file records who holds it (PID, host, command, start time) for the message
a second writer gets::

    error: checkpoints/drmnet: in use by drmnet train (pid 1234 on vm, since 2026-11-27 10:31:25 UTC);
    wait for it or stop it                                                       (one line)

A file left behind by a killed holder is taken over with a one-line note naming the dead PID.
The file sits beside the directory, not in it, so that it never becomes part of a DVC output or
of a directory that is swapped as a whole (:mod:`pipeline.splits`), and it is removed on release.

Linux/POSIX only (``fcntl``). Re-entrant within a process (a command and the flow it runs both
lock); any other process is refused. On network file systems where flock is not shared between
machines the lock protects only against writers on the same machine.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rendering.errors import InputError

_held: set[Path] = set()  # lock files this process holds: taking one again is a no-op


def lock_path(directory: str | os.PathLike) -> Path:
    """The lock file of ``directory``: ``<parent>/.<name>.lock``."""
    directory = Path(directory).absolute()
    return directory.parent / f".{directory.name}.lock"


def _holder(text: str) -> dict:
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict) -> str:
    since = holder.get("since")
    when = "?"
    if isinstance(since, (int, float)):
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since))
    command = holder.get("command", "another process")
    return f"{command} (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {when})"


def _dead_here(holder: dict) -> bool:
    """Whether the holder ran on this host and its PID is gone."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _open_locked(path: Path, directory: str | os.PathLike) -> int:
    """A descriptor of ``path`` holding its exclusive flock; InputError naming the holder when held."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
            os.close(fd)
            if _dead_here(holder):  # a child that inherited the descriptor outlived the holder
                left_over = f"a process left over from {_describe(holder)}, which died"
                raise InputError(directory, f"still locked by {left_over}; stop it") from None
            raise InputError(directory, f"in use by {_describe(holder)}; wait for it or stop it") from None
        # A releasing holder unlinks the file after we opened it: our lock would then be on a
        # file nobody else sees. Lock the file that is at the path now.
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextmanager
def output_lock(directory: str | os.PathLike, command: str) -> Iterator[Path]:
    """Hold the exclusive lock of the output ``directory`` (which need not exist yet) while the
    block runs; ``command`` names the holder in the message others get (e.g. ``drmnet train``)."""
    path = lock_path(directory)
    if path in _held:  # this process holds it already (a CLI command and the flow it runs)
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_locked(path, directory)
    _held.add(path)
    try:
        previous = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
        if previous:  # its holder died without releasing it (the kernel dropped its flock)
            dead = f"{_describe(previous)}, which is no longer running"
            print(f"note: {directory}: taking over the lock of {dead}", file=sys.stderr)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        yield path
    finally:
        _held.discard(path)
        path.unlink(missing_ok=True)  # before the flock goes: a waiter then re-opens (see above)
        os.close(fd)
