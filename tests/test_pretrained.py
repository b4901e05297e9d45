"""Shipped models: `drmnet export-model` turns a training checkpoint into a small model directory
that `drmnet estimate` loads with the same results, and `drmnet estimate` without `--model` finds
a model on a fresh clone (the registry's champion, else the shipped one, else a clear error).
Tiny networks trained for a few steps on synthetic batches: the point is the plumbing."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models.config import DiffusionConfig, DRMConfig, DRMNetConfig, ObsNetConfig, UNetConfig

R = 16
UNET = UNetConfig(channels=8, multipliers=(1, 2), res_blocks=1, attention=(), head_channels=8)
SYNTHETIC_DATA = {"data": {"source": "synthetic batches (tests/test_pretrained.py)"}}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def synthetic_batches(net: str, n: int = 8, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Two batches with the keys of pipeline/reader.py's batches and random content."""
    g = torch.Generator().manual_seed(seed)

    def refmap() -> torch.Tensor:
        return 0.05 + torch.rand(n, 3, R, R, generator=g)

    out = []
    for _ in range(2):
        if net == "drmnet":
            z_obs = torch.rand(n, 6, generator=g)
            out.append(
                {
                    "refmap_obs": refmap(),
                    "refmap_k": refmap(),
                    "refmap_next": refmap(),
                    "refmap_mirror": refmap(),
                    "z_obs": z_obs,
                    "z_k": z_obs,
                    "z_next": z_obs,
                    "k": torch.full((n,), 3),
                    "K": torch.full((n,), 5),
                    "view_azimuth": torch.zeros(n),
                }
            )
        else:
            mask = (torch.rand(n, 1, R, R, generator=g) > 0.3).float()
            full = refmap()
            out.append({"refmap_obs": full, "observed": full * mask, "observed_mask": mask})
    return out


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, one_torch_thread) -> dict[str, Path]:
    """Training checkpoints of a tiny DRMNet and ObsNet (state.pt, model + EMA weights, config)."""
    from pipeline.training.families import DRMNet, ObsNet
    from pipeline.training.loop import training_loop

    root = tmp_path_factory.mktemp("pretrained") / "checkpoints"
    short = dict(total_samples=32, warmup_samples=8, ema_halflife_samples=8, tick_samples=16, preview_ticks=0)
    drmnet = DRMNetConfig(resolution=R, illnet=UNET, refnet=UNET, drm=DRMConfig(max_steps=4))
    training_loop(
        DRMNet(drmnet),
        lambda epoch: synthetic_batches("drmnet", seed=epoch),
        root / "drmnet",
        fingerprint=SYNTHETIC_DATA,
        log=lambda line: None,
        **short,
    )
    obsnet = ObsNetConfig(resolution=R, unet=UNET, diffusion=DiffusionConfig(sampling_steps=3))
    training_loop(
        ObsNet(obsnet),
        lambda epoch: synthetic_batches("obsnet", seed=epoch),
        root / "obsnet",
        fingerprint=SYNTHETIC_DATA,
        log=lambda line: None,
        **short,
    )
    return {"drmnet": root / "drmnet", "obsnet": root / "obsnet"}


@pytest.fixture(scope="module")
def sphere(tmp_path_factory) -> dict[str, Path]:
    """An object as `drmnet estimate` reads it: a shaded sphere (no rendering needed), and a
    params.yaml that keeps the material-sphere previews tiny."""
    from rendering.hdrio import write_exr, write_png

    root = tmp_path_factory.mktemp("sphere")
    i, j = np.mgrid[0:32, 0:32]
    x, y = (j + 0.5) / 16 - 1, 1 - (i + 0.5) / 16  # orthographic view of a unit sphere
    inside = x**2 + y**2 < 0.95
    z = np.sqrt(np.clip(1 - x**2 - y**2, 0, None))
    normals = np.where(inside[..., None], np.stack([x, y, z], axis=-1), 0).astype(np.float32)
    shading = 0.2 + np.clip(normals @ np.array([0.3, 0.6, 0.74]), 0, None)
    image = np.where(inside[..., None], shading[..., None] * np.array([1.0, 0.8, 0.6]), 0)
    write_exr(root / "image.exr", image.astype(np.float32))
    np.save(root / "normals.npy", normals)
    write_png(root / "mask.png", np.where(inside, 255, 0).astype(np.uint8))
    (root / "params.yaml").write_text(
        "estimate: {samples: 2, envmap_height: 8, sphere_res: 8, sphere_spp: 1}\n"
    )
    return {
        "files": [root / "image.exr", root / "normals.npy", root / "mask.png"],
        "params": root / "params.yaml",
    }


@pytest.fixture
def fresh_clone(tmp_path, monkeypatch) -> Path:
    """A working directory with no MLflow store, and the shipped models looked for under
    tmp_path/pretrained (empty until a test exports into it)."""
    import pipeline.pretrained

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(pipeline.pretrained, "PRETRAINED_DIR", tmp_path / "pretrained")
    return tmp_path


