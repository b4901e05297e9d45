"""Shipped models: trained networks committed to the repository, so that ``drmnet estimate``
works on a fresh clone with no training and no MLflow registry.

    pretrained/<profile>/MODEL.md       provenance: profile, data, training, machine, quality
    pretrained/<profile>/drmnet/        config.json + ema.safetensors (+ provenance.json)
    pretrained/<profile>/obsnet/        the same for ObsNet

A model directory holds only what inference reads (models/weights.py), never the optimiser
state of a training checkpoint; :func:`export_model` makes one from a checkpoint directory.

Which model ``drmnet estimate`` uses when given none (:func:`default_model`), in this order:

1. the registry's champion, ``models:/<net>@champion``, when the tracking store exists and has
   one (``make demo`` trains, evaluates and promotes one);
2. the shipped model ``pretrained/cpu/<net>``;
3. neither: an error that says how to get a model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rendering.errors import InputError

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
DEFAULT_PROFILE = "cpu"  # the profile whose models are shipped (params.yaml `profiles.cpu`)
CHAMPION = "champion"
PROVENANCE_FILE = "provenance.json"
NETS = ("drmnet", "obsnet")


def shipped_model_dir(net: str, profile: str = DEFAULT_PROFILE) -> Path:
    """Where the shipped model of ``net`` lives (whether or not it is there)."""
    return PRETRAINED_DIR / profile / net


WEIGHT_DTYPES = ("float32", "float16")  # how exported weights may be stored


def export_model(
    checkpoint_dir: str | os.PathLike,
    out: str | os.PathLike,
    dtype: str = "float32",
    average: Sequence[str | os.PathLike] = (),
) -> Path:
    """Copy the inference part of a checkpoint (or model) directory, ``config.json`` and the EMA
    weights ``ema.safetensors``, into the model directory ``out``, with ``provenance.json``: the
    samples the weights have seen, whether the run finished, what it was trained from (the
    checkpoint's fingerprint: network, training settings, data version), the git commit and the
    date (a model directory exported again keeps the origin its provenance.json records).
    ``dtype="float16"`` stores the weights at half precision (half the bytes; networks load
    them back as float32, see ``benchmarks/quality.py`` for the effect on quality).
    ``average``: further checkpoint or model directories of the same network (the same
    config.json) whose EMA weights are averaged with this one's, tensor by tensor (runs of one
    lineage: the ends of successive learning-rate cycles, as stochastic weight averaging takes
    them, or fine-tunes of the same weights); their origins are listed under ``averaged_with``,
    and ``samples`` stays the first one's. The copy is checked to load before it replaces any
    file in ``out``. Returns ``out``."""
    from models.weights import CONFIG_FILE, WEIGHTS_FILE, load_networks

    source, out = Path(checkpoint_dir), Path(out)
    others = [Path(other) for other in average]
    for directory in (source, *others):
        _check_model_dir(directory)
        if out.resolve() == directory.resolve():
            raise InputError(out, "is the checkpoint itself; export to another directory")
    if dtype not in WEIGHT_DTYPES:
        raise InputError("--dtype", f"{dtype!r} is not one of {', '.join(WEIGHT_DTYPES)}")
    config = json.loads((source / CONFIG_FILE).read_text())
    for other in others:
        if json.loads((other / CONFIG_FILE).read_text()) != config:
            raise InputError(
                other,
                f"is another network than {source} (config.json differs): only one network's weights average",
            )

    provenance = _origin(source)
    provenance.update(dtype=dtype)
    if others:
        provenance.update(averaged_with=[_origin(other) for other in others])
    provenance.update(exported=datetime.now(UTC).isoformat(timespec="seconds"))

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export.", dir=out) as tmp:
        staged = Path(tmp)
        shutil.copyfile(source / CONFIG_FILE, staged / CONFIG_FILE)
        _write_weights([d / WEIGHTS_FILE for d in (source, *others)], staged / WEIGHTS_FILE, dtype)
        (staged / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
        try:
            load_networks(staged)
        except (FileNotFoundError, ValueError, RuntimeError, KeyError) as error:
            raise InputError(source, f"does not load as a model ({error})") from None
        for name in (CONFIG_FILE, WEIGHTS_FILE, PROVENANCE_FILE):
            os.replace(staged / name, out / name)
    return out


def _check_model_dir(directory: Path) -> None:
    """A directory with ``config.json`` and the EMA weights, else an InputError naming it."""
    from models.weights import CONFIG_FILE, WEIGHTS_FILE

    if not directory.is_dir():
        raise InputError(directory, "is not a directory (expected a checkpoint such as checkpoints/drmnet)")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise InputError(directory, f"has no {name}: not a trained checkpoint or model directory")


def _origin(source: Path) -> dict[str, Any]:
    """Where a checkpoint's (or model directory's) weights come from: the directory, the samples
    they have seen, and from a checkpoint whether its run finished, its fingerprint and the git
    commit; a model directory exported before keeps the origin its provenance.json records."""
    from models.weights import WEIGHTS_FILE
    from pipeline.registry import git_commit
    from pipeline.training.checkpoint import STATE_FILE

    samples = _weights_samples(source / WEIGHTS_FILE)
    origin: dict[str, Any] = {"source": str(source), "samples": samples}
    if (source / STATE_FILE).is_file():
        state = _training_state(source / STATE_FILE)
        if samples is not None and int(state.get("samples", -1)) != samples:
            raise InputError(
                source,
                f"has EMA weights of {samples} samples but a {STATE_FILE} of {state.get('samples')} "
                "(interrupted while saving?); export once the training has written its next snapshot",
            )
        origin.update(complete=state.get("complete"), fingerprint=state.get("fingerprint"))
        origin.update(git_commit=git_commit())
    elif (source / PROVENANCE_FILE).is_file():  # a model directory exported again: keep its origin
        earlier = json.loads((source / PROVENANCE_FILE).read_text())
        keep = ("source", "complete", "fingerprint", "git_commit", "averaged_with")
        origin.update({key: earlier[key] for key in keep if key in earlier}, exported_from=str(source))
    else:
        origin.update(git_commit=git_commit())
    return origin


def _write_weights(sources: list[Path], target: Path, dtype: str) -> None:
    """The first weights file as it is (one source, float32), else the per-tensor mean of the
    sources' floating tensors cast to ``dtype`` (the others as in the first), the first's
    metadata kept."""
    if len(sources) == 1 and dtype == "float32":
        shutil.copyfile(sources[0], target)
        return
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from fileio.atomic import atomic_write

    with safe_open(sources[0], framework="pt") as f:
        metadata = f.metadata()
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    total = {k: v.double() for k, v in tensors.items() if v.is_floating_point()}
    for other in sources[1:]:
        with safe_open(other, framework="pt") as f:
            if set(f.keys()) != set(tensors):
                raise InputError(
                    other.parent, f"holds other tensors than {sources[0].parent}: not the same network"
                )
            for key in total:
                value = f.get_tensor(key)
                if value.shape != total[key].shape:
                    raise InputError(
                        other.parent,
                        f"{key}: shape {tuple(value.shape)}, not {tuple(total[key].shape)} (another network)",
                    )
                total[key] += value.double()
    cast = {
        k: (total[k] / len(sources)).to(getattr(torch, dtype)) if k in total else v
        for k, v in tensors.items()
    }
    with atomic_write(target) as tmp:  # safetensors would leave the file at mode 0600
        save_file(cast, tmp, metadata=metadata)


def _weights_samples(path: Path) -> int | None:
    """The training samples a safetensors file records in its metadata (None: not recorded)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as f:
            value = (f.metadata() or {}).get("samples")
    except SafetensorError as error:  # a truncated or overwritten file
        raise InputError(path, f"unreadable or truncated safetensors file ({error})") from None
    return int(value) if value is not None else None


