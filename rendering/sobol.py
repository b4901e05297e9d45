"""The sample pattern of refmap rendering: Owen-scrambled Sobol points (Burley, "Practical
Hash-based Owen Scrambling", JCGT 2020), vectorised in Dr.Jit.

A refmap pixel is an integral over directions with a few 2D sampling decisions per sample (one
per sampling technique). Each is drawn from its own randomised (0, 2) sequence: the first two
Sobol dimensions, Owen-scrambled per pixel, with the sample index shuffled by a nested uniform
scramble so that the dimensions are decorrelated. Every power-of-two prefix
of the samples of a pixel is a stratified (0, m, 2)-net, whatever the sample count, so chunking
over samples changes nothing and the estimate converges faster than with independent numbers.

The numbers depend only on a per-pixel key and the sample index (never on a material), which is
what makes renders of nearby materials use common random numbers.
"""

from __future__ import annotations

_FLOAT_SCALE = 1.0 / (1 << 24)


def _mix(x):
    """A 32-bit integer hash (lowbias32, C. Wellons): derives independent seeds from one key."""
    x = (x ^ (x >> 16)) * 0x7FEB352D
    x = (x ^ (x >> 15)) * 0x846CA68B
    return x ^ (x >> 16)


def _nested_uniform_scramble(dr, x, seed):
    """Owen scrambling of a 32-bit fixed-point value: the Laine–Karras permutation applied to the
    bit-reversed value (Burley 2020, with his improved constants)."""
    x = dr.brev(x) + seed
    for constant in (0x6C50B47C, 0xB82F1E52, 0xC7AFE638, 0x8D22F6E6):
        x = x ^ (x * constant)
    return dr.brev(x)


def _sobol_dimension_1(dr, index):
    """Second Sobol dimension as 32-bit fixed point. Its generator is the Pascal matrix mod 2:
    by Lucas' theorem digit j is the XOR of the index bits k ⊇ j (bitwise), a superset transform
    over the 5 bits of the bit position, done in 5 shift-and-mask steps, then bit-reversed."""
    bits = index
    for step, mask in enumerate((0x55555555, 0x33333333, 0x0F0F0F0F, 0x00FF00FF, 0x0000FFFF)):
        bits = bits ^ ((bits >> (1 << step)) & mask)
    return dr.brev(bits)


def _to_float(mi, dr, x):
    return mi.Float(x >> 8) * _FLOAT_SCALE


def _point_2d(mi, dr, key, sample, dimension):
    """One 2D Owen-scrambled Sobol point of the ``dimension``-th pair for (key, sample)."""
    seed_index = _mix(key ^ (0x9E3779B9 * (3 * dimension + 1) & 0xFFFFFFFF))
    seed_x = _mix(key ^ (0x9E3779B9 * (3 * dimension + 2) & 0xFFFFFFFF))
    seed_y = _mix(key ^ (0x9E3779B9 * (3 * dimension + 3) & 0xFFFFFFFF))
    index = _nested_uniform_scramble(dr, sample, seed_index)
    x = _nested_uniform_scramble(dr, dr.brev(index), seed_x)
    y = _nested_uniform_scramble(dr, _sobol_dimension_1(dr, index), seed_y)
    return mi.Point2f(_to_float(mi, dr, x), _to_float(mi, dr, y))


def sample_pattern(mi, dr, key, sample, count: int = 3):
    """``count`` 2D points in [0, 1)² for one refmap sample (one per sampling decision).

    key: UInt32 per lane, a hash of (seed, pixel, view azimuth). sample: UInt32 sample index
    within the pixel.
    """
    return [_point_2d(mi, dr, key, sample, dimension) for dimension in range(count)]
