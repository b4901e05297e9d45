"""The diffusion-reflectance-map process (DESIGN.md §3.4): the material schedule, the intensity
normalisation and log transform the networks see, and the IllNet + RefNet training loss.

Schedule: with Δ_K = z_K − z0,

    K   = floor( ln(ε / ‖Δ_K‖) / ln γ ) + 2      (at least 1)
    z_k = z0 + γ^(K−1−k) · Δ_K                   k = K−1 (the observation) … 0 (‖z_0 − z0‖ < ε)

Refmaps (B, 3, R, R) are scaled so that the geometric mean of their luminance over pixels > 0 is
0.12 (the scale is kept and undone at the end), then mapped by T(x) = log10(x + 0.1) + 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from models.config import DRMConfig

LUMINANCE_WEIGHTS = (0.2127, 0.7152, 0.0722)
ILLNET_WEIGHT = 10.0  # loss = 10·L2(residual) + 0.1·(L2(z_k) + L2(z_K)) / 2
REFNET_WEIGHT = 0.1


def mirror_material(config: DRMConfig, like: torch.Tensor) -> torch.Tensor:
    """z0 as a (6,) tensor on ``like``'s device and dtype."""
    return torch.tensor(config.z0, device=like.device, dtype=like.dtype)


def schedule_length(z_K: torch.Tensor, config: DRMConfig) -> torch.Tensor:
    """(B, 6) observed materials → (B,) int64 K, the number of refmaps L_{K−1} … L_0 in the
    process (K − 1 IllNet steps lead from the observation to the mirror)."""
    distance = (z_K - mirror_material(config, z_K)).norm(dim=-1).double()
    # ‖Δ_K‖ = 0 is already the mirror: ln(ε/0) = +inf → K = 1 via the clamp.
    ratio = torch.log(config.eps / distance.clamp_min(1e-300)) / math.log(config.gamma)
    return (torch.floor(ratio) + 2).clamp_min(1).long()


def material_at(z_K: torch.Tensor, k: torch.Tensor, K: torch.Tensor, config: DRMConfig) -> torch.Tensor:
    """z_k = z0 + γ^(K−1−k) (z_K − z0); z_K (B, 6), k and K (B,) → (B, 6)."""
    z0 = mirror_material(config, z_K)
    power = (K - 1 - k).to(z_K.dtype)
    return z0 + (config.gamma**power)[:, None] * (z_K - z0)


def luminance(refmap: torch.Tensor) -> torch.Tensor:
    """(B, 3, R, R) → (B, R, R) Rec. 709 luminance."""
    w = torch.tensor(LUMINANCE_WEIGHTS, device=refmap.device, dtype=refmap.dtype)
    return torch.einsum("bchw,c->bhw", refmap, w)


def intensity_scale(refmap: torch.Tensor, config: DRMConfig) -> torch.Tensor:
    """(B, 3, R, R) → (B,) the factor that brings the geometric mean of the luminance over pixels
    with luminance > 0 to ``config.target_geomean``; 1 for an all-black refmap."""
    lum = luminance(refmap.float()).flatten(1)
    positive = lum > 0
    count = positive.sum(dim=1)
    log_mean = torch.where(positive, torch.log(lum.clamp_min(1e-30)), 0.0).sum(dim=1) / count.clamp_min(1)
    scale = config.target_geomean / torch.exp(log_mean)
    return torch.where(count > 0, scale, torch.ones_like(scale))


def transform(refmap: torch.Tensor) -> torch.Tensor:
    """T(x) = log10(x + 0.1) + 1: the domain the networks see."""
    return torch.log10(refmap + 0.1) + 1.0


def inverse_transform(x: torch.Tensor) -> torch.Tensor:
    """T⁻¹(y) = 10^(y − 1) − 0.1."""
    return torch.pow(10.0, x - 1.0) - 0.1


