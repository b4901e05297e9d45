"""Exponential moving average of network weights, with a half-life counted in training samples
(as in NVlabs/edm): after ``halflife_samples`` more samples an old weight counts half. Early in
training the half-life is capped at ``rampup`` × samples seen, so the average forgets the random
initialisation quickly."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, nets: dict[str, nn.Module], halflife_samples: float, rampup: float | None = 0.05):
        self.halflife_samples = halflife_samples
        self.rampup = rampup
        self.nets = {name: copy.deepcopy(net).eval().requires_grad_(False) for name, net in nets.items()}

    @torch.no_grad()
    def update(self, nets: dict[str, nn.Module], batch_samples: int, samples_seen: int) -> None:
        """Blend the current weights in after a step of ``batch_samples`` samples."""
        halflife = self.halflife_samples
        if self.rampup is not None:
            halflife = min(halflife, samples_seen * self.rampup)
        beta = 0.5 ** (batch_samples / max(halflife, 1e-8))
        for name, net in nets.items():
            averaged, current = list(self.nets[name].parameters()), [p.detach() for p in net.parameters()]
            torch._foreach_lerp_(averaged, current, 1.0 - beta)
            for b_ema, b in zip(self.nets[name].buffers(), net.buffers(), strict=True):
                b_ema.copy_(b)
