"""Bad input through the real `drmnet` command (issue 13): a corpus of wrong files, values and
options, each run in a fresh working directory, and what the user gets back.

    .venv/bin/python benchmarks/bad_inputs.py [--only SUBSTRING] [--repo TREE] \\
        [--timeout 120] [--keep DIR] [--json OUT]

Each case is one subprocess ``drmnet ARGS`` (the entry point ``pipeline.cli.main`` of ``--repo``,
default this checkout, imported first through ``PYTHONPATH``; ``--repo`` runs an older tree, e.g. a
``git worktree`` of the commit before the reliability work, with the same venv). The inputs are
built once by this checkout's code (tiny envmaps, refmaps, untrained tiny models, shards of
random refmaps, an envmap split) and copied into each case's directory, so every tree sees the
same bytes. Each case names the bad thing (a file, a key, an option) its error must name.
Outcomes:

- ``clear``: exit 2 and stderr is one ``error: <source>: <problem>`` line naming the bad thing
  (``warning: …`` lines allowed), no traceback; for ``verify-shards``, whose contract is a
  report, a non-zero exit with a ``BAD <shard>: …`` line naming it; for a case whose bad input
  is repaired by design (a damaged cache entry, made again), exit 0 with a ``warning:`` line
  naming it;
- ``clear after traceback``: that line, but after a traceback (e.g. Prefect's flow-run log);
- ``traceback``: an uncaught Python traceback;
- ``unclear``: a non-zero exit without traceback, but not one ``error:`` line (a usage box,
  several lines);
- ``missed``: an ``error:`` line (after a traceback or not), but about something else: the bad
  input went unnoticed and the command failed later for another reason;
- ``silent``: exit 0, the bad input accepted;
- ``timeout``: still running after ``--timeout`` seconds: the bad input accepted, work started.

Printed: one row per case (case, command, outcome, first stderr line), the totals per outcome,
and how many cases left processes running (each case runs in a session of its own, ended with
it). Target (issue 13): every case ``clear``. Cost: the inputs (≈ 40 s), then one `drmnet` start
per case (≈ 1–10 s on a busy 2-core CPU); the errors come before any heavy work, so the corpus
takes ≈ 5 min (an older tree that accepts the bad values renders and trains until ``--timeout``:
≈ 13 min). Run it under ``nice`` with ``OMP_NUM_THREADS=1`` beside other work.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PREFECT_LOG = re.compile(r"\d\d:\d\d:\d\d\.\d+ \| ")  # "12:31:17.553 | INFO    | prefect - …"
OUTCOMES = ("clear", "clear after traceback", "traceback", "unclear", "missed", "silent", "timeout")
GREY = "0.2,0.5,0.5,0.5,0.4,0.5"
MIRROR = "1,1,1,1,0,1"
R = 32  # refmap resolution of the tiny profile: the random shards match it
MODELS = ["--model", "models/drmnet", "--obsnet", "models/obsnet"]
OBSERVATION = ["image.exr", "normals.npy", "mask.png"]
RELIGHT = ["relight", "--material", GREY, "--shape", "sphere", "--object-res", "16", "--spp", "1"]
TRAIN = ["train", "drmnet", "--no-register", "--device", "cpu", "--params", "params.yaml"]
RENDER = ["render-dataset", "--dataset", "drmnet", "--split", "train", "--params", "params.yaml"]
SPLITS = ["make-envmap-splits", "--params", "params.yaml"]
EVALUATE = ["evaluate", "--model", "models/drmnet", "--obsnet", "models/obsnet", "--params", "params.yaml"]


@dataclass
class Case:
    """``drmnet ARGS`` in a directory holding the fixtures ``needs`` (names under the fixture
    folder), after ``setup(cwd)``; its error must name ``about`` (a file, an option, or the last
    two parts of a params.yaml key path)."""

    name: str
    args: list[str]
    about: str
    needs: list[str] = field(default_factory=list)
    setup: Callable[[Path], None] | None = None
    report: bool = False  # verify-shards: a report with BAD lines, not one error line
    repaired: bool = False  # repaired by design: exit 0 and one warning line naming it is clear


# --- the inputs, built once by this checkout's code ---------------------------------------------


PARAMS_TREE = [REPO]  # whose params.yaml the cases start from: the tree under test (main sets it)


def base_params() -> dict:
    """The params.yaml of the tree under test (an older tree may not know a newer key) made cheap:
    the tiny profile, 2 training samples, four small studio envmaps and no real ones (nothing to
    fetch)."""
    params = yaml.safe_load((PARAMS_TREE[0] / "params.yaml").read_text())
    params["profile"] = "tiny"
    height = "res" if "res" in params["envmaps"] else "envmap_height"  # the key's name before issue 14
    params["envmaps"].update({"n": 4, height: 16, "real": False, "kinds": {"studio": 1.0}, "room_spp": 4})
    params["profiles"]["tiny"]["dataset"]["samples"]["drmnet"]["train"] = 2
    return params


def with_value(params: dict, path: str, value) -> dict:
    params = copy.deepcopy(params)
    *parents, last = path.split(".")
    node = params
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return params


def drmnet_split(split: Path, nan: bool = False, samples: int = 4, per_shard: int = 2) -> None:
    """A drmnet training split laid out as `render-dataset` writes it, from random refmaps;
    ``nan``: every ``refmap_k`` NaN (written past the shard writer, which refuses NaN)."""
    from pipeline.manifest import sample_row, write_manifests
    from pipeline.shards import _tarinfo, encode_sample, file_sha256, sample_key, shard_name

    rng = np.random.default_rng(0)
    records = []
    for shard in range(samples // per_shard):
        name = shard_name("drmnet", "train", shard)
        rows, buffer = [], io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for index in range(shard * per_shard, (shard + 1) * per_shard):
                key = sample_key("drmnet", "train", index)
                refmaps = {f: (rng.random((3, R, R)) * 4).astype(np.float32) for f in ("obs", "k", "next")}
                sample = {
                    **{f"refmap_{f}": refmap for f, refmap in refmaps.items()},
                    "refmap_mirror": (rng.random((3, R, R)) * 4).astype(np.float32),
                    **{f"z_{f}": rng.random(6).astype(np.float32) for f in ("obs", "k", "next")},
                    **{"k": 1 + index % 3, "K": 5, "view_azimuth": 0.5, "envmap_id": "studio-0-00000"},
                    "material_source": "uniform",
                }
                rows.append(sample_row(key, name, index, sample))
                for member, data in encode_sample(key, sample):
                    if nan and ".refmap_k." in member:
                        out = io.BytesIO()
                        np.save(out, np.full((3, R, R), np.nan, np.float16))
                        data = out.getvalue()
                    tar.addfile(_tarinfo(member, len(data)), io.BytesIO(data))
        (split / name).parent.mkdir(parents=True, exist_ok=True)
        (split / name).write_bytes(buffer.getvalue())
        size, digest = len(buffer.getvalue()), file_sha256(split / name)
        records.append({"shard": name, "samples": per_shard, "bytes": size, "sha256": digest, "rows": rows})
    write_manifests(split, records)


def tiny_models(directory: Path) -> None:
    """Untrained tiny DRMNet and ObsNet model directories (config.json + ema.safetensors)."""
    import torch

    from models.config import DiffusionConfig, DRMConfig, DRMNetConfig, ObsNetConfig, UNetConfig
    from models.weights import CONFIG_FILE, WEIGHTS_FILE, build_networks, save_config, save_weights

    torch.manual_seed(0)
    unet = UNetConfig(channels=8, multipliers=(1, 2), res_blocks=1, attention=(), head_channels=8)
    configs = {
        "drmnet": DRMNetConfig(resolution=16, illnet=unet, refnet=unet, drm=DRMConfig(max_steps=4)),
        "obsnet": ObsNetConfig(resolution=16, unet=unet, diffusion=DiffusionConfig(sampling_steps=3)),
    }
    for name, config in configs.items():
        save_weights(directory / name / WEIGHTS_FILE, build_networks(config))
        save_config(directory / name / CONFIG_FILE, config)


def build_fixtures(root: Path) -> None:
    """Every input a case may copy into its directory, under ``root``."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from pipeline.manifest import SHARDS_MANIFEST
    from pipeline.splits import make_envmap_splits
    from rendering.hdrio import write_exr, write_png
    from rendering.procedural_envmaps import make_envmap
    from rendering.refmap import render_refmaps

    envmap = make_envmap("studio", 3, 16)
    write_exr(root / "env.exr", envmap)
    write_exr(root / "huge.exr", envmap / envmap.max() * 1e36)
    mirrors = render_refmaps(envmap, np.array([[1, 1, 1, 1, 0, 1]], np.float32), [0.0], refmap_res=16, spp=2)
    mirror = mirrors[0]
    write_exr(root / "mirror.exr", mirror.transpose(1, 2, 0))
    write_exr(root / "huge_mirror.exr", mirror.transpose(1, 2, 0) / mirror.max() * 1e36)

    # A shaded sphere as `estimate` reads it: image, camera-frame normals, mask.
    i, j = np.mgrid[0:32, 0:32]
    x, y = (j + 0.5) / 16 - 1, 1 - (i + 0.5) / 16
    inside = x**2 + y**2 < 0.95
    z = np.sqrt(np.clip(1 - x**2 - y**2, 0, None))
    normals = np.where(inside[..., None], np.stack([x, y, z], axis=-1), 0).astype(np.float32)
    shading = 0.2 + np.clip(normals @ np.array([0.3, 0.6, 0.74]), 0, None)
    image = np.where(inside[..., None], shading[..., None] * np.array([1.0, 0.8, 0.6]), 0).astype(np.float32)
    write_exr(root / "image.exr", image)
    np.save(root / "normals.npy", normals)
    write_png(root / "mask.png", np.where(inside, 255, 0).astype(np.uint8))
    write_exr(root / "black.exr", np.zeros_like(image))
    holed = image.copy()
    holed[16, 16] = np.nan
    write_exr(root / "nan.exr", holed)
    np.save(root / "normals_2d.npy", normals[..., 0])
    write_png(root / "mask_small.png", np.full((8, 8), 255, np.uint8))

    # Files that are not what their names say, or nothing at all.
    pixels = np.linspace(0, 255, 32 * 32 * 3).astype(np.uint8).reshape(32, 32, 3)
    Image.fromarray(pixels).save(root / "png.exr", format="PNG")
    Image.fromarray(pixels).save(root / "jpeg.exr", format="JPEG")
    with zipfile.ZipFile(root / "zip.npy", "w") as archive:
        archive.writestr("normals.npy", (root / "normals.npy").read_bytes())
    (root / "empty.exr").write_bytes(b"")
    (root / "folder.exr").mkdir()
    (root / "a_file").write_text("not a directory\n")
    (root / "inside_out.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")

    tiny_models(root / "models")
    shutil.copytree(root / "models", root / "models_truncated")
    weights = root / "models_truncated" / "drmnet" / "ema.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (root / "models_empty" / "drmnet").mkdir(parents=True)

    drmnet_split(root / "data" / "shards" / "drmnet" / "train")
    drmnet_split(root / "nan_shards" / "drmnet" / "train", nan=True)
    shutil.copytree(root / "data" / "shards" / "drmnet" / "train", root / "truncated_manifest")
    manifest = root / "truncated_manifest" / SHARDS_MANIFEST
    manifest.write_bytes(manifest.read_bytes()[:100])
    escaping = root / "escaping_manifest" / "drmnet" / "train"  # a shard named outside its split
    shutil.copytree(root / "data" / "shards" / "drmnet" / "train", escaping)
    manifest = escaping / SHARDS_MANIFEST
    table = pq.read_table(manifest).to_pylist()
    table.append({**table[0], "shard": "../../../secret.tar"})
    pq.write_table(pa.Table.from_pylist(table, schema=pq.read_schema(manifest)), manifest)
    (root / "secret.tar").write_text("outside the split\n")
    make_envmap_splits(base_params(), root / "data" / "envmaps")
    for folder in ("envmaps", "merl", "meshes/train", "meshes/val", "meshes/test"):
        (root / "data" / "user" / folder).mkdir(parents=True, exist_ok=True)  # empty, as in a clone

    (root / "checkpoints" / "drmnet").mkdir(parents=True)
    (root / "checkpoints" / "drmnet" / "state.pt").write_bytes(b"earlier work: hours of training")
    (root / "eval").mkdir()
    (root / "eval" / "metrics.json").write_text('{"principled": {"drmnet": ')  # cut short
    (root / "eval" / "provenance.json").write_text("{}")
    gallery = root / "eval_gallery" / "gallery" / "principled" / "sample-000"  # an image outside it
    gallery.mkdir(parents=True)
    (root / "eval_gallery" / "metrics.json").write_text('{"principled": {"drmnet": {"mirror_si_rmse": 0.5}}}')
    (root / "eval_gallery" / "provenance.json").write_text("{}")
    image = {"file": "../../../../mask.png", "caption": "input"}
    (gallery / "gallery.json").write_text(json.dumps({"groups": [{"title": "inputs", "images": [image]}]}))
    (root / "eval_list").mkdir()
    (root / "eval_list" / "metrics.json").write_text("[1, 2]")
    (root / "eval_list" / "provenance.json").write_text("{}")


