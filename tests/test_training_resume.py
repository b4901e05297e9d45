"""`drmnet train --auto-resume` (what `dvc repro` runs) and `--resume` on a real split with parquet
manifests: a training killed with SIGKILL continues from its last snapshot and ends with the
weights of an uninterrupted one; a checkpoint of other settings, or a finished one, is replaced by
a fresh start; a manual resume of a checkpoint made from other settings or data is a clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from killed_training import kill_at_first_snapshot
from safetensors.torch import load_file
from training_data import blob_envmap, obsnet_samples
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.manifest import sample_row, write_manifests
from pipeline.shards import sample_key, shard_name, write_shard
from pipeline.training.stage import run_training
from rendering.errors import InputError

REPO = Path(__file__).resolve().parents[1]
R = 16
TINY_NET = {"channels": 8, "multipliers": [1, 2], "res_blocks": 1, "attention": [8]}
BATCH = 4
TOTAL = 80  # 20 steps; snapshots at 20, 40, 60 and 80 samples
SETTINGS = {
    "total_samples": TOTAL,
    "batch_size": BATCH,
    "num_workers": 0,
    "shuffle_buffer": 4,
    "lr": 2e-3,
    "warmup_samples": 8,
    "ema_halflife_samples": 8,
    "tick_samples": BATCH,
    "snapshot_ticks": 5,
    "preview_ticks": 0,
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write_split(split: Path, samples: list[dict]) -> Path:
    """An obsnet split as `drmnet render-dataset` lays it out: shards of 4 samples and manifests."""
    records = []
    for shard in range(0, len(samples), 4):
        name = shard_name("obsnet", "train", shard // 4)
        members, rows = [], []
        for index in range(shard, min(shard + 4, len(samples))):
            sample = {k: v.numpy() for k, v in samples[index].items()}
            sample.update(envmap_id="blob-0", view_azimuth=0.0, material_source="uniform")
            key = sample_key("obsnet", "train", index)
            members.append((key, sample))
            rows.append(sample_row(key, name, index, sample))
        info = write_shard(split / name, members)
        records.append(
            {"shard": name, "samples": info.samples, "bytes": info.bytes, "sha256": info.sha256, "rows": rows}
        )
    write_manifests(split, records)
    return split


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> dict[str, Path]:
    """Two obsnet splits: `train` (12 samples) and `other` (its first 8: other data)."""
    root = tmp_path_factory.mktemp("shards")
    z_obs = np.random.default_rng(3).random((12, 6)).astype(np.float32)
    samples = obsnet_samples(blob_envmap(16, seed=4), z_obs, R, spp=4, seed=0)
    return {
        "train": _write_split(root / "train", samples),
        "other": _write_split(root / "other", samples[:8]),
    }


def _params(**train) -> dict:
    """The repository's params.yaml with a tiny profile: 16² refmaps, tiny ObsNet, 20 steps."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "tiny"
    tiny = params["profiles"]["tiny"]
    tiny.update(refmap_res=R, obsnet=TINY_NET)
    tiny["train_obsnet"] = {**SETTINGS, **train, "diffusion": {"prediction": "v"}}
    return params


def _train(workdir: Path, split: Path, monkeypatch, capsys, resume="auto", **train) -> tuple[dict, str]:
    """`run_training` of obsnet in ``workdir`` (no MLflow); returns its metrics and its output."""
    workdir.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(workdir)
    capsys.readouterr()
    metrics = run_training("obsnet", _params(**train), resume=resume, data_dir=split, register=False)
    return metrics, capsys.readouterr().out


def _state(workdir: Path) -> dict:
    return torch.load(workdir / "checkpoints/obsnet/state.pt", weights_only=True)


def _assert_same_weights(a: Path, b: Path) -> None:
    for name in ("model.safetensors", "ema.safetensors"):
        first, second = load_file(a / "checkpoints/obsnet" / name), load_file(b / "checkpoints/obsnet" / name)
        assert first.keys() == second.keys()
        for key in first:
            assert torch.equal(first[key], second[key]), (name, key)


