"""RefNet: estimates the observed material z_K from the current refmap of the reverse process.

Input: L_k concatenated with L_K in the transformed domain, (B, 6, R, R); embedding: the reversed
step index K−1−k (the number of reverse steps taken so far) through sinusoidal features and an
MLP. Output: z_K, (B, 6), linear, as in the paper's released code (a sigmoid's flat tails slow
the learning of materials near 0 and 1, where z0 sits); the sampler clamps it to [0, 1]. The
current material z_k follows from z_K by the schedule (:func:`models.drm.material_at`).
"""

from __future__ import annotations

import torch
from torch import nn

from models.config import UNetConfig
from models.unet import EmbeddingMLP, EncoderUNet, sinusoidal_embedding

MATERIAL_DIM = 6


class RefNet(nn.Module):
    def __init__(self, config: UNetConfig, resolution: int):
        super().__init__()
        self.step_features = config.channels
        self.embed = EmbeddingMLP(self.step_features, config.emb_channels)
        self.encoder = EncoderUNet(6, MATERIAL_DIM, config, resolution)

    def forward(self, refmap: torch.Tensor, observation: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """refmap, observation (B, 3, R, R) in T domain; step = K−1−k (B,) → z_K (B, 6), unbounded
        (≈ [0, 1] once trained; clamp for use)."""
        emb = self.embed(sinusoidal_embedding(step, self.step_features))
        return self.encoder(torch.cat([refmap, observation], dim=1), emb)
