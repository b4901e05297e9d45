"""Choosing the Mitsuba 3 variant, in one place.

Order: the environment variable ``DRMNET_VARIANT``, then ``render.variant`` in params.yaml (when
the caller passes it), then automatic: ``cuda_ad_rgb`` when a usable CUDA GPU is present, else
``llvm_ad_rgb`` (which needs libLLVM >= 16: Dr.Jit 1.5 crashes with LLVM 14/15), else
``scalar_rgb`` with a warning. The LLVM library is located here and handed to Dr.Jit through
``DRJIT_LIBLLVM_PATH`` before Mitsuba is imported.

Run ``python -m rendering.variant`` to see what was chosen and why.
"""

from __future__ import annotations

import ctypes.util
import glob
import os
import re
import sys
import threading
import warnings

AUTO = "auto"
KNOWN_VARIANTS = ("cuda_ad_rgb", "llvm_ad_rgb", "scalar_rgb")
MIN_LLVM = 16
INSTALL_HINT = (
    "Mitsuba's llvm variant needs libLLVM >= 16. On Debian/Ubuntu: "
    "`apt-get install -y libllvm19` (or set DRJIT_LIBLLVM_PATH to a libLLVM.so of version >= 16)."
)

_chosen: str | None = None
# Task runners call into rendering from several threads at once; importing Mitsuba and setting
# its variant must happen exactly once, or a thread sees a half-initialised module.
_lock = threading.Lock()

# Dr.Jit variables, scenes and kernel caches are not safe to use from several Python threads at
# once (seen: "jit_var(...): unknown variable!" aborts with two renders in flight). A thread-based
# task runner holds this lock around each render; each launch still uses every core, since Dr.Jit
# parallelises kernels itself. Process- or Dask-based runners don't need it.
RENDER_LOCK = threading.RLock()


def _llvm_version(path: str) -> int | None:
    """Major version encoded in a libLLVM file name (libLLVM-19.so, libLLVM.so.19.1, llvm-19/...)."""
    name = os.path.realpath(path)
    for pattern in (r"libLLVM-(\d+)", r"libLLVM\.so\.(\d+)", r"llvm-(\d+)"):
        match = re.search(pattern, name)
        if match:
            return int(match.group(1))
    return None


def find_libllvm() -> str | None:
    """Path of the newest libLLVM with major version >= 16 on this machine, or None.

    An explicit ``DRJIT_LIBLLVM_PATH`` is respected when it exists.
    """
    explicit = os.environ.get("DRJIT_LIBLLVM_PATH")
    if explicit and os.path.exists(explicit):
        return explicit
    candidates = []
    for pattern in (
        "/usr/lib/x86_64-linux-gnu/libLLVM*.so*",
        "/usr/lib/aarch64-linux-gnu/libLLVM*.so*",
        "/usr/lib/llvm-*/lib/libLLVM*.so*",
        "/usr/lib64/libLLVM*.so*",
        "/usr/local/lib/libLLVM*.so*",
        "/opt/homebrew/opt/llvm/lib/libLLVM*.dylib",
    ):
        candidates += glob.glob(pattern)
    found = ctypes.util.find_library("LLVM")
    if found:
        candidates.append(found)
    versioned = [(v, p) for p in candidates if (v := _llvm_version(p)) is not None and v >= MIN_LLVM]
    if not versioned:
        return None
    versioned.sort(key=lambda vp: (vp[0], len(vp[1])), reverse=True)
    return os.path.realpath(versioned[0][1])


def _cuda_usable() -> bool:
    """True when the CUDA driver library loads and reports at least one device."""
    name = ctypes.util.find_library("cuda")
    if not name:
        return False
    try:
        lib = ctypes.CDLL(name)
        if lib.cuInit(0) != 0:
            return False
        count = ctypes.c_int(0)
        return lib.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
    except OSError:
        return False


def resolve_variant(configured: str | None = None) -> str:
    """Name of the variant to use (without activating it); see the module docstring for the order."""
    requested = os.environ.get("DRMNET_VARIANT") or configured or AUTO
    if requested != AUTO:
        if requested not in KNOWN_VARIANTS:
            raise ValueError(
                f"unknown Mitsuba variant {requested!r}; choose one of {KNOWN_VARIANTS} or 'auto'"
            )
        if requested == "llvm_ad_rgb" and find_libllvm() is None:
            raise RuntimeError(
                f"variant llvm_ad_rgb was requested but no libLLVM >= 16 was found. {INSTALL_HINT}"
            )
        return requested
    if _cuda_usable():
        return "cuda_ad_rgb"
    if find_libllvm() is not None:
        return "llvm_ad_rgb"
    warnings.warn(
        f"no CUDA GPU and no libLLVM >= 16: falling back to Mitsuba's scalar_rgb variant, which is "
        f"much slower. {INSTALL_HINT}",
        RuntimeWarning,
        stacklevel=2,
    )
    return "scalar_rgb"


def ensure_variant(configured: str | None = None):
    """Activate the chosen Mitsuba variant once per process and return the ``mitsuba`` module."""
    global _chosen
    with _lock:
        if _chosen is None:
            variant = resolve_variant(configured)
            if variant == "llvm_ad_rgb":
                os.environ["DRJIT_LIBLLVM_PATH"] = find_libllvm()
            import mitsuba as mi

            mi.set_variant(variant)
            _chosen = variant
    import mitsuba as mi

    return mi


def active_variant() -> str | None:
    """The variant activated by :func:`ensure_variant`, or None before the first call."""
    return _chosen


def _main(argv: list[str]) -> int:
    if "--find-llvm" in argv:
        path = find_libllvm()
        print(path or INSTALL_HINT)
        return 0 if path else 1
    print(f"libLLVM: {find_libllvm() or 'not found'}")
    print(f"variant: {resolve_variant()}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
