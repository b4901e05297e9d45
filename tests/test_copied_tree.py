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


def start_in(tree: Path, script: str, *args: str) -> subprocess.Popen:
    """``script`` run by a fresh Python in ``tree`` (its own embedded MLflow store)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=tree,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def lines_of(process: subprocess.Popen) -> list[str]:
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    return stdout.strip().splitlines()


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
    assert lines_of(start_in(original, REGISTER, str(first)))[-1] == "1"
    before = snapshot(original)

    subprocess.run(["cp", "-a", str(original), str(copy)], check=True)
    # The copy registers a model of its own, makes it champion and loads its champion.
    version, champion = lines_of(start_in(copy, REGISTER + LOAD_CHAMPION, str(second)))[-2:]

    assert version == "2"
    assert snapshot(original) == before
    champion = Path(champion)
    assert champion.is_relative_to(copy / "mlartifacts")
    weights = (champion / "ema.safetensors").read_bytes()
    assert weights == (second / "ema.safetensors").read_bytes()
    # The original still loads its own champion, from its own artifacts.
    original_champion = Path(lines_of(start_in(original, LOAD_CHAMPION))[-1])
    assert original_champion.is_relative_to(original / "mlartifacts")
    assert (original_champion / "ema.safetensors").read_bytes() == (first / "ema.safetensors").read_bytes()