# --- the corpus -----------------------------------------------------------------------------------


def params_case(path: str, value, command: list[str], profile: str = "tiny") -> Case:
    """``params.yaml`` with one bad value, in a workspace holding earlier work (a checkpoint,
    shards, envmap splits) and what the command needs to get going."""

    def setup(cwd: Path) -> None:
        params = with_value(base_params(), path, value)
        params["profile"] = profile
        (cwd / "params.yaml").write_text(yaml.safe_dump(params))

    return Case(
        f"params {path}: {value!r}",
        command,
        ".".join(path.split(".")[-2:]),
        ["data", "checkpoints", "models"],
        setup,
    )


def truncated_user_envmap(cwd: Path) -> None:
    """Two good maps and a truncated one in envmaps.user_dir, beside finished splits."""
    user = cwd / "data" / "user" / "envmaps"
    user.mkdir(parents=True, exist_ok=True)
    for index in range(2):
        shutil.copyfile(cwd / "env.exr", user / f"good{index}.exr")
    (user / "truncated.exr").write_bytes((cwd / "env.exr").read_bytes()[:300])
    (cwd / "params.yaml").write_text(yaml.safe_dump(base_params()))


def unusable_user_envmaps(cwd: Path) -> None:
    """Five unusable files (truncated, empty, wrong aspect) and a good one in envmaps.user_dir."""
    user = cwd / "data" / "user" / "envmaps"
    user.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cwd / "env.exr", user / "good.exr")
    for index in range(3):
        (user / f"empty{index}.exr").write_bytes(b"")
    (user / "truncated.exr").write_bytes((cwd / "env.exr").read_bytes()[:300])
    shutil.copyfile(cwd / "mirror.exr", user / "square.exr")
    (cwd / "params.yaml").write_text(yaml.safe_dump(base_params()))


