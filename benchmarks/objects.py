"""Objects, observations and procedural envmaps: how long they take, against baselines measured
in the same run.

1. Object images (``ObjectRenderer``, path traced, a blob under a procedural sky) at 256² and
   512², SPP samples per pixel: the first render (scene build + JIT compilation), then a new
   material and envmap in the same scene (``params.update``), against the stock route: a fresh
   ``mi.load_dict`` scene (orthographic sensor, box-filtered ``hdrfilm``, ``path`` integrator)
   and ``mi.render`` per material.
2. Image → refmap, 512² → 128² (per-bin medians), against per-bin means (``np.add.at``).
3. Procedural envmaps per kind at height 128 (and 256 for the analytic kinds). For rooms, the
   portal-sampling tracer against Mitsuba's stock ``path`` integrator (sky as an envmap emitter,
   sun as a directional one) at the same spp: time and noise (relative RMS difference of two
   seeds, over the pixels).

Run: ``python benchmarks/objects.py`` (a few minutes on a 2-core CPU).
"""

from __future__ import annotations

import time

import numpy as np

from rendering.envmap import uv_to_direction
from rendering.hdrio import luminance
from rendering.objects import FRAME_HALF_WIDTH, MAX_DEPTH, ObjectRenderer, columns
from rendering.observation import image_to_refmap, normal_to_bin
from rendering.principled import principled_dict
from rendering.procedural_envmaps import ROOM_MAX_DEPTH, make_envmap, make_room, make_room_description
from rendering.shapes import make_shape, mesh_arrays, mesh_from_arrays
from rendering.variant import ensure_variant

SPP = 64
MATERIALS = np.array([[0.0, 0.8, 0.3, 0.2, 0.4, 0.5], [1.0, 0.9, 0.8, 0.5, 0.2, 0.5]], dtype=np.float32)
ROOM_SPP = 64


def timed(function, *args, repeat: int = 1, **kwargs):
    """(result, the best of ``repeat`` wall times in seconds)."""
    best, result = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return result, best


def stock_object_render(envmap: np.ndarray, shape, z: np.ndarray, res: int, spp: int) -> np.ndarray:
    """The baseline: a fresh stock Mitsuba scene and ``mi.render`` for one material."""
    mi = ensure_variant()
    vertices, faces, normals = mesh_arrays(shape)
    scene = mi.load_dict(
        {
            "type": "scene",
            "integrator": {"type": "path", "max_depth": MAX_DEPTH, "hide_emitters": True},
            "sensor": {
                "type": "orthographic",
                "to_world": mi.ScalarTransform4f()
                .look_at(origin=[0, 0, 10], target=[0, 0, 0], up=[0, 1, 0])
                .scale([FRAME_HALF_WIDTH, FRAME_HALF_WIDTH, 1]),
                "film": {"type": "hdrfilm", "width": res, "height": res, "rfilter": {"type": "box"}},
                "sampler": {"type": "independent", "sample_count": spp},
            },
            "object": mesh_from_arrays("object", vertices, faces, mi.load_dict(principled_dict(z)), normals),
            "light": {"type": "envmap", "bitmap": mi.Bitmap(envmap)},
        }
    )
    return np.array(mi.render(scene))


def bench_objects(envmaps: list[np.ndarray]) -> None:
    shape = make_shape("blob", seed=1)
    print(f"object images: blob, path traced (max depth {MAX_DEPTH}), {SPP} spp")
    for res in (256, 512):
        renderer = ObjectRenderer(shape, object_res=res)
        _, first = timed(renderer.render, envmaps[0], MATERIALS[0], spp=SPP)
        _, warm = timed(renderer.render, envmaps[1], MATERIALS[1], spp=SPP, repeat=2)
        stock_object_render(envmaps[0], shape, MATERIALS[0], res, SPP)  # compile its kernels once
        _, stock = timed(stock_object_render, envmaps[1], shape, MATERIALS[1], res, SPP, repeat=2)
        rate = res * res * SPP / warm / 1e6
        print(
            f"  {res}²: first render {first:6.2f} s   next material+envmap {warm:6.2f} s "
            f"({rate:.1f} M samples/s)   stock fresh scene + mi.render {stock:6.2f} s   "
            f"ratio stock/ours {stock / warm:.2f}×"
        )


def mean_binning(image: np.ndarray, normals: np.ndarray, mask: np.ndarray, res: int) -> np.ndarray:
    """The baseline: per-bin means with ``np.add.at`` (no erosion, no median)."""
    keep = mask & (normals[..., 2] > 0)
    row, col = normal_to_bin(normals[keep], res)
    sums = np.zeros((res * res, 3))
    np.add.at(sums, row * res + col, image[keep])
    counts = np.bincount(row * res + col, minlength=res * res)
    return sums / np.maximum(counts, 1)[:, None]


