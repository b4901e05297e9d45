"""The ``drmnet train drmnet|obsnet`` stage: params.yaml → shard loader → training loop →
checkpoint, DVC metrics and plots → MLflow run and a registered model version (alias
``candidate``).

Outputs (paths relative to the working directory):

    checkpoints/<net>/           config.json, model.safetensors, ema.safetensors, state.pt
    metrics/train_<net>.json     the last tick's losses, samples/s, … (``dvc metrics show``)
    plots/train_<net>.csv        the loss curve, one row per tick (``dvc plots show``)

Settings: the ``train_<net>`` section, overridden key by key by ``profiles.<profile>.train_<net>``
(the ``diffusion`` block one level deeper), as a typed ``pipeline.settings.TrainSettings``;
network sizes from ``profiles.<profile>.<net>``.

The checkpoint records the run's fingerprint (:func:`run_fingerprint`: network config, settings,
number of ranks, data version); ``resume`` (True, or ``"auto"`` under ``dvc repro``) continues a
checkpoint only with the same one, and its MLflow run with it (pipeline/training/checkpoint.py).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.config import DRMNetConfig, ObsNetConfig
from pipeline.config import profile_params
from pipeline.settings import DRMNetTrainSettings, ObsNetTrainSettings, TrainSettings
from rendering.errors import InputError

if TYPE_CHECKING:  # checkpoint.py and families.py import torch
    from pipeline.training.checkpoint import Resume
    from pipeline.training.families import Family

NETS = ("drmnet", "obsnet")  # the keys of pipeline/training/families.py FAMILIES
CHECKPOINTS = Path("checkpoints")
METRICS = Path("metrics")
PLOTS = Path("plots")
SHARDS = Path("data/shards")
LOADER_OPTIONS = ("batch_size", "num_workers", "shuffle_buffer")  # settings for the reader, not the loop
RUN_CONTROL = (
    "stop_at_samples",
    "snapshot_ticks",
    "preview_ticks",
    "keep_snapshots",
)  # when to stop/save/preview, not what


def _check_net(net: str) -> None:
    if net not in NETS:
        raise InputError("net", f"unknown network family {net!r}; choose one of {NETS}")


def _family(net: str) -> type[Family]:
    """The family class of ``net`` (pipeline/training/families.py), imported only to train."""
    _check_net(net)
    from pipeline.training.families import FAMILIES

    return FAMILIES[net]


def training_settings(params: dict[str, Any], net: str, profile: str | None = None) -> TrainSettings:
    """``train_<net>`` with the profile's overrides applied, checked."""
    _check_net(net)
    return {"drmnet": DRMNetTrainSettings, "obsnet": ObsNetTrainSettings}[net].from_params(params, profile)


def network_config(
    params: dict[str, Any], net: str, profile: str | None = None
) -> DRMNetConfig | ObsNetConfig:
    """The network config of ``net`` for the profile (sizes, resolution, DRM/diffusion constants)."""
    family = _family(net)
    chosen = profile_params(params, profile)
    missing = [key for key in ("refmap_res", *family.profile_keys) if key not in chosen]
    if missing:
        raise InputError("params.yaml", f"profiles.{chosen['name']} lacks {missing}")
    settings = training_settings(params, net, profile)  # an InputError of its own naming the key
    try:
        return family.network_config(chosen, params, settings)
    except (KeyError, TypeError, ValueError) as error:
        raise InputError("params.yaml", f"invalid network settings for {net} ({error})") from None


def _loop_kwargs(net: str, settings: TrainSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    """The settings that are keyword arguments of the training loop, and those of the family
    (DRMNet: ``teacher_forcing``); a setting that is neither is an error."""
    from pipeline.training.loop import training_loop

    family_options = set(inspect.signature(_family(net)).parameters) - {"config"}
    set_here = {
        "family",
        "data",
        "run_dir",
        "data_name",
        "tracker",
        "resume",
        "fingerprint",
        "device",
        "metrics_path",
        "plot_path",
        "log",
    }
    allowed = set(inspect.signature(training_loop).parameters) - set_here | family_options
    kwargs = {
        f.name: getattr(settings, f.name)
        for f in dataclasses.fields(settings)
        if f.init and f.name not in (*LOADER_OPTIONS, "diffusion")
    }
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise TypeError(
            f"{type(settings).__name__} has fields {unknown} that are no option of the training loop"
        )
    options = {k: kwargs.pop(k) for k in sorted(family_options & set(kwargs))}
    return kwargs, options


def shard_data(split_dir: Path, net: str, settings: TrainSettings):
    """A loader factory (epoch → batches) over the split's shards for this rank."""
    from pipeline.reader import make_loader

    world = int(os.environ.get("WORLD_SIZE", "1"))
    batch_size = settings.batch_size
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
        shuffle_buffer=settings.shuffle_buffer,
        num_workers=settings.num_workers,
        epoch_samples=epoch_samples,
        seed=settings.seed,
        keys=_family(net).fields,
    )

    def batches(epoch: int):
        loader.set_epoch(epoch)
        return loader

    return batches


