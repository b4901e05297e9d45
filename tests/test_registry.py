"""`drmnet train` end to end on tiny shards, and the MLflow side: the run's params, losses and
sample grids, registered versions with alias `candidate`, loading them back (by alias, by
version, through pyfunc) with the same outputs as the checkpoint directories, and a training
killed and resumed with `--auto-resume` logging into the MLflow run it started."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from killed_training import kill_at_first_snapshot
from training_data import blob_envmap, drmnet_trajectories, obsnet_samples
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import load_params
from pipeline.registry import load_estimator
from pipeline.shards import write_shard
from pipeline.training.stage import run_training
from rendering.errors import InputError

R = 16
TINY_NET = {"channels": 8, "multipliers": [1, 2], "res_blocks": 1, "attention": [8]}
SHORT = {
    "total_samples": 16,
    "batch_size": 4,
    "num_workers": 0,
    "shuffle_buffer": 0,
    "tick_samples": 8,
    "preview_ticks": 1,
    "warmup_samples": 4,
    "ema_halflife_samples": 8,
}
OBSNET_SPLIT = "data/shards/obsnet/train"


def _numpy(sample: dict[str, torch.Tensor]) -> dict:
    """Tensors → what the shard writer stores: arrays as .npy, scalars in the metadata."""
    return {k: v.numpy() if v.ndim else v.item() for k, v in sample.items()}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A project directory with tiny drmnet/obsnet shards, a params.yaml whose tiny profile
    trains 16-pixel networks for 16 samples, and its own MLflow database and artifacts."""
    root = tmp_path_factory.mktemp("workspace")
    envmap = blob_envmap(16, seed=2)
    drm = drmnet_trajectories(envmap, np.array([[0.9, 0.8, 0.8, 0.9, 0.2, 0.9]], np.float32), R, spp=8)[::4]
    obs = obsnet_samples(envmap, np.random.default_rng(1).random((6, 6)).astype(np.float32), R, spp=8)
    for net, samples in (("drmnet", drm), ("obsnet", obs)):
        write_shard(
            root / "data/shards" / net / "train" / f"{net}-train-000000.tar",
            [(f"{net}-train-{i:08d}", _numpy(s)) for i, s in enumerate(samples)],
        )
    params = load_params()
    params["profile"] = "tiny"
    params["profiles"]["tiny"].update(
        refmap_res=R,
        illnet=TINY_NET,
        refnet=TINY_NET,
        obsnet=TINY_NET,
        train_drmnet=SHORT,
        train_obsnet={**SHORT, "diffusion": {"sampling_steps": 4}},
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


@pytest.fixture
def in_workspace(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workspace}/mlflow.db")
    torch.set_num_threads(1)
    return workspace


@pytest.fixture
def trained(in_workspace):
    runner = CliRunner()
    for net in ("drmnet", "obsnet"):
        if not (in_workspace / "checkpoints" / net / "state.pt").exists():
            result = runner.invoke(app, ["train", net, "--params", str(in_workspace / "params.yaml")])
            assert result.exit_code == 0, (result.output, result.exception)
    return in_workspace


def test_train_writes_checkpoint_metrics_and_plots(trained):
    for net in ("drmnet", "obsnet"):
        files = {p.name for p in (trained / "checkpoints" / net).iterdir()}
        assert {"config.json", "model.safetensors", "ema.safetensors", "state.pt"} <= files
        metrics = json.loads((trained / "metrics" / f"train_{net}.json").read_text())
        assert metrics["samples"] == 16 and np.isfinite(metrics["loss"])
        assert (trained / "plots" / f"train_{net}.csv").read_text().startswith("samples,step,")


def test_training_run_is_logged_and_registered_as_candidate(trained):
    from mlflow import MlflowClient

    client = MlflowClient()
    for net in ("drmnet", "obsnet"):
        version = client.get_model_version_by_alias(net, "candidate")
        run = client.get_run(version.run_id)
        assert run.info.status == "FINISHED"
        assert run.data.params[f"train_{net}.total_samples"] == "16"
        assert run.data.params["profile.refmap_res"] == str(R)
        assert run.data.tags["drmnet.net"] == net
        history = client.get_metric_history(run.info.run_id, "loss")
        steps = [m.step for m in history]  # one value per optimisation step, counted in samples
        assert len(steps) >= 4 and steps == sorted(set(steps)) and steps[-1] == 16
        previews = [a.path for a in client.list_artifacts(run.info.run_id, "previews")]
        assert previews and all(p.endswith(".png") for p in previews)


def test_registered_models_load_back_with_the_same_outputs(trained):
    import mlflow

    refmap = torch.rand(1, 3, R, R) + 0.05
    mask = torch.zeros(1, 1, R, R)
    mask[..., 3:12, 4:13] = 1.0
    local = load_estimator("checkpoints/drmnet", "checkpoints/obsnet", device="cpu")
    for drmnet_uri, obsnet_uri in (
        ("models:/drmnet@candidate", "models:/obsnet@candidate"),
        ("models:/drmnet/1", "models:/obsnet/latest"),
    ):
        registered = load_estimator(drmnet_uri, obsnet_uri, device="cpu")
        a = local.estimate(refmap * mask, mask, num_samples=2, seed=3, max_steps=5)
        b = registered.estimate(refmap * mask, mask, num_samples=2, seed=3, max_steps=5)
        assert torch.equal(a.mirror, b.mirror) and torch.equal(a.material, b.material)

    # The pyfunc flavour loads from the registry alone (weights + JSON config, no pickle).
    model = mlflow.pyfunc.load_model("models:/drmnet@candidate")
    out = model.predict({"refmap": refmap.numpy(), "num_samples": 2, "seed": 4})
    expected = local.estimate(refmap, num_samples=2, seed=4)
    np.testing.assert_array_equal(out["mirror"], expected.mirror.numpy())


@pytest.mark.parametrize(
    "uri", ["models:/drmnet/99", "models:/drmnet@nosuchalias", "models:/nosuchmodel/1", "checkpoints/nowhere"]
)
def test_missing_models_are_a_clear_error(trained, uri):
    with pytest.raises(InputError, match=uri):
        load_estimator(uri)


@dataclass(frozen=True)
class Killed:
    workdir: Path  # params.yaml and the checkpoint of the killed training
    store: str  # the MLflow store it logged to (a copy of the workspace's)
    run_id: str  # the run its checkpoint records
    samples: int  # where the checkpoint stands
    steps: int  # optimisation steps taken by then


@pytest.fixture(scope="module")
def killed(workspace, tmp_path_factory) -> Killed:
    """`drmnet train obsnet --auto-resume` with a snapshot every tick, logging to a copy of the
    workspace's MLflow store, SIGKILLed as soon as its first snapshot (state.pt, renamed last)
    exists: part way through its 16 samples."""
    with pytest.MonkeyPatch.context() as patch:  # the workspace's store, created as `drmnet train` does
        from pipeline.registry import experiment_id

        patch.chdir(workspace)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workspace}/mlflow.db")
        experiment_id()
    workdir = tmp_path_factory.mktemp("killed")
    shutil.copy(workspace / "mlflow.db", workdir / "mlflow.db")
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["profiles"]["tiny"]["train_obsnet"].update(snapshot_ticks=1, preview_ticks=0)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))

    store = f"sqlite:///{workdir}/mlflow.db"
    kill_at_first_snapshot(
        workdir,
        ["obsnet", "--auto-resume", "--device", "cpu", "--data", str(workspace / OBSNET_SPLIT)]
        + ["--params", str(workdir / "params.yaml")],
        env={"MLFLOW_TRACKING_URI": store},
    )
    state = workdir / "checkpoints/obsnet/state.pt"
    saved = torch.load(state, weights_only=True)
    assert 0 < saved["samples"] < 16 and not saved["complete"]
    return Killed(workdir, store, saved["tracker_run_id"], saved["samples"], saved["step"])


