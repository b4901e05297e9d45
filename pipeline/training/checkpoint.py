"""Training checkpoints: one directory per network family.

    config.json        the network config (models.config ``to_dict``)
    model.safetensors  training weights             ┐ keys ``<net>.<param>``,
    ema.safetensors    EMA weights (for inference)  ┘ metadata ``samples``
    state.pt           optimizer, samples/steps, data position, RNG states, loss history

Every file is written to a temporary name first and renamed once complete; state.pt is renamed
last and names the sample count the weights must carry, so a run interrupted while saving is
detected on resume rather than silently mixing two checkpoints. The directory doubles as a model
directory for ``models.estimator.Estimator.from_directories``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from models.config import DRMNetConfig, ObsNetConfig
from models.weights import CONFIG_FILE, WEIGHTS_FILE, load_state_dict_into, save_config, save_weights
from rendering.errors import InputError

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"


def has_checkpoint(run_dir: str | os.PathLike) -> bool:
    return (Path(run_dir) / STATE_FILE).is_file()


def save_checkpoint(
    run_dir: str | os.PathLike,
    config: DRMNetConfig | ObsNetConfig,
    nets: dict[str, nn.Module],
    ema_nets: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
) -> Path:
    """Write a complete checkpoint; ``state`` must hold ``samples`` (int)."""
    run_dir = Path(run_dir)
    metadata = {"samples": str(int(state["samples"]))}
    save_config(run_dir / CONFIG_FILE, config)
    save_weights(run_dir / MODEL_FILE, nets, metadata)
    save_weights(run_dir / WEIGHTS_FILE, ema_nets, metadata)
    handle, tmp = tempfile.mkstemp(prefix=f".{STATE_FILE}.", dir=run_dir)
    os.close(handle)
    try:
        torch.save({**state, "optimizer": optimizer.state_dict()}, tmp)
        os.replace(tmp, run_dir / STATE_FILE)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return run_dir


def _weights_samples(path: Path) -> int:
    with safe_open(path, framework="pt") as f:
        return int((f.metadata() or {}).get("samples", -1))


def load_checkpoint(
    run_dir: str | os.PathLike,
    config: DRMNetConfig | ObsNetConfig,
    nets: dict[str, nn.Module],
    ema_nets: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer,
) -> dict[str, Any]:
    """Restore weights, EMA weights and optimizer in place; return the rest of the state. The
    checkpoint must have been written for the same network config."""
    run_dir = Path(run_dir)
    if not has_checkpoint(run_dir):
        raise InputError(run_dir, f"no checkpoint to resume from ({STATE_FILE} missing)")
    saved = json.loads((run_dir / CONFIG_FILE).read_text())
    if saved != json.loads(json.dumps(config.to_dict())):
        raise InputError(
            run_dir / CONFIG_FILE,
            "was written for other network settings than params.yaml's; "
            "delete the checkpoint directory (or restore the settings) to continue",
        )
    state = torch.load(run_dir / STATE_FILE, map_location="cpu", weights_only=True)
    for name in (MODEL_FILE, WEIGHTS_FILE):
        if not (run_dir / name).is_file() or _weights_samples(run_dir / name) != state["samples"]:
            raise InputError(
                run_dir / name,
                f"does not belong to the checkpoint at {state['samples']} "
                "samples (interrupted while saving?); delete the directory to start over",
            )
    device = next(next(iter(nets.values())).parameters()).device
    load_state_dict_into(nets, {k: v.to(device) for k, v in load_file(run_dir / MODEL_FILE).items()})
    load_state_dict_into(ema_nets, {k: v.to(device) for k, v in load_file(run_dir / WEIGHTS_FILE).items()})
    optimizer.load_state_dict(state.pop("optimizer"))
    return state
