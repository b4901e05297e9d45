"""`drmnet train` end to end on tiny shards, and the MLflow side: the run's params, losses and
sample grids, registered versions with alias `candidate`, and loading them back (by alias, by
version, through pyfunc) with the same outputs as the checkpoint directories."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from training_data import blob_envmap, drmnet_trajectories, obsnet_samples
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import load_params
from pipeline.registry import load_estimator
from pipeline.shards import write_shard
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
