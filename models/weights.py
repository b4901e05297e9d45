"""Networks from a config, and their weights on disk: a directory holding ``config.json`` (the
config's ``to_dict``) and safetensors files whose keys are prefixed by network name
(``illnet.…``, ``refnet.…``, ``obsnet.…``). ``ema.safetensors`` holds the weights used for
inference. Loading needs nothing but these files and this package.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from fileio.atomic import atomic_write
from models.config import DRMNetConfig, ObsNetConfig, config_from_dict
from models.illnet import IllNet
from models.obsnet import ObsNet
from models.refnet import RefNet

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "ema.safetensors"  # inference weights (EMA of the training weights)


def build_networks(config: DRMNetConfig | ObsNetConfig) -> dict[str, nn.Module]:
    """Freshly initialised networks: {"illnet", "refnet"} for DRMNet, {"obsnet"} for ObsNet."""
    if isinstance(config, DRMNetConfig):
        return {
            "illnet": IllNet(config.illnet, config.resolution),
            "refnet": RefNet(config.refnet, config.resolution),
        }
    return {"obsnet": ObsNet(config.unet, config.resolution)}


def state_dict_of(nets: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """One flat state dict with keys ``<net>.<param>``, contiguous CPU tensors."""
    return {
        f"{name}.{key}": value.detach().cpu().contiguous()
        for name, net in nets.items()
        for key, value in net.state_dict().items()
    }


def load_state_dict_into(nets: dict[str, nn.Module], tensors: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`state_dict_of`; every network's keys must match exactly."""
    for name, net in nets.items():
        prefix = f"{name}."
        net.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})


def save_weights(
    path: str | os.PathLike, nets: dict[str, nn.Module], metadata: dict[str, str] | None = None
) -> Path:
    """Write the networks' weights to a safetensors file, atomically (temp name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        save_file(state_dict_of(nets), tmp, metadata=metadata)
    return path


def save_config(path: str | os.PathLike, config: DRMNetConfig | ObsNetConfig) -> Path:
    """Write ``config.to_dict()`` as JSON, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp, open(tmp, "w") as f:
        json.dump(config.to_dict(), f, indent=2)
    return path


def load_networks(
    directory: str | os.PathLike, weights: str = WEIGHTS_FILE, device: str | torch.device = "cpu"
) -> tuple[DRMNetConfig | ObsNetConfig, dict[str, nn.Module]]:
    """Read ``config.json`` and a weights file from ``directory`` → (config, networks in eval mode).
    A missing file raises FileNotFoundError, an unreadable (e.g. truncated) one ValueError."""
    directory = Path(directory)
    for name in (CONFIG_FILE, weights):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory}: no {name} (not a drmnet model directory)")
    config = config_from_dict(json.loads((directory / CONFIG_FILE).read_text()))
    nets = build_networks(config)
    try:
        tensors = load_file(directory / weights)
    except SafetensorError as error:  # a truncated or overwritten file
        path = directory / weights
        raise ValueError(f"{path}: unreadable or truncated safetensors file ({error})") from None
    load_state_dict_into(nets, tensors)
    for net in nets.values():
        net.to(device).eval().requires_grad_(False)
    return config, nets