def run_cli(args: list, monkeypatch, capsys) -> tuple[int, str, str]:
    """Run `drmnet ARGS` through the real entry point; (exit code, stdout, stderr)."""
    from pipeline.cli import main

    monkeypatch.setattr(sys, "argv", ["drmnet", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    code = exit_info.value.code
    return (0 if code is None else int(code)), captured.out, captured.err


def estimate_args(sphere: dict, out: Path) -> list:
    return ["estimate", *sphere["files"], "--out", out, "--params", sphere["params"]]


def outputs(out: Path) -> dict[str, np.ndarray]:
    """The samples' mirror refmaps and materials that `drmnet estimate` wrote."""
    from rendering.hdrio import read_hdr

    found = {}
    for i in range(2):
        found[f"mirror {i}"] = read_hdr(out / f"sample_{i}" / "mirror.exr")
        found[f"z {i}"] = np.array(json.loads((out / f"sample_{i}" / "material.json").read_text())["z"])
    return found


def test_an_exported_model_is_the_inference_part_of_its_checkpoint(
    checkpoints, tmp_path, monkeypatch, capsys
):
    from models.estimator import Estimator

    out = tmp_path / "pretrained" / "cpu"
    for net in ("drmnet", "obsnet"):
        code, stdout, stderr = run_cli(
            ["export-model", checkpoints[net], "--out", out / net], monkeypatch, capsys
        )
        assert code == 0, stdout + stderr
        assert "ema.safetensors" in stdout
        # config + EMA weights + provenance; no optimiser state, no training weights.
        assert sorted(p.name for p in (out / net).iterdir()) == [
            "config.json",
            "ema.safetensors",
            "provenance.json",
        ]
        provenance = json.loads((out / net / "provenance.json").read_text())
        assert provenance["samples"] == 32 and provenance["complete"] is True
        assert provenance["fingerprint"]["data"] == SYNTHETIC_DATA["data"]
        assert provenance["fingerprint"]["network"]["resolution"] == R

    refmap = torch.rand(2, 3, R, R, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 1, R, R)
    mask[..., : R // 3] = 0.0  # holes: ObsNet completes them first
    runs = [
        Estimator.from_directories(d["drmnet"], d["obsnet"], "cpu").estimate(refmap, mask, 2, seed=3)
        for d in (checkpoints, {"drmnet": out / "drmnet", "obsnet": out / "obsnet"})
    ]
    for name in ("mirror", "material", "steps", "completed"):
        torch.testing.assert_close(getattr(runs[0], name), getattr(runs[1], name), rtol=0, atol=0)


def test_a_float16_export_halves_the_weights_and_loads_as_float32(checkpoints, tmp_path, monkeypatch, capsys):
    """`--dtype float16` stores each weight rounded to half precision (what the shipped model
    uses to stay a few MB); the networks load it back as float32."""
    from safetensors.torch import load_file

    from models.weights import load_networks

    out = tmp_path / "half"
    code, stdout, stderr = run_cli(
        ["export-model", checkpoints["drmnet"], "--out", out, "--dtype", "float16"], monkeypatch, capsys
    )
    assert code == 0, stdout + stderr
    full, half = load_file(checkpoints["drmnet"] / "ema.safetensors"), load_file(out / "ema.safetensors")
    assert full.keys() == half.keys()
    for key, value in full.items():
        assert half[key].dtype == torch.float16, key
        torch.testing.assert_close(half[key], value.half(), rtol=0, atol=0)
    sizes = [(d / "ema.safetensors").stat().st_size for d in (out, checkpoints["drmnet"])]
    assert sizes[0] < 0.6 * sizes[1], sizes
    assert json.loads((out / "provenance.json").read_text())["dtype"] == "float16"
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "ema.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask  # not safetensors' 0600
    _, nets = load_networks(out)
    assert all(p.dtype == torch.float32 for net in nets.values() for p in net.parameters())

    # Exported again from the model directory (e.g. a shipped float32 model halved): its origin stays.
    code, _, stderr = run_cli(["export-model", out, "--out", tmp_path / "again"], monkeypatch, capsys)
    assert code == 0, stderr
    first = json.loads((out / "provenance.json").read_text())
    again = json.loads((tmp_path / "again" / "provenance.json").read_text())
    assert again["exported_from"] == str(out)
    for key in ("source", "samples", "complete", "fingerprint", "git_commit"):
        assert again[key] == first[key], key

    code, _, stderr = run_cli(
        ["export-model", checkpoints["drmnet"], "--out", tmp_path / "bad", "--dtype", "int8"],
        monkeypatch,
        capsys,
    )
    assert code == 2 and "--dtype: 'int8' is not one of float32, float16" in stderr, stderr


def test_export_refuses_a_directory_without_a_model(tmp_path, monkeypatch, capsys):
    (tmp_path / "empty").mkdir()
    code, _, stderr = run_cli(
        ["export-model", tmp_path / "empty", "--out", tmp_path / "m"], monkeypatch, capsys
    )
    assert code == 2 and "has no config.json" in stderr, stderr


def test_estimate_without_a_model_uses_the_shipped_one(checkpoints, sphere, fresh_clone, monkeypatch, capsys):
    """No registry on a fresh clone: the shipped pretrained/cpu models, named on stderr, give
    what the checkpoints they were exported from give; nothing is added to the working tree."""
    from pipeline.pretrained import export_model

    for net in ("drmnet", "obsnet"):
        export_model(checkpoints[net], fresh_clone / "pretrained" / "cpu" / net)

    code, stdout, stderr = run_cli(estimate_args(sphere, fresh_clone / "shipped"), monkeypatch, capsys)
    assert code == 0, stdout + stderr
    shipped = fresh_clone / "pretrained" / "cpu"
    assert f"drmnet: {shipped / 'drmnet'} (the shipped cpu model" in stderr, stderr
    assert f"obsnet: {shipped / 'obsnet'} (the shipped cpu model" in stderr, stderr
    assert not (fresh_clone / "mlflow.db").exists()
    summary = json.loads((fresh_clone / "shipped" / "estimate.json").read_text())
    assert summary["inputs"]["model"] == str(shipped / "drmnet")

    explicit = ["--model", checkpoints["drmnet"], "--obsnet", checkpoints["obsnet"]]
    code, stdout, stderr = run_cli(
        [*estimate_args(sphere, fresh_clone / "explicit"), *explicit], monkeypatch, capsys
    )
    assert code == 0, stdout + stderr
    assert "shipped" not in stderr and "champion" not in stderr, stderr
    from_shipped, from_checkpoints = outputs(fresh_clone / "shipped"), outputs(fresh_clone / "explicit")
    for name, value in from_checkpoints.items():
        np.testing.assert_array_equal(from_shipped[name], value, err_msg=name)


def test_an_explicit_model_needs_no_shipped_one(checkpoints, sphere, fresh_clone, monkeypatch, capsys):
    args = ["--model", checkpoints["drmnet"], "--obsnet", checkpoints["obsnet"]]
    code, stdout, stderr = run_cli([*estimate_args(sphere, fresh_clone / "out"), *args], monkeypatch, capsys)
    assert code == 0, stdout + stderr


def test_no_registry_and_no_shipped_model_says_how_to_get_one(sphere, fresh_clone, monkeypatch, capsys):
    code, _, stderr = run_cli(estimate_args(sphere, fresh_clone / "out"), monkeypatch, capsys)
    assert code == 2, stderr
    assert stderr.startswith("error: --model: no drmnet model"), stderr
    assert "make demo" in stderr and "drmnet train drmnet" in stderr, stderr
    assert not (fresh_clone / "out").exists() and not (fresh_clone / "mlflow.db").exists()


def test_the_registry_champion_comes_before_the_shipped_model(checkpoints, fresh_clone, monkeypatch):
    import pipeline.pretrained
    from pipeline.pretrained import default_model, export_model

    export_model(checkpoints["drmnet"], fresh_clone / "pretrained" / "cpu" / "drmnet")
    assert default_model("drmnet")[0] == str(fresh_clone / "pretrained" / "cpu" / "drmnet")

    monkeypatch.setattr(pipeline.pretrained, "registry_champion", lambda net: f"models:/{net}@champion")
    reference, line = default_model("drmnet")
    assert reference == "models:/drmnet@champion" and "the registry's champion" in line


def test_an_averaged_export_is_the_mean_of_the_runs_weights(checkpoints, tmp_path, monkeypatch, capsys):
    """`--average` writes the per-tensor mean of the runs' EMA weights (weight averaging) and names
    every run in provenance.json; a run of another network is refused, naming it."""
    from safetensors.torch import load_file, save_file

    first = load_file(checkpoints["drmnet"] / "ema.safetensors")
    other = tmp_path / "other"  # the same network, every weight 1.0 higher
    other.mkdir()
    (other / "config.json").write_bytes((checkpoints["drmnet"] / "config.json").read_bytes())
    save_file({k: v + 1.0 for k, v in first.items()}, other / "ema.safetensors", metadata={"samples": "64"})

    out = tmp_path / "soup"
    code, stdout, stderr = run_cli(
        ["export-model", checkpoints["drmnet"], "--average", other, "--out", out], monkeypatch, capsys
    )
    assert code == 0, stdout + stderr
    soup = load_file(out / "ema.safetensors")
    assert soup.keys() == first.keys()
    for key, value in first.items():
        torch.testing.assert_close(soup[key], value + 0.5)
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["source"] == str(checkpoints["drmnet"]) and provenance["complete"] is True
    assert [(o["source"], o["samples"]) for o in provenance["averaged_with"]] == [(str(other), 64)]

    code, _, stderr = run_cli(
        [
            "export-model",
            checkpoints["drmnet"],
            "--average",
            checkpoints["obsnet"],
            "--out",
            tmp_path / "bad",
        ],
        monkeypatch,
        capsys,
    )
    assert code == 2 and f"{checkpoints['obsnet']}: is another network" in stderr, stderr
    assert not (tmp_path / "bad" / "ema.safetensors").exists()
