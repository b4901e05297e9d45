"""Estimation from an object image: image → observed refmap → ObsNet completion → DRMNet, N
stochastic samples in one batch → per sample a mirror refmap, an environment map and a material.

The networks (:class:`models.estimator.Estimator`) see intensity-normalised refmaps and hand back
refmaps in the observation's own scale, so every envmap written here is in the input image's
units. The envmap of a sample is its mirror refmap unwarped by
:func:`rendering.refmap.mirror_to_envmap`, in the camera frame (DESIGN.md §3.2: the envmap's
centre column is the direction toward the camera); the directions behind the object are not
seen by any mirror-refmap pixel and are marked invalid.

Files written by :func:`write_estimation` (``--out DIR``)::

    observed.exr / observed.png        the observed refmap (3, R, R) as an image (0 = unobserved)
    observed_mask.png                  which refmap pixels the object shows
    sample_<i>/mirror.exr              the estimated mirror refmap
    sample_<i>/completed.exr           the completed observation the DRM process started from
    sample_<i>/envmap.exr / .png       the environment map (H, 2H, 3) and its preview
    sample_<i>/material.json           z (6,) named, DRM steps, converged
    sample_<i>/material_sphere.png     a sphere of material z under the sample's envmap
    envmap_valid.png                   where the envmaps are determined (shared by all samples)
    envmap_mean.exr / envmap_std.exr   per-pixel mean and standard deviation over the samples
    envmap_mean.png / envmap_std.png   their previews
    overview.png + overview.json       everything on one page, and the legend of its tiles
    estimate.json                      inputs, settings and the materials, for scripts
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fileio.atomic import atomic_write_bytes
from pipeline.settings import EstimateSettings
from rendering.errors import InputError
from rendering.principled import MATERIAL_NAMES


@dataclass
class Estimation:
    """N samples estimated from one observation, in the observation's units (camera frame)."""

    observed: np.ndarray  # (3, R, R) the observed refmap, 0 where unobserved
    observed_mask: np.ndarray  # (R, R) bool
    completed: np.ndarray  # (N, 3, R, R) the completed observation each sample started from
    mirrors: np.ndarray  # (N, 3, R, R) estimated mirror refmaps
    materials: np.ndarray  # (N, 6) estimated material vectors z
    envmaps: np.ndarray  # (N, H, 2H, 3) environment maps from the mirror refmaps
    valid: np.ndarray  # (H, 2H) bool, where the envmaps are determined
    steps: np.ndarray  # (N,) DRM steps taken
    converged: np.ndarray  # (N,) bool, stopped by ε rather than by max_steps

    @property
    def envmap_mean(self) -> np.ndarray:
        """(H, 2H, 3) per-pixel mean over the samples."""
        return self.envmaps.mean(axis=0)

    @property
    def envmap_std(self) -> np.ndarray:
        """(H, 2H, 3) per-pixel standard deviation over the samples: the estimate's uncertainty."""
        return self.envmaps.std(axis=0)


def check_light(observed: np.ndarray, observed_mask: np.ndarray, source: object) -> None:
    """Refuse an observation without light: fewer lit bins (luminance > 0) in the observed refmap
    (3, R, R) than the coverage an observation needs (rendering/observation.py). Black pixels say
    nothing about the light or the material: the networks' intensity normalisation would turn
    them into an invented answer."""
    from rendering.hdrio import luminance
    from rendering.observation import MIN_OBSERVED_BINS, MIN_OBSERVED_FRACTION

    res = observed.shape[-1]
    needed = max(MIN_OBSERVED_BINS, int(np.ceil(MIN_OBSERVED_FRACTION * res * res)))
    lit = int(((luminance(observed, axis=0) > 0) & observed_mask).sum())
    if lit < needed:
        raise InputError(
            source,
            f"has no light to estimate from: {lit} of the {int(observed_mask.sum())} observed refmap bins "
            f"are lit (need ≥ {needed}); the object is black in the image (exposure, mask or wrong file?)",
        )


