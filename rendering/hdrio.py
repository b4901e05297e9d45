"""Reading and writing HDR images (.exr, .hdr) and masks, and tonemapped PNG previews.

Images are float32 arrays (H, W, 3), linear RGB. Files are read through Mitsuba's Bitmap (which
reads OpenEXR and Radiance RGBE robustly and raises on truncated files), once the file's first
bytes show that it is what its suffix says (:func:`check_format`). Every write goes to a
temporary name in the same directory and is renamed when complete, so an interrupted run never
leaves a half-written file that looks complete.

Preview operator (documented, used everywhere): exposure so that the 99th percentile of the
luminance maps to 1, clip to [0, 1], gamma 2.2, 8 bits.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fileio.atomic import atomic_write
from rendering.errors import InputError
from rendering.variant import ensure_variant

HDR_SUFFIXES = (".exr", ".hdr")
LUMINANCE_WEIGHTS = (0.2127, 0.7152, 0.0722)  # Rec. 709, as the DRM normalisation (DESIGN.md §3.4)
PREVIEW_PERCENTILE = 99.0
PREVIEW_GAMMA = 2.2


def luminance(rgb: np.ndarray, axis: int = -1, dtype: type = np.float32) -> np.ndarray:
    """Rec. 709 luminance of linear RGB along ``axis``, computed in ``dtype``. (The torch twin for
    refmap batches is ``models.drm.luminance``: models never import rendering.)"""
    rgb = np.moveaxis(np.asarray(rgb, dtype=dtype), axis, -1)
    return rgb @ np.asarray(LUMINANCE_WEIGHTS, dtype=dtype)


def _to_rgb(pixels: np.ndarray, path: Path) -> np.ndarray:
    """(H, W, C) with C in {1, 2, 3, 4} → (H, W, 3): grey is replicated, alpha dropped."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    channels = pixels.shape[2]
    if channels in (1, 2):  # Y or YA
        return np.repeat(pixels[:, :, :1], 3, axis=2)
    if channels in (3, 4):  # RGB or RGBA
        return pixels[:, :, :3]
    raise InputError(path, f"has {channels} channels; expected 1 (grey), 3 (RGB) or 4 (RGBA)")


# What a file is, by its first bytes (its "magic"): a name is only a claim, and image readers
# that go by content would decode a renamed PNG as if it were radiance.
MAGIC = (
    (b"\x76\x2f\x31\x01", "an OpenEXR image"),
    (b"#?", "a Radiance HDR image"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"PF\n", "a PFM image"),
    (b"Pf\n", "a PFM image"),
    (b"RIFF", "a RIFF (e.g. WebP) file"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"PK\x03\x04", "a zip archive"),
    (b"PK\x05\x06", "a zip archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"ply", "a PLY mesh"),
)
SUFFIX_FORMATS = {
    ".exr": "an OpenEXR image",
    ".hdr": "a Radiance HDR image",
    ".png": "a PNG image",
    ".npy": "a NumPy .npy array",
}


def file_format(path: str | os.PathLike) -> str:
    """What the file is by its first bytes, e.g. "a PNG image"; "an empty file", or "an unknown
    format (first bytes …)" when no known signature matches."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    if not head:
        return "an empty file"
    for magic, name in MAGIC:
        if head.startswith(magic):
            return name
    return f"an unknown format (first bytes {head[:8].hex(' ')})"


def check_format(path: str | os.PathLike) -> None:
    """The file is what its suffix says (:data:`SUFFIX_FORMATS`), by its first bytes; InputError
    naming the file, the suffix and what it really is otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "is not a file")
    expected = SUFFIX_FORMATS[path.suffix.lower()]
    actual = file_format(path)
    if actual != expected:
        raise InputError(
            path,
            f"unreadable: named {path.suffix} but the file is {actual} (by its first bytes), not {expected}; "
            "give it the name of its format, or convert it",
        )


def read_hdr(path: str | os.PathLike) -> np.ndarray:
    """Read an .exr or .hdr file to float32 (H, W, 3). Raises InputError naming the file; a file
    whose first bytes are not those of its suffix's format (a PNG renamed .exr) is refused."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist")
    if path.suffix.lower() not in HDR_SUFFIXES:
        raise InputError(path, f"not an HDR image: expected one of {HDR_SUFFIXES} (got {path.suffix!r})")
    check_format(path)
    mi = ensure_variant()
    try:
        bitmap = mi.Bitmap(str(path))
    except RuntimeError as error:
        raise InputError(path, f"unreadable or truncated HDR file ({error})") from None
    bitmap = bitmap.convert(component_format=mi.Struct.Type.Float32, srgb_gamma=False)
    return _to_rgb(np.array(bitmap, dtype=np.float32), path)


def write_exr(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write float32 (H, W, 3) or (H, W) linear values to an OpenEXR file, atomically."""
    image = np.ascontiguousarray(image, dtype=np.float32)
    if image.ndim not in (2, 3):
        raise ValueError(f"write_exr expects (H, W) or (H, W, C), got shape {image.shape}")
    mi = ensure_variant()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, suffix=path.suffix) as tmp:  # Mitsuba picks the format by the suffix
        mi.Bitmap(image).write(str(tmp))
    return path


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write uint8 (H, W), (H, W, 3) or (H, W, 4) to a PNG file, atomically."""
    image = np.ascontiguousarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"write_png expects uint8 pixels, got {image.dtype}")
    mi = ensure_variant()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, suffix=path.suffix) as tmp:
        mi.Bitmap(image, pixel_format=_png_format(mi, image)).write(str(tmp))
    return path


def _png_format(mi, image: np.ndarray):
    channels = 1 if image.ndim == 2 else image.shape[2]
    return {1: mi.Bitmap.PixelFormat.Y, 3: mi.Bitmap.PixelFormat.RGB, 4: mi.Bitmap.PixelFormat.RGBA}[channels]


def tonemap(image: np.ndarray, exposure: float | None = None) -> np.ndarray:
    """Linear HDR (H, W, 3) → uint8 sRGB-ish preview (see the module docstring for the operator).

    ``exposure`` (a multiplier) overrides the percentile rule, e.g. to show several images at
    one exposure.
    """
    image = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if exposure is None:
        exposure = preview_exposure(image)
    mapped = np.clip(image * exposure, 0.0, 1.0) ** (1.0 / PREVIEW_GAMMA)
    return (mapped * 255.0 + 0.5).astype(np.uint8)


def preview_exposure(image: np.ndarray) -> float:
    """The exposure multiplier the preview operator chooses for ``image``."""
    lum = luminance(np.maximum(image, 0.0))
    level = float(np.percentile(lum, PREVIEW_PERCENTILE)) if lum.size else 0.0
    return 1.0 / level if level > 0 else 1.0


def write_preview(path: str | os.PathLike, image: np.ndarray, exposure: float | None = None) -> Path:
    """Tonemap linear (H, W, 3) and write it as PNG."""
    return write_png(path, tonemap(image, exposure))


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask image (PNG or any format Bitmap reads) to bool (H, W): non-zero is inside."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist")
    mi = ensure_variant()
    try:
        pixels = np.array(mi.Bitmap(str(path)))
    except RuntimeError as error:
        raise InputError(path, f"unreadable mask image ({error})") from None
    if pixels.ndim == 3:
        pixels = pixels[:, :, 0] if pixels.shape[2] in (1, 2) else pixels[:, :, :3].max(axis=2)
    return pixels > 0