def _training_state(path: Path) -> dict[str, Any]:
    """A checkpoint's state.pt without the optimiser (memory-mapped: the moments are not read)."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return {key: state.get(key) for key in ("samples", "complete", "fingerprint")}


def registry_champion(net: str) -> str | None:
    """``models:/<net>@champion`` if the tracking store exists and has that alias, else None.
    A missing default ``mlflow.db`` (a fresh clone) is no registry: nothing is created."""
    from pipeline.registry import tracking_uri

    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return None
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(net, CHAMPION)
    except MlflowException:
        return None
    return f"models:/{net}@{CHAMPION}"


def default_model(net: str) -> tuple[str, str]:
    """The model ``net`` ("drmnet" or "obsnet") to use when none is given, in the order of the
    module docstring → (reference for ``pipeline.registry.load_estimator``, one line saying
    which model it is). Raises InputError when there is none."""
    if net not in NETS:
        raise ValueError(f"net must be one of {NETS}, got {net!r}")
    champion = registry_champion(net)
    if champion is not None:
        return champion, f"{net}: {champion} (the registry's champion)"
    from models.weights import CONFIG_FILE

    shipped = shipped_model_dir(net)
    if (shipped / CONFIG_FILE).is_file():
        line = f"{net}: {shipped} (the shipped {DEFAULT_PROFILE} model; no champion in the registry)"
        return str(shipped), line
    flag = "--model" if net == "drmnet" else "--obsnet"
    raise InputError(
        flag,
        f"no {net} model: the registry has no {net} champion and {shipped} is missing. Run `make demo` "
        f"(trains, evaluates and promotes a champion), or `drmnet train {net}` and pass "
        f"`{flag} checkpoints/{net}`",
    )
