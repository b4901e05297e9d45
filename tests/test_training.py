"""The training loops on tiny rendered sets: they learn (honestly, on a handful of samples),
write loadable checkpoints and DVC files, and resume exactly where they stopped."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy import ndimage
from training_data import batches, blob_envmap, drmnet_trajectories, obsnet_samples

from models.config import DiffusionConfig, DRMNetConfig, ObsNetConfig, UNetConfig
from models.ddpm import Diffusion, complete_refmap
from models.drm import drm_training_loss, intensity_scale, to_network
from models.estimator import Estimator
from models.weights import build_networks, load_networks
from pipeline.training.families import DRMNet, ObsNet
from pipeline.training.loop import training_loop
from rendering.errors import InputError

R = 16
NET = UNetConfig(channels=8, multipliers=(1, 2), res_blocks=1, attention=(8,))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trajectories():
    """Every step of the DRM process of two rough observations under one blob envmap (~150 pairs)."""
    z_obs = np.array([[0.9, 0.8, 0.7, 0.9, 0.35, 0.9], [0.8, 0.9, 0.9, 0.7, 0.3, 0.8]], np.float32)
    return drmnet_trajectories(blob_envmap(32, seed=0), z_obs, R, spp=16, seed=0)


def _mean_loss(nets, samples, config: DRMNetConfig) -> float:
    gen = torch.Generator().manual_seed(123)
    with torch.no_grad():
        losses = [
            drm_training_loss(nets["illnet"], nets["refnet"], b, config.drm, False, gen)[0].item()
            for b in batches(samples, 16)
        ]
    return float(np.mean(losses))


def test_drmnet_learns_its_training_trajectories(trajectories, tmp_path):
    config = DRMNetConfig(R, NET, NET)
    run_dir = tmp_path / "drmnet"
    summary = training_loop(
        DRMNet(config),
        lambda epoch: batches(trajectories, 16, seed=epoch),
        run_dir,
        total_samples=6000,
        lr=3e-3,
        warmup_samples=300,
        ema_halflife_samples=300,
        tick_samples=1000,
        log=lambda line: None,
        metrics_path=tmp_path / "metrics.json",
        plot_path=tmp_path / "curve.csv",
    )
    torch.manual_seed(0)  # the loop's seed: the networks as they were before training
    before = _mean_loss(build_networks(config), trajectories, config)
    after = _mean_loss(load_networks(run_dir)[1], trajectories, config)
    assert after * 10 <= before, (before, after)

    # The DRM sampler turns each observation into its mirror refmap better than taking the
    # observation itself for the mirror (the "observed mirror" baseline).
    first = [trajectories[0], trajectories[-1]]
    observed = torch.stack([s["refmap_obs"] for s in first])
    mirror = torch.stack([s["refmap_mirror"] for s in first])
    estimate = Estimator.from_directories(run_dir, device="cpu").estimate(observed, num_samples=2, seed=0)
    scale = intensity_scale(observed, config.drm)

    def log_rmse(refmap: torch.Tensor) -> torch.Tensor:
        return ((to_network(refmap, scale) - to_network(mirror, scale)) ** 2).mean(dim=(1, 2, 3)).sqrt()

    baseline = log_rmse(observed)
    for n in range(2):
        error = log_rmse(estimate.mirror[:, n])
        assert (error < 0.7 * baseline).all(), (error, baseline)
    assert estimate.converged.all()

    # DVC's files: the last tick's metrics and one loss-curve row per tick.
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["samples"] == summary["samples"] >= 6000
    assert metrics["loss"] == pytest.approx(summary["loss"])
    rows = list(csv.DictReader((tmp_path / "curve.csv").open()))
    samples = [int(r["samples"]) for r in rows]
    assert samples == sorted(samples) and len(rows) == 6
    assert {"samples", "step", "loss", "loss_residual", "loss_z_k", "loss_z_K", "lr"} <= set(rows[0])


def _nearest_observed_fill(observed: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    out = []
    for image, m in zip(observed, mask, strict=True):
        holes = m[0].numpy() < 0.5
        rows, cols = ndimage.distance_transform_edt(holes, return_distances=False, return_indices=True)
        out.append(image[:, rows, cols])
    return torch.stack(out)


def test_obsnet_learns_to_fill_the_holes_of_its_observations(tmp_path):
    z_obs = np.random.default_rng(0).random((4, 6)).astype(np.float32)
    samples = obsnet_samples(blob_envmap(32, seed=1), z_obs, R, spp=16, seed=0)
    config = ObsNetConfig(R, UNetConfig(16, (1, 2), 1, (8,)), DiffusionConfig(prediction="v"))
    training_loop(
        ObsNet(config),
        lambda epoch: batches(samples, 8, seed=epoch),
        tmp_path / "obsnet",
        total_samples=3000,
        lr=3e-3,
        warmup_samples=150,
        ema_halflife_samples=150,
        tick_samples=1000,
        log=lambda line: None,
    )
    loaded, nets = load_networks(tmp_path / "obsnet")
    batch = batches(samples, len(samples))[0]
    completed = complete_refmap(
        nets["obsnet"],
        Diffusion(loaded.diffusion),
        batch["observed"],
        batch["observed_mask"],
        steps=20,
        generator=torch.Generator().manual_seed(0),
    )
    holes = (batch["observed_mask"] < 0.5).expand_as(batch["refmap_obs"])

    def log_rmse(refmap: torch.Tensor) -> float:
        error = torch.log(refmap + 0.01) - torch.log(batch["refmap_obs"] + 0.01)
        return float((error[holes] ** 2).mean().sqrt())

    assert log_rmse(completed) < log_rmse(_nearest_observed_fill(batch["observed"], batch["observed_mask"]))


@pytest.mark.parametrize("net", ["drmnet", "obsnet"])
def test_resumed_training_equals_uninterrupted_training(net, trajectories, tmp_path):
    """8 steps in one go == 4 steps, stop, resume, 4 steps: every weight, EMA weight and optimizer
    moment, bit for bit (deterministic data order, fixed seeds, CPU)."""
    if net == "drmnet":
        samples, family = trajectories[::5][:16], DRMNet(DRMNetConfig(R, NET, NET), teacher_forcing=0.5)
    else:
        samples = [
            {
                "refmap_obs": s["refmap_obs"],
                "observed": s["refmap_obs"] * (s["refmap_obs"][:1] > 0.5),
                "observed_mask": (s["refmap_obs"][:1] > 0.5).float(),
            }
            for s in trajectories[::5][:16]
        ]
        family = ObsNet(ObsNetConfig(R, NET))
    options = dict(
        total_samples=32,
        lr=1e-3,
        warmup_samples=8,
        ema_halflife_samples=8,
        tick_samples=4,
        snapshot_ticks=100,
        log=lambda line: None,
    )

    def data(epoch):  # 3 batches per epoch, so the stop falls inside an epoch
        return batches(samples[:12], 4, seed=epoch)

    training_loop(family, data, tmp_path / "whole", **options)
    training_loop(family, data, tmp_path / "parts", stop_at_samples=16, **options)
    state = torch.load(tmp_path / "parts" / "state.pt", weights_only=True)
    assert state["samples"] == 16 and state["data"] == {"epoch": 1, "index": 1}
    training_loop(family, data, tmp_path / "parts", resume=True, **options)

    for name in ("model.safetensors", "ema.safetensors"):
        whole, parts = load_file(tmp_path / "whole" / name), load_file(tmp_path / "parts" / name)
        assert whole.keys() == parts.keys()
        for key in whole:
            assert torch.equal(whole[key], parts[key]), (name, key)
    whole = torch.load(tmp_path / "whole" / "state.pt", weights_only=True)
    parts = torch.load(tmp_path / "parts" / "state.pt", weights_only=True)
    assert whole["samples"] == parts["samples"] == 32 and whole["step"] == parts["step"] == 8
    for key, moments in whole["optimizer"]["state"].items():
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(moments[name], parts["optimizer"]["state"][key][name])
    assert [r["samples"] for r in whole["history"]] == [r["samples"] for r in parts["history"]]


def test_a_non_finite_loss_stops_training_and_keeps_the_last_snapshot(trajectories, tmp_path):
    """Two good batches (a snapshot after them), then one whose L_k is NaN: the training stops with
    an error naming the data, the step and the samples, and the snapshot is left as it was."""
    good = batches(trajectories[::5][:8], 4)
    bad = {**good[0], "refmap_k": torch.full_like(good[0]["refmap_k"], float("nan"))}
    options = dict(total_samples=64, tick_samples=4, snapshot_ticks=2, log=lambda line: None)
    family = DRMNet(DRMNetConfig(R, NET, NET))
    training_loop(family, good, tmp_path / "stopped", stop_at_samples=8, **options)

    expected = r"^data/shards/x: drmnet training stopped: the loss is nan at step 3 \(after 8 samples\)"
    with pytest.raises(InputError, match=expected) as error:
        training_loop(family, [*good, bad], tmp_path / "run", data_name="data/shards/x", **options)
    assert "keeps its checkpoint of 8 samples" in str(error.value) and "\n" not in str(error.value)
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    assert state["samples"] == 8 and not state["complete"]
    for name in ("model.safetensors", "ema.safetensors"):
        assert (tmp_path / "run" / name).read_bytes() == (tmp_path / "stopped" / name).read_bytes()


def test_learning_rate_warms_up_holds_then_decays_to_its_floor():
    """Warm-up, constant, then a cosine decay over the last ``decay_samples`` ending at lr_min."""
    from pipeline.training.loop import learning_rate

    def rate(samples: int) -> float:
        return learning_rate(
            samples, 1e-3, warmup_samples=100, total_samples=1000, decay_samples=400, lr_min=1e-5
        )

    assert rate(50) == pytest.approx(5e-4) and rate(100) == rate(600) == pytest.approx(1e-3)
    assert rate(800) == pytest.approx((1e-3 + 1e-5) / 2) and rate(1000) == pytest.approx(1e-5)
    decay = [rate(s) for s in range(600, 1001, 50)]
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))
    assert learning_rate(900, 1e-3, 100, 1000) == 1e-3  # no decay unless asked


def test_a_run_starts_from_another_models_weights_and_keeps_its_snapshots(trajectories, tmp_path):
    """``init_from``: the networks (and their EMA) start from a model directory's weights, of the
    same network only; ``keep_snapshots``: every snapshot's EMA stays as a loadable model directory."""
    config = DRMNetConfig(R, NET, NET)
    data = batches(trajectories[::5][:16], 4)
    options = dict(tick_samples=4, log=lambda line: None)
    first = dict(total_samples=16, snapshot_ticks=2, keep_snapshots=True, seed=1)  # other initial weights
    training_loop(DRMNet(config), data, tmp_path / "a", **first, **options)
    snapshots = sorted(p.name for p in (tmp_path / "a" / "snapshots").iterdir())
    assert snapshots == ["000000008", "000000016"]
    last = load_file(tmp_path / "a" / "snapshots" / "000000016" / "ema.safetensors")
    assert all(torch.equal(v, load_file(tmp_path / "a" / "ema.safetensors")[k]) for k, v in last.items())
    load_networks(tmp_path / "a" / "snapshots" / "000000008")  # a model directory of its own

    # A near-zero learning rate: the fine-tuned weights are the starting model's, not fresh ones.
    tuned = dict(total_samples=4, lr=1e-12, warmup_samples=0, **options)
    training_loop(DRMNet(config), data, tmp_path / "b", init_from=tmp_path / "a", **tuned)
    training_loop(DRMNet(config), data, tmp_path / "fresh", **tuned)
    start, b = load_file(tmp_path / "a" / "ema.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    fresh = load_file(tmp_path / "fresh" / "model.safetensors")
    assert all(torch.allclose(b[k], v, atol=1e-6) for k, v in start.items())
    assert not all(torch.allclose(fresh[k], v, atol=1e-6) for k, v in start.items())

    # Another network: one line naming the model, and the run directory's checkpoint untouched.
    other = DRMNetConfig(R, UNetConfig(channels=4, multipliers=(1, 2), res_blocks=1, attention=(8,)), NET)
    before = (tmp_path / "b" / "model.safetensors").read_bytes()
    with pytest.raises(InputError, match=r"a: cannot start a training from it: another network \(illnet"):
        training_loop(DRMNet(other), data, tmp_path / "b", init_from=tmp_path / "a", **tuned)
    assert (tmp_path / "b" / "model.safetensors").read_bytes() == before


def test_refnet_trains_alone_keeping_illnet_as_it_was(trajectories, tmp_path):
    """``networks: [refnet]``: IllNet keeps init_from's weights bit for bit (and is not run) while
    RefNet learns; a RefNet of another size there starts fresh; leaving a network out without
    init_from is one clear error."""
    config = DRMNetConfig(R, NET, NET)
    data = batches(trajectories[::3], 8)
    quiet = dict(warmup_samples=0, ema_halflife_samples=50)
    training_loop(
        DRMNet(config), data, tmp_path / "start", total_samples=16, tick_samples=8, log=print, **quiet
    )
    start = load_file(tmp_path / "start" / "ema.safetensors")

    def refnet_alone(net_config, run, lines):
        training_loop(
            DRMNet(net_config, networks=("refnet",)),
            data,
            tmp_path / run,
            init_from=tmp_path / "start",
            total_samples=800,
            lr=3e-3,
            tick_samples=200,
            plot_path=tmp_path / f"{run}.csv",
            log=lines.append,
            **quiet,
        )
        with open(tmp_path / f"{run}.csv") as f:
            return list(csv.DictReader(f)), load_file(tmp_path / run / "ema.safetensors")

    lines = []
    curve, tuned = refnet_alone(config, "refnet", lines)
    assert "(not trained, kept: illnet)" in lines[0]
    illnet = [k for k in start if k.startswith("illnet.")]
    assert illnet and all(torch.equal(tuned[k], start[k]) for k in illnet)
    assert float(curve[-1]["loss_z_K"]) < 0.5 * float(curve[0]["loss_z_K"])
    assert "loss_residual" not in curve[0]  # IllNet was not run

    wider = DRMNetConfig(R, NET, UNetConfig(channels=16, multipliers=(1, 2), res_blocks=1, attention=(8,)))
    lines = []
    _, tuned = refnet_alone(wider, "wider", lines)
    assert "fresh weights (another size there): refnet" in lines[0]
    assert all(torch.equal(tuned[k], start[k]) for k in illnet)
    with pytest.raises(InputError, match=r"train_drmnet leaves illnet untrained: set init_from"):
        training_loop(DRMNet(config, networks=("refnet",)), data, tmp_path / "none", total_samples=8)
