"""ObsNet's conditional diffusion: the per-image log normalisation, the DDPM training loss and
DDIM sampling (DESIGN.md §3.4).

The sparse observed refmap is normalised per image: y = ln(x + c) with c = 1 % of the mean
observed value, then mapped so that the observed pixels span [−1, 1]. The full refmap (the
diffusion's x0) uses the same mapping, so a completion converts back with statistics that come
from the observation alone. The condition is that normalised observation with unobserved pixels
filled with noise, concatenated with the mask: (B, 4, R, R).

Betas are linear in sqrt-space from ``beta_start`` to ``beta_end`` over ``steps`` timesteps;
the network predicts the noise ε.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.config import DiffusionConfig

OFFSET_FRACTION = 0.01  # c in ln(x + c), relative to the mean observed value
X0_CLIP = 3.0  # |x0| bound while sampling; observed pixels lie in [−1, 1], holes may be brighter

# progress(step, steps): called once after each DDIM step, step = 1 … steps (exactly ``steps``
# calls), so that a caller can show a progress bar without this module knowing of any UI.
DDIMProgress = Callable[[int, int], None]


@dataclass
class LogStats:
    """Per-image parameters of the log normalisation, each (B, 1, 1, 1)."""

    offset: torch.Tensor
    center: torch.Tensor
    half_range: torch.Tensor

    def normalise(self, refmap: torch.Tensor) -> torch.Tensor:
        """Linear (B, 3, R, R) → normalised log domain."""
        return (torch.log(refmap.clamp_min(0) + self.offset) - self.center) / self.half_range

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised log domain → linear (B, 3, R, R), clipped at 0."""
        return (torch.exp(x * self.half_range + self.center) - self.offset).clamp_min(0)


def log_stats(observed: torch.Tensor, mask: torch.Tensor) -> LogStats:
    """Statistics of the observed pixels of (B, 3, R, R) where mask (B, 1, R, R) is 1."""
    observed = observed.float().clamp_min(0)
    seen = mask.expand_as(observed) > 0.5
    count = seen.flatten(1).sum(1).clamp_min(1)
    mean = torch.where(seen, observed, 0.0).flatten(1).sum(1) / count
    offset = (OFFSET_FRACTION * mean).clamp_min(1e-8)
    logs = torch.log(observed + offset[:, None, None, None])
    lo = torch.where(seen, logs, torch.inf).flatten(1).amin(1)
    hi = torch.where(seen, logs, -torch.inf).flatten(1).amax(1)
    empty = ~seen.flatten(1).any(1)
    lo, hi = torch.where(empty, 0.0, lo), torch.where(empty, 0.0, hi)
    center = (hi + lo) / 2
    half_range = ((hi - lo) / 2).clamp_min(1e-3)
    view = (-1, 1, 1, 1)
    return LogStats(offset.view(view), center.view(view), half_range.view(view))


def make_condition(
    observed: torch.Tensor,
    mask: torch.Tensor,
    stats: LogStats,
    generator: torch.Generator | None = None,
    observation_noise: float = 0.0,
) -> torch.Tensor:
    """The ObsNet condition (B, 4, R, R): normalised observation (plus ``observation_noise``
    in training) where observed, standard normal noise elsewhere, ⊕ the mask."""
    norm = stats.normalise(observed.float())
    noise = torch.randn(norm.shape, generator=generator, device=norm.device)
    if observation_noise:
        norm = norm + observation_noise * torch.randn(norm.shape, generator=generator, device=norm.device)
    seen = mask > 0.5
    return torch.cat([torch.where(seen, norm, noise), mask.float()], dim=1)


