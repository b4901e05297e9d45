"""The estimator users and evaluation call: sparse observed refmap → (ObsNet completion) → DRM
sampling → mirror refmap and material, N stochastic samples per input in one batch.

Works on linear HDR refmaps (B, 3, R, R) in the observation's own intensity scale: the
intensity normalisation and the log transform are applied and undone here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from models.config import DRMNetConfig, ObsNetConfig
from models.ddpm import DDIMProgress, Diffusion, complete_refmap
from models.drm import from_network, intensity_scale, to_network
from models.sampler import DRMProgress, sample_drm
from models.weights import load_networks


@dataclass
class Estimate:
    """N samples for each of B inputs."""

    mirror: torch.Tensor  # (B, N, 3, R, R) linear mirror refmap L_0, in the input's scale
    material: torch.Tensor  # (B, N, 6) estimated z_K
    steps: torch.Tensor  # (B, N) int64 DRM steps taken
    converged: torch.Tensor  # (B, N) bool: stopped by ε, not by max_steps
    completed: torch.Tensor  # (B, N, 3, R, R) the completed observation L_K the DRM started from
    intermediates: list[torch.Tensor] | None = None  # states from L_K + δ·noise on, (B, N, 3, R, R) linear


class Estimator:
    """IllNet + RefNet (and optionally ObsNet) ready to run. Build with :meth:`from_directories`
    or from networks in memory; ``pipeline.registry.load_estimator`` also accepts MLflow URIs."""

    def __init__(
        self,
        drmnet_config: DRMNetConfig,
        illnet: nn.Module,
        refnet: nn.Module,
        obsnet_config: ObsNetConfig | None = None,
        obsnet: nn.Module | None = None,
        device: str | torch.device | None = None,
    ):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.drmnet_config = drmnet_config
        self.obsnet_config = obsnet_config
        self.illnet = illnet.to(self.device).eval()
        self.refnet = refnet.to(self.device).eval()
        self.obsnet = obsnet.to(self.device).eval() if obsnet is not None else None
        self.diffusion = Diffusion(obsnet_config.diffusion) if obsnet_config is not None else None
        if obsnet_config is not None and obsnet_config.resolution != drmnet_config.resolution:
            raise ValueError(
                f"ObsNet resolution {obsnet_config.resolution} != DRMNet resolution "
                f"{drmnet_config.resolution}"
            )

    @classmethod
    def from_directories(
        cls,
        drmnet_dir: str | os.PathLike,
        obsnet_dir: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
    ) -> Estimator:
        """Load from model directories (``config.json`` + ``ema.safetensors``, see models/weights.py)."""
        config, nets = load_networks(drmnet_dir)
        if not isinstance(config, DRMNetConfig):
            raise ValueError(f"{drmnet_dir}: holds a {config.to_dict()['kind']} model, expected drmnet")
        obs_config, obsnet = None, None
        if obsnet_dir is not None:
            obs_config, obs_nets = load_networks(obsnet_dir)
            if not isinstance(obs_config, ObsNetConfig):
                kind = obs_config.to_dict()["kind"]
                raise ValueError(f"{obsnet_dir}: holds a {kind} model, expected obsnet")
            obsnet = obs_nets["obsnet"]
        return cls(config, nets["illnet"], nets["refnet"], obs_config, obsnet, device)

    @property
    def resolution(self) -> int:
        return self.drmnet_config.resolution

    def _as_batch(self, x: torch.Tensor, channels: int, name: str) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float32, device=self.device)
        if x.ndim == 2 and channels == 1:
            x = x[None]
        if x.ndim == 3:
            x = x[None]
        r = self.resolution
        if x.ndim != 4 or x.shape[1:] != (channels, r, r):
            raise ValueError(
                f"{name} has shape {tuple(x.shape)}; expected (B, {channels}, {r}, {r}) "
                f"or ({channels}, {r}, {r}) for this {r}×{r} model"
            )
        if not torch.isfinite(x).all() or (x < 0).any():
            raise ValueError(f"{name} must hold finite values >= 0")
        return x

    def _known_material(self, material: torch.Tensor, batch: int) -> torch.Tensor:
        z = torch.as_tensor(material, dtype=torch.float32, device=self.device)
        if z.ndim == 1:
            z = z[None].expand(batch, -1)
        if z.shape != (batch, 6):
            raise ValueError(f"material has shape {tuple(z.shape)}; expected (6,) or ({batch}, 6)")
        if not torch.isfinite(z).all() or (z < 0).any() or (z > 1).any():
            raise ValueError("material must hold finite values in [0, 1]")
        return z

    @torch.no_grad()
    def complete(
        self,
        observed: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator | None = None,
        steps: int | None = None,
        eta: float | None = None,
        progress: DDIMProgress | None = None,
    ) -> torch.Tensor:
        """ObsNet: sparse observed refmaps (B, 3, R, R) + masks (B, 1, R, R) → full (B, 3, R, R)."""
        if self.obsnet is None:
            raise ValueError("the observation is sparse (mask has unobserved pixels) but no ObsNet is loaded")
        observed = observed * (mask > 0.5)
        return complete_refmap(self.obsnet, self.diffusion, observed, mask, steps, eta, generator, progress)

    @torch.no_grad()
    def estimate(
        self,
        refmap: torch.Tensor,
        mask: torch.Tensor | None = None,
        num_samples: int = 1,
        seed: int = 0,
        max_steps: int | None = None,
        sampling_steps: int | None = None,
        eta: float | None = None,
        keep_intermediates: bool = False,
        ddim_progress: DDIMProgress | None = None,
        drm_progress: DRMProgress | None = None,
        material: torch.Tensor | None = None,
    ) -> Estimate:
        """Estimate the mirror refmap and the material of observed refmaps.

        refmap: (B, 3, R, R) or (3, R, R), linear HDR; mask: (B, 1, R, R), (1, R, R) or (R, R),
        1 where observed (None: fully observed, no ObsNet). ``num_samples`` stochastic samples
        per input run in one batch; ``seed`` makes them reproducible. ``max_steps``: DRM steps at
        most (None: the model's ``drm.max_steps``); ``sampling_steps``: ObsNet's DDIM steps (None:
        its ``diffusion.sampling_steps``). ``ddim_progress(step,
        steps)`` follows ObsNet's completion (only run when the mask has holes) and
        ``drm_progress(step, max_steps, running)`` the DRM sampling, ``running`` counting the
        B·N samples (see models.ddpm.DDIMProgress and models.sampler.DRMProgress). ``material``:
        the observed material z when it is known, (6,) for every input or (B, 6), each value in
        [0, 1]; RefNet is then not run (see models.sampler.sample_drm).
        """
        refmap = self._as_batch(refmap, 3, "refmap")
        b, n = refmap.shape[0], num_samples
        known = None if material is None else self._known_material(material, b).repeat_interleave(n, dim=0)
        generator = torch.Generator(self.device).manual_seed(seed)
        completed = refmap.repeat_interleave(n, dim=0)
        if mask is not None:
            mask = self._as_batch(mask, 1, "mask").expand(b, -1, -1, -1).repeat_interleave(n, dim=0)
            if (mask < 0.5).any():
                completed = self.complete(completed, mask, generator, sampling_steps, eta, ddim_progress)

        scale = intensity_scale(completed, self.drmnet_config.drm)
        samples = sample_drm(
            self.illnet,
            self.refnet,
            to_network(completed, scale),
            self.drmnet_config.drm,
            generator,
            max_steps,
            keep_intermediates,
            drm_progress,
            known,
        )

        def per_input(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(b, n, *x.shape[1:])

        intermediates = None
        if samples.intermediates is not None:
            intermediates = [per_input(from_network(s, scale)) for s in samples.intermediates]
        return Estimate(
            mirror=per_input(from_network(samples.mirror, scale)),
            material=per_input(samples.material),
            steps=per_input(samples.steps),
            converged=per_input(samples.converged),
            completed=per_input(completed),
            intermediates=intermediates,
        )
