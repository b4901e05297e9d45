"""`drmnet estimate`: an object image → N samples of envmap and material, written as files, and
friendly errors for every kind of bad input. Tiny untrained networks: the point is the plumbing
(intensity handling, determinism, file layout, error paths), not the quality of the answer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tiny_workspace import RES, run_cli, save_tiny_models, studio_envmap

MATERIAL = np.array([0.2, 0.8, 0.5, 0.3, 0.35, 0.5], dtype=np.float32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, one_torch_thread):
    """Tiny models and an object rendered under a studio envmap, saved as `drmnet estimate` reads it."""
    from rendering.objects import render_object, save_object
    from rendering.shapes import make_shape

    root = tmp_path_factory.mktemp("estimate")
    drmnet, obsnet = save_tiny_models(root / "models")
    obj = render_object(studio_envmap(), make_shape("blob", 1), MATERIAL, object_res=40, spp=8, seed=0)
    save_object(root / "object", obj)
    return {"root": root, "drmnet": drmnet, "obsnet": obsnet, "object": root / "object", "obj": obj}


def test_estimate_writes_every_sample_and_their_mean_and_spread(workspace, monkeypatch, capsys):
    from rendering.hdrio import read_hdr

    out = workspace["root"] / "out"
    obj_dir = workspace["object"]
    args = ["estimate", obj_dir / "image.exr", obj_dir / "normals.npy", obj_dir / "mask.png", "--out", out]
    args += [
        "--model",
        workspace["drmnet"],
        "--obsnet",
        workspace["obsnet"],
        "--samples",
        3,
        "--envmap-height",
        8,
    ]
    code, output = run_cli(args, monkeypatch, capsys)
    assert code == 0, output

    envmaps = []
    for i in range(3):
        sample = out / f"sample_{i}"
        envmap = read_hdr(sample / "envmap.exr")
        assert envmap.shape == (8, 16, 3) and np.isfinite(envmap).all() and (envmap >= 0).all()
        envmaps.append(envmap)
        assert read_hdr(sample / "mirror.exr").shape == (RES, RES, 3)
        record = json.loads((sample / "material.json").read_text())
        assert len(record["z"]) == 6 and all(0.0 <= v <= 1.0 for v in record["z"])
        for name in ("envmap.png", "material_sphere.png", "completed.exr"):
            assert (sample / name).stat().st_size > 0
    np.testing.assert_allclose(
        read_hdr(out / "envmap_mean.exr"), np.mean(envmaps, axis=0), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        read_hdr(out / "envmap_std.exr"), np.std(envmaps, axis=0), rtol=1e-4, atol=1e-6
    )
    for name in ("overview.png", "envmap_valid.png", "observed.exr", "envmap_mean.png", "envmap_std.png"):
        assert (out / name).stat().st_size > 0
    legend = json.loads((out / "overview.json").read_text())
    assert {"input image", "observed refmap", "envmap sample 2", "envmap std (same exposure)"} <= {
        tile["label"] for tile in legend["tiles"]
    }
    summary = json.loads((out / "estimate.json").read_text())
    assert len(summary["samples"]) == 3 and summary["envmap_height"] == 8


def test_a_known_material_is_kept_by_every_sample_and_recorded(workspace, monkeypatch, capsys):
    """`--material` (a probe of known material): RefNet is not asked, every sample reports that
    material; a malformed or out-of-range one is refused before any work, naming the option."""
    obj_dir = workspace["object"]
    files = [obj_dir / "image.exr", obj_dir / "normals.npy", obj_dir / "mask.png"]
    models = ["--model", workspace["drmnet"], "--obsnet", workspace["obsnet"]]
    known = ",".join(f"{v:g}" for v in MATERIAL)
    out, refused = workspace["root"] / "known", workspace["root"] / "refused"
    args = ["estimate", *files, *models, "--samples", 2, "--envmap-height", 8]
    code, output = run_cli([*args, "--out", out, "--material", known], monkeypatch, capsys)
    assert code == 0, output
    summary = json.loads((out / "estimate.json").read_text())
    assert summary["inputs"]["material"] == pytest.approx(MATERIAL.tolist())
    for record in summary["samples"]:
        assert record["z"] == pytest.approx(MATERIAL.tolist())
    for bad, problem in [("0.5,0.5", "expected 6 comma-separated values"), ("0,1,1,1,1.5,1", "[0, 1]")]:
        code, output = run_cli([*args, "--out", refused, "--material", bad], monkeypatch, capsys)
        assert code != 0 and "--material" in output and problem in output, output
        assert not refused.exists()


def test_estimates_are_reproducible_and_in_the_units_of_the_input(workspace):
    """Same seed → same samples; an image k times brighter → envmaps k times brighter (the
    networks' intensity normalisation is undone) and the same materials."""
    from models.estimator import Estimator
    from pipeline.estimate import EstimateSettings, estimate_image

    estimator = Estimator.from_directories(workspace["drmnet"], workspace["obsnet"])
    obj = workspace["obj"]
    settings = EstimateSettings(samples=2, seed=5, envmap_height=8)
    first = estimate_image(estimator, obj.image, obj.normals, obj.mask, settings)
    again = estimate_image(estimator, obj.image, obj.normals, obj.mask, settings)
    np.testing.assert_array_equal(first.envmaps, again.envmaps)
    np.testing.assert_array_equal(first.materials, again.materials)

    brighter = estimate_image(estimator, 40.0 * obj.image, obj.normals, obj.mask, settings)
    np.testing.assert_allclose(brighter.envmaps, 40.0 * first.envmaps, rtol=2e-3, atol=1e-6)
    np.testing.assert_allclose(brighter.materials, first.materials, atol=1e-4)


def _bad_inputs(root: Path, obj) -> dict[str, tuple[list, str]]:
    """name → (the files given to `drmnet estimate`, a phrase the error must contain)."""
    from rendering.hdrio import write_exr, write_png

    bad = root / "bad"
    bad.mkdir(exist_ok=True)
    good_image, good_normals = root / "object" / "image.exr", root / "object" / "normals.npy"
    write_exr(bad / "small.exr", obj.image[:20])
    nan_image = obj.image.copy()
    nan_image[obj.mask.nonzero()[0][0], obj.mask.nonzero()[1][0]] = np.nan
    write_exr(bad / "nan.exr", nan_image)
    np.save(bad / "inward_normals.npy", -obj.normals)  # pointing into the object: all face away
    write_png(bad / "empty_mask.png", np.zeros(obj.mask.shape, np.uint8))
    tiny = np.zeros(obj.mask.shape, np.uint8)
    tiny[18:22, 18:22] = 255  # a few pixels survive the erosion: too few refmap bins
    write_png(bad / "tiny_mask.png", tiny)
    write_png(bad / "ldr.png", (np.clip(obj.image, 0, 1) * 255).astype(np.uint8))
    return {
        "shapes differ": ([bad / "small.exr", good_normals], "does not match"),
        "NaN pixels": ([bad / "nan.exr", good_normals], "NaN"),
        "normals facing away": ([good_image, bad / "inward_normals.npy"], "facing away"),
        "empty mask": ([good_image, good_normals, bad / "empty_mask.png"], "empty"),
        "tiny mask": ([good_image, good_normals, bad / "tiny_mask.png"], "too small"),
        "LDR PNG image": ([bad / "ldr.png", good_normals], "LDR"),
        "missing file": ([bad / "nothing.exr", good_normals], "does not exist"),
    }


def test_progress_callbacks_follow_the_sampling_steps_and_the_drm_steps(workspace):
    import torch

    from models.estimator import Estimator

    estimator = Estimator.from_directories(workspace["drmnet"], workspace["obsnet"], device="cpu")
    refmap = torch.rand(3, RES, RES, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(1, RES, RES)
    mask[:, : RES // 2] = 0.0  # holes: ObsNet completes them first
    ddim, drm = [], []
    out = estimator.estimate(
        refmap * mask,
        mask,
        num_samples=3,
        seed=0,
        sampling_steps=5,
        ddim_progress=lambda *args: ddim.append(args),
        drm_progress=lambda *args: drm.append(args),
    )
    assert ddim == [(step, 5) for step in range(1, 6)]
    max_steps = estimator.drmnet_config.drm.max_steps
    assert [step for step, _, _ in drm] == list(range(1, int(out.steps.max()) + 1))
    assert len(drm) <= max_steps and {total for _, total, _ in drm} == {max_steps}
    running = [r for _, _, r in drm]
    assert all(a >= b for a, b in zip(running, running[1:], strict=False))
    assert running[-1] == int((~out.converged).sum())


def test_each_bad_input_is_named_and_exits_with_code_2(workspace, monkeypatch, capsys):
    models = ["--model", workspace["drmnet"], "--obsnet", workspace["obsnet"]]
    for name, (files, phrase) in _bad_inputs(workspace["root"], workspace["obj"]).items():
        out = workspace["root"] / "bad_out" / name.replace(" ", "_")
        code, output = run_cli(["estimate", *files, "--out", out, *models], monkeypatch, capsys)
        assert code == 2, f"{name}: exit {code}\n{output}"
        assert output.startswith("error: ") and phrase in output, f"{name}: {output}"
        assert str(files[-1].name) in output or str(files[0].name) in output, (
            f"{name} names no file: {output}"
        )
        assert not (out / "estimate.json").exists()


def test_a_model_that_does_not_exist_is_named(workspace, monkeypatch, capsys):
    obj_dir = workspace["object"]
    missing = workspace["root"] / "no_such_model"
    args = ["estimate", obj_dir / "image.exr", obj_dir / "normals.npy", "--out", workspace["root"] / "x"]
    code, output = run_cli([*args, "--model", missing, "--obsnet", "none"], monkeypatch, capsys)
    assert code == 2 and "no_such_model" in output, output


def test_a_capture_like_object_is_estimated_with_one_warning(workspace, monkeypatch, capsys):
    """Inputs as other tools write them (the paper's own sample is one): an anti-aliased edge with
    short normals, zero normals inside the mask, 0.9-long normals, a few facing away, a NaN pixel
    inside the mask. `drmnet estimate --erode 2 --repair` uses them with a warning per file, and
    the observation it bins matches the clean object's on the well-observed bins."""
    from capture_like import capture_like, interior_bins

    from rendering.hdrio import read_hdr, write_exr, write_png
    from rendering.observation import image_to_refmap

    case = capture_like()
    directory = workspace["root"] / "capture"
    directory.mkdir()
    image = case.captured.image.copy()
    image[64, 64] = np.nan  # a dead pixel inside the mask
    write_exr(directory / "image.exr", image)
    np.save(directory / "normal.npy", case.captured.normals)
    write_png(directory / "mask.png", np.where(case.captured.mask, 255, 0).astype(np.uint8))
    files = [directory / "image.exr", directory / "normal.npy", directory / "mask.png"]
    models = [
        "--model",
        workspace["drmnet"],
        "--obsnet",
        workspace["obsnet"],
        "--samples",
        1,
        "--envmap-height",
        8,
    ]
    out = workspace["root"] / "capture_out"

    code, output = run_cli(["estimate", *files, "--out", out, *models], monkeypatch, capsys)
    assert code == 2 and "image.exr: has 3 NaN" in output and "--repair" in output, output

    with pytest.warns(UserWarning) as caught:
        code, output = run_cli(
            ["estimate", *files, "--out", out, *models, "--erode", 2, "--repair"], monkeypatch, capsys
        )
    assert code == 0, output
    messages = [str(w.message) for w in caught]
    normal_lines = [m for m in messages if m.startswith(f"{files[1]}: ")]
    assert len(normal_lines) == 1, messages
    assert f"left out {case.near_zero} with a near-zero normal" in normal_lines[0]
    assert "(eroded 2×)" in normal_lines[0]
    assert f"and {case.facing_away} facing away" in normal_lines[0]
    assert any(m.startswith(f"{files[0]}: filled 3 NaN/Inf values") for m in messages), messages
    summary = json.loads((out / "estimate.json").read_text())
    assert summary["settings"]["erode"] == 2 and summary["inputs"]["repair"] is True

    observed = read_hdr(out / "observed.exr").transpose(2, 0, 1)
    clean = case.clean
    expected, seen = image_to_refmap(clean.image, clean.normals, clean.mask, refmap_res=RES, erode=2)
    compared = seen & (observed > 0).all(axis=0) & interior_bins(RES)
    assert compared.sum() >= 0.9 * (seen & interior_bins(RES)).sum()
    relative = np.abs(observed - expected)[:, compared] / expected[:, compared]
    # A bin that lost the pixels eroded around a hole keeps a median from within the bin.
    assert np.percentile(relative, 90) < 0.01 and relative.max() < 0.15


def test_erode_must_not_be_negative(workspace, monkeypatch, capsys):
    obj_dir = workspace["object"]
    args = ["estimate", obj_dir / "image.exr", obj_dir / "normals.npy", "--out", workspace["root"] / "e"]
    code, output = run_cli([*args, "--erode", -1, "--model", workspace["drmnet"]], monkeypatch, capsys)
    assert code == 2 and "--erode: must be ≥ 0" in output, output