class Diffusion:
    """The DDPM noise schedule with its training loss and DDIM sampler."""

    def __init__(self, config: DiffusionConfig):
        self.config = config
        start, end = config.beta_start**0.5, config.beta_end**0.5
        sqrt_betas = torch.linspace(start, end, config.steps, dtype=torch.float64)
        betas = sqrt_betas**2
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)

    def _alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) timesteps (−1 means "no noise") → (B, 1, 1, 1) ᾱ_t as float32."""
        table = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod]).to(t.device)
        return table[t + 1].float().view(-1, 1, 1, 1)

    def training_loss(
        self,
        net: nn.Module,
        x0: torch.Tensor,
        condition: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """ε-prediction MSE at a uniformly drawn timestep; x0 (B, 3, R, R), condition (B, 4, R, R)."""
        t = torch.randint(0, self.config.steps, (x0.shape[0],), generator=generator, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device)
        a = self._alpha_bar(t)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = noise if self.config.prediction == "eps" else a.sqrt() * noise - (1 - a).sqrt() * x0
        return F.mse_loss(net(x_t, condition, t).float(), target)

    def _predict_x0(self, out: torch.Tensor, x_t: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The network output at ᾱ = a → the predicted x0."""
        if self.config.prediction == "eps":
            return (x_t - (1 - a).sqrt() * out) / a.sqrt()
        return a.sqrt() * x_t - (1 - a).sqrt() * out

    @torch.no_grad()
    def ddim_sample(
        self,
        net: nn.Module,
        condition: torch.Tensor,
        steps: int | None = None,
        eta: float | None = None,
        generator: torch.Generator | None = None,
        progress: DDIMProgress | None = None,
    ) -> torch.Tensor:
        """Draw x0 (B, 3, R, R) given the condition with ``steps`` DDIM steps; ``eta`` = 0 is
        deterministic given the starting noise, 1 matches DDPM's variance. ``progress(step,
        steps)`` is called after each step (see :data:`DDIMProgress`)."""
        steps = steps or self.config.sampling_steps
        eta = self.config.eta if eta is None else eta
        b, _, h, w = condition.shape
        device = condition.device
        times = torch.linspace(0, self.config.steps - 1, steps).round().long().tolist()
        x = torch.randn((b, 3, h, w), generator=generator, device=device)
        for i in reversed(range(len(times))):
            t = torch.full((b,), times[i], dtype=torch.long, device=device)
            t_prev = torch.full((b,), times[i - 1] if i > 0 else -1, dtype=torch.long, device=device)
            a, a_prev = self._alpha_bar(t), self._alpha_bar(t_prev)
            x0 = self._predict_x0(net(x, condition, t).float(), x, a).clamp(-X0_CLIP, X0_CLIP)
            eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
            sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).clamp_min(0).sqrt()
            x = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp_min(0).sqrt() * eps
            if eta > 0 and i > 0:
                x = x + sigma * torch.randn(x.shape, generator=generator, device=device)
            if progress is not None:
                progress(len(times) - i, len(times))
        return x


def obsnet_training_loss(
    net: nn.Module,
    diffusion: Diffusion,
    batch: dict[str, torch.Tensor],
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of one ObsNet batch (keys "refmap_obs", "observed", "observed_mask")."""
    mask = batch["observed_mask"]
    stats = log_stats(batch["observed"], mask)
    condition = make_condition(batch["observed"], mask, stats, generator, diffusion.config.observation_noise)
    x0 = stats.normalise(batch["refmap_obs"].float()).clamp(-X0_CLIP, X0_CLIP)
    loss = diffusion.training_loss(net, x0, condition, generator)
    return loss, {"loss": loss.detach()}


@torch.no_grad()
def complete_refmap(
    net: nn.Module,
    diffusion: Diffusion,
    observed: torch.Tensor,
    mask: torch.Tensor,
    steps: int | None = None,
    eta: float | None = None,
    generator: torch.Generator | None = None,
    progress: DDIMProgress | None = None,
) -> torch.Tensor:
    """Complete sparse observed refmaps (B, 3, R, R) with mask (B, 1, R, R) → linear (B, 3, R, R).
    Observed pixels keep their observed values; the holes come from one DDIM sample (``progress``:
    see :data:`DDIMProgress`)."""
    stats = log_stats(observed, mask)
    condition = make_condition(observed, mask, stats, generator)
    sample = stats.denormalise(diffusion.ddim_sample(net, condition, steps, eta, generator, progress))
    return torch.where(mask > 0.5, observed.float(), sample)
