"""Shared fixtures. Mitsuba's variant is chosen once per test session by rendering.variant."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny networks run fastest, steadiest and bit-reproducibly on one thread (several compete
    for a 2-core machine); the previous thread count is restored after the module. Module-scoped
    so module fixtures that train or sample can request it too."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def real_envmap_files() -> dict:
    """name → decoded .exr of the 18 built-in real maps, in the project's cache (data/real_envmaps:
    `npm pack` fetches the package once; later sessions and `make demo` reuse it)."""
    from pathlib import Path

    from rendering.real_envmaps import DEFAULT_CACHE, real_envmap_files

    return real_envmap_files(Path(__file__).resolve().parent.parent / DEFAULT_CACHE)
