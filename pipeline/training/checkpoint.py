"""Training checkpoints: one directory per network family, and when a training continues one.

    config.json        the network config (models.config ``to_dict``)
    model.safetensors  training weights             ┐ keys ``<net>.<param>``,
    ema.safetensors    EMA weights (for inference)  ┘ metadata ``samples``
    state.pt           optimizer, samples/steps, data position, RNG states, loss history, and
                       what the run is: ``fingerprint`` (network config, training settings,
                       data version), ``complete`` (it reached ``total_samples``) and
                       ``tracker_run_id`` (its MLflow run, continued on resume)
    snapshots/<samples>/  with ``keep_snapshots``: each snapshot's EMA weights as a model
                       directory (config.json, ema.safetensors), kept when the next replaces it

Every file is written to a temporary name first and renamed once complete; state.pt is renamed
last and names the sample count the weights must carry, so a run interrupted while saving is
detected on resume rather than silently mixing two checkpoints. The directory doubles as a model
directory for ``models.estimator.Estimator.from_directories``.

Whether a training continues the checkpoint in its directory is decided in one place,
:func:`plan_start`, from the ``resume`` mode:

    False    start fresh (the old checkpoint, if any, is removed first)
    True     continue it (``drmnet train --resume``); a checkpoint made from other settings or
             data is an error naming what differs; no checkpoint: start fresh
    "auto"   continue it if it is an unfinished run of the same settings and data, else start
             fresh, saying why (``--auto-resume``, what ``dvc repro`` runs: DVC re-runs a
             finished stage only because something changed)
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import zipfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from fileio.atomic import atomic_write
from models.config import DRMNetConfig, ObsNetConfig
from models.weights import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_networks,
    load_state_dict_into,
    save_config,
    save_weights,
    state_dict_of,
)
from pipeline.training.distributed import Dist, barrier
from rendering.errors import InputError

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
SNAPSHOTS = "snapshots"  # kept EMA snapshots, one model directory per sample count (keep_snapshots)
CHECKPOINT_FILES = (STATE_FILE, MODEL_FILE, WEIGHTS_FILE, CONFIG_FILE)  # state first: it marks a checkpoint

Resume = bool | Literal["auto"]


def has_checkpoint(run_dir: str | os.PathLike) -> bool:
    return (Path(run_dir) / STATE_FILE).is_file()


def fingerprint_of(
    network: DRMNetConfig | ObsNetConfig, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What a run is made from, as plain JSON data: ``{"network": config, **extra}``, where the
    training stage adds ``train`` (the resolved settings) and ``data`` (the data version)."""
    return json.loads(json.dumps({"network": network.to_dict(), **(extra or {})}, sort_keys=True))


def fingerprint_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The dotted keys whose values differ, as ``"train.lr 0.002 -> 0.001"``."""
    old, new = _flatten(saved), _flatten(current)
    return [
        f"{key} {_show(old.get(key))} -> {_show(new.get(key))}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key)
    ]


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _show(value: Any) -> str:
    if value is None:
        return "(unset)"
    text = json.dumps(value)
    return text if len(text) <= 20 else text[:13] + "…" + text[-4:]


@dataclass(frozen=True)
class Start:
    """How a training starts: continue the checkpoint or start fresh, and the line that says why."""

    resume: bool
    reason: str | None = None  # one line for the log when starting fresh over something
    tracker_run_id: str | None = None  # the checkpoint's MLflow run


def plan_start(run_dir: str | os.PathLike, fingerprint: dict[str, Any], resume: Resume) -> Start:
    """Decide whether a training with ``fingerprint`` continues the checkpoint in ``run_dir``
    (the policy of the module docstring). Reads only; raises InputError for ``resume=True`` and a
    checkpoint that cannot be continued (other settings or data, or unreadable)."""
    if resume not in (False, True, "auto"):
        raise ValueError(f"resume must be False, True or 'auto', got {resume!r}")
    run_dir = Path(run_dir)
    if not has_checkpoint(run_dir):
        return Start(False, f"no checkpoint in {run_dir}; starting fresh" if resume == "auto" else None)
    if resume is False:
        return Start(False, f"starting fresh in {run_dir} (its checkpoint is replaced)")

    try:
        state = _read_state(run_dir)
        problem = _weights_problem(run_dir, int(state["samples"]))
    except (OSError, RuntimeError, EOFError, KeyError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        state, problem = {}, f"cannot be read ({error})"
    if problem is None and "fingerprint" not in state:
        problem = "records no fingerprint (written by an older drmnet), so its settings are unknown"
    remedy = "train without --resume to start over (this replaces the checkpoint)"
    if problem is None:
        changes = fingerprint_changes(state["fingerprint"], fingerprint)
        if changes:
            shown = "; ".join(changes[:4]) + (f"; and {len(changes) - 4} more" if len(changes) > 4 else "")
            problem = f"was made from other settings or data ({shown})"
            remedy = f"restore them, or {remedy}"
    if problem is not None:
        if resume is True:
            raise InputError(run_dir, f"cannot be resumed: the checkpoint {problem}; {remedy}")
        return Start(False, f"starting fresh in {run_dir}: its checkpoint {problem}")
    if resume == "auto" and state.get("complete"):
        finished = f"its checkpoint is a finished run ({state['samples']} samples)"
        return Start(False, f"starting fresh in {run_dir}: {finished}")
    return Start(True, None, state.get("tracker_run_id"))


def prepare_run_dir(run_dir: str | os.PathLike, resume: bool) -> None:
    """Make ``run_dir`` ready for a training: remove the temporary files a killed save left and,
    unless resuming, the old checkpoint (state.pt first), so old and new files never mix."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        shutil.rmtree(run_dir / SNAPSHOTS, ignore_errors=True)
    for name in CHECKPOINT_FILES:
        if not resume:
            (run_dir / name).unlink(missing_ok=True)
        for leftover in run_dir.glob(f".{name}.*"):
            leftover.unlink(missing_ok=True)


