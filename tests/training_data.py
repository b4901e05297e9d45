"""Small in-memory training sets for the training and registry tests, rendered with Mitsuba
(rendering.refmap.render_refmaps) under a procedural envmap: a few bright Gaussian blobs on a sky
gradient. Samples carry exactly the keys of pipeline/reader.py's batches."""

from __future__ import annotations

import numpy as np
import torch

from models.config import DRMConfig
from models.drm import material_at, schedule_length
from rendering.envmap import pixel_directions
from rendering.principled import MIRROR
from rendering.refmap import render_refmaps

Sample = dict[str, torch.Tensor]


def blob_envmap(height: int = 32, seed: int = 0, blobs: int = 3) -> np.ndarray:
    """(H, 2H, 3) float32: a blue-to-white sky gradient plus ``blobs`` bright coloured lights."""
    rng = np.random.default_rng(seed)
    d = pixel_directions(height)
    up = d[..., 1:2]
    envmap = np.where(up > 0, 0.3 + 0.5 * up * np.array([0.6, 0.8, 1.0]), 0.15 * np.array([0.8, 0.7, 0.6]))
    for _ in range(blobs):
        centre = rng.normal(size=3)
        centre[2] = abs(centre[2]) + 0.5  # in front of the sphere, where refmaps see it best
        centre /= np.linalg.norm(centre)
        colour = rng.uniform(0.3, 1.0, 3) * rng.uniform(10.0, 40.0)
        envmap = envmap + colour * np.exp((d @ centre - 1.0) / 0.02)[..., None]
    return envmap.astype(np.float32)


def drmnet_trajectories(
    envmap: np.ndarray,
    z_obs: np.ndarray,
    res: int,
    spp: int = 16,
    seed: int = 0,
    drm: DRMConfig | None = None,
) -> list[Sample]:
    """Every (L_k, L_{k−1}) pair, k = K−1 … 1, of the DRM process of each observed material z_obs
    (n, 6), as DRMNet samples (each observation seen from its own view azimuth)."""
    drm = drm or DRMConfig()
    samples = []
    for j, z in enumerate(np.asarray(z_obs, dtype=np.float32)):
        z_K = torch.from_numpy(z)[None]
        K = int(schedule_length(z_K, drm)[0])
        ks = torch.arange(K - 1, -1, -1)  # K−1 (the observation) … 0
        materials = material_at(z_K.expand(K, 6), ks, torch.full((K,), K), drm).numpy()
        materials = np.concatenate([materials, MIRROR[None]]).clip(0, 1)
        azimuth = 0.7 * j
        azimuths = np.full(len(materials), azimuth)
        refmaps = torch.from_numpy(render_refmaps(envmap, materials, azimuths, res, spp, seed))
        for i in range(K - 1):  # refmaps[i] is L_k with k = K−1−i; refmaps[i + 1] is L_{k−1}
            samples.append(
                {
                    "refmap_obs": refmaps[0],
                    "refmap_k": refmaps[i],
                    "refmap_next": refmaps[i + 1],
                    "refmap_mirror": refmaps[-1],
                    "z_obs": z_K[0],
                    "z_k": torch.from_numpy(materials[i]),
                    "z_next": torch.from_numpy(materials[i + 1]),
                    "k": torch.tensor(K - 1 - i),
                    "K": torch.tensor(K),
                    "view_azimuth": torch.tensor(azimuth, dtype=torch.float32),
                }
            )
    return samples


def observation_mask(res: int, seed: int) -> torch.Tensor:
    """(1, R, R) float32 in {0, 1}: a random elliptical patch of normals, like an object shows."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:res, 0:res] / res - 0.5
    cy, cx = rng.uniform(-0.15, 0.15, 2)
    ry, rx = rng.uniform(0.25, 0.4, 2)
    inside = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1.0
    return torch.from_numpy(inside.astype(np.float32))[None]


def obsnet_samples(
    envmap: np.ndarray, z_obs: np.ndarray, res: int, spp: int = 16, seed: int = 0
) -> list[Sample]:
    """ObsNet samples: full refmaps of materials z_obs (n, 6), sparse observations and masks."""
    refmaps = torch.from_numpy(render_refmaps(envmap, np.asarray(z_obs, np.float32), None, res, spp, seed))
    samples = []
    for j, refmap in enumerate(refmaps):
        mask = observation_mask(res, seed + j)
        samples.append({"refmap_obs": refmap, "observed": refmap * mask, "observed_mask": mask})
    return samples


def batches(samples: list[Sample], batch_size: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """One epoch of batches in a fixed shuffled order (deterministic for a given seed)."""
    order = np.random.default_rng(seed).permutation(len(samples))
    out = []
    for start in range(0, len(order), batch_size):
        chosen = [samples[i] for i in order[start : start + batch_size]]
        out.append({key: torch.stack([s[key] for s in chosen]) for key in chosen[0]})
    return out
