"""Real HDR environment maps as a built-in source: the 18 CC0 Poly Haven HDRIs that npm's
``@pmndrs/assets@1.7.0`` ships (``hdri/<name>.exr.js``: a JavaScript module whose default export
is a ``data:application/exr;base64,…`` URL of a 512×256 DWAB-compressed OpenEXR file).

* :func:`fetch_package` — the package tarball, by the project's own means: ``npm pack`` into the
  cache directory (``data/real_envmaps`` by default), checked against a pinned sha256. This is
  the only network access, once; later runs use the cached tarball. Without npm or a registry
  the error says how to get the file.
* :func:`decode_package` — every ``hdri/*.exr.js`` module decoded to ``<name>.exr`` beside the
  tarball (atomic writes; a corrupt module is an InputError naming it; a decoded file whose
  sha256 is not the pinned one, e.g. truncated, is decoded again with a warning). The files are the
  package's pixels, unchanged; reading them goes through the HDR input policy
  (:mod:`rendering.radiance`) like any user map — these maps carry ringing around their suns.
* :data:`REAL_SPLITS` — a FIXED, documented assignment of the 18 maps to splits, so the test
  maps are the same whatever the seed or proportions: the evaluation's and the quality
  benchmark's held-out real light, never seen in training.

Provenance: Poly Haven (polyhaven.com), licence CC0-1.0, via the npm package above; recorded in
the envmaps table (``source``, ``license``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import warnings
from pathlib import Path

from fileio.atomic import atomic_write
from rendering.errors import InputError
from rendering.file_hash import file_sha256

PACKAGE = "@pmndrs/assets"
VERSION = "1.7.0"
TARBALL = "pmndrs-assets-1.7.0.tgz"
TARBALL_SHA256 = "152bd218a3390703f184f0c6ce16e73c8f0a87f32d38530d418a09d33d8208dc"
LICENSE = "CC0-1.0"
MODULE_DIR = "package/hdri/"
REAL_KIND = "real"
DEFAULT_CACHE = "data/real_envmaps"

# Fixed splits (11 / 2 / 5 of 18): the test maps cover a sunny sky, a city, a forest, a night
# scene and an indoor space; val an outdoor and an indoor map. Never derived from a seed.
REAL_SPLITS: dict[str, tuple[str, ...]] = {
    "train": (
        "apartment", "bridge", "dawn", "esplanade", "hall", "lab",
        "lobby", "studio", "sunrise", "venice", "workshop",
    ),
    "val": ("sunset", "warehouse"),
    "test": ("city", "forest", "night", "park", "sky"),
}  # fmt: skip
REAL_MAPS = tuple(sorted(name for names in REAL_SPLITS.values() for name in names))
# sha256 of each decoded map: the pinned tarball's bytes, so a damaged copy in the cache is known.
DECODED_SHA256 = {
    "apartment": "31c62c03b5686b3d899071070ec1bfc760a3ddc1e6a05915ebc28102fef2fb1c",
    "bridge": "921f8b95cd1ae8bda602d4d395d8ce5574975ae0df626504eb4387cc963212ea",
    "city": "82847b3f3e2073d16647be2eb5712dc0f7e37ddc9480a1d45f2270fe8cd048f6",
    "dawn": "02529d0a04dbc6e761adb9b4f6bcb07b0ef3931b218b394ee6be68b1fe39ce79",
    "esplanade": "2a3c5a870167dc1a1ad44115cd0c554cfde97fa6ca859f4f90f39771db90b54c",
    "forest": "6fff311b5f3dad0910d8f334a6d9d88218ffd873d72c679ee1b7e4bccfa140e3",
    "hall": "205a84e0108d40fb207e077db9bc68a15f329a8af8ee1f82c28524e967963b81",
    "lab": "4f993660d9c53e97cb23f2d901e06aed9bc0323f6cd9079ec0de02e73634796e",
    "lobby": "55b54fc7b4efc5e9fef27529208d4abe9614839307f40490b135ce75aa08b72c",
    "night": "9509f1b917dbb4c98d63b92e9fd12fb79e3376d17ec3186e2de39543e32ce5ff",
    "park": "00e78fd8fe0ac81f73eb3682b1a4e2e1b909148f1b06d1e52e771d4fec3d02a1",
    "sky": "a72412700b91a49080a582420476d2ab9a1e8fd181031f4ae7ec5e2596addc2a",
    "studio": "08038ed9159c24bb732d2218dafa09cef2abaa44f9ce11ec511d87c842d88fad",
    "sunrise": "d48b92f8fd8d1e8eb111d90284a007f811a4d57abe4fa6faf10165287a3fe9c2",
    "sunset": "d09a4d7581f5454f13c3da3c323a231d00a34e60200de7654a895d2d41a7ceb7",
    "venice": "8200c809a7032efaa7d9fa3a5c64939d7f07d26478bc2418af624150af90dac9",
    "warehouse": "bb11fe7e9c3037b8db21beab826a7ed7c452a48cb6d361f982ca7311aacba9c1",
    "workshop": "793ca687c647e032c79ea3a67bd016ad3158d17506540cfa8fdd901550cc0a5d",
}
_DATA_URL = re.compile(
    rb"""^\s*export\s+default\s+['"]data:application/exr;base64,([A-Za-z0-9+/=]+)['"]\s*;?\s*$"""
)


