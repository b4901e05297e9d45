"""Atomic file writes: a reader (or a rerun after a kill) sees the previous file or the complete
new one, never a part. The bytes go to a temporary file beside the target, which is renamed over
the target in one step once they are all written, and removed if writing fails.

The written file has mode 0o666 less the umask, as if ``open()`` had created the target itself:
``tempfile.mkstemp`` (and writers that stage their own temporary file, such as safetensors')
would leave it at 0600, readable by its owner only.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path: str | os.PathLike, suffix: str = ".tmp", fsync: bool = False) -> Iterator[Path]:
    """Yield a new empty file ``.<name>.<8 hex digits><suffix>`` beside ``path`` for the body to
    write (by name, or by opening it); when the body returns, rename it to ``path``; when it
    raises, remove it and leave ``path`` as it was. ``path``'s directory must exist.

    ``suffix``: for writers that choose the format by the name's ending (``.exr``, ``.npy``).
    ``fsync``: flush the bytes to the disk before the rename (shards: a crash of the machine, not
    only of the process, leaves no renamed but empty file).
    """
    path = Path(path)
    tmp = _new_file(path, suffix)
    mode = tmp.stat().st_mode & 0o777  # as the kernel made it from the umask
    try:
        yield tmp
        os.chmod(tmp, mode)  # a writer may have replaced the file with one of its own
        if fsync:
            handle = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(handle)
            finally:
                os.close(handle)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and flushed to the disk, creating its directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, fsync=True) as tmp:
        tmp.write_bytes(data)
    return path


def _new_file(path: Path, suffix: str) -> Path:
    # O_EXCL: never share a name with a concurrent writer; 0o666: the kernel applies the umask.
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"{path.parent}: no free temporary name for {path.name}")
