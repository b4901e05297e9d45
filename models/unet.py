"""The U-Net backbone shared by IllNet and ObsNet, and the encoder U-Net RefNet pools to a vector.

DDPM/ADM-style: residual blocks (GroupNorm, SiLU, 3×3 convolutions) into which an embedding
vector is injected per block as a scale and shift of the normalised features; self-attention at
configured feature-map resolutions; channels, multipliers and depth from a :class:`UNetConfig`.
The embedding itself (from a timestep, a step index or a material) is built by the caller, so
one backbone serves all three networks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.config import UNetConfig


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with at most 32 groups and at least 4 channels per group (small nets keep
    meaningful group statistics)."""
    groups = max(g for g in range(1, 33) if channels % g == 0 and channels // g >= min(4, channels))
    return nn.GroupNorm(groups, channels)


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) integer or real positions → (B, dim) sinusoidal features (transformer positions)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def zero_module(module: nn.Module) -> nn.Module:
    """Zero a layer's parameters: residual branches and outputs start as the identity / zero."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """(B, C_in, H, W), (B, E) → (B, C_out, H, W); the embedding scales and shifts the features."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(emb_channels, 2 * out_channels)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all pixels of a (B, C, H, W) feature map, residual."""

    def __init__(self, channels: int, head_channels: int):
        super().__init__()
        self.heads = max(1, channels // head_channels)
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_module(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # (B, heads, HW, C/heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Stage(nn.Module):
    """A residual block optionally followed by attention (one entry of a U-Net path)."""

    def __init__(self, in_ch: int, out_ch: int, attention: bool, config: UNetConfig):
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, config.emb_channels, config.dropout)
        self.attn = AttentionBlock(out_ch, config.head_channels) if attention else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = self.res(x, emb)
        return self.attn(x) if self.attn is not None else x


def _check_resolution(config: UNetConfig, resolution: int) -> None:
    factor = 2 ** (len(config.multipliers) - 1)
    if resolution % factor:
        raise ValueError(
            f"resolution {resolution} is not divisible by 2^(levels-1) = {factor} "
            f"(multipliers {config.multipliers})"
        )


class Encoder(nn.Module):
    """The contracting half of a U-Net plus its middle block. Returns the features and, for a
    full U-Net, every intermediate map the expanding half concatenates back."""

    def __init__(self, in_channels: int, config: UNetConfig, resolution: int):
        super().__init__()
        _check_resolution(config, resolution)
        self.input = nn.Conv2d(in_channels, config.channels, 3, padding=1)
        self.down = nn.ModuleList()
        self.skip_channels = [config.channels]
        ch, res = config.channels, resolution
        for level, mult in enumerate(config.multipliers):
            for _ in range(config.res_blocks):
                self.down.append(_Stage(ch, config.channels * mult, res in config.attention, config))
                ch = config.channels * mult
                self.skip_channels.append(ch)
            if level < len(config.multipliers) - 1:
                self.down.append(Downsample(ch))
                self.skip_channels.append(ch)
                res //= 2
        self.mid1 = ResBlock(ch, ch, config.emb_channels, config.dropout)
        self.mid_attn = AttentionBlock(ch, config.head_channels)
        self.mid2 = ResBlock(ch, ch, config.emb_channels, config.dropout)
        self.out_channels = ch
        self.out_resolution = res

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self.input(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, _Stage) else layer(h)
            skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        return h, skips


class UNet(nn.Module):
    """(B, C_in, R, R), embedding (B, E) → (B, C_out, R, R). The output layer starts at zero."""

    def __init__(self, in_channels: int, out_channels: int, config: UNetConfig, resolution: int):
        super().__init__()
        self.encoder = Encoder(in_channels, config, resolution)
        skip_channels = list(self.encoder.skip_channels)
        self.up = nn.ModuleList()
        ch, res = self.encoder.out_channels, self.encoder.out_resolution
        for level, mult in reversed(list(enumerate(config.multipliers))):
            for _ in range(config.res_blocks + 1):
                out_ch = config.channels * mult
                self.up.append(_Stage(ch + skip_channels.pop(), out_ch, res in config.attention, config))
                ch = out_ch
            if level > 0:
                self.up.append(Upsample(ch))
                res *= 2
        self.out = nn.Sequential(
            group_norm(ch), nn.SiLU(), zero_module(nn.Conv2d(ch, out_channels, 3, padding=1))
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h, skips = self.encoder(x, emb)
        for layer in self.up:
            if isinstance(layer, _Stage):
                h = layer(torch.cat([h, skips.pop()], dim=1), emb)
            else:
                h = layer(h)
        return self.out(h)


class EncoderUNet(nn.Module):
    """(B, C_in, R, R), embedding (B, E) → (B, out_features): the contracting half of a U-Net,
    its middle block, then global average pooling and a linear layer."""

    def __init__(self, in_channels: int, out_features: int, config: UNetConfig, resolution: int):
        super().__init__()
        self.encoder = Encoder(in_channels, config, resolution)
        ch = self.encoder.out_channels
        self.out = nn.Sequential(
            group_norm(ch), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ch, out_features)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h, _ = self.encoder(x, emb)
        return self.out(h)


class EmbeddingMLP(nn.Module):
    """(B, in_features) → (B, E): the two-layer MLP that turns a timestep's sinusoidal features,
    or a material offset, into the per-block embedding."""

    def __init__(self, in_features: int, emb_channels: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, emb_channels), nn.SiLU(), nn.Linear(emb_channels, emb_channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