def damaged_cache_entry(cwd: Path) -> None:
    """A user envmap whose resampled copy in the cache is truncated (a cache file is named by the
    sha256 of the user file and the working height)."""
    import hashlib

    user = cwd / "user"
    user.mkdir()
    shutil.copyfile(cwd / "env.exr", user / "hall.exr")
    digest = hashlib.sha256((user / "hall.exr").read_bytes()).hexdigest()
    (cwd / "cache").mkdir()
    (cwd / "cache" / f"{digest}-h16.npy").write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'")


def corpus() -> list[Case]:
    obs = ["image.exr", "normals.npy", "mask.png", "models"]
    return [
        # params.yaml, each section checked before any work (issue 13's list)
        params_case("profiles.tiny.train_drmnet.total_samples", -100, TRAIN),
        params_case("dataset.shard_sizee", 33, RENDER),
        params_case("train_drmnet.lr", "fast", TRAIN),
        params_case("profiles.tiny.spp", 6.5, RENDER),
        params_case("dataset.measured_fraction.train", 2, RENDER),
        params_case("envmaps.n", -3, SPLITS),
        params_case("profiles.cpu.envmaps.n", -3, SPLITS, profile="cpu"),
        params_case("dataset.shard_size", 0, RENDER),
        params_case("drm.gamma", 2, RENDER),
        params_case("train_drmnet.batch_size", 0, TRAIN),
        params_case("profiles.tiny.illnet.channels", 0, TRAIN),
        params_case("train_drmnet.num_workers", -1, TRAIN),
        params_case("evaluate.samples", 0, EVALUATE),
        params_case("evaluate.primary_metric", "mirror_rmsee", EVALUATE),
        params_case("estimate.erode", True, ["report", "--params", "params.yaml"]),
        Case(
            "params.yaml not YAML",
            SPLITS,
            "params.yaml",
            setup=lambda cwd: (cwd / "params.yaml").write_text("a: [\n"),
        ),
        Case("params.yaml missing", [*RENDER[:-1], "missing.yaml"], "missing.yaml"),
        # files that are not what their names say
        Case(
            "estimate PNG named .exr",
            ["estimate", "png.exr", *OBSERVATION[1:], "--out", "est", *MODELS],
            "png.exr",
            ["png.exr", *obs],
        ),
        Case(
            "estimate JPEG named .exr",
            ["estimate", "jpeg.exr", *OBSERVATION[1:], "--out", "est", *MODELS],
            "jpeg.exr",
            ["jpeg.exr", *obs],
        ),
        Case(
            "image-to-refmap PNG named .exr",
            ["image-to-refmap", "png.exr", *OBSERVATION[1:], "--out", "o", "--refmap-res", "16"],
            "png.exr",
            ["png.exr", *obs],
        ),
        Case(
            "image-to-refmap JPEG named .exr",
            ["image-to-refmap", "jpeg.exr", *OBSERVATION[1:], "--out", "o", "--refmap-res", "16"],
            "jpeg.exr",
            ["jpeg.exr", *obs],
        ),
        Case(
            "mirror-to-envmap PNG named .exr",
            ["mirror-to-envmap", "png.exr", "--out", "e.exr"],
            "png.exr",
            ["png.exr"],
        ),
        Case(
            "mirror-to-envmap JPEG named .exr",
            ["mirror-to-envmap", "jpeg.exr", "--out", "e.exr"],
            "jpeg.exr",
            ["jpeg.exr"],
        ),
        Case(
            "relight envmap JPEG named .exr",
            [*RELIGHT, "--envmap", "jpeg.exr", "--out", "r.exr"],
            "jpeg.exr",
            ["jpeg.exr"],
        ),
        Case(
            "image-to-refmap zip named .npy",
            ["image-to-refmap", "image.exr", "zip.npy", "mask.png", "--out", "o", "--refmap-res", "16"],
            "zip.npy",
            ["zip.npy", *obs],
        ),
        Case(
            "estimate zip named .npy",
            ["estimate", "image.exr", "zip.npy", "mask.png", "--out", "est", *MODELS],
            "zip.npy",
            ["zip.npy", *obs],
        ),
        # truncated, empty, missing files; directories where files are expected
        Case(
            "estimate truncated ema.safetensors",
            [
                "estimate",
                *OBSERVATION,
                "--out",
                "est",
                "--model",
                "models_truncated/drmnet",
                "--obsnet",
                "models/obsnet",
            ],
            "ema.safetensors",
            [*obs, "models_truncated"],
        ),
        Case(
            "export-model truncated ema.safetensors",
            ["export-model", "models_truncated/drmnet", "--out", "exported"],
            "ema.safetensors",
            ["models_truncated"],
        ),
        Case(
            "export-model empty directory",
            ["export-model", "models_empty/drmnet", "--out", "exported"],
            "models_empty/drmnet",
            ["models_empty"],
        ),
        Case(
            "estimate missing model directory",
            [
                "estimate",
                *OBSERVATION,
                "--out",
                "est",
                "--model",
                "nowhere/drmnet",
                "--obsnet",
                "models/obsnet",
            ],
            "nowhere/drmnet",
            obs,
        ),
        Case(
            "verify-shards truncated manifest-shards.parquet",
            ["verify-shards", "truncated_manifest"],
            "manifest-shards.parquet",
            ["truncated_manifest"],
        ),
        Case("verify-shards missing directory", ["verify-shards", "no_shards"], "no_shards"),
        Case(
            "verify-shards shard named ../../../secret.tar",
            ["verify-shards", "escaping_manifest"],
            "manifest-shards.parquet",
            ["escaping_manifest", "secret.tar"],
        ),
        Case(
            "train on a manifest naming ../../../secret.tar",
            [*TRAIN, "--data", "escaping_manifest/drmnet/train"],
            "manifest-shards.parquet",
            ["escaping_manifest", "secret.tar", "params.yaml"],
        ),
        Case(
            "report gallery image outside its directory",
            ["report", "--eval", "eval_gallery", "--out", "reports"],
            "gallery.json",
            ["eval_gallery", "mask.png"],
        ),
        Case(
            "report over bad JSON", ["report", "--eval", "eval", "--out", "reports"], "metrics.json", ["eval"]
        ),
        Case(
            "report over a JSON list",
            ["report", "--eval", "eval_list", "--out", "reports"],
            "metrics.json",
            ["eval_list"],
        ),
        Case("report missing evaluation", ["report", "--eval", "no_eval", "--out", "reports"], "no_eval"),
        Case(
            "image-to-refmap empty .exr",
            ["image-to-refmap", "empty.exr", *OBSERVATION[1:], "--out", "o", "--refmap-res", "16"],
            "empty.exr",
            ["empty.exr", *obs],
        ),
        Case(
            "image-to-refmap missing image",
            ["image-to-refmap", "missing.exr", *OBSERVATION[1:], "--out", "o", "--refmap-res", "16"],
            "missing.exr",
            obs,
        ),
        Case(
            "mirror-to-envmap directory named .exr",
            ["mirror-to-envmap", "folder.exr", "--out", "e.exr"],
            "folder.exr",
            ["folder.exr"],
        ),
        Case(
            "relight missing envmap", [*RELIGHT, "--envmap", "missing.exr", "--out", "r.exr"], "missing.exr"
        ),
        Case(
            "relight missing mesh",
            [*RELIGHT[:3], "--mesh", "missing.obj", "--envmap", "env.exr", "--out", "r.exr"],
            "missing.obj",
            ["env.exr"],
        ),
        Case(
            "image-to-refmap normals (H, W)",
            [
                "image-to-refmap",
                "image.exr",
                "normals_2d.npy",
                "mask.png",
                "--out",
                "o",
                "--refmap-res",
                "16",
            ],
            "normals_2d.npy",
            ["normals_2d.npy", *obs],
        ),
        Case(
            "image-to-refmap mask of another size",
            [
                "image-to-refmap",
                "image.exr",
                "normals.npy",
                "mask_small.png",
                "--out",
                "o",
                "--refmap-res",
                "16",
            ],
            "mask_small.png",
            ["mask_small.png", *obs],
        ),
        Case(
            "image-to-refmap NaN without --repair",
            ["image-to-refmap", "nan.exr", *OBSERVATION[1:], "--out", "o", "--refmap-res", "16"],
            "nan.exr",
            ["nan.exr", *obs],
        ),
        Case(
            "estimate NaN without --repair",
            ["estimate", "nan.exr", *OBSERVATION[1:], "--out", "est", *MODELS],
            "nan.exr",
            ["nan.exr", *obs],
        ),
        # --out pointing at a file
        Case(
            "image-to-refmap --out a file",
            ["image-to-refmap", *OBSERVATION, "--refmap-res", "16", "--out", "a_file"],
            "a_file",
            ["a_file", *obs],
        ),
        Case(
            "estimate --out a file",
            ["estimate", *OBSERVATION, "--out", "a_file", *MODELS],
            "a_file",
            ["a_file", *obs],
        ),
        Case(
            "make-envmaps --out a file",
            ["make-envmaps", "--n", "1", "--envmap-height", "8", "--out", "a_file"],
            "a_file",
            ["a_file"],
        ),
        Case(
            "export-model --out a file",
            ["export-model", "models/drmnet", "--out", "a_file"],
            "a_file",
            ["a_file", "models"],
        ),
        Case(
            "report --out a file",
            ["report", "--eval", "eval_list", "--out", "a_file"],
            "a_file",
            ["a_file", "eval_list"],
        ),
        Case(
            "render-object --out a file",
            ["render-object", *RELIGHT[1:], "--envmap", "env.exr", "--out", "a_file"],
            "a_file",
            ["a_file", "env.exr"],
        ),
        Case(
            "mirror-to-envmap --out below a file",
            ["mirror-to-envmap", "mirror.exr", "--out", "a_file/e.exr"],
            "a_file",
            ["a_file", "mirror.exr"],
        ),
        # numbers out of range
        Case(
            "image-to-refmap --refmap-res 100000",
            ["image-to-refmap", *OBSERVATION, "--out", "o", "--refmap-res", "100000"],
            "--refmap-res",
            obs,
        ),
        Case(
            "relight --spp -1",
            [*RELIGHT[:-2], "--spp", "-1", "--envmap", "env.exr", "--out", "r.exr"],
            "--spp",
            ["env.exr"],
        ),
        Case(
            "mirror-to-envmap --envmap-height 0",
            ["mirror-to-envmap", "mirror.exr", "--out", "e.exr", "--envmap-height", "0"],
            "--envmap-height",
            ["mirror.exr"],
        ),
        Case(
            "render-refmap --refmap-res 100000",
            ["render-refmap", "env.exr", "--material", MIRROR, "--out", "m.exr", "--refmap-res", "100000"],
            "--refmap-res",
            ["env.exr"],
        ),
        Case(
            "estimate --samples 0",
            ["estimate", *OBSERVATION, "--out", "est", "--samples", "0", *MODELS],
            "--samples",
            obs,
        ),
        Case(
            "relight material out of [0, 1]",
            [*RELIGHT[:2], "2,0.5,0.5,0.5,0.4,0.5", *RELIGHT[3:], "--envmap", "env.exr", "--out", "r.exr"],
            "--material",
            ["env.exr"],
        ),
        Case(
            "relight material of 3 values",
            [*RELIGHT[:2], "0.5,0.5,0.5", *RELIGHT[3:], "--envmap", "env.exr", "--out", "r.exr"],
            "--material",
            ["env.exr"],
        ),
        Case(
            "relight unknown --shape",
            [*RELIGHT[:3], "--shape", "cube", *RELIGHT[5:], "--envmap", "env.exr", "--out", "r.exr"],
            "cube",
            ["env.exr"],
        ),
        # contents: no light, overflow, NaN shards, a broken user envmap
        Case(
            "estimate an all-black image",
            ["estimate", "black.exr", *OBSERVATION[1:], "--out", "est", *MODELS],
            "black.exr",
            ["black.exr", *obs],
        ),
        Case(
            "image-to-refmap an all-black image",
            ["image-to-refmap", "black.exr", *OBSERVATION[1:], "--out", "o", "--refmap-res", "16"],
            "black.exr",
            ["black.exr", *obs],
        ),
        Case(
            "mirror-to-envmap a refmap of 1e36",
            ["mirror-to-envmap", "huge_mirror.exr", "--out", "e.exr"],
            "huge_mirror.exr",
            ["huge_mirror.exr"],
        ),
        Case(
            "make-envmap-splits 5 unusable files in user_dir",
            SPLITS,
            "empty0.exr",
            ["data", "env.exr", "mirror.exr"],
            unusable_user_envmaps,
        ),
        Case(
            "make-envmaps damaged cache entry",
            [
                "make-envmaps",
                "--n",
                "0",
                "--from-dir",
                "user",
                "--cache-dir",
                "cache",
                "--envmap-height",
                "16",
                "--out",
                "o",
            ],
            "cache/",
            ["env.exr"],
            damaged_cache_entry,
            repaired=True,
        ),
        Case(
            "relight an envmap of 1e36",
            [*RELIGHT, "--envmap", "huge.exr", "--out", "r.exr"],
            "huge.exr",
            ["huge.exr"],
        ),
        Case(
            "render-refmap an envmap of 1e36",
            [
                "render-refmap",
                "huge.exr",
                "--material",
                MIRROR,
                "--out",
                "m.exr",
                "--refmap-res",
                "16",
                "--spp",
                "1",
            ],
            "huge.exr",
            ["huge.exr"],
        ),
        Case(
            "make-envmap-splits truncated .exr in user_dir",
            SPLITS,
            "truncated.exr",
            ["data", "env.exr"],
            truncated_user_envmap,
        ),
        Case(
            "verify-shards NaN refmaps",
            ["verify-shards", "nan_shards"],
            "refmap_k",
            ["nan_shards"],
            report=True,
        ),
        Case(
            "train on NaN refmaps",
            [*TRAIN, "--data", "nan_shards/drmnet/train"],
            "nan_shards/drmnet/train",  # the data at fault (verify-shards names the field)
            ["nan_shards", "params.yaml"],
        ),
    ]


