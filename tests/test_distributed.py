"""DDP training under ``torchrun`` on CPUs (Gloo), through the command users run:
``torchrun --nproc_per_node 2 -m pipeline.cli train drmnet``, on shards written by the project's
own shard writer and manifests.

What a user relies on: the run ends (no hang, a timeout stops one) with a complete checkpoint
and DVC files; every optimiser step is one AdamW step on the mean gradient of the two ranks,
each on its own batch (half the global batch) with its own noise, computed at the same weights
on both ranks (checked against that reference at every step, to float rounding); a run stopped
and resumed under torchrun continues exactly as that reference does.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from training_data import blob_envmap, drmnet_trajectories

from models.drm import drm_training_loss
from models.weights import build_networks, state_dict_of
from pipeline.manifest import sample_row, write_manifests
from pipeline.settings import TrainSettings
from pipeline.shards import sample_key, shard_name, write_shard
from pipeline.training.batches import BatchStream
from pipeline.training.stage import network_config, shard_data, training_settings

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).parent / "torchrun"
R = 16
RANKS = 2
BATCH = 4  # global batch: 2 samples per rank
STEPS = 3
TIMEOUT_S = 300  # a hung rank fails the test instead of blocking CI


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory) -> Path:
    """A drmnet/train split of 8 rendered samples in 4 shards, with its parquet manifests, laid out
    as `drmnet render-dataset` writes it (arrays as .npy members, scalars in meta.json)."""
    split = tmp_path_factory.mktemp("shards") / "drmnet" / "train"
    z_obs = np.array([[0.9, 0.8, 0.7, 0.9, 0.35, 0.9]], np.float32)
    trajectory = drmnet_trajectories(blob_envmap(16, seed=0), z_obs, R, spp=4, seed=0)
    chosen = trajectory[:: len(trajectory) // 8][:8]
    records = []
    for shard in range(4):
        name = shard_name("drmnet", "train", shard)
        samples, rows = [], []
        for index in (2 * shard, 2 * shard + 1):
            s = chosen[index]
            sample = {
                field: s[field].numpy()
                for field in (
                    "refmap_obs",
                    "refmap_k",
                    "refmap_next",
                    "refmap_mirror",
                    "z_obs",
                    "z_k",
                    "z_next",
                )
            }
            sample.update(
                k=int(s["k"]),
                K=int(s["K"]),
                view_azimuth=float(s["view_azimuth"]),
                envmap_id="blob-0",
                material_source="uniform",
            )
            key = sample_key("drmnet", "train", index)
            samples.append((key, sample))
            rows.append(sample_row(key, name, index, sample))
        info = write_shard(split / name, samples)
        records.append(
            {"shard": name, "samples": info.samples, "bytes": info.bytes, "sha256": info.sha256, "rows": rows}
        )
    write_manifests(split, records)
    return split


def _params(stop_at_samples: int | None = None) -> dict:
    """The repository's params.yaml, shrunk: tiny networks at 16², a few steps of a global batch
    of 4, a status line and loss-curve row every step."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "tiny"
    tiny = params["profiles"]["tiny"]
    tiny["refmap_res"] = R
    tiny["train_drmnet"] = {
        "total_samples": STEPS * BATCH,
        "lr": 1e-3,
        "warmup_samples": BATCH,
        "ema_halflife_samples": BATCH,
        "tick_samples": BATCH,
    }
    params["train_drmnet"].update(
        batch_size=BATCH, num_workers=1, shuffle_buffer=4, snapshot_ticks=100, preview_ticks=0
    )
    if stop_at_samples is not None:
        params["train_drmnet"]["stop_at_samples"] = stop_at_samples
    return params


