"""Shared fixtures. Mitsuba's variant is chosen once per test session by rendering.variant."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