def real_split(name: str) -> str:
    """The fixed split of real map ``name``."""
    for split, names in REAL_SPLITS.items():
        if name in names:
            return split
    raise InputError(name, f"not one of the built-in real maps {REAL_MAPS}")


def fetch_package(cache_dir: str | os.PathLike = DEFAULT_CACHE) -> Path:
    """The package tarball in ``cache_dir`` (fetched with ``npm pack`` when missing), sha256-checked."""
    cache = Path(cache_dir)
    tarball = cache / TARBALL
    if tarball.exists():
        _check_sha256(tarball)
        return tarball
    npm = shutil.which("npm")
    how = (
        f"install Node.js/npm (`apt-get install npm`) and rerun, or place {TARBALL} "
        f"(`npm pack {PACKAGE}@{VERSION}`, sha256 {TARBALL_SHA256[:12]}…) in {cache}"
    )
    if npm is None:
        raise InputError(f"{PACKAGE}@{VERSION}", f"npm is not installed; {how}")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".npm-pack.") as tmp:
        try:
            subprocess.run(
                [npm, "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", tmp, "--silent"],
                check=True,
                capture_output=True,
                timeout=600,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
            detail = getattr(error, "stderr", b"") or b""
            last = detail.decode(errors="replace").strip().splitlines()[-1:] or [str(error)]
            raise InputError(f"{PACKAGE}@{VERSION}", f"npm pack failed ({last[0]}); {how}") from None
        fetched = Path(tmp) / TARBALL
        if not fetched.exists():
            raise InputError(f"{PACKAGE}@{VERSION}", f"npm pack wrote no {TARBALL}; {how}")
        _check_sha256(fetched)
        os.replace(fetched, tarball)
    return tarball


def _check_sha256(path: Path) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != TARBALL_SHA256:
        raise InputError(
            path, f"sha256 {digest[:12]}… is not the pinned {TARBALL_SHA256[:12]}…: delete it and rerun"
        )


def decode_module(text: bytes, source: object) -> bytes:
    """The EXR bytes of one ``hdri/<name>.exr.js`` module. InputError if it is not such a module."""
    match = _DATA_URL.match(text)
    if match is None:
        raise InputError(source, "is not an `export default 'data:application/exr;base64,…'` module")
    try:
        data = base64.b64decode(match.group(1), validate=True)
    except binascii.Error as error:
        raise InputError(source, f"corrupt base64 data ({error})") from None
    if not data.startswith(b"\x76\x2f\x31\x01"):
        raise InputError(source, "the decoded data is not an OpenEXR file (bad magic number)")
    return data


def decode_package(tarball: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Decode every real map of the tarball to ``<out_dir>/<name>.exr`` (default: beside the
    tarball); finished files (those with the pinned sha256) are kept, damaged ones decoded again
    with a warning. Returns name → path, for the names of :data:`REAL_MAPS`."""
    tarball = Path(tarball)
    out = Path(out_dir) if out_dir is not None else tarball.parent / "exr"
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / f"{name}.exr" for name in REAL_MAPS}
    intact = {
        name: path.is_file() and file_sha256(path) == DECODED_SHA256[name] for name, path in paths.items()
    }
    if all(intact.values()):
        return paths
    with tarfile.open(tarball, "r:gz") as archive:
        for name, path in paths.items():
            if intact[name]:
                continue
            if path.exists():
                warnings.warn(
                    f"{path}: damaged decoded copy (its sha256 is not the package's): "
                    f"decoded again from {tarball}",
                    stacklevel=2,
                )
            member = f"{MODULE_DIR}{name}.exr.js"
            try:
                handle = archive.extractfile(member)
            except KeyError:
                raise InputError(tarball, f"has no {member}: not the {PACKAGE}@{VERSION} package") from None
            data = decode_module(handle.read(), f"{tarball}:{member}")
            with atomic_write(path) as tmp:
                tmp.write_bytes(data)
    return paths


def real_envmap_files(cache_dir: str | os.PathLike = DEFAULT_CACHE) -> dict[str, Path]:
    """name → decoded .exr path of every built-in real map (fetched and decoded on first use)."""
    return decode_package(fetch_package(cache_dir))


def provenance(name: str) -> str:
    """Where real map ``name`` comes from (recorded in the envmaps table)."""
    return f"polyhaven via npm {PACKAGE}@{VERSION} {MODULE_DIR.removeprefix('package/')}{name}.exr.js"