def bench_observation(envmap: np.ndarray) -> None:
    obj = ObjectRenderer(make_shape("sphere"), object_res=512).render(envmap, MATERIALS[0], spp=4)
    (_, observed), median_time = timed(image_to_refmap, obj.image, obj.normals, obj.mask, 128, repeat=5)
    _, mean_time = timed(mean_binning, obj.image, obj.normals, obj.mask, 128, repeat=5)
    print(
        f"image → refmap 512² → 128² (sphere, {obj.mask.sum()} pixels, {observed.mean():.0%} bins observed): "
        f"median binning {median_time * 1e3:.0f} ms   mean binning (np.add.at) {mean_time * 1e3:.0f} ms"
        f"   ratio {median_time / mean_time:.2f}×"
    )


def stock_room(seed: int, height: int, spp: int, sampler_seed: int) -> np.ndarray:
    """The baseline: Mitsuba's stock path integrator, sky as envmap emitter, sun as directional."""
    mi = ensure_variant()
    room = make_room_description(seed)
    scene_dict = dict(room.scene)
    if room.sky is not None:
        scene_dict["sky"] = {"type": "envmap", "bitmap": mi.Bitmap(room.sky.background)}
        irradiance = (room.sky.sun_radiance * room.sky.sun_solid_angle).tolist()
        scene_dict["sun"] = {
            "type": "directional",
            "direction": (-room.sky.sun_direction).tolist(),
            "irradiance": {"type": "rgb", "value": irradiance},
        }
    scene = mi.load_dict(scene_dict)
    integrator = mi.load_dict({"type": "path", "max_depth": ROOM_MAX_DEPTH})
    n = height * 2 * height
    sampler = mi.load_dict({"type": "independent"})
    sampler.seed(sampler_seed, n * spp)
    jitter = columns(sampler.next_2d())
    rows, cols = np.divmod(np.repeat(np.arange(n), spp), 2 * height)
    directions = uv_to_direction((cols + jitter[:, 0]) / (2 * height), (rows + jitter[:, 1]) / height)
    ray = mi.Ray3f(mi.Point3f(*room.viewpoint.tolist()), mi.Vector3f(*directions.T.astype(np.float32)))
    radiance, _, _ = integrator.sample(scene, sampler, mi.RayDifferential3f(ray))
    return columns(radiance).reshape(height, 2 * height, spp, 3).mean(axis=2)


def noise(a: np.ndarray, b: np.ndarray) -> float:
    """Relative RMS difference of two independent renders (√2 × the noise of one)."""
    la, lb = luminance(a), luminance(b)
    return float(np.sqrt(np.mean((la - lb) ** 2)) / np.mean(0.5 * (la + lb)))


def bench_envmaps() -> None:
    print("procedural envmaps (per map, mean over seeds 0-2):")
    for kind, heights in (("sky", (128, 256)), ("studio", (128, 256))):
        for height in heights:
            times = [timed(make_envmap, kind, seed, height)[1] for seed in range(3)]
            print(f"  {kind:6s} {height:3d}×{2 * height}: {np.mean(times):6.2f} s")
    seed = next(s for s in range(20) if make_room_description(s).windows)
    height = 128
    make_room(seed, 16, spp=4)  # compile the kernels once
    ours, ours_time = timed(make_room, seed, height, spp=ROOM_SPP)
    stock_room(seed, 16, 4, 0)
    stock, stock_time = timed(stock_room, seed, height, ROOM_SPP, 1)
    stock_b = stock_room(seed, height, ROOM_SPP, 2)
    ours_other = make_room(seed, height, spp=ROOM_SPP, sample_seed=seed + 1000)
    print(
        f"  room   {height}×{2 * height}, {ROOM_SPP} spp (room seed {seed}, with a window): "
        f"portal tracer {ours_time:6.2f} s, noise {noise(ours, ours_other):.3f}   "
        f"stock path {stock_time:6.2f} s, noise {noise(stock, stock_b):.3f}   "
        f"noise ratio stock/ours {noise(stock, stock_b) / noise(ours, ours_other):.1f}×"
    )


def main() -> None:
    ensure_variant()
    envmaps = [make_envmap("sky", 1, 128), make_envmap("studio", 2, 128)]
    bench_objects(envmaps)
    bench_observation(envmaps[0])
    bench_envmaps()


if __name__ == "__main__":
    main()