def _kill_after_first_snapshot(workdir: Path, split: Path) -> None:
    """Run `drmnet train obsnet --auto-resume` in ``workdir`` and SIGKILL its process group as soon as
    its first snapshot (state.pt, renamed last) exists."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "params.yaml").write_text(yaml.safe_dump(_params()))
    kill_at_first_snapshot(
        workdir,
        ["obsnet", "--auto-resume", "--no-register", "--data", str(split), "--device", "cpu"]
        + ["--params", str(workdir / "params.yaml")],
    )


def test_killed_training_continues_from_its_snapshot_to_the_uninterrupted_weights(
    splits, tmp_path, monkeypatch, capsys
):
    _kill_after_first_snapshot(tmp_path / "killed", splits["train"])
    killed = _state(tmp_path / "killed")
    assert 0 < killed["samples"] < TOTAL and not killed["complete"]

    _, out = _train(tmp_path / "killed", splits["train"], monkeypatch, capsys)
    assert f"obsnet: resumed from checkpoints/obsnet at {killed['samples']} samples" in out
    assert f"samples {BATCH}/{TOTAL} " not in out  # nothing before the snapshot was redone
    _train(tmp_path / "whole", splits["train"], monkeypatch, capsys)

    _assert_same_weights(tmp_path / "killed", tmp_path / "whole")
    resumed, whole = _state(tmp_path / "killed"), _state(tmp_path / "whole")
    assert resumed["complete"] and resumed["samples"] == whole["samples"] == TOTAL
    assert [row["samples"] for row in resumed["history"]] == [row["samples"] for row in whole["history"]]
    assert sorted(p.name for p in (tmp_path / "killed/checkpoints/obsnet").iterdir()) == [
        "config.json",
        "ema.safetensors",
        "model.safetensors",
        "state.pt",
    ]


def test_auto_resume_starts_fresh_after_a_change_of_settings(splits, tmp_path, monkeypatch, capsys):
    _, out = _train(tmp_path, splits["train"], monkeypatch, capsys, stop_at_samples=20)
    assert "no checkpoint in checkpoints/obsnet; starting fresh" in out
    assert not _state(tmp_path)["complete"]

    _, out = _train(tmp_path, splits["train"], monkeypatch, capsys, lr=1e-3, stop_at_samples=40)
    assert "starting fresh in checkpoints/obsnet: its checkpoint was made from other settings" in out
    assert "train.lr 0.002 -> 0.001" in out
    assert f"samples {BATCH}/{TOTAL} " in out  # trained from the first step
    state = _state(tmp_path)
    assert state["samples"] == 40 and state["fingerprint"]["train"]["lr"] == 1e-3

    # The same settings again (stop_at_samples only says where this invocation ends): continued.
    _, out = _train(tmp_path, splits["train"], monkeypatch, capsys, lr=1e-3)
    assert "resumed from checkpoints/obsnet at 40 samples" in out


def test_auto_resume_starts_fresh_over_a_finished_run(splits, tmp_path, monkeypatch, capsys):
    _train(tmp_path, splits["train"], monkeypatch, capsys)
    first = _state(tmp_path)
    assert first["complete"]

    _, out = _train(tmp_path, splits["train"], monkeypatch, capsys)
    assert f"starting fresh in checkpoints/obsnet: its checkpoint is a finished run ({TOTAL} samples)" in out
    assert f"samples {BATCH}/{TOTAL} " in out
    # Trained again from scratch with the same settings: the same run, step for step.
    again = _state(tmp_path)
    assert again["complete"] and again["history"][0]["samples"] == BATCH
    assert [r["loss"] for r in again["history"]] == [r["loss"] for r in first["history"]]


def test_manual_resume_of_another_runs_checkpoint_names_what_differs(splits, tmp_path, monkeypatch, capsys):
    _train(tmp_path, splits["train"], monkeypatch, capsys, stop_at_samples=20)
    before = (tmp_path / "checkpoints/obsnet/state.pt").read_bytes()
    runner = CliRunner()

    def train(params: dict, split: Path):
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        command = ["train", "obsnet", "--resume", "--no-register", "--data", str(split)]
        return runner.invoke(app, [*command, "--params", str(tmp_path / "params.yaml")])

    changed = _params(lr=1e-3)
    changed["profiles"]["tiny"]["obsnet"] = {**TINY_NET, "channels": 4}
    error = train(changed, splits["train"]).exception
    assert isinstance(error, InputError) and error.source == "checkpoints/obsnet"
    assert error.problem.startswith("cannot be resumed: the checkpoint was made from other settings")
    assert "train.lr 0.002 -> 0.001" in error.problem and "network.unet.channels 8 -> 4" in error.problem
    assert "without --resume" in error.problem

    error = train(_params(), splits["other"]).exception
    assert isinstance(error, InputError)
    assert "data.manifest-samples.parquet" in error.problem
    assert "data.manifest-shards.parquet" in error.problem and "train.lr" not in error.problem
    # The refused checkpoint is left as it was.
    assert (tmp_path / "checkpoints/obsnet/state.pt").read_bytes() == before


def test_a_non_finite_loss_stops_the_stage_naming_its_data_and_registers_nothing(
    splits, tmp_path, monkeypatch
):
    """A loss that turns NaN (here forced: shards cannot hold NaN) after the first snapshot: one
    error naming the split and the step; the snapshot stays, unfinished; the MLflow run FAILED and
    no model version registered."""
    import mlflow

    from pipeline.registry import EXPERIMENT
    from pipeline.training.families import ObsNet

    finite_loss = ObsNet.loss

    def loss(self, nets, batch, generator, samples, total_samples):
        value, parts, logged = finite_loss(self, nets, batch, generator, samples, total_samples)
        return (value * np.nan if samples >= 20 else value), parts, logged

    monkeypatch.setattr(ObsNet, "loss", loss)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as error:
        run_training("obsnet", _params(), resume=False, data_dir=splits["train"], register=True)
    assert error.value.source == str(splits["train"])
    stopped = "obsnet training stopped: the loss is nan at step 6 (after 20 samples)"
    assert error.value.problem.startswith(stopped)
    assert error.value.problem.endswith("checkpoints/obsnet keeps its checkpoint of 20 samples")
    state = _state(tmp_path)
    assert state["samples"] == 20 and not state["complete"]
    client = mlflow.MlflowClient()
    assert client.search_model_versions("name='obsnet'") == []
    [run] = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert run.info.status == "FAILED"


def test_a_fine_tuning_resumes_only_from_the_same_starting_weights(splits, tmp_path, monkeypatch, capsys):
    """``init_from`` is part of what a run is: a starting model whose weights changed (same path)
    makes the checkpoint another run's; a missing one is one line naming it, before any work."""
    _train(tmp_path / "base", splits["train"], monkeypatch, capsys, stop_at_samples=20)
    start = tmp_path / "start"
    start.mkdir()
    for name in ("config.json", "ema.safetensors"):
        (start / name).write_bytes((tmp_path / "base/checkpoints/obsnet" / name).read_bytes())
    _, out = _train(
        tmp_path / "tuned", splits["train"], monkeypatch, capsys, init_from=str(start), stop_at_samples=20
    )
    assert f"obsnet: starting from the weights of {start}" in out

    # Other starting weights under the same path: not continued, started again from them.
    (start / "ema.safetensors").write_bytes(
        (tmp_path / "base/checkpoints/obsnet/model.safetensors").read_bytes()
    )
    _, out = _train(tmp_path / "tuned", splits["train"], monkeypatch, capsys, init_from=str(start))
    assert "its checkpoint was made from other settings or data (init " in out
    assert f"obsnet: starting from the weights of {start}" in out

    with pytest.raises(InputError, match=r"missing: train_\*.init_from: no ema.safetensors here"):
        _train(tmp_path / "tuned", splits["train"], monkeypatch, capsys, init_from=str(tmp_path / "missing"))
    assert _state(tmp_path / "tuned")["complete"]  # the finished fine-tuning is left as it was


def test_shards_of_another_resolution_are_refused_before_the_checkpoint_is_touched(
    splits, tmp_path, monkeypatch, capsys
):
    _train(tmp_path, splits["train"], monkeypatch, capsys, stop_at_samples=20)
    before = (tmp_path / "checkpoints/obsnet/state.pt").read_bytes()
    params = _params()
    params["profiles"]["tiny"]["refmap_res"] = 2 * R
    with pytest.raises(
        InputError, match=rf"holds {R}×{R} refmaps, but the obsnet network of this profile is for"
    ):
        run_training("obsnet", params, resume=False, data_dir=splits["train"], register=False)
    assert (tmp_path / "checkpoints/obsnet/state.pt").read_bytes() == before
