"""Sample grids for the tracker: one row per preview sample, tonemapped with the preview
operator of rendering/hdrio.py at the ground truth's exposure (so the columns compare).

DRMNet: observation L_K | estimated mirror (EMA nets, DRM sampler) | true mirror L_0.
ObsNet: sparse observation | completion (EMA net, DDIM) | full observation L_K.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from models.config import DRMNetConfig, ObsNetConfig
from models.ddpm import Diffusion, complete_refmap
from models.drm import from_network, intensity_scale, to_network
from models.sampler import sample_drm
from rendering.hdrio import preview_exposure, tonemap

PREVIEW_SAMPLES = 4
SEPARATOR = 2  # pixels of black between tiles


def _grid(rows: list[list[torch.Tensor]]) -> np.ndarray:
    """rows of (3, R, R) linear refmaps; the last tile of each row sets the row's exposure."""
    out = []
    for row in rows:
        tiles = [t.detach().float().cpu().permute(1, 2, 0).numpy() for t in row]
        exposure = preview_exposure(tiles[-1])
        pad = np.zeros((tiles[0].shape[0], SEPARATOR, 3), np.uint8)
        out.append(np.concatenate([x for t in tiles for x in (tonemap(t, exposure), pad)][:-1], axis=1))
        out.append(np.zeros((SEPARATOR, out[-1].shape[1], 3), np.uint8))
    return np.concatenate(out[:-1], axis=0)


@torch.no_grad()
def drmnet_preview(
    nets: dict[str, nn.Module], config: DRMNetConfig, batch: dict[str, torch.Tensor], seed: int = 0
) -> np.ndarray:
    """uint8 (rows·R, 3·R, 3) grid for the first samples of a DRMNet batch."""
    obs = batch["refmap_obs"][:PREVIEW_SAMPLES].float()
    scale = intensity_scale(obs, config.drm)
    generator = torch.Generator(obs.device).manual_seed(seed)
    out = sample_drm(nets["illnet"], nets["refnet"], to_network(obs, scale), config.drm, generator)
    mirror = from_network(out.mirror, scale)
    return _grid([[o, m, t] for o, m, t in zip(obs, mirror, batch["refmap_mirror"], strict=False)])


@torch.no_grad()
def obsnet_preview(
    nets: dict[str, nn.Module], config: ObsNetConfig, batch: dict[str, torch.Tensor], seed: int = 0
) -> np.ndarray:
    """uint8 (rows·R, 3·R, 3) grid for the first samples of an ObsNet batch."""
    observed = batch["observed"][:PREVIEW_SAMPLES].float()
    mask = batch["observed_mask"][:PREVIEW_SAMPLES].float()
    generator = torch.Generator(observed.device).manual_seed(seed)
    diffusion = Diffusion(config.diffusion)
    completed = complete_refmap(nets["obsnet"], diffusion, observed, mask, generator=generator)
    return _grid([[o, c, t] for o, c, t in zip(observed, completed, batch["refmap_obs"], strict=False)])
