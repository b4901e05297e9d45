"""The built-in real maps: the npm package's pixels, decoded reproducibly, in fixed disjoint splits,
with a clear error when the package cannot be had."""

from __future__ import annotations

import base64
import tarfile

import pytest

from pipeline.splits import plan_envmap_splits
from rendering.errors import InputError
from rendering.file_hash import file_sha256
from rendering.real_envmaps import (
    DECODED_SHA256,
    MODULE_DIR,
    REAL_MAPS,
    REAL_SPLITS,
    TARBALL,
    decode_module,
    decode_package,
    fetch_package,
)


def test_decoded_maps_are_the_package_pixels_byte_for_byte(real_envmap_files):
    tarball = next(iter(real_envmap_files.values())).parent.parent / TARBALL
    with tarfile.open(tarball, "r:gz") as archive:
        for name in ("sky", "lobby"):
            module = archive.extractfile(f"{MODULE_DIR}{name}.exr.js").read().decode()
            payload = module.split("base64,", 1)[1].rstrip().rstrip(";").rstrip("'\"")
            assert real_envmap_files[name].read_bytes() == base64.b64decode(payload)


def test_decoding_is_reproducible(real_envmap_files, tmp_path):
    tarball = next(iter(real_envmap_files.values())).parent.parent / TARBALL
    again = decode_package(tarball, tmp_path / "again")
    assert sorted(again) == sorted(REAL_MAPS) == sorted(real_envmap_files)
    assert all(again[name].read_bytes() == real_envmap_files[name].read_bytes() for name in REAL_MAPS)


def test_a_damaged_decoded_map_in_the_cache_is_decoded_again_with_a_warning(real_envmap_files, tmp_path):
    """A truncated or emptied ``<name>.exr`` in the cache used to be read as it was (an error at
    best); its sha256 is pinned, so it is decoded again from the package, the same bytes."""
    tarball = next(iter(real_envmap_files.values())).parent.parent / TARBALL
    decoded = decode_package(tarball, tmp_path / "exr")
    assert {name: file_sha256(path) for name, path in decoded.items()} == DECODED_SHA256
    decoded["sky"].write_bytes(decoded["sky"].read_bytes()[:1000])
    decoded["park"].write_bytes(b"")
    with pytest.warns(UserWarning, match=r"damaged decoded copy .* decoded again from") as warned:
        again = decode_package(tarball, tmp_path / "exr")
    assert sorted(str(w.message).split(": ")[0] for w in warned) == [
        str(decoded["park"]),
        str(decoded["sky"]),
    ]
    assert all(again[name].read_bytes() == real_envmap_files[name].read_bytes() for name in REAL_MAPS)


def test_a_corrupt_module_or_a_tampered_tarball_is_named(tmp_path):
    with pytest.raises(InputError, match=r"sky\.exr\.js: corrupt base64"):
        decode_module(b"export default 'data:application/exr;base64,di8xAQ=x=='", "sky.exr.js")
    with pytest.raises(InputError, match=r"park\.exr\.js: is not an `export default"):
        decode_module(b"module.exports = 42", "park.exr.js")
    (tmp_path / TARBALL).write_bytes(b"not the package")
    with pytest.raises(InputError, match=r"sha256 .* is not the pinned .*delete it and rerun"):
        fetch_package(tmp_path)


def test_without_npm_or_registry_the_error_says_how_to_get_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(InputError, match=r"npm is not installed; install Node.js/npm .*npm pack"):
        fetch_package(tmp_path / "no-npm")
    monkeypatch.undo()
    # An unreachable registry: npm answers at once in offline mode with an empty cache.
    monkeypatch.setenv("npm_config_offline", "true")
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))
    with pytest.raises(InputError, match=r"npm pack failed .*; install Node.js/npm"):
        fetch_package(tmp_path / "offline")
    assert not list((tmp_path / "offline").glob("*.tgz"))  # nothing half-fetched


def test_real_maps_sit_in_their_fixed_splits_and_no_map_is_in_two(real_envmap_files):
    params = {
        "envmaps": {
            "n": 10,
            "real": True,
            "real_cache_dir": str(next(iter(real_envmap_files.values())).parent.parent),
        },
        "envmaps_split": {"seed": 7, "proportions": {"train": 0.5, "val": 0.25, "test": 0.25}},
    }
    plan = plan_envmap_splits(params)
    ids = [spec.id for specs in plan.values() for spec in specs]
    assert len(ids) == len(set(ids)) == 28
    for split, names in REAL_SPLITS.items():
        assert sorted(s.id for s in plan[split] if s.kind == "real") == sorted(f"real-{n}" for n in names)
