"""The ``drmnet train drmnet|obsnet`` stage: params.yaml → shard loader → training loop →
checkpoint, DVC metrics and plots → MLflow run and a registered model version (alias
``candidate``).

Outputs (paths relative to the working directory):

    checkpoints/<net>/           config.json, model.safetensors, ema.safetensors, state.pt
    metrics/train_<net>.json     the last tick's losses, samples/s, … (``dvc metrics show``)
    plots/train_<net>.csv        the loss curve, one row per tick (``dvc plots show``)

Settings: the ``train_<net>`` section, overridden key by key by ``profiles.<profile>.train_<net>``
(the ``diffusion`` block one level deeper); network sizes from ``profiles.<profile>.<net>``.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from models.config import DRMNetConfig, ObsNetConfig, drmnet_config, obsnet_config
from pipeline.config import profile_params
from rendering.errors import InputError

NETS = ("drmnet", "obsnet")
CHECKPOINTS = Path("checkpoints")
METRICS = Path("metrics")
PLOTS = Path("plots")
SHARDS = Path("data/shards")
LOADER_OPTIONS = ("batch_size", "num_workers", "shuffle_buffer")  # settings for the reader, not the loop
FIELDS = {  # what each family reads from its shards
    "drmnet": ("refmap_obs", "refmap_k", "refmap_next", "refmap_mirror", "z_obs", "z_k", "k", "K"),
    "obsnet": ("refmap_obs", "observed", "observed_mask"),
}


def _check_net(net: str) -> None:
    if net not in NETS:
        raise InputError("net", f"unknown network family {net!r}; choose one of {NETS}")


def training_settings(params: dict[str, Any], net: str, profile: str | None = None) -> dict[str, Any]:
    """``train_<net>`` with the profile's overrides applied."""
    _check_net(net)
    section = dict(params.get(f"train_{net}") or {})
    overrides = dict(profile_params(params, profile).get(f"train_{net}") or {})
    if isinstance(overrides.get("diffusion"), dict):
        overrides["diffusion"] = {**(section.get("diffusion") or {}), **overrides["diffusion"]}
    return {**section, **overrides}


def network_config(
    params: dict[str, Any], net: str, profile: str | None = None
) -> DRMNetConfig | ObsNetConfig:
    """The network config of ``net`` for the profile (sizes, resolution, DRM/diffusion constants)."""
    _check_net(net)
    chosen = profile_params(params, profile)
    missing = [
        key
        for key in ("refmap_res", *(("illnet", "refnet") if net == "drmnet" else ("obsnet",)))
        if key not in chosen
    ]
    if missing:
        raise InputError("params.yaml", f"profiles.{chosen['name']} lacks {missing}")
    try:
        if net == "drmnet":
            return drmnet_config(chosen, params.get("drm"))
        return obsnet_config(chosen, training_settings(params, net, profile).get("diffusion"))
    except (KeyError, TypeError, ValueError) as error:
        raise InputError("params.yaml", f"invalid network settings for {net} ({error})") from None


def _loop_kwargs(net: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that are keyword arguments of the training loop; unknown keys are an error."""
    from pipeline.training.train_drmnet import train_drmnet
    from pipeline.training.train_obsnet import train_obsnet

    loop = train_drmnet if net == "drmnet" else train_obsnet
    set_here = {
        "data",
        "network",
        "run_dir",
        "tracker",
        "resume",
        "device",
        "metrics_path",
        "plot_path",
        "log",
    }
    allowed = set(inspect.signature(loop).parameters) - set_here
    kwargs = {k: v for k, v in settings.items() if k not in (*LOADER_OPTIONS, "diffusion")}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise InputError("params.yaml", f"unknown keys in train_{net}: {unknown}; allowed: {sorted(allowed)}")
    return kwargs


def shard_data(split_dir: Path, net: str, settings: dict[str, Any]):
    """A loader factory (epoch → batches) over the split's shards for this rank."""
    from pipeline.reader import make_loader

    world = int(os.environ.get("WORLD_SIZE", "1"))
    batch_size = int(settings.get("batch_size", 20))
    if batch_size % world:
        raise InputError(
            "params.yaml", f"train_{net}.batch_size {batch_size} is not divisible by the {world} ranks"
        )
    epoch_samples = None
    if world > 1:  # resampled shards keep the ranks in step (see pipeline/reader.py)
        from pipeline.manifest import read_samples_manifest

        epoch_samples = max(1, read_samples_manifest(split_dir).num_rows // world)
    loader = make_loader(
        split_dir,
        batch_size // world,
        shuffle_buffer=int(settings.get("shuffle_buffer", 1000)),
        num_workers=int(settings.get("num_workers", 2)),
        epoch_samples=epoch_samples,
        seed=int(settings.get("seed", 0)),
        keys=FIELDS[net],
    )

    def batches(epoch: int):
        loader.set_epoch(epoch)
        return loader

    return batches


def run_training(
    net: str,
    params: dict[str, Any],
    profile: str | None = None,
    resume: bool = False,
    data_dir: str | os.PathLike | None = None,
    register: bool = True,
    device: str | None = None,
) -> dict[str, Any]:
    """Train ``net`` on its shards and write the outputs listed in the module docstring; with
    ``register``, log the run to MLflow and register the model. Returns the final metrics (plus
    ``model_version`` when registered)."""
    from pipeline.training.train_drmnet import train_drmnet
    from pipeline.training.train_obsnet import train_obsnet

    _check_net(net)
    settings = training_settings(params, net, profile)
    network = network_config(params, net, profile)
    kwargs = _loop_kwargs(net, settings)
    split_dir = Path(data_dir) if data_dir is not None else SHARDS / net / "train"
    data = shard_data(split_dir, net, settings)
    run_dir = CHECKPOINTS / net
    loop = train_drmnet if net == "drmnet" else train_obsnet
    outputs = {
        "run_dir": run_dir,
        "metrics_path": METRICS / f"train_{net}.json",
        "plot_path": PLOTS / f"train_{net}.csv",
        "device": device,
        "resume": resume,
    }
    is_main = int(os.environ.get("RANK", "0")) == 0
    if not (register and is_main):
        return loop(data, network=network, **outputs, **kwargs)

    from pipeline.registry import register_model, training_run

    logged = {
        "profile": profile_params(params, profile),
        f"train_{net}": settings,
        "drm": params.get("drm", {}),
        "network": network.to_dict(),
        "data_dir": str(split_dir),
        "resume": resume,
    }
    with training_run(net, logged, split_dir) as tracker:
        metrics = loop(data, network=network, tracker=tracker, **outputs, **kwargs)
        metrics["model_version"] = register_model(net, run_dir, tracker.run_id)
    return metrics
