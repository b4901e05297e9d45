"""Image → observed reflectance map: bin an object's pixels by their surface normal.

An object of known geometry seen along −z shows, at each pixel, the radiance reflected toward the
viewer by a surface point with normal ``n``. A refmap (DESIGN.md §3.1) is exactly that quantity on
a latitude–longitude grid of normals, so the observation is the image re-indexed by normal:

    el = asin(n_y),  az = atan2(n_x, n_z)
    row = floor((π/2 − el) / π · R),  col = floor((az + π/2) / π · R)

Each refmap pixel (bin) holds the per-channel MEDIAN of the image pixels whose normals fall in it
(robust to the few pixels at creases, specks and silhouette mix-ups); bins no pixel reaches stay 0
and ``observed`` is False there. The conversion assumes an orthographic view (the view direction
is +z at every pixel), as the refmap itself does.

Normal maps as other tools write them (the paper's own sample, a 256² bunny, among them) are not
clean unit vectors: an anti-aliased silhouette averages the normal with the zero background (short
normals, down to ~0), holes read as zero normals, and noisy estimates face away from the camera.
Like the paper's reference code (which keeps mask ∧ ‖n‖ > 0.5 and erodes its boundary), the pixels
used are chosen in this order:

1. **near-zero normals** — ‖n‖ < ``MIN_NORMAL_LENGTH`` (0.5): the pixel leaves the mask;
2. **boundary** — the rest of the mask is eroded ``erode`` times with a 3×3 square (default
   ``DEFAULT_ERODE`` = 1 pixel; ``estimate.erode`` / ``--erode``): silhouette pixels mix object and
   background, and their normals are the least reliable;
3. **facing away** — n_z ≤ 0 in the camera frame (x right, y up, z toward the viewer): not seen
   from the camera, the pixel leaves the mask;
4. every other normal is **renormalised** to unit length.

When a rule removes a pixel or a normal's length is off by more than ``NORMAL_TOLERANCE`` (0.01),
ONE warning names the normals file and gives the count of each rule. Refused (InputError naming the
file and the problem) is only what cannot be a normal map of the masked object: NaN/Inf normals
inside the mask, a shape that does not match the image, or more than ``MAX_INVALID_FRACTION``
(50 %) of the mask removed by rules 1 and 3 (a normal map in another frame, a mask of another
image). The mask must keep at least ``MIN_OBSERVED_FRACTION`` of the R² bins.

The image follows the project's HDR input policy (:func:`rendering.radiance.clean_radiance`),
applied within the mask (pixels outside it are set to 0 first: they are never binned): negative
pixels are clamped or redistributed with one warning, NaN/Inf inside the mask are an error unless
``repair`` (``--repair``) fills them with their neighbours' mean, and an image whose negative
energy is too large to be radiance is refused. Linear HDR is required: an 8-bit image passed as an
array is refused (its encoding is unknown); an 8-bit/16-bit PNG *file* is accepted by
:func:`load_observation_files` with a warning and decoded with the sRGB transfer curve (clipped
highlights then make the observation unreliable); a float image whose values are all multiples of
1/255 in [0, 1] is a display image saved as HDR and is refused.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from rendering.errors import InputError

NORMAL_TOLERANCE = 0.01  # | ‖n‖ − 1 | beyond this is reported when the normal is renormalised
MIN_NORMAL_LENGTH = 0.5  # shorter normals (anti-aliased edges, holes) leave the mask
MAX_INVALID_FRACTION = 0.5  # more of the mask with near-zero or back-facing normals is refused
DEFAULT_ERODE = 1  # 3×3 erosions of the mask's boundary before binning
MIN_OBSERVED_FRACTION = 0.01  # fewer observed bins than this fraction of R² is refused
MIN_OBSERVED_BINS = 4


class LDRImageWarning(UserWarning):
    """An 8-bit display image was used as an observation: highlights are clipped, values decoded."""


def erode_mask(mask: np.ndarray, iterations: int = 1) -> np.ndarray:
    """Binary erosion with a 3×3 square, ``iterations`` times; pixels outside the image count as
    outside the mask. (H, W) bool → (H, W) bool."""
    mask = np.asarray(mask, dtype=bool)
    for _ in range(iterations):
        padded = np.pad(mask, 1, constant_values=False)
        height, width = mask.shape
        out = np.ones_like(mask)
        for dy in range(3):
            for dx in range(3):
                out &= padded[dy : dy + height, dx : dx + width]
        mask = out
    return mask


def normal_to_bin(normals: np.ndarray, refmap_res: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals (N, 3) in the camera frame → refmap (row, col) indices (N,), each in [0, R)."""
    n = np.asarray(normals, dtype=np.float64)
    el = np.arcsin(np.clip(n[:, 1], -1.0, 1.0))
    az = np.arctan2(n[:, 0], n[:, 2])
    row = np.floor((np.pi / 2 - el) / np.pi * refmap_res).astype(np.int64)
    col = np.floor((az + np.pi / 2) / np.pi * refmap_res).astype(np.int64)
    return np.clip(row, 0, refmap_res - 1), np.clip(col, 0, refmap_res - 1)


