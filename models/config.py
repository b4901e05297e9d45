"""Network sizes and process constants as typed, frozen dataclasses.

Field metadata (``ge``, ``gt``, ``le``, ``lt``) bounds the numbers a params.yaml may give them
(checked by pipeline/settings.py before a run starts).

params.yaml holds them as plain data (``profiles.<name>.illnet`` …); :func:`drmnet_config` and
:func:`obsnet_config` turn a profile block into these classes, and ``to_dict``/``from_dict``
round-trip them through the ``config.json`` stored next to every set of weights, so a model
loads from its files alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class UNetConfig:
    """Size of one U-Net (or encoder U-Net)."""

    # base channel count (defaults: the tiny profile)
    channels: int = field(default=8, metadata={"ge": 1})
    # channels per level = channels * multiplier
    multipliers: tuple[int, ...] = field(default=(1, 2, 2), metadata={"ge": 1})
    res_blocks: int = field(default=1, metadata={"ge": 1})  # residual blocks per level
    # feature-map resolutions (pixels) with self-attention
    attention: tuple[int, ...] = field(default=(8,), metadata={"ge": 1})
    # channels per attention head (fewer channels → one head)
    head_channels: int = field(default=32, metadata={"ge": 1})
    dropout: float = field(default=0.0, metadata={"ge": 0, "lt": 1})

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

    # z_k = z0 + gamma^(K-1-k) (z_K - z0)
    gamma: float = field(default=0.95, metadata={"gt": 0, "lt": 1})
    eps: float = field(default=0.01, metadata={"gt": 0})  # a sample stops once ||z_k - z0|| < eps
    # the perfect mirror
    z0: tuple[float, float, float, float, float, float] = field(
        default=(1.0, 1.0, 1.0, 1.0, 0.0, 1.0), metadata={"ge": 0, "le": 1}
    )
    # sigma: noise on IllNet's input L_k in training (T domain)
    input_noise: float = field(default=0.02, metadata={"ge": 0})
    # delta: noise added at every sampling step (T domain)
    sampling_noise: float = field(default=0.025, metadata={"ge": 0})
    # a sample never takes more IllNet steps than this
    max_steps: int = field(default=150, metadata={"ge": 1})
    # geometric mean of luminance after intensity normalisation
    target_geomean: float = field(default=0.12, metadata={"gt": 0})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DRMConfig:
        data = dict(data)
        if "z0" in data:
            data["z0"] = tuple(float(v) for v in data["z0"])
        return cls(**data)


@dataclass(frozen=True)
class DiffusionConfig:
    """ObsNet's conditional DDPM (DESIGN.md §3.4)."""

    steps: int = field(default=1000, metadata={"ge": 1})  # training timesteps
    # betas linear in sqrt-space from beta_start to beta_end
    beta_start: float = field(default=1e-4, metadata={"gt": 0, "lt": 1})
    beta_end: float = field(default=0.09, metadata={"gt": 0, "lt": 1})
    sampling_steps: int = field(default=50, metadata={"ge": 1})  # DDIM steps at inference
    # DDIM stochasticity (0 = deterministic DDIM, 1 = DDPM-like)
    eta: float = field(default=0.0, metadata={"ge": 0, "le": 1})
    # noise on the normalised observation in training
    observation_noise: float = field(default=0.04, metadata={"ge": 0})
    # what the network predicts: "eps" (noise, the paper) or "v" (velocity)
    prediction: Literal["eps", "v"] = "eps"

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
