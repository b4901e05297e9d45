"""The DRM sampler: from an observed refmap to the refmap of a perfect mirror, step by step.

All in the transformed domain (:func:`models.drm.to_network`). Start from L_K + δ·noise; at step
i = 0, 1, …: RefNet → ẑ_K (clamped to [0, 1]; a known material, when given, instead: RefNet is
not run), ẑ_k = z0 + γ^i (ẑ_K − z0);
L ← L + IllNet(L, L_K, ẑ_k − z0), plus δ·noise unless the sample stops here: once ‖ẑ_k − z0‖ < ε
(or after ``max_steps`` steps) that noise-free step is its last, as in the paper's released code,
so the result carries no sampling noise of its own (the trained IllNet also removes the noise in
its input). Each sample of a batch stops on its own; the networks only run on the samples still
going.

Progress: an optional ``progress(step, max_steps, running)`` callback (:data:`DRMProgress`) is
called after each step, so that a caller can show a progress bar without this module knowing
of any UI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from models.config import DRMConfig
from models.drm import mirror_material

# progress(step, max_steps, running): called once after each step, step = 1, 2, … (at most
# max_steps calls); running = the samples that took that step and had not converged before it
# (they go on, unless the step budget is spent). It never increases, and the last call's value
# is the number of samples that end unconverged (those stopped by max_steps).
DRMProgress = Callable[[int, int, int], None]


@dataclass
class DRMSamples:
    """Result of :func:`sample_drm` for a batch of B observations (T domain)."""

    mirror: torch.Tensor  # (B, 3, R, R) the estimated mirror refmap L_0
    material: torch.Tensor  # (B, 6) RefNet's ẑ_K at the step the sample stopped (or the known one)
    steps: torch.Tensor  # (B,) int64 IllNet steps taken
    converged: torch.Tensor  # (B,) bool: stopped by ‖ẑ_k − z0‖ < ε rather than by max_steps
    # states before each RefNet evaluation, (B, 3, R, R): [0] is L_K + δ·noise; stopped samples frozen
    intermediates: list[torch.Tensor] | None = None


@torch.no_grad()
def sample_drm(
    illnet: nn.Module,
    refnet: nn.Module,
    observation: torch.Tensor,
    config: DRMConfig,
    generator: torch.Generator | None = None,
    max_steps: int | None = None,
    keep_intermediates: bool = False,
    progress: DRMProgress | None = None,
    known_material: torch.Tensor | None = None,
) -> DRMSamples:
    """Run the reverse DRM process on observations (B, 3, R, R) in the T domain.

    ``known_material`` (B, 6) in [0, 1]: the observed materials z_K when they are known (e.g. a probe
    of a measured material); RefNet is then not run and the process follows their schedule.

    ``generator`` seeds the noise (the same seed gives the same samples); the noise of step i is
    drawn for the whole batch, so a sample's noise does not depend on when the others stop.
    ``progress`` is called after each step (see :data:`DRMProgress`).
    """
    max_steps = config.max_steps if max_steps is None else max_steps
    batch, device = observation.shape[0], observation.device
    z0 = mirror_material(config, observation)

    def noise() -> torch.Tensor:
        return torch.randn(observation.shape, generator=generator, device=device, dtype=observation.dtype)

    if known_material is not None:
        known_material = known_material.to(device=device, dtype=torch.float32)
    state = observation + config.sampling_noise * noise()
    material = torch.zeros(batch, 6, device=device)
    steps = torch.zeros(batch, dtype=torch.long, device=device)
    converged = torch.zeros(batch, dtype=torch.bool, device=device)
    active = torch.ones(batch, dtype=torch.bool, device=device)
    intermediates = [state.clone()] if keep_intermediates else None

    for i in range(max_steps + 1):
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        if known_material is None:
            step_index = torch.full((idx.numel(),), i, dtype=torch.long, device=device)
            z_K = refnet(state[idx], observation[idx], step_index).float().clamp(0.0, 1.0)
        else:
            z_K = known_material[idx]
        material[idx] = z_K
        if i == max_steps:  # only with max_steps = 0: RefNet's answer, no step
            break
        z_k = z0 + config.gamma**i * (z_K - z0)
        done = (z_k - z0).norm(dim=1) < config.eps
        converged[idx[done]] = True
        last = done | (i == max_steps - 1)  # this step is the sample's last: no noise after it
        active[idx[last]] = False
        step_noise = noise()
        residual = illnet(state[idx], observation[idx], z_k - z0).to(state.dtype)
        state[idx] = state[idx] + residual
        going = idx[~last]
        state[going] = state[going] + config.sampling_noise * step_noise[going]
        steps[idx] += 1
        if progress is not None:
            progress(i + 1, max_steps, int((~done).sum()))
        if intermediates is not None:
            intermediates.append(state.clone())
    return DRMSamples(state, material, steps, converged, intermediates)
