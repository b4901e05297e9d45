"""Bad input through the real `drmnet` entry point: each is refused with one line that names the
file or option and the problem (exit status 2), before any output is written — or, for an
inside-out mesh, repaired with a warning. Real files throughout: a PNG renamed .exr, a zip named
.npy, truncated safetensors and parquet files, an envmap of 1e36, an all-black image."""

from __future__ import annotations

import json
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from rendering.errors import InputError

GREY = "0.2,0.5,0.5,0.5,0.4,0.5"
PARAMS = Path(__file__).resolve().parent.parent / "params.yaml"  # render-dataset reads it first
MIRROR = "1,1,1,1,0,1"


def files_under(root: Path) -> dict[str, int]:
    """Every file below ``root`` with its size: what a refused command must leave as it was."""
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


def refused(args: list, root: Path, monkeypatch, capsys) -> str:
    """Run `drmnet ARGS` in ``root``; assert exit 2, one line on stderr and no file written or
    changed. Returns that line."""
    from pipeline.cli import main

    monkeypatch.chdir(root)
    monkeypatch.setattr(sys, "argv", ["drmnet", *map(str, args)])
    before = files_under(root)
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert exit_info.value.code == 2, captured.out + captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert files_under(root) == before
    return lines[0]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A small envmap, a mirror refmap, a shaded sphere as `estimate` reads it (image, normals,
    mask), untrained tiny models, and a plain file where a directory is expected."""
    from tiny_workspace import save_tiny_models

    from rendering.hdrio import write_exr, write_png
    from rendering.procedural_envmaps import make_envmap
    from rendering.refmap import render_refmaps

    root = tmp_path_factory.mktemp("bad_inputs")
    envmap = make_envmap("studio", 3, 16)
    write_exr(root / "env.exr", envmap)
    mirrors = render_refmaps(envmap, np.array([[1, 1, 1, 1, 0, 1]], np.float32), [0.0], refmap_res=16, spp=2)
    mirror = mirrors[0]
    write_exr(root / "mirror.exr", mirror.transpose(1, 2, 0))
    i, j = np.mgrid[0:32, 0:32]
    x, y = (j + 0.5) / 16 - 1, 1 - (i + 0.5) / 16  # orthographic view of a unit sphere
    inside = x**2 + y**2 < 0.95
    z = np.sqrt(np.clip(1 - x**2 - y**2, 0, None))
    normals = np.where(inside[..., None], np.stack([x, y, z], axis=-1), 0).astype(np.float32)
    shading = 0.2 + np.clip(normals @ np.array([0.3, 0.6, 0.74]), 0, None)
    image = np.where(inside[..., None], shading[..., None] * np.array([1.0, 0.8, 0.6]), 0).astype(np.float32)
    write_exr(root / "image.exr", image)
    np.save(root / "normals.npy", normals)
    write_png(root / "mask.png", np.where(inside, 255, 0).astype(np.uint8))
    save_tiny_models(root / "models", res=16)
    (root / "a_file").write_text("not a directory\n")
    return root


def models(root: Path) -> list:
    return ["--model", root / "models" / "drmnet", "--obsnet", root / "models" / "obsnet"]


def observation(root: Path, image: str = "image.exr", normals: str = "normals.npy") -> list:
    return [root / image, root / normals, root / "mask.png"]


# --- numeric options --------------------------------------------------------------------------

RELIGHT = ["relight", "--envmap", "env.exr", "--material", GREY, "--shape", "sphere"]
RENDER_OBJECT = ["render-object", "--envmap", "env.exr", "--material", GREY, "--shape", "sphere"]
RENDER_REFMAP = ["render-refmap", "env.exr", "--material", MIRROR]
OBSERVATION = ["image.exr", "normals.npy", "mask.png"]
NUMERIC = [
    ([*RELIGHT, "--out", "r.exr", "--spp", -1], "--spp: must be ≥ 1, got -1"),
    ([*RELIGHT, "--out", "r.exr", "--object-res", 0], "--object-res: must be ≥ 8, got 0"),
    ([*RELIGHT, "--out", "r.exr", "--seed", -1], "--seed: must be ≥ 0, got -1"),
    ([*RENDER_REFMAP, "--out", "m.exr", "--spp", 0], "--spp: must be ≥ 1, got 0"),
    ([*RENDER_REFMAP, "--out", "m.exr", "--refmap-res", 100000], "--refmap-res: must be ≤ 2048, got 100000"),
    (
        ["mirror-to-envmap", "mirror.exr", "--out", "e.exr", "--envmap-height", 0],
        "--envmap-height: must be ≥ 2, got 0",
    ),
    (
        ["mirror-to-envmap", "mirror.exr", "--out", "e.exr", "--envmap-height", 10**6],
        "--envmap-height: must be ≤ 4096",
    ),
    ([*RENDER_OBJECT, "--out", "o", "--spp", 0], "--spp: must be ≥ 1, got 0"),
    ([*RENDER_OBJECT, "--out", "o", "--object-res", 100000], "--object-res: must be ≤ 4096, got 100000"),
    (
        ["image-to-refmap", *OBSERVATION, "--out", "obs", "--refmap-res", 100000],
        "--refmap-res: must be ≤ 2048, got 100000",
    ),
    (
        ["make-envmaps", "--out", "envmaps", "--n", 1, "--envmap-height", 1],
        "--envmap-height: must be ≥ 4, got 1",
    ),
    (["make-envmaps", "--out", "envmaps", "--n", 1, "--room-spp", 0], "--room-spp: must be ≥ 1, got 0"),
    (["estimate", *OBSERVATION, "--out", "est", "--envmap-height", 0], "--envmap-height: must be ≥ 2, got 0"),
    (["estimate", *OBSERVATION, "--out", "est", "--samples", 0], "--samples: must be ≥ 1, got 0"),
    (
        ["render-dataset", "--dataset", "drmnet", "--split", "train", "--params", PARAMS, "--workers", 0],
        "--workers: must be ≥ 1, got 0",
    ),
    (["serve", "--limit", 0], "--limit: must be ≥ 1, got 0"),
]


@pytest.mark.parametrize(("args", "message"), NUMERIC, ids=[" ".join(map(str, a[-2:])) for a, _ in NUMERIC])
def test_numeric_options_out_of_range_are_refused(root, args, message, monkeypatch, capsys):
    """`relight --spp -1` used to write zeros, `mirror-to-envmap --envmap-height 0` to use the default,
    `image-to-refmap --refmap-res 100000` to try to allocate 112 GiB."""
    extra = models(root) if args[0] == "estimate" else []
    assert message in refused([*args, *extra], root, monkeypatch, capsys)


# --- output paths -----------------------------------------------------------------------------

OUT_IS_A_FILE = [
    ["image-to-refmap", *OBSERVATION, "--refmap-res", 16],
    [*RENDER_OBJECT, "--object-res", 16, "--spp", 1],
    ["estimate", *OBSERVATION],
    ["make-envmaps", "--n", 1, "--envmap-height", 8],
    ["report", "--eval", "eval"],
    ["export-model", "models/drmnet"],
    ["evaluate", "--no-flow"],
    ["make-envmap-splits"],
    ["render-dataset", "--dataset", "drmnet", "--split", "train", "--params", PARAMS],
]


@pytest.mark.parametrize("args", OUT_IS_A_FILE, ids=[a[0] for a in OUT_IS_A_FILE])
def test_an_output_directory_that_is_a_file_is_refused(root, args, monkeypatch, capsys):
    extra = models(root) if args[0] == "estimate" else []
    line = refused([*args, "--out", "a_file", *extra], root, monkeypatch, capsys)
    assert line == "error: a_file: --out must be a directory, but this is an existing file"


def test_an_output_file_that_is_a_directory_or_below_a_file_is_refused(root, monkeypatch, capsys):
    (root / "out.exr").mkdir(exist_ok=True)
    line = refused([*RELIGHT, "--object-res", 16, "--out", "out.exr"], root, monkeypatch, capsys)
    assert line == "error: out.exr: --out must be a file, but this is an existing directory"
    line = refused(["mirror-to-envmap", "mirror.exr", "--out", "a_file/env.exr"], root, monkeypatch, capsys)
    assert "a_file/env.exr: --out cannot be written:" in line and "a_file is a file, not a directory" in line


# --- what a file really is --------------------------------------------------------------------


@pytest.fixture(scope="module")
def renamed(root) -> dict[str, Path]:
    """A real PNG and a real JPEG renamed .exr, a real .exr renamed .png, a zip named .npy."""
    from rendering.variant import ensure_variant

    mi = ensure_variant()
    pixels = np.linspace(0, 255, 32 * 32 * 3).astype(np.uint8).reshape(32, 32, 3)
    folder = root / "renamed"
    folder.mkdir()
    mi.Bitmap(pixels, pixel_format=mi.Bitmap.PixelFormat.RGB).write(str(folder / "photo.png"))
    mi.Bitmap(pixels, pixel_format=mi.Bitmap.PixelFormat.RGB).write(str(folder / "photo.jpg"))
    shutil.copyfile(folder / "photo.png", folder / "png.exr")
    shutil.copyfile(folder / "photo.jpg", folder / "jpeg.exr")
    shutil.copyfile(folder / "photo.jpg", folder / "jpeg.hdr")
    shutil.copyfile(root / "image.exr", folder / "exr.png")
    with zipfile.ZipFile(folder / "zip.npy", "w") as archive:
        archive.writestr("normals.npy", (root / "normals.npy").read_bytes())
    return {path.name: path for path in folder.iterdir()}


def test_file_formats_are_told_by_their_first_bytes(renamed, root):
    from rendering.hdrio import file_format

    assert file_format(root / "image.exr") == "an OpenEXR image"
    assert file_format(renamed["png.exr"]) == "a PNG image"
    assert file_format(renamed["jpeg.exr"]) == "a JPEG image"
    assert file_format(renamed["zip.npy"]) == "a zip archive"
    assert file_format(root / "normals.npy") == "a NumPy .npy array"


def test_an_image_renamed_exr_is_refused_by_every_command_that_reads_hdr(renamed, root, monkeypatch, capsys):
    """A PNG/JPEG renamed .exr used to be decoded as if it were radiance."""
    png, jpeg, jpeg_hdr = renamed["png.exr"], renamed["jpeg.exr"], renamed["jpeg.hdr"]
    rest = [root / "normals.npy", root / "mask.png"]
    commands = [
        (png, "PNG", ["estimate", png, *rest, "--out", "est", *models(root)]),
        (jpeg, "JPEG", ["image-to-refmap", jpeg, *rest, "--out", "obs", "--refmap-res", 16]),
        (png, "PNG", ["mirror-to-envmap", png, "--out", "env_out.exr"]),
        (jpeg_hdr, "JPEG", ["relight", "--envmap", jpeg_hdr, *RELIGHT[3:], "--out", "r.exr"]),
    ]
    for path, really, args in commands:
        line = refused(args, root, monkeypatch, capsys)
        named = f"error: {path}: unreadable: named {path.suffix}"
        assert line.startswith(f"{named} but the file is a {really} image (by its first bytes)"), line
    args = ["image-to-refmap", renamed["exr.png"], root / "normals.npy", "--out", "obs"]
    line = refused(args, root, monkeypatch, capsys)
    assert "exr.png: unreadable: named .png but the file is an OpenEXR image" in line


def test_a_zip_named_npy_is_refused(renamed, root, monkeypatch, capsys):
    for command in (["image-to-refmap"], ["estimate", *models(root)]):
        args = [*command, root / "image.exr", renamed["zip.npy"], root / "mask.png", "--out", "obs"]
        line = refused(args, root, monkeypatch, capsys)
        assert f"{renamed['zip.npy']}: unreadable: named .npy but the file is a zip archive" in line


# --- radiance that would overflow ------------------------------------------------------------


def test_an_envmap_that_would_render_inf_is_refused(root, monkeypatch, capsys):
    """An envmap of ~1e36 used to render Inf pixels; the HDR input policy refuses beyond 1e30."""
    from rendering.envmap import read_envmap
    from rendering.hdrio import write_exr
    from rendering.radiance import MAX_RADIANCE, clean_radiance

    envmap = read_envmap(root / "env.exr")
    huge = write_exr(root / "huge.exr", envmap / envmap.max() * 1e36)
    line = refused(["relight", "--envmap", huge, *RELIGHT[3:], "--out", "r.exr"], root, monkeypatch, capsys)
    assert f"error: {huge}: has values up to 1e+36, beyond ±1e+30" in line and "overflow float32" in line
    line = refused(["render-refmap", huge, "--material", MIRROR, "--out", "m.exr"], root, monkeypatch, capsys)
    assert "huge.exr: has values up to 1e+36" in line
    # The bound leaves every real range alone: a map just below it is accepted unchanged.
    at_bound = envmap / envmap.max() * np.float32(0.99 * MAX_RADIANCE)
    np.testing.assert_array_equal(clean_radiance(at_bound, "map")[0], at_bound)


def test_a_mirror_refmap_that_would_give_an_inf_envmap_is_refused(root, monkeypatch, capsys):
    """A mirror refmap of ~1e36 used to become an envmap of 1e36 (Inf once rendered); the same
    bound as for envmaps applies."""
    from rendering.hdrio import read_hdr, write_exr

    mirror = read_hdr(root / "mirror.exr")
    huge = write_exr(root / "huge_mirror.exr", mirror / mirror.max() * 1e36)
    line = refused(["mirror-to-envmap", huge, "--out", "e.exr"], root, monkeypatch, capsys)
    assert line.startswith(f"error: {huge}: has values up to 1e+36, beyond ±1e+30") and "rescale" in line


# --- an observation without light -------------------------------------------------------------


def test_an_observation_without_light_is_refused(root, monkeypatch, capsys):
    """An all-black image (or one lit pixel) used to yield an invented material."""
    from rendering.hdrio import read_hdr, write_exr

    image = read_hdr(root / "image.exr")
    black = write_exr(root / "black.exr", np.zeros_like(image))
    speck = np.zeros_like(image)
    speck[16, 16] = 1.0
    write_exr(root / "speck.exr", speck)
    for name in ("black.exr", "speck.exr"):
        args = ["estimate", *observation(root, name), "--out", "est", *models(root)]
        line = refused(args, root, monkeypatch, capsys)
        assert line.startswith(f"error: {root / name}: has no light to estimate from: ")
        assert "observed refmap bins are lit (need ≥ 4)" in line
        # image-to-refmap used to write the black refmap, the input of an invented estimate
        args = ["image-to-refmap", *observation(root, name), "--out", "obs", "--refmap-res", 16]
        line = refused(args, root, monkeypatch, capsys)
        assert line.startswith(f"error: {root / name}: has no light to estimate from: ")
    assert black.exists()


# --- truncated and broken files ---------------------------------------------------------------


def test_truncated_model_weights_are_refused(root, tmp_path, monkeypatch, capsys):
    shutil.copytree(root / "models", tmp_path / "models")
    weights = tmp_path / "models" / "drmnet" / "ema.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    line = refused(
        ["estimate", *observation(root), "--out", tmp_path / "est", "--model", weights.parent,
         "--obsnet", tmp_path / "models" / "obsnet"],
        tmp_path, monkeypatch, capsys,
    )  # fmt: skip
    assert f"{weights}: unreadable or truncated safetensors file" in line
    args = ["export-model", weights.parent, "--out", tmp_path / "exported"]
    line = refused(args, tmp_path, monkeypatch, capsys)
    assert line.startswith(f"error: {weights}: unreadable or truncated safetensors file")


def test_a_truncated_shards_manifest_is_refused(tmp_path, monkeypatch, capsys):
    from pipeline.manifest import SHARDS_MANIFEST, write_manifests
    from pipeline.reader import list_shards

    split = tmp_path / "shards" / "drmnet" / "train"
    record = {"shard": "drmnet-train-000000.tar", "samples": 1, "bytes": 10, "sha256": "0" * 64, "rows": []}
    write_manifests(split, [record])
    manifest = split / SHARDS_MANIFEST
    manifest.write_bytes(manifest.read_bytes()[:100])
    line = refused(["verify-shards", split], tmp_path, monkeypatch, capsys)
    assert line.startswith(f"error: {manifest}: unreadable or truncated manifest")
    with pytest.raises(InputError, match="unreadable or truncated manifest"):
        list_shards(split)


@pytest.mark.parametrize("name", ["../../secret.tar", "/etc/passwd", "..", "sub/drmnet-train-000000.tar"])
def test_a_manifest_naming_a_shard_outside_its_split_is_refused(name, tmp_path, monkeypatch, capsys):
    """A shard named `../../etc/passwd` in a manifest used to be opened and hashed by
    `verify-shards`; every reader of a shards manifest keeps to the split directory."""
    from pipeline.manifest import SHARDS_MANIFEST, require_intact_split, verify_split, write_manifests
    from pipeline.reader import list_shards

    split = tmp_path / "shards" / "drmnet" / "train"
    (tmp_path / "secret.tar").write_text("outside the split\n")
    good = {"shard": "drmnet-train-000000.tar", "samples": 1, "bytes": 10, "sha256": "0" * 64, "rows": []}
    write_manifests(split, [good, {**good, "shard": name}])
    manifest = split / SHARDS_MANIFEST
    expected = f"error: {manifest}: lists the shard {name!r}, which is not a file name in the split directory"
    assert refused(["verify-shards", split], tmp_path, monkeypatch, capsys).startswith(expected)
    train = ["train", "drmnet", "--no-register", "--device", "cpu", "--params", PARAMS, "--data", split]
    assert refused(train, tmp_path, monkeypatch, capsys).startswith(expected)
    for reader in (list_shards, require_intact_split, verify_split):
        with pytest.raises(InputError, match="not a file name in the split directory"):
            reader(split)


def test_an_envmap_table_naming_a_map_outside_its_split_is_refused(tmp_path):
    """`<id>.exr` is read from the split directory: an id with directory parts, or a table that
    is not parquet, is refused naming the table (render-dataset and evaluate read it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.splits import split_envmap_ids

    table = tmp_path / "train" / "envmaps.parquet"
    table.parent.mkdir()
    pq.write_table(pa.table({"id": ["studio-0-00000", "../../secret"]}), table)
    with pytest.raises(
        InputError, match=r"envmaps.parquet: lists the envmap id '../../secret', which is not"
    ):
        split_envmap_ids(tmp_path, "train")
    table.write_bytes(b"PAR1 cut short")
    with pytest.raises(InputError, match=r"envmaps.parquet: unreadable or truncated envmap table"):
        split_envmap_ids(tmp_path, "train")


def test_a_report_over_bad_json_is_refused(tmp_path, monkeypatch, capsys):
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    report = ["report", "--eval", evaluation, "--out", tmp_path / "reports"]
    (evaluation / "metrics.json").write_text('{"principled": {"drmnet": ')  # cut short
    (evaluation / "provenance.json").write_text("{}")
    line = refused(report, tmp_path, monkeypatch, capsys)
    assert line.startswith(f"error: {evaluation / 'metrics.json'}: is not valid JSON (")
    (evaluation / "metrics.json").write_text("[1, 2]")
    line = refused(report, tmp_path, monkeypatch, capsys)
    assert "metrics.json: holds a JSON list, not the object `evaluate` writes" in line
    (evaluation / "metrics.json").write_text(json.dumps({}))
    (evaluation / "provenance.json").write_bytes(b"\xff\xfe\x00binary")
    line = refused(report, tmp_path, monkeypatch, capsys)
    assert "provenance.json: is not valid JSON" in line


# --- an inside-out mesh -----------------------------------------------------------------------


def _write_obj(path: Path, vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray | None = None):
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices]
    if normals is None:
        lines += [f"f {a} {b} {c}" for a, b, c in faces + 1]
    else:
        lines += [f"vn {x:.6f} {y:.6f} {z:.6f}" for x, y, z in normals]
        lines += [f"f {a}//{a} {b}//{b} {c}//{c}" for a, b, c in faces + 1]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_an_inside_out_mesh_is_turned_outward_with_a_warning(tmp_path):
    """A closed mesh wound inside-out used to render its normals away from the camera: it renders
    exactly as the same mesh wound outward, and one warning names the file."""
    from rendering.objects import render_object
    from rendering.shapes import icosphere, load_mesh, mesh_arrays

    vertices, faces = icosphere(2)
    vertices = vertices * np.array([1.0, 0.7, 0.8])
    outward = _write_obj(tmp_path / "outward.obj", vertices, faces)
    inside_out = _write_obj(tmp_path / "inside_out.obj", vertices, faces[:, [0, 2, 1]])
    with pytest.warns(UserWarning, match=r"inside_out.obj: its faces are wound inside-out: reversed"):
        turned = load_mesh(inside_out)
    envmap = np.ones((8, 16, 3), np.float32)
    grey = np.array([0.0, 0.5, 0.5, 0.5, 0.5, 0.5], np.float32)
    obj = render_object(envmap, turned, grey, object_res=24, spp=1)
    expected = render_object(envmap, load_mesh(outward), grey, object_res=24, spp=1)
    assert obj.mask.any() and (obj.normals[obj.mask][:, 2] > 0).all()
    np.testing.assert_array_equal(obj.normals, expected.normals)
    np.testing.assert_array_equal(obj.image, expected.image)

    # Vertex normals of the file that point inward are flipped along with the winding.
    inward = _write_obj(tmp_path / "inward.obj", vertices, faces[:, [0, 2, 1]], -vertices)
    with pytest.warns(UserWarning, match="inward.obj: .* 100% of its vertex normals point into the object"):
        positions, _, normals = mesh_arrays(load_mesh(inward))
    assert ((normals * positions).sum(axis=1) > 0).all()


def test_an_open_mesh_keeps_its_winding(tmp_path, recwarn):
    """An open mesh has no inside, so nothing is turned (and nothing warned)."""
    from rendering.shapes import icosphere, load_mesh, mesh_arrays

    vertices, faces = icosphere(2)
    cap = faces[(vertices[faces].mean(axis=1)[:, 2] > 0)]  # the front half: open
    path = _write_obj(tmp_path / "cap.obj", vertices, cap[:, [0, 2, 1]])
    positions, loaded, _ = mesh_arrays(load_mesh(path))
    corners = positions[loaded.astype(np.int64)]
    facing = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    assert loaded.shape == cap.shape and ((facing * corners.mean(axis=1)).sum(axis=1) < 0).all()  # as given
    assert not [w for w in recwarn if "cap.obj" in str(w.message)]
