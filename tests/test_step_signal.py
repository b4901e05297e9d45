"""The property the DRM process needs of IllNet and that was missing: on samples it never saw, its
one step carries the change from L_k to L_{k−1}, not only a denoised L_k.

IllNet's input is L_k + σ·noise and its target the residual to L_{k−1}, i.e. the step s = L_{k−1} − L_k
minus the noise. The step is small (a fraction of σ in the networks' domain), so the plain error
of a one-step prediction is dominated by how well the noise is removed. The step signal is
measured apart from that: the prediction's estimate of the step, ŝ = residual + σ·noise, regressed
on the true step: β = Σ⟨ŝ, s⟩ / Σ‖s‖². The "no step" baseline (the next refmap is the current one,
a pure denoiser) has β = 0; a perfect one-step predictor β = 1.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from training_data import blob_envmap, drmnet_trajectories

from models.config import DRMNetConfig, UNetConfig
from models.drm import drm_training_loss, intensity_scale, mirror_material, to_network
from models.weights import build_networks

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RES = 16
NET = UNetConfig(channels=8, multipliers=(1, 2, 2), res_blocks=1, attention=(8,))


def step_gain(illnet: torch.nn.Module, batch: dict, config: DRMNetConfig) -> float:
    """β of the module docstring over a batch, in the networks' domain, IllNet fed the true z_k."""
    scale = intensity_scale(batch["refmap_obs"], config.drm)
    observation, current = to_network(batch["refmap_obs"], scale), to_network(batch["refmap_k"], scale)
    step = to_network(batch["refmap_next"], scale) - current
    noise = config.drm.input_noise * torch.randn(current.shape, generator=torch.Generator().manual_seed(99))
    with torch.no_grad():
        residual = illnet(
            current + noise, observation, batch["z_k"] - mirror_material(config.drm, batch["z_k"])
        )
    return float(((residual + noise) * step).sum() / (step**2).sum())


def stack(samples: list[dict]) -> dict:
    return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}


def test_tiny_illnet_learns_the_step_on_fresh_samples_not_only_to_denoise():
    rng = np.random.default_rng(0)
    # A few hundred fresh training pairs (every step of 4 materials' processes under 3 envmaps),
    # and held-out pairs of other materials under another envmap.
    train = []
    for seed in range(3):
        train += drmnet_trajectories(blob_envmap(16, seed), rng.uniform(0, 1, (2, 6)), RES, spp=16, seed=seed)
    held_out = stack(drmnet_trajectories(blob_envmap(16, 7), rng.uniform(0, 1, (2, 6)), RES, spp=16, seed=7))
    config = DRMNetConfig(resolution=RES, illnet=NET, refnet=NET)
    torch.manual_seed(0)
    nets = build_networks(config)
    optimizer = torch.optim.AdamW([p for n in nets.values() for p in n.parameters()], lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    before = step_gain(nets["illnet"], held_out, config)
    order = np.random.default_rng(1)
    for _ in range(600):
        batch = stack([train[i] for i in order.integers(0, len(train), 32)])
        loss, _ = drm_training_loss(nets["illnet"], nets["refnet"], batch, config.drm, True, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = step_gain(nets["illnet"], held_out, config)
    print(f"held-out step gain β: {before:.3f} untrained, {after:.3f} trained ({len(train)} training pairs)")
    assert len(train) > 200 and abs(before) < 0.2
    assert after > 0.3, f"held-out step gain β = {after:.3f}: IllNet does not carry the step"