def estimate_refmap(
    estimator,
    observed: np.ndarray,
    observed_mask: np.ndarray,
    settings: EstimateSettings = EstimateSettings(),
    progress: bool = False,
    material: np.ndarray | None = None,
) -> Estimation:
    """Run ObsNet (when pixels are unobserved) and DRMNet on one observed refmap (3, R, R) with its
    mask (R, R) bool; ``settings.samples`` samples in one batch. ``progress`` shows a rich
    progress bar over the sampling steps. ``material``: the object's material z (6,) when it is
    known (checked by the caller, e.g. ``rendering.principled.parse_material``): RefNet is not
    run and every sample keeps it."""
    import torch

    from rendering.refmap import mirror_to_envmap

    observed = np.asarray(observed, dtype=np.float32)
    observed_mask = np.asarray(observed_mask, dtype=bool)
    if observed.shape[1:] != (estimator.resolution, estimator.resolution):
        raise InputError(
            "observed refmap",
            f"is {observed.shape[1]}×{observed.shape[2]}; the model expects R = {estimator.resolution}",
        )
    check_light(observed, observed_mask, "observed refmap")
    partial = not observed_mask.all()
    if partial and estimator.obsnet is None:
        raise InputError(
            "--obsnet",
            "the object does not show every normal, so the observation must be completed: give an ObsNet",
        )
    sampling_steps = 0
    if partial:  # ObsNet's DDIM steps: the settings', else the model's own
        sampling_steps = settings.sampling_steps or estimator.obsnet_config.diffusion.sampling_steps
    drm_steps = (
        settings.max_steps if settings.max_steps is not None else estimator.drmnet_config.drm.max_steps
    )

    with _progress_bar(progress, sampling_steps, drm_steps, settings.samples) as (ddim_cb, drm_cb):
        result = estimator.estimate(
            torch.from_numpy(observed),
            torch.from_numpy(observed_mask.astype(np.float32)) if partial else None,
            num_samples=settings.samples,
            seed=settings.seed,
            max_steps=settings.max_steps,
            sampling_steps=settings.sampling_steps,
            ddim_progress=ddim_cb,
            drm_progress=drm_cb,
            material=None if material is None else torch.from_numpy(np.asarray(material, np.float32)),
        )
    mirrors = result.mirror[0].cpu().numpy().astype(np.float32)
    envmaps, valid = [], None
    for mirror in mirrors:
        envmap, valid = mirror_to_envmap(mirror, settings.envmap_height)
        envmaps.append(envmap)
    return Estimation(
        observed=observed,
        observed_mask=observed_mask,
        completed=result.completed[0].cpu().numpy().astype(np.float32),
        mirrors=mirrors,
        materials=result.material[0].cpu().numpy().clip(0.0, 1.0).astype(np.float32),
        envmaps=np.stack(envmaps).astype(np.float32),
        valid=np.asarray(valid, dtype=bool),
        steps=result.steps[0].cpu().numpy(),
        converged=result.converged[0].cpu().numpy(),
    )


@contextmanager
def _progress_bar(enabled: bool, sampling_steps: int, drm_steps: int, samples: int):
    """A rich progress bar over ObsNet's ``sampling_steps`` (0: no completion) and then at most
    ``drm_steps`` DRM steps, showing how many of the ``samples`` are still running. Yields the
    callbacks of the two samplers, (DDIMProgress, DRMProgress), or (None, None) when disabled."""
    if not enabled:
        yield None, None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[running]}"),
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task(
            "completing" if sampling_steps else "sampling", total=sampling_steps + drm_steps, running=""
        )

        def ddim(step: int, steps: int) -> None:
            bar.update(task, completed=step)

        def drm(step: int, max_steps: int, running: int) -> None:
            # A DRM run ends early once every sample has converged: the bar then stops short.
            bar.update(
                task,
                description="sampling",
                completed=sampling_steps + step,
                running=f"{running}/{samples} samples running",
            )

        yield ddim, drm


def estimate_image(
    estimator,
    image: np.ndarray,
    normals: np.ndarray,
    mask: np.ndarray,
    settings: EstimateSettings = EstimateSettings(),
    sources: tuple[object, object, object] = ("image", "normals", "mask"),
    progress: bool = False,
    repair: bool = False,
    material: np.ndarray | None = None,
) -> Estimation:
    """An object image (H, W, 3) with its camera-frame normals (H, W, 3) and mask (H, W) bool →
    :class:`Estimation`. The checks and repairs of :func:`rendering.observation.image_to_refmap`
    apply (``settings.erode``; ``repair``: fill NaN/Inf pixels inside the mask instead of refusing);
    ``material`` as in :func:`estimate_refmap`."""
    from rendering.observation import image_to_refmap

    observed, observed_mask = image_to_refmap(
        image,
        normals,
        mask,
        refmap_res=estimator.resolution,
        erode=settings.erode,
        sources=sources,
        repair=repair,
    )
    check_light(observed, observed_mask, sources[0])
    return estimate_refmap(estimator, observed, observed_mask, settings, progress, material)


