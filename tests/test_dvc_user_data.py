"""DVC sees the user's data: the directories params.yaml names for your envmaps, MERL files and
meshes (by default the empty, git-kept ``data/user/*``) are dependencies of the stages that read
them, so adding a file makes exactly those stages stale.

Checked with a real ``dvc`` on the repository's own dvc.yaml, reduced to what is under test: every
stage keeps its name (and ``foreach`` items) and only its interpolated user-data dependencies,
with a trivial command, in a fresh DVC project whose params.yaml holds the repository's
user-data settings.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).parent / "dvc"
USER_DATA_KEYS = {"envmaps": ("user_dir",), "materials": ("merl_dir",), "dataset": ("mesh_dirs",)}


def _user_data_params() -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    return {section: {key: params[section][key] for key in keys} for section, keys in USER_DATA_KEYS.items()}


def _user_data_pipeline() -> dict:
    """The repository's dvc.yaml with each stage's deps cut down to the interpolated ones (the
    user's directories) and a command that does nothing."""
    stages = {}
    for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items():
        body = stage.get("do", stage)
        deps = [dep for dep in body.get("deps", []) if isinstance(dep, str) and dep.startswith("${")]
        if deps:
            reduced = {"cmd": "echo ok", "deps": deps}
            stages[name] = {"foreach": stage["foreach"], "do": reduced} if "do" in stage else reduced
    return {"stages": stages}


def _dvc(project: Path, *args: str) -> str:
    result = subprocess.run([str(DVC), *args], cwd=project, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _stale(project: Path) -> set[str]:
    return set(json.loads(_dvc(project, "status", "--json") or "{}"))


def test_the_default_user_directories_exist_and_are_kept_in_git():
    params = _user_data_params()
    directories = [
        params["envmaps"]["user_dir"],
        params["materials"]["merl_dir"],
        *params["dataset"]["mesh_dirs"].values(),
    ]
    assert sorted(params["dataset"]["mesh_dirs"]) == ["test", "train", "val"]
    for directory in directories:
        assert directory and (REPO / directory).is_dir(), f"{directory}: params.yaml default must exist"
        ignored = subprocess.run(["git", "check-ignore", "-q", directory], cwd=REPO).returncode == 0
        assert not ignored, f"{directory} is git-ignored: users' files there would not be versioned"


@pytest.mark.skipif(not DVC.exists(), reason="dvc is not installed in this environment")
def test_adding_a_user_file_makes_the_stages_that_read_it_stale(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    params = _user_data_params()
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    (project / "dvc.yaml").write_text(yaml.safe_dump(_user_data_pipeline(), sort_keys=False))
    shutil.copytree(REPO / "data" / "user", project / "data" / "user")
    _dvc(project, "init", "--no-scm")
    _dvc(project, "repro")
    assert _stale(project) == set(), "an untouched project must be up to date"

    def stale_with(directory: str, name: str) -> set[str]:
        """The stages a new file in ``directory`` makes stale (the file is removed again)."""
        added = project / directory / name
        added.write_bytes(b"a user's file\n")
        stale = _stale(project)
        added.unlink()
        return stale

    meshes = params["dataset"]["mesh_dirs"]
    assert stale_with(params["envmaps"]["user_dir"], "studio.exr") == {"envmaps"}
    assert stale_with(params["materials"]["merl_dir"], "gold.binary") == {
        "shards@drmnet-train",
        "shards@obsnet-train",
        "shards@drmnet-test",
    }
    assert stale_with(meshes["train"], "bunny.obj") == {"shards@drmnet-train", "shards@obsnet-train"}
    assert stale_with(meshes["test"], "dragon.ply") == {"shards@drmnet-test", "measured_test", "evaluate"}
    assert _stale(project) == set()