def _torchrun(workdir: Path, split: Path, params: dict, *options: str) -> str:
    """Run `drmnet train drmnet` on two CPU ranks in ``workdir``; returns its output. A run that
    has not finished after ``TIMEOUT_S`` (a hung rank) is stopped and fails the test."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        str(TORCHRUN),
        "--standalone",
        "--nproc_per_node",
        str(RANKS),
        "-m",
        "pipeline.cli",
        "train",
        "drmnet",
        "--data",
        str(split),
        "--no-register",
        "--params",
        str(workdir / "params.yaml"),
        "--device",
        "cpu",
        *options,
    ]
    log = workdir / "torchrun.log"  # a file, not a pipe: no rank left behind can keep us waiting on it
    with log.open("w") as output:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            process.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass  # a hung rank: fail below rather than block
        finally:
            if process.poll() is None:  # on SIGTERM torchrun stops its ranks (each in a session of its own)
                process.terminate()
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    text = log.read_text()
    assert process.returncode == 0, f"torchrun exited with {process.returncode}:\n{text[-5000:]}"
    return text


def _rank_batches(split: Path, settings: TrainSettings, steps: int, monkeypatch) -> list[list[dict]]:
    """The batches each rank draws in its first ``steps`` steps, from the stage's own loader with
    the environment torchrun gives that rank (read in this process: ``num_workers=0``, the same
    stream a single reader worker yields)."""
    per_rank = []
    for rank in range(RANKS):
        with monkeypatch.context() as env:
            env.setenv("WORLD_SIZE", str(RANKS))
            env.setenv("RANK", str(rank))
            loader = shard_data(split, "drmnet", dataclasses.replace(settings, num_workers=0))
            stream = BatchStream(loader, torch.device("cpu"))
            per_rank.append([next(stream) for _ in range(steps)])
    return per_rank


class ReferenceTraining:
    """What a DDP step means: every rank computes the gradient of its own batch with its own noise
    (generator seeded seed + 1000·rank); one AdamW step on their mean, clipped, in one process."""

    def __init__(self, params: dict):
        self.settings = training_settings(params, "drmnet")
        self.network = network_config(params, "drmnet")
        seed = self.settings.seed
        torch.manual_seed(seed)  # the loop's seed: the networks as they are before training
        self.nets = {name: net.train() for name, net in build_networks(self.network).items()}
        self.params = [p for net in self.nets.values() for p in net.parameters()]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=self.settings.lr, weight_decay=self.settings.weight_decay
        )
        self.generators = [torch.Generator().manual_seed(seed + 1000 * rank) for rank in range(RANKS)]
        self.samples = 0

    def step(self, rank_batches: list[dict]) -> list[list[torch.Tensor]]:
        """One step on one batch per rank; returns each rank's gradients (in parameter order)."""
        total = self.settings.total_samples
        assert self.settings.warmup_samples <= BATCH  # the learning rate is constant from step 1
        teacher = self.samples < self.settings.teacher_forcing * total
        grads = []
        for batch, generator in zip(rank_batches, self.generators, strict=True):
            self.optimizer.zero_grad(set_to_none=True)
            loss, _ = drm_training_loss(
                self.nets["illnet"], self.nets["refnet"], batch, self.network.drm, teacher, generator
            )
            loss.backward()
            grads.append([p.grad.clone() for p in self.params])
        for p, *rank_grads in zip(self.params, *grads, strict=True):
            p.grad = sum(rank_grads) / RANKS
        torch.nn.utils.clip_grad_norm_(self.params, self.settings.grad_clip)
        self.optimizer.step()
        self.samples += BATCH
        return grads

    def assert_matches(self, run_dir: Path) -> None:
        """The checkpoint holds this training's weights and AdamW moments."""
        saved = load_file(run_dir / "model.safetensors")
        ours = state_dict_of(self.nets)
        assert saved.keys() == ours.keys()
        for key in ours:
            torch.testing.assert_close(saved[key], ours[key], rtol=1e-5, atol=1e-7, msg=key)
        state = torch.load(run_dir / "state.pt", weights_only=True)
        moments = self.optimizer.state_dict()["state"]
        assert state["optimizer"]["state"].keys() == moments.keys()
        for index, expected in moments.items():
            for name in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(
                    state["optimizer"]["state"][index][name],
                    expected[name],
                    rtol=1e-5,
                    atol=1e-9,
                    msg=f"{name} of parameter {index}",
                )


def test_torchrun_two_cpu_ranks_train_with_the_mean_gradient_and_resume(split_dir, tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    run_dir = workdir / "checkpoints" / "drmnet"

    # Two steps, stopped (checkpointed) before the end.
    stopped = _torchrun(workdir, split_dir, _params(stop_at_samples=2 * BATCH))
    params = _params()
    reference = ReferenceTraining(params)
    batches = _rank_batches(split_dir, reference.settings, STEPS, monkeypatch)
    for batch in (*batches[0], *batches[1]):  # each rank: half the global batch
        assert batch["refmap_obs"].shape == (BATCH // RANKS, 3, R, R)
    initial = {key: value.clone() for key, value in state_dict_of(reference.nets).items()}
    first = reference.step([batches[rank][0] for rank in range(RANKS)])
    reference.step([batches[rank][1] for rank in range(RANKS)])
    # The ranks' batches and gradients differ, so a rank training alone would not match.
    assert batches[0][0]["__key__"] != batches[1][0]["__key__"]
    mean_norm = torch.cat([(a + b).flatten() / 2 for a, b in zip(*first, strict=True)]).norm()
    assert torch.cat([(a - b).flatten() for a, b in zip(*first, strict=True)]).norm() > 0.1 * mean_norm
    reference.assert_matches(run_dir)
    state = torch.load(run_dir / "state.pt", weights_only=True)
    assert state["samples"] == 2 * BATCH and state["step"] == 2
    assert len(state["generator"]) == RANKS and not torch.equal(*state["generator"])
    # Only rank 0 reports: one status line per tick.
    assert stopped.count("drmnet  samples") == 2

    # Resumed: the last step, in each rank's next epoch, continues as one run would.
    _torchrun(workdir, split_dir, params, "--resume")
    reference.step([batches[rank][2] for rank in range(RANKS)])
    reference.assert_matches(run_dir)
    state = torch.load(run_dir / "state.pt", weights_only=True)
    assert state["samples"] == STEPS * BATCH and state["step"] == STEPS
    assert state["data"]["epoch"] == 1  # 8 samples, 4 per rank per epoch: step 3 began epoch 1

    # The files a user and DVC read: complete, no temporary files left.
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "config.json",
        "ema.safetensors",
        "model.safetensors",
        "state.pt",
    ]
    ema = load_file(run_dir / "ema.safetensors")
    for key, value in ema.items():
        assert torch.isfinite(value).all(), key
    assert any(not torch.equal(ema[key], initial[key]) for key in initial)
    metrics = json.loads((workdir / "metrics" / "train_drmnet.json").read_text())
    assert metrics["samples"] == STEPS * BATCH and metrics["steps"] == STEPS and np.isfinite(metrics["loss"])
    with (workdir / "plots" / "train_drmnet.csv").open() as curve:
        rows = list(csv.DictReader(curve))
    assert [int(row["samples"]) for row in rows] == [BATCH * (i + 1) for i in range(STEPS)]