def estimate_files(
    estimator,
    image_path: str | os.PathLike,
    normals_path: str | os.PathLike,
    mask_path: str | os.PathLike | None = None,
    settings: EstimateSettings = EstimateSettings(),
    progress: bool = False,
    repair: bool = False,
    material: np.ndarray | None = None,
) -> tuple[Estimation, np.ndarray, np.ndarray]:
    """Read the observation files (checked, warnings and errors name the file) and estimate;
    ``repair`` and ``material`` as in :func:`estimate_image`. Returns (estimation, image (H, W, 3),
    mask (H, W))."""
    from rendering.observation import load_observation_files

    image_path = Path(image_path)
    if image_path.suffix.lower() == ".png":
        raise InputError(
            image_path,
            "is an 8-bit display (LDR) PNG: its highlights are clipped and its values gamma-encoded, so the "
            "light cannot be recovered; give the linear HDR image (.exr or .hdr)",
        )
    image, normals, mask = load_observation_files(image_path, normals_path, mask_path)
    sources = (image_path, normals_path, mask_path if mask_path is not None else f"{normals_path} (mask)")
    estimation = estimate_image(
        estimator, image, normals, mask, settings, sources, progress, repair, material
    )
    return estimation, image, mask


def material_sphere(
    envmap: np.ndarray, z: np.ndarray, sphere_res: int = 64, spp: int = 64, seed: int = 0
) -> np.ndarray:
    """A sphere of material z (6,) under ``envmap``, seen from the camera: (R, R, 3) with
    R = ``sphere_res``, 0 outside."""
    from rendering.refmap import render_refmaps
    from rendering.spheres import refmap_to_sphere

    refmap = render_refmaps(
        envmap, np.asarray(z, np.float32)[None], refmap_res=sphere_res, spp=spp, seed=seed
    )[0]
    return refmap_to_sphere(refmap, sphere_res)[0]