def _segment_medians(bins: np.ndarray, values: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Median of ``values`` (N,) within each bin id of ``bins`` (N,); no loop over bins or pixels.

    Sort by (bin, value); each bin is then a contiguous run whose middle element(s) are its median.
    Returns (medians (n_bins,), counts (n_bins,)); empty bins get 0.
    """
    order = np.lexsort((values, bins))
    sorted_values = values[order]
    counts = np.bincount(bins, minlength=n_bins)
    starts = np.cumsum(counts) - counts
    medians = np.zeros(n_bins, dtype=np.float64)
    filled = counts > 0
    lo = starts[filled] + (counts[filled] - 1) // 2
    hi = starts[filled] + counts[filled] // 2
    medians[filled] = 0.5 * (sorted_values[lo] + sorted_values[hi])
    return medians, counts


def _check_image(image: np.ndarray, mask: np.ndarray, source: object, repair: bool = False) -> np.ndarray:
    """The image within the mask under the HDR input policy (module docstring); 0 outside the mask."""
    from rendering.radiance import clean_radiance

    if image.dtype == np.uint8 or image.dtype == np.uint16:
        raise InputError(
            source,
            f"is an integer ({image.dtype}) image, i.e. display-encoded LDR; the observation must be linear "
            "HDR radiance (float). Convert it to linear float first (or pass the PNG file to "
            "load_observation_files, which decodes sRGB with a warning)",
        )
    # Pixels outside the mask are never binned: whatever they hold (background, NaN) does not matter.
    within = np.where(mask[:, :, None], image.astype(np.float32, copy=False), np.float32(0.0))
    image, _ = clean_radiance(within, source, repair_nonfinite=repair)
    inside = image[mask]
    if inside.size and float(inside.max()) <= 1.0 and float(inside.min()) >= 0.0:
        scaled = inside * 255.0
        distinct = np.unique(inside).size
        if distinct > 16 and np.all(np.abs(scaled - np.round(scaled)) < 1e-4):
            raise InputError(
                source,
                "every value is a multiple of 1/255 in [0, 1]: this is an 8-bit display image saved as HDR, "
                "which cannot be linear radiance (gamma-encoded, highlights clipped); use the camera's "
                "linear HDR output",
            )
    return image


def select_normals(
    normals: np.ndarray, mask: np.ndarray, erode: int = DEFAULT_ERODE, source: object = "normals"
) -> tuple[np.ndarray, np.ndarray]:
    """The pixels an observation uses and their unit normals, by the rules of the module docstring.

    normals (H, W, 3) camera-frame, any length; mask (H, W) bool. Returns (unit normals (H, W, 3)
    float32, 0 where ``used`` is False; used (H, W) bool). Warns once (naming ``source``) when a
    rule removed a pixel or a normal was renormalised; raises InputError for NaN/Inf normals inside
    the mask and for a mask left mostly invalid.
    """
    inside = normals[mask]
    nonfinite = ~np.isfinite(inside).all(axis=1)
    if nonfinite.any():
        raise InputError(source, f"has {int(nonfinite.sum())} NaN/Inf normals inside the mask")
    # Outside the mask a normal map may hold anything (0, NaN): it is never read.
    normals = np.where(mask[:, :, None], normals, 0.0).astype(np.float64)
    length = np.linalg.norm(normals, axis=2)
    short = mask & (length < MIN_NORMAL_LENGTH)
    unit = normals / np.where(short | ~mask, 1.0, length)[:, :, None]
    interior = erode_mask(mask & ~short, erode)
    away = interior & (unit[:, :, 2] <= 0.0)
    used = interior & ~away
    total = int(mask.sum())
    n_short, n_away = int(short.sum()), int(away.sum())
    if n_short + n_away > MAX_INVALID_FRACTION * total:
        raise InputError(
            source,
            f"{n_short + n_away} of the {total} mask pixels have no usable normal ({n_short} near zero, "
            f"‖n‖ < {MIN_NORMAL_LENGTH}; {n_away} facing away from the camera, n_z ≤ 0): over "
            f"{MAX_INVALID_FRACTION:.0%}, so this is not a normal map of the masked object. Normals must be "
            "camera-frame vectors (x right, y up, z toward the viewer) of the image's object",
        )
    renormalised = used & (np.abs(length - 1.0) > NORMAL_TOLERANCE)
    if n_short or n_away or renormalised.any():
        eroded = int((mask & ~short).sum() - interior.sum())
        lengths = length[renormalised]
        span = f" (lengths {lengths.min():.3g}–{lengths.max():.3g})" if lengths.size else ""
        warnings.warn(
            f"{source}: of {total} mask pixels, left out {n_short} with a near-zero normal "
            f"(‖n‖ < {MIN_NORMAL_LENGTH}), {eroded} on the boundary (eroded {erode}×) and {n_away} facing "
            f"away from the camera (n_z ≤ 0); renormalised {int(renormalised.sum())} normals{span}",
            stacklevel=3,
        )
    return np.where(used[:, :, None], unit, 0.0).astype(np.float32), used


def image_to_refmap(
    image: np.ndarray,
    normals: np.ndarray,
    mask: np.ndarray,
    refmap_res: int = 128,
    erode: int = DEFAULT_ERODE,
    sources: tuple[object, object, object] = ("image", "normals", "mask"),
    repair: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Bin an object image by its normals into an observed refmap.

    image (H, W, 3) linear HDR; normals (H, W, 3) camera-frame normals (x right, y up, z toward the
    viewer); mask (H, W) bool. The pixels binned are chosen by :func:`select_normals` (``erode``
    3×3 erosions of the boundary; near-zero and back-facing normals left out, the rest
    renormalised); the image follows the HDR input policy within the mask (``repair``: fill NaN/Inf
    pixels instead of refusing them). ``sources`` names the three inputs in warnings and error
    messages (file paths when called from files).

    Returns (refmap (3, R, R) float32, observed (R, R) bool); unobserved bins are 0.
    """
    image_src, normals_src, mask_src = sources
    image, normals, mask = np.asarray(image), np.asarray(normals), np.asarray(mask)
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(image_src, f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    if normals.shape != image.shape:
        raise InputError(
            normals_src, f"shape {normals.shape} does not match the image {image.shape}; expected (H, W, 3)"
        )
    if mask.shape != image.shape[:2]:
        raise InputError(mask_src, f"shape {mask.shape} does not match the image's {image.shape[:2]}")
    if mask.dtype != bool:
        raise InputError(mask_src, f"must be a boolean array, got {mask.dtype}")
    if not mask.any():
        raise InputError(mask_src, "is empty: no object pixel to observe")
    image = _check_image(image, mask, image_src, repair)
    normals, keep = select_normals(normals, mask, erode, normals_src)
    if not keep.any():
        raise InputError(
            mask_src,
            f"no pixel is left after dropping near-zero normals, eroding the mask {erode}× and dropping "
            "normals facing away",
        )
    row, col = normal_to_bin(normals[keep], refmap_res)
    bins = row * refmap_res + col
    values = image[keep].astype(np.float64)
    refmap = np.zeros((3, refmap_res * refmap_res), dtype=np.float32)
    for channel in range(3):
        medians, counts = _segment_medians(bins, values[:, channel], refmap_res * refmap_res)
        refmap[channel] = medians
    observed = counts > 0
    needed = max(MIN_OBSERVED_BINS, int(np.ceil(MIN_OBSERVED_FRACTION * refmap_res * refmap_res)))
    if int(observed.sum()) < needed:
        raise InputError(
            mask_src,
            f"covers only {int(observed.sum())} of the {refmap_res * refmap_res} refmap bins "
            f"(need ≥ {needed}); "
            "the object is too small in the image for this refmap resolution (lower --refmap-res)",
        )
    return refmap.reshape(3, refmap_res, refmap_res), observed.reshape(refmap_res, refmap_res)


def _srgb_to_linear(encoded: np.ndarray) -> np.ndarray:
    return np.where(encoded <= 0.04045, encoded / 12.92, ((encoded + 0.055) / 1.055) ** 2.4)


def read_observation_image(path: str | os.PathLike) -> np.ndarray:
    """Read the object image: .exr/.hdr as linear float (H, W, 3); an 8/16-bit PNG is decoded from
    sRGB to linear with an :class:`LDRImageWarning` (clipped highlights lose the light's strength).

    Values come back as stored (negatives, NaN/Inf included): the HDR input policy needs the mask,
    so :func:`image_to_refmap` applies it to the pixels inside it."""
    from rendering.hdrio import HDR_SUFFIXES, check_format, read_hdr
    from rendering.variant import ensure_variant

    path = Path(path)
    if path.suffix.lower() in HDR_SUFFIXES:
        return read_hdr(path)
    if path.suffix.lower() != ".png":
        raise InputError(path, f"unsupported image format {path.suffix!r}; use .exr or .hdr (linear HDR)")
    if not path.exists():
        raise InputError(path, "file does not exist")
    check_format(path)
    mi = ensure_variant()
    try:
        bitmap = mi.Bitmap(str(path))
    except RuntimeError as error:
        raise InputError(path, f"unreadable PNG ({error})") from None
    pixels = np.array(bitmap)
    scale = float(np.iinfo(pixels.dtype).max) if np.issubdtype(pixels.dtype, np.integer) else 1.0
    warnings.warn(
        f"{path}: an {8 * pixels.dtype.itemsize}-bit PNG is display-encoded LDR, not linear HDR; decoding it "
        "with the sRGB curve. Clipped highlights make the recovered light too weak: prefer .exr",
        LDRImageWarning,
        stacklevel=2,
    )
    pixels = pixels.astype(np.float32) / scale
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    rgb = np.repeat(pixels[:, :, :1], 3, axis=2) if pixels.shape[2] in (1, 2) else pixels[:, :, :3]
    return _srgb_to_linear(rgb).astype(np.float32)


def read_normals(path: str | os.PathLike) -> np.ndarray:
    """Read a normal map saved with ``numpy.save``: float (H, W, 3), camera-frame vectors (their
    lengths are checked and repaired by :func:`select_normals`)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist")
    if path.suffix.lower() != ".npy":
        raise InputError(path, f"normals must be a .npy array of shape (H, W, 3), got {path.suffix!r}")
    from rendering.hdrio import check_format

    check_format(path)  # np.load would open a zip (.npz) named .npy as an archive
    try:
        normals = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise InputError(path, f"unreadable .npy file ({error})") from None
    if normals.ndim != 3 or normals.shape[2] != 3 or not np.issubdtype(normals.dtype, np.floating):
        raise InputError(
            path, f"expected float normals of shape (H, W, 3), got {normals.dtype} {normals.shape}"
        )
    return normals.astype(np.float32)


def load_observation_files(
    image_path: str | os.PathLike,
    normals_path: str | os.PathLike,
    mask_path: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read an observation from files: (image (H, W, 3), normals (H, W, 3), mask (H, W) bool).

    Without a mask file, the mask is where the normals are non-zero. Raises InputError naming the
    file at fault; the arrays are then checked by :func:`image_to_refmap` with those names.
    """
    from rendering.hdrio import read_mask

    image = read_observation_image(image_path)
    normals = read_normals(normals_path)
    if normals.shape != image.shape:
        raise InputError(
            normals_path, f"shape {normals.shape} does not match the image {image_path} {image.shape}"
        )
    if mask_path is None:
        mask = np.any(normals != 0, axis=2)
        if not mask.any():
            raise InputError(
                normals_path, "all normals are zero, so there is no object (and no mask file given)"
            )
    else:
        mask = read_mask(mask_path)
        if mask.shape != image.shape[:2]:
            raise InputError(
                mask_path, f"shape {mask.shape} does not match the image {image_path} {image.shape[:2]}"
            )
    return image, normals, mask


def files_to_refmap(
    image_path: str | os.PathLike,
    normals_path: str | os.PathLike,
    mask_path: str | os.PathLike | None = None,
    refmap_res: int = 128,
    erode: int = DEFAULT_ERODE,
    repair: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`load_observation_files` then :func:`image_to_refmap`, warnings and errors naming the
    files."""
    image, normals, mask = load_observation_files(image_path, normals_path, mask_path)
    sources = (image_path, normals_path, mask_path if mask_path is not None else f"{normals_path} (mask)")
    return image_to_refmap(
        image, normals, mask, refmap_res=refmap_res, erode=erode, sources=sources, repair=repair
    )