def _read_state(run_dir: Path) -> dict[str, Any]:
    # mmap: the optimizer moments are not read just to look at the fingerprint.
    return torch.load(run_dir / STATE_FILE, map_location="cpu", weights_only=True, mmap=True)


def _weights_samples(path: Path) -> int:
    with safe_open(path, framework="pt") as f:
        return int((f.metadata() or {}).get("samples", -1))


def _weights_problem(run_dir: Path, samples: int) -> str | None:
    """Why the weight files do not belong to the state at ``samples`` (None: they do)."""
    for name in (MODEL_FILE, WEIGHTS_FILE, CONFIG_FILE):
        if not (run_dir / name).is_file():
            return f"lacks {name}"
    for name in (MODEL_FILE, WEIGHTS_FILE):
        try:
            found = _weights_samples(run_dir / name)
        except (OSError, SafetensorError, ValueError) as error:
            return f"has an unreadable {name} ({error})"
        if found != samples:
            return (
                f"has a {name} of {found} samples, not the {samples} of {STATE_FILE} "
                "(interrupted while saving?)"
            )
    return None


def save_checkpoint(
    run_dir: str | os.PathLike,
    config: DRMNetConfig | ObsNetConfig,
    nets: dict[str, nn.Module],
    ema_nets: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
) -> Path:
    """Write a complete checkpoint; ``state`` must hold ``samples`` (int), and should hold
    ``fingerprint`` and ``complete`` for :func:`plan_start`. All files are written to temporary
    names before any is renamed (state.pt last), so a kill while saving rarely leaves the
    previous snapshot unusable: only if it lands between the renames."""
    run_dir = Path(run_dir)
    save_config(run_dir / CONFIG_FILE, config)  # the same throughout a run (it is in the fingerprint)
    metadata = {"samples": str(int(state["samples"]))}
    with ExitStack() as stack:
        # Each atomic_write renames as its context exits, the last entered first: state.pt is
        # entered first to be renamed last. No suffix: torch.save names its archive after the file
        # name up to the last dot, ".state.pt" as ever (the temporary names are ``.<name>.*``,
        # what prepare_run_dir removes).
        staged = {
            name: stack.enter_context(atomic_write(run_dir / name, suffix=""))
            for name in (STATE_FILE, WEIGHTS_FILE, MODEL_FILE)
        }
        for name, weights in ((MODEL_FILE, nets), (WEIGHTS_FILE, ema_nets)):
            save_file(state_dict_of(weights), staged[name], metadata=metadata)
        torch.save({**state, "optimizer": optimizer.state_dict()}, staged[STATE_FILE])
    return run_dir


