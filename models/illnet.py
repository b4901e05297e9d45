"""IllNet: one step of the reverse DRM process, L_k → L_{k−1}.

Input: the current refmap L_k (noised in training) concatenated with the observation L_K, both in
the transformed domain T (:func:`models.drm.transform`); (B, 6, R, R). Embedding: the material
offset z_k − z0 through an MLP, in place of a diffusion timestep embedding. Output: the residual
T(L_{k−1}) − T(L_k), (B, 3, R, R).
"""

from __future__ import annotations

import torch
from torch import nn

from models.config import UNetConfig
from models.unet import EmbeddingMLP, UNet

MATERIAL_DIM = 6


class IllNet(nn.Module):
    def __init__(self, config: UNetConfig, resolution: int):
        super().__init__()
        self.embed = EmbeddingMLP(MATERIAL_DIM, config.emb_channels)
        self.unet = UNet(6, 3, config, resolution)

    def forward(self, refmap: torch.Tensor, observation: torch.Tensor, dz: torch.Tensor) -> torch.Tensor:
        """refmap, observation (B, 3, R, R) in T domain; dz = z_k − z0 (B, 6) → residual (B, 3, R, R)."""
        return self.unet(torch.cat([refmap, observation], dim=1), self.embed(dz))