def _resume(workspace: Path, killed: Killed, workdir: Path, store: str, monkeypatch, capsys):
    """Copy the killed training's checkpoint to ``workdir`` and resume it there with
    ``resume="auto"``, logging to ``store``; returns its metrics (dict) and its output (str)."""
    shutil.copytree(killed.workdir / "checkpoints", workdir / "checkpoints")
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    torch.set_num_threads(1)
    params = yaml.safe_load((killed.workdir / "params.yaml").read_text())
    capsys.readouterr()
    metrics = run_training("obsnet", params, resume="auto", data_dir=workspace / OBSNET_SPLIT)
    return metrics, capsys.readouterr().out


def _client(store: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=store, registry_uri=store)


def _loss_steps(client, run_id: str) -> list[int]:
    """The steps (counted in samples) of the run's loss values, in the order they were logged."""
    return [m.step for m in client.get_metric_history(run_id, "loss")]


def _steps_of(run_dir: Path) -> int:
    return torch.load(run_dir / "checkpoints/obsnet/state.pt", weights_only=True)["step"]


def test_resumed_training_continues_its_mlflow_run(workspace, killed, tmp_path, monkeypatch, capsys):
    client = _client(killed.store)
    assert client.get_run(killed.run_id).info.status == "RUNNING"  # a killed process ends nothing
    experiment = client.get_run(killed.run_id).info.experiment_id
    runs_before = {run.info.run_id for run in client.search_runs([experiment])}

    metrics, out = _resume(workspace, killed, tmp_path, killed.store, monkeypatch, capsys)
    assert f"obsnet: resumed from checkpoints/obsnet at {killed.samples} samples" in out

    version = client.get_model_version("obsnet", metrics["model_version"])
    assert version.run_id == killed.run_id
    run = client.get_run(killed.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["drmnet.resumed"] == "1"
    # One run holds the whole training: one loss per optimisation step, none missing or repeated.
    steps = _loss_steps(client, killed.run_id)
    assert steps == sorted(set(steps)) and steps[0] <= SHORT["batch_size"] and steps[-1] == 16
    assert len(steps) == _steps_of(tmp_path)
    assert {run.info.run_id for run in client.search_runs([experiment])} == runs_before


def test_resumed_training_whose_run_is_gone_starts_one(workspace, killed, tmp_path, monkeypatch, capsys):
    # The checkpoint travels to a tracking store that never saw its run (the workspace's, copied).
    shutil.copy(workspace / "mlflow.db", tmp_path / "mlflow.db")
    store = f"sqlite:///{tmp_path}/mlflow.db"
    client = _client(store)

    metrics, out = _resume(workspace, killed, tmp_path / "moved", store, monkeypatch, capsys)
    assert f"obsnet: resumed from checkpoints/obsnet at {killed.samples} samples" in out

    run = client.get_run(client.get_model_version("obsnet", metrics["model_version"]).run_id)
    assert run.info.run_id != killed.run_id and run.info.status == "FINISHED"
    assert "drmnet.resumed" not in run.data.tags and run.data.tags["drmnet.net"] == "obsnet"
    assert run.data.params["train_obsnet.total_samples"] == "16"
    steps = _loss_steps(client, run.info.run_id)  # what this invocation trained
    assert steps == sorted(set(steps)) and steps[0] > killed.samples and steps[-1] == 16
    assert len(steps) == _steps_of(tmp_path / "moved") - killed.steps
    # The checkpoint now records the new run, so a further resume would continue that one.
    state = torch.load(tmp_path / "moved/checkpoints/obsnet/state.pt", weights_only=True)
    assert state["tracker_run_id"] == run.info.run_id


def test_training_stopped_before_its_end_is_not_registered(trained, tmp_path, monkeypatch):
    """`stop_at_samples` ends an invocation early (to resume later): that half-trained model must
    not become a `candidate` version."""
    from mlflow import MlflowClient

    client = MlflowClient()
    before = {v.version for v in client.search_model_versions("name = 'obsnet'")}
    candidate = client.get_model_version_by_alias("obsnet", "candidate").version
    monkeypatch.chdir(tmp_path)  # its own checkpoints/, beside the workspace's MLflow store
    params = load_params(trained / "params.yaml")
    params["train_obsnet"]["stop_at_samples"] = 8
    metrics = run_training("obsnet", params, resume="auto", data_dir=trained / OBSNET_SPLIT)
    assert 8 <= metrics["samples"] < 16 and not metrics["complete"] and "model_version" not in metrics
    assert {v.version for v in client.search_model_versions("name = 'obsnet'")} == before
    assert client.get_model_version_by_alias("obsnet", "candidate").version == candidate
