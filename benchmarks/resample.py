"""Envmap resampling: the separable, streamed :func:`rendering.envmap.resample_envmap` against the
dense implementation it replaced (copied below as the baseline), timed in the same run on the
same maps; medians of ``--repeat`` runs, and the largest output difference between the two.

Sizes: a 1024×512 map to 128×64, and an 8192×4096 map (float32, 400 MB: a 16k Poly Haven
download halved) to 512×256. The dense baseline runs on the large map only with ``--dense-large``:
its single einsum over a float64 copy has no contraction order (H_dst·H_src·W_src·W_dst
multiply-adds, ~1.3·10¹³ here: hours) and needs 800 MB more.

Run: ``python benchmarks/resample.py [--repeat 5] [--dense-repeat 1] [--dense-large]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from rendering.envmap import resample_envmap, row_edges

SIZES = ((512, 64), (4096, 256))  # (source height, output height); widths are twice the height


def dense_resample(envmap: np.ndarray, height: int) -> np.ndarray:
    """The baseline: full (n_dst, n_src) overlap matrices and one einsum over a float64 copy."""

    def overlap_matrix(src_edges, dst_edges, measure):
        lo = np.maximum(dst_edges[:-1, None], src_edges[None, :-1])
        hi = np.minimum(dst_edges[1:, None], src_edges[None, 1:])
        overlap = np.where(hi > lo, measure(hi) - measure(lo), 0.0)
        return overlap / overlap.sum(axis=1, keepdims=True)

    envmap = np.asarray(envmap, dtype=np.float32)
    src_h, src_w = envmap.shape[:2]
    if src_h == height and src_w == 2 * height:
        return envmap.copy()
    rows = overlap_matrix(row_edges(src_h), row_edges(height), lambda t: -np.cos(t))
    cols = overlap_matrix(np.linspace(0, 1, src_w + 1), np.linspace(0, 1, 2 * height + 1), lambda x: x)
    out = np.einsum("ij,jkc,lk->ilc", rows, envmap.astype(np.float64), cols)
    return np.maximum(out, 0.0).astype(np.float32)


def test_map(height: int) -> np.ndarray:
    """A skewed HDR map with a one-pixel sun: (height, 2·height, 3) float32, built row block by
    row block so that the large one costs no float64 copy."""
    rng = np.random.default_rng(0)
    envmap = np.empty((height, 2 * height, 3), dtype=np.float32)
    for start in range(0, height, 256):
        block = envmap[start : start + 256]
        block[...] = rng.random(block.shape, dtype=np.float32)
        np.power(block, 4, out=block)
    envmap[height // 3, height // 2] = 4e4
    return envmap


def median_seconds(repeat: int, function, *args) -> tuple[float, np.ndarray]:
    """Median wall time of ``function(*args)`` over ``repeat`` runs, and its result."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of the separable version")
    parser.add_argument("--dense-repeat", type=int, default=1, help="timed runs of the dense baseline")
    parser.add_argument("--dense-large", action="store_true", help="also time the baseline on the large map")
    args = parser.parse_args()

    columns = ("dense (s)", 10), ("separable (s)", 14), ("speed-up", 9), ("max rel diff", 13)
    print(f"{'source':>11} → {'output':<8} " + " ".join(f"{name:>{width}}" for name, width in columns))
    for src_height, height in SIZES:
        envmap = test_map(src_height)
        new, resampled = median_seconds(args.repeat, resample_envmap, envmap, height)
        source, output = f"{2 * src_height}×{src_height}", f"{2 * height}×{height}"
        if src_height == SIZES[0][0] or args.dense_large:
            old, reference = median_seconds(args.dense_repeat, dense_resample, envmap, height)
            diff = float(np.max(np.abs(resampled - reference) / np.maximum(np.abs(reference), 1e-30)))
            print(f"{source:>11} → {output:<8} {old:>10.2f} {new:>14.3f} {old / new:>8.0f}× {diff:>13.2e}")
        else:
            print(f"{source:>11} → {output:<8} {'(skipped)':>10} {new:>14.3f} {'':>9} {'':>13}")
    print(f"medians: separable of {args.repeat} runs, dense of {args.dense_repeat}")


if __name__ == "__main__":
    main()
