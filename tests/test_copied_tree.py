"""A copy of a working tree (``cp -a``) keeps to itself (issue 13): MLflow stores the artifact
location of the embedded store as an absolute path, so without care a copy's registry
operations would write into the original's ``mlartifacts/`` and load the original's models.
Registry operations in the copy leave every file of the original as it was."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_workspace import save_tiny_models

REPO = Path(__file__).resolve().parents[1]

# Run in the tree given as the working directory, with the embedded store (sqlite:///mlflow.db).
REGISTER = """
import sys
from pipeline.registry import CHAMPION, _client, register_model
version = register_model("drmnet", sys.argv[1])
_client().set_registered_model_alias("drmnet", CHAMPION, version)
print(version)
"""
LOAD_CHAMPION = """
from pipeline.registry import resolve_model_dir
print(resolve_model_dir("models:/drmnet@champion").resolve())
"""


def run_in(tree: Path, script: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=tree, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def snapshot(tree: Path) -> dict[str, tuple[str, int]]:
    """Every file of ``tree`` → (sha256, mtime in ns)."""
    return {
        str(path.relative_to(tree)): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        for path in sorted(tree.rglob("*"))
        if path.is_file()
    }


@pytest.mark.slow
def test_registry_operations_in_a_copied_tree_leave_the_original_unchanged(tmp_path):
    original, copy = tmp_path / "original", tmp_path / "copy"
    first, _ = save_tiny_models(original / "models", seed=1)
    second, _ = save_tiny_models(tmp_path / "other", seed=2)
    assert run_in(original, REGISTER, str(first)) == "1"
    before = snapshot(original)

    subprocess.run(["cp", "-a", str(original), str(copy)], check=True)
    # The copy registers a model of its own and makes it champion, then loads its champion.
    assert run_in(copy, REGISTER, str(second)) == "2"
    champion = Path(run_in(copy, LOAD_CHAMPION))

    assert snapshot(original) == before
    assert champion.is_relative_to(copy / "mlartifacts")
    weights = (champion / "ema.safetensors").read_bytes()
    assert weights == (second / "ema.safetensors").read_bytes()
    # The original still loads its own champion, from its own artifacts.
    champion = Path(run_in(original, LOAD_CHAMPION))
    assert champion.is_relative_to(original / "mlartifacts")
    assert (champion / "ema.safetensors").read_bytes() == (first / "ema.safetensors").read_bytes()
