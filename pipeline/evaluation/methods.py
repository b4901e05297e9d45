"""The methods every test sample is scored for: DRMNet's samples and their mean, the baselines
computed from the observation alone, and the oracle (see :mod:`pipeline.evaluation`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.estimate import Estimation

METHODS = ("drmnet", "drmnet_mean", "observed_mirror", "completed_mirror", "constant_mean", "oracle")
PRIOR_MEAN_MATERIAL = np.full(6, 0.5, dtype=np.float32)  # the mean of z ~ U[0, 1]^6


@dataclass
class MethodOutput:
    """What a method estimated for one test sample (camera frame, the observation's units)."""

    envmaps: np.ndarray  # (K, H, 2H, 3); K = N for drmnet, 1 otherwise
    mirrors: np.ndarray  # (K, 3, R, R)
    materials: np.ndarray  # (K, 6)


def mirror_output(mirror: np.ndarray, height: int, material: np.ndarray) -> MethodOutput:
    """A method whose answer is the mirror refmap (3, R, R) itself: its envmap is the mirror →
    envmap conversion every method's envmap goes through."""
    from rendering.refmap import mirror_to_envmap

    mirror = np.asarray(mirror, np.float32)
    envmap, _ = mirror_to_envmap(mirror, height)
    return MethodOutput(envmap[None], mirror[None], np.asarray(material, np.float32)[None])


def baseline_outputs(
    estimation: Estimation,
    height: int,
    truth_mirror: np.ndarray | None = None,
    truth_z: np.ndarray | None = None,
) -> dict[str, MethodOutput]:
    """The baselines, computed from the observed refmap (and ObsNet's completions) alone, and,
    given the true mirror refmap and material, the oracle."""
    from rendering.principled import MIRROR
    from rendering.refmap import envmap_to_mirror

    observed, seen = estimation.observed, estimation.observed_mask
    mean_colour = observed[:, seen].mean(axis=1)  # (3,)
    filled = np.where(seen[None], observed, mean_colour[:, None, None]).astype(np.float32)
    constant = np.broadcast_to(mean_colour, (height, 2 * height, 3)).astype(np.float32)
    res = observed.shape[1]
    outputs = {
        "observed_mirror": mirror_output(filled, height, MIRROR),
        "completed_mirror": mirror_output(estimation.completed.mean(axis=0), height, MIRROR),
        "constant_mean": MethodOutput(
            constant[None], envmap_to_mirror(constant, res)[None], PRIOR_MEAN_MATERIAL[None]
        ),
    }
    if truth_mirror is not None and truth_z is not None:
        outputs["oracle"] = mirror_output(truth_mirror, height, np.asarray(truth_z, np.float32))
    return outputs


def method_outputs(
    estimation: Estimation, baselines: tuple[str, ...], truth: dict[str, Any] | None = None
) -> dict[str, MethodOutput]:
    """Every method's answer for one sample, in :data:`METHODS` order (the chosen baselines only;
    the oracle needs ``truth``'s ``mirror`` and ``z``)."""
    outputs = {
        "drmnet": MethodOutput(estimation.envmaps, estimation.mirrors, estimation.materials),
        "drmnet_mean": MethodOutput(
            estimation.envmap_mean[None],
            estimation.mirrors.mean(axis=0)[None],
            estimation.materials.mean(axis=0)[None],
        ),
    }
    truth = truth or {}
    all_baselines = baseline_outputs(
        estimation, estimation.envmaps.shape[1], truth.get("mirror"), truth.get("z")
    )
    outputs.update({name: all_baselines[name] for name in baselines if name in all_baselines})
    return outputs
