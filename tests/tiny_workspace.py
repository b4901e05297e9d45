"""What the estimate, evaluation, report, quality-benchmark and bad-input tests share: tiny
untrained models, a studio envmap, a tiny test split made the way the dataset stage makes it, and
the `drmnet` command run in this process."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

RES = 16  # refmap resolution of the tiny models


def save_tiny_models(directory: Path, res: int = RES, seed: int = 0) -> tuple[Path, Path]:
    """Untrained tiny DRMNet and ObsNet checkpoint directories (config.json + ema.safetensors)."""
    import torch

    from models.config import DiffusionConfig, DRMConfig, DRMNetConfig, ObsNetConfig, UNetConfig
    from models.weights import CONFIG_FILE, WEIGHTS_FILE, build_networks, save_config, save_weights

    torch.manual_seed(seed)
    unet = UNetConfig(channels=8, multipliers=(1, 2), res_blocks=1, attention=(), head_channels=8)
    configs = {
        "drmnet": DRMNetConfig(resolution=res, illnet=unet, refnet=unet, drm=DRMConfig(max_steps=4)),
        "obsnet": ObsNetConfig(resolution=res, unet=unet, diffusion=DiffusionConfig(sampling_steps=3)),
    }
    for name, config in configs.items():
        save_weights(directory / name / WEIGHTS_FILE, build_networks(config))
        save_config(directory / name / CONFIG_FILE, config)
    return directory / "drmnet", directory / "obsnet"


def studio_envmap(height: int = 16) -> np.ndarray:
    from rendering.procedural_envmaps import make_envmap

    return make_envmap("studio", 3, height)


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """Run `drmnet ARGS` in this process through the real entry point; (exit code, output)."""
    from pipeline.cli import main

    monkeypatch.setattr(sys, "argv", ["drmnet", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    code = exit_info.value.code
    return (0 if code is None else int(code)), captured.out + captured.err


def make_test_data(root: Path) -> dict:
    """A test split made the way the dataset stage makes it, tiny: studio envmaps (the envmap
    split function) and two principled test samples in one shard (the sample function and the
    shard writer). Returns the params.yaml-like dict the data follows, with an evaluate section."""
    from pipeline.samples import make_sample, plan_sample, settings_from_params
    from pipeline.shards import sample_key, shard_name, write_shard
    from pipeline.splits import make_envmap_splits, split_envmap_ids, split_envmap_path
    from rendering.envmap import read_envmap

    params = {
        "profile": "tiny",
        "profiles": {"tiny": {"refmap_res": RES, "spp": 16}},
        "envmaps": {"n": 5, "seed": 0, "kinds": {"studio": 1.0}, "envmap_height": 16},
        "envmaps_split": {"seed": 0, "proportions": {"train": 0.6, "val": 0.2, "test": 0.2}},
        "dataset": {"samples": {"drmnet": {"test": 2}}, "object_res": 40, "object_spp": 8, "shapes": ["blob"]},  # noqa: E501
        "evaluate": {
            "shards": str(root / "shards"), "envmaps": str(root / "envmaps"), "items": 1, "samples": 2,
            "envmap_height": 8, "sphere_res": 16, "sphere_spp": 4, "rerender_spp": 4, "gallery": 1,
            "relight_res": 16, "relight_spp": 2, "measured_materials": 1, "object_res": 40, "object_spp": 8,
        },
    }  # fmt: skip
    make_envmap_splits(params, root / "envmaps")
    ids = split_envmap_ids(root / "envmaps", "test")
    settings = settings_from_params(params)
    samples = []
    for index in range(2):
        plan = plan_sample(settings, "drmnet", "test", index, ids)
        envmap = read_envmap(split_envmap_path(root / "envmaps", "test", plan.envmap_id))
        samples.append((sample_key("drmnet", "test", index), make_sample(plan, envmap, settings)))
    write_shard(root / "shards" / "drmnet" / "test" / shard_name("drmnet", "test", 0), samples)
    return params


def make_measured_test_data(root: Path, params: dict) -> Path:
    """The measured test set's shards of ``make_test_data``'s workspace, made by the shard jobs of
    `drmnet render-dataset --dataset measured --split test` (without Prefect); returns their
    split directory, ``<root>/shards/measured/test``."""
    from pipeline.flows.render_dataset import finish_split_dir, plan_shards, prepare_split_dir, render_shard
    from pipeline.measured_set import MEASURED, MeasuredSetSettings
    from pipeline.samples import settings_from_params
    from rendering.variant import resolve_variant

    jobs = plan_shards(
        settings_from_params(params), MEASURED, "test", root / "shards", root / "envmaps",
        resolve_variant(None), MeasuredSetSettings.from_params(params),
    )  # fmt: skip
    prepare_split_dir(jobs[0].split_dir)
    for job in jobs:
        render_shard(job)
    finish_split_dir(jobs)
    return Path(jobs[0].split_dir)