# --- running and judging --------------------------------------------------------------------------


def classify(case: Case, code: int | None, stdout: str, stderr: str) -> str:
    """One of OUTCOMES (see the module docstring); ``code`` None: the case timed out."""
    if code is None:
        return "timeout"
    if code == 0:
        warned = [line for line in stderr.splitlines() if line.startswith("warning: ") and case.about in line]
        return "clear" if case.repaired and warned else "silent"
    traceback = "Traceback (most recent call last)" in stderr or "Traceback (most recent call last)" in stdout
    if case.report:
        named = any(line.strip().startswith("BAD ") and case.about in line for line in stdout.splitlines())
        if named and not traceback:
            return "clear"
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("warning: ")]
    errors = [line for line in lines if line.startswith("error: ") and ": " in line[len("error: ") :]]
    if errors and code == 2:
        named = case.about in errors[-1]
        if traceback:  # the error line may be followed by Prefect's log of the failed flow run
            return "clear after traceback" if named else "missed"
        if len(lines) == 1:
            return "clear" if named else "missed"
    return "traceback" if traceback else "unclear"


def first_line(stderr: str, stdout: str) -> str:
    """What the user reads first: the error line if any, else the exception of a traceback, else
    the first line of stderr (Prefect's log lines left out)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not PREFECT_LOG.match(line)]
    errors = [line for line in lines if line.startswith("error: ")]
    bad = [line.strip() for line in stdout.splitlines() if line.strip().startswith("BAD ")]
    warnings = [line for line in lines if line.startswith("warning: ")]
    if errors or bad or warnings:
        return (errors or bad or warnings)[0]
    if any(line.startswith("Traceback") for line in lines):
        return lines[-1]  # the exception
    return lines[0] if lines else ""


def run_case(case: Case, fixtures: Path, tree: Path, work: Path, timeout: float) -> dict:
    """Run one case in a fresh directory under ``work``; its outcome and what it printed."""
    cwd = Path(tempfile.mkdtemp(prefix="case-", dir=work))
    for name in case.needs:
        source = fixtures / name
        if name == "params.yaml":
            (cwd / name).write_text(yaml.safe_dump(base_params()))
        elif source.is_dir():
            shutil.copytree(source, cwd / name)
        else:
            shutil.copy2(source, cwd / name)
    if case.setup is not None:
        case.setup(cwd)
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}",
        "PREFECT_HOME": str(work / "prefect"),
        "COLUMNS": "200",
    }
    env.pop("DRMNET_PARAMS", None)
    command = [sys.executable, "-c", entry_point(tree), *case.args]
    started = time.monotonic()
    # A session of its own, so that what the case leaves running (an old tree's Prefect server
    # or loader workers) can be found and ended with it.
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        code = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        code, stderr = None, f"(still running after {timeout:.0f} s)\n{stderr}"
    leftover = end_session(process.pid)
    return {
        "case": case.name,
        "command": "drmnet " + " ".join(case.args),
        "outcome": classify(case, code, stdout, stderr),
        "exit": code,
        "first_line": first_line(stderr, stdout),
        "stderr": stderr[-4000:],
        "stdout": stdout[-2000:],
        "seconds": round(time.monotonic() - started, 1),
        "leftover_processes": leftover,
    }


def end_session(session: int) -> bool:
    """End what a case left running in its session (after 5 s of grace: a child may still be
    exiting on its own, e.g. the watchdog); whether anything was left."""
    for _ in range(10):
        try:
            os.killpg(session, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.5)
    try:
        os.killpg(session, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def entry_point(tree: Path) -> str:
    """`drmnet`: the entry point of ``tree``, ahead of the venv's editable install."""
    return f"import sys; sys.path.insert(0, {str(tree)!r}); from pipeline.cli import main; sys.exit(main())"