def _require_resolution(split_dir: Path, net: str, resolution: int) -> None:
    """The split's refmaps (its first sample's ``refmap_obs``) must be of the network's resolution:
    checked before the checkpoint directory is touched."""
    from pipeline.reader import list_shards
    from pipeline.shards import read_shard

    shards = list_shards(split_dir)
    first = next(read_shard(shards[0]), None) if shards else None
    refmap = None if first is None else first[1].get("refmap_obs")
    if refmap is not None and tuple(refmap.shape[-2:]) != (resolution, resolution):
        found = "×".join(str(n) for n in refmap.shape[-2:])
        raise InputError(
            split_dir,
            f"holds {found} refmaps, but the {net} network of this profile is for "
            f"{resolution}×{resolution}: render the shards with this profile (refmap_res) or train "
            "with the profile they were made with",
        )


def data_fingerprint(split_dir: str | os.PathLike) -> dict[str, str]:
    """The data version of a split: the sha256 of its parquet manifests (pipeline/manifest.py; the
    shards manifest holds every shard's sha256), or of every shard for shards made elsewhere."""
    from pipeline.manifest import SAMPLES_MANIFEST, SHARDS_MANIFEST
    from pipeline.reader import list_shards
    from pipeline.shards import file_sha256

    split_dir = Path(split_dir)
    if (split_dir / SHARDS_MANIFEST).is_file():
        files = [split_dir / name for name in (SAMPLES_MANIFEST, SHARDS_MANIFEST)]
    else:
        files = [Path(shard) for shard in list_shards(split_dir)]
    return {path.name: file_sha256(path) for path in files if path.is_file()}


def run_fingerprint(
    net: str, params: dict[str, Any], profile: str | None = None, split_dir: str | os.PathLike | None = None
) -> dict[str, Any]:
    """What a training run of ``net`` is made of, besides its network config (which the loop adds):
    ``train`` (the resolved ``train_<net>`` settings as written, but those of RUN_CONTROL),
    ``ranks`` and ``data`` (:func:`data_fingerprint` of the split)."""
    settings = training_settings(params, net, profile)
    split_dir = Path(split_dir) if split_dir is not None else SHARDS / net / "train"
    fingerprint = {
        "train": {key: value for key, value in settings.as_written.items() if key not in RUN_CONTROL},
        "ranks": int(os.environ.get("WORLD_SIZE", "1")),
        "data": data_fingerprint(split_dir),
    }
    if settings.init_from is not None:  # the starting weights' version, not only their path
        fingerprint["init"] = _weights_fingerprint(Path(settings.init_from))
    return fingerprint


def _weights_fingerprint(directory: Path) -> str:
    from models.weights import WEIGHTS_FILE
    from pipeline.shards import file_sha256

    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise InputError(
            directory, f"train_*.init_from: no {WEIGHTS_FILE} here (not a drmnet model directory)"
        )
    return file_sha256(path)


def run_training(
    net: str,
    params: dict[str, Any],
    profile: str | None = None,
    resume: Resume = False,
    data_dir: str | os.PathLike | None = None,
    register: bool = True,
    device: str | None = None,
) -> dict[str, Any]:
    """Train ``net`` on its shards and write the outputs listed in the module docstring; with
    ``register``, log the run to MLflow and register the model. ``resume``: False (start fresh),
    True or ``"auto"`` (see pipeline/training/checkpoint.py). Returns the final metrics (plus
    ``model_version`` when registered)."""
    from pipeline.training.checkpoint import fingerprint_of, plan_start
    from pipeline.training.loop import training_loop

    settings = training_settings(params, net, profile)
    network = network_config(params, net, profile)
    kwargs, options = _loop_kwargs(net, settings)
    try:
        family = _family(net)(network, **options)
    except ValueError as error:  # settings that do not fit together, e.g. no network to train
        raise InputError("params.yaml", f"train_{net}: {error}") from None
    split_dir = Path(data_dir) if data_dir is not None else SHARDS / net / "train"
    from pipeline.manifest import require_intact_split

    require_intact_split(split_dir)  # a bad shard is one clear error now, not a loader traceback later
    _require_resolution(split_dir, net, network.resolution)
    fingerprint = run_fingerprint(net, params, profile, split_dir)
    data = shard_data(split_dir, net, settings)
    run_dir = CHECKPOINTS / net
    outputs = {
        "run_dir": run_dir,
        "metrics_path": METRICS / f"train_{net}.json",
        "plot_path": PLOTS / f"train_{net}.csv",
        "device": device,
        "resume": resume,
        "fingerprint": fingerprint,
        "data_name": str(split_dir),
    }
    is_main = int(os.environ.get("RANK", "0")) == 0
    if not (register and is_main):
        return training_loop(family, data, **outputs, **kwargs)

    from pipeline.registry import register_model, training_run

    # The loop makes the same decision again; here it only tells which MLflow run to continue.
    start = plan_start(run_dir, fingerprint_of(network, fingerprint), resume)

    logged = {
        "profile": profile_params(params, profile),
        f"train_{net}": settings.as_written,
        "drm": params.get("drm", {}),
        "network": network.to_dict(),
        "data_dir": str(split_dir),
        "resume": resume,
    }
    continued = start.tracker_run_id if start.resume else None
    with training_run(net, logged, split_dir, run_id=continued) as tracker:
        metrics = training_loop(family, data, tracker=tracker, **outputs, **kwargs)
        if metrics["complete"]:
            metrics["model_version"] = register_model(net, run_dir, tracker.run_id)
        else:  # stopped early (stop_at_samples): a half-trained model is no candidate
            print(f"{net}: stopped at {metrics['samples']} samples, before its end: not registered")
    return metrics