def refmap_image(refmap: np.ndarray) -> np.ndarray:
    """(3, R, R) → (R, R, 3), the channels-last layout of image files."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(refmap, np.float32), 0, -1))


# -- files ---------------------------------------------------------------------------------------


def write_estimation(
    estimation: Estimation,
    out_dir: str | os.PathLike,
    image: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    settings: EstimateSettings = EstimateSettings(),
    inputs: dict[str, Any] | None = None,
) -> list[Path]:
    """Write the files listed in the module docstring into ``out_dir``; returns their paths.
    ``estimate.json`` is written last, so a directory that has it is complete."""
    import shutil

    from rendering.hdrio import preview_exposure, write_exr, write_png, write_preview

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Until estimate.json is rewritten the directory must not look complete, nor keep the
    # samples of an earlier run with a larger N.
    (out / "estimate.json").unlink(missing_ok=True)
    for stale in out.glob("sample_*"):
        index = stale.name.removeprefix("sample_")
        if stale.is_dir() and index.isdigit() and int(index) >= len(estimation.mirrors):
            shutil.rmtree(stale)
    written: list[Path] = []
    exposure = preview_exposure(estimation.envmap_mean)  # one exposure: samples compare by eye
    written.append(write_exr(out / "observed.exr", refmap_image(estimation.observed)))
    written.append(write_preview(out / "observed.png", refmap_image(estimation.observed)))
    written.append(write_png(out / "observed_mask.png", _mask_png(estimation.observed_mask)))
    written.append(write_png(out / "envmap_valid.png", _mask_png(estimation.valid)))
    spheres = []
    for i in range(len(estimation.mirrors)):
        sample_dir = out / f"sample_{i}"
        written.append(write_exr(sample_dir / "mirror.exr", refmap_image(estimation.mirrors[i])))
        written.append(write_exr(sample_dir / "completed.exr", refmap_image(estimation.completed[i])))
        written.append(write_exr(sample_dir / "envmap.exr", estimation.envmaps[i]))
        written.append(write_preview(sample_dir / "envmap.png", estimation.envmaps[i], exposure))
        sphere = material_sphere(
            estimation.envmaps[i], estimation.materials[i], settings.sphere_res, settings.sphere_spp
        )
        spheres.append(sphere)
        written.append(write_preview(sample_dir / "material_sphere.png", sphere))
        written.append(
            atomic_write_bytes(sample_dir / "material.json", _json(_material_record(estimation, i)))
        )
    written.append(write_exr(out / "envmap_mean.exr", estimation.envmap_mean))
    written.append(write_exr(out / "envmap_std.exr", estimation.envmap_std))
    written.append(write_preview(out / "envmap_mean.png", estimation.envmap_mean, exposure))
    written.append(write_preview(out / "envmap_std.png", estimation.envmap_std, exposure))
    canvas, legend = overview(estimation, spheres, image, mask, exposure)
    written.append(write_png(out / "overview.png", canvas))
    written.append(atomic_write_bytes(out / "overview.json", _json(legend)))
    summary = {
        "inputs": inputs or {},
        "settings": settings.__dict__,
        "resolution": int(estimation.observed.shape[1]),
        "observed_fraction": float(estimation.observed_mask.mean()),
        "envmap_height": int(estimation.envmaps.shape[1]),
        "samples": [_material_record(estimation, i) for i in range(len(estimation.mirrors))],
    }
    written.append(atomic_write_bytes(out / "estimate.json", _json(summary)))
    return written


def _material_record(estimation: Estimation, i: int) -> dict[str, Any]:
    z = [float(v) for v in estimation.materials[i]]
    return {
        "z": z,
        "material": dict(zip(MATERIAL_NAMES, z, strict=True)),
        "drm_steps": int(estimation.steps[i]),
        "converged": bool(estimation.converged[i]),
    }


def _json(data: Any) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode()


def _mask_png(mask: np.ndarray) -> np.ndarray:
    return np.where(np.asarray(mask, bool), 255, 0).astype(np.uint8)


# -- the one-page overview -----------------------------------------------------------------------

TILE = 128  # height of one tile of the overview, pixels
GAP = 6
LABEL = 14  # height of the label strip above each tile


def _resize(image: np.ndarray, height: int) -> np.ndarray:
    """Nearest-neighbour resize of a uint8 (h, w, 3) image to the given height (aspect kept)."""
    h, w = image.shape[:2]
    width = max(1, round(w * height / h))
    rows = (np.arange(height) * h // height).clip(0, h - 1)
    cols = (np.arange(width) * w // width).clip(0, w - 1)
    return image[rows][:, cols]


def overview(
    estimation: Estimation,
    spheres: list[np.ndarray],
    image: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    exposure: float | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Compose the one-page summary: uint8 (H, W, 3) and its legend ``{"tiles": [{label, x, y, w,
    h}]}``. Rows: input image, observed refmap, completed refmap (sample 0); the samples'
    envmaps; mean and std envmaps; the samples' material spheres."""
    from rendering.hdrio import tonemap

    observed = refmap_image(estimation.observed)
    refmap_exposure = 1.0 / max(float(np.percentile(observed[estimation.observed_mask], 99)), 1e-12)
    rows: list[list[tuple[str, np.ndarray]]] = [[]]
    if image is not None:
        shown = image * (mask[..., None] if mask is not None else 1.0)
        rows[0].append(("input image", tonemap(shown)))
    rows[0].append(("observed refmap", tonemap(observed, refmap_exposure)))
    rows[0].append(("completed (sample 0)", tonemap(refmap_image(estimation.completed[0]), refmap_exposure)))
    rows[0].append(("mirror (sample 0)", tonemap(refmap_image(estimation.mirrors[0]), refmap_exposure)))
    envmaps = [(f"envmap sample {i}", tonemap(e, exposure)) for i, e in enumerate(estimation.envmaps)]
    rows += [envmaps[i : i + 4] for i in range(0, len(envmaps), 4)]
    rows.append(
        [
            ("envmap mean", tonemap(estimation.envmap_mean, exposure)),
            ("envmap std (same exposure)", tonemap(estimation.envmap_std, exposure)),
            ("valid region", np.repeat(_mask_png(estimation.valid)[..., None], 3, axis=2)),
        ]
    )
    rows.append([(f"material sample {i}", tonemap(s)) for i, s in enumerate(spheres)])

    placed: list[tuple[str, np.ndarray, int, int]] = []
    width, y = 0, GAP
    for row in rows:
        x = GAP
        for label, tile in row:
            tile = _resize(tile, TILE)
            placed.append((label, tile, x, y + LABEL))
            x += tile.shape[1] + GAP
        width = max(width, x)
        y += LABEL + TILE + GAP
    canvas = np.full((y, width, 3), 255, dtype=np.uint8)
    for _, tile, x, y0 in placed:
        canvas[y0 : y0 + TILE, x : x + tile.shape[1]] = tile
    tiles = [
        {"label": label, "x": x, "y": y0, "w": int(tile.shape[1]), "h": TILE} for label, tile, x, y0 in placed
    ]
    return _draw_labels(canvas, tiles), {"tiles": tiles}


def _draw_labels(canvas: np.ndarray, tiles: list[dict[str, Any]]) -> np.ndarray:
    """Write each tile's label in the strip above it (Pillow's built-in bitmap font; Pillow comes
    with MLflow's matplotlib)."""
    from PIL import Image, ImageDraw

    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    for tile in tiles:
        draw.text((tile["x"], tile["y"] - LABEL + 1), tile["label"], fill=(0, 0, 0))
    return np.array(picture, dtype=np.uint8)