def check_tree(tree: Path) -> None:
    """The code a subprocess imports is ``tree``'s, not the venv's editable checkout."""
    probe = f"import sys; sys.path.insert(0, {str(tree)!r}); import pipeline, rendering, models; "
    probe += "print(pipeline.__file__, rendering.__file__, models.__file__)"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    files = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    for path in files.stdout.split():
        if not Path(path).resolve().is_relative_to(tree.resolve()):
            raise SystemExit(f"error: {tree}: the subprocess imports {path}, not this tree's code")


def table(rows: list[dict], width: int = 90) -> list[str]:
    lines = [f"{'case':48}  {'outcome':22}  first line of stderr", "-" * 140]
    for row in rows:
        text = row["first_line"]
        text = text if len(text) <= width else text[: width - 1] + "…"
        lines.append(f"{row['case'][:48]:48}  {row['outcome']:22}  {text}")
        lines.append(f"{'':4}{row['command'][:136]}")
    totals = Counter(row["outcome"] for row in rows)
    lines.append("")
    lines.append(
        f"{len(rows)} bad inputs: " + ", ".join(f"{outcome} {totals[outcome]}" for outcome in OUTCOMES)
    )
    left = sum(bool(row["leftover_processes"]) for row in rows)
    lines.append(f"cases that left processes running after their command ended (then killed): {left}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=None, help="run the cases whose name holds this text")
    parser.add_argument(
        "--repo", type=Path, default=REPO, help="tree whose `drmnet` runs (default: this one)"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a case may run")
    parser.add_argument("--keep", type=Path, default=None, help="keep the case directories here")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows and totals to this file")
    args = parser.parse_args()

    tree = args.repo.resolve()
    check_tree(tree)
    cases = [case for case in corpus() if args.only is None or args.only in case.name]
    if not cases:
        raise SystemExit(f"error: --only {args.only!r}: no case matches")
    work = Path(tempfile.mkdtemp(prefix="bad_inputs-", dir=args.keep))
    try:
        fixtures = work / "fixtures"
        fixtures.mkdir()
        build_fixtures(fixtures)
        PARAMS_TREE[0] = tree  # the fixtures follow this checkout's params, the cases the tree's
        rows = []
        for case in cases:
            rows.append(run_case(case, fixtures, tree, work, args.timeout))
            print(f"{rows[-1]['outcome']:22} {rows[-1]['seconds']:6.1f} s  {case.name}", file=sys.stderr)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    totals = Counter(row["outcome"] for row in rows)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        summary = {"tree": str(tree), "totals": {o: totals[o] for o in OUTCOMES}, "cases": rows}
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"drmnet of {tree}")
    print("\n".join(table(rows)))


if __name__ == "__main__":
    main()
