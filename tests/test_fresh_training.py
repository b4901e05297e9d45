"""benchmarks/fresh_training.py, the device run without shards: its in-memory samples are the
dataset stage's samples (the same index gives the same sample), and its time-budgeted training
writes a model directory the estimator loads, with weights moved from where they started."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "fresh_training.py"


def tiny_params() -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["profile"] = "tiny"
    params["profiles"]["tiny"].update(
        spp=16, dataset={"samples": {"drmnet": {"train": 12}}, "envmap_block": 4}
    )
    params["envmaps"].update(n=4, kinds={"studio": 0.5, "sky": 0.5}, real=False, envmap_height=16)
    params["dataset"]["real_fraction"] = {"train": 0.0, "val": 0.0, "test": 0.0}
    return params


def run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_in_memory_samples_are_the_shards_samples_and_training_writes_a_model(tmp_path):
    import torch

    from models.estimator import Estimator
    from pipeline.flows.render_dataset import finish_split_dir, plan_shards, prepare_split_dir, render_shard
    from pipeline.samples import settings_from_params
    from pipeline.shards import read_shard
    from pipeline.splits import make_envmap_splits
    from pipeline.training.families import DRMNet
    from rendering.variant import resolve_variant

    params = tiny_params()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    make_envmap_splits(params, tmp_path / "envmaps")
    settings = settings_from_params(params)
    jobs = plan_shards(
        settings, "drmnet", "train", tmp_path / "shards", tmp_path / "envmaps", resolve_variant(None)
    )
    prepare_split_dir(jobs[0].split_dir)
    for job in jobs:
        render_shard(job)
    finish_split_dir(jobs)
    shard_samples = [
        s for shard in sorted(Path(jobs[0].split_dir).glob("*.tar")) for _, s in read_shard(shard)
    ]

    params_file, data = str(tmp_path / "params.yaml"), tmp_path / "fresh"
    common = ["--params", params_file, "--profile", "tiny"]
    run("render", *common, "--envmaps", str(tmp_path / "envmaps"), "--max-samples", "12", "--workers", "1",
        "--out", str(data))  # fmt: skip
    refmaps = np.load(data / "refmaps.npy")
    materials, steps = np.load(data / "materials.npy"), np.load(data / "steps.npy")
    assert json.loads((data / "data.json").read_text())["samples"] == len(shard_samples) == 12
    for i, sample in enumerate(shard_samples):
        for j, field in enumerate(("refmap_obs", "refmap_k", "refmap_next", "refmap_mirror")):
            # Shards hold refmaps as float16 (a per-sample power-of-two scale): its rounding only.
            np.testing.assert_allclose(refmaps[i, j], sample[field], rtol=2e-3, atol=1e-6)
        np.testing.assert_array_equal(materials[i], np.stack([sample["z_obs"], sample["z_k"]]))
        assert tuple(steps[i]) == (sample["k"], sample["K"])

    model = tmp_path / "model"
    run("train", *common, "--data", str(data), "--seconds", "6", "--probe-steps", "2",
        "--reserve-seconds", "0", "--batch-size", "4", "--run-dir", str(tmp_path / "run"),
        "--out", str(model))  # fmt: skip
    summary = json.loads((model / "train.json").read_text())
    assert summary["complete"] and summary["samples"] >= 4
    estimator = Estimator.from_directories(model, device="cpu")
    trained = estimator.illnet.state_dict()
    torch.manual_seed(0)  # the loop's initial weights (train_drmnet.seed 0)
    start = DRMNet(estimator.drmnet_config).networks()["illnet"].state_dict()
    assert any(not np.allclose(trained[k].float().numpy(), start[k].float().numpy()) for k in start)