def keep_snapshot(
    run_dir: str | os.PathLike,
    config: DRMNetConfig | ObsNetConfig,
    ema_nets: dict[str, nn.Module],
    samples: int,
) -> Path:
    """Keep the EMA weights at ``samples`` as a model directory ``snapshots/<samples>/`` of the
    run (config.json + ema.safetensors), beside the checkpoint that the next snapshot replaces."""
    directory = Path(run_dir) / SNAPSHOTS / f"{int(samples):09d}"
    save_config(directory / CONFIG_FILE, config)
    save_weights(directory / WEIGHTS_FILE, ema_nets, metadata={"samples": str(int(samples))})
    return directory


def initial_weights(
    directory: str | os.PathLike,
    config: DRMNetConfig | ObsNetConfig,
    frozen: frozenset[str] = frozenset(),
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The inference weights of the model directory (or checkpoint) ``directory`` to start a run
    of ``config`` from (``init_from``: fine-tuning), and the networks left to fresh weights. Its
    network must be ``config``'s; only when some networks are ``frozen`` (kept, not trained) may a
    trained one differ in size: that one starts fresh."""
    try:
        found, nets = load_networks(directory)
    except (FileNotFoundError, ValueError) as error:
        raise InputError(directory, f"cannot start a training from it: {error}") from None
    old, new = found.to_dict(), config.to_dict()
    fresh = sorted(n for n in set(nets) - frozen if old.get(n) != new.get(n)) if frozen else []
    old, new = ({k: v for k, v in d.items() if k not in fresh} for d in (old, new))
    if old != new:
        changes = fingerprint_changes(old, new)
        shown = "; ".join(changes[:4]) + (f"; and {len(changes) - 4} more" if len(changes) > 4 else "")
        raise InputError(directory, f"cannot start a training from it: another network ({shown})")
    tensors = {
        key: value.float() if value.is_floating_point() else value
        for key, value in state_dict_of({n: net for n, net in nets.items() if n not in fresh}).items()
    }
    return tensors, fresh


def load_checkpoint(
    run_dir: str | os.PathLike,
    nets: dict[str, nn.Module],
    ema_nets: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer,
) -> dict[str, Any]:
    """Restore weights, EMA weights and optimizer in place; return the rest of the state.
    :func:`plan_start` decides whether the checkpoint is the one to continue."""
    run_dir = Path(run_dir)
    if not has_checkpoint(run_dir):
        raise InputError(run_dir, f"no checkpoint to resume from ({STATE_FILE} missing)")
    state = torch.load(run_dir / STATE_FILE, map_location="cpu", weights_only=True)
    problem = _weights_problem(run_dir, int(state["samples"]))
    if problem is not None:
        raise InputError(run_dir, f"cannot be resumed: the checkpoint {problem}; delete it to start over")
    device = next(next(iter(nets.values())).parameters()).device
    load_state_dict_into(nets, {k: v.to(device) for k, v in load_file(run_dir / MODEL_FILE).items()})
    load_state_dict_into(ema_nets, {k: v.to(device) for k, v in load_file(run_dir / WEIGHTS_FILE).items()})
    optimizer.load_state_dict(state.pop("optimizer"))
    return state


def start_training(
    label: str,
    run_dir: str | os.PathLike,
    network: DRMNetConfig | ObsNetConfig,
    fingerprint: dict[str, Any] | None,
    resume: Resume,
    nets: dict[str, nn.Module],
    ema_nets: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    dist: Dist,
    tracker_run_id: str | None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The training state to begin with, for both loops: the checkpoint's (weights, EMA, optimiser
    restored in place; the generator and torch RNG states set) when :func:`plan_start` says to
    continue it, else a fresh one; rank 0 prepares ``run_dir`` and says which it is."""
    fingerprint = fingerprint_of(network, fingerprint)
    start = plan_start(run_dir, fingerprint, resume)
    barrier(dist)  # every rank has read the checkpoint before rank 0 clears it
    state: dict[str, Any] = {"samples": 0, "step": 0, "data": {"epoch": 0, "index": 0}, "history": []}
    if start.resume:
        state = load_checkpoint(run_dir, nets, ema_nets, optimizer)
        generator.set_state(state["generator"][dist.rank])
        torch.set_rng_state(state["torch_rng"])
    if dist.is_main:
        prepare_run_dir(run_dir, start.resume)
        if start.resume:
            log(f"{label}: resumed from {run_dir} at {state['samples']} samples")
        elif start.reason:
            log(f"{label}: {start.reason}")
    state["fingerprint"] = fingerprint
    if tracker_run_id is not None:
        state["tracker_run_id"] = tracker_run_id
    return state
