"""The real-world HDR input policy: what happens to negative and non-finite pixels wherever an HDR
image enters the project (envmaps, user envmap directories, object images given to ``estimate``).

Real maps are not clean radiance. Camera pipelines leave tiny negatives (Poly Haven's 1k maps: a
few to ~9,000 pixels down to −0.004, < 0.01 % of the energy), and maps downsampled by others carry
*ringing* around bright sources: negative lobes next to a sun (down to −3,894 beside +29,800 in
npm's ``@pmndrs/assets`` maps, up to ~11 % of a map's energy). A plain clamp would add that energy
as a ring of light around the sun; refusing the file would refuse most real maps. So, per channel:

1. **Tiny negatives** — when the negative energy is below ``TINY_SHARE`` of the positive energy,
   negatives are set to 0 (the power changes by less than that share).
2. **Ringing** — otherwise every negative pixel is *filled* with the geometric mean of the
   positive pixels around it (so no dark ring is left), and its deficit plus that fill is taken
   from the positive pixels of its neighbourhood in proportion to their energy (so the energy a
   bright source and its lobes hold together stays where it was: the total power and the power
   around each source are unchanged up to float rounding). Where a neighbourhood holds too little
   energy the window grows (``WINDOWS``); what no window can hold is taken from the whole map.
3. **NaN / Inf** stay an error (a broken file or pipeline) unless ``repair_nonfinite`` is set
   (``--repair`` / ``envmaps.repair``): then each is filled with the mean of its finite
   neighbours, and the count is reported.
4. A file whose negative energy exceeds ``max_negative_share`` of its positive energy (default
   25 %) cannot be a radiance map (a difference image, a signed normal map…): InputError.
5. A value beyond ±``MAX_RADIANCE`` (1e30) is refused too: rendering sums and scales radiance in
   float32 (max ≈ 3.4e38), so such a map renders Inf pixels, and no unit of radiance needs that
   range (the sun's luminance is about 1.6e9 cd/m²).

Energies are weighted by ``weights`` (per row, broadcast over columns: an envmap's texel solid
angles, :func:`rendering.envmap.pixel_solid_angles`) so that "power" means ∫ L dω for envmaps and
the plain pixel sum for images. Envmaps wrap around horizontally (``wrap=True``).

Every repair is reported as ONE warning line naming the source: how many values, their minimum,
their energy share, the power before and after.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from rendering.errors import InputError

TINY_SHARE = 1e-4  # negative energy below this share of the positive energy: clamp to 0
MAX_NEGATIVE_SHARE = 0.25  # above this share a file cannot be radiance
MAX_RADIANCE = 1e30  # larger |values| overflow float32 once rendered (module docstring, rule 5)
WINDOWS = (3, 5, 9, 17, 33, 65)  # neighbourhood sides tried in turn for the ringing repair
FILL_WINDOW = 5  # neighbourhood of the geometric-mean fill (and of the NaN/Inf fill)


@dataclass(frozen=True)
class RepairReport:
    """What :func:`clean_radiance` changed (all zero: nothing)."""

    negative: int = 0  # negative values (over all channels)
    minimum: float = 0.0  # the most negative value
    negative_share: float = 0.0  # negative energy / positive energy (largest over channels)
    nonfinite: int = 0  # NaN/Inf values filled
    rule: str = ""  # "clamped" (tiny negatives) or "redistributed" (ringing)
    power_before: tuple[float, float, float] = (0.0, 0.0, 0.0)  # per channel, negatives counted
    power_after: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def changed(self) -> bool:
        return bool(self.negative or self.nonfinite)

    def line(self, source: object) -> str:
        parts = []
        if self.nonfinite:
            parts.append(f"filled {self.nonfinite} NaN/Inf values with their neighbours' mean")
        if self.negative:
            parts.append(
                f"{self.rule} {self.negative} negative values (min {self.minimum:.4g}, "
                f"{100 * self.negative_share:.3g} % of the energy)"
            )
        before, after = _total(self.power_before), _total(self.power_after)
        change = 100 * (after - before) / before if before > 0 else 0.0
        return f"{source}: {'; '.join(parts)}; power {before:.6g} → {after:.6g} ({change:+.3g} %)"


def _total(power: tuple[float, float, float]) -> float:
    return float(sum(power))


def clean_radiance(
    image: np.ndarray,
    source: object = "image",
    *,
    weights: np.ndarray | None = None,
    wrap: bool = False,
    repair_nonfinite: bool = False,
    max_negative_share: float = MAX_NEGATIVE_SHARE,
    warn: bool = True,
) -> tuple[np.ndarray, RepairReport]:
    """Apply the policy of the module docstring to float (H, W, 3); returns (float32 image, report).

    weights: (H,) per-row weight of a pixel's energy (None: 1). wrap: columns wrap around (envmaps).
    Raises InputError naming ``source`` for NaN/Inf without ``repair_nonfinite`` and for files
    that cannot be radiance. ``warn``: emit the report line as a ``UserWarning`` when anything changed.
    """
    image = np.array(image, dtype=np.float32)  # a copy: the caller's array is never changed
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(source, f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    height = image.shape[0]
    row_weights = np.ones(height) if weights is None else np.asarray(weights, dtype=np.float64)
    if row_weights.shape != (height,):
        raise ValueError(f"weights must have shape ({height},), got {row_weights.shape}")
    w = row_weights[:, None]

    nonfinite_mask = ~np.isfinite(image)
    nonfinite = int(nonfinite_mask.sum())
    if nonfinite:
        if not repair_nonfinite:
            nan, inf = int(np.isnan(image).sum()), nonfinite - int(np.isnan(image).sum())
            raise InputError(
                source,
                f"has {nan} NaN and {inf} Inf values; fix the file, or pass --repair "
                "(envmaps.repair: true) to fill them with their neighbours' mean",
            )
        if nonfinite_mask.all():
            raise InputError(source, "has no finite value at all; it cannot be a radiance map")
        for c in range(3):
            if nonfinite_mask[..., c].any():
                image[..., c] = _fill_nonfinite(image[..., c], nonfinite_mask[..., c], wrap)

    peak = float(np.abs(image).max()) if image.size else 0.0
    if peak > MAX_RADIANCE:
        raise InputError(
            source,
            f"has values up to {peak:.3g}, beyond ±{MAX_RADIANCE:.0e}: rendering it would overflow float32 "
            "(Inf pixels); no radiance needs that range, so rescale the map",
        )

    negative_mask = image < 0
    negative = int(negative_mask.sum())
    power_before = tuple(float(np.sum(image[..., c] * w)) for c in range(3))
    if not negative:
        report = RepairReport(nonfinite=nonfinite, power_before=power_before, power_after=power_before)
        if warn and nonfinite:
            warnings.warn(report.line(source), stacklevel=2)
        return image, report

    shares = []
    for c in range(3):
        channel = image[..., c]
        positive_energy = float(np.sum(np.maximum(channel, 0) * w))
        negative_energy = float(np.sum(np.maximum(-channel, 0) * w))
        shares.append(negative_energy / positive_energy if positive_energy > 0 else math.inf)
    share = max(shares)
    minimum = float(image.min())
    if share > max_negative_share:
        raise InputError(
            source,
            f"has {negative} negative values holding {100 * share:.3g} % of the energy (min {minimum:.4g}); "
            f"above {100 * max_negative_share:.3g} % this cannot be a radiance map",
        )
    rule = "clamped" if share < TINY_SHARE else "redistributed"
    for c in range(3):
        if not negative_mask[..., c].any():
            continue
        if shares[c] < TINY_SHARE:
            image[..., c] = np.maximum(image[..., c], 0.0)
        else:
            image[..., c] = _redistribute(image[..., c].astype(np.float64), row_weights, wrap).astype(
                np.float32
            )
    power_after = tuple(float(np.sum(image[..., c] * w)) for c in range(3))
    report = RepairReport(negative, minimum, share, nonfinite, rule, power_before, power_after)
    if warn:
        warnings.warn(report.line(source), stacklevel=2)
    return image, report


def _box(values: np.ndarray, size: int, wrap: bool) -> np.ndarray:
    """Sum over a size×size neighbourhood (rows clamp at the poles/edges; columns wrap for envmaps)."""
    from scipy.ndimage import uniform_filter

    modes = ("constant", "wrap" if wrap else "constant")
    return uniform_filter(values, size=size, mode=modes, cval=0.0) * (size * size)


def _fill_nonfinite(channel: np.ndarray, bad: np.ndarray, wrap: bool) -> np.ndarray:
    """Replace the ``bad`` pixels of one channel by the mean of their finite neighbours (growing
    the window where a neighbourhood has none; the global mean as the last resort)."""
    values = np.where(bad, 0.0, channel).astype(np.float64)
    good = (~bad).astype(np.float64)
    out = values.copy()
    todo = bad.copy()
    for size in (FILL_WINDOW, *WINDOWS[3:]):
        total, count = _box(values, size, wrap), _box(good, size, wrap)
        ready = todo & (count > 0.5)
        out[ready] = total[ready] / count[ready]
        todo &= ~ready
        if not todo.any():
            break
    if todo.any():
        out[todo] = values[~bad].mean()
    return out.astype(np.float32)


def _redistribute(channel: np.ndarray, row_weights: np.ndarray, wrap: bool) -> np.ndarray:
    """Ringing repair of one channel (float64 (H, W)); see the module docstring. Conserves
    Σ value·weight exactly up to rounding."""
    w = row_weights[:, None]
    negative = channel < 0
    positive = channel > 0
    # Fill: the geometric mean of the positive neighbours (robust to a sun beside the ring).
    logs = np.where(positive, np.log(np.where(positive, channel, 1.0)), 0.0)
    count = _box(positive.astype(np.float64), FILL_WINDOW, wrap)
    fill = np.where(count > 0.5, np.exp(_box(logs, FILL_WINDOW, wrap) / np.maximum(count, 1.0)), 0.0)
    out = np.where(negative, fill, channel)
    # Energy (value × weight) each negative pixel must get back from its neighbours.
    debt = np.where(negative, (fill - channel) * w, 0.0)
    donors = positive  # only the originally positive pixels give
    for size in WINDOWS:
        if debt.sum() <= 0:
            break
        energy = np.where(donors, out * w, 0.0)
        available = _box(energy, size, wrap)
        # Each debtor takes a share of its window's energy, at most half of it per pass; whatever
        # a window cannot pay is left for the next, wider one.
        share = np.where(debt > 0, np.minimum(debt / np.maximum(available, 1e-300), 0.5), 0.0)
        taken = np.minimum(_box(share, size, wrap), 1.0)  # fraction each donor gives (windows are symmetric)
        paid = share * available
        out = np.where(donors, out * (1.0 - taken), out)
        # Donors clipped at giving everything gave less than was paid: settle that globally.
        shortfall = float(paid.sum()) - float((energy * taken).sum())
        if shortfall > 0:
            out = _settle(out, w, donors, shortfall)
        debt = np.maximum(debt - paid, 0.0)
    if debt.sum() > 0:
        out = _settle(out, w, donors, float(debt.sum()))
    return out


def _settle(out: np.ndarray, w: np.ndarray, donors: np.ndarray, amount: float) -> np.ndarray:
    """Take ``amount`` of energy (give, when negative) from all donors in proportion to theirs."""
    energy = float(np.sum(np.where(donors, out * w, 0.0)))
    if energy <= 0:
        return out
    factor = max(0.0, 1.0 - amount / energy)
    return np.where(donors, out * factor, out)
