"""Outputs are written atomically (the previous file or the complete new one, never a part) and
take their mode from the umask, like any file a program creates (issue 13: not mkstemp's 0600)."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from fileio.atomic import atomic_write, atomic_write_bytes


@pytest.fixture
def umask():
    """Set the process umask for one test; the previous one is restored after it."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_a_written_file_has_the_mode_the_umask_gives(tmp_path, umask, mask):
    umask(mask)
    path = atomic_write_bytes(tmp_path / "out.json", b"{}\n")
    assert mode(path) == 0o666 & ~mask
    assert path.read_bytes() == b"{}\n"


def test_a_writer_that_stages_its_own_0600_file_still_gives_the_umask_mode(tmp_path, umask):
    umask(0o027)
    with atomic_write(tmp_path / "weights.bin") as tmp:
        tmp.unlink()  # as safetensors does: its own temporary file, renamed over ours
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"weights")
        os.close(fd)
    assert mode(tmp_path / "weights.bin") == 0o640


def test_weights_and_shards_take_the_umask_mode(tmp_path, umask):
    from models.config import UNetConfig
    from models.illnet import IllNet
    from models.weights import save_weights
    from pipeline.shards import write_shard

    umask(0o027)
    unet = UNetConfig(channels=8, multipliers=(1,), res_blocks=1, attention=(), head_channels=8)
    weights = save_weights(tmp_path / "ema.safetensors", {"illnet": IllNet(unet, 8)})
    shard = write_shard(tmp_path / "s.tar", [("k0", {"refmap_k": np.ones((3, 2, 2), np.float32)})])
    assert mode(weights) == mode(shard.path) == 0o640


def test_an_exception_mid_write_leaves_no_file_and_no_temporary_file(tmp_path):
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_write(tmp_path / "out.bin") as tmp, open(tmp, "wb") as f:
            f.write(b"half of it")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_an_exception_mid_write_keeps_the_previous_file(tmp_path):
    path = atomic_write_bytes(tmp_path / "out.bin", b"complete")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("killed")
    assert path.read_bytes() == b"complete"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_the_temporary_file_is_hidden_beside_the_target_with_the_given_suffix(tmp_path):
    with atomic_write(tmp_path / "image.exr", suffix=".exr") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".image.exr.") and tmp.suffix == ".exr"
        assert not (tmp_path / "image.exr").exists()  # renamed only when the body returns
        tmp.write_bytes(b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["image.exr"]
