"""A rerun of ``make-envmap-splits`` that fails or dies leaves the previous complete splits as
they were: all splits are built aside and swapped in at once, so no envmap ends up in two splits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.splits import SPLITS, make_envmap_splits, split_envmap_ids

REPO = Path(__file__).resolve().parents[1]


def user_params(users: Path) -> dict:
    return {
        "profile": "tiny",
        "profiles": {"tiny": {"refmap_res": 16}},
        "envmaps": {
            "n": 0,
            "envmap_height": 8,
            "user_dir": str(users),
            "cache_dir": str(users.parent / "cache"),
        },
        "envmaps_split": {"seed": 0, "proportions": {"train": 0.5, "val": 0.25, "test": 0.25}},
    }


@pytest.fixture
def users(tmp_path) -> Path:
    """Eight small user envmaps (in/users; their resampling cache goes to in/cache)."""
    from rendering.hdrio import write_exr

    rng = np.random.default_rng(0)
    for i in range(8):
        write_exr(tmp_path / "in" / "users" / f"map{i}.exr", rng.random((8, 16, 3)).astype(np.float32))
    return tmp_path / "in" / "users"


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def drmnet(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "from pipeline.cli import main; main()", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_a_rerun_refused_for_a_truncated_file_leaves_the_previous_splits_untouched(tmp_path, users):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(user_params(users)))
    first = drmnet("make-envmap-splits", "--out", "envmaps", "--params", "params.yaml", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = tree_bytes(tmp_path / "envmaps")

    good = (users / "map0.exr").read_bytes()
    (users / "truncated.exr").write_bytes(good[: len(good) // 2])
    second = drmnet("make-envmap-splits", "--out", "envmaps", "--params", "params.yaml", cwd=tmp_path)
    assert second.returncode == 2
    assert "truncated.exr" in second.stderr and "Traceback" not in second.stderr
    assert tree_bytes(tmp_path / "envmaps") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["envmaps", "in", "params.yaml"]


def test_a_run_that_dies_midway_leaves_the_previous_splits_and_the_next_run_completes(
    tmp_path, users, monkeypatch
):
    import rendering.envmap_sources as sources

    params = user_params(users)
    out = tmp_path / "envmaps"
    make_envmap_splits(params, out)
    before = tree_bytes(out)

    # A changed plan (another seed moves maps between splits); the run dies at its fifth map.
    params["envmaps_split"]["seed"] = 1
    params["envmaps"]["envmap_height"] = 4
    produced, produce = [], sources.produce_envmap

    def dies_at_the_fifth(*args, **kwargs):
        if len(produced) == 4:
            raise KeyboardInterrupt
        produced.append(args[0].id)
        return produce(*args, **kwargs)

    monkeypatch.setattr(sources, "produce_envmap", dies_at_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        make_envmap_splits(params, out)
    assert tree_bytes(out) == before

    monkeypatch.setattr(sources, "produce_envmap", produce)
    make_envmap_splits(params, out)
    ids = {split: set(split_envmap_ids(out, split)) for split in SPLITS}
    assert sum(len(v) for v in ids.values()) == len(set().union(*ids.values())) == 8
    assert {p.name for split in SPLITS for p in (out / split).glob("*.exr")} == {
        f"{i}.exr" for v in ids.values() for i in v
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["envmaps", "in"], "staging left behind"


def test_without_an_atomic_exchange_two_renames_swap_and_a_crash_between_them_is_recovered(
    tmp_path, users, monkeypatch
):
    import pipeline.splits as splits

    monkeypatch.setattr(splits, "_exchange", lambda a, b: False)  # a file system without it
    params = user_params(users)
    out = tmp_path / "envmaps"
    make_envmap_splits(params, out)
    params["envmaps_split"]["seed"] = 1
    make_envmap_splits(params, out)
    assert sum(len(split_envmap_ids(out, split)) for split in SPLITS) == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["envmaps", "in"]

    # A crash between the two renames leaves no splits (nothing looks complete) and the previous
    # ones parked aside; the next run puts them back before it starts.
    before = tree_bytes(out)
    out.rename(tmp_path / ".envmaps.old")
    make_envmap_splits(params, out)
    assert tree_bytes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["envmaps", "in"]


def test_an_output_directory_holding_other_files_is_refused(tmp_path, users):
    from rendering.errors import InputError

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="holds more than the splits"):
        make_envmap_splits(user_params(users), tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"
