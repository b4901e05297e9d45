"""The principled material (DESIGN.md §3.3): material vectors z, their names and checks, and the
Mitsuba ``principled`` BSDF of a z.

A material vector z ∈ [0, 1]⁶ is ``[metallic, base_color_r, base_color_g, base_color_b,
roughness, specular]``: Mitsuba 3's stock ``principled`` BSDF with every other parameter 0
(``ZEROED``). The perfect mirror is ``MIRROR`` (z0 of the DRM process).
"""

from __future__ import annotations

import numpy as np

from rendering.errors import InputError
from rendering.variant import ensure_variant

MATERIAL_NAMES = ("metallic", "base_color_r", "base_color_g", "base_color_b", "roughness", "specular")
MIRROR = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 1.0], dtype=np.float32)  # z0, the perfect mirror
ZEROED = (  # the principled parameters a material vector leaves at 0
    "spec_tint",
    "anisotropic",
    "sheen",
    "sheen_tint",
    "clearcoat",
    "clearcoat_gloss",
    "spec_trans",
)


def validate_materials(materials, source: object = "materials") -> np.ndarray:
    """Check (B, 6) (or one (6,)) finite values in [0, 1]; return float32 (B, 6). Raises InputError."""
    materials = np.asarray(materials, dtype=np.float64)
    if materials.ndim == 1:
        materials = materials[None]
    if materials.ndim != 2 or materials.shape[1] != 6 or len(materials) == 0:
        raise InputError(
            source, f"expected (B, 6) material vectors {MATERIAL_NAMES}, got shape {materials.shape}"
        )
    if not np.isfinite(materials).all():
        raise InputError(source, "material values must be finite (found NaN or Inf)")
    if materials.min() < 0 or materials.max() > 1:
        raise InputError(
            source,
            f"material values must lie in [0, 1]; got range [{materials.min():.4g}, {materials.max():.4g}]",
        )
    return materials.astype(np.float32)


def validate_material(material, source: object = "material") -> np.ndarray:
    """Check one material vector z: shape (6,), finite, in [0, 1]. Returns float32 (6,)."""
    z = np.asarray(material, dtype=np.float64)
    if z.shape != (6,):
        raise InputError(source, f"a material vector has 6 values {MATERIAL_NAMES}, got shape {z.shape}")
    return validate_materials(z, source)[0]


def parse_material(text: str, source: object = "--material") -> np.ndarray:
    """'m,r,g,b,rough,spec' (a command-line option) → float32 (6,). Raises InputError naming
    ``source``."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != len(MATERIAL_NAMES):
        expected = f"{len(MATERIAL_NAMES)} comma-separated values {MATERIAL_NAMES}"
        raise InputError(source, f"expected {expected}, got {len(parts)}")
    try:
        values = np.array([float(part) for part in parts])
    except ValueError:
        raise InputError(source, f"not a list of numbers: {text!r}") from None
    return validate_material(values, source)


def principled_dict(z) -> dict:
    """The ``mi.load_dict`` description of the principled BSDF of material vector z (6,)."""
    z = validate_material(z)
    return {
        "type": "principled",
        "metallic": float(z[0]),
        "base_color": {"type": "rgb", "value": [float(v) for v in z[1:4]]},
        "roughness": float(z[4]),
        "specular": float(z[5]),
        **dict.fromkeys(ZEROED, 0.0),
    }


def principled_bsdf(z):
    """Mitsuba's principled BSDF (an ``mi.BSDF``) of material vector z (6,)."""
    return ensure_variant().load_dict(principled_dict(z))
