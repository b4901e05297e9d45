"""A trained model runs where Mitsuba is absent (DESIGN.md §2): every module of ``models/``
imports, and a tiny estimator samples, in a Python that cannot import Mitsuba or Dr.Jit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import importlib, importlib.abc, pkgutil, sys

class NoMitsuba(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("mitsuba", "drjit"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None

sys.meta_path.insert(0, NoMitsuba())
import models
for module in pkgutil.walk_packages(models.__path__, "models."):
    importlib.import_module(module.name)

import torch
from models.config import DRMConfig, DRMNetConfig, UNetConfig
from models.estimator import Estimator
from models.weights import build_networks

unet = UNetConfig(channels=8, multipliers=(1, 2), res_blocks=1, attention=(), head_channels=8)
config = DRMNetConfig(resolution=8, illnet=unet, refnet=unet, drm=DRMConfig(max_steps=2))
nets = build_networks(config)
estimator = Estimator(config, nets["illnet"], nets["refnet"], device="cpu")
estimate = estimator.estimate(torch.rand(1, 3, 8, 8), num_samples=2, seed=0)
assert estimate.mirror.shape == (1, 2, 3, 8, 8), estimate.mirror.shape
assert not any(name.split(".")[0] in ("mitsuba", "drjit", "rendering") for name in sys.modules)
print("ok")
"""


def test_models_import_and_estimate_without_mitsuba():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
