"""What the training loop (loop.py) trains: one small object per network family.

A family holds its network config and its own settings, and gives the loop what differs between
families: the networks to build, the loss of one batch and a preview grid of samples. The stage
(stage.py) also reads from it which shard fields the family trains on, which profile blocks hold
its network sizes and how its config is made from params.yaml.

    DRMNet   IllNet + RefNet, the DRM process (models/drm.py; DESIGN.md §3.4)
    ObsNet   the conditional DDPM that completes observed refmaps (models/ddpm.py)
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from models.config import DRMNetConfig, ObsNetConfig, drmnet_config, obsnet_config
from models.ddpm import Diffusion, obsnet_training_loss
from models.drm import drm_training_loss
from models.weights import build_networks
from pipeline.training.previews import drmnet_preview, obsnet_preview

if TYPE_CHECKING:
    from pipeline.settings import DRMNetTrainSettings, ObsNetTrainSettings

Batch = dict[str, torch.Tensor]
Loss = tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, float]]  # loss, its parts, logged extras


class DRMNet:
    """IllNet + RefNet, trained on pairs (L_k, L_{k−1}) of the DRM process."""

    name: ClassVar[str] = "drmnet"
    lr: ClassVar[float] = 5e-5  # the paper's learning rate
    fields: ClassVar[tuple[str, ...]] = (  # what it reads from its shards
        "refmap_obs",
        "refmap_k",
        "refmap_next",
        "refmap_mirror",
        "z_obs",
        "z_k",
        "k",
        "K",
    )
    profile_keys: ClassVar[tuple[str, ...]] = ("illnet", "refnet")  # its network sizes in a profile

    def __init__(
        self,
        config: DRMNetConfig,  # Network sizes, resolution, DRM constants.
        teacher_forcing: float = 0.5,  # Fraction of training where IllNet sees the true z_k.
        loss_offset: float = 0.1,  # IllNet's error in log10(x + this); 0.1: the plain L2 in T.
        networks: tuple[str, ...] = ("illnet", "refnet"),  # Those trained; the others kept (init_from).
    ):
        if not networks or len(set(networks)) != len(networks) or set(networks) - {"illnet", "refnet"}:
            raise ValueError(f"networks must name illnet and/or refnet once each, got {list(networks)}")
        self.config = config
        self.teacher_forcing = teacher_forcing
        self.loss_offset = loss_offset
        self.trained = tuple(networks)

    @staticmethod
    def network_config(
        profile: dict[str, Any], params: dict[str, Any], settings: DRMNetTrainSettings
    ) -> DRMNetConfig:
        """From the profile block, the ``drm`` section and the ``train_drmnet`` settings."""
        return drmnet_config(profile, params.get("drm"))

    def networks(self) -> dict[str, nn.Module]:
        """IllNet and RefNet; one this run does not train has no parameter requiring a gradient."""
        nets = build_networks(self.config)
        for name, net in nets.items():
            net.requires_grad_(name in self.trained)
        return nets

    def loss(
        self,
        nets: dict[str, nn.Module],
        batch: Batch,
        generator: torch.Generator,
        samples: int,
        total_samples: int,
    ) -> Loss:
        """The loss of one batch after ``samples`` of ``total_samples`` training samples."""
        teacher = samples < self.teacher_forcing * total_samples
        loss, parts = drm_training_loss(
            nets["illnet"],
            nets["refnet"],
            batch,
            self.config.drm,
            teacher,
            generator,
            self.loss_offset,
            illnet_loss="illnet" in self.trained,
        )
        return loss, parts, {"teacher_forcing": float(teacher)}

    def preview(self, ema_nets: dict[str, nn.Module], batch: Batch, seed: int) -> np.ndarray:
        return drmnet_preview(ema_nets, self.config, batch, seed=seed)


class ObsNet:
    """ObsNet, a conditional DDPM trained to complete sparse observed refmaps."""

    name: ClassVar[str] = "obsnet"
    lr: ClassVar[float] = 1e-4  # the paper's learning rate
    fields: ClassVar[tuple[str, ...]] = ("refmap_obs", "observed", "observed_mask")
    profile_keys: ClassVar[tuple[str, ...]] = ("obsnet",)

    def __init__(
        self,
        config: ObsNetConfig,  # Network size, resolution and diffusion constants.
    ):
        self.config = config
        self.diffusion = Diffusion(config.diffusion)

    @staticmethod
    def network_config(
        profile: dict[str, Any], params: dict[str, Any], settings: ObsNetTrainSettings
    ) -> ObsNetConfig:
        """From the profile block and the ``diffusion`` block of the ``train_obsnet`` settings."""
        return dataclasses.replace(obsnet_config(profile), diffusion=settings.diffusion)

    def networks(self) -> dict[str, nn.Module]:
        return build_networks(self.config)

    def loss(
        self,
        nets: dict[str, nn.Module],
        batch: Batch,
        generator: torch.Generator,
        samples: int,
        total_samples: int,
    ) -> Loss:
        loss, parts = obsnet_training_loss(nets["obsnet"], self.diffusion, batch, generator)
        return loss, parts, {}

    def preview(self, ema_nets: dict[str, nn.Module], batch: Batch, seed: int) -> np.ndarray:
        return obsnet_preview(ema_nets, self.config, batch, seed=seed)


Family = DRMNet | ObsNet
FAMILIES: dict[str, type[DRMNet] | type[ObsNet]] = {family.name: family for family in (DRMNet, ObsNet)}
