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
