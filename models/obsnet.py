"""ObsNet: the denoiser of the conditional DDPM that completes a sparse observed refmap.

Input: the noisy full refmap x_t (3 channels, per-image log-normalised, see
:mod:`models.ddpm`) concatenated with the condition (the normalised sparse observation with
unobserved pixels filled with noise, 3 channels, and the observation mask, 1 channel);
(B, 7, R, R). Embedding: the diffusion timestep t. Output: the predicted noise ε, (B, 3, R, R).
"""

from __future__ import annotations

import torch
from torch import nn

from models.config import UNetConfig
from models.unet import EmbeddingMLP, UNet, sinusoidal_embedding

CONDITION_CHANNELS = 4


class ObsNet(nn.Module):
    def __init__(self, config: UNetConfig, resolution: int):
        super().__init__()
        self.time_features = config.channels
        self.embed = EmbeddingMLP(self.time_features, config.emb_channels)
        self.unet = UNet(3 + CONDITION_CHANNELS, 3, config, resolution)

    def forward(self, x_t: torch.Tensor, condition: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t (B, 3, R, R), condition (B, 4, R, R), t (B,) int64 → predicted noise (B, 3, R, R)."""
        emb = self.embed(sinusoidal_embedding(t, self.time_features))
        return self.unet(torch.cat([x_t, condition], dim=1), emb)
