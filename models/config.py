"""Network sizes and process constants as typed, frozen dataclasses.

params.yaml holds them as plain data (``profiles.<name>.illnet`` …); :func:`drmnet_config` and
:func:`obsnet_config` turn a profile block into these classes, and ``to_dict``/``from_dict``
round-trip them through the ``config.json`` stored next to every set of weights, so a model
loads from its files alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class UNetConfig:
    """Size of one U-Net (or encoder U-Net)."""

    channels: int = 8  # base channel count (defaults: the tiny profile)
    multipliers: tuple[int, ...] = (1, 2, 2)  # channels per level = channels * multiplier
    res_blocks: int = 1  # residual blocks per level
    attention: tuple[int, ...] = (8,)  # feature-map resolutions (pixels) with self-attention
    head_channels: int = 32  # channels per attention head (fewer channels → one head)
    dropout: float = 0.0

    @property
    def emb_channels(self) -> int:
        """Width of the per-block embedding (4 × base channels, as in DDPM U-Nets)."""
        return 4 * self.channels

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        return cls(
            channels=int(data["channels"]),
            multipliers=tuple(int(m) for m in data["multipliers"]),
            res_blocks=int(data["res_blocks"]),
            attention=tuple(int(a) for a in data.get("attention", ())),
            head_channels=int(data.get("head_channels", 32)),
            dropout=float(data.get("dropout", 0.0)),
        )


@dataclass(frozen=True)
class DRMConfig:
    """Constants of the diffusion-reflectance-map process (DESIGN.md §3.4)."""

    gamma: float = 0.95  # z_k = z0 + gamma^(K-1-k) (z_K - z0)
    eps: float = 0.01  # a sample stops once ||z_k - z0|| < eps
    z0: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 0.0, 1.0)  # the perfect mirror
    input_noise: float = 0.02  # sigma: noise on IllNet's input L_k in training (T domain)
    sampling_noise: float = 0.025  # delta: noise added at every sampling step (T domain)
    max_steps: int = 150  # a sample never takes more IllNet steps than this
    target_geomean: float = 0.12  # geometric mean of luminance after intensity normalisation

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DRMConfig:
        data = dict(data)
        if "z0" in data:
            data["z0"] = tuple(float(v) for v in data["z0"])
        return cls(**data)


@dataclass(frozen=True)
class DiffusionConfig:
    """ObsNet's conditional DDPM (DESIGN.md §3.4)."""

    steps: int = 1000  # training timesteps
    beta_start: float = 1e-4  # betas are linear in sqrt-space from beta_start to beta_end
    beta_end: float = 0.09
    sampling_steps: int = 50  # DDIM steps at inference
    eta: float = 0.0  # DDIM stochasticity (0 = deterministic DDIM, 1 = DDPM-like)
    observation_noise: float = 0.04  # noise on the normalised observation in training
    prediction: str = "eps"  # what the network predicts: "eps" (noise, the paper) or "v" (velocity)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiffusionConfig:
        return cls(**data)


@dataclass(frozen=True)
class DRMNetConfig:
    """IllNet + RefNet for one refmap resolution."""

    resolution: int = 32
    illnet: UNetConfig = field(default_factory=UNetConfig)
    refnet: UNetConfig = field(default_factory=UNetConfig)
    drm: DRMConfig = field(default_factory=DRMConfig)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "drmnet", **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DRMNetConfig:
        return cls(
            resolution=int(data["resolution"]),
            illnet=UNetConfig.from_dict(data["illnet"]),
            refnet=UNetConfig.from_dict(data["refnet"]),
            drm=DRMConfig.from_dict(data.get("drm", {})),
        )


@dataclass(frozen=True)
class ObsNetConfig:
    """ObsNet's U-Net and diffusion process for one refmap resolution."""

    resolution: int = 32
    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "obsnet", **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ObsNetConfig:
        return cls(
            resolution=int(data["resolution"]),
            unet=UNetConfig.from_dict(data["unet"]),
            diffusion=DiffusionConfig.from_dict(data.get("diffusion", {})),
        )


def drmnet_config(profile: dict[str, Any], drm: dict[str, Any] | None = None) -> DRMNetConfig:
    """DRMNetConfig from a params.yaml profile block (``refmap_res``, ``illnet``, ``refnet``)."""
    return DRMNetConfig(
        resolution=int(profile["refmap_res"]),
        illnet=UNetConfig.from_dict(profile["illnet"]),
        refnet=UNetConfig.from_dict(profile["refnet"]),
        drm=DRMConfig.from_dict(drm or {}),
    )


def obsnet_config(profile: dict[str, Any], diffusion: dict[str, Any] | None = None) -> ObsNetConfig:
    """ObsNetConfig from a params.yaml profile block (``refmap_res``, ``obsnet``)."""
    return ObsNetConfig(
        resolution=int(profile["refmap_res"]),
        unet=UNetConfig.from_dict(profile["obsnet"]),
        diffusion=DiffusionConfig.from_dict(diffusion or {}),
    )


def config_from_dict(data: dict[str, Any]) -> DRMNetConfig | ObsNetConfig:
    """Either config from its ``to_dict`` form (dispatch on ``kind``)."""
    kinds = {"drmnet": DRMNetConfig, "obsnet": ObsNetConfig}
    kind = data.get("kind")
    if kind not in kinds:
        raise ValueError(f"config has kind {kind!r}; expected one of {sorted(kinds)}")
    return kinds[kind].from_dict(data)