def to_network(refmap: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Linear refmap (B, 3, R, R) → normalised and transformed, with a per-sample scale (B,)."""
    return transform(refmap * scale[:, None, None, None])


def from_network(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_network`; negative radiance (from sampling noise) is clipped to 0."""
    return inverse_transform(x).clamp_min(0.0) / scale[:, None, None, None]


def dark_weights(target: torch.Tensor, offset: float) -> torch.Tensor:
    """Per-pixel weights that turn a squared error in T (the log of x + 0.1) into one in the log of
    x + ``offset``, to first order: ((x + 0.1) / (x + offset))², x the normalised linear target
    radiance; divided by their mean so the loss keeps its scale. Smaller offsets weigh dark regions
    more (T alone is nearly linear below 0.1, where a log-luminance error is largest)."""
    x = inverse_transform(target.float()).clamp_min(0.0)
    weights = ((x + 0.1) / (x + offset)) ** 2
    return weights / weights.mean()


def drm_loss(
    residual: torch.Tensor | None,
    residual_target: torch.Tensor | None,
    z_k: torch.Tensor,
    z_k_target: torch.Tensor,
    z_K: torch.Tensor,
    z_K_target: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """10·L2(residual) + 0.1·(L2(z_k) + L2(z_K)) / 2, L2 = mean squared error (the residual's
    weighted per pixel by ``weights`` if given; without a ``residual``, RefNet's part alone).
    Returns the total and its parts (detached) for logging."""
    z_k_loss = F.mse_loss(z_k.float(), z_k_target)
    z_K_loss = F.mse_loss(z_K.float(), z_K_target)
    total = REFNET_WEIGHT * (z_k_loss + z_K_loss) / 2
    parts = {}
    if residual is not None:
        if weights is None:
            illnet = F.mse_loss(residual.float(), residual_target)
        else:
            illnet = (weights * (residual.float() - residual_target) ** 2).mean()
        total = ILLNET_WEIGHT * illnet + total
        parts["loss_residual"] = illnet.detach()
    return total, {
        "loss": total.detach(),
        **parts,
        "loss_z_k": z_k_loss.detach(),
        "loss_z_K": z_K_loss.detach(),
    }


def drm_training_loss(
    illnet: torch.nn.Module,
    refnet: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    config: DRMConfig,
    teacher_forcing: bool,
    generator: torch.Generator | None = None,
    loss_offset: float = 0.1,
    illnet_loss: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of one DRMNet batch (keys of a DRMNet sample, see pipeline/reader.py).

    IllNet and RefNet both see L_k + σ·noise ⊕ L_K. IllNet's target is the residual from that
    noisy input to L_{k−1}: the sampler adds δ·noise at every step, so a step must also remove
    the noise in its input, otherwise noise would pile up as δ·√steps. With ``teacher_forcing``
    IllNet is conditioned on the true z_k, else on RefNet's (detached: RefNet learns only from
    its own loss). ``loss_offset`` below 0.1 weighs IllNet's error towards dark pixels
    (:func:`dark_weights`); 0.1 is the plain L2 in T. ``illnet_loss=False`` (RefNet trained
    alone): IllNet is not run and the loss is RefNet's part.
    """
    scale = intensity_scale(batch["refmap_obs"], config)
    observation = to_network(batch["refmap_obs"], scale)
    current = to_network(batch["refmap_k"], scale)
    target = to_network(batch["refmap_next"], scale)
    noise = torch.randn(current.shape, generator=generator, device=current.device)
    noisy = current + config.input_noise * noise
    k, K = batch["k"], batch["K"]

    z_K = refnet(noisy, observation, K - 1 - k)
    z_k = material_at(z_K.float(), k, K, config)
    if not illnet_loss:
        return drm_loss(None, None, z_k, batch["z_k"], z_K, batch["z_obs"])
    condition = batch["z_k"] if teacher_forcing else z_k.detach()
    residual = illnet(noisy, observation, condition - mirror_material(config, condition))
    weights = None if loss_offset == 0.1 else dark_weights(target, loss_offset)
    return drm_loss(residual, target - noisy, z_k, batch["z_k"], z_K, batch["z_obs"], weights)
